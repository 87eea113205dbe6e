// The native CPU backend: unpacks tensors (zero copy) and calls the addon in native/cpu. Shapes are checked here
// with the same rules as the reference backend; the addon re-checks array lengths so nothing reads out of bounds.
// Importing never throws; using the backend without a built addon throws an error that says why (addonLoadError).
import type { AttentionArgs, Backend, OpName } from '../backend.js';
import type { DType } from '../../tensor/dtype.js';
import { ShapeError, type Tensor } from '../../tensor/tensor.js';
import { WTYPE, addonLoadError, loadAddon, type NativeAddon } from './addon.js';

export { WTYPE, addonLoadError, loadAddon, type NativeAddon } from './addon.js';

const FLOAT_WEIGHTS: readonly DType[] = ['F32', 'BF16', 'F16'];

/** The addon, or an error naming the op and why the addon is unavailable. */
function native(op: string): NativeAddon {
  const a = loadAddon();
  if (!a) throw new Error(`cpu backend (${op}): ${addonLoadError ?? 'native addon unavailable'}`);
  return a;
}

/** True when the native addon is built and loads. */
export function cpuAvailable(): boolean {
  return loadAddon() !== null;
}

export function setThreads(n: number): void {
  native('setThreads').setThreads(n);
}

export function getThreads(): number {
  return native('getThreads').getThreads();
}

function lastDim(t: Tensor): number {
  return t.shape[t.shape.length - 1];
}

function f32(op: string, what: string, t: Tensor): Float32Array {
  if (t.device !== 'cpu') throw new TypeError(`cpu ${op}: ${what} lives on ${t.device}, not the cpu`);
  if (t.dtype !== 'F32') throw new TypeError(`cpu ${op}: ${what} must be F32, got ${t.dtype}`);
  return t.data as Float32Array;
}

/** Weight data and its WTYPE code; F32/BF16/F16 only. */
function weights(op: string, w: Tensor): { data: Float32Array | Uint16Array; wtype: number } {
  if (w.device !== 'cpu') throw new TypeError(`cpu ${op}: weights live on ${w.device}, not the cpu`);
  if (w.dtype === 'F32') return { data: w.data as Float32Array, wtype: WTYPE.F32 };
  if (w.dtype === 'BF16') return { data: w.data as Uint16Array, wtype: WTYPE.BF16 };
  if (w.dtype === 'F16') return { data: w.data as Uint16Array, wtype: WTYPE.F16 };
  throw new TypeError(`cpu ${op}: unsupported weight dtype ${w.dtype} (supported: F32, BF16, F16)`);
}

function checkSize(what: string, t: Tensor, n: number): void {
  if (t.numel !== n) throw new ShapeError(`${what}: expected ${n} elements, got [${t.shape}]`);
}

function rowsOf(op: string, x: Tensor, dim: number): number {
  if (!(dim > 0) || x.numel % dim !== 0) throw new ShapeError(`${op}: [${x.shape}] has no whole rows of ${dim}`);
  return x.numel / dim;
}

export const cpuBackend: Backend = {
  name: 'cpu',
  device: 'cpu',

  supports(op: OpName, dtypes: readonly DType[]): boolean {
    if (!cpuAvailable()) return false;
    if (op === 'matmul' || op === 'embedding') return dtypes.every((d) => FLOAT_WEIGHTS.includes(d));
    return dtypes.every((d) => d === 'F32');
  },

  matmul(x, w, bias, out) {
    const a = native('matmul');
    const K = lastDim(x);
    const M = rowsOf('matmul', x, K);
    if (w.shape.length !== 2 || w.shape[1] !== K) throw new ShapeError(`matmul: x [${x.shape}] vs w [${w.shape}]`);
    const N = w.shape[0];
    checkSize('matmul out', out, M * N);
    if (bias) checkSize('matmul bias', bias, N);
    const { data, wtype } = weights('matmul', w);
    a.matmul(f32('matmul', 'out', out), f32('matmul', 'x', x), data, wtype, M, N, K, bias ? f32('matmul', 'bias', bias) : null);
  },

  rmsnorm(x, w, eps, out) {
    const a = native('rmsnorm');
    const D = lastDim(x), rows = rowsOf('rmsnorm', x, D);
    checkSize('rmsnorm w', w, D);
    checkSize('rmsnorm out', out, x.numel);
    a.rmsnorm(f32('rmsnorm', 'out', out), f32('rmsnorm', 'x', x), f32('rmsnorm', 'w', w), rows, D, eps);
  },

  layernorm(x, w, b, eps, out) {
    const a = native('layernorm');
    const D = lastDim(x), rows = rowsOf('layernorm', x, D);
    checkSize('layernorm w', w, D);
    checkSize('layernorm b', b, D);
    checkSize('layernorm out', out, x.numel);
    a.layernorm(f32('layernorm', 'out', out), f32('layernorm', 'x', x), f32('layernorm', 'w', w), f32('layernorm', 'b', b), rows, D, eps);
  },

  rope(x, positions, invFreq) {
    const a = native('rope');
    const hd = lastDim(x), rows = positions.length;
    if (hd % 2 !== 0) throw new ShapeError(`rope: head dim ${hd} is odd`);
    if (rows === 0 || x.numel % (rows * hd) !== 0) throw new ShapeError(`rope: [${x.shape}] vs ${rows} positions`);
    if (invFreq.length !== hd / 2) throw new ShapeError(`rope: invFreq has ${invFreq.length} entries, expected ${hd / 2}`);
    a.rope(f32('rope', 'x', x), rows, x.numel / (rows * hd), hd, positions, invFreq);
  },

  attention(q, kCache, vCache, args: AttentionArgs, out) {
    const a = native('attention');
    if (q.shape.length !== 4 || kCache.shape.length !== 4) throw new ShapeError(`attention: q [${q.shape}], cache [${kCache.shape}] must be 4-D`);
    const [B, T, H, hd] = q.shape;
    const S = kCache.shape[1], nKV = kCache.shape[2];
    if (kCache.shape[0] !== B || kCache.shape[3] !== hd) throw new ShapeError(`attention: q [${q.shape}] vs k cache [${kCache.shape}]`);
    if (vCache.shape.join() !== kCache.shape.join()) throw new ShapeError(`attention: k cache [${kCache.shape}] vs v cache [${vCache.shape}]`);
    if (H % nKV !== 0) throw new ShapeError(`attention: ${H} heads not a multiple of ${nKV} kv heads`);
    if (args.pastLen + T > S) throw new ShapeError(`attention: ${args.pastLen + T} positions exceed the cache capacity ${S}`);
    checkSize('attention out', out, q.numel);
    a.attention(f32('attention', 'out', out), f32('attention', 'q', q), f32('attention', 'kCache', kCache), f32('attention', 'vCache', vCache),
      B, T, H, nKV, hd, S, args.pastLen, args.keyMask, args.scale, args.window ?? 0);
  },

  siluMul(gate, up, out) {
    const a = native('siluMul');
    checkSize('siluMul up', up, gate.numel);
    checkSize('siluMul out', out, gate.numel);
    a.siluMul(f32('siluMul', 'out', out), f32('siluMul', 'gate', gate), f32('siluMul', 'up', up), gate.numel);
  },

  relu(x, out) {
    const a = native('relu');
    checkSize('relu out', out, x.numel);
    a.relu(f32('relu', 'out', out), f32('relu', 'x', x), x.numel);
  },

  softmax(x, out) {
    const a = native('softmax');
    const D = lastDim(x), rows = rowsOf('softmax', x, D);
    checkSize('softmax out', out, x.numel);
    a.softmax(f32('softmax', 'out', out), f32('softmax', 'x', x), rows, D);
  },

  embedding(table, ids, out) {
    const a = native('embedding');
    const D = lastDim(table);
    checkSize('embedding out', out, ids.length * D);
    const { data, wtype } = weights('embedding', table);
    a.embedding(f32('embedding', 'out', out), data, wtype, ids, D);
  },

  add(x, y, out) {
    const a = native('add');
    checkSize('add b', y, x.numel);
    checkSize('add out', out, x.numel);
    a.add(f32('add', 'out', out), f32('add', 'a', x), f32('add', 'b', y), x.numel);
  },
};
