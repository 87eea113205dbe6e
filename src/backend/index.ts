// TEMPORARY (until src/backend/cpu/index.ts lands): ref only.
import type { Backend } from './backend.js';
import { refBackend } from './ref/index.js';
export type BackendName = 'cpu' | 'ref';
export function getBackend(name: BackendName = 'cpu'): Backend {
  if (name === 'ref') return refBackend;
  throw new Error(`backend "${name}" is unavailable`);
}
export function defaultBackend(): Backend { return refBackend; }
