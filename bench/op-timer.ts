// Wall-clock time per backend op, for the benches that ask where a step's time goes (decode-ops, train): the cpu
// backend object's ops are wrapped in place (before a model is built on it); while `on` is set, each call's time is
// added under key(op, args) (default: the op's name).
import { getBackend } from '../src/backend/index.js';
import type { Backend } from '../src/backend/backend.js';

export interface OpTimer { backend: Backend; times: Map<string, number>; on: boolean }

export function timeCpuOps(key: (op: string, args: unknown[]) => string = (op) => op): OpTimer {
  const backend = getBackend('cpu') as Backend & Record<string, unknown>;
  const timer: OpTimer = { backend, times: new Map(), on: false };
  for (const k of Object.keys(backend)) {
    const f = backend[k];
    if (typeof f !== 'function' || k === 'supports') continue;
    backend[k] = function (this: unknown, ...a: unknown[]) {
      const t = performance.now();
      const r = (f as (...x: unknown[]) => unknown).apply(this, a);
      if (timer.on) { const name = key(k, a); timer.times.set(name, (timer.times.get(name) ?? 0) + performance.now() - t); }
      return r;
    };
  }
  return timer;
}
