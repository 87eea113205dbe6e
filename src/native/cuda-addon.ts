// Loads the CUDA addon (native/cuda, built by scripts/build-cuda.mjs where nvcc exists) and probes the GPU once.
// `cudaStatus()` says whether the cuda backend can run here and, when not, why (no addon built, no driver, no GPU).
// Device addresses are plain numbers; the allocation's `handle` keeps the memory alive (its finalizer frees it).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface CudaProbe {
  ok: boolean;
  why?: string;
  name?: string;
  totalBytes?: number;
  freeBytes?: number;
  multiprocessors?: number;
  computeCapability?: string;
  l2Bytes?: number;
  /** Whether cuBLAS loaded (prefill GEMMs need it; decode GEMVs do not). */
  cublas?: boolean;
  cublasWhy?: string;
}

export interface CudaAlloc { handle: object; ptr: number }

/** native/cuda/addon.cc. Pointers are device addresses (0 = null); sizes are elements unless named bytes. */
export interface CudaAddon {
  probe(): CudaProbe;
  alloc(bytes: number, zero: boolean): CudaAlloc;
  /** Give an allocation back now (stream-ordered); idempotent. */
  free(handle: object): void;
  upload(ptr: number, src: ArrayBufferView): void;
  download(ptr: number, dst: ArrayBufferView): void;
  copy(dst: number, src: number, bytes: number): void;
  memset0(ptr: number, bytes: number): void;
  synchronize(): void;
  memInfo(): { freeBytes: number; totalBytes: number };
  matmul(y: number, x: number, w: number, wtype: number, bias: number, M: number, N: number, K: number): void;
  /** matmulMany(x, wtype, M, K, y0, w0, bias0, N0, y1, w1, bias1, N1, …): one GEMV launch over 1-3 weights (M ≤ 8). */
  matmulMany(x: number, wtype: number, M: number, K: number, ...outs: number[]): void;
  /** A GPTQ/AWQ checkpoint tensor → the kernels' chunk layout (mode 0: GPTQ qweight, 1: AWQ GEMM, 2: AWQ GEMV). */
  qgRepack(out: number, src: number, mode: number, bits: number, perm: number, N: number, K: number, nc: number): void;
  /** qgMatmul(x, M, bits, K, nc, G, nG, perm, y0, codes0, scales0, zeros0, bias0, N0, …): 1-3 weights sharing x. */
  qgMatmul(x: number, M: number, bits: number, K: number, nc: number, G: number, nG: number, perm: number, ...outs: number[]): void;
  /** qgMatmul with gate (group 0) and up (group 1): y0 = silu(x·gateᵀ)·(x·upᵀ); at most 16 rows of x. */
  qgMatmulSiluMul(x: number, M: number, bits: number, K: number, nc: number, G: number, nG: number, perm: number, ...outs: number[]): void;
  /** b4Matmul(x, M, K, blocksize, wtype, lut, y0, packed0, absmax0, bias0, N0, …): NF4/FP4, 1-3 weights sharing x. */
  b4Matmul(x: number, M: number, K: number, blocksize: number, wtype: number, lut: number, ...outs: number[]): void;
  /** LLM.int8: y = x·Wᵀ (+ bias) as MatMul8bitLt computes it (int8 codes [N, K], SCB [N], outlier threshold). */
  int8Matmul(y: number, x: number, CB: number, SCB: number, bias: number, M: number, N: number, K: number, threshold: number): void;
  /** Gate/up GEMV (M ≤ 8) with SiLU·mul in the epilogue. */
  matmulSiluMul(x: number, wtype: number, M: number, K: number, y: number, wGate: number, wUp: number, bGate: number, bUp: number, N: number): void;
  rmsnorm(y: number, x: number, w: number, rows: number, dim: number, eps: number): void;
  addRmsnorm(out: number, x: number, y: number, w: number, rows: number, dim: number, eps: number): void;
  layernorm(y: number, x: number, w: number, b: number, rows: number, dim: number, eps: number): void;
  rope(x: number, positions: number, invFreq: number, rows: number, nHeads: number, hd: number): void;
  attention(out: number, q: number, k: number, v: number, B: number, T: number, H: number, nKV: number, hd: number, S: number,
    pastLen: number, pastLenDev: number, keyMask: number, maskStride: number, scale: number, window: number): void;
  kvWrite(dst: number, src: number, B: number, T: number, cap: number, row: number, len: number, lenDev: number): void;
  ropeAppend(q: number, k: number, v: number, positions: number, invFreq: number, kCache: number, vCache: number, B: number, T: number,
    nH: number, nKV: number, hd: number, cap: number, len: number, lenDev: number): void;
  beginCapture(): void;
  /** The captured work as an instantiated graph (undefined with discard). */
  endCapture(discard?: boolean): object | undefined;
  launchGraph(graph: object): void;
  siluMul(y: number, gate: number, up: number, n: number): void;
  add(y: number, a: number, b: number, n: number): void;
  relu(y: number, x: number, n: number): void;
  softmax(y: number, x: number, rows: number, cols: number): void;
  embedding(y: number, table: number, wtype: number, ids: number, n: number, dim: number): void;
  argmax(out: number, x: number, rows: number, cols: number): void;
  /** native/cuda/train.cu and gemm.cc's gemm_rm, by op name (addon.cc lists each op's arguments). */
  train(op: string, ...args: (number | boolean)[]): void;
  /** native/cuda/gptq.cu, by op name (addon.cc lists each op's arguments). */
  gptq(op: string, ...args: (number | boolean)[]): void;
  /** native/cuda/awq.cu, by op name (addon.cc lists each op's arguments). */
  awq(op: string, ...args: (number | boolean)[]): void;
  /** native/cuda/sample.cu: out int32 [rows] from logits x [rows, cols] and meta (its layout there). */
  sample(out: number, x: number, meta: number, rows: number, cols: number, temperature: number, topK: number, topP: number,
    minP: number, penalty: number, doSample: boolean): void;
  fillRandom(ptr: number, wtype: number, n: number, seed: number, std: number): void;
  /** A bf16 n×n×n cuBLAS GEMM on random data: TFLOP/s. */
  gemmPeak(n: number, iters: number): number;
  /** A device-to-device copy: GB/s counting bytes read plus written. */
  copyBandwidth(bytes: number, iters: number): number;
  /** Queue a kernel that holds the stream for about ns nanoseconds (benchmarks). */
  spin(ns: number): void;
  eventRecord(): object;
  eventElapsed(a: object, b: object): number;
}

let cached: { addon: CudaAddon | null; probe: CudaProbe } | undefined;

/** The addon and the GPU it found, or why the cuda backend cannot run here. */
export function cudaStatus(): { addon: CudaAddon | null; probe: CudaProbe } {
  if (cached) return cached;
  const here = dirname(fileURLToPath(import.meta.url));
  const path = join(here, '..', '..', '..', 'native', 'cuda', 'build', 'lowbit_cuda.node');  // dist/src/native → root
  if (!existsSync(path)) {
    cached = { addon: null, probe: { ok: false, why: `the CUDA addon is not built (${path} is missing): npm run build:cuda where nvcc is installed` } };
    return cached;
  }
  let addon: CudaAddon;
  try {
    addon = createRequire(import.meta.url)(path) as CudaAddon;
  } catch (e) {
    cached = { addon: null, probe: { ok: false, why: `the CUDA addon at ${path} failed to load: ${(e as Error).message}` } };
    return cached;
  }
  const probe = addon.probe();
  cached = { addon: probe.ok ? addon : null, probe };
  return cached;
}
