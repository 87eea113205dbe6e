// The kernel table: one instance per SIMD level (scalar, avx2, avx512, neon). Drivers in gemm.cc / ops.cc are
// level-agnostic and call through the table, so every level runs the same blocking, threading and edge handling
// and tests can compare levels op by op.
#pragma once
#include <cstdint>
#include <cstring>

namespace lowbit {

struct Q4Weight;  // below
struct QgWeight;  // below

enum WType : int { W_F32 = 0, W_BF16 = 1, W_F16 = 2 };

struct Kernels {
  const char* name;

  // ---- GEMV (small M): y[m*ldy + n] = dot(x[m*ldx ..], w row n) (+ bias[n]) for m < M (1..4), n in [n0, n1).
  // For BF16 weights x must be prepared by prep_x_bf16 (see xperm_block); F32/F16 take x as is.
  int xperm_block;  // bf16: x is de-interleaved (even lanes, then odd lanes) in blocks of this many; 0 = not needed
  void (*gemv)(float* y, int64_t ldy, const float* x, int64_t ldx, int M, const void* w, int wtype,
               int64_t n0, int64_t n1, int64_t K, const float* bias);

  // ---- GEMM micro-kernel: C[MR x NR] (+)= A·B over kc, with
  //   a: packed X, a[k*MR + i] = x[i][k];   b: packed W panel, b[k*NR + j] = w[j][k] (widened to f32)
  //   init: when !accumulate, C starts at bias[0..NR) (broadcast over rows) or 0 when bias is null.
  int MR, NR, KC;
  // b[k*NR + j] = w[n0 + j][k0 + k] widened, for k < kc, j < nr; columns nr..NR-1 are zero.
  void (*pack_b)(float* b, const void* w, int wtype, int64_t K, int64_t n0, int64_t nr, int64_t k0, int64_t kc);
  void (*micro)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const float* bias, bool accumulate);

  // ---- vector helpers
  void (*widen)(float* dst, const void* src, int wtype, int64_t n);      // bf16/f16/f32 → f32
  float (*dot)(const float* a, const float* b, int64_t n);
  void (*axpy)(float* y, float a, const float* x, int64_t n);            // y += a·x
  float (*max)(const float* x, int64_t n);                               // -inf for n = 0
  float (*exp_sum)(float* y, const float* x, float sub, int64_t n);      // y = exp(x - sub); returns Σy
  void (*silu_mul)(float* y, const float* g, const float* u, int64_t n);
  void (*add)(float* y, const float* a, const float* b, int64_t n);
  void (*scale)(float* y, const float* x, float s, int64_t n);           // y = s·x
  // Attention inner loops over n cache rows spaced ld floats apart (hd floats each):
  void (*dots)(float* out, const float* q, const float* k, int64_t ldk, int64_t n, int64_t hd, float scale);  // out[s] = scale·q·k_s
  void (*wsum)(float* o, const float* p, const float* v, int64_t ldv, int64_t n, int64_t hd);  // o += Σ p[s]·v_s (p[s] = 0 skipped)

  // ---- NF4/FP4 exact fused dequantize-GEMV (one activation row): y[n] = dot(x, dequant(w) row n) (+ bias[n]) for n
  // in [n0, n1). The float weight is never written out: each block's 16 dequantized values (q4_block_lut) are looked
  // up by code as the packed bytes stream past. The driver (gemm.cc, matmul_q4) runs it for decode shapes that
  // gemv_q4i (below) does not take, and for x rows that are not finite; more rows take the tiled GEMM
  // (dequant_q4 + pack_b + micro).
  void (*gemv_q4)(float* y, const float* x, const Q4Weight& w, int64_t n0, int64_t n1, const float* bias);
  // dst[i] = dequantized element i0 + i of the flattened weight, for i < n (bit for bit q4_block_lut's values): the
  // prefill GEMM (matmul_q4) dequantizes one weight tile at a time with it, then packs it as float32 by pack_b.
  void (*dequant_q4)(float* dst, const Q4Weight& w, int64_t i0, int64_t n);
  // ---- NF4/FP4 decode with int16 activations (the decode path; driver matmul_q4 in gemm.cc): K and the block size
  // multiples of 64. Each 64-element chunk of an x row is quantized once per call by q4i_prep (gemm.cc, the same at
  // every level): dx = max|x|/8191 (times 2^-14 for the codes' scale), xq = round_half_even(x·(8191/max|x|)), stored in this level's order within the
  // chunk (q4i_order[i] = the element at position i; null = natural order). The codes are int16 too
  // (q4_code_i16: round(value·16384)), so a chunk's Σ code·xq is an exact int32 and y[n] = Σ_chunks
  // (scale_block · dx_chunk) · Σ code·xq, float32 across chunks (src/backend/ref/quant.ts q4DecodeRef is the twin).
  // For m < M (1..4): y[m*ldy + n] for n in [n0, n1), + bias[n]; xq/dx rows are K and K/64 apart. A weight row
  // whose block scales are not all finite takes the exact walk (gemv_q4) on x's float row m (x + m*ldx).
  const uint8_t* q4i_order;
  void (*gemv_q4i)(float* y, int64_t ldy, const float* x, int64_t ldx, const int16_t* xq, const float* dx, int M,
                   const Q4Weight& w, int64_t n0, int64_t n1, const float* bias);

  // ---- Group-quantized integer weights (GPTQ 2/3/4/8-bit; QgWeight below) with integer activations, driver
  // matmul_qg (gemm.cc). x is permuted, zero-padded to Kpad and quantized by qg_prep, with xbar[g] = Σ over the
  // group's half-chunks of dx·Σxq, per 64-element chunk: for 2/3/4-bit codes to int8 (|xq| ≤ 127, natural order: the
  // unsigned codes times x fit vpmaddubsw's int16 pairs), for 8-bit codes to int16 per 64 (|xq| ≤ 8191, in qg_order). xq is
  // an int8_t or int16_t array accordingly. For m < M (1..4), n in [n0, n1): y[m*ldy + n] = Σ_chunks (scale·dx)·
  // Σ code·xq − Σ_g scale·zero·xbar[m][g] (+ bias[n]): exact int32 sums per chunk (per half-chunk with groups of 32),
  // float32 across them. Twin: qgDecodeRef (src/quant/qg.ts).
  const uint8_t* qg_order;
  void (*gemv_qg)(float* y, int64_t ldy, const void* xq, const float* dx, const float* xbar, int M,
                  const QgWeight& w, int64_t n0, int64_t n1, const float* bias);

  // ---- LLM.int8 integer products (driver: int8.cc, matmul_int8): for m < M (1..4) and n in [n0, n1)
  //   acc[m*ldacc + (n - n0)] = Σ_{k<K} a[m*lda + k] · b[n*ldb + k]   in int32, exactly.
  // a holds quantized activations, always in [-127, 127]; b the weight codes, any int8 (-128 included, though
  // bitsandbytes never writes it). |acc| ≤ K·127·128 fits int32 for K ≤ 131072; the driver cuts longer rows.
  void (*dot_i8)(int32_t* acc, int64_t ldacc, const int8_t* a, int64_t lda, int M, const int8_t* b, int64_t ldb,
                 int64_t n0, int64_t n1, int64_t K);
  // LLM.int8 activations, one row of n values (int8VectorwiseQuant in src/quant/int8.ts; the driver runs the first
  // over every row before the second, since a column is an outlier when any row holds one):
  //   i8_absmax_f16: h[k] = x[k] rounded to float16 (half to even) and widened back; flag[k] = 1 where |h[k]| ≥ tf,
  //   an outlier (tf NaN: none; flags are set, never cleared); returns the max |h[k]| over the other elements (0 when
  //   there are none), NaN when any of them is NaN.
  float (*i8_absmax_f16)(float* h, uint8_t* flag, const float* x, int64_t n, float tf);
  //   i8_quant: q[k] = 0 where flag[k] is set or fl32(h[k]·s) is NaN, else that product rounded half to even (the
  //   caller's s keeps it within [-127, 127]).
  void (*i8_quant)(int8_t* q, const float* h, const uint8_t* flag, float s, int64_t n);

  // True when gemv_qg reads the int8 x of a layer that qg_pairs() accepts in the pair layout (qg_prep): per pair of
  // chunks (2p, 2p+1), 128 bytes [x_2p[0..31], x_2p+1[0..31], x_2p[32..63], x_2p+1[32..63]], an odd last chunk in
  // natural order; dx then has 16 readable floats past its last chunk. Only the AVX512-VNNI table sets it.
  bool qg_pairs = false;
};

// gemv_q4i's activations (gemm.cc, one definition for every level): for each 64-element chunk c of x (K a multiple
// of 64), dx[c] = fl(max|x|/8191)·2^-14 (the int16 codes' scale folded in) and xq[64c + i] = round_half_even(x[64c + order[i]] · (8191/max|x|)) (0 for an all-zero
// chunk; order null = natural). Returns false, leaving the rest unwritten, when some element is not finite.
bool q4i_prep(int16_t* xq, float* dx, const float* x, int64_t K, const uint8_t* order);

// ---- Group-quantized integer weights (GPTQ; src/quant/qg.ts builds this layout from AutoGPTQ's tensors). The input
// dimension is permuted so that every group is contiguous (act-order's g_idx sorted; the identity otherwise) and
// padded with zero codes to Kpad, a multiple of 64. Per row, Kpad/64 chunks of 64 codes c_0..c_63 (unsigned, < 2^bits)
// in qg_chunk_bytes(bits) bytes:
//   8-bit: byte p = c_p;                      4-bit: byte i < 32 = c_i | c_{i+32} << 4;
//   2-bit: byte i < 16 = c_i | c_{i+16} << 2 | c_{i+32} << 4 | c_{i+48} << 6;
//   3-bit: the 2-bit layout of c & 3 (16 bytes), then 8 bytes whose bit p (little-endian) is c_p >> 2.
// Group g covers permuted inputs [g·G, (g+1)·G), G a multiple of 32, nG = ceil(K/G) (the padding past K counts as
// the last group); scales and zeros are per (row, group). The scales stay float16, as every GPTQ and AWQ file holds
// them (2 bytes a group, not 4: at group 128 the weight stream is 4.19 bits a weight instead of 4.5); kernels widen
// them exactly and form scale·zero in float32 (exact: a float16 times an integer below 256).
struct QgWeight {
  const uint8_t* codes;    // [N, Kpad/64 · qg_chunk_bytes(bits)]
  int bits;
  int64_t N, Kpad, G, nG;
  const uint16_t* scales;  // [N, nG] float16 bits
  const uint8_t* zeros;    // [N, nG]
};
inline int64_t qg_chunk_bytes(int bits) { return bits == 3 ? 24 : 8 * bits; }
// Whether kernels k take this layer's x in the pair layout (Kernels::qg_pairs): 2/3/4-bit codes whose groups each
// start at an even chunk (one group, or G a multiple of 128).
inline bool qg_pairs(const Kernels* k, const QgWeight& w) { return k->qg_pairs && w.bits <= 4 && (w.nG == 1 || w.G % 128 == 0); }
// x (one row of K) → xq [Kpad] (int8 for bits ≤ 4 in natural order or, with pairs, the pair layout, else int16 in `order` per chunk, null =
// natural), dx [Kpad/64] (dx = fl(max|x|/xmax) per 64-element chunk, xmax = qg_xmax(bits); no 2^-14: the codes are
// plain integers), xbar [nG] (Σ over the group's half-chunks h, in order, of fl(dx·Σ_{h} xq)). x is read through perm
// (x'[j] = x[perm[j]], j < K; null = identity), zeros from K to Kpad. Returns false when some x is not finite (the
// caller takes the exact path).
inline float qg_xmax(int bits) { return bits <= 4 ? 127.f : 8191.f; }
bool qg_prep(void* xq, float* dx, float* xbar, const float* x, const int32_t* perm, int64_t K, int64_t Kpad,
             int64_t G, int64_t nG, int bits, const uint8_t* order, bool pairs = false);
// dst[j] = scale·(code − zero) of row n, permuted inputs k0 .. k0+n-1 (exact in float32: the ref's weights).
void qg_dequant(float* dst, const QgWeight& w, int64_t row, int64_t k0, int64_t n);

const Kernels* kernels_scalar();
const Kernels* kernels_avx2();    // nullptr when not compiled in (non-x86)
const Kernels* kernels_avx512();  // nullptr when not compiled in (non-x86)
const Kernels* kernels_neon();    // nullptr when not compiled in (non-aarch64)

// The level in use (dispatch.cc). Set once at load to the best the CPU has; setLevel may lower it.
const Kernels* active();
const Kernels* best_kernels();

// Scalar half-precision conversions shared by every level's tails.
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) { mant <<= 1; exp--; }
      u = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Row n of a group-quantized weight: its scales widened from float16 into s [nG] and scale·zero into sz [nG] (the
// portable loop; x86 kernels have a vector one).
inline void qg_row_meta(const QgWeight& w, int64_t n, float* s, float* sz) {
  const uint16_t* h = w.scales + n * w.nG;
  const uint8_t* z = w.zeros + n * w.nG;
  for (int64_t g = 0; g < w.nG; g++) {
    s[g] = f16_to_f32(h[g]);
    sz[g] = s[g] * float(z[g]);
  }
}
inline float widen1(const void* w, int wtype, int64_t i) {
  if (wtype == W_F32) return static_cast<const float*>(w)[i];
  uint16_t h = static_cast<const uint16_t*>(w)[i];
  return wtype == W_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}
inline int64_t wbytes(int wtype) { return wtype == W_F32 ? 4 : 2; }

// ---- bitsandbytes 4-bit weights (src/quant/bnb4.ts, ../shared/spec/FORMATS.md §2)

// Rounding of a dequantized value to the weight's original dtype, as src/tensor/dtype.ts's f32ToBf16/f32ToF16
// (round half to even) followed by the exact widening.
inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float round_bf16(float f) {
  const uint32_t b = f32_bits(f);
  uint32_t h = (b & 0x7fffffffu) > 0x7f800000u ? ((b >> 16) | 0x40u) & 0xffffu : ((b + 0x7fffu + ((b >> 16) & 1u)) >> 16) & 0xffffu;
  return bf16_to_f32(uint16_t(h));
}
inline uint16_t f32_to_f16(float f) {
  const uint32_t b = f32_bits(f);
  const uint32_t sign = (b >> 16) & 0x8000u, exp = (b >> 23) & 0xffu;
  uint32_t mant = b & 0x7fffffu;
  if (exp == 0xff) return uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0u));
  const int e = int(exp) - 127 + 15;
  if (e >= 31) return uint16_t(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return uint16_t(sign);
    mant |= 0x800000u;
    const int shift = 14 - e;
    const uint32_t half = 1u << (shift - 1), rest = mant & ((1u << shift) - 1u);
    uint32_t r = mant >> shift;
    if (rest > half || (rest == half && (r & 1u))) r++;
    return uint16_t(sign | r);
  }
  const uint32_t rest = mant & 0x1fffu;
  uint32_t r = (uint32_t(e) << 10) | (mant >> 13);
  if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) r++;
  return uint16_t(sign | r);
}

enum Q4Type : int { Q4_NF4 = 0, Q4_FP4 = 1 };

// Value of each 4-bit code (codeValue in bnb4.ts): the NF4 levels; FP4 magnitudes / 12 with bit 3 the sign, so
// code 8 is -0.0 as in bitsandbytes' CUDA LUT.
const float* q4_code_values(int quantType);
// The same values as int16 for the int16-activation decode: round_half_even(value · 16384), |c| ≤ 16384.
const int16_t* q4_code_i16(int quantType);
constexpr float kQ4iXMax = 8191.f;  // |xq| ≤ 8191: 8 products of |c| ≤ 2^14 per int32 lane stay below 2^30

// A packed NF4/FP4 weight [N, K]: blocks of `blocksize` run over the flattened weight (a block may span two rows),
// two codes per byte, element 2i in the high nibble. The block scale is absmax[b], or with double quantization
// nested_map[qabsmax[b]] * nested_absmax[b / nested_blocksize] + offset (dequantizeNested in bnb4.ts).
struct Q4Weight {
  const uint8_t* packed;
  int64_t N, K, blocksize;
  const float* code;  // 16 values, q4_code_values(quantType)
  const int16_t* code16;  // the same as int16, q4_code_i16(quantType) (the int16-activation decode)
  const float* absmax;  // per block, or null with double quantization
  const uint8_t* qabsmax;
  const float* nested_absmax;
  const float* nested_map;
  int64_t nested_blocksize;
  float offset;
  int dtype;  // the weight's original dtype, which dequantize rounds to: W_F32, W_BF16 or W_F16
};

inline float q4_block_scale(const Q4Weight& w, int64_t b) {
  if (w.absmax) return w.absmax[b];
  // Two float32 roundings, as dequantizeBlockwise8 then `+ offset`: the volatile keeps the compiler from fusing
  // them into one FMA.
  const int64_t nb = w.nested_blocksize == 256 ? b >> 8 : b / w.nested_blocksize;  // 256: bitsandbytes' only size
  volatile float p = w.nested_map[w.qabsmax[b]] * w.nested_absmax[nb];
  return p + w.offset;
}

// lut[c] = the dequantized weight of code c in block b: value(c) · scale in float32, rounded to the original dtype
// (dequantize4bit / dequantize4bitRange), so the kernels multiply exactly the ref twin's weights.
inline void q4_lut(const Q4Weight& w, float s, float* lut) {
  for (int c = 0; c < 16; c++) {
    const float v = w.code[c] * s;
    lut[c] = w.dtype == W_BF16 ? round_bf16(v) : w.dtype == W_F16 ? f16_to_f32(f32_to_f16(v)) : v;
  }
}
inline void q4_block_lut(const Q4Weight& w, int64_t b, float* lut) { q4_lut(w, q4_block_scale(w, b), lut); }

}  // namespace lowbit
