// Loads the native CPU addon (native/cpu, built by node-gyp at `npm install`). Returns null when it is missing, so
// the library still works on the `ref` backend and says why. This module sits below io/ and backend/: it knows the
// addon's functions and nothing about tensors.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Weight element type codes shared with native/cpu. */
export const WTYPE = { F32: 0, BF16: 1, F16: 2 } as const;
/** 4-bit code book codes shared with native/cpu (matmulQ4's quantType). */
export const Q4TYPE = { nf4: 0, fp4: 1 } as const;

/** What the CPU offers, which kernel level is in use, and how many threads the pool runs. */
export interface CpuInfo {
  avx2: boolean; fma: boolean; f16c: boolean; avx512f: boolean; avx512bf16: boolean; avx512vnni: boolean; neon: boolean;
  /** Kernel level in use: 'avx512' | 'avx2' | 'neon' | 'scalar'. */
  level: string;
  /** Best level this CPU and build support. */
  best: string;
  /** Logical CPUs (std::thread::hardware_concurrency). */
  hardwareThreads: number;
  /** Distinct physical cores in this process's CPU affinity mask. */
  physicalCores: number;
  /** Threads the pool starts with: LOWBIT_THREADS, else the physical cores (cgroup quota applied), at most 16. */
  defaultThreads: number;
  /** Threads the pool runs now (the calling thread included). */
  threads: number;
  /** Threads ops are split over now: `threads`, or fewer while the pool backs off after a preempted worker stalled it. */
  activeThreads: number;
}

/** What the native thread pool did since the process started (NativeAddon.poolStats; tests read it). */
export interface PoolStats {
  /** Jobs split over the pool's threads. */
  jobs: number;
  /** Chunks of split jobs run on worker threads. */
  chunksOnWorkers: number;
  /** Chunks run on the calling thread, including jobs run inline (one thread, or the pool busy with another caller). */
  chunksOnCaller: number;
  /** Exceptions thrown by chunks on worker threads (each rethrown on the caller). */
  errorsOnWorkers: number;
  /** Waits on a worker that was off its core for 250 µs or more meanwhile (a preempted worker); each narrows the width while adaptive. */
  stalls: number;
}

/** Switches of the native thread pool (NativeAddon.poolConfig). */
export interface PoolConfig {
  /** The split width follows stalls (default). LOWBIT_POOL_ADAPT=0, read when the pool first starts, turns it off; off pins activeThreads at threads. */
  adaptive: boolean;
  /** Test hook: before taking a chunk itself, the caller waits (up to 2 s) until a worker has claimed one of each split job. */
  workerFirst: boolean;
}

/**
 * The addon's functions. All arrays are TypeScript-owned; the addon reads and writes them in place (zero copy).
 * Shapes are passed explicitly; layouts are row-major as in src/backend/backend.ts. Every function throws a JS
 * TypeError / RangeError naming itself on bad arguments, and a RangeError "<fn>: out of memory …" when a native
 * buffer cannot be allocated; no native exception reaches the host process.
 */
export interface NativeAddon {
  // matmul, matmulQ4 and matmulQg take a trailing `transposed`: true computes the input gradient of a frozen linear,
  // y = dx [M, K] = x (dy [M, N]) · W (bias null), the weight dequantized tile by tile (native/cpu/ops.h matmul_t*).
  /** Training attention forward (native/cpu/train.h): o [B,T,H,hd] and softmax probabilities p [B,H,T,T]. */
  attentionTrainForward(o: Float32Array, p: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, mask: Uint8Array | null,
    B: number, T: number, H: number, nKV: number, hd: number, scale: number, window: number): void;
  /** dg = dy·u·σ(g)·(1 + g·(1 − σ(g))), du = dy·silu(g) (src/train/ops.ts siluMulBackward). */
  siluMulBackward(dg: Float32Array, du: Float32Array, dy: Float32Array, g: Float32Array, u: Float32Array): void;
  /** Its backward: dq, dk, dv (overwritten) from dO and the forward's inputs and p. */
  attentionTrainBackward(dq: Float32Array, dk: Float32Array, dv: Float32Array, dO: Float32Array, q: Float32Array, k: Float32Array,
    v: Float32Array, p: Float32Array, B: number, T: number, H: number, nKV: number, hd: number, scale: number): void;
  /** y[M,N] = x[M,K]·w[N,K]ᵀ (+bias[N]); wtype from WTYPE; w is Float32Array or Uint16Array. */
  matmul(y: Float32Array, x: Float32Array, w: Float32Array | Uint16Array, wtype: number, M: number, N: number, K: number, bias: Float32Array | null, transposed?: boolean): void;
  /**
   * NF4/FP4 (bitsandbytes 4-bit) weights [N,K]: y[M,N] = x[M,K]·dequant(w)ᵀ (+bias[N]) through the fused
   * dequantize-GEMV. packed: ceil(N·K/2) bytes, high nibble first; blocks of `blocksize` over the flattened weight.
   * Plain scales: absmax (one per block) and null for qabsmax/nestedAbsmax/nestedQuantMap. Double quantization:
   * absmax null, qabsmax (one U8 per block), nestedAbsmax (one per nestedBlocksize blocks), nestedQuantMap (256)
   * and nestedOffset. quantType from Q4TYPE; dtype (a WTYPE) is the weight's original dtype, which each
   * dequantized value is rounded to, as dequantize_4bit does.
   */
  matmulQ4(y: Float32Array, x: Float32Array, packed: Uint8Array, absmax: Float32Array | null, qabsmax: Uint8Array | null,
    nestedAbsmax: Float32Array | null, nestedQuantMap: Float32Array | null, nestedBlocksize: number, nestedOffset: number,
    M: number, N: number, K: number, blocksize: number, quantType: number, dtype: number, bias: Float32Array | null, transposed?: boolean): void;
  /**
   * LLM.int8 (bitsandbytes Linear8bitLt) weights [N,K]: y[M,N] = x[M,K]·Wᵀ (+bias[N]) as int8MatmulRef computes it,
   * bit for bit. CB: N·K int8 codes, SCB: N row scales (max |w| of each float16 row). The activations are quantized
   * per row after a float16 cast; columns holding any |x| ≥ threshold go through the outlier path against
   * CB·SCB/127 (threshold 0: no outliers). threshold must be ≥ 0.
   */
  matmulInt8(y: Float32Array, x: Float32Array, CB: Int8Array, SCB: Float32Array, M: number, N: number, K: number,
    threshold: number, bias: Float32Array | null, transposed?: boolean): void;
  /**
   * GPTQ weights [N, K] in the kernels' layout (src/quant/qg.ts, QgPacked): y[M,N] = x[M,K]·Wᵀ (+bias). Up to 8 rows
   * of finite x: the int16-activation GEMV (qgDecodeRef's numbers); otherwise the exact dequantized weights.
   */
  matmulQg(y: Float32Array, x: Float32Array, codes: Uint8Array, bits: number, N: number, K: number, Kpad: number, G: number,
    nG: number, scales: Uint16Array, zeros: Uint8Array, perm: Int32Array | null, M: number,
    bias: Float32Array | null, transposed?: boolean): void;
  /** GPTQ (src/quant/linalg.ts has the float64 twins): H[K,K] = beta·H + (√alpha·x)ᵀ(√alpha·x) for x [T,K], both triangles. */
  gptqXtx(H: Float32Array, x: Float32Array, T: number, K: number, beta: number, alpha: number): void;
  /**
   * Cholesky factor of a symmetric positive definite A [n,n] in place: lower L (zeros above), or with `upper` U = Lᵀ
   * (zeros below). Returns -1, or the first column whose pivot is not positive (A then holds partial results).
   */
  gptqCholesky(A: Float32Array, n: number, upper: boolean): number;
  /** A holds a lower Cholesky factor L (upper triangle ignored) → (L·Lᵀ)⁻¹ in place (torch.cholesky_inverse). */
  gptqCholeskyInverse(A: Float32Array, n: number): void;
  /**
   * GPTQ's column loop over W[:, i1:i1+B] (W [N,K] is read, not written; U [K,K]): scale/zero [B,N] are each column's
   * grid per row; writes codes, dequantized values and err = (w − q)/U[c,c] as [N,B], and rowLoss[N]. Bit for bit
   * the TypeScript twin (src/quant/linalg.ts).
   */
  gptqQuantizeBlock(W: Float32Array, N: number, K: number, i1: number, B: number, U: Float32Array, scale: Float32Array, zero: Float32Array,
    maxq: number, codes: Uint8Array, deq: Float32Array, err: Float32Array, rowLoss: Float64Array): void;
  /** W[N,K]: W[:, i1+B:] -= err[N,B]·U[i1:i1+B, i1+B:] with U [K,K] (GPTQ's lazy block update). */
  gptqBlockUpdate(W: Float32Array, N: number, K: number, err: Float32Array, B: number, U: Float32Array, i1: number): void;
  /**
   * AWQ (src/quant/awq.ts has the TypeScript twins, bit for bit): out[N,K] = Q(W·diag(s))/s (s [K] or null: Q(W)) on
   * the AutoAWQ grid (groups of G inputs, G dividing K); codes [N,K], scales/zeros [K/G, N], each optional.
   */
  awqPseudoQuantize(W: Float32Array, N: number, K: number, s: Float32Array | null, bits: number, G: number, zeroPoint: boolean,
    out: Float32Array, codes: Uint8Array | null, scales: Float32Array | null, zeros: Uint8Array | null): void;
  /** AWQ clip search: gram [K/G, G, G] = per group Σ_t x[t, group]ᵀ·x[t, group] in double, x [T,K]. */
  awqGroupGram(x: Float32Array, T: number, K: number, G: number, gram: Float64Array): void;
  /**
   * AWQ clip search: best [N, K/G] = per (row, group) the clipping max|w|·(1 − i/nGrid), i < nShrink, with the
   * strictly smallest error dᵀ·gram_g·d / T, d = Q(clamp(w)) − w.
   */
  awqClipSearch(W: Float32Array, N: number, K: number, G: number, gram: Float64Array, T: number, bits: number, zeroPoint: boolean,
    nShrink: number, nGrid: number, best: Float32Array): void;
  rmsnorm(y: Float32Array, x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): void;
  layernorm(y: Float32Array, x: Float32Array, w: Float32Array, b: Float32Array, rows: number, dim: number, eps: number): void;
  /** In place on x [rows, nHeads, hd]. */
  rope(x: Float32Array, rows: number, nHeads: number, hd: number, positions: Int32Array, invFreq: Float32Array): void;
  /** out/q [B,T,H,hd], caches [B,S,nKV,hd]; keyMask [B, pastLen+T] or null; window 0 = no sliding window. */
  attention(out: Float32Array, q: Float32Array, k: Float32Array, v: Float32Array, B: number, T: number, H: number, nKV: number, hd: number, S: number, pastLen: number, keyMask: Uint8Array | null, scale: number, window: number): void;
  siluMul(y: Float32Array, gate: Float32Array, up: Float32Array, n: number): void;
  relu(y: Float32Array, x: Float32Array, n: number): void;
  softmax(y: Float32Array, x: Float32Array, rows: number, cols: number): void;
  embedding(y: Float32Array, table: Float32Array | Uint16Array, wtype: number, ids: Int32Array, dim: number): void;
  add(y: Float32Array, a: Float32Array, b: Float32Array, n: number): void;

  /** Threads of the pool, the calling thread included (1..1024). */
  setThreads(n: number): void;
  getThreads(): number;
  cpuInfo(): CpuInfo;
  /** Force a lower kernel level (tests compare every level with `ref`); returns the level now in use. */
  setLevel(level: string): string;
  /** Read-only memory map of a whole file as an external ArrayBuffer (unmapped when garbage-collected). */
  mmap(path: string): ArrayBuffer;
  /** Measured read bandwidth in GB/s over a buffer of `bytes`, using the pool's threads. */
  memBandwidth(bytes: number, iters: number): number;
  /** Measured fp32 FMA peak in GFLOP/s over roughly `ms` milliseconds, using the pool's threads. */
  fmaPeak(ms: number): number;
  /** Per-thread scratch buffers: how often any grew since the process started, and the bytes they hold now. */
  scratchStats(): { grows: number; bytes: number };
  /** The pool's counters (see PoolStats). */
  poolStats(): PoolStats;
  /** Sets the given pool switches and returns both as they are now (see PoolConfig). */
  poolConfig(opts?: Partial<PoolConfig>): PoolConfig;
}

/** The native addon is not built or does not load; the message says which and what to do. */
export class NativeUnavailableError extends Error { override name = 'NativeUnavailableError'; }

let cached: NativeAddon | null | undefined;
export let addonLoadError: string | null = null;

export function loadAddon(): NativeAddon | null {
  if (cached !== undefined) return cached;
  const here = dirname(fileURLToPath(import.meta.url));
  // dist/src/native → repo root
  const root = join(here, '..', '..', '..');
  const path = join(root, 'native', 'cpu', 'build', 'Release', 'lowbit_cpu.node');
  if (!existsSync(path)) {
    addonLoadError = `native addon not built (${path} is missing): run npm install`;
    cached = null;
    return cached;
  }
  try {
    cached = createRequire(import.meta.url)(path) as NativeAddon;
  } catch (e) {
    addonLoadError = `native addon at ${path} failed to load: ${(e as Error).message}`;
    cached = null;
    return cached;
  }
  // An addon built from older sources (the TypeScript rebuilt, the addon not) lacks newer entry points: refuse it
  // whole, so the backends fall back with a reason instead of failing mid-forward on a missing function.
  const missing = REQUIRED_EXPORTS.filter((k) => typeof (cached as unknown as Record<string, unknown>)[k] !== 'function');
  if (missing.length) {
    addonLoadError = `native addon at ${path} is out of date (no ${missing.join(', ')}): run npm install (LOWBIT_REBUILD=1 npm install forces the build)`;
    cached = null;
  }
  return cached;
}

/** Every function NativeAddon declares; checked when the addon loads. */
const REQUIRED_EXPORTS = ['matmul', 'matmulQ4', 'matmulQg', 'matmulInt8', 'gptqXtx', 'gptqCholesky', 'gptqCholeskyInverse', 'gptqQuantizeBlock', 'gptqBlockUpdate', 'awqPseudoQuantize', 'awqGroupGram', 'awqClipSearch', 'rmsnorm', 'layernorm', 'rope', 'attention', 'siluMul', 'relu', 'softmax',
  'embedding', 'add', 'setThreads', 'getThreads', 'cpuInfo', 'setLevel', 'mmap', 'memBandwidth', 'fmaPeak', 'scratchStats', 'poolStats',
  'poolConfig'] as const;

/** The addon, or a NativeUnavailableError that names `what` needed it and why it is unavailable. */
export function requireAddon(what: string): NativeAddon {
  const a = loadAddon();
  if (!a) throw new NativeUnavailableError(`${what}: ${addonLoadError ?? 'native addon unavailable'}`);
  return a;
}
