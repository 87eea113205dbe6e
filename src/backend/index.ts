// Backend selection. Model code receives a Backend and never imports one.
import type { Backend } from './backend.js';
import { cpuAvailable, cpuBackend } from './cpu/index.js';
import { CudaUnavailableError, cudaAvailable, cudaBackend } from './cuda/index.js';
import { addonLoadError } from '../native/addon.js';
import { refBackend } from './ref/index.js';

export type BackendName = 'cpu' | 'ref' | 'cuda';

export function getBackend(name: BackendName = 'cpu'): Backend {
  if (name === 'ref') return refBackend;
  if (name === 'cpu') {
    if (!cpuAvailable()) throw new Error(`backend "cpu" is unavailable: ${addonLoadError ?? 'native addon missing'}`);
    return cpuBackend;
  }
  if (name === 'cuda') {
    const s = cudaAvailable();
    if (!s.ok) throw new CudaUnavailableError(`backend "cuda" is unavailable: ${s.why}`);
    return cudaBackend;
  }
  throw new Error(`unknown backend "${name as string}" (choose cpu, cuda or ref)`);
}

/** The native backend when it is built, else the reference one. */
export function defaultBackend(): Backend {
  return cpuAvailable() ? cpuBackend : refBackend;
}
