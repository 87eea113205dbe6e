// Backend selection. Model code receives a Backend and never imports one.
import type { Backend } from './backend.js';
import { cpuAvailable, cpuBackend } from './cpu/index.js';
import { addonLoadError } from '../native/addon.js';
import { refBackend } from './ref/index.js';

export type BackendName = 'cpu' | 'ref';

export function getBackend(name: BackendName = 'cpu'): Backend {
  if (name === 'ref') return refBackend;
  if (name === 'cpu') {
    if (!cpuAvailable()) throw new Error(`backend "cpu" is unavailable: ${addonLoadError ?? 'native addon missing'}`);
    return cpuBackend;
  }
  throw new Error(`unknown backend "${name as string}" (choose cpu or ref)`);
}

/** The native backend when it is built, else the reference one. */
export function defaultBackend(): Backend {
  return cpuAvailable() ? cpuBackend : refBackend;
}
