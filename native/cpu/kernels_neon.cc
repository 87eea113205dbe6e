// NEON (AArch64 ASIMD) kernels: the baseline of every AArch64 CPU, so no run-time feature test beyond "this is
// aarch64". Same structure as kernels_avx2.cc with 4-lane vectors and 32 registers: bf16 widens in order with a
// 16-bit shift (no x de-interleave, xperm_block = 0), f16 with FCVTL, the GEMM micro-kernel is 8×12 (24
// accumulators) over its own K-major [kc][12] panels. exp is range-extended so that overflow gives inf, deep
// underflow gives 0 and NaN stays NaN, as std::exp does in the scalar oracle; max ignores NaN like the scalar loop.
// Verified against kernels_scalar.cc under qemu-aarch64 by test/run_neon_check.sh (no native ARM run yet).
// On other architectures this file compiles to kernels_neon() == nullptr ("not this architecture").
#include "kernels.h"
#include "scratch.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#include <algorithm>
#include <cmath>

namespace lowbit {
namespace {

// ---- loads: 4 or 8 weights widened to f32 (lanes in memory order)
inline float32x4_t bf16x4(const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }
inline float32x4_t f16x4(const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }

struct LoadF32 {
  static void load(const void* p, int64_t k, float32x4_t& lo, float32x4_t& hi) {
    const float* f = static_cast<const float*>(p) + k;
    lo = vld1q_f32(f);
    hi = vld1q_f32(f + 4);
  }
  static constexpr int kBytes = 4;
};
struct LoadBF16 {
  static void load(const void* p, int64_t k, float32x4_t& lo, float32x4_t& hi) {
    const uint16x8_t v = vld1q_u16(static_cast<const uint16_t*>(p) + k);
    lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(v), 16));
    hi = vreinterpretq_f32_u32(vshll_high_n_u16(v, 16));
  }
  static constexpr int kBytes = 2;
};
struct LoadF16 {
  static void load(const void* p, int64_t k, float32x4_t& lo, float32x4_t& hi) {
    const float16x8_t v = vreinterpretq_f16_u16(vld1q_u16(static_cast<const uint16_t*>(p) + k));
    lo = vcvt_f32_f16(vget_low_f16(v));
    hi = vcvt_high_f32_f16(v);
  }
  static constexpr int kBytes = 2;
};

// exp(x) for every float: Cephes polynomial on r = x - n·ln2, and 2^n applied as two factors 2^(n>>1)·2^(n-(n>>1))
// so that n in [-150, 128] stays representable: results overflow to inf and round into the subnormals as exp does.
inline float32x4_t vexp(float32x4_t x0) {
  const float32x4_t lo = vdupq_n_f32(-104.f);  // exp(-104) < 2^-150 rounds to 0
  float32x4_t x = vminq_f32(vmaxq_f32(x0, lo), vdupq_n_f32(88.8f));  // FMAX/FMIN propagate NaN
  float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.9875691500E-4f);
  p = vfmaq_f32(vdupq_n_f32(1.3981999507E-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073E-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894E-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459E-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201E-1f), p, r);
  p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.f)), p, vmulq_f32(r, r));
  const int32x4_t ni = vcvtq_s32_f32(n), n1 = vshrq_n_s32(ni, 1), n2 = vsubq_s32(ni, n1);
  const int32x4_t bias = vdupq_n_s32(127);
  const float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23));
  const float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23));
  const float32x4_t res = vmulq_f32(vmulq_f32(p, s1), s2);
  return vbslq_f32(vcltq_f32(x0, lo), vdupq_n_f32(0.f), res);  // below -104 (and -inf) → 0; the clamp alone rounds to 0 too
}

// ---- GEMV: R weight rows × MM x rows per pass, 8 k per step (two vectors per row); for M = 1 the two halves keep
// separate accumulators so there are always at least 8 independent FMA chains.
template <class L, int MM, int R>
void gemv_rows(float* y, int64_t ldy, const float* x, int64_t ldx, const void* w, int wtype, int64_t n, int64_t K,
               const float* bias) {
  constexpr int S = MM == 1 ? 2 : 1;
  float32x4_t acc[S][MM][R];
  for (int s = 0; s < S; s++)
    for (int m = 0; m < MM; m++)
      for (int r = 0; r < R; r++) acc[s][m][r] = vdupq_n_f32(0.f);
  const char* row[R];
  for (int r = 0; r < R; r++) row[r] = static_cast<const char*>(w) + (n + r) * K * L::kBytes;
  const int64_t K8 = K & ~int64_t(7);
  for (int64_t k = 0; k < K8; k += 8) {
    float32x4_t xl[MM], xh[MM];
    for (int m = 0; m < MM; m++) {
      xl[m] = vld1q_f32(x + m * ldx + k);
      xh[m] = vld1q_f32(x + m * ldx + k + 4);
    }
    for (int r = 0; r < R; r++) {
      __builtin_prefetch(row[r] + k * L::kBytes + 512);
      float32x4_t lo, hi;
      L::load(row[r], k, lo, hi);
      for (int m = 0; m < MM; m++) {
        acc[0][m][r] = vfmaq_f32(acc[0][m][r], lo, xl[m]);
        acc[S - 1][m][r] = vfmaq_f32(acc[S - 1][m][r], hi, xh[m]);
      }
    }
  }
  for (int m = 0; m < MM; m++)
    for (int r = 0; r < R; r++) {
      float s = vaddvq_f32(S == 2 ? vaddq_f32(acc[0][m][r], acc[S - 1][m][r]) : acc[0][m][r]);
      for (int64_t k = K8; k < K; k++) s += x[m * ldx + k] * widen1(row[r], wtype, k);
      y[m * ldy + n + r] = s + (bias ? bias[n + r] : 0.f);
    }
}

template <class L, int MM>
void gemv_l(float* y, int64_t ldy, const float* x, int64_t ldx, const void* w, int wtype, int64_t n0, int64_t n1,
            int64_t K, const float* bias) {
  constexpr int R = 4;  // MM = 4: 16 accumulators + 8 x vectors + 2 weight vectors of the 32 registers
  int64_t n = n0;
  for (; n + R <= n1; n += R) gemv_rows<L, MM, R>(y, ldy, x, ldx, w, wtype, n, K, bias);
  for (; n < n1; n++) gemv_rows<L, MM, 1>(y, ldy, x, ldx, w, wtype, n, K, bias);
}

#include "gemv_dispatch.inc"  // gemv_m + gemv, compiled under this file's SIMD target

// ---- GEMM: 8×12 micro-kernel. Per k: two A vectors (8 rows) and three B vectors (12 columns), 24 FMAs by lane.
constexpr int MR = 8, NR = 12;

void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const float* bias, bool accumulate) {
  float32x4_t acc[MR][3];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < 3; j++)
      acc[i][j] = accumulate ? vld1q_f32(c + i * ldc + 4 * j) : bias ? vld1q_f32(bias + 4 * j) : vdupq_n_f32(0.f);
  for (int64_t k = 0; k < kc; k++) {
    const float32x4_t b0 = vld1q_f32(b + k * NR), b1 = vld1q_f32(b + k * NR + 4), b2 = vld1q_f32(b + k * NR + 8);
    const float32x4_t a0 = vld1q_f32(a + k * MR), a1 = vld1q_f32(a + k * MR + 4);
#define LB_ROW(i, av, l)                                 \
  acc[i][0] = vfmaq_laneq_f32(acc[i][0], b0, av, l);     \
  acc[i][1] = vfmaq_laneq_f32(acc[i][1], b1, av, l);     \
  acc[i][2] = vfmaq_laneq_f32(acc[i][2], b2, av, l);
    LB_ROW(0, a0, 0) LB_ROW(1, a0, 1) LB_ROW(2, a0, 2) LB_ROW(3, a0, 3)
    LB_ROW(4, a1, 0) LB_ROW(5, a1, 1) LB_ROW(6, a1, 2) LB_ROW(7, a1, 3)
#undef LB_ROW
  }
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < 3; j++) vst1q_f32(c + i * ldc + 4 * j, acc[i][j]);
}

inline void transpose4(float32x4_t& r0, float32x4_t& r1, float32x4_t& r2, float32x4_t& r3) {
  const float32x4_t t0 = vtrn1q_f32(r0, r1), t1 = vtrn2q_f32(r0, r1), t2 = vtrn1q_f32(r2, r3), t3 = vtrn2q_f32(r2, r3);
  r0 = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
  r1 = vreinterpretq_f32_f64(vtrn1q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
  r2 = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t0), vreinterpretq_f64_f32(t2)));
  r3 = vreinterpretq_f32_f64(vtrn2q_f64(vreinterpretq_f64_f32(t1), vreinterpretq_f64_f32(t3)));
}

// W panel: per group of 4 columns and 8 k, load 4 rows × 8 k widened, transpose as two 4×4 blocks, store 8 k-rows.
void pack_b(float* b, const void* w, int wtype, int64_t K, int64_t n0, int64_t nr, int64_t k0, int64_t kc) {
  float tmp[8];
  for (int64_t j0 = 0; j0 < NR; j0 += 4) {
    for (int64_t kb = 0; kb < kc; kb += 8) {
      const int64_t kn = kc - kb < 8 ? kc - kb : 8;
      float32x4_t lo[4], hi[4];
      for (int64_t j = 0; j < 4; j++) {
        if (j0 + j >= nr) { lo[j] = hi[j] = vdupq_n_f32(0.f); continue; }
        const int64_t off = (n0 + j0 + j) * K + k0 + kb;
        if (kn == 8 && wtype == W_F32) LoadF32::load(w, off, lo[j], hi[j]);
        else if (kn == 8 && wtype == W_BF16) LoadBF16::load(w, off, lo[j], hi[j]);
        else if (kn == 8) LoadF16::load(w, off, lo[j], hi[j]);
        else {
          for (int64_t i = 0; i < 8; i++) tmp[i] = i < kn ? widen1(w, wtype, off + i) : 0.f;
          lo[j] = vld1q_f32(tmp);
          hi[j] = vld1q_f32(tmp + 4);
        }
      }
      transpose4(lo[0], lo[1], lo[2], lo[3]);
      transpose4(hi[0], hi[1], hi[2], hi[3]);
      for (int64_t i = 0; i < kn; i++) vst1q_f32(b + (kb + i) * NR + j0, i < 4 ? lo[i] : hi[i - 4]);
    }
  }
}

// ---- vector helpers
void widen(float* dst, const void* src, int wtype, int64_t n) {
  if (wtype == W_F32) {
    std::memcpy(dst, src, size_t(n) * 4);
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (wtype == W_BF16) {
    for (; i + 8 <= n; i += 8) {
      float32x4_t lo, hi;
      LoadBF16::load(s, i, lo, hi);
      vst1q_f32(dst + i, lo);
      vst1q_f32(dst + i + 4, hi);
    }
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, bf16x4(s + i));
    for (; i < n; i++) dst[i] = bf16_to_f32(s[i]);
  } else {
    for (; i + 8 <= n; i += 8) {
      float32x4_t lo, hi;
      LoadF16::load(s, i, lo, hi);
      vst1q_f32(dst + i, lo);
      vst1q_f32(dst + i + 4, hi);
    }
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, f16x4(s + i));
    for (; i < n; i++) dst[i] = f16_to_f32(s[i]);
  }
}

float dot(const float* a, const float* b, int64_t n) {
  float32x4_t s0 = vdupq_n_f32(0.f), s1 = s0, s2 = s0, s3 = s0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
    s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
  }
  for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
  float r = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
  for (; i < n; i++) r += a[i] * b[i];
  return r;
}

void axpy(float* y, float a, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
    vst1q_f32(y + i + 4, vfmaq_n_f32(vld1q_f32(y + i + 4), vld1q_f32(x + i + 4), a));
  }
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
  for (; i < n; i++) y[i] += a * x[i];
}

// The scalar loop's m = x > m ? x : m per lane (compare + select), so NaNs are skipped rather than propagated.
float vmax(const float* x, int64_t n) {
  float32x4_t m = vdupq_n_f32(-INFINITY);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t v = vld1q_f32(x + i);
    m = vbslq_f32(vcgtq_f32(v, m), v, m);
  }
  float lanes[4], r = -INFINITY;
  vst1q_f32(lanes, m);
  for (int l = 0; l < 4; l++) r = lanes[l] > r ? lanes[l] : r;
  for (; i < n; i++) r = x[i] > r ? x[i] : r;
  return r;
}

float exp_sum(float* y, const float* x, float sub, int64_t n) {
  const float32x4_t vs = vdupq_n_f32(sub);
  float32x4_t acc = vdupq_n_f32(0.f);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float32x4_t e = vexp(vsubq_f32(vld1q_f32(x + i), vs));
    vst1q_f32(y + i, e);
    acc = vaddq_f32(acc, e);
  }
  float s = vaddvq_f32(acc);
  if (i < n) {  // the tail goes through the same polynomial so every element is computed alike
    float tx[4] = {0, 0, 0, 0}, ty[4];
    for (int64_t j = i; j < n; j++) tx[j - i] = x[j] - sub;
    vst1q_f32(ty, vexp(vld1q_f32(tx)));
    for (int64_t j = i; j < n; j++) { y[j] = ty[j - i]; s += ty[j - i]; }
  }
  return s;
}

inline float32x4_t silu_mul_v(float32x4_t g, float32x4_t u) {
  const float32x4_t e = vexp(vnegq_f32(g));
  return vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.f), e)), u);
}

void silu_mul(float* y, const float* g, const float* u, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, silu_mul_v(vld1q_f32(g + i), vld1q_f32(u + i)));
  if (i < n) {
    float tg[4] = {0, 0, 0, 0}, tu[4] = {0, 0, 0, 0}, ty[4];
    for (int64_t j = i; j < n; j++) { tg[j - i] = g[j]; tu[j - i] = u[j]; }
    vst1q_f32(ty, silu_mul_v(vld1q_f32(tg), vld1q_f32(tu)));
    for (int64_t j = i; j < n; j++) y[j] = ty[j - i];
  }
}

void add(float* y, const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vaddq_f32(vld1q_f32(a + i), vld1q_f32(b + i)));
  for (; i < n; i++) y[i] = a[i] + b[i];
}

void scale(float* y, const float* x, float s, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vmulq_n_f32(vld1q_f32(x + i), s));
  for (; i < n; i++) y[i] = x[i] * s;
}

// Vector primitives for the shared attention loops. 32 registers: up to 16 q vectors (hd 64) plus 4 accumulators,
// 4 so that the short 4-lane FMA chains still cover the FMA latency.
struct Vec {
  using T = float32x4_t;
  static constexpr int kLanes = 4, kAttnAcc = 4, kAttnMaxNV = 16;
  static T load(const float* p) { return vld1q_f32(p); }
  static void store(float* p, T v) { vst1q_f32(p, v); }
  static T mul(T a, T b) { return vmulq_f32(a, b); }
  static T fmadd(T a, T b, T c) { return vfmaq_f32(c, a, b); }
  static T add(T a, T b) { return vaddq_f32(a, b); }
  static T set1(float x) { return vdupq_n_f32(x); }
  static float hsum(T v) { return vaddvq_f32(v); }
};

#include "attention_loops.inc"  // dots + wsum, compiled under this file's SIMD target

// NF4/FP4: the LUT as 64 bytes in four q registers; TBL (vqtbl4q_u8) gathers each float's 4 bytes by the index
// 4·code + {0,1,2,3}. 16 codes (8 bytes) per step: nibbles split, zipped back into element order (high first).
struct Q4Acc {
  static constexpr int64_t kStep = 16;
  float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0), a2 = vdupq_n_f32(0), a3 = vdupq_n_f32(0);
  uint8x16x4_t lut;
  // round_dtype in SIMD: bf16 as f32ToBf16 (half to even; NaN quieted), f16 through FCVTN/FCVTL (nearest even).
  static float32x4_t round_to(float32x4_t v, int dtype) {
    if (dtype == W_BF16) {
      const uint32x4_t u = vreinterpretq_u32_f32(v), hiMask = vdupq_n_u32(0xffff0000u);
      const uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
      const uint32x4_t r = vandq_u32(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), lsb), hiMask);
      const uint32x4_t q = vorrq_u32(vandq_u32(u, hiMask), vdupq_n_u32(0x00400000));
      return vreinterpretq_f32_u32(vbslq_u32(vceqq_f32(v, v), r, q));
    }
    if (dtype == W_F16) return vcvt_f32_f16(vcvt_f16_f32(v));
    return v;
  }
  void block(const Q4Weight& w, float s) {
    for (int j = 0; j < 4; j++)
      lut.val[j] = vreinterpretq_u8_f32(round_to(vmulq_n_f32(vld1q_f32(w.code + 4 * j), s), w.dtype));
  }
  void store(float* l) const {
    for (int j = 0; j < 4; j++) vst1q_u8(reinterpret_cast<uint8_t*>(l) + 16 * j, lut.val[j]);
  }
  // Floats of the 4 codes at bytes j..j+3 of c4 (codes already times 4).
  float32x4_t look(uint8x16_t c4, int j) const {
    static const uint8_t kRep[4][16] = {{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
                                        {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
                                        {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
                                        {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15}};
    static const uint8_t kOff[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    const uint8x16_t idx = vaddq_u8(vqtbl1q_u8(c4, vld1q_u8(kRep[j])), vld1q_u8(kOff));
    return vreinterpretq_f32_u8(vqtbl4q_u8(lut, idx));
  }
  void run(const uint8_t* p, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; i += 16, p += 8, x += 16) {
      const uint8x8_t b = vld1_u8(p);
      const uint8x8_t h = vshr_n_u8(b, 4), l = vand_u8(b, vdup_n_u8(0x0f));
      const uint8x16_t c4 = vshlq_n_u8(vcombine_u8(vzip1_u8(h, l), vzip2_u8(h, l)), 2);  // element order, ×4
      a0 = vfmaq_f32(a0, look(c4, 0), vld1q_f32(x));
      a1 = vfmaq_f32(a1, look(c4, 1), vld1q_f32(x + 4));
      a2 = vfmaq_f32(a2, look(c4, 2), vld1q_f32(x + 8));
      a3 = vfmaq_f32(a3, look(c4, 3), vld1q_f32(x + 12));
    }
  }
  float total() const { return vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3))); }
  // The lookups of run, stored.
  void put(const uint8_t* p, float* d, int64_t n) const {
    for (int64_t i = 0; i < n; i += 16, p += 8, d += 16) {
      const uint8x8_t b = vld1_u8(p);
      const uint8x8_t h = vshr_n_u8(b, 4), l = vand_u8(b, vdup_n_u8(0x0f));
      const uint8x16_t c4 = vshlq_n_u8(vcombine_u8(vzip1_u8(h, l), vzip2_u8(h, l)), 2);
      for (int j = 0; j < 4; j++) vst1q_f32(d + 4 * j, look(c4, j));
    }
  }
};

#include "q4_gemv.inc"

#include "qg_generic.inc"  // GPTQ 2/3/4/8-bit decode (gemv_qg): the portable loops, vectorized by the compiler

// NF4/FP4 decode with int16 activations (contract in kernels.h, twin q4DecodeRef in src/backend/ref/quant.ts). Per
// 32 packed bytes (64 codes): nibbles split, TBL looks up the low and high byte of each int16 code in two constant
// 16-byte planes, ZIP1/ZIP2 make 8 int16x8 code vectors, and per x row SMLAL/SMLAL2 accumulate into two int32x4
// (8 products of |c| <= 2^14 and |xq| <= 8191 per lane per chunk, below 2^30); one convert and one FMA by
// scale_block * dx_chunk per chunk. Vector v (0..7) of a chunk holds elements 32(v>>2) + ((v>>1)&1) + 16(v&1) + 2t:
// the high-nibble codes of bytes 0..7 (elements 0,2,..,14), of bytes 8..15 (16,..,30), the low-nibble codes the
// same + 1, then bytes 16..31 the same + 32; x is quantized into that order (q4i_order).
constexpr uint8_t kQ4iOrder[64] = {
    0,  2,  4,  6,  8,  10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 1,  3,  5,  7,  9,  11, 13, 15,
    17, 19, 21, 23, 25, 27, 29, 31, 32, 34, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 62,
    33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63};

template <int M>
inline void q4i_row(float* y, int64_t ldy, const int16_t* xq, const float* dx, const Q4Weight& w, int64_t n,
                    const float* sc, int8x16_t L, int8x16_t H, const float* bias) {
  const int64_t K = w.K, nc = K / 64, cpb = w.blocksize / 64;
  const uint8_t* p = w.packed + n * (K / 2);
  float32x4_t acc[M];
  for (int m = 0; m < M; m++) acc[m] = vdupq_n_f32(0.f);
  // sc[0] is the block holding the row's first element; a block may start before the row (blocks span rows).
  int64_t bi = 0, left = cpb - (n * K % w.blocksize) / 64;
  for (int64_t c = 0; c < nc; c++, p += 32) {
    int32x4_t s0[M], s1[M];
    for (int m = 0; m < M; m++) s0[m] = s1[m] = vdupq_n_s32(0);
    for (int half = 0; half < 2; half++) {
      const uint8x16_t v = vld1q_u8(p + 16 * half);
      const uint8x16_t hN = vshrq_n_u8(v, 4), lN = vandq_u8(v, vdupq_n_u8(0x0f));
      const int8x16_t lh = vqtbl1q_s8(L, hN), hh = vqtbl1q_s8(H, hN), ll = vqtbl1q_s8(L, lN), hl = vqtbl1q_s8(H, lN);
      const int16x8_t wv[4] = {vreinterpretq_s16_s8(vzip1q_s8(lh, hh)), vreinterpretq_s16_s8(vzip2q_s8(lh, hh)),
                               vreinterpretq_s16_s8(vzip1q_s8(ll, hl)), vreinterpretq_s16_s8(vzip2q_s8(ll, hl))};
      for (int m = 0; m < M; m++) {
        const int16_t* q = xq + m * K + c * 64 + 32 * half;
        for (int j = 0; j < 4; j++) {
          const int16x8_t xv = vld1q_s16(q + 8 * j);
          s0[m] = vmlal_s16(s0[m], vget_low_s16(wv[j]), vget_low_s16(xv));
          s1[m] = vmlal_high_s16(s1[m], wv[j], xv);
        }
      }
    }
    const float s = sc[bi];
    if (--left == 0) {
      bi++;
      left = cpb;
    }
    for (int m = 0; m < M; m++) acc[m] = vfmaq_n_f32(acc[m], vcvtq_f32_s32(vaddq_s32(s0[m], s1[m])), s * dx[m * nc + c]);
  }
  for (int m = 0; m < M; m++) y[m * ldy + n] = vaddvq_f32(acc[m]) + (bias ? bias[n] : 0.f);
}

void gemv_q4i(float* y, int64_t ldy, const float* x, int64_t ldx, const int16_t* xq, const float* dx, int M,
              const Q4Weight& w, int64_t n0, int64_t n1, const float* bias) {
  const int64_t K = w.K, bs = w.blocksize;
  thread_local Scratch<float> scb;
  float* sc = scb.get(size_t(K / bs + 2));
  int8_t lo[16], hi[16];
  for (int c = 0; c < 16; c++) {
    lo[c] = int8_t(uint16_t(w.code16[c]) & 0xff);
    hi[c] = int8_t(uint16_t(w.code16[c]) >> 8);
  }
  const int8x16_t L = vld1q_s8(lo), H = vld1q_s8(hi);
  for (int64_t n = n0; n < n1; n++) {
    const int64_t b0 = n * K / bs, nb = (n * K + K - 1) / bs - b0 + 1;  // the blocks holding the row's elements
    bool finite = true;
    for (int64_t b = 0; b < nb; b++) finite &= std::isfinite(sc[b] = q4_block_scale(w, b0 + b));
    if (!finite) {
      for (int m = 0; m < M; m++) gemv_q4(y + m * ldy, x + m * ldx, w, n, n + 1, bias);
      continue;
    }
    switch (M) {
      case 1: q4i_row<1>(y, ldy, xq, dx, w, n, sc, L, H, bias); break;
      case 2: q4i_row<2>(y, ldy, xq, dx, w, n, sc, L, H, bias); break;
      case 3: q4i_row<3>(y, ldy, xq, dx, w, n, sc, L, H, bias); break;
      default: q4i_row<4>(y, ldy, xq, dx, w, n, sc, L, H, bias); break;
    }
  }
}

// LLM.int8 integer products, no dotprod extension assumed: per 16 bytes smull (low halves) and smlal2 (high halves)
// into one int16x8 (x ∈ [-127, 127] and |w| ≤ 128, so two products sum to at most 32512: no overflow), then sadalp
// widens the pairs into the int32 accumulator. Rows are walked as 4 far-apart runs side by side, so 4 sequential
// streams are in flight (see int8_x86.inc); 32 q registers hold the 4·4 accumulators and the 4 rows of x.
template <int MM, int S>
void dot_i8_rows(int32_t* acc, int64_t ldacc, const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int64_t n,
                 int64_t Q, int64_t j, int64_t K) {
  int32x4_t s[MM][S];
  for (int m = 0; m < MM; m++)
    for (int r = 0; r < S; r++) s[m][r] = vdupq_n_s32(0);
  const int8_t* row[S];
  for (int r = 0; r < S; r++) row[r] = b + (n + r * Q) * ldb;
  const int64_t K16 = K & ~int64_t(15);
  for (int64_t k = 0; k < K16; k += 16) {
    int8x16_t xv[MM];
    for (int m = 0; m < MM; m++) xv[m] = vld1q_s8(a + m * lda + k);
    for (int r = 0; r < S; r++) {
      const int8x16_t wv = vld1q_s8(row[r] + k);
      const int8x8_t wl = vget_low_s8(wv);
      for (int m = 0; m < MM; m++) s[m][r] = vpadalq_s16(s[m][r], vmlal_high_s8(vmull_s8(vget_low_s8(xv[m]), wl), xv[m], wv));
    }
  }
  for (int m = 0; m < MM; m++)
    for (int r = 0; r < S; r++) {
      int32_t t = vaddvq_s32(s[m][r]);
      for (int64_t i = K16; i < K; i++) t += int32_t(a[m * lda + i]) * int32_t(row[r][i]);
      acc[m * ldacc + j + r * Q] = t;
    }
}

template <int MM>
void dot_i8_m(int32_t* acc, int64_t ldacc, const int8_t* a, int64_t lda, const int8_t* b, int64_t ldb, int64_t n0,
              int64_t n1, int64_t K) {
  const int64_t Q = (n1 - n0) / 4;
  for (int64_t i = 0; i < Q; i++) dot_i8_rows<MM, 4>(acc, ldacc, a, lda, b, ldb, n0 + i, Q, i, K);
  for (int64_t n = n0 + 4 * Q; n < n1; n++) dot_i8_rows<MM, 1>(acc, ldacc, a, lda, b, ldb, n, 0, n - n0, K);
}

void dot_i8(int32_t* acc, int64_t ldacc, const int8_t* a, int64_t lda, int M, const int8_t* b, int64_t ldb, int64_t n0,
            int64_t n1, int64_t K) {
  switch (M) {
    case 1: dot_i8_m<1>(acc, ldacc, a, lda, b, ldb, n0, n1, K); break;
    case 2: dot_i8_m<2>(acc, ldacc, a, lda, b, ldb, n0, n1, K); break;
    case 3: dot_i8_m<3>(acc, ldacc, a, lda, b, ldb, n0, n1, K); break;
    default: dot_i8_m<4>(acc, ldacc, a, lda, b, ldb, n0, n1, K); break;
  }
}

// LLM.int8 activations: FCVTN/FCVTL round to float16 half to even (FPCR's default), FCMGE is false for NaN (a NaN tf
// flags nothing), FMAX propagates NaN as Math.max does; FCVTNS rounds half to even and gives 0 for NaN.
float i8_absmax_f16(float* h, uint8_t* flag, const float* x, int64_t n, float tf) {
  const float32x4_t vt = vdupq_n_f32(tf), zero = vdupq_n_f32(0.f);
  float32x4_t mx = zero;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    const float32x4_t v = vcvt_f32_f16(vcvt_f16_f32(vld1q_f32(x + k)));
    vst1q_f32(h + k, v);
    const float32x4_t a = vabsq_f32(v);
    const uint32x4_t out = vcgeq_f32(a, vt);
    if (vmaxvq_u32(out)) {
      uint32_t o[4];
      vst1q_u32(o, out);
      for (int j = 0; j < 4; j++)
        if (o[j]) flag[k + j] = 1;
    }
    mx = vmaxq_f32(mx, vbslq_f32(out, zero, a));
  }
  float m = vmaxvq_f32(mx);
  for (; k < n; k++) {
    const float v = f16_to_f32(f32_to_f16(x[k])), a = std::fabs(v);
    h[k] = v;
    if (a >= tf) flag[k] = 1;
    else if (a > m || std::isnan(a)) m = a;
  }
  return m;
}

void i8_quant(int8_t* q, const float* h, const uint8_t* flag, float s, int64_t n) {
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    int32x4_t r[4];
    for (int j = 0; j < 4; j++) r[j] = vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(h + k + 4 * j), s));
    const int8x16_t b = vcombine_s8(vqmovn_s16(vcombine_s16(vqmovn_s32(r[0]), vqmovn_s32(r[1]))),
                                    vqmovn_s16(vcombine_s16(vqmovn_s32(r[2]), vqmovn_s32(r[3]))));
    vst1q_s8(q + k, vandq_s8(b, vreinterpretq_s8_u8(vceqq_u8(vld1q_u8(flag + k), vdupq_n_u8(0)))));
  }
  for (; k < n; k++) {
    const float p = h[k] * s;
    q[k] = flag[k] || std::isnan(p) ? int8_t(0) : int8_t(std::lrintf(p));
  }
}

const Kernels kTable = {"neon", 0, gemv, MR, NR, 256, pack_b, micro, widen, dot, axpy, vmax, exp_sum, silu_mul, add, scale, dots, wsum, gemv_q4, dequant_q4,
                        kQ4iOrder, gemv_q4i,
                        nullptr, gemv_qg, dot_i8, i8_absmax_f16, i8_quant};

}  // namespace

const Kernels* kernels_neon() { return &kTable; }

}  // namespace lowbit

#else  // not AArch64: this level does not exist here
namespace lowbit {
const Kernels* kernels_neon() { return nullptr; }
}
#endif
