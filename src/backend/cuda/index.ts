// The CUDA backend: the op catalogue on an NVIDIA GPU through native/cuda. Tensors live in device memory
// (CudaStorage: an allocation and a byte offset) and have no host array; `upload` / `download` move them. Ops queue
// on one stream and return at once; `download` and `synchronize` wait. Shapes are checked by the same functions as
// the host backends (src/backend/shapes.ts) before any launch.
//
// Host-side small inputs (RoPE positions and frequencies, the attention key mask) go up once per distinct array:
// a forward builds one positions array that all layers share, so a decode step uploads it once, not per layer.
import type { AttentionArgs, Backend, OpName } from '../backend.js';
import { attentionShape, elementwiseShape, embeddingShape, matmulQShape, matmulShape, normShape, ropeShape, softmaxShape } from '../shapes.js';
import { checkCopy } from '../host.js';
import { CudaDecodeGraph } from './graph.js';
import { cudaStatus, type CudaAddon, type CudaAlloc } from '../../native/cuda-addon.js';
import { WTYPE } from '../../native/addon.js';
import { shiftedTargets, type AttentionShape } from '../../train/ops.js';
import { bnb4Scales, type AwqQuantizedWeight, type Bnb4QuantizedWeight, type GptqQuantizedWeight, type Int8QuantizedWeight, type QuantFormat, type QuantizedWeight } from '../../quant/qweight.js';
import { codeValue } from '../../quant/bnb4.js';
import { gptqGroupParams } from '../../quant/gptq-format.js';
import { awqGroup, awqGroupParams } from '../../quant/awq-format.js';
import { qgChunkBytes, qgOrder } from '../../quant/qg.js';
import { DTYPE_BYTES, allocArray, type DType } from '../../tensor/dtype.js';
import { Tensor, type DeviceStorage } from '../../tensor/tensor.js';

/** Device memory behind a tensor: an allocation (kept alive by this object) and where the tensor starts in it. */
export class CudaStorage implements DeviceStorage {
  readonly device = 'cuda' as const;
  constructor(readonly alloc: CudaAlloc, readonly byteOffset: number, readonly byteLength: number) {}
  get ptr(): number { return this.alloc.ptr + this.byteOffset; }
}

export class CudaUnavailableError extends Error { override name = 'CudaUnavailableError'; }

const FLOAT_WEIGHTS: readonly DType[] = ['F32', 'BF16', 'F16'];
/** Quantized formats with a cuda kernel (native/cuda/qg.cu, bnb4.cu, int8.cu). */
const CUDA_QUANT: readonly QuantFormat[] = ['gptq', 'awq', 'nf4', 'fp4', 'int8'];
const QG: readonly QuantFormat[] = ['gptq', 'awq'];
const B4: readonly QuantFormat[] = ['nf4', 'fp4'];

function addon(): CudaAddon {
  const { addon: a, probe } = cudaStatus();
  if (!a) throw new CudaUnavailableError(`the cuda backend cannot run here: ${probe.why}`);
  return a;
}

/** The device address of a cuda tensor (an error naming `op` and `what` for a host tensor). */
function dev(op: string, what: string, t: Tensor): number {
  if (t.device !== 'cuda' || !(t.storage instanceof CudaStorage)) {
    throw new TypeError(`cuda ${op}: ${what} [${t.shape}] is a ${t.device} tensor; upload it first (backend.upload)`);
  }
  return t.storage.ptr;
}

function devF32(op: string, what: string, t: Tensor): number {
  if (t.dtype !== 'F32') throw new TypeError(`cuda ${op}: ${what} must be F32, got ${t.dtype}`);
  return dev(op, what, t);
}

/**
 * A decode step being captured into a CUDA graph (src/backend/cuda/graph.ts): op outputs come from one arena in a
 * fixed order (so every replay finds them at the same addresses), the step's varying host arrays (token ids,
 * positions) are device slots the runner fills before each replay, and the cache length is read on the device.
 */
export interface CaptureState {
  arena: CudaAlloc;
  arenaBytes: number;
  offset: number;
  /** Host array → the device slot a replay reads it from. */
  slots: Map<ArrayBufferView, number>;
  /** Device address of the int64 cache length (pastLen) of the step being replayed. */
  pastLen: number;
}
let capture: CaptureState | null = null;
/** Bytes allocated by newTensor since the process started (the graph runner sizes its arena from one step). */
let allocated = 0;

export class ArenaFullError extends Error { override name = 'ArenaFullError'; }

/** Allocations of the innermost cudaScope (null: none open, or inside cudaUntracked). */
let scope: Tensor[] | null = null;

/**
 * Runs fn and then frees every tensor the ops inside it allocated except those keep(result) names (and anything sharing
 * their allocations), instead of leaving them to the garbage collector: a calibration pass over hundreds of samples
 * makes garbage faster than V8 collects device memory. Uploads and the backend's caches (small host arrays, quantized
 * layouts) are never tracked. When fn throws, everything it allocated is freed. A kept tensor joins the enclosing scope.
 */
export function cudaScope<T>(fn: () => T, keep: (result: T) => readonly Tensor[] = () => []): T {
  const outer = scope, mine: Tensor[] = [];
  scope = mine;
  let result: T | undefined, ok = false;
  try {
    result = fn();
    ok = true;
    return result;
  } finally {
    scope = outer;
    const kept = new Set(ok ? keep(result as T).map((t) => (t.storage as CudaStorage | undefined)?.alloc) : []);
    const drop = mine.filter((t) => !kept.has((t.storage as CudaStorage).alloc));
    cudaBackend.release!(...drop);
    outer?.push(...mine.filter((t) => kept.has((t.storage as CudaStorage).alloc)));
  }
}

/** fn's allocations are the caller's to keep: no open cudaScope frees them. */
export function cudaUntracked<T>(fn: () => T): T {
  const outer = scope;
  scope = null;
  try {
    return fn();
  } finally {
    scope = outer;
  }
}

function newTensor<D extends DType>(dtype: D, shape: readonly number[], zero: boolean): Tensor<D> {
  const numel = shape.reduce((a, b) => a * b, 1);
  const bytes = numel * DTYPE_BYTES[dtype];
  allocated += bytes;
  if (capture) {
    const off = capture.offset;
    if (off + bytes > capture.arenaBytes) throw new ArenaFullError(`capture arena of ${capture.arenaBytes} bytes is full`);
    capture.offset = off + Math.ceil(Math.max(bytes, 1) / 256) * 256;
    const st = new CudaStorage(capture.arena, off, bytes);
    if (zero) addon().memset0(st.ptr, bytes);
    return new Tensor(dtype, shape, null, 'cuda', st);
  }
  const a = addon().alloc(bytes, zero);
  const t = new Tensor(dtype, shape, null, 'cuda', new CudaStorage(a, 0, bytes));
  scope?.push(t);
  return t;
}

/** Enter or leave capture mode (the graph runner only). */
export function setCapture(c: CaptureState | null): void { capture = c; }
export function allocatedBytes(): number { return allocated; }

// Small host arrays → device, once per distinct array (its contents checked on every hit).
const smallUploads = new WeakMap<ArrayBufferView, { copy: ArrayBufferView; t: Tensor }>();
function small(arr: Int32Array | Float32Array | Uint8Array): number {
  const slot = capture?.slots.get(arr);
  if (slot !== undefined) return slot;
  const hit = smallUploads.get(arr);
  if (hit && hit.copy.byteLength === arr.byteLength) {
    const a = new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength), b = new Uint8Array(hit.copy.buffer, hit.copy.byteOffset, hit.copy.byteLength);
    let same = true;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) { same = false; break; }
    if (same) return dev('upload', 'array', hit.t);
  }
  if (capture) throw new ArenaFullError('a host array that is neither a step input nor a constant reached a captured op');
  const dtype: DType = arr instanceof Int32Array ? 'I32' : arr instanceof Float32Array ? 'F32' : 'U8';
  const t = cudaUntracked(() => newTensor(dtype, [arr.length], false));
  addon().upload(dev('upload', 'array', t), arr);
  smallUploads.set(arr, { copy: arr.slice(), t });
  return dev('upload', 'array', t);
}

/**
 * A GPTQ or AWQ layer in the kernels' layout on the device (native/cuda/qg.cu; the CPU's QgPacked): 64-code chunks in
 * the permuted input order, float16 scales and uint8 zeros per (output, group). Built at the layer's first matmul
 * from the checkpoint's own tensors: qweight goes up as it is and is repacked on the device.
 */
export interface CudaQgLayout {
  bits: number;
  N: number;
  K: number;
  /** 64-code chunks a row (Kpad / 64). */
  nc: number;
  G: number;
  nG: number;
  codes: Tensor;
  scales: Tensor;
  zeros: Tensor;
  /** The input read at each permuted position, or null for the identity; its host copy decides who may share a launch. */
  perm: Tensor | null;
  permHost: Int32Array | null;
  /** Device bytes one matmul reads (codes, scales, zeros). */
  bytes: number;
}

export class CudaQuantError extends Error { override name = 'CudaQuantError'; }

const qgLayouts = new WeakMap<QuantizedWeight, CudaQgLayout>();

/** The device layout of a GPTQ/AWQ weight (built once; an error naming the layer's shape when it has none). */
export function cudaQgLayout(qw: GptqQuantizedWeight | AwqQuantizedWeight): CudaQgLayout {
  const hit = qgLayouts.get(qw);
  if (hit) return hit;
  if (capture) throw new ArenaFullError('a quantized weight reached a captured step before an eager one (its device layout is built at its first matmul)');
  const [N, K] = qw.shape;
  const a = addon();
  let bits: number, mode: number, gIdx: Int32Array, groupSize: number, params: { scales: Uint16Array; zeros: Uint8Array }, qweight: Int32Array;
  if (qw.format === 'gptq') {
    const g = qw.gptq;
    ({ bits, gIdx, groupSize, qweight } = g);
    mode = 0;
    params = gptqGroupParams(g);
  } else {
    const w = qw.awq, G = awqGroup(K, w.groupSize);
    bits = 4;
    mode = w.layout === 'gemm' ? 1 : 2;
    gIdx = Int32Array.from({ length: K }, (_, k) => Math.floor(k / G));
    groupSize = G;
    qweight = w.qweight;
    params = awqGroupParams(w);
  }
  const order = qgOrder(gIdx, K, groupSize);
  if (!order) {
    throw new CudaQuantError(`cuda matmulQ: the ${qw.format.toUpperCase()} layer [${N}, ${K}] with group size ${groupSize} has no GPU layout ` +
      '(once sorted by g_idx, its groups must be contiguous runs of one size, a multiple of 32 inputs)');
  }
  const nc = order.Kpad / 64, nG = order.nG;
  if (params.scales.length !== N * nG) throw new CudaQuantError(`cuda matmulQ: the ${qw.format.toUpperCase()} layer [${N}, ${K}] has ${params.scales.length / N} groups, its g_idx ${nG}`);
  const src = cudaBackend.upload(new Tensor('I32', [qweight.length], qweight));
  const perm = order.perm ? cudaBackend.upload(new Tensor('I32', [K], order.perm)) : null;
  const codes = cudaUntracked(() => newTensor('U8', [N * nc * qgChunkBytes(bits as 2 | 3 | 4 | 8)], false));  // the layout cache's
  a.qgRepack(dev('qgRepack', 'codes', codes), dev('qgRepack', 'qweight', src), mode, bits, perm ? dev('qgRepack', 'perm', perm) : 0, N, K, nc);
  cudaBackend.release!(src);
  const scales = cudaBackend.upload(new Tensor('F16', [N * nG], params.scales));
  const zeros = cudaBackend.upload(new Tensor('U8', [N * nG], params.zeros));
  const layout: CudaQgLayout = {
    bits, N, K, nc, G: order.G, nG, codes, scales, zeros, perm, permHost: order.perm,
    bytes: codes.byteLength + scales.byteLength + zeros.byteLength,
  };
  qgLayouts.set(qw, layout);
  return layout;
}

function sameOrder(a: CudaQgLayout, b: CudaQgLayout): boolean {
  if (a.bits !== b.bits || a.K !== b.K || a.nc !== b.nc || a.G !== b.G || a.nG !== b.nG || (a.permHost === null) !== (b.permHost === null)) return false;
  return !a.permHost || a.permHost.every((v, i) => v === b.permHost![i]);
}

function qgMatmul(x: Tensor<'F32'>, ls: CudaQgLayout[], biases: (Tensor<'F32'> | null)[], outs: Tensor<'F32'>[], silu = false): void {
  const l0 = ls[0], M = x.numel / l0.K;
  const args: number[] = [];
  ls.forEach((l, i) => {
    args.push(devF32('matmulQ', 'out', outs[i]), dev('matmulQ', 'codes', l.codes), dev('matmulQ', 'scales', l.scales), dev('matmulQ', 'zeros', l.zeros),
      biases[i] ? devF32('matmulQ', 'bias', biases[i]!) : 0, l.N);
  });
  const a = addon(), f = (silu ? a.qgMatmulSiluMul : a.qgMatmul) as (...a: number[]) => void;
  f(devF32('matmulQ', 'x', x), M, l0.bits, l0.K, l0.nc, l0.G, l0.nG, l0.perm ? dev('matmulQ', 'perm', l0.perm) : 0, ...args);
}

function qgOf(op: string, qw: QuantizedWeight): CudaQgLayout {
  if (qw.format !== 'gptq' && qw.format !== 'awq') throw new CudaQuantError(`cuda ${op}: ${qw.format} is not a GPTQ/AWQ weight`);
  return cudaQgLayout(qw);
}

/** A bitsandbytes NF4/FP4 weight on the device (native/cuda/bnb4.cu): the packed codes as the file holds them and one
 *  float32 absmax per block (a double-quantized absmax expanded once, as the CPU kernels read it). */
export interface CudaB4Layout {
  packed: Tensor;
  absmax: Tensor;
  /** The 16 code values (uploaded once through small()). */
  lut: Float32Array;
  K: number;
  N: number;
  blocksize: number;
  /** WTYPE of the weight's dtype (the prefill's dequantized weight). */
  wt: number;
  bytes: number;
}
const b4Layouts = new WeakMap<QuantizedWeight, CudaB4Layout>();
const b4Luts = { nf4: Float32Array.from({ length: 16 }, (_, c) => codeValue('nf4', c)), fp4: Float32Array.from({ length: 16 }, (_, c) => codeValue('fp4', c)) };
const B4_WTYPE = { float32: WTYPE.F32, bfloat16: WTYPE.BF16, float16: WTYPE.F16 } as const;

export function cudaB4Layout(qw: Bnb4QuantizedWeight): CudaB4Layout {
  const hit = b4Layouts.get(qw);
  if (hit) return hit;
  if (capture) throw new ArenaFullError('a quantized weight reached a captured step before an eager one (its device layout is built at its first matmul)');
  const w = qw.bnb4, [N, K] = qw.shape;
  const packed = cudaBackend.upload(new Tensor('U8', [w.packed.length], w.packed));
  const scales = bnb4Scales(w);
  const absmax = cudaBackend.upload(new Tensor('F32', [scales.length], scales));
  const layout: CudaB4Layout = { packed, absmax, lut: b4Luts[w.quantType], K, N, blocksize: w.blocksize, wt: B4_WTYPE[w.dtype], bytes: packed.byteLength + absmax.byteLength };
  b4Layouts.set(qw, layout);
  return layout;
}

function b4Matmul(x: Tensor<'F32'>, qws: Bnb4QuantizedWeight[], biases: (Tensor<'F32'> | null)[], outs: Tensor<'F32'>[]): void {
  const ls = qws.map((q) => cudaB4Layout(q)), l0 = ls[0], M = x.numel / l0.K;
  const args: number[] = [];
  ls.forEach((l, i) => {
    args.push(devF32('matmulQ', 'out', outs[i]), dev('matmulQ', 'packed', l.packed), devF32('matmulQ', 'absmax', l.absmax),
      biases[i] ? devF32('matmulQ', 'bias', biases[i]!) : 0, l.N);
  });
  (addon().b4Matmul as (...a: number[]) => void)(devF32('matmulQ', 'x', x), M, l0.K, l0.blocksize, l0.wt, small(l0.lut), ...args);
}

/** An LLM.int8 weight on the device (native/cuda/int8.cu): the int8 codes and SCB as the file holds them. */
export interface CudaInt8Layout { CB: Tensor; SCB: Tensor; bytes: number }
const int8Layouts = new WeakMap<QuantizedWeight, CudaInt8Layout>();
export function cudaInt8Layout(qw: Int8QuantizedWeight): CudaInt8Layout {
  const hit = int8Layouts.get(qw);
  if (hit) return hit;
  if (capture) throw new ArenaFullError('a quantized weight reached a captured step before an eager one (its device layout is built at its first matmul)');
  const CB = cudaBackend.upload(new Tensor('I8', [qw.int8.CB.length], qw.int8.CB));
  const SCB = cudaBackend.upload(new Tensor('F32', [qw.int8.SCB.length], qw.int8.SCB));
  const layout = { CB, SCB, bytes: CB.byteLength + SCB.byteLength };
  int8Layouts.set(qw, layout);
  return layout;
}

function unsupported(op: string, qw: QuantizedWeight): never {
  throw new CudaQuantError(`cuda ${op}: ${qw.format} weights have no GPU kernel (GPTQ, AWQ, NF4, FP4 and LLM.int8 have)`);
}

export const cudaBackend: Backend & {
  /** Random weights filled on the device (benchmarks): uniform with standard deviation `std`. */
  randomTensor(dtype: DType, shape: readonly number[], seed: number, std: number): Tensor;
  /** Per-row argmax of x [rows, cols] (greedy decoding on the device): the ids come down, not the logits; -1 for a row
   *  holding a NaN or an infinity. */
  argmax(x: Tensor<'F32'>): Int32Array;
  /** KV cache append: dst [B, capacity, row] rows length … length+T−1 ← src [B·T, row] (the length read on the device in a captured step). */
  cacheWrite(dst: Tensor<'F32'>, src: Tensor<'F32'>, B: number, T: number, capacity: number, length: number): void;
  /** RoPE of q and k in place and their KV append, one launch (KVCache.appendRoped). */
  ropeAppend(q: Tensor<'F32'>, k: Tensor<'F32'>, v: Tensor<'F32'>, positions: Int32Array, invFreq: Float32Array,
    kCache: Tensor<'F32'>, vCache: Tensor<'F32'>, B: number, T: number, capacity: number, length: number): void;
  /** Device time between two points of the stream: mark() and elapsed(a, b) in ms. */
  mark(): object;
  elapsed(a: object, b: object): number;
} = {
  name: 'cuda',
  device: 'cuda',

  supports(op: OpName, dtypes: readonly (DType | QuantFormat)[]): boolean {
    if (op === 'matmulQ') return dtypes.every((d) => CUDA_QUANT.includes(d as QuantFormat));
    if (op === 'matmulQMany') return dtypes.every((d) => QG.includes(d as QuantFormat)) || dtypes.every((d) => B4.includes(d as QuantFormat));
    if (op === 'matmul' || op === 'embedding') return dtypes.every((d) => FLOAT_WEIGHTS.includes(d as DType));
    return dtypes.every((d) => d === 'F32');
  },

  empty: (dtype, shape) => newTensor(dtype, shape, false),

  upload(t) {
    if (t.device === 'cuda') return t;
    const out = cudaUntracked(() => newTensor(t.dtype, t.shape, false));
    addon().upload(dev('upload', 'out', out), t.data);
    return out;
  },

  download(t) {
    if (t.device === 'cpu') return t;
    const host = allocArray(t.dtype, t.numel);
    addon().download(dev('download', 'tensor', t), host);
    return new Tensor(t.dtype, t.shape, host);
  },

  copy(dst, dstOffset, src, srcOffset, n) {
    checkCopy(dst, dstOffset, src, srcOffset, n);
    const b = DTYPE_BYTES[dst.dtype];
    addon().copy(dev('copy', 'dst', dst) + dstOffset * b, dev('copy', 'src', src) + srcOffset * b, n * b);
  },

  synchronize() { addon().synchronize(); },

  release(...ts) {
    for (const t of ts) {
      if (!t || !(t.storage instanceof CudaStorage)) continue;
      if (capture && t.storage.alloc === capture.arena) continue;  // a captured step's outputs live in its arena
      addon().free(t.storage.alloc.handle);
    }
  },

  matmul(x, w, bias, out) {
    const { M, N, K } = matmulShape(x, w, bias, out);
    if (!FLOAT_WEIGHTS.includes(w.dtype)) throw new TypeError(`cuda matmul: weight dtype ${w.dtype} (F32, BF16 or F16)`);
    addon().matmul(devF32('matmul', 'out', out), devF32('matmul', 'x', x), dev('matmul', 'w', w), WTYPE[w.dtype as 'F32' | 'BF16' | 'F16'],
      bias ? devF32('matmul', 'bias', bias) : 0, M, N, K);
  },

  matmulQ(x, qw, bias, out) {
    matmulQShape(x, qw.shape, bias, out);
    if (QG.includes(qw.format)) qgMatmul(x, [qgOf('matmulQ', qw)], [bias], [out]);
    else if (B4.includes(qw.format)) b4Matmul(x, [qw as Bnb4QuantizedWeight], [bias], [out]);
    else if (qw.format === 'int8') {
      const l = cudaInt8Layout(qw), [N, K] = qw.shape;
      addon().int8Matmul(devF32('matmulQ', 'out', out), devF32('matmulQ', 'x', x), dev('matmulQ', 'CB', l.CB), devF32('matmulQ', 'SCB', l.SCB),
        bias ? devF32('matmulQ', 'bias', bias) : 0, x.numel / K, N, K, qw.threshold);
    } else unsupported('matmulQ', qw);
  },

  matmulQMany(x, qws, biases, outs) {
    if (qws.length < 1 || qws.length > 3) return false;
    qws.forEach((q, i) => matmulQShape(x, q.shape, biases[i], outs[i]));
    if (qws.every((q) => QG.includes(q.format))) {
      const ls = qws.map((q) => qgOf('matmulQMany', q));
      if (!ls.every((l) => sameOrder(l, ls[0]))) return false;
      qgMatmul(x, ls, biases, outs);
      return true;
    }
    if (qws.every((q) => B4.includes(q.format))) {
      const ls = (qws as Bnb4QuantizedWeight[]).map((q) => cudaB4Layout(q));
      if (!ls.every((l) => l.blocksize === ls[0].blocksize && l.wt === ls[0].wt && l.lut === ls[0].lut)) return false;
      b4Matmul(x, qws as Bnb4QuantizedWeight[], biases, outs);
      return true;
    }
    return false;
  },

  matmulT(dy, w, out) {
    const [N, K] = w.shape as [number, number], M = dy.numel / N;
    if (w.shape.length !== 2 || dy.numel !== M * N || out.numel !== M * K) throw new RangeError(`cuda matmulT: dy [${dy.shape}], w [${w.shape}], out [${out.shape}]`);
    cudaTrain.gemm(dy, w, M, K, N, false, false, out);
  },

  matmulQT(dy, qw, out) {
    const [N, K] = qw.shape, M = dy.numel / N;
    if (dy.numel !== M * N || out.numel !== M * K) throw new RangeError(`cuda matmulQT: dy [${dy.shape}], weight [${qw.shape}], out [${out.shape}]`);
    const w = cudaDequantize(qw);
    cudaTrain.gemm(dy, w, M, K, N, false, false, out);
    this.release!(w);
    return true;
  },

  matmulSiluMul(x, gate, up, gateBias, upBias, out) {
    const K = x.shape[x.shape.length - 1], M = x.numel / K;
    if (gate instanceof Tensor && up instanceof Tensor) {
      if (M < 1 || gate.dtype !== up.dtype || !FLOAT_WEIGHTS.includes(gate.dtype) || gate.device !== 'cuda' || up.device !== 'cuda') return false;
      const { N } = matmulShape(x, gate, gateBias, out);
      matmulShape(x, up, upBias, out);
      addon().matmulSiluMul(devF32('matmulSiluMul', 'x', x), WTYPE[gate.dtype as 'F32' | 'BF16' | 'F16'], M, K, devF32('matmulSiluMul', 'out', out),
        dev('matmulSiluMul', 'gate', gate), dev('matmulSiluMul', 'up', up), gateBias ? devF32('matmulSiluMul', 'gate bias', gateBias) : 0,
        upBias ? devF32('matmulSiluMul', 'up bias', upBias) : 0, N);
      return true;
    }
    if (gate instanceof Tensor || up instanceof Tensor || M > 16 || !QG.includes(gate.format) || !QG.includes(up.format)) return false;
    matmulQShape(x, gate.shape, gateBias, out);
    matmulQShape(x, up.shape, upBias, out);
    const ls = [qgOf('matmulSiluMul', gate), qgOf('matmulSiluMul', up)];
    if (!sameOrder(ls[0], ls[1])) return false;
    qgMatmul(x, ls, [gateBias, upBias], [out, out], true);
    return true;
  },

  matmulMany(x, ws, biases, outs) {
    const K = x.shape[x.shape.length - 1], M = x.numel / K;
    if (M < 1 || ws.length < 1 || ws.length > 3 || ws.some((w) => w.dtype !== ws[0].dtype || w.device !== 'cuda')) return false;
    if (!FLOAT_WEIGHTS.includes(ws[0].dtype)) return false;
    const args: number[] = [];
    ws.forEach((w, i) => {
      const { N } = matmulShape(x, w, biases[i], outs[i]);
      args.push(devF32('matmulMany', 'out', outs[i]), dev('matmulMany', 'w', w), biases[i] ? devF32('matmulMany', 'bias', biases[i]!) : 0, N);
    });
    (addon().matmulMany as (...a: number[]) => void)(devF32('matmulMany', 'x', x), WTYPE[ws[0].dtype as 'F32' | 'BF16' | 'F16'], M, K, ...args);
    return true;
  },

  rmsnorm(x, w, eps, out) {
    const { rows, D } = normShape('rmsnorm', x, { w }, out);
    addon().rmsnorm(devF32('rmsnorm', 'out', out), devF32('rmsnorm', 'x', x), devF32('rmsnorm', 'w', w), rows, D, eps);
  },

  addRmsnorm(x, y, w, eps, out) {
    const { rows, D } = normShape('addRmsnorm', x, { w }, out);
    elementwiseShape('addRmsnorm', x, { y }, x);
    addon().addRmsnorm(devF32('addRmsnorm', 'out', out), devF32('addRmsnorm', 'x', x), devF32('addRmsnorm', 'y', y), devF32('addRmsnorm', 'w', w), rows, D, eps);
  },

  layernorm(x, w, b, eps, out) {
    const { rows, D } = normShape('layernorm', x, { w, b }, out);
    addon().layernorm(devF32('layernorm', 'out', out), devF32('layernorm', 'x', x), devF32('layernorm', 'w', w), devF32('layernorm', 'b', b), rows, D, eps);
  },

  rope(x, positions, invFreq) {
    const { rows, nHeads, hd } = ropeShape(x, positions, invFreq);
    x.assertWritable('rope');
    addon().rope(devF32('rope', 'x', x), small(positions), small(invFreq), rows, nHeads, hd);
  },

  attention(q, kCache, vCache, args: AttentionArgs, out) {
    const { B, T, H, nKV, hd, S } = attentionShape(q, kCache, vCache, args, out);
    addon().attention(devF32('attention', 'out', out), devF32('attention', 'q', q), devF32('attention', 'k', kCache), devF32('attention', 'v', vCache),
      B, T, H, nKV, hd, S, args.pastLen, capture ? capture.pastLen : 0, args.keyMask ? small(args.keyMask) : 0, 0, args.scale, args.window ?? 0);
  },

  siluMul(gate, up, out) {
    const n = elementwiseShape('siluMul', gate, { up }, out);
    addon().siluMul(devF32('siluMul', 'out', out), devF32('siluMul', 'gate', gate), devF32('siluMul', 'up', up), n);
  },

  relu(x, out) {
    const n = elementwiseShape('relu', x, {}, out);
    addon().relu(devF32('relu', 'out', out), devF32('relu', 'x', x), n);
  },

  softmax(x, out) {
    const { rows, D } = softmaxShape(x, out);
    addon().softmax(devF32('softmax', 'out', out), devF32('softmax', 'x', x), rows, D);
  },

  embedding(table, ids, out) {
    const { D } = embeddingShape(table, ids, out);
    if (!FLOAT_WEIGHTS.includes(table.dtype)) throw new TypeError(`cuda embedding: table dtype ${table.dtype} (F32, BF16 or F16)`);
    let idsPtr = capture?.slots.get(ids);
    if (idsPtr === undefined) {
      if (capture) throw new ArenaFullError('embedding ids that are not a step input reached a captured op');
      const idsDev = newTensor('I32', [ids.length], false);
      addon().upload(dev('embedding', 'ids', idsDev), ids);
      idsPtr = dev('embedding', 'ids', idsDev);
    }
    addon().embedding(devF32('embedding', 'out', out), dev('embedding', 'table', table), WTYPE[table.dtype as 'F32' | 'BF16' | 'F16'],
      idsPtr, ids.length, D);
  },

  ropeAppend(q, k, v, positions, invFreq, kCache, vCache, B, T, capacity, length) {
    const { rows, nHeads: nH, hd } = ropeShape(q, positions, invFreq);
    const { nHeads: nKV } = ropeShape(k, positions, invFreq);
    if (rows !== B * T || v.numel !== k.numel || kCache.numel !== B * capacity * nKV * hd || vCache.numel !== kCache.numel || length + T > capacity) {
      throw new RangeError(`cuda ropeAppend: q [${q.shape}], k [${k.shape}], v [${v.shape}] into [${kCache.shape}] at ${length} of ${capacity}`);
    }
    q.assertWritable('ropeAppend');
    k.assertWritable('ropeAppend');
    addon().ropeAppend(devF32('ropeAppend', 'q', q), devF32('ropeAppend', 'k', k), devF32('ropeAppend', 'v', v), small(positions), small(invFreq),
      devF32('ropeAppend', 'kCache', kCache), devF32('ropeAppend', 'vCache', vCache), B, T, nH, nKV, hd, capacity, length, capture ? capture.pastLen : 0);
  },

  cacheWrite(dst, src, B, T, capacity, length) {
    const row = dst.numel / (B * capacity);
    if (!Number.isInteger(row) || src.numel !== B * T * row || length + T > capacity) {
      throw new RangeError(`cuda cacheWrite: [${src.shape}] into [${dst.shape}] at ${length} of ${capacity}`);
    }
    addon().kvWrite(devF32('cacheWrite', 'dst', dst), devF32('cacheWrite', 'src', src), B, T, capacity, row, length, capture ? capture.pastLen : 0);
  },

  add(a, b, out) {
    const n = elementwiseShape('add', a, { b }, out);
    addon().add(devF32('add', 'out', out), devF32('add', 'a', a), devF32('add', 'b', b), n);
  },

  randomTensor(dtype, shape, seed, std) {
    if (!FLOAT_WEIGHTS.includes(dtype)) throw new TypeError(`randomTensor: ${dtype} (F32, BF16 or F16)`);
    const t = newTensor(dtype, shape, false);
    addon().fillRandom(dev('randomTensor', 'out', t), WTYPE[dtype as 'F32' | 'BF16' | 'F16'], t.numel, seed >>> 0, std);
    return t;
  },

  argmax(x) {
    const cols = x.shape[x.shape.length - 1], rows = x.numel / cols;
    const out = newTensor('I32', [rows], false);
    addon().argmax(dev('argmax', 'out', out), devF32('argmax', 'x', x), rows, cols);
    return this.download(out).data as Int32Array;
  },

  greedyIds(logits) { return this.argmax(logits); },

  sampleIds(logits, step) {
    const V = logits.shape[logits.shape.length - 1], rows = logits.numel / V;
    if (step.u.length !== rows || step.penalized.length !== rows || step.banned.length !== rows) {
      throw new RangeError(`cuda sampleIds: logits have ${rows} rows, the step's inputs ${step.u.length}/${step.penalized.length}/${step.banned.length}`);
    }
    // meta (native/cuda/sample.cu): u as float64 [rows], per row (penStart, penEnd, banStart, banEnd), then the ids.
    let n = 6 * rows;
    for (let r = 0; r < rows; r++) n += step.penalized[r].length + step.banned[r].length;
    const meta = new Int32Array(n);
    new Float64Array(meta.buffer, 0, rows).set(step.u);
    let at = 6 * rows;
    for (let r = 0; r < rows; r++) {
      for (const [k, ids] of [[0, step.penalized[r]], [2, step.banned[r]]] as const) {
        meta[2 * rows + 4 * r + k] = at;
        for (let i = 0; i < ids.length; i++) {
          const id = ids[i];
          if (!(id >= 0 && id < V)) throw new RangeError(`cuda sampleIds: token id ${id} of row ${r} is outside the vocabulary (${V})`);
          meta[at++] = id;
        }
        meta[2 * rows + 4 * r + k + 1] = at;
      }
    }
    const metaT = this.upload(new Tensor('I32', [n], meta)), out = newTensor('I32', [rows], false);
    addon().sample(dev('sampleIds', 'out', out), devF32('sampleIds', 'logits', logits), dev('sampleIds', 'meta', metaT), rows, V,
      step.temperature, step.topK, step.topP, step.minP, step.repetitionPenalty, step.doSample);
    const ids = this.download(out).data as Int32Array;
    this.release!(metaT, out);
    return ids;
  },

  decoder: (model, cache) => new CudaDecodeGraph(model, cache),

  mark: () => addon().eventRecord(),
  elapsed: (a, b) => addon().eventElapsed(a, b),
};

/**
 * The training ops on the device (native/cuda/train.cu), twins of src/train/ops.ts (test/cuda.test.ts compares them):
 * forwards that keep what their backward needs, backwards, the causal-LM loss and a general float32 GEMM. Every
 * tensor is a cuda F32 tensor laid out as in ops.ts; outputs are new tensors. For the training engine's device path.
 */
export const cudaTrain = {
  rmsnormForward(x: Tensor<'F32'>, w: Tensor<'F32'>, eps: number): { y: Tensor<'F32'>; rstd: Tensor<'F32'> } {
    const D = w.numel, rows = x.numel / D, y = newTensor('F32', x.shape, false), rstd = newTensor('F32', [rows], false);
    addon().train('rmsnormFwd', p('y', y), p('rstd', rstd), p('x', x), p('w', w), rows, D, eps);
    return { y, rstd };
  },
  /** dx; dw (when given) += Σ_rows dy⊙x·rstd. */
  rmsnormBackward(dy: Tensor<'F32'>, w: Tensor<'F32'>, x: Tensor<'F32'>, rstd: Tensor<'F32'>, dw: Tensor<'F32'> | null): Tensor<'F32'> {
    const D = w.numel, rows = dy.numel / D, dx = newTensor('F32', dy.shape, false);
    addon().train('rmsnormBwd', p('dx', dx), dw ? p('dw', dw) : 0, p('dy', dy), p('w', w), p('x', x), p('rstd', rstd), rows, D);
    return dx;
  },
  layernormForward(x: Tensor<'F32'>, w: Tensor<'F32'>, b: Tensor<'F32'>, eps: number): { y: Tensor<'F32'>; xhat: Tensor<'F32'>; rstd: Tensor<'F32'> } {
    const D = w.numel, rows = x.numel / D;
    const y = newTensor('F32', x.shape, false), xhat = newTensor('F32', x.shape, false), rstd = newTensor('F32', [rows], false);
    addon().train('layernormFwd', p('y', y), p('xhat', xhat), p('rstd', rstd), p('x', x), p('w', w), p('b', b), rows, D, eps);
    return { y, xhat, rstd };
  },
  /** dx; dw += Σ dy⊙x̂ and db += Σ dy when given (both or neither). */
  layernormBackward(dy: Tensor<'F32'>, w: Tensor<'F32'>, xhat: Tensor<'F32'>, rstd: Tensor<'F32'>, dw: Tensor<'F32'> | null, db: Tensor<'F32'> | null): Tensor<'F32'> {
    if (!dw !== !db) throw new TypeError('cuda layernormBackward: dw and db come together');
    const D = w.numel, rows = dy.numel / D, dx = newTensor('F32', dy.shape, false);
    addon().train('layernormBwd', p('dx', dx), dw ? p('dw', dw) : 0, db ? p('db', db) : 0, p('dy', dy), p('w', w), p('xhat', xhat), p('rstd', rstd), rows, D);
    return dx;
  },
  siluMulBackward(dy: Tensor<'F32'>, g: Tensor<'F32'>, u: Tensor<'F32'>): { dg: Tensor<'F32'>; du: Tensor<'F32'> } {
    const dg = newTensor('F32', dy.shape, false), du = newTensor('F32', dy.shape, false);
    addon().train('siluMulBwd', p('dg', dg), p('du', du), p('dy', dy), p('g', g), p('u', u), dy.numel);
    return { dg, du };
  },
  reluBackward(dy: Tensor<'F32'>, x: Tensor<'F32'>): Tensor<'F32'> {
    const dx = newTensor('F32', dy.shape, false);
    addon().train('reluBwd', p('dx', dx), p('dy', dy), p('x', x), dy.numel);
    return dx;
  },
  /**
   * ops.causalLmLoss on logits [B·T, V] (labels on the host, checked there): the loss, the scored count and dlogits
   * (a new tensor; the per-row losses come down, the logits do not).
   */
  causalLmLoss(logits: Tensor<'F32'>, labels: ArrayLike<number>, B: number, T: number, V: number, divisor?: number): { loss: number; count: number; dlogits: Tensor<'F32'> } {
    const { targets, count } = shiftedTargets(labels, B, T, V);
    const div = divisor ?? count;
    const tg = cudaBackend.upload(new Tensor('I32', [B * T], targets)), dl = newTensor('F32', logits.shape, false), nll = newTensor('F32', [B * T], false);
    addon().train('causalLmLoss', p('dlogits', dl), p('nll', nll), p('logits', logits), dev('train', 'targets', tg), B * T, V, div);
    const rows = cudaBackend.download(nll).f32;
    let sum = 0;
    for (const v of rows) sum += v;
    cudaBackend.release!(tg, nll);
    return { loss: div > 0 ? sum / div : 0, count, dlogits: dl };
  },
  /** o [B, T, H, hd] and the probabilities P [B, H, T, T] (what the backward needs besides q, k, v). */
  attentionForward(q: Tensor<'F32'>, k: Tensor<'F32'>, v: Tensor<'F32'>, sh: AttentionShape): { o: Tensor<'F32'>; P: Tensor<'F32'> } {
    const { B, T, H, nKV, hd, scale, keyMask, window } = sh;
    const o = newTensor('F32', [B, T, H, hd], false), P = newTensor('F32', [B, H, T, T], false);
    addon().train('attentionFwd', p('o', o), p('P', P), p('q', q), p('k', k), p('v', v), keyMask ? small(keyMask) : 0, B, T, H, nKV, hd, scale, window);
    return { o, P };
  },
  /** LoRA dropout on the device: drop = 1/(1 − p) or 0 per element from a hash of (seed, index); xd = x⊙drop. */
  dropout(x: Tensor<'F32'>, prob: number, seed: number): { xd: Tensor<'F32'>; drop: Tensor<'F32'> } {
    const xd = newTensor('F32', x.shape, false), drop = newTensor('F32', x.shape, false);
    addon().train('dropout', p('xd', xd), p('drop', drop), p('x', x), x.numel, prob, seed >>> 0);
    return { xd, drop };
  },
  /** y += a⊙b. */
  mulAdd(y: Tensor<'F32'>, a: Tensor<'F32'>, b: Tensor<'F32'>): void {
    if (a.numel !== y.numel || b.numel !== y.numel) throw new RangeError('cuda mulAdd: sizes differ');
    addon().train('mulAdd', p('y', y), p('a', a), p('b', b), y.numel);
  },
  /** dq, dk, dv; P is overwritten (it holds dS after). */
  attentionBackward(dO: Tensor<'F32'>, q: Tensor<'F32'>, k: Tensor<'F32'>, v: Tensor<'F32'>, P: Tensor<'F32'>, sh: AttentionShape): { dq: Tensor<'F32'>; dk: Tensor<'F32'>; dv: Tensor<'F32'> } {
    const { B, T, H, nKV, hd, scale } = sh;
    const dq = newTensor('F32', q.shape, false), dk = newTensor('F32', k.shape, false), dv = newTensor('F32', v.shape, false);
    addon().train('attentionBwd', p('dq', dq), p('dk', dk), p('dv', dv), p('P', P), p('dO', dO), p('q', q), p('k', k), p('v', v), B, T, H, nKV, hd, scale);
    return { dq, dk, dv };
  },
  /**
   * Row-major C [M, N] = op(A) [M, K] · op(B) [K, N] (A stored [K, M] when ta, B stored [N, K] when tb), into `into`
   * (added to it when accumulate) or a new tensor. B may be BF16/F16 (A is rounded to it, as matmul does).
   */
  gemm(A: Tensor<'F32'>, B: Tensor, M: number, N: number, K: number, ta: boolean, tb: boolean, into?: Tensor<'F32'>, accumulate = false, alpha = 1): Tensor<'F32'> {
    if (A.numel !== M * K || B.numel !== K * N) throw new RangeError(`cuda gemm: A holds ${A.numel} values, B ${B.numel}, for M ${M}, N ${N}, K ${K}`);
    if (!FLOAT_WEIGHTS.includes(B.dtype)) throw new TypeError(`cuda gemm: B is ${B.dtype} (F32, BF16 or F16)`);
    const C = into ?? newTensor('F32', [M, N], false);
    if (C.numel !== M * N) throw new RangeError(`cuda gemm: C holds ${C.numel} values, not ${M}×${N}`);
    addon().train('gemm', p('C', C), p('A', A), dev('gemm', 'B', B), WTYPE[B.dtype as 'F32' | 'BF16' | 'F16'], M, N, K, ta, tb, accumulate, alpha);
    return C;
  },
  /**
   * One AdamW update of p from its gradient g (first scaled by clip) and moments m, v, as src/train/optim.ts's step:
   * decay = 1 − lr·weight_decay (1 for no decay), stepSize = lr / (1 − β1ᵗ), bc2s = sqrt(1 − β2ᵗ).
   */
  adamw(pt: Tensor<'F32'>, g: Tensor<'F32'>, m: Tensor<'F32'>, v: Tensor<'F32'>, o: { lr: number; beta1: number; beta2: number; eps: number; decay: number; stepSize: number; bc2s: number; clip: number }): void {
    addon().train('adamw', p('p', pt), p('g', g), p('m', m), p('v', v), pt.numel, o.lr, o.beta1, o.beta2, o.eps, o.decay, o.stepSize, o.bc2s, o.clip);
  },
  /** Σ g² over several tensors, in float64 (one download for all). */
  sumSquares(gs: Tensor<'F32'>[]): number {
    if (!gs.length) return 0;
    const parts = newTensor('F32', [gs.length * 64 * 2], false);  // float64 partials, 64 a tensor (kSumsqBlocks)
    gs.forEach((g, i) => addon().train('sumsq', dev('sumSquares', 'partials', parts) + i * 64 * 8, p('g', g), g.numel));
    const host = cudaBackend.download(parts);
    cudaBackend.release!(parts);
    const d = new Float64Array(host.f32.buffer, host.f32.byteOffset, gs.length * 64);
    let s = 0;
    for (const x of d) s += x;
    return s;
  },
  /** dst = s·src (float64 product, rounded once). */
  scaleCopy(dst: Tensor<'F32'>, src: Tensor<'F32'>, s: number): void {
    if (dst.numel !== src.numel) throw new RangeError('cuda scaleCopy: sizes differ');
    addon().train('scaleCopy', p('dst', dst), p('src', src), src.numel, s);
  },
  /** t = 0 (a memset). */
  zero(t: Tensor<'F32'>): void { addon().train('zero', p('t', t), t.byteLength); },
  /** A new zero-filled F32 tensor. */
  zeros(shape: readonly number[]): Tensor<'F32'> {
    const t = newTensor('F32', shape, false);
    cudaTrain.zero(t);
    return t;
  },
};

function p(what: string, t: Tensor): number { return devF32('train', what, t); }

/**
 * GPTQ's device half (native/cuda/gptq.cu; src/quant/gptq-cuda.ts runs the algorithm over it): F32 tensors laid out
 * as src/quant/gptq.ts's arrays (W [N, K], H [K, K], U [K, K] row-major; grids [groups, N]).
 */
export const cudaGptq = {
  /** A float32 copy of a float weight on the device. */
  toF32(w: Tensor): Tensor<'F32'> {
    if (!FLOAT_WEIGHTS.includes(w.dtype)) throw new TypeError(`cuda gptq: the weight is ${w.dtype} (F32, BF16 or F16)`);
    const out = newTensor('F32', w.shape, false);
    addon().gptq('toF32', dev('gptq', 'out', out), dev('gptq', 'weight', w), WTYPE[w.dtype as 'F32' | 'BF16' | 'F16'], w.numel);
    return out;
  },
  /** H's diagonal, on the host. */
  diag(H: Tensor<'F32'>, K: number): Float32Array {
    const d = newTensor('F32', [K], false);
    addon().gptq('diag', g('diag', d), g('H', H), K);
    const host = cudaBackend.download(d).f32;
    cudaBackend.release!(d);
    return host;
  },
  /** H = beta·H + alpha·XᵀX for X [T, K]. */
  xtx(H: Tensor<'F32'>, X: Tensor<'F32'>, T: number, K: number, beta: number, alpha: number): void {
    if (X.numel !== T * K || H.numel !== K * K) throw new RangeError(`cuda gptq xtx: X holds ${X.numel} values (T ${T} × K ${K}), H ${H.numel}`);
    addon().gptq('xtx', g('H', H), g('X', X), T, K, beta, alpha);
  },
  /** find_params of columns [c0, c1) of W [N, ld] into grid slot `slot` of scale/zero [groups, N]. */
  findParams(scale: Tensor<'F32'>, zero: Tensor<'F32'>, slot: number, W: Tensor<'F32'>, N: number, ld: number, c0: number, c1: number, bits: number, sym: boolean): void {
    if ((slot + 1) * N > scale.numel || scale.numel !== zero.numel) throw new RangeError(`cuda gptq findParams: slot ${slot} is outside the grids`);
    addon().gptq('findParams', g('scale', scale) + slot * N * 4, g('zero', zero) + slot * N * 4, g('W', W), N, ld, c0, c1, bits, sym);
  },
  /** dst [N, K] = W's columns in perm order (null: as they are), dead columns (1 in `dead`, original order) zeroed. */
  columns(dst: Tensor<'F32'>, W: Tensor<'F32'>, perm: Tensor | null, dead: Tensor | null, N: number, K: number): void {
    addon().gptq('columns', g('dst', dst), g('W', W), perm ? dev('gptq', 'perm', perm) : 0, dead ? dev('gptq', 'dead', dead) : 0, N, K);
  },
  /**
   * U [K, K] (upper, H⁻¹ = UᵀU) from H with its diagonal replaced by `diag` (damped, in perm order) and permuted by
   * perm: Cholesky, inverse, Cholesky in float64. Returns the first failing column of each Cholesky, or -1.
   */
  prepare(U: Tensor<'F32'>, H: Tensor<'F32'>, perm: Tensor | null, diag: Float32Array, K: number): [number, number] {
    const A = newTensor('I64', [K * K], false), X = newTensor('I64', [K * K], false), fail = newTensor('I32', [2], false);
    const d = cudaBackend.upload(new Tensor('F32', [K], diag));
    try {
      addon().gptq('prepare', g('U', U), dev('gptq', 'A', A), dev('gptq', 'X', X), dev('gptq', 'fail', fail), g('H', H), perm ? dev('gptq', 'perm', perm) : 0, g('diag', d), K);
      const f = cudaBackend.download(fail).data as Int32Array;
      return [f[0] >= 0x7f7f7f7f ? -1 : f[0], f[1] >= 0x7f7f7f7f ? -1 : f[1]];
    } finally {
      cudaBackend.release!(A, X, fail, d);
    }
  },
  /** The column loop of block [i1, i1 + B) (refLinalg.quantizeBlock's twin); rowLoss [N] (float64 in I64 storage) accumulates. */
  quantBlock(W: Tensor<'F32'>, N: number, K: number, i1: number, B: number, U: Tensor<'F32'>, scales: Tensor<'F32'>, zeros: Tensor<'F32'>,
    colGroup: Tensor, perm: Tensor | null, bits: number, codes: Tensor, deq: Tensor<'F32'>, err: Tensor<'F32'>, rowLoss: Tensor): void {
    addon().gptq('quantBlock', g('W', W), N, K, i1, B, g('U', U), g('scales', scales), g('zeros', zeros), dev('gptq', 'colGroup', colGroup),
      perm ? dev('gptq', 'perm', perm) : 0, bits, dev('gptq', 'codes', codes), g('deq', deq), g('err', err), dev('gptq', 'rowLoss', rowLoss));
  },
  /** W[:, i1+B:] −= err [N, B]·U[i1:i1+B, i1+B:]. */
  blockUpdate(W: Tensor<'F32'>, N: number, K: number, err: Tensor<'F32'>, B: number, U: Tensor<'F32'>, i1: number): void {
    addon().gptq('blockUpdate', g('W', W), N, K, g('err', err), B, g('U', U), i1);
  },
  /** Round to nearest: codes (U8) and values of W [N, K], column c on grid slot colGroup[c]. */
  rtn(codes: Tensor, deq: Tensor<'F32'>, W: Tensor<'F32'>, scales: Tensor<'F32'>, zeros: Tensor<'F32'>, colGroup: Tensor, N: number, K: number, bits: number): void {
    addon().gptq('rtn', dev('gptq', 'codes', codes), g('deq', deq), g('W', W), g('scales', scales), g('zeros', zeros), dev('gptq', 'colGroup', colGroup), N, K, bits);
  },
  /** Σ a·b in float64 (a and b of equal size). */
  dot(a: Tensor<'F32'>, b: Tensor<'F32'>): number {
    if (a.numel !== b.numel) throw new RangeError('cuda gptq dot: sizes differ');
    const parts = newTensor('I64', [64], false);
    addon().gptq('dot', dev('gptq', 'partials', parts), g('a', a), g('b', b), a.numel);
    const host = cudaBackend.download(parts).data as BigInt64Array;
    cudaBackend.release!(parts);
    let s = 0;
    for (const v of new Float64Array(host.buffer, host.byteOffset, 64)) s += v;
    return s;
  },
  /** Σ (a − b)² in float64. */
  squaredDistance(A: Tensor<'F32'>, B: Tensor<'F32'>): number {
    if (A.numel !== B.numel) throw new RangeError('cuda squaredDistance: sizes differ');
    const D = newTensor('F32', A.shape, false);
    addon().gptq('sub', g('D', D), g('A', A), g('B', B), A.numel);
    const r = cudaGptq.dot(D, D);
    cudaBackend.release!(D);
    return r;
  },
  /** Σ_n dₙᵀ·H·dₙ for D = A − B (B null: D = A) [N, K] and a symmetric H (src/quant/linalg.ts quadForm). */
  quadForm(A: Tensor<'F32'>, B: Tensor<'F32'> | null, H: Tensor<'F32'>, N: number, K: number): number {
    const D = B ? newTensor('F32', [N, K], false) : A;
    if (B) addon().gptq('sub', g('D', D), g('A', A), g('B', B), N * K);
    const Y = cudaTrain.gemm(D, H, N, K, K, false, false);
    const r = cudaGptq.dot(Y, D);
    cudaBackend.release!(Y, ...(B ? [D] : []));
    return r;
  },
};

function g(what: string, t: Tensor): number { return devF32('gptq', what, t); }

/** A zeroed float64 array of n on the device (F32 storage of 2n) and its values on the host. */
function f64Zeros(n: number): Tensor<'F32'> { return cudaTrain.zeros([2 * n]); }
function downF64(t: Tensor<'F32'>): Float64Array {
  const h = cudaBackend.download(t).f32;
  return new Float64Array(h.buffer, h.byteOffset, h.length / 2);
}

/**
 * AWQ's device half (native/cuda/awq.cu; src/quant/awq-cuda.ts runs the search over it): F32 tensors laid out as
 * src/quant/awq.ts's arrays, each op the twin of the kernel or statistic of the same name there.
 */
export const cudaAwq = {
  /** Q(W·diag(s))/s [N, K] (s null: Q(W)); with codes, also the codes [N, K] and grids [K/G, N] (zeros U8). */
  pseudoQuantize(W: Tensor<'F32'>, N: number, K: number, s: Tensor<'F32'> | null, bits: number, G: number, zeroPoint: boolean, codes = false):
    { out: Tensor<'F32'>; codes?: Tensor; scales?: Tensor<'F32'>; zeros?: Tensor } {
    const out = newTensor('F32', [N, K], false), nG = K / G;
    const c = codes ? newTensor('U8', [N, K], false) : null, sc = codes ? newTensor('F32', [nG, N], false) : null, z = codes ? newTensor('U8', [nG, N], false) : null;
    addon().awq('pq', a('out', out), c ? dev('awq', 'codes', c) : 0, sc ? a('scales', sc) : 0, z ? dev('awq', 'zeros', z) : 0, a('W', W), s ? a('s', s) : 0, N, K, G, bits, zeroPoint);
    return c ? { out, codes: c, scales: sc!, zeros: z! } : { out };
  },
  /** Per-group Gram matrices [K/G, G, G] of x [T, K] (float64; F32 storage of twice the count). */
  groupGram(x: Tensor<'F32'>, T: number, K: number, G: number): Tensor<'F32'> {
    const gram = newTensor('F32', [2 * K * G], false);
    addon().awq('gram', a('gram', gram), a('x', x), T, K, G);
    return gram;
  },
  /** The clip search: best [N, K/G]. */
  clipSearch(W: Tensor<'F32'>, N: number, K: number, G: number, gram: Tensor<'F32'>, T: number, bits: number, zeroPoint: boolean, nShrink: number, nGrid: number): Tensor<'F32'> {
    const best = newTensor('F32', [N, K / G], false);
    addon().awq('clip', a('best', best), a('W', W), N, K, G, a('gram', gram), T, bits, zeroPoint, nShrink, nGrid);
    return best;
  },
  /** Σ over the inputs' rows of |x| per column, float64 in order (activationMean's sums); inputs [rows_i, K]. */
  absSums(inputs: readonly Tensor<'F32'>[], K: number): Float64Array {
    const acc = f64Zeros(K);
    for (const x of inputs) addon().awq('absSum', a('acc', acc), a('x', x), x.numel / K, K);
    const r = downF64(acc);
    cudaBackend.release!(acc);
    return r;
  },
  /** max |w| of each (row, group) [N, K/G], plus `add` in float64 then rounded (0: none). */
  groupAbsmax(W: Tensor<'F32'>, N: number, K: number, G: number, add = 0): Tensor<'F32'> {
    const gmax = newTensor('F32', [N, K / G], false);
    addon().awq('groupAbsmax', a('gmax', gmax), a('W', W), N, K, G, add);
    return gmax;
  },
  /** weightMean's sums over the weights [N_i, K] in order: Σ_r |w[r, c]| / (group max + 1e-6). */
  weightSums(weights: readonly Tensor<'F32'>[], K: number, G: number): Float64Array {
    const acc = f64Zeros(K);
    for (const W of weights) {
      const N = W.numel / K, gmax = cudaAwq.groupAbsmax(W, N, K, G, 1e-6);
      addon().awq('weightMean', a('acc', acc), a('W', W), a('gmax', gmax), N, K, G);
      cudaBackend.release!(gmax);
    }
    const r = downF64(acc);
    cudaBackend.release!(acc);
    return r;
  },
  /** W·diag(s) (a new [N, K]). */
  scaleColumns(W: Tensor<'F32'>, N: number, K: number, s: Tensor<'F32'>): Tensor<'F32'> {
    const out = newTensor('F32', [N, K], false);
    addon().awq('scale', a('out', out), a('W', W), a('s', s), N, K, s.numel, 0);
    return out;
  },
  /** W with its last len(s) rows divided by s (a new [N, K]). */
  divideLastRows(W: Tensor<'F32'>, N: number, K: number, s: Tensor<'F32'>): Tensor<'F32'> {
    const out = newTensor('F32', [N, K], false);
    addon().awq('scale', a('out', out), a('W', W), a('s', s), N, K, s.numel, 1);
    return out;
  },
  /** out rows [t0, t0 + n) = x rows r0, r0 + step, … divided by s (when given). */
  gatherRows(out: Tensor<'F32'>, t0: number, x: Tensor<'F32'>, s: Tensor<'F32'> | null, r0: number, step: number, n: number, K: number): void {
    if ((t0 + n) * K > out.numel || (n > 0 && (r0 + (n - 1) * step + 1) * K > x.numel)) throw new RangeError('cuda awq gatherRows: rows out of range');
    addon().awq('gatherRows', a('out', out) + t0 * K * 4, a('x', x), s ? a('s', s) : 0, r0, step, n, K);
  },
  /** W clamped to ±max[row, group] (a new [N, K]). */
  applyClip(W: Tensor<'F32'>, max: Tensor<'F32'>, N: number, K: number, G: number): Tensor<'F32'> {
    const out = newTensor('F32', [N, K], false);
    addon().awq('applyClip', a('out', out), a('W', W), a('max', max), N, K, G);
    return out;
  },
};

function a(what: string, t: Tensor): number { return devF32('awq', what, t); }

/**
 * A quantized weight dequantized on the device into a new [N, K] tensor, as its prefill product uses it: GPTQ/AWQ
 * float16, NF4/FP4 in the weight's dtype (dequantize_4bit), LLM.int8 float32 (dequantizeInt8). The caller releases it.
 */
export function cudaDequantize(qw: QuantizedWeight): Tensor {
  const [N, K] = qw.shape, a = addon();
  if (QG.includes(qw.format)) {
    const l = qgOf('dequantize', qw), w = newTensor('F16', [N, K], false);
    a.train('qgDequant', dev('dequantize', 'w', w), l.bits, l.K, l.nc, l.G, l.nG, l.perm ? dev('dequantize', 'perm', l.perm) : 0,
      dev('dequantize', 'codes', l.codes), dev('dequantize', 'scales', l.scales), dev('dequantize', 'zeros', l.zeros), N);
    return w;
  }
  if (B4.includes(qw.format)) {
    const l = cudaB4Layout(qw as Bnb4QuantizedWeight);
    const dtype = l.wt === WTYPE.F32 ? 'F32' : l.wt === WTYPE.BF16 ? 'BF16' : 'F16', w = newTensor(dtype, [N, K], false);
    a.train('b4Dequant', dev('dequantize', 'w', w), l.wt, dev('dequantize', 'packed', l.packed), devF32('dequantize', 'absmax', l.absmax), small(l.lut), N * K, l.blocksize);
    return w;
  }
  const l = cudaInt8Layout(qw as Int8QuantizedWeight), w = newTensor('F32', [N, K], false);
  a.train('int8Dequant', p('w', w), dev('dequantize', 'CB', l.CB), devF32('dequantize', 'SCB', l.SCB), N, K);
  return w;
}

/** Whether the cuda backend can run here, and why not. */
export function cudaAvailable(): { ok: boolean; why?: string } {
  const { addon: a, probe } = cudaStatus();
  return a ? { ok: true } : { ok: false, why: probe.why };
}
