// The demo model that ships with lowbit (models/kjv-demo), found from the installed package rather than the working
// directory, so the README's example and `lowbit demo` run from anywhere.
import { fileURLToPath } from 'node:url';

/**
 * The folder of the bundled demo model: a 5.4M-parameter Llama trained on the public-domain King James Bible
 * (scripts/demo-model/). Pass it to fromPretrained.
 */
export function demoModelPath(): string {
  // This file runs as dist/src/demo.js; the model is at the package root.
  return fileURLToPath(new URL('../../models/kjv-demo', import.meta.url));
}
