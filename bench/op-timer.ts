// Wall-clock time per backend op, for the benches that ask where a step's time goes (decode-ops, train): the cpu
// backend object's ops are wrapped in place (before a model is built on it); while `on` is set, each call's time is
// added under key(op, args) (default: the op's name).
import { getBackend } from '../src/backend/index.js';
import type { Backend } from '../src/backend/backend.js';

export interface OpTimer { backend: Backend; times: Map<string, number>; on: boolean }

export function timeCpuOps(key: (op: string, args: unknown[]) => string = (op) => op): OpTimer {
  const backend = getBackend('cpu') as Backend & Record<string, unknown>;
  const timer: OpTimer = { backend, times: new Map(), on: false };
  wrapOps(backend, (k, a, ms) => {
    if (timer.on) { const name = key(k, a); timer.times.set(name, (timer.times.get(name) ?? 0) + ms); }
  });
  return timer;
}

/** Wraps every function of obj (or those named in `only`; never `supports`) in place: each call reports its wall time. */
export function wrapOps(obj: object, record: (op: string, args: unknown[], ms: number) => void, only?: readonly string[]): void {
  const o = obj as Record<string, unknown>;
  for (const k of only ?? Object.keys(o)) {
    const f = o[k];
    if (typeof f !== 'function' || k === 'supports') continue;
    o[k] = function (this: unknown, ...a: unknown[]) {
      const t = performance.now();
      const r = (f as (...x: unknown[]) => unknown).apply(this, a);
      record(k, a, performance.now() - t);
      return r;
    };
  }
}
