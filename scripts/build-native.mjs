#!/usr/bin/env node
// npm's `install` step: build the native CPU addon with node-gyp, unless the built addon is already newer than every
// source it is made from. `npx lowbit` inside this folder links the package again and re-runs `install`; without
// this check that first run rebuilt the addon for half a minute. LOWBIT_REBUILD=1 forces a build.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'native', 'cpu');
const built = join(dir, 'build', 'Release', 'lowbit_cpu.node');

function newestSource() {
  let newest = 0;
  for (const f of readdirSync(dir)) {
    if (/\.(cc|h|inc|gyp)$/.test(f)) newest = Math.max(newest, statSync(join(dir, f)).mtimeMs);
  }
  return newest;
}

const fresh = process.env.LOWBIT_REBUILD !== '1' && existsSync(built) && statSync(built).mtimeMs >= newestSource();
if (fresh) {
  console.log(`lowbit: native addon is up to date (${built}); LOWBIT_REBUILD=1 forces a rebuild`);
  process.exit(0);
}
// node-gyp is bundled with npm; npm puts it on PATH for lifecycle scripts.
const r = spawnSync('node-gyp', ['rebuild', '--directory', dir], { stdio: 'inherit', shell: process.platform === 'win32' });
if (r.error) {
  console.error(`lowbit: could not run node-gyp: ${r.error.message}`);
  process.exit(1);
}
process.exit(r.status ?? 1);
