// The native CPU backend: unpacks tensors (zero copy) and calls the addon in native/cpu. Shapes are checked by
// src/backend/shapes.ts, the same rules as the reference backend; the addon re-checks array lengths so nothing reads
// out of bounds. Importing never throws; using the backend without a built addon throws a NativeUnavailableError
// that says why (addonLoadError).
//
// Also the runtime controls of the native CPU runtime, part of the public API: setThreads / getThreads / cpuInfo /
// measureRoofline. The thread count starts at LOWBIT_THREADS when that is set, else at the physical cores this
// process may use (at most 16).
import { hostMemory } from '../host.js';
import type { AttentionArgs, Backend, OpName } from '../backend.js';
import type { DType } from '../../tensor/dtype.js';
import { bnb4Scales, type QuantFormat, type QuantizedWeight } from '../../quant/qweight.js';
import { unpackGptq, type GptqWeight } from '../../quant/gptq-format.js';
import { unpackAwq, type AwqWeight } from '../../quant/awq-format.js';
import { qgPack, type QgPacked } from '../../quant/qg.js';
import { matmulQRef } from '../ref/quant.js';
import { warnOnce } from '../../util/warn.js';
import type { Tensor } from '../../tensor/tensor.js';
import { Q4TYPE, WTYPE, loadAddon, requireAddon, type CpuInfo } from '../../native/addon.js';
import { attentionShape, elementwiseShape, embeddingShape, matmulQShape, matmulShape, normShape, ropeShape, softmaxShape } from '../shapes.js';

export { WTYPE, addonLoadError, loadAddon, type NativeAddon } from '../../native/addon.js';
export type { CpuInfo } from '../../native/addon.js';

const FLOAT_WEIGHTS: readonly DType[] = ['F32', 'BF16', 'F16'];
/** Quantized formats with a native matmulQ kernel: bitsandbytes NF4/FP4 and LLM.int8, GPTQ, AWQ (GPTQ's kernels). */
const NATIVE_QUANT: readonly QuantFormat[] = ['nf4', 'fp4', 'int8', 'gptq', 'awq'];

// A GPTQ layer in the kernels' layout, built at its first matmul (null: its groups cannot be made contiguous runs of
// one size that is a multiple of 32, so it takes the reference matmul).
// An AWQ layer (GEMM or GEMV) takes the same kernels: its codes unpacked once (AWQ_ORDER undone) into GptqCodes with
// g_idx = floor(k / G), which qgPack lays out like any in-order GPTQ layer.
const qgLayouts = new WeakMap<GptqWeight | AwqWeight, QgPacked | null>();
function qgLayout(w: GptqWeight | AwqWeight): QgPacked | null {
  let p = qgLayouts.get(w);
  if (p === undefined) { p = qgPack('layout' in w ? unpackAwq(w) : unpackGptq(w)); qgLayouts.set(w, p); }
  return p;
}
const DTYPE_CODE = { float32: WTYPE.F32, bfloat16: WTYPE.BF16, float16: WTYPE.F16 } as const;

// GPTQ/AWQ layers that read the same x, joined row-wise into one layout (their codes, scales and zeros concatenated)
// so that one matmulQg call (one x quantization, one thread-pool job) serves all: keyed by the first weight, with
// the others it was built for. The layers' own layouts are dropped once joined (rebuilt if one runs alone).
const joined = new WeakMap<object, { others: object[]; p: QgPacked; biasKey: unknown[]; bias: Float32Array | null }>();
function joinedLayout(ws: (GptqWeight | AwqWeight)[], biases: (Tensor<'F32'> | null)[]): { p: QgPacked; bias: Float32Array | null } | null {
  const hit = joined.get(ws[0]);
  if (hit && hit.others.length === ws.length - 1 && hit.others.every((o, i) => o === ws[i + 1]) && hit.biasKey.every((b, i) => b === (biases[i]?.data ?? null))) return hit;
  const ps = ws.map((w) => qgLayout(w));
  if (ps.some((p) => !p)) return null;
  const p0 = ps[0]!;
  for (const p of ps as QgPacked[]) {
    if (p.bits !== p0.bits || p.K !== p0.K || p.Kpad !== p0.Kpad || p.G !== p0.G || p.nG !== p0.nG) return null;
    if ((p.perm === null) !== (p0.perm === null) || (p.perm && p.perm.some((v, i) => v !== p0.perm![i]))) return null;
  }
  const cat = <T extends Uint8Array | Uint16Array | Float32Array>(parts: T[], make: (n: number) => T): T => {
    const out = make(parts.reduce((a, x) => a + x.length, 0));
    parts.reduce((o, x) => (out.set(x, o), o + x.length), 0);
    return out;
  };
  const all = ps as QgPacked[];
  const p: QgPacked = {
    ...p0, N: all.reduce((a, x) => a + x.N, 0),
    codes: cat(all.map((x) => x.codes), (n) => new Uint8Array(n)), scales: cat(all.map((x) => x.scales), (n) => new Uint16Array(n)),
    zeros: cat(all.map((x) => x.zeros), (n) => new Uint8Array(n)),
  };
  const bias = biases.some((b) => b) ? cat(biases.map((b, i) => b ? b.f32 : new Float32Array(all[i].N)), (n) => new Float32Array(n)) : null;
  ws.forEach((w) => qgLayouts.delete(w));
  const entry = { others: ws.slice(1), p, biasKey: biases.map((b) => b?.data ?? null), bias };
  joined.set(ws[0], entry);
  return entry;
}

/** True when the native addon is built and loads. */
export function cpuAvailable(): boolean {
  return loadAddon() !== null;
}

/**
 * Threads the native CPU backend splits each op over, the calling thread included (an integer from 1 to 1024).
 * Applies to every later op in this process. Throws NativeUnavailableError when the addon is not built, RangeError
 * for a bad count.
 */
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new RangeError(`setThreads: n must be an integer from 1 to 1024, got ${n}`);
  requireAddon('setThreads').setThreads(n);
}

/** Threads the native CPU backend uses now (see setThreads). */
export function getThreads(): number {
  return requireAddon('getThreads').getThreads();
}

/** The CPU's SIMD features, the kernel level in use, physical cores, and the default and current thread counts. */
export function cpuInfo(): CpuInfo {
  return requireAddon('cpuInfo').cpuInfo();
}

export interface Roofline {
  /** Read bandwidth in GB/s over a buffer larger than the caches, with the current threads. */
  bandwidthGBs: number;
  /** fp32 FMA peak in GFLOP/s with the current threads at the best SIMD level. */
  peakGflops: number;
  threads: number;
}

/**
 * Measures this machine's roofline with the current thread count: read bandwidth over `bandwidthBytes` (default
 * 1 GiB, `iters` passes) and the fp32 FMA peak over `peakMs` milliseconds. Takes about a second with the defaults.
 */
export function measureRoofline(opts: { bandwidthBytes?: number; iters?: number; peakMs?: number } = {}): Roofline {
  const a = requireAddon('measureRoofline');
  const bandwidthGBs = a.memBandwidth(opts.bandwidthBytes ?? 2 ** 30, opts.iters ?? 5);
  const peakGflops = a.fmaPeak(opts.peakMs ?? 500);
  return { bandwidthGBs, peakGflops, threads: a.getThreads() };
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

export const cpuBackend: Backend = {
  name: 'cpu',
  device: 'cpu',
  ...hostMemory,

  supports(op: OpName, dtypes: readonly (DType | QuantFormat)[]): boolean {
    if (!cpuAvailable()) return false;
    if (op === 'matmulQ') return dtypes.every((d) => NATIVE_QUANT.includes(d as QuantFormat));
    if (op === 'matmulQMany') return dtypes.every((d) => d === 'gptq' || d === 'awq');
    if (op === 'matmul' || op === 'embedding') return dtypes.every((d) => FLOAT_WEIGHTS.includes(d as DType));
    return dtypes.every((d) => d === 'F32');
  },

  matmul(x, w, bias, out) {
    const a = requireAddon('cpu backend (matmul)');
    const { M, N, K } = matmulShape(x, w, bias, out);
    const { data, wtype } = weights('matmul', w);
    a.matmul(f32('matmul', 'out', out), f32('matmul', 'x', x), data, wtype, M, N, K, bias ? f32('matmul', 'bias', bias) : null);
  },

  matmulT(dy, w, out) {
    const a = requireAddon('cpu backend (matmulT)');
    const [N, K] = w.shape, M = dy.numel / N;
    if (!Number.isInteger(M) || out.numel !== M * K) throw new TypeError(`cpu matmulT: dy [${dy.shape}] and out [${out.shape}] do not fit a [${N}, ${K}] weight`);
    const { data, wtype } = weights('matmulT', w);
    a.matmul(f32('matmulT', 'out', out), f32('matmulT', 'dy', dy), data, wtype, M, N, K, null, true);
  },

  /** false when the format has no native transposed product here (GPTQ layouts the kernels cannot take). */
  matmulQT(dy, qw, out) {
    const a = requireAddon('cpu backend (matmulQT)');
    const [N, K] = qw.shape, M = dy.numel / N;
    if (!Number.isInteger(M) || out.numel !== M * K) throw new TypeError(`cpu matmulQT: dy [${dy.shape}] and out [${out.shape}] do not fit a [${N}, ${K}] weight`);
    if (qw.format === 'gptq' || qw.format === 'awq') {
      const p = qgLayout(qw.format === 'gptq' ? qw.gptq : qw.awq);
      if (!p) return false;
      a.matmulQg(f32('matmulQT', 'out', out), f32('matmulQT', 'dy', dy), p.codes, p.bits, N, K, p.Kpad, p.G, p.nG, p.scales, p.zeros, p.perm, M, null, true);
      return true;
    }
    if (qw.format === 'int8') {
      a.matmulInt8(f32('matmulQT', 'out', out), f32('matmulQT', 'dy', dy), qw.int8.CB, qw.int8.SCB, M, N, K, qw.threshold, null, true);
      return true;
    }
    const w = qw.bnb4;
    a.matmulQ4(f32('matmulQT', 'out', out), f32('matmulQT', 'dy', dy), w.packed, w.nested ? bnb4Scales(w) : w.absmax,
      null, null, null, 1, 0, M, N, K, w.blocksize, Q4TYPE[w.quantType], DTYPE_CODE[w.dtype], null, true);
    return true;
  },

  matmulQMany(x, qws, biases, outs) {
    if (!qws.every((q) => q.format === 'gptq' || q.format === 'awq')) return false;
    const ws = qws.map((q) => (q.format === 'gptq' ? q.gptq : (q as Extract<QuantizedWeight, { format: 'awq' }>).awq));
    const j = joinedLayout(ws, biases);
    if (!j) return false;
    const a = requireAddon('cpu backend (matmulQMany)');
    const K = qws[0].shape[1], M = x.numel / K, N = j.p.N;
    const y = new Float32Array(M * N);
    a.matmulQg(y, f32('matmulQMany', 'x', x), j.p.codes, j.p.bits, N, K, j.p.Kpad, j.p.G, j.p.nG, j.p.scales, j.p.zeros, j.p.perm, M, j.bias);
    let off = 0;
    outs.forEach((o, i) => {
      const n = qws[i].shape[0], dst = f32('matmulQMany', `out ${i}`, o);
      for (let m = 0; m < M; m++) dst.set(y.subarray(m * N + off, m * N + off + n), m * n);
      off += n;
    });
    return true;
  },

  matmulQ(x, qw, bias, out) {
    const a = requireAddon('cpu backend (matmulQ)');
    const { M, N, K } = matmulQShape(x, qw.shape, bias, out);
    if (qw.format === 'int8') {
      a.matmulInt8(f32('matmulQ', 'out', out), f32('matmulQ', 'x', x), qw.int8.CB, qw.int8.SCB, M, N, K, qw.threshold,
        bias ? f32('matmulQ', 'bias', bias) : null);
      return;
    }
    if (qw.format === 'gptq' || qw.format === 'awq') {
      const p = qgLayout(qw.format === 'gptq' ? qw.gptq : qw.awq);
      if (!p) {
        warnOnce(qw.format === 'gptq'
          ? `cpu matmulQ: a GPTQ layer [${qw.shape}] with group size ${qw.gptq.groupSize} and its g_idx has no native layout (groups must be contiguous runs of a multiple of 32 once sorted); it runs the reference matmul`
          : `cpu matmulQ: an AWQ layer [${qw.shape}] with group size ${qw.awq.groupSize} has no native layout (the kernels take groups of a multiple of 32 inputs); it runs the reference matmul`);
        matmulQRef(x, qw, bias, out);
        return;
      }
      a.matmulQg(f32('matmulQ', 'out', out), f32('matmulQ', 'x', x), p.codes, p.bits, N, K, p.Kpad, p.G, p.nG, p.scales, p.zeros,
        p.perm, M, bias ? f32('matmulQ', 'bias', bias) : null);
      return;
    }
    // Double-quantized scales are decoded once per weight (bnb4Scales, cached; the same float32 values as the
    // kernels' own decode, q4_block_scale) and passed as plain absmax: decoding them per row took 8-bit gathers that
    // made the decode GEMV about 25% slower. The cost is 4 bytes of memory per block (1/16 byte per weight).
    const w = qw.bnb4;
    a.matmulQ4(f32('matmulQ', 'out', out), f32('matmulQ', 'x', x), w.packed, w.nested ? bnb4Scales(w) : w.absmax,
      null, null, null, 1, 0, M, N, K, w.blocksize, Q4TYPE[w.quantType], DTYPE_CODE[w.dtype], bias ? f32('matmulQ', 'bias', bias) : null);
  },

  rmsnorm(x, w, eps, out) {
    const a = requireAddon('cpu backend (rmsnorm)');
    const { rows, D } = normShape('rmsnorm', x, { w }, out);
    a.rmsnorm(f32('rmsnorm', 'out', out), f32('rmsnorm', 'x', x), f32('rmsnorm', 'w', w), rows, D, eps);
  },

  layernorm(x, w, b, eps, out) {
    const a = requireAddon('cpu backend (layernorm)');
    const { rows, D } = normShape('layernorm', x, { w, b }, out);
    a.layernorm(f32('layernorm', 'out', out), f32('layernorm', 'x', x), f32('layernorm', 'w', w), f32('layernorm', 'b', b), rows, D, eps);
  },

  rope(x, positions, invFreq) {
    const a = requireAddon('cpu backend (rope)');
    const { rows, nHeads, hd } = ropeShape(x, positions, invFreq);
    a.rope(f32('rope', 'x', x), rows, nHeads, hd, positions, invFreq);
  },

  attention(q, kCache, vCache, args: AttentionArgs, out) {
    const a = requireAddon('cpu backend (attention)');
    const { B, T, H, nKV, hd, S } = attentionShape(q, kCache, vCache, args, out);
    a.attention(f32('attention', 'out', out), f32('attention', 'q', q), f32('attention', 'kCache', kCache), f32('attention', 'vCache', vCache),
      B, T, H, nKV, hd, S, args.pastLen, args.keyMask, args.scale, args.window ?? 0);
  },

  siluMul(gate, up, out) {
    const a = requireAddon('cpu backend (siluMul)');
    const n = elementwiseShape('siluMul', gate, { up }, out);
    a.siluMul(f32('siluMul', 'out', out), f32('siluMul', 'gate', gate), f32('siluMul', 'up', up), n);
  },

  relu(x, out) {
    const a = requireAddon('cpu backend (relu)');
    const n = elementwiseShape('relu', x, {}, out);
    a.relu(f32('relu', 'out', out), f32('relu', 'x', x), n);
  },

  softmax(x, out) {
    const a = requireAddon('cpu backend (softmax)');
    const { rows, D } = softmaxShape(x, out);
    a.softmax(f32('softmax', 'out', out), f32('softmax', 'x', x), rows, D);
  },

  embedding(table, ids, out) {
    const a = requireAddon('cpu backend (embedding)');
    const { D } = embeddingShape(table, ids, out);
    const { data, wtype } = weights('embedding', table);
    a.embedding(f32('embedding', 'out', out), data, wtype, ids, D);
  },

  add(x, y, out) {
    const a = requireAddon('cpu backend (add)');
    const n = elementwiseShape('add', x, { b: y }, out);
    a.add(f32('add', 'out', out), f32('add', 'a', x), f32('add', 'b', y), n);
  },
};
