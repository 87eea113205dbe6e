// Ask, then fall back (ggml's supports_op): ops a backend may lack go through here. When the backend has no kernel
// for an op and format, the reference backend runs it and a one-time warning names what fell back, so a slow path
// is never silent.
import type { Backend } from './backend.js';
import { refBackend } from './ref/index.js';
import type { QuantizedWeight } from '../quant/qweight.js';
import type { Tensor } from '../tensor/tensor.js';
import { warnOnce } from '../util/warn.js';

/** out = x · dequant(qw)ᵀ (+ bias) on `backend`, or on ref when `backend` has no matmulQ kernel for qw.format. */
export function matmulQ(backend: Backend, x: Tensor<'F32'>, qw: QuantizedWeight, bias: Tensor<'F32'> | null, out: Tensor<'F32'>): void {
  if (backend.matmulQ && backend.supports('matmulQ', [qw.format])) {
    backend.matmulQ(x, qw, bias, out);
    return;
  }
  warnOnce(`backend "${backend.name}" has no matmulQ kernel for ${qw.format} weights; using the reference backend (plain TypeScript, slow)`);
  refBackend.matmulQ!(x, qw, bias, out);
}
