import type { QuantFormat, QuantizedWeight } from '../quant/qweight.js';
import type { DType } from '../tensor/dtype.js';
import type { Device, Tensor } from '../tensor/tensor.js';
import type { CausalLM } from '../models/model.js';
import type { KVCache } from '../nn/kvcache.js';

/** Attention over a KV cache laid out [B, S, nKV, hd] (S = cache capacity). */
export interface AttentionArgs {
  /** Cache position of the first query token; query t sits at pastLen + t and sees keys 0..pastLen+t (causal). */
  pastLen: number;
  /** Key padding mask [B, pastLen + T] (1 = attend), or null when every key is real. */
  keyMask: Uint8Array | null;
  /** Score scale, usually 1/sqrt(hd). */
  scale: number;
  /** Sliding window: query p sees keys s with p − s < window (transformers' rule); 0 or absent = no window. */
  window?: number;
}

/** One decode step's token choice on the device (Backend.sampleIds): what depends only on token history, and the draws. */
export interface SampleStep {
  /** Per row: the ids the repetition penalty applies to, each once (the row's whole history). */
  penalized: readonly ArrayLike<number>[];
  /** Per row: the ids set to −inf before the sampling warpers (no-repeat n-grams, eos before min_new_tokens). */
  banned: readonly ArrayLike<number>[];
  /** Per row: the uniform draw in [0, 1) that sample() would take (unused when greedy). */
  u: Float64Array;
  repetitionPenalty: number;
  doSample: boolean;
  temperature: number;
  /** 0: off. */
  topK: number;
  /** 1: off. */
  topP: number;
  /** 0: off. */
  minP: number;
}

export type OpName =
  | 'matmul' | 'matmulQ' | 'matmulQMany' | 'rmsnorm' | 'layernorm' | 'rope' | 'attention' | 'siluMul' | 'relu' | 'softmax' | 'embedding' | 'add';

/**
 * The op catalogue. Activations are F32; weights keep their checkpoint dtype (F32/BF16/F16) and are widened to
 * f32 inside the kernel. Every op writes into `out`, which the caller allocates.
 */
export interface Backend {
  readonly name: string;
  readonly device: Device;
  /** Whether `op` runs here for these operand dtypes (or, for matmulQ, quantized formats; for matmulQMany, whether
   *  layers of these formats can share one call). */
  supports(op: OpName, types: readonly (DType | QuantFormat)[]): boolean;

  // ---- memory: layers allocate their outputs here, so the same model code runs on any device.
  /** A new tensor on this backend's device, contents unspecified (the host backends' are zeros): op outputs. */
  empty<D extends DType>(dtype: D, shape: readonly number[]): Tensor<D>;
  /** `t` on this backend's device (t itself when it is there already). */
  upload<D extends DType>(t: Tensor<D>): Tensor<D>;
  /** A host tensor with t's values (t itself when it is a host tensor); waits for the work queued before it. */
  download<D extends DType>(t: Tensor<D>): Tensor<D>;
  /** dst[dstOffset, dstOffset + n) = src[srcOffset, srcOffset + n), in elements of their (equal) dtype. */
  copy(dst: Tensor, dstOffset: number, src: Tensor, srcOffset: number, n: number): void;
  /** Wait for every queued op (a no-op on the host backends). */
  synchronize(): void;
  /**
   * Optional: the model is done with these temporaries (and every view of them); a device backend reuses their
   * memory at once instead of when they are collected. Host backends leave it to the garbage collector.
   */
  release?(...ts: (Tensor | null | undefined)[]): void;
  /**
   * Optional: a runner for decode steps (one new token per row) over `cache` that is faster than calling
   * model.forward each step (the cuda backend replays a captured CUDA graph). step(ids) returns the logits [B, 1, V],
   * valid until the next step, exactly as forward(ids as rows, { cache, logits: 'last' }) would.
   */
  decoder?(model: CausalLM, cache: KVCache): { step(ids: ArrayLike<number>): Tensor<'F32'> };

  /** out[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N]). */
  matmul(x: Tensor<'F32'>, w: Tensor, bias: Tensor<'F32'> | null, out: Tensor<'F32'>): void;
  /**
   * out[M,N] = x[M,K] · dequant(qw)[N,K]ᵀ (+ bias[N]) for a quantized weight. A backend may lack it, or lack some
   * formats: callers go through backend/dispatch.ts, which asks supports('matmulQ', [format]) and falls back to ref.
   */
  matmulQ?(x: Tensor<'F32'>, qw: QuantizedWeight, bias: Tensor<'F32'> | null, out: Tensor<'F32'>): void;
  /**
   * Training: the input gradient of a frozen linear, out[M,K] = dy[M,N] · w[N,K] (optional; the training step falls
   * back to a transposed float32 copy of the weight). matmulQT is the same for a quantized weight: it must never hold
   * the whole dequantized weight.
   */
  matmulT?(dy: Tensor<'F32'>, w: Tensor, out: Tensor<'F32'>): void;
  /**
   * Several quantized linears that read the same x (q/k/v, gate/up) in one call: outs[i] = x · dequant(qws[i])ᵀ
   * (+ biases[i]). Optional; false when this backend cannot join these weights (the caller runs them one by one).
   */
  matmulQMany?(x: Tensor<'F32'>, qws: QuantizedWeight[], biases: (Tensor<'F32'> | null)[], outs: Tensor<'F32'>[]): boolean;
  matmulQT?(dy: Tensor<'F32'>, qw: QuantizedWeight, out: Tensor<'F32'>): boolean;
  /**
   * Several float linears that read the same x (q/k/v, gate/up) in one call: outs[i] = x · ws[i]ᵀ (+ biases[i]).
   * Optional; false when this backend does not join these (the caller runs them one by one).
   */
  matmulMany?(x: Tensor<'F32'>, ws: Tensor[], biases: (Tensor<'F32'> | null)[], outs: Tensor<'F32'>[]): boolean;
  /**
   * Optional: a gated MLP's first half in one call, out = silu(x·gateᵀ + gateBias) · (x·upᵀ + upBias), the weights
   * both float tensors or both quantized. False when this backend does not fuse these (the caller runs the two
   * matmuls and siluMul); the result equals that sequence up to float summation order.
   */
  matmulSiluMul?(x: Tensor<'F32'>, gate: Tensor | QuantizedWeight, up: Tensor | QuantizedWeight, gateBias: Tensor<'F32'> | null,
    upBias: Tensor<'F32'> | null, out: Tensor<'F32'>): boolean;
  /**
   * Optional: greedy choice on the device: the per-row argmax of logits [rows, V] (the first of equal maxima), -1 for a
   * row holding a NaN or an infinity. generate() uses it for greedy steps no logits processor changes, so only ids
   * leave the device.
   */
  greedyIds?(logits: Tensor<'F32'>): Int32Array;
  /**
   * Optional: src/generate's logits processors and token choice (processLogits, then sample() with step.u[row] or the
   * argmax) per row of logits [rows, V] on the device, so only ids leave it; −1 for a row whose raw logits hold a NaN
   * or an infinity. The same choice as the host's up to the order of float64 sums.
   */
  sampleIds?(logits: Tensor<'F32'>, step: SampleStep): Int32Array;
  /** Rows of x normalised by rms over the last dim, times w. */
  rmsnorm(x: Tensor<'F32'>, w: Tensor<'F32'>, eps: number, out: Tensor<'F32'>): void;
  /** Optional: x += y in place, then out = rmsnorm(x, w) (the residual add and the next norm as one op). */
  addRmsnorm?(x: Tensor<'F32'>, y: Tensor<'F32'>, w: Tensor<'F32'>, eps: number, out: Tensor<'F32'>): void;
  layernorm(x: Tensor<'F32'>, w: Tensor<'F32'>, b: Tensor<'F32'>, eps: number, out: Tensor<'F32'>): void;
  /** In place on x [rows, nHeads, hd], HF rotate-half layout; positions has one entry per row. */
  rope(x: Tensor<'F32'>, positions: Int32Array, invFreq: Float32Array): void;
  /** q [B,T,H,hd], kCache/vCache [B,S,nKV,hd] already holding positions 0..pastLen+T-1 → out [B,T,H,hd]. */
  attention(q: Tensor<'F32'>, kCache: Tensor<'F32'>, vCache: Tensor<'F32'>, args: AttentionArgs, out: Tensor<'F32'>): void;
  /** out = silu(gate) * up. */
  siluMul(gate: Tensor<'F32'>, up: Tensor<'F32'>, out: Tensor<'F32'>): void;
  relu(x: Tensor<'F32'>, out: Tensor<'F32'>): void;
  /** Softmax over the last dim. */
  softmax(x: Tensor<'F32'>, out: Tensor<'F32'>): void;
  /** out[n, D] = table[ids[n], :] widened to f32. */
  embedding(table: Tensor, ids: Int32Array, out: Tensor<'F32'>): void;
  add(a: Tensor<'F32'>, b: Tensor<'F32'>, out: Tensor<'F32'>): void;
}
