// bitsandbytes LLM.int8: per-row absmax int8 weights, vector-wise activation quantization, and outlier columns kept
// in full precision (../shared/spec/FORMATS.md §3; Dettmers et al. 2022, "LLM.int8()", arXiv 2208.07339 §3.1-3.2).
//
// Semantics are bitsandbytes' (`Int8Params._quantize`, `MatMul8bitLt.forward`, `int8_vectorwise_quant`,
// `int8_mixed_scaled_mm`): the weight and the activations are cast to float16 before quantization, rounding is
// half-to-even (`torch.round`, CUDA `__float2int_rn`), and the scale 127/absmax is a float32 reciprocal times 127
// (CUDA `__fdividef` = MUFU.RCP + FMUL, torch `t.reciprocal() * 127`). The matmul accumulates in float64 and
// rescales by the exact 1/127², where bitsandbytes multiplies by a float literal (CUDA 6.200012e-05f, torch backend
// 6.200124e-05) and rounds through float16.
import { f16ToF32, f32ToF16 } from '../tensor/dtype.js';
import { cudaReciprocal, type Reciprocal } from './bnb4.js';
import { Tensor } from '../tensor/tensor.js';

/** A malformed argument or serialized int8 state; the message names the tensor or option. */
export class Int8Error extends Error { override name = 'Int8Error'; }

/** `llm_int8_threshold`'s default in BitsAndBytesConfig. */
export const LLM_INT8_THRESHOLD = 6.0;

const f = Math.fround;

/** torch.round / rint: to nearest, ties to even. (JS Math.round sends ties up, so -0.5 → -0 but 0.5 → 1.) */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function toF16(x: number): number {
  return f16ToF32(f32ToF16(x));
}

/**
 * `x.map(toF16)`, bit for bit, about 10x faster: a magnitude that stays a normal float16, [2^-14, 65520), is rounded
 * half to even at float32 mantissa bit 13 in place on the bits; subnormals, overflow, ∞ and NaN take toF16.
 */
function toF16Array(x: Float32Array): Float32Array {
  const out = new Float32Array(x);
  const u = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < u.length; i++) {
    const b = u[i], a = b & 0x7fffffff;
    if (a >= 0x38800000 && a < 0x477ff000) u[i] = (b + 0xfff + ((b >>> 13) & 1)) & 0xffffe000;
    else out[i] = toF16(out[i]);
  }
  return out;
}

/**
 * q = rne(fl32(v · s)) with s = fl32(rcp(absmax) · 127): CUDA's `__fdividef(127, x)` is MUFU.RCP then a multiply,
 * and torch evaluates `127.0 / t` as `t.reciprocal() * 127`. The one-step quotient would flip x.5 ties (5 of the
 * 11180 codes of the fixture weight). A zero absmax gives 0 · ∞ = NaN, which CUDA's __float2int_rn makes 0.
 */
function quantizeRow(v: Float32Array, lo: number, hi: number, absmax: number, rcp: Reciprocal, out: Int8Array,
                     keep?: (i: number) => boolean): void {
  const s = f((rcp === 'cuda' ? cudaReciprocal(absmax) : f(1 / absmax)) * 127);
  for (let i = lo; i < hi; i++) {
    const y = f(v[i] * s);
    // roundHalfEven(y), 3x faster: adding 1.5·2^52 leaves no fraction bits and IEEE addition rounds half to even;
    // exact for |y| < 2^51, and every kept |y| is at most 127·(1 + 2^-22) (|v| ≤ absmax).
    out[i] = Number.isNaN(y) || (keep && !keep(i)) ? 0 : (y + RNE_SHIFT) - RNE_SHIFT;
  }
}
const RNE_SHIFT = 1.5 * 2 ** 52;

export interface Int8Weight {
  /** [out, in]. */
  shape: [number, number];
  /** Row-major int8 codes (`weight`, I8). */
  CB: Int8Array;
  /** Per output row, max |w| of the float16 weight, stored as float32 (`SCB`). */
  SCB: Float32Array;
}

/**
 * `Int8Params._quantize`: the weight cast to float16, then `int8_vectorwise_quant` with no outlier threshold.
 * `reciprocal` 'cuda' (default) reproduces GPU-quantized files, 'ieee' bitsandbytes' torch backend.
 */
export function quantizeInt8(w: Float32Array, shape: readonly [number, number], reciprocal: Reciprocal = 'cuda'): Int8Weight {
  const [rows, cols] = shape;
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0 || rows * cols !== w.length) {
    throw new Int8Error(`shape [${shape.join(', ')}] does not hold ${w.length} values`);
  }
  const w16 = toF16Array(w);
  const CB = new Int8Array(w.length);
  const SCB = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(w16[r * cols + c]));
    SCB[r] = m;
    quantizeRow(w16, r * cols, (r + 1) * cols, m, reciprocal, CB);
  }
  return { shape: [rows, cols], CB, SCB };
}

/** `int8_vectorwise_dequant`: CB · SCB · fl32(1/127), in float32 as bitsandbytes computes it for outlier columns. */
export function dequantizeInt8(q: Int8Weight): Float32Array {
  const [rows, cols] = q.shape;
  const inv127 = f(1 / 127);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[r * cols + c] = f(f(q.CB[r * cols + c] * q.SCB[r]) * inv127);
  }
  return out;
}

export interface Int8Activations {
  /** [rows, cols] int8 codes; outlier columns are 0 in every row. */
  CA: Int8Array;
  /** Per row, max |x| over the non-outlier elements of the float16 activations. */
  SCA: Float32Array;
  /** Ascending indices of the columns holding any |x| ≥ threshold (empty when threshold is 0). */
  outlierCols: number[];
}

/**
 * `int8_vectorwise_quant(A.to(float16), threshold)`: outliers are |x| ≥ threshold (after the float16 cast, so values
 * beyond float16's range become ∞ and always count); they are left out of the row absmax, and their whole columns
 * are zeroed in CA (for one row, zeroing the column is zeroing the element, so bitsandbytes' rows > 1 test changes
 * nothing).
 */
export function int8VectorwiseQuant(x: Float32Array, rows: number, cols: number, threshold = LLM_INT8_THRESHOLD,
                                    reciprocal: Reciprocal = 'cuda'): Int8Activations {
  if (rows * cols !== x.length) throw new Int8Error(`activations of ${x.length} values are not [${rows}, ${cols}]`);
  if (!(threshold >= 0)) throw new Int8Error(`llm_int8_threshold must be ≥ 0, got ${threshold}`);
  const x16 = toF16Array(x);
  const isOutlier = (v: number) => threshold > 0 && Math.abs(v) >= threshold;
  const outlier = new Uint8Array(cols);
  for (let i = 0; i < x16.length; i++) if (isOutlier(x16[i])) outlier[i % cols] = 1;
  const outlierCols: number[] = [];
  for (let c = 0; c < cols; c++) if (outlier[c]) outlierCols.push(c);
  const CA = new Int8Array(x.length);
  const SCA = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let c = 0; c < cols; c++) {
      const v = Math.abs(x16[r * cols + c]);
      if (!isOutlier(v)) m = Math.max(m, v);
    }
    SCA[r] = m;
    quantizeRow(x16, r * cols, (r + 1) * cols, m, reciprocal, CA, (i) => !outlier[i % cols]);
  }
  return { CA, SCA, outlierCols };
}

export interface Int8MatmulOptions {
  threshold?: number;
  reciprocal?: Reciprocal;
  /** [out] bias, added in float64. */
  bias?: Float32Array;
}

/**
 * The LLM.int8 linear layer, y = x Wᵀ + b for x [rows, in] (float32), as `MatMul8bitLt.forward` defines it:
 *   y[t,o] = Σ_k CA[t,k]·CB[o,k] · SCA[t]·SCB[o] / 127²  +  Σ_{k ∈ outliers} x[t,k] · dequant(W)[o,k]  +  b[o]
 * with the int8 products summed exactly and the outlier columns taken from the unrounded input against the
 * dequantized int8 weight. Everything is accumulated in float64 and rounded to float32 once.
 */
export function int8MatmulRef(x: Float32Array, rows: number, w: Int8Weight, opts: Int8MatmulOptions = {}): Float32Array {
  const [out, cols] = w.shape;
  const { threshold = LLM_INT8_THRESHOLD, bias, reciprocal = 'cuda' } = opts;
  if (bias && bias.length !== out) throw new Int8Error(`bias has ${bias.length} values, the weight has ${out} rows`);
  const { CA, SCA, outlierCols } = int8VectorwiseQuant(x, rows, cols, threshold, reciprocal);
  const wdq = outlierCols.length ? dequantizeInt8(w) : null;
  const y = new Float32Array(rows * out);
  for (let t = 0; t < rows; t++) {
    for (let o = 0; o < out; o++) {
      let acc = 0; // |acc| ≤ cols · 127², exact in a double for any real layer width
      for (let k = 0; k < cols; k++) acc += CA[t * cols + k] * w.CB[o * cols + k];
      let v = (acc * SCA[t] * w.SCB[o]) / 16129;
      if (wdq) for (const k of outlierCols) v += x[t * cols + k] * wdq[o * cols + k];
      y[t * out + o] = v + (bias ? bias[o] : 0);
    }
  }
  return y;
}

// ---- serialization: Linear8bitLt._save_to_state_dict (§3) ----

/** `weight_format` values; only "row" (0) exists in current bitsandbytes. */
const WEIGHT_FORMAT_ROW = 0;

/** `P.weight` I8 [out, in], `P.SCB` F32 [out], `P.weight_format` U8 [] = 0 (bias is the caller's). */
export function int8ToStateDict(prefix: string, w: Int8Weight): Map<string, Tensor> {
  return new Map<string, Tensor>([
    [`${prefix}.weight`, new Tensor('I8', [...w.shape], w.CB)],
    [`${prefix}.SCB`, new Tensor('F32', [w.shape[0]], w.SCB)],
    [`${prefix}.weight_format`, new Tensor('U8', [], Uint8Array.of(WEIGHT_FORMAT_ROW))],
  ]);
}

/** Reads `P.weight` + `P.SCB` back; `weight_format`, when present (transformers 5 writes it), must be "row". */
export function int8FromStateDict(prefix: string, get: (name: string) => Tensor | undefined): Int8Weight {
  const wName = `${prefix}.weight`, sName = `${prefix}.SCB`, fName = `${prefix}.weight_format`;
  const wt = get(wName), st = get(sName), ft = get(fName);
  if (!wt) throw new Int8Error(`${wName}: missing from the checkpoint`);
  if (!st) throw new Int8Error(`${sName}: missing from the checkpoint (an int8 layer needs its row scales)`);
  if (wt.dtype !== 'I8' || wt.shape.length !== 2) {
    throw new Int8Error(`${wName}: expected I8 [out, in], got ${wt.dtype} [${wt.shape.join(', ')}]`);
  }
  const [rows, cols] = wt.shape as [number, number];
  if (st.dtype !== 'F32' || st.shape.length !== 1 || st.shape[0] !== rows) {
    throw new Int8Error(`${sName}: expected F32 [${rows}], got ${st.dtype} [${st.shape.join(', ')}]`);
  }
  if (ft) {
    const v = ft.dtype === 'U8' && ft.shape.length === 0 ? (ft.data as Uint8Array)[0] : undefined;
    if (v !== WEIGHT_FORMAT_ROW) {
      const got = `${ft.dtype} [${ft.shape.join(', ')}]${v === undefined ? '' : ` = ${v}`}`;
      throw new Int8Error(`${fName}: only the "row" format (U8 scalar 0) is supported, got ${got}`);
    }
  }
  return { shape: [rows, cols], CB: wt.data as Int8Array, SCB: st.data as Float32Array };
}
