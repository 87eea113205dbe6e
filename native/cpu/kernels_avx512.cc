// AVX-512 kernels (F + BW + VL + DQ). Compiled for that target by a pragma that covers only the code below the
// includes, so the rest of the addon stays baseline x86-64; dispatch.cc picks this table only when the CPU has it.
// Everything is in an anonymous namespace so no AVX-512 code can be merged (ODR) into baseline callers.
#include "dispatch.h"
#include "kernels.h"
#include "scratch.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
// GCC 12 flags the _mm512_undefined_* inside its own intrinsic headers; not our code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

namespace lowbit {
namespace {

inline __mmask16 tail_mask(int64_t r) { return __mmask16((1u << r) - 1u); }

// ---- exp: Cephes-style range reduction + degree-6 polynomial; scalef handles the 2^n (incl. underflow to 0).
inline __m512 vexp(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.f)), _mm512_set1_ps(88.7f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// ---- 32 weights → two f32 vectors. BF16 uses shift / mask on 32-bit lanes (no cross-lane shuffle): the low
// vector holds the even elements and the high one the odd elements, so x is de-interleaved to match (xperm_block).
struct LoadF32 {
  static void load(const void* p, int64_t k, __m512& lo, __m512& hi) {
    const float* f = static_cast<const float*>(p) + k;
    lo = _mm512_loadu_ps(f);
    hi = _mm512_loadu_ps(f + 16);
  }
  static constexpr int kBytes = 4;
};
struct LoadBF16 {
  static void load(const void* p, int64_t k, __m512& lo, __m512& hi) {
    __m512i v = _mm512_loadu_si512(static_cast<const uint16_t*>(p) + k);
    lo = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    hi = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xffff0000u))));
  }
  static constexpr int kBytes = 2;
};
struct LoadF16 {
  static void load(const void* p, int64_t k, __m512& lo, __m512& hi) {
    const uint16_t* h = static_cast<const uint16_t*>(p) + k;
    lo = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h)));
    hi = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + 16)));
  }
  static constexpr int kBytes = 2;
};

// Distance (bytes) the weight streams are prefetched ahead of use.
constexpr int64_t kPrefetch = 1024;

// R weight rows × MM x rows; S accumulator sets (2 when registers allow, to double the independent FMA chains).
template <class L, int MM, int R>
void gemv_rows(float* y, int64_t ldy, const float* x, int64_t ldx, const void* w, int wtype, int64_t n, int64_t K,
               const float* bias) {
  constexpr int S = MM <= 2 ? 2 : 1;
  __m512 acc[S][MM][R];
  for (int s = 0; s < S; s++)
    for (int m = 0; m < MM; m++)
      for (int r = 0; r < R; r++) acc[s][m][r] = _mm512_setzero_ps();
  const char* row[R];
  for (int r = 0; r < R; r++) row[r] = static_cast<const char*>(w) + (n + r) * K * L::kBytes;
  const int64_t K32 = K & ~int64_t(31);
  for (int64_t k = 0; k < K32; k += 32) {
    __m512 xl[MM], xh[MM];
    for (int m = 0; m < MM; m++) {
      xl[m] = _mm512_loadu_ps(x + m * ldx + k);
      xh[m] = _mm512_loadu_ps(x + m * ldx + k + 16);
    }
    for (int r = 0; r < R; r++) {
      _mm_prefetch(row[r] + k * L::kBytes + kPrefetch, _MM_HINT_T0);
      __m512 lo, hi;
      L::load(row[r], k, lo, hi);
      for (int m = 0; m < MM; m++) {
        acc[0][m][r] = _mm512_fmadd_ps(lo, xl[m], acc[0][m][r]);
        acc[S - 1][m][r] = _mm512_fmadd_ps(hi, xh[m], acc[S - 1][m][r]);
      }
    }
  }
  for (int m = 0; m < MM; m++)
    for (int r = 0; r < R; r++) {
      __m512 a = S == 2 ? _mm512_add_ps(acc[0][m][r], acc[S - 1][m][r]) : acc[0][m][r];
      float s = _mm512_reduce_add_ps(a);
      for (int64_t k = K32; k < K; k++) s += x[m * ldx + k] * widen1(row[r], wtype, k);
      y[m * ldy + n + r] = s + (bias ? bias[n + r] : 0.f);
    }
}

template <class L, int MM>
void gemv_l(float* y, int64_t ldy, const float* x, int64_t ldx, const void* w, int wtype, int64_t n0, int64_t n1,
            int64_t K, const float* bias) {
  // M=1 is pure streaming: 8 rows keep more independent memory streams in flight per thread.
  constexpr int R = MM == 1 ? 8 : 4;
  int64_t n = n0;
  for (; n + R <= n1; n += R) gemv_rows<L, MM, R>(y, ldy, x, ldx, w, wtype, n, K, bias);
  for (; n + 4 <= n1; n += 4) gemv_rows<L, MM, 4>(y, ldy, x, ldx, w, wtype, n, K, bias);
  for (; n < n1; n++) gemv_rows<L, MM, 1>(y, ldy, x, ldx, w, wtype, n, K, bias);
}

#include "gemv_dispatch.inc"  // gemv_m + gemv, compiled under this file's SIMD target

// ---- GEMM micro-kernel: MR rows broadcast from the packed X panel, NR = 2 vectors of the packed W panel;
// 2·MR accumulators cover FMA latency × 2 pipes with room to spare. KC=256 keeps the 32 KiB B panel in L1/L2
// boundary; measured better than 128 and 384 on Zen 4.
constexpr int MR = 8, NR = 32;

void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const float* bias, bool accumulate) {
  __m512 c0[MR], c1[MR];
  for (int i = 0; i < MR; i++) {
    if (accumulate) {
      c0[i] = _mm512_loadu_ps(c + i * ldc);
      c1[i] = _mm512_loadu_ps(c + i * ldc + 16);
    } else if (bias) {
      c0[i] = _mm512_loadu_ps(bias);
      c1[i] = _mm512_loadu_ps(bias + 16);
    } else {
      c0[i] = _mm512_setzero_ps();
      c1[i] = _mm512_setzero_ps();
    }
  }
  for (int64_t k = 0; k < kc; k++) {
    __m512 b0 = _mm512_loadu_ps(b + k * NR), b1 = _mm512_loadu_ps(b + k * NR + 16);
    _mm_prefetch(reinterpret_cast<const char*>(a + k * MR) + 512, _MM_HINT_T0);
    for (int i = 0; i < MR; i++) {
      __m512 ai = _mm512_set1_ps(a[k * MR + i]);
      c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
    }
  }
  for (int i = 0; i < MR; i++) {
    _mm512_storeu_ps(c + i * ldc, c0[i]);
    _mm512_storeu_ps(c + i * ldc + 16, c1[i]);
  }
}

// ---- W panel packing: 16 rows × 16 k widened into registers, transposed in registers, stored as 16 k-rows.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m512 s[16];  // s[4g + e], lane l: rows 4g..4g+3 of element 4l + e
  for (int g = 0; g < 4; g++) {
    s[4 * g + 0] = _mm512_shuffle_ps(t[4 * g + 0], t[4 * g + 2], 0x44);
    s[4 * g + 1] = _mm512_shuffle_ps(t[4 * g + 0], t[4 * g + 2], 0xEE);
    s[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    s[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
  for (int e = 0; e < 4; e++) {  // 4×4 transpose of 128-bit lanes
    __m512 P = _mm512_shuffle_f32x4(s[e], s[4 + e], 0x44), Q = _mm512_shuffle_f32x4(s[8 + e], s[12 + e], 0x44);
    __m512 R = _mm512_shuffle_f32x4(s[e], s[4 + e], 0xEE), S = _mm512_shuffle_f32x4(s[8 + e], s[12 + e], 0xEE);
    r[0 + e] = _mm512_shuffle_f32x4(P, Q, 0x88);
    r[4 + e] = _mm512_shuffle_f32x4(P, Q, 0xDD);
    r[8 + e] = _mm512_shuffle_f32x4(R, S, 0x88);
    r[12 + e] = _mm512_shuffle_f32x4(R, S, 0xDD);
  }
}

// Up to 16 weights of one row as f32 (masked: nothing past the row's end is touched).
inline __m512 load_row16(const void* w, int wtype, int64_t off, __mmask16 m) {
  if (wtype == W_F32) return _mm512_maskz_loadu_ps(m, static_cast<const float*>(w) + off);
  __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(w) + off);
  if (wtype == W_F16) return _mm512_cvtph_ps(h);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

void pack_b(float* b, const void* w, int wtype, int64_t K, int64_t n0, int64_t nr, int64_t k0, int64_t kc) {
  __m512 r[16];
  for (int64_t j0 = 0; j0 < NR; j0 += 16) {
    for (int64_t kb = 0; kb < kc; kb += 16) {
      const int64_t kn = kc - kb < 16 ? kc - kb : 16;
      const __mmask16 m = tail_mask(kn);
      for (int64_t j = 0; j < 16; j++)
        r[j] = j0 + j < nr ? load_row16(w, wtype, (n0 + j0 + j) * K + k0 + kb, m) : _mm512_setzero_ps();
      transpose16(r);
      for (int64_t i = 0; i < kn; i++) _mm512_storeu_ps(b + (kb + i) * NR + j0, r[i]);
    }
  }
}

// ---- vector helpers
void widen(float* dst, const void* src, int wtype, int64_t n) {
  int64_t i = 0;
  if (wtype == W_F32) {
    std::memcpy(dst, src, size_t(n) * 4);
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(src);
  if (wtype == W_BF16) {
    for (; i + 16 <= n; i += 16) {
      __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
      _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
    }
    for (; i < n; i++) dst[i] = bf16_to_f32(s[i]);
  } else {
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i))));
    for (; i < n; i++) dst[i] = f16_to_f32(s[i]);
  }
}

float dot(const float* a, const float* b, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
  }
  for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

void axpy(float* y, float a, const float* x, int64_t n) {
  __m512 va = _mm512_set1_ps(a);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

float vmax(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  if (i < n) m = _mm512_mask_max_ps(m, tail_mask(n - i), m, _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
  return _mm512_reduce_max_ps(m);
}

float exp_sum(float* y, const float* x, float sub, int64_t n) {
  __m512 vs = _mm512_set1_ps(sub), acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512 e = vexp(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
    _mm512_storeu_ps(y + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    __m512 e = vexp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
    _mm512_mask_storeu_ps(y + i, m, e);
    acc = _mm512_mask_add_ps(acc, m, acc, e);
  }
  return _mm512_reduce_add_ps(acc);
}

inline __m512 silu_mul_v(__m512 g, __m512 u) {
  __m512 e = vexp(_mm512_sub_ps(_mm512_setzero_ps(), g));
  return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.f), e)), u);
}

void silu_mul(float* y, const float* g, const float* u, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, silu_mul_v(_mm512_loadu_ps(g + i), _mm512_loadu_ps(u + i)));
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, silu_mul_v(_mm512_maskz_loadu_ps(m, g + i), _mm512_maskz_loadu_ps(m, u + i)));
  }
}

void add(float* y, const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)));
  }
}

void scale(float* y, const float* x, float s, int64_t n) {
  __m512 vs = _mm512_set1_ps(s);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), vs));
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
  }
}

// Vector primitives for the shared attention loops. 32 registers: up to 8 q vectors (hd 128) plus 2 accumulators.
struct Vec {
  using T = __m512;
  static constexpr int kLanes = 16, kAttnAcc = 2, kAttnMaxNV = 8;
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T mul(T a, T b) { return _mm512_mul_ps(a, b); }
  static T fmadd(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  static T set1(float x) { return _mm512_set1_ps(x); }
  static float hsum(T v) { return _mm512_reduce_add_ps(v); }
};

#include "attention_loops.inc"  // dots + wsum, compiled under this file's SIMD target

// NF4/FP4: the whole 16-entry LUT in one zmm; one vpermps per 16 codes. 32 codes (16 bytes) per step.
struct Q4Acc {
  static constexpr int64_t kStep = 32;
  __m512 a0, a1, lut;
  Q4Acc() { a0 = a1 = lut = _mm512_setzero_ps(); }  // explicit: see kernels_avx2.cc
  // round_dtype in SIMD, as in kernels_avx2.cc.
  void block(const Q4Weight& w, float s) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(w.code), _mm512_set1_ps(s));
    if (w.dtype == W_BF16) {
      const __m512i u = _mm512_castps_si512(v), hiMask = _mm512_set1_epi32(int(0xffff0000u));
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      const __m512i r = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), hiMask);
      const __m512i q = _mm512_or_si512(_mm512_and_si512(u, hiMask), _mm512_set1_epi32(0x00400000));
      lut = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_castsi512_ps(r), _mm512_castsi512_ps(q));
    } else if (w.dtype == W_F16) {
      lut = _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    } else {
      lut = v;
    }
  }
  void store(float* l) const { _mm512_storeu_ps(l, lut); }
  void run(const uint8_t* p, const float* x, int64_t n) {
    const __m128i m = _mm_set1_epi8(0x0f);
    for (int64_t i = 0; i < n; i += 32, p += 16, x += 32) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      const __m128i h = _mm_and_si128(_mm_srli_epi16(b, 4), m), l = _mm_and_si128(b, m);
      a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(h, l)), lut), _mm512_loadu_ps(x), a0);
      a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(h, l)), lut), _mm512_loadu_ps(x + 16), a1);
    }
  }
  float total() const { return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1)); }
  // The lookups of run, stored (elements in order: unpacklo/hi interleave each byte's high and low nibble).
  void put(const uint8_t* p, float* d, int64_t n) const {
    const __m128i m = _mm_set1_epi8(0x0f);
    for (int64_t i = 0; i < n; i += 32, p += 16, d += 32) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      const __m128i h = _mm_and_si128(_mm_srli_epi16(b, 4), m), l = _mm_and_si128(b, m);
      _mm512_storeu_ps(d, _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(h, l)), lut));
      _mm512_storeu_ps(d + 16, _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(h, l)), lut));
    }
  }
};

#include "q4_gemv.inc"
#include "q4i_x86.inc"  // NF4/FP4 decode with int16 activations: the AVX2 code under this file's target
#include "qg_x86.inc"   // GPTQ decode with int16 activations: the AVX2 code under this file's target

// LLM.int8: the AVX2 code (256-bit vpmaddubsw), compiled here under this file's target. No AVX-512 machine was at hand
// to tune or time a 512-bit version (vpmaddubsw zmm, or vpdpbusd where AVX512-VNNI exists, which dispatch.cc does not
// probe yet); decode is memory-bound either way, so only prefill would gain.
#include "int8_x86.inc"

#include "qg_vnni.inc"  // GPTQ/AWQ 2/3/4-bit decode with vpdpbusd, for CPUs with AVX512-VNNI

const Kernels kTable = {"avx512", 32, gemv, MR, NR, 256, pack_b, micro, widen, dot, axpy, vmax, exp_sum, silu_mul, add, scale, dots, wsum, gemv_q4, dequant_q4,
                        kQ4iOrder, gemv_q4i,
                        kQgOrder, gemv_qg, dot_i8, i8_absmax_f16, i8_quant};
// The same table with the VNNI group-quantized GEMV (x in qg_prep's pair layout where qg_pairs says so).
const Kernels kTableVnni = {"avx512", 32, gemv, MR, NR, 256, pack_b, micro, widen, dot, axpy, vmax, exp_sum, silu_mul, add, scale, dots, wsum, gemv_q4, dequant_q4,
                            kQ4iOrder, gemv_q4i,
                            kQgOrder, gemv_qg_vnni, dot_i8, i8_absmax_f16, i8_quant, true};

}  // namespace
}  // namespace lowbit

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace lowbit {
const Kernels* kernels_avx512() {
  static const bool vnni = cpu_features().avx512vnni;
  return vnni ? &kTableVnni : &kTable;
}
}  // namespace lowbit

#else  // not x86-64
namespace lowbit {
const Kernels* kernels_avx512() { return nullptr; }
}
#endif
