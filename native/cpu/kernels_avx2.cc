// AVX2 + FMA + F16C kernels (Haswell / Zen 1 and later). Same structure as kernels_avx512.cc with 8-lane vectors
// and 16 registers, so the GEMV row blocking and the micro-kernel shape are smaller.
#include "kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "scratch.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace lowbit {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 vexp(__m256 x0) {
  const __m256 lo = _mm256_set1_ps(-87.33654f);
  __m256 x = _mm256_min_ps(_mm256_max_ps(x0, lo), _mm256_set1_ps(88.3762626647949f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 res = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(_mm256_cmp_ps(x0, lo, _CMP_LT_OQ), res);  // underflow (and -inf) → 0
}

// 16 weights → two f32 vectors; BF16 even/odd split as in the AVX-512 file (x de-interleaved in blocks of 16).
struct LoadF32 {
  static void load(const void* p, int64_t k, __m256& lo, __m256& hi) {
    const float* f = static_cast<const float*>(p) + k;
    lo = _mm256_loadu_ps(f);
    hi = _mm256_loadu_ps(f + 8);
  }
  static constexpr int kBytes = 4;
};
struct LoadBF16 {
  static void load(const void* p, int64_t k, __m256& lo, __m256& hi) {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + k));
    lo = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    hi = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xffff0000u))));
  }
  static constexpr int kBytes = 2;
};
struct LoadF16 {
  static void load(const void* p, int64_t k, __m256& lo, __m256& hi) {
    const uint16_t* h = static_cast<const uint16_t*>(p) + k;
    lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
    hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 8)));
  }
  static constexpr int kBytes = 2;
};

constexpr int64_t kPrefetch = 512;

template <class L, int MM, int R>
void gemv_rows(float* y, int64_t ldy, const float* x, int64_t ldx, const void* w, int wtype, int64_t n, int64_t K,
               const float* bias) {
  constexpr int S = MM == 1 ? 2 : 1;
  __m256 acc[S][MM][R];
  for (int s = 0; s < S; s++)
    for (int m = 0; m < MM; m++)
      for (int r = 0; r < R; r++) acc[s][m][r] = _mm256_setzero_ps();
  const char* row[R];
  for (int r = 0; r < R; r++) row[r] = static_cast<const char*>(w) + (n + r) * K * L::kBytes;
  const int64_t K16 = K & ~int64_t(15);
  for (int64_t k = 0; k < K16; k += 16) {
    for (int r = 0; r < R; r++) {
      _mm_prefetch(row[r] + k * L::kBytes + kPrefetch, _MM_HINT_T0);
      __m256 lo, hi;
      L::load(row[r], k, lo, hi);
      for (int m = 0; m < MM; m++) {
        acc[0][m][r] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + m * ldx + k), acc[0][m][r]);
        acc[S - 1][m][r] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + m * ldx + k + 8), acc[S - 1][m][r]);
      }
    }
  }
  for (int m = 0; m < MM; m++)
    for (int r = 0; r < R; r++) {
      float s = hsum(S == 2 ? _mm256_add_ps(acc[0][m][r], acc[S - 1][m][r]) : acc[0][m][r]);
      for (int64_t k = K16; k < K; k++) s += x[m * ldx + k] * widen1(row[r], wtype, k);
      y[m * ldy + n + r] = s + (bias ? bias[n + r] : 0.f);
    }
}

template <class L, int MM>
void gemv_l(float* y, int64_t ldy, const float* x, int64_t ldx, const void* w, int wtype, int64_t n0, int64_t n1,
            int64_t K, const float* bias) {
  constexpr int R = MM <= 2 ? 4 : 2;
  int64_t n = n0;
  for (; n + R <= n1; n += R) gemv_rows<L, MM, R>(y, ldy, x, ldx, w, wtype, n, K, bias);
  for (; n < n1; n++) gemv_rows<L, MM, 1>(y, ldy, x, ldx, w, wtype, n, K, bias);
}

#include "gemv_dispatch.inc"  // gemv_m + gemv, compiled under this file's SIMD target

// 6×16 micro-kernel: 12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16 ymm registers.
constexpr int MR = 6, NR = 16;

// Named accumulators rather than arrays: with 15 of 16 registers live, GCC 12 keeps array elements mirrored on
// the stack (a store per FMA); separate variables stay in registers.
void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const float* bias, bool accumulate) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
#define LB_INIT(i)                                                                   \
  if (accumulate) {                                                                 \
    c##i##0 = _mm256_loadu_ps(c + i * ldc);                                         \
    c##i##1 = _mm256_loadu_ps(c + i * ldc + 8);                                     \
  } else if (bias) {                                                                \
    c##i##0 = _mm256_loadu_ps(bias);                                                \
    c##i##1 = _mm256_loadu_ps(bias + 8);                                            \
  } else {                                                                          \
    c##i##0 = _mm256_setzero_ps();                                                  \
    c##i##1 = _mm256_setzero_ps();                                                  \
  }
  LB_INIT(0) LB_INIT(1) LB_INIT(2) LB_INIT(3) LB_INIT(4) LB_INIT(5)
#undef LB_INIT
  for (int64_t k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_loadu_ps(b + k * NR), b1 = _mm256_loadu_ps(b + k * NR + 8);
    const float* ak = a + k * MR;
    __m256 ai;
#define LB_STEP(i)                          \
  ai = _mm256_broadcast_ss(ak + i);         \
  c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0); \
  c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);
    LB_STEP(0) LB_STEP(1) LB_STEP(2) LB_STEP(3) LB_STEP(4) LB_STEP(5)
#undef LB_STEP
  }
#define LB_STORE(i)                             \
  _mm256_storeu_ps(c + i * ldc, c##i##0);       \
  _mm256_storeu_ps(c + i * ldc + 8, c##i##1);
  LB_STORE(0) LB_STORE(1) LB_STORE(2) LB_STORE(3) LB_STORE(4) LB_STORE(5)
#undef LB_STORE
}

// W panel packing: 8 rows × 8 k widened, transposed in registers, stored as 8 k-rows.
inline void transpose8(__m256 r[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; i++) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 2; g++) {
    u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g + 0], t[4 * g + 2], 0x44);
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g + 0], t[4 * g + 2], 0xEE);
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int e = 0; e < 4; e++) {
    r[e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x20);
    r[4 + e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x31);
  }
}

void pack_b(float* b, const void* w, int wtype, int64_t K, int64_t n0, int64_t nr, int64_t k0, int64_t kc) {
  __m256 r[8];
  float tmp[8];
  for (int64_t j0 = 0; j0 < NR; j0 += 8) {
    for (int64_t kb = 0; kb < kc; kb += 8) {
      const int64_t kn = kc - kb < 8 ? kc - kb : 8;
      for (int64_t j = 0; j < 8; j++) {
        if (j0 + j >= nr) { r[j] = _mm256_setzero_ps(); continue; }
        const int64_t off = (n0 + j0 + j) * K + k0 + kb;
        if (kn == 8 && wtype == W_F32) r[j] = _mm256_loadu_ps(static_cast<const float*>(w) + off);
        else if (kn == 8 && wtype == W_F16) r[j] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + off)));
        else if (kn == 8) r[j] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + off))), 16));
        else {
          for (int64_t i = 0; i < 8; i++) tmp[i] = i < kn ? widen1(w, wtype, off + i) : 0.f;
          r[j] = _mm256_loadu_ps(tmp);
        }
      }
      transpose8(r);
      for (int64_t i = 0; i < kn; i++) _mm256_storeu_ps(b + (kb + i) * NR + j0, r[i]);
    }
  }
}

void widen(float* dst, const void* src, int wtype, int64_t n) {
  int64_t i = 0;
  if (wtype == W_F32) {
    std::memcpy(dst, src, size_t(n) * 4);
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(src);
  if (wtype == W_BF16) {
    for (; i + 8 <= n; i += 8) {
      __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
    }
    for (; i < n; i++) dst[i] = bf16_to_f32(s[i]);
  } else {
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
    for (; i < n; i++) dst[i] = f16_to_f32(s[i]);
  }
}

float dot(const float* a, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float r = hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; i++) r += a[i] * b[i];
  return r;
}

void axpy(float* y, float a, const float* x, int64_t n) {
  __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += a * x[i];
}

float vmax(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  float r = _mm_cvtss_f32(h);
  for (; i < n; i++) r = x[i] > r ? x[i] : r;
  return r;
}

float exp_sum(float* y, const float* x, float sub, int64_t n) {
  __m256 vs = _mm256_set1_ps(sub), acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e = vexp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
    _mm256_storeu_ps(y + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float s = hsum(acc);
  if (i < n) {  // the tail goes through the same polynomial so every element is computed alike
    float tx[8] = {0}, ty[8];
    for (int64_t j = i; j < n; j++) tx[j - i] = x[j] - sub;
    _mm256_storeu_ps(ty, vexp(_mm256_loadu_ps(tx)));
    for (int64_t j = i; j < n; j++) { y[j] = ty[j - i]; s += ty[j - i]; }
  }
  return s;
}

inline __m256 silu_mul_v(__m256 g, __m256 u) {
  __m256 e = vexp(_mm256_sub_ps(_mm256_setzero_ps(), g));
  return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.f), e)), u);
}

void silu_mul(float* y, const float* g, const float* u, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, silu_mul_v(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
  if (i < n) {
    float tg[8] = {0}, tu[8] = {0}, ty[8];
    for (int64_t j = i; j < n; j++) { tg[j - i] = g[j]; tu[j - i] = u[j]; }
    _mm256_storeu_ps(ty, silu_mul_v(_mm256_loadu_ps(tg), _mm256_loadu_ps(tu)));
    for (int64_t j = i; j < n; j++) y[j] = ty[j - i];
  }
}

void add(float* y, const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  for (; i < n; i++) y[i] = a[i] + b[i];
}

void scale(float* y, const float* x, float s, int64_t n) {
  __m256 vs = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
  for (; i < n; i++) y[i] = x[i] * s;
}

// Vector primitives for the shared attention loops. 16 registers: up to 8 q vectors (hd 64) plus 2 accumulators;
// hd 128 would spill q, so it takes the general dot/axpy path.
struct Vec {
  using T = __m256;
  static constexpr int kLanes = 8, kAttnAcc = 2, kAttnMaxNV = 8;
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T mul(T a, T b) { return _mm256_mul_ps(a, b); }
  static T fmadd(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T set1(float x) { return _mm256_set1_ps(x); }
  static float hsum(T v) { return lowbit::hsum(v); }
};

#include "attention_loops.inc"  // dots + wsum, compiled under this file's SIMD target

// NF4/FP4: the 16-entry LUT as two 8-float halves; vpermps looks a code's low 3 bits up in both halves and bit 3
// (moved to the sign bit) blends between them. 32 codes (16 bytes) per step.
// 8 codes = 4 bytes, broadcast to every lane; per-lane shifts put lane j's code (element order: byte k's high
// nibble, then its low one) in bits 0..2 for vpermps (which ignores the bits above) and its bit 3 at bit 31 for
// the blend. No shuffle-port work besides the two vpermps.
inline __m256 q4_look(__m256 lo, __m256 hi, const uint8_t* p) {
  int32_t word;
  std::memcpy(&word, p, 4);
  const __m256i v = _mm256_set1_epi32(word);
  const __m256i idx = _mm256_srlv_epi32(v, _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24));
  const __m256i sel = _mm256_sllv_epi32(v, _mm256_setr_epi32(24, 28, 16, 20, 8, 12, 0, 4));
  return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx), _mm256_castsi256_ps(sel));
}

struct Q4Acc {
  static constexpr int64_t kStep = 32;
  __m256 a0, a1, a2, a3, lo, hi;
  // An explicit constructor: GCC gives an implicit one no target attribute, so it could not inline the intrinsics.
  Q4Acc() { a0 = a1 = a2 = a3 = lo = hi = _mm256_setzero_ps(); }
  // round_dtype in SIMD: bf16 as f32ToBf16 (half to even; NaN quieted), f16 through F16C (round to nearest even).
  static __m256 round_to(__m256 v, int dtype) {
    if (dtype == W_BF16) {
      const __m256i u = _mm256_castps_si256(v), hiMask = _mm256_set1_epi32(int(0xffff0000u));
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
      const __m256i r = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), hiMask);
      const __m256i q = _mm256_or_si256(_mm256_and_si256(u, hiMask), _mm256_set1_epi32(0x00400000));
      return _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(q), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    if (dtype == W_F16) return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    return v;
  }
  void block(const Q4Weight& w, float s) {
    const __m256 sv = _mm256_set1_ps(s);
    lo = round_to(_mm256_mul_ps(_mm256_loadu_ps(w.code), sv), w.dtype);
    hi = round_to(_mm256_mul_ps(_mm256_loadu_ps(w.code + 8), sv), w.dtype);
  }
  void store(float* l) const { _mm256_storeu_ps(l, lo); _mm256_storeu_ps(l + 8, hi); }
  __m256 look(__m256i idx) const {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                            _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
  }
  __m256 look4(const uint8_t* p) const { return q4_look(lo, hi, p); }
  void run(const uint8_t* p, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; i += 32, p += 16, x += 32) {
      a0 = _mm256_fmadd_ps(look4(p), _mm256_loadu_ps(x), a0);
      a1 = _mm256_fmadd_ps(look4(p + 4), _mm256_loadu_ps(x + 8), a1);
      a2 = _mm256_fmadd_ps(look4(p + 8), _mm256_loadu_ps(x + 16), a2);
      a3 = _mm256_fmadd_ps(look4(p + 12), _mm256_loadu_ps(x + 24), a3);
    }
  }
  float total() const { return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3))); }
  void put(const uint8_t* p, float* d, int64_t n) const {
    for (int64_t i = 0; i < n; i += 8, p += 4) _mm256_storeu_ps(d + i, look4(p));
  }
};

#include "q4_gemv.inc"
#include "q4i_x86.inc"  // NF4/FP4 decode with int16 activations (gemv_q4i) and q4_scales
#include "qg_x86.inc"   // GPTQ 2/3/4/8-bit decode with int16 activations (gemv_qg)

// The aligned fast paths (K a multiple of the block size, block size a multiple of 32, so every row starts on a
// byte and holds whole blocks; anything else takes the generic walk of q4_gemv.inc). This is the exact GEMV
// (round_dtype(code·s) weights, bit for bit the dequantized ones); decode normally takes gemv_q4i (q4i_x86.inc) and
// comes here only for x rows holding a NaN or an infinity. The vpermps walk: two output rows per pass share
// each x load; the rows' block scales are computed once into a small scratch before the walk, off the lookups'
// path. With float32 weights (no dtype rounding) no per-block LUT is built at all: the 16 code values stay in two
// registers for the call, each block's partial dot product Σ code·x is accumulated unscaled and multiplied by the
// scale once per block (s·Σ code·x differs from Σ (code·s)·x by float32 rounding only). bf16/f16 weights need
// round_dtype(code·s) per block, so there the LUT is built per block as in Q4Acc (without the NaN blend when the
// row's scales are all finite: |code| <= 1, so code·s is finite too).
inline __m256 q4_round_bf16_finite(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  return _mm256_castsi256_ps(
      _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), _mm256_set1_epi32(int(0xffff0000u))));
}
inline void q4_lut_regs(const Q4Weight& w, __m256 clo, __m256 chi, float s, bool finite, __m256& lo, __m256& hi) {
  const __m256 sv = _mm256_set1_ps(s);
  lo = _mm256_mul_ps(clo, sv);
  hi = _mm256_mul_ps(chi, sv);
  if (w.dtype == W_BF16 && finite) {
    lo = q4_round_bf16_finite(lo);
    hi = q4_round_bf16_finite(hi);
  } else {
    lo = Q4Acc::round_to(lo, w.dtype);
    hi = Q4Acc::round_to(hi, w.dtype);
  }
}
void gemv_q4_fast(float* y, const float* x, const Q4Weight& w, int64_t n0, int64_t n1, const float* bias) {
  const int64_t K = w.K, bs = w.blocksize;
  if (K % bs || bs % 32) {
    gemv_q4(y, x, w, n0, n1, bias);
    return;
  }
  const int64_t nbr = K / bs;
  constexpr int64_t kChunk = 256;  // blocks whose scales sit in the scratch at once, per row
  alignas(32) float sc0[kChunk], sc1[kChunk];
  const __m256 clo = _mm256_loadu_ps(w.code), chi = _mm256_loadu_ps(w.code + 8);
  const bool f32 = w.dtype == W_F32;
  int64_t n = n0;
  for (; n + 2 <= n1; n += 2) {
    const uint8_t* p0 = w.packed + n * (K / 2);
    const uint8_t* p1 = p0 + K / 2;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, c0 = a0, c1 = a0;
    for (int64_t bc = 0; bc < nbr; bc += kChunk) {
      const int64_t nb = std::min(kChunk, nbr - bc);
      const bool finite = q4_scales(w, n * nbr + bc, nb, sc0) & q4_scales(w, (n + 1) * nbr + bc, nb, sc1);
      const float* xb = x + bc * bs;
      for (int64_t j = 0; j < nb; j++) {
        if (f32) {
          __m256 t0 = _mm256_setzero_ps(), t1 = t0, u0 = t0, u1 = t0;
          for (int64_t i = 0; i < bs; i += 16, p0 += 8, p1 += 8, xb += 16) {
            const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
            t0 = _mm256_fmadd_ps(q4_look(clo, chi, p0), x0, t0);
            t1 = _mm256_fmadd_ps(q4_look(clo, chi, p0 + 4), x1, t1);
            u0 = _mm256_fmadd_ps(q4_look(clo, chi, p1), x0, u0);
            u1 = _mm256_fmadd_ps(q4_look(clo, chi, p1 + 4), x1, u1);
          }
          const __m256 s0 = _mm256_set1_ps(sc0[j]), s1 = _mm256_set1_ps(sc1[j]);
          a0 = _mm256_fmadd_ps(t0, s0, a0);
          a1 = _mm256_fmadd_ps(t1, s0, a1);
          c0 = _mm256_fmadd_ps(u0, s1, c0);
          c1 = _mm256_fmadd_ps(u1, s1, c1);
        } else {
          __m256 lo0, hi0, lo1, hi1;
          q4_lut_regs(w, clo, chi, sc0[j], finite, lo0, hi0);
          q4_lut_regs(w, clo, chi, sc1[j], finite, lo1, hi1);
          for (int64_t i = 0; i < bs; i += 16, p0 += 8, p1 += 8, xb += 16) {
            const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
            a0 = _mm256_fmadd_ps(q4_look(lo0, hi0, p0), x0, a0);
            a1 = _mm256_fmadd_ps(q4_look(lo0, hi0, p0 + 4), x1, a1);
            c0 = _mm256_fmadd_ps(q4_look(lo1, hi1, p1), x0, c0);
            c1 = _mm256_fmadd_ps(q4_look(lo1, hi1, p1 + 4), x1, c1);
          }
        }
      }
    }
    y[n] = hsum(_mm256_add_ps(a0, a1)) + (bias ? bias[n] : 0.f);
    y[n + 1] = hsum(_mm256_add_ps(c0, c1)) + (bias ? bias[n + 1] : 0.f);
  }
  if (n < n1) gemv_q4(y, x, w, n, n1, bias);
}

#include "int8_x86.inc"  // LLM.int8: dot_i8, i8_absmax_f16, i8_quant, compiled under this file's SIMD target

const Kernels kTable = {"avx2", 16, gemv, MR, NR, 256, pack_b, micro, widen, dot, axpy, vmax, exp_sum, silu_mul, add, scale, dots, wsum, gemv_q4_fast, dequant_q4,
                        kQ4iOrder, gemv_q4i,
                        kQgOrder, gemv_qg, dot_i8, i8_absmax_f16, i8_quant};

}  // namespace
}  // namespace lowbit

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace lowbit {
const Kernels* kernels_avx2() { return &kTable; }
}  // namespace lowbit

#else  // not x86-64
namespace lowbit {
const Kernels* kernels_avx2() { return nullptr; }
}
#endif
