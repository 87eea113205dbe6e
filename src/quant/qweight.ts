// A quantized linear weight as the backend sees it: one description for every quantized format, so a matmul op,
// a layer and a file writer can hold any of them. bitsandbytes NF4/FP4 (../shared/spec/FORMATS.md §2), LLM.int8
// (§3), GPTQ (§4.5) and AWQ (§5.4) are members of one union.
import { BNB4_BLOCKSIZES, Bnb4Error, blockAbsmax, codeValue, dequantize4bit, type Bnb4Weight, type TorchFloatDtype } from './bnb4.js';
import { dequantizeInt8, type Int8Weight } from './int8.js';
import { dequantizeGptq, type GptqWeight } from './gptq-format.js';
import { dequantizeAwq, type AwqWeight } from './awq-format.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../tensor/dtype.js';

/** Formats a quantized matmul op is asked about in `supports('matmulQ', [format])`. */
export type QuantFormat = 'nf4' | 'fp4' | 'int8' | 'gptq' | 'awq';
export const QUANT_FORMATS: readonly QuantFormat[] = ['nf4', 'fp4', 'int8', 'gptq', 'awq'];

interface QuantizedWeightBase {
  /** [out, in] of the linear layer. */
  readonly shape: readonly [number, number];
  /**
   * bitsandbytes' compute dtype (bnb_4bit_compute_dtype; int8 computes in the float16 it casts to). Recorded for
   * files and for kernels; lowbit's activations stay float32, so the reference ops compute in float32.
   */
  readonly computeDtype: TorchFloatDtype;
}

/** NF4/FP4 blocks over the flattened weight, packed two codes per byte, absmax plain or double-quantized. */
export interface Bnb4QuantizedWeight extends QuantizedWeightBase {
  readonly format: 'nf4' | 'fp4';
  readonly bnb4: Bnb4Weight;
}

/** Per-row int8 codes with their absmax (SCB); activations past `threshold` go through the outlier path. */
export interface Int8QuantizedWeight extends QuantizedWeightBase {
  readonly format: 'int8';
  readonly int8: Int8Weight;
  /** llm_int8_threshold: |x| at or above it makes a column an outlier (0 turns the outlier path off). */
  readonly threshold: number;
}

/**
 * GPTQ's group-quantized 2/3/4/8-bit codes with per-group scales and zeros and a column → group map (g_idx), kept
 * packed as the file holds them (AutoGPTQ's qweight / qzeros / scales / g_idx); bits, group size and the zero-point
 * convention are in `gptq`.
 */
export interface GptqQuantizedWeight extends QuantizedWeightBase {
  readonly format: 'gptq';
  readonly gptq: GptqWeight;
}

/**
 * AWQ's 4-bit codes with per-group float16 scales and raw zeros, kept packed as the file holds them (AutoAWQ's GEMM or
 * GEMV qweight / qzeros / scales); the layout and group size are in `awq`.
 */
export interface AwqQuantizedWeight extends QuantizedWeightBase {
  readonly format: 'awq';
  readonly awq: AwqWeight;
}

export type QuantizedWeight = Bnb4QuantizedWeight | Int8QuantizedWeight | GptqQuantizedWeight | AwqQuantizedWeight;

/** Wrap a bitsandbytes 4-bit weight of a linear layer ([out, in]). */
export function fromBnb4(w: Bnb4Weight, computeDtype: TorchFloatDtype = 'float32'): Bnb4QuantizedWeight {
  if (w.shape.length !== 2) throw new Bnb4Error(`a linear layer's 4-bit weight must be 2-D, got shape [${w.shape.join(', ')}]`);
  if (!BNB4_BLOCKSIZES.includes(w.blocksize)) throw new Bnb4Error(`blocksize ${w.blocksize} is not a bitsandbytes 4-bit block size`);
  return { format: w.quantType, shape: [w.shape[0], w.shape[1]], computeDtype, bnb4: w };
}

/** Wrap an LLM.int8 weight; int8 layers compute in float16 in bitsandbytes whatever the model dtype. */
export function fromInt8(w: Int8Weight, threshold: number, computeDtype: TorchFloatDtype = 'float16'): Int8QuantizedWeight {
  return { format: 'int8', shape: w.shape, computeDtype, int8: w, threshold };
}

/** Wrap a GPTQ layer; AutoGPTQ's kernels compute in float16 (the scales' dtype). */
export function fromGptq(w: GptqWeight): GptqQuantizedWeight {
  return { format: 'gptq', shape: [w.shape[0], w.shape[1]], computeDtype: 'float16', gptq: w };
}

/** Wrap an AWQ layer; AutoAWQ's kernels compute in float16 (the scales' dtype). */
export function fromAwq(w: AwqWeight): AwqQuantizedWeight {
  return { format: 'awq', shape: [w.shape[0], w.shape[1]], computeDtype: 'float16', awq: w };
}

// Per-block scales of a 4-bit weight, computed once per weight (double quantization makes them a small pass).
const scalesCache = new WeakMap<Bnb4Weight, Float32Array>();
export function bnb4Scales(w: Bnb4Weight): Float32Array {
  let s = scalesCache.get(w);
  if (!s) { s = blockAbsmax(w); scalesCache.set(w, s); }
  return s;
}

/**
 * Elements [lo, hi) of the flattened 4-bit weight into dst, exactly as `dequantize4bit` computes them (value of the
 * code × block absmax in float32, rounded to the weight's dtype); blocks span rows, so `lo` need not be aligned.
 */
export function dequantize4bitRange(w: Bnb4Weight, lo: number, hi: number, dst: Float32Array): void {
  const scale = bnb4Scales(w), p = w.packed, bs = w.blocksize;
  const value = Float32Array.from({ length: 16 }, (_, c) => codeValue(w.quantType, c));
  const round = w.dtype === 'bfloat16' ? (v: number) => bf16ToF32(f32ToBf16(v))
    : w.dtype === 'float16' ? (v: number) => f16ToF32(f32ToF16(v)) : (v: number) => v;
  for (let i = lo; i < hi; i++) {
    const code = i & 1 ? p[i >> 1] & 0x0f : p[i >> 1] >> 4;
    dst[i - lo] = round(Math.fround(value[code] * scale[Math.floor(i / bs)]));
  }
}

/** The float32 weight [out, in] (`dequantize_4bit` / `int8_vectorwise_dequant` / GPTQ's and AWQ's scale·(q − z)):
 *  for tests and reference paths. */
export function dequantizeWeight(q: QuantizedWeight): Float32Array {
  if (q.format === 'gptq') return dequantizeGptq(q.gptq);
  if (q.format === 'awq') return dequantizeAwq(q.awq);
  return q.format === 'int8' ? dequantizeInt8(q.int8) : dequantize4bit(q.bnb4);
}
