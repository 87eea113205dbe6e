// bitsandbytes 4-bit weights (NF4 / FP4, QLoRA) with optional double quantization: the reference algorithms, the
// bit packing and the Linear4bit state-dict layout that transformers writes (../shared/spec/FORMATS.md §2).
//
// Whose semantics: checkpoints in the wild are quantized by bitsandbytes' CUDA kernels (`kQuantizeBlockwise` in
// csrc/kernels.cu, built with --use_fast_math), so the code choice, tie rules, padding and even the block scale's
// approximate reciprocal (`cudaReciprocal`) are the CUDA ones: quantizing a transformers checkpoint's bf16 weights
// here gives its bytes exactly. What cannot be copied is the order of the GPU's float32 mean (`nested_offset`) and
// the reciprocal of float32 values with more than 10 mantissa bits. docs/p4-progress.md lists where bitsandbytes'
// pure-torch and CPU backends differ.
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { pyFloat, pyJsonDumps } from '../util/pyjson.js';

/** A malformed argument or serialized quant state; the message names the tensor or option. */
export class Bnb4Error extends Error { override name = 'Bnb4Error'; }

export type Bnb4QuantType = 'nf4' | 'fp4';
/** torch dtype names as QuantState stores them (`str(dtype)` without `torch.`). */
export type TorchFloatDtype = 'float32' | 'float16' | 'bfloat16';

/** `quantize_4bit`'s accepted block sizes (bitsandbytes/functional.py). */
export const BNB4_BLOCKSIZES: readonly number[] = [32, 64, 128, 256, 512, 1024, 2048, 4096];
/** `quantize_4bit(compress_statistics=True)` quantizes the absmax vector in blocks of 256. */
export const NESTED_BLOCKSIZE = 256;

const f = Math.fround;

// ---- code books (§2.1) ----

/** NF4 levels, index = 4-bit code (`get_4bit_type('nf4')`, identical to the CUDA LUT). */
export const NF4_CODE = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]);

// bitsandbytes' FP4 magnitudes by the low 3 bits (exponent bias 2, subnormal 0b001), divided by their max 12.
const FP4_MAGNITUDE = [0, 0.0625, 8, 12, 4, 6, 2, 3];
/**
 * FP4 levels as `get_4bit_type('fp4')` stores them in `quant_map`: index = code, bit 3 the sign. Its list spells
 * code 8 as the Python int `-0`, which is plain 0, so the stored table has +0.0 there (spec §2.1 says -0.0).
 */
export const FP4_CODE = Float32Array.from([...FP4_MAGNITUDE, ...FP4_MAGNITUDE.map((m) => (m === 0 ? 0 : -m))], (m) => m / 12);

/** The quant_map tensor a checkpoint stores for `type` (a copy). */
export function quantMap(type: Bnb4QuantType): Float32Array {
  return Float32Array.from(type === 'nf4' ? NF4_CODE : FP4_CODE);
}

/**
 * The value a code dequantizes to. bitsandbytes never reads the stored quant_map back: CUDA uses its LUTs, and the
 * FP4 one multiplies a magnitude by ±1, so code 8 gives -0.0.
 */
export function codeValue(type: Bnb4QuantType, code: number): number {
  if (type === 'nf4') return NF4_CODE[code];
  return (code & 0b1000 ? -1 : 1) * FP4_CODE[code & 0b0111];
}

// NF4 decision points: midpoints of adjacent levels. They equal, as float32, the literals of `dQuantizeNF4`, whose
// `x > t` tree picks the lower code on a tie.
const NF4_THRESHOLDS = Float32Array.from({ length: 15 }, (_, i) => f(f(NF4_CODE[i] + NF4_CODE[i + 1]) / 2));

// FP4 decision points on |y|, as the CUDA literals of `dQuantizeFP4`, so codes match files written on a GPU. They are
// not the float32 midpoints of the levels: 0.00260417f is 14 ulp above its midpoint, 0.583333f 6 ulp below, and
// 0.20833333f, 0.29166667f and 0.8333333f 1 ulp below. FP4_BY_RANK maps "number of thresholds below |y|" to the magnitude code of that level.
const FP4_THRESHOLDS = Float32Array.from([0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333]);
const FP4_BY_RANK = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

/** The NF4 code of a scaled value y = x / absmax: the number of thresholds strictly below y (NaN gives 0, as CUDA). */
export function nf4Code(y: number): number {
  let c = 0;
  while (c < 15 && y > NF4_THRESHOLDS[c]) c++;
  return c;
}

/** The FP4 code of a scaled value: sign bit for y < 0 only (so -0 and 0 take code 0), then the magnitude. */
export function fp4Code(y: number): number {
  const sign = y < 0 ? 0b1000 : 0;
  const a = Math.abs(y);
  let r = 0;
  while (r < 7 && a > FP4_THRESHOLDS[r]) r++;
  return sign | FP4_BY_RANK[r];
}

// ---- the block scale: 1/absmax as the GPU computes it ----

/**
 * `1.0f / absmax` under nvcc --use_fast_math is one MUFU.RCP (seen in the SASS), which is 1 ulp off the IEEE
 * quotient for 13% of mantissas. Measured on an H200 (sm_90) for the 1024 mantissas whose low 13 bits are zero,
 * which covers every float16 and bfloat16 value (test/fixtures/bnb/cuda_rcp_h200.txt, the same deviation in all 61
 * binades tried): these mantissas (top 10 bits) come out 1 ulp above IEEE, and RCP_BELOW 1 ulp below.
 */
const RCP_ABOVE = [
  11, 17, 18, 20, 48, 91, 97, 98, 104, 105, 113, 138, 147, 148, 153, 203, 204, 209, 225, 226, 252, 260, 296, 298, 304,
  305, 346, 371, 386, 395, 396, 403, 408, 409, 417, 425, 439, 449, 453, 454, 458, 467, 481, 488, 498, 505, 507, 519,
  520, 521, 528, 531, 543, 547, 563, 564, 627, 647, 648, 650, 651, 667, 675, 676, 687, 700, 701, 724, 728, 785, 786,
  787, 789, 805, 807, 813, 823, 872, 874, 876, 878, 893, 920, 923, 928, 944, 968, 987, 988, 997,
];
const RCP_BELOW = [
  6, 14, 32, 46, 62, 70, 77, 86, 87, 88, 126, 127, 135, 160, 176, 179, 214, 219, 221, 274, 287, 325, 349, 401, 415,
  443, 445, 473, 474, 558, 614, 751, 783, 950, 954, 956, 957, 965, 1010, 1016,
];
const RCP_ULPS = new Int8Array(1024);
for (const m of RCP_ABOVE) RCP_ULPS[m] = 1;
for (const m of RCP_BELOW) RCP_ULPS[m] = -1;

/**
 * How the block scale 1/absmax is computed: 'cuda' as bitsandbytes' GPU kernels do (exact for float16/bfloat16
 * absmax; other float32 values fall back to IEEE), 'ieee' as its torch and CPU backends do.
 */
export type Reciprocal = 'cuda' | 'ieee';

const fBits = new Float32Array(1);
const uBits = new Uint32Array(fBits.buffer);

/** MUFU.RCP of a non-negative float32, flushing subnormals (FTZ) as the fast-math build does. */
export function cudaReciprocal(x: number): number {
  fBits[0] = x;
  const b = uBits[0];
  if ((b & 0x7f800000) === 0) return Infinity; // zero or a subnormal flushed to zero
  const r = f(1 / x);
  if (Math.abs(r) < 2 ** -126) return 0;
  const ulps = (b & 0x1fff) === 0 ? RCP_ULPS[(b >>> 13) & 0x3ff] : 0;
  if (ulps === 0 || !Number.isFinite(r)) return r;
  fBits[0] = r;
  uBits[0] += ulps;
  return fBits[0];
}

function reciprocal(x: number, mode: Reciprocal): number {
  return mode === 'cuda' ? cudaReciprocal(x) : f(1 / x);
}

// ---- blockwise absmax + codes (§2.2) ----

export interface Codes4 {
  /** One 4-bit code per element, in flattened row-major order. */
  codes: Uint8Array;
  /** max |x| per block of `blocksize` consecutive elements; the last block may be partial. */
  absmax: Float32Array;
}

function checkBlocksize(blocksize: number): void {
  if (!BNB4_BLOCKSIZES.includes(blocksize)) {
    throw new Bnb4Error(`blocksize ${blocksize} is not one of bitsandbytes' 4-bit block sizes (${BNB4_BLOCKSIZES.join(', ')})`);
  }
}

/**
 * Per-block absmax and codes over the flattened weight. Blocks span rows. The reciprocal of the absmax is multiplied
 * in (CUDA: `vals[j] * (1.0f / absmax)`), with no clamp: an all-zero block gives 0 · ∞ = NaN, which both code
 * functions send to code 0, dequantizing to ±0.
 */
export function quantizeCodes4(x: Float32Array, type: Bnb4QuantType, blocksize = 64, rcp: Reciprocal = 'cuda'): Codes4 {
  checkBlocksize(blocksize);
  const { q: codes, absmax } = blockwise(x, blocksize, rcp, type === 'nf4' ? nf4Code : fp4Code);
  return { codes, absmax };
}

/** Blockwise absmax quantization (§2.2, §2.3): each block's values times 1/absmax, encoded one by one. */
function blockwise(x: Float32Array, blocksize: number, rcp: Reciprocal, encode: (y: number) => number): { q: Uint8Array; absmax: Float32Array } {
  const n = x.length;
  const nBlocks = Math.ceil(n / blocksize);
  const q = new Uint8Array(n);
  const absmax = new Float32Array(nBlocks);
  for (let b = 0; b < nBlocks; b++) {
    const lo = b * blocksize, hi = Math.min(lo + blocksize, n);
    let m = 0;
    for (let i = lo; i < hi; i++) m = Math.max(m, Math.abs(x[i]));
    absmax[b] = m;
    const r = reciprocal(m, rcp);
    for (let i = lo; i < hi; i++) q[i] = encode(f(x[i] * r));
  }
  return { q, absmax };
}

// ---- bit packing ----

/**
 * Two codes per byte, element 2k in the high nibble and 2k+1 in the low one. An odd count pads the last low nibble
 * with the code of 0.0 under the block's scale (CUDA loads 0 past the end): NF4 code 7 and FP4 code 0, or code 0 when
 * that block's absmax is 0 (0 · ∞ = NaN). `padCode` is that code.
 */
export function pack4(codes: Uint8Array, padCode = 0): Uint8Array {
  const n = codes.length;
  const out = new Uint8Array(Math.ceil(n / 2));
  for (let k = 0; 2 * k < n; k++) {
    const hi = codes[2 * k], lo = 2 * k + 1 < n ? codes[2 * k + 1] : padCode;
    if (hi > 15 || lo > 15) throw new Bnb4Error(`code ${Math.max(hi, lo)} at element ${hi > 15 ? 2 * k : 2 * k + 1} does not fit in 4 bits`);
    out[k] = (hi << 4) | lo;
  }
  return out;
}

/** The first `n` codes of packed bytes (the inverse of pack4; a pad nibble is dropped). */
export function unpack4(packed: Uint8Array, n: number): Uint8Array {
  if (packed.length !== Math.ceil(n / 2)) {
    throw new Bnb4Error(`${packed.length} packed bytes cannot hold ${n} 4-bit codes (need ${Math.ceil(n / 2)})`);
  }
  const codes = new Uint8Array(n);
  for (let i = 0; i < n; i++) codes[i] = i & 1 ? packed[i >> 1] & 0x0f : packed[i >> 1] >> 4;
  return codes;
}

// ---- the 8-bit dynamic map and blockwise 8-bit quantization (§2.3) ----

/**
 * `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`: for i = 0..6 the midpoints of
 * `torch.linspace(0.1, 1, 2^i + 1)` (float32) times 10^(i-6), with both signs, plus 0 and 1, sorted (index 127 = 0).
 *
 * torch's CPU linspace computes `start + step*i` below the halfway index and `end - step*(steps-1-i)` above it.
 * Its AVX2 and AVX-512 kernels (what torch picks on any recent x86-64, so what checkpoints carry) are compiled with
 * FMA contraction, so each product and sum round once; `fusedMultiplyAdd: false` rounds them separately, as torch's
 * DEFAULT (no-SIMD) kernel and the spec's bnb_dynamic_map_f32.UNCONFIRMED.json do. The two differ at 42 entries,
 * by 1 ulp (2 ulp at two of them). Measured on torch 2.11 with ATEN_CPU_CAPABILITY = default / avx2 / avx512.
 */
export function createDynamicMap(opts: { fusedMultiplyAdd?: boolean } = {}): Float32Array {
  const fma = opts.fusedMultiplyAdd ?? true;
  // step·k is exact in a double (24-bit step × 7-bit k), so rounding the double sum once is exactly an FMA.
  const mulAdd = (a: number, b: number, c: number) => (fma ? f(a + b * c) : f(a + f(b * c)));
  const values: number[] = [0, 1];
  for (let i = 0; i < 7; i++) {
    const steps = 2 ** i + 1;
    const start = f(0.1), end = 1;
    const step = f(f(end - start) / (steps - 1));
    const half = Math.floor(steps / 2);
    const bounds = Array.from({ length: steps }, (_, k) =>
      k < half ? mulAdd(start, step, k) : mulAdd(end, -step, steps - 1 - k));
    const scale = f(10 ** (i - 6)); // torch casts the Python float to the tensor's float32 before multiplying
    for (let k = 0; k + 1 < steps; k++) {
      const mean = f(f(bounds[k] + bounds[k + 1]) / 2);
      values.push(f(scale * mean), -f(scale * mean));
    }
  }
  return Float32Array.from(values.sort((a, b) => a - b));
}

/**
 * The index of the nearest entry of a sorted 256-entry code, as CUDA's `dQuantize` (binary search from pivot 127,
 * then a midpoint test) decides it: on an exact midpoint the even index wins, because that search always ends on an
 * even pivot and keeps it on equality from either side. NaN (a zero block scale) gives 0.
 */
export function dynamicCode(y: number, code: Float32Array): number {
  if (Number.isNaN(y)) return 0;
  let lo = 0, hi = code.length; // first index with code[i] >= y
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (code[mid] < y) lo = mid + 1; else hi = mid;
  }
  if (hi === 0) return 0;
  if (hi === code.length) return code.length - 1;
  const below = hi - 1;
  const m = f(f(code[below] + code[hi]) * 0.5);
  if (y > m) return hi;
  if (y < m) return below;
  return below % 2 === 0 ? below : hi;
}

export interface Blockwise8 {
  q: Uint8Array;
  absmax: Float32Array;
}

/** `quantize_blockwise(A, code, blocksize)`: 8-bit codes against `code` with a float32 absmax per block. */
export function quantizeBlockwise8(x: Float32Array, code: Float32Array, blocksize: number, rcp: Reciprocal = 'cuda'): Blockwise8 {
  if (!Number.isInteger(blocksize) || blocksize <= 0) throw new Bnb4Error(`blocksize must be a positive integer, got ${blocksize}`);
  return blockwise(x, blocksize, rcp, (y) => dynamicCode(y, code));
}

export function dequantizeBlockwise8(q: Uint8Array, absmax: Float32Array, code: Float32Array, blocksize: number): Float32Array {
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = f(code[q[i]] * absmax[Math.floor(i / blocksize)]);
  return out;
}

// ---- double quantization (§2.3) ----

export interface NestedAbsmax {
  /** 8-bit codes of absmax − offset, one per 4-bit block (stored as `weight.absmax`, U8). */
  qabsmax: Uint8Array;
  /** Per 256 codes, the absmax of the centred values (`weight.nested_absmax`). */
  nestedAbsmax: Float32Array;
  /** The code the 8-bit values index (`weight.nested_quant_map`; read from files, never regenerated). */
  nestedQuantMap: Float32Array;
  nestedBlocksize: number;
  /** mean(absmax) as float32 (`nested_offset` in the quant-state JSON). */
  offset: number;
}

/**
 * `offset = absmax.mean()`, then `quantize_blockwise(absmax - offset, blocksize=256)` with the dynamic map. The mean
 * is the correctly rounded float32 of the exact mean; the GPU's float32 reduction may land 1 ulp away.
 */
export function quantizeNested(absmax: Float32Array, code: Float32Array = createDynamicMap(), rcp: Reciprocal = 'cuda'): NestedAbsmax {
  let sum = 0;
  for (const a of absmax) sum += a;
  const offset = f(sum / absmax.length);
  const centred = new Float32Array(absmax.length);  // a plain loop: Float32Array.from with a map walks an iterator
  for (let i = 0; i < absmax.length; i++) centred[i] = f(absmax[i] - offset);
  const { q, absmax: nested } = quantizeBlockwise8(centred, code, NESTED_BLOCKSIZE, rcp);
  return { qabsmax: q, nestedAbsmax: nested, nestedQuantMap: code, nestedBlocksize: NESTED_BLOCKSIZE, offset };
}

/** The 4-bit block scales back: `code[q] · nested_absmax[i / 256] + offset` in float32. */
export function dequantizeNested(n: NestedAbsmax): Float32Array {
  const v = dequantizeBlockwise8(n.qabsmax, n.nestedAbsmax, n.nestedQuantMap, n.nestedBlocksize);
  return v.map((a) => f(a + n.offset));
}

// ---- the quantized weight ----

export interface Bnb4Weight {
  quantType: Bnb4QuantType;
  blocksize: number;
  /** The weight's dtype before quantization; dequantize rounds to it (QuantState.dtype). */
  dtype: TorchFloatDtype;
  /** The original shape, [out, in] for a linear layer. */
  shape: number[];
  /** ceil(n/2) bytes, §2.2 order. */
  packed: Uint8Array;
  /** Per-block float32 absmax, or null when double-quantized. */
  absmax: Float32Array | null;
  nested: NestedAbsmax | null;
}

export interface Bnb4Options {
  quantType: Bnb4QuantType;
  blocksize?: number;
  doubleQuant?: boolean;
  /** The dtype the values came from (they must already be exact in it); recorded in the quant state. */
  dtype?: TorchFloatDtype;
  /** 'cuda' (default) reproduces GPU-written files; 'ieee' bitsandbytes' torch/CPU backends. */
  reciprocal?: Reciprocal;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, d) => a * d, 1);
}

/** `quantize_4bit(W, blocksize, compress_statistics, quant_type)`: `x` is the row-major weight as float32. */
export function quantize4bit(x: Float32Array, shape: readonly number[], opts: Bnb4Options): Bnb4Weight {
  const { quantType, blocksize = 64, doubleQuant = false, dtype = 'float32', reciprocal: rcp = 'cuda' } = opts;
  if (quantType !== 'nf4' && quantType !== 'fp4') throw new Bnb4Error(`quant type must be "nf4" or "fp4", got ${JSON.stringify(quantType)}`);
  if (!shape.every((d) => Number.isInteger(d) && d >= 0) || numel(shape) !== x.length) {
    throw new Bnb4Error(`shape [${shape.join(', ')}] does not hold ${x.length} values`);
  }
  const { codes, absmax } = quantizeCodes4(x, quantType, blocksize, rcp);
  const last = absmax[absmax.length - 1];
  const padCode = last === 0 ? 0 : (quantType === 'nf4' ? nf4Code(0) : fp4Code(0));
  return {
    quantType, blocksize, dtype, shape: [...shape],
    packed: pack4(codes, padCode),
    absmax: doubleQuant ? null : absmax,
    nested: doubleQuant ? quantizeNested(absmax, createDynamicMap(), rcp) : null,
  };
}

/** The float32 scale of every 4-bit block (dequantized first when double-quantized). */
export function blockAbsmax(w: Bnb4Weight): Float32Array {
  if (w.nested) return dequantizeNested(w.nested);
  if (!w.absmax) throw new Bnb4Error('quantized weight has neither absmax nor a nested absmax');
  return w.absmax;
}

function roundTo(dtype: TorchFloatDtype, v: number): number {
  if (dtype === 'bfloat16') return bf16ToF32(f32ToBf16(v));
  if (dtype === 'float16') return f16ToF32(f32ToF16(v));
  return v;
}

/** `dequantize_4bit`: `value(code) · absmax[block]` in float32, rounded to the original dtype. */
export function dequantize4bit(w: Bnb4Weight): Float32Array {
  const n = numel(w.shape);
  const codes = unpack4(w.packed, n);
  const scale = blockAbsmax(w);
  const value = Float32Array.from({ length: 16 }, (_, c) => codeValue(w.quantType, c));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = roundTo(w.dtype, f(value[codes[i]] * scale[Math.floor(i / w.blocksize)]));
  return out;
}

// ---- serialization: Linear4bit._save_to_state_dict + QuantState.as_dict(packed=True) (§2.4) ----

/**
 * The `quant_state.bitsandbytes__<type>` payload: Python `json.dumps` with default separators, keys in
 * QuantState.as_dict's insertion order, `nested_offset` as Python's repr of the float32 widened to a double.
 */
export function quantStateJson(w: Bnb4Weight): string {
  const d = new Map<string, unknown>([
    ['quant_type', w.quantType], ['blocksize', w.blocksize], ['dtype', w.dtype], ['shape', w.shape],
  ]);
  if (w.nested) {
    d.set('nested_blocksize', w.nested.nestedBlocksize);
    d.set('nested_dtype', 'float32');
    d.set('nested_offset', pyFloat(w.nested.offset));
  }
  return pyJsonDumps(d);
}

/** The tensors a transformers save writes for the linear layer at `prefix` (the bias is the caller's). */
export function bnb4ToStateDict(prefix: string, w: Bnb4Weight): Map<string, Tensor> {
  const p = `${prefix}.weight`;
  const m = new Map<string, Tensor>();
  m.set(p, new Tensor('U8', [w.packed.length, 1], w.packed));
  if (w.nested) {
    m.set(`${p}.absmax`, new Tensor('U8', [w.nested.qabsmax.length], w.nested.qabsmax));
  } else {
    m.set(`${p}.absmax`, new Tensor('F32', [w.absmax!.length], w.absmax!));
  }
  m.set(`${p}.quant_map`, new Tensor('F32', [16], quantMap(w.quantType)));
  if (w.nested) {
    m.set(`${p}.nested_absmax`, new Tensor('F32', [w.nested.nestedAbsmax.length], w.nested.nestedAbsmax));
    m.set(`${p}.nested_quant_map`, new Tensor('F32', [w.nested.nestedQuantMap.length], w.nested.nestedQuantMap));
  }
  const json = new TextEncoder().encode(quantStateJson(w));
  m.set(`${p}.quant_state.bitsandbytes__${w.quantType}`, new Tensor('U8', [json.length], json));
  return m;
}

function bytesOf(t: Tensor): Uint8Array {
  const d = t.data as unknown as ArrayBufferView;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

function f32Of(t: Tensor, name: string, length: number): Float32Array {
  if (t.dtype !== 'F32' || t.shape.length !== 1 || t.shape[0] !== length) {
    throw new Bnb4Error(`${name}: expected F32 [${length}], got ${t.dtype} [${t.shape.join(', ')}]`);
  }
  return t.data as Float32Array;
}

const QS_KEYS = new Set(['quant_type', 'blocksize', 'dtype', 'shape', 'nested_blocksize', 'nested_dtype', 'nested_offset']);
const DTYPES = new Set<string>(['float32', 'float16', 'bfloat16']);

/**
 * Reads the layer at `prefix` back from a state dict (`get` returns undefined for a missing name). As
 * QuantState.from_dict, exactly one `quant_state.bitsandbytes__nf4|fp4` tensor must exist. The stored
 * nested_quant_map is used as it is (it depends on the CPU that wrote it); views into `get`'s tensors are kept.
 */
export function bnb4FromStateDict(prefix: string, get: (name: string) => Tensor | undefined): Bnb4Weight {
  const p = `${prefix}.weight`;
  const need = (name: string): Tensor => {
    const t = get(name);
    if (!t) throw new Bnb4Error(`${name}: missing from the checkpoint`);
    return t;
  };
  const states = (['nf4', 'fp4'] as const).filter((t) => get(`${p}.quant_state.bitsandbytes__${t}`));
  if (states.length !== 1) {
    throw new Bnb4Error(`${p}: expected exactly one of quant_state.bitsandbytes__nf4 / __fp4, found ${states.length}`);
  }
  const qsName = `${p}.quant_state.bitsandbytes__${states[0]}`;
  let qs: Record<string, unknown>;
  try {
    qs = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytesOf(need(qsName))));
  } catch (e) {
    throw new Bnb4Error(`${qsName}: not UTF-8 JSON (${(e as Error).message})`);
  }
  if (qs === null || typeof qs !== 'object' || Array.isArray(qs)) throw new Bnb4Error(`${qsName}: not a JSON object`);
  const bad = (key: string, why: string): never => { throw new Bnb4Error(`${qsName}: "${key}" ${why}, got ${JSON.stringify(qs[key])}`); };
  for (const k of Object.keys(qs)) if (!QS_KEYS.has(k)) bad(k, 'is not a QuantState key');
  if (qs.quant_type !== states[0]) bad('quant_type', `must be "${states[0]}" as the tensor name says`);
  const blocksize = qs.blocksize;
  if (typeof blocksize !== 'number' || !BNB4_BLOCKSIZES.includes(blocksize)) bad('blocksize', `must be one of ${BNB4_BLOCKSIZES.join(', ')}`);
  if (typeof qs.dtype !== 'string' || !DTYPES.has(qs.dtype)) bad('dtype', 'must be float32, float16 or bfloat16');
  const shape = qs.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) bad('shape', 'must be a list of sizes');
  const n = numel(shape as number[]);
  const nBlocks = Math.ceil(n / (blocksize as number));

  // Other bnb_4bit_quant_storage dtypes reinterpret the same bytes, so only the byte count matters.
  const packed = bytesOf(need(p));
  if (packed.length !== Math.ceil(n / 2)) {
    throw new Bnb4Error(`${p}: ${packed.length} bytes, but shape [${(shape as number[]).join(', ')}] needs ${Math.ceil(n / 2)}`);
  }
  // bitsandbytes dequantizes by quant_type and ignores this table, so a different one is a file it would misread.
  const qmap = f32Of(need(`${p}.quant_map`), `${p}.quant_map`, 16);
  const builtin = quantMap(states[0]);
  if (qmap.some((v, i) => v !== builtin[i])) throw new Bnb4Error(`${p}.quant_map: not bitsandbytes' ${states[0]} table`);
  const absmaxT = need(`${p}.absmax`);
  let absmax: Float32Array | null = null;
  let nested: NestedAbsmax | null = null;
  const isNested = get(`${p}.nested_absmax`) !== undefined;
  if (isNested !== ('nested_offset' in qs)) throw new Bnb4Error(`${p}: nested_absmax and nested_offset must come together`);
  if (isNested) {
    const nb = qs.nested_blocksize;
    if (typeof nb !== 'number' || !Number.isSafeInteger(nb) || nb <= 0) bad('nested_blocksize', 'must be a positive integer');
    if (qs.nested_dtype !== 'float32') bad('nested_dtype', 'must be float32');
    if (typeof qs.nested_offset !== 'number' || !Number.isFinite(qs.nested_offset)) bad('nested_offset', 'must be a finite number');
    if (absmaxT.dtype !== 'U8' || absmaxT.shape.length !== 1 || absmaxT.shape[0] !== nBlocks) {
      throw new Bnb4Error(`${p}.absmax: expected U8 [${nBlocks}] with double quantization, got ${absmaxT.dtype} [${absmaxT.shape.join(', ')}]`);
    }
    nested = {
      qabsmax: absmaxT.data as Uint8Array,
      nestedAbsmax: f32Of(need(`${p}.nested_absmax`), `${p}.nested_absmax`, Math.ceil(nBlocks / (nb as number))),
      nestedQuantMap: f32Of(need(`${p}.nested_quant_map`), `${p}.nested_quant_map`, 256),
      nestedBlocksize: nb as number,
      offset: f(qs.nested_offset as number), // from_dict: torch.tensor(float(...)) is float32
    };
  } else {
    absmax = f32Of(absmaxT, `${p}.absmax`, nBlocks);
  }
  return {
    quantType: states[0], blocksize: blocksize as number, dtype: qs.dtype as TorchFloatDtype,
    shape: [...(shape as number[])], packed, absmax, nested,
  };
}
