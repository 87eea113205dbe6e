// The kernel table: one instance per SIMD level (scalar, avx2, avx512, neon). Drivers in gemm.cc / ops.cc are
// level-agnostic and call through the table, so every level runs the same blocking, threading and edge handling
// and tests can compare levels op by op.
#pragma once
#include <cstdint>
#include <cstring>

namespace lowbit {

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
};

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
inline float widen1(const void* w, int wtype, int64_t i) {
  if (wtype == W_F32) return static_cast<const float*>(w)[i];
  uint16_t h = static_cast<const uint16_t*>(w)[i];
  return wtype == W_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}
inline int64_t wbytes(int wtype) { return wtype == W_F32 ? 4 : 2; }

}  // namespace lowbit
