// Element types. Names follow safetensors' dtype strings (../shared/spec/FORMATS.md §1.3).
export type DType = 'F32' | 'F16' | 'BF16' | 'I8' | 'U8' | 'I16' | 'I32' | 'I64' | 'BOOL';

export const DTYPES: readonly DType[] = ['F32', 'F16', 'BF16', 'I8', 'U8', 'I16', 'I32', 'I64', 'BOOL'];

export const DTYPE_BYTES: Record<DType, number> = {
  F32: 4, F16: 2, BF16: 2, I8: 1, U8: 1, I16: 2, I32: 4, I64: 8, BOOL: 1,
};

/** The typed array that holds each dtype's raw elements (bf16/f16 as raw 16-bit patterns). */
export type TypedArrayOf<D extends DType> =
  D extends 'F32' ? Float32Array :
  D extends 'F16' | 'BF16' ? Uint16Array :
  D extends 'I8' ? Int8Array :
  D extends 'U8' | 'BOOL' ? Uint8Array :
  D extends 'I16' ? Int16Array :
  D extends 'I32' ? Int32Array :
  D extends 'I64' ? BigInt64Array : never;

export type AnyTypedArray =
  Float32Array | Uint16Array | Int8Array | Uint8Array | Int16Array | Int32Array | BigInt64Array;

/** A view of `numel` elements of `dtype` over `buf` at `byteOffset`; copies only when the offset is misaligned. */
export function viewAs(dtype: DType, buf: ArrayBufferLike, byteOffset: number, numel: number): AnyTypedArray {
  const size = DTYPE_BYTES[dtype];
  if (byteOffset % size !== 0) {
    // safetensors does not align tensors; a misaligned one gets its own aligned copy.
    const copy = new Uint8Array(numel * size);
    copy.set(new Uint8Array(buf, byteOffset, numel * size));
    return viewAs(dtype, copy.buffer, 0, numel);
  }
  switch (dtype) {
    case 'F32': return new Float32Array(buf, byteOffset, numel);
    case 'F16': case 'BF16': return new Uint16Array(buf, byteOffset, numel);
    case 'I8': return new Int8Array(buf, byteOffset, numel);
    case 'U8': case 'BOOL': return new Uint8Array(buf, byteOffset, numel);
    case 'I16': return new Int16Array(buf, byteOffset, numel);
    case 'I32': return new Int32Array(buf, byteOffset, numel);
    case 'I64': return new BigInt64Array(buf, byteOffset, numel);
  }
}

export function allocArray(dtype: DType, numel: number): AnyTypedArray {
  return viewAs(dtype, new ArrayBuffer(numel * DTYPE_BYTES[dtype]), 0, numel);
}

// ---- scalar conversions (fp32 is the compute type) ----
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function bf16ToF32(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}

/** torch's f32→bf16: round to nearest even on the upper 16 bits, NaN kept quiet. */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

export function f16ToF32(h: number): number {
  const s = (h & 0x8000) ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** IEEE binary16, round to nearest even. */
export function f32ToF16(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let r = mant >>> shift;
    if (rest > half || (rest === half && (r & 1))) r++;
    return sign | r;
  }
  const rest = mant & 0x1fff;
  let r = (e << 10) | (mant >>> 13);
  if (rest > 0x1000 || (rest === 0x1000 && (r & 1))) r++;
  return sign | r;
}

/** Decode any float-like array to f32 (copy). */
export function toF32Array(dtype: DType, data: AnyTypedArray): Float32Array {
  if (dtype === 'F32') return Float32Array.from(data as Float32Array);
  const out = new Float32Array(data.length);
  if (dtype === 'BF16') {
    const src = data as Uint16Array;
    const o32 = new Uint32Array(out.buffer);
    for (let i = 0; i < src.length; i++) o32[i] = src[i] << 16;
    return out;
  }
  if (dtype === 'F16') {
    const src = data as Uint16Array;
    for (let i = 0; i < src.length; i++) out[i] = f16ToF32(src[i]);
    return out;
  }
  if (dtype === 'I64') {
    const src = data as BigInt64Array;
    for (let i = 0; i < src.length; i++) out[i] = Number(src[i]);
    return out;
  }
  for (let i = 0; i < data.length; i++) out[i] = (data as Int32Array)[i];
  return out;
}

/** Encode f32 values into `dtype` (F32/BF16/F16). */
export function fromF32Array(dtype: DType, src: Float32Array): AnyTypedArray {
  if (dtype === 'F32') return Float32Array.from(src);
  if (dtype === 'BF16') { const o = new Uint16Array(src.length); for (let i = 0; i < src.length; i++) o[i] = f32ToBf16(src[i]); return o; }
  if (dtype === 'F16') { const o = new Uint16Array(src.length); for (let i = 0; i < src.length; i++) o[i] = f32ToF16(src[i]); return o; }
  throw new Error(`fromF32Array: cannot encode floats as ${dtype}`);
}
