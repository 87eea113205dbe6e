// The reference quantized matmul: the definition the native kernels are tested against. 4-bit weights are
// dequantized one output row at a time (never the whole float32 matrix), exactly as `dequantize_4bit` would, and
// multiplied as the float matmul does; int8 is LLM.int8's mixed int8/outlier product (src/quant/int8.ts); GPTQ rows
// and AWQ rows are dequantized the same way (scale·(q − zero) per group, src/quant/gptq-format.ts, awq-format.ts).
import type { Tensor } from '../../tensor/tensor.js';
import { codeValue, type Bnb4Weight } from '../../quant/bnb4.js';
import { int8MatmulRef, roundHalfEven } from '../../quant/int8.js';
import { dequantizeGptqRow } from '../../quant/gptq-format.js';
import { dequantizeAwqRow } from '../../quant/awq-format.js';
import { bnb4Scales, dequantize4bitRange, type QuantizedWeight } from '../../quant/qweight.js';
import { quantizeChunk } from '../../quant/qg.js';
import { matmulQShape } from '../shapes.js';

export function matmulQRef(x: Tensor<'F32'>, qw: QuantizedWeight, bias: Tensor<'F32'> | null, out: Tensor<'F32'>): void {
  const { M, N, K } = matmulQShape(x, qw.shape, bias, out);
  const X = x.f32, Y = out.f32, B = bias ? bias.f32 : null;
  if (qw.format === 'int8') {
    Y.set(int8MatmulRef(X, M, qw.int8, { threshold: qw.threshold, bias: B ?? undefined }));
    return;
  }
  const row = new Float32Array(K);
  for (let n = 0; n < N; n++) {
    if (qw.format === 'gptq') dequantizeGptqRow(qw.gptq, n, row);     // row n of the [N, K] weight
    else if (qw.format === 'awq') dequantizeAwqRow(qw.awq, n, row);
    else dequantize4bitRange(qw.bnb4, n * K, (n + 1) * K, row);
    for (let m = 0; m < M; m++) {
      let acc = 0;
      const xo = m * K;
      for (let k = 0; k < K; k++) acc += X[xo + k] * row[k];
      Y[m * N + n] = Math.fround(acc + (B ? B[n] : 0));
    }
  }
}

// ---- The decode path of the cpu backend for 4-bit weights: int16 activations (native gemv_q4i, kernels.h).
// Up to Q4_DECODE_MAX_ROWS rows of x, with K and the block size multiples of 64, the cpu backend does not multiply
// the dequantized weights round_dtype(code·s) but the scale-factored product below, which needs no per-block table:
//   per 64-element chunk c of an x row: dx = fl(max|x|/8191)·2^-14, xq = round_half_even(x·(8191/max|x|)) (float32
//   steps); per weight row n: y = Σ_c fl(scale_block · dx_c) · Σ_{i in c} code16[code_i]·xq_i, the inner sum an
//   exact integer, code16 = round_half_even(value·16384); float32 across chunks, then + bias.
// Its difference from the exact product is bounded (q4DecodeBound). A call whose x holds a NaN or an infinity, and
// weight rows whose block scales are not all finite, take the exact path. The prefill GEMM (more rows) is exact.

/** kQ4GemvMaxM in native/cpu/gemm.cc: the most x rows the decode GEMV takes. */
export const Q4_DECODE_MAX_ROWS = 8;
export const Q4_XMAX = 8191;

/** Whether the cpu backend's matmulQ takes the int16-activation decode for this shape (x finite, scales finite). */
export function q4DecodeApplies(M: number, K: number, blocksize: number): boolean {
  return M <= Q4_DECODE_MAX_ROWS && K % 64 === 0 && blocksize % 64 === 0;
}

/** The 16 code values of a 4-bit type as int16: round_half_even(value · 16384). */
export function q4CodeI16(type: 'nf4' | 'fp4'): Int16Array {
  return Int16Array.from({ length: 16 }, (_, c) => roundHalfEven(codeValue(type, c) * 16384));
}

/** One x row quantized per 64-element chunk as q4i_prep does (natural order, dx with the codes' 2^-14); null when an element is not finite. */
export function q4QuantizeX(x: Float32Array, K: number): { xq: Int16Array; dx: Float32Array } | null {
  const xq = new Int16Array(K), dx = new Float32Array(K / 64);
  for (let i = 0; i < K; i++) if (!Number.isFinite(x[i])) return null;
  for (let c = 0; c < K / 64; c++) dx[c] = quantizeChunk(x, 64 * c, Q4_XMAX, xq) / 16384;  // the codes' scale folded in (exact)
  return { xq, dx };
}

/** y [M, N] by the int16-activation decode (rows of x or weights that are not finite: the exact product). */
export function q4DecodeRef(x: Float32Array, M: number, w: Bnb4Weight, bias: Float32Array | null): Float32Array {
  const [N, K] = w.shape, bs = w.blocksize;
  if (!q4DecodeApplies(M, K, bs)) throw new RangeError(`q4DecodeRef: the decode path takes at most ${Q4_DECODE_MAX_ROWS} rows with K and the block size multiples of 64, got M=${M}, K=${K}, block ${bs}`);
  const y = new Float32Array(M * N), scale = bnb4Scales(w), code = q4CodeI16(w.quantType), p = w.packed;
  // One x row that is not finite sends the whole call to the exact product, as the native driver does.
  const quantized = Array.from({ length: M }, (_, m) => q4QuantizeX(x.subarray(m * K, (m + 1) * K), K));
  const rows = quantized.every((r) => r) ? quantized : quantized.map(() => null);
  const exact = (m: number, n: number): number => {
    const row = new Float32Array(K);
    dequantize4bitRange(w, n * K, (n + 1) * K, row);
    let acc = 0;
    for (let k = 0; k < K; k++) acc += x[m * K + k] * row[k];
    return Math.fround(acc + (bias ? bias[n] : 0));
  };
  for (let n = 0; n < N; n++) {
    let finite = true;                                                  // over the blocks holding row n (they may span rows)
    for (let b = Math.floor((n * K) / bs); b <= Math.floor((n * K + K - 1) / bs); b++) finite &&= Number.isFinite(scale[b]);
    for (let m = 0; m < M; m++) {
      const r = rows[m];
      if (!r || !finite) {
        y[m * N + n] = exact(m, n);
        continue;
      }
      let acc = 0;
      for (let c = 0; c < K / 64; c++) {
        let s = 0;
        for (let i = 0; i < 32; i++) {
          const byte = p[(n * K) / 2 + 32 * c + i];
          s += code[byte >> 4] * r.xq[64 * c + 2 * i] + code[byte & 15] * r.xq[64 * c + 2 * i + 1];
        }
        const sd = Math.fround(scale[Math.floor((n * K + 64 * c) / bs)] * r.dx[c]);
        acc = Math.fround(acc + Math.fround(Math.fround(s) * sd));
      }
      y[m * N + n] = Math.fround(acc + (bias ? bias[n] : 0));
    }
  }
  return y;
}

/**
 * A bound on |q4DecodeRef − exact product| for one output (m, n): x's rounding (dx/2 per element, times |w|), the
 * codes' (|x|·s/32768) and the dequantized weights' own rounding to their dtype (|x|·|w|·2^-8 for bf16, 2^-11 for
 * f16), plus float32 accumulation (K·2^-23 of Σ|x·w|).
 */
export function q4DecodeBound(x: Float32Array, m: number, n: number, w: Bnb4Weight): number {
  const [, K] = w.shape, bs = w.blocksize, scale = bnb4Scales(w);
  const row = new Float32Array(K);
  dequantize4bitRange(w, n * K, (n + 1) * K, row);
  const rel = w.dtype === 'bfloat16' ? 2 ** -8 : w.dtype === 'float16' ? 2 ** -11 : 0;
  let bound = 0, mag = 0;
  for (let c = 0; c < K / 64; c++) {
    let mx = 0;
    for (let i = 64 * c; i < 64 * c + 64; i++) mx = Math.max(mx, Math.abs(x[m * K + i]));
    const dx = mx / Q4_XMAX;
    for (let i = 64 * c; i < 64 * c + 64; i++) {
      const xi = Math.abs(x[m * K + i]), wi = Math.abs(row[i]), s = Math.abs(scale[(n * K + i) / bs | 0]);
      bound += (dx / 2) * (wi + s / 16384) + xi * (s / 32768 + wi * rel);
      mag += xi * wi;
    }
  }
  return bound + mag * K * 2 ** -23;
}
