// Portable kernels: always compiled, always correct, the oracle for the SIMD levels. Written so that -O3 can
// auto-vectorise the easy loops with the baseline ISA (SSE2 / ASIMD), with independent partial sums for reductions.
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "scratch.h"

namespace lowbit {
namespace {

constexpr int64_t kChunk = 256;

float dot(const float* a, const float* b, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
  float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; i++) r += a[i] * b[i];
  return r;
}

void widen(float* dst, const void* src, int wtype, int64_t n) {
  if (wtype == W_F32) { std::memcpy(dst, src, size_t(n) * 4); return; }
  const uint16_t* s = static_cast<const uint16_t*>(src);
  if (wtype == W_BF16) {
    uint32_t* d = reinterpret_cast<uint32_t*>(dst);
    for (int64_t i = 0; i < n; i++) d[i] = uint32_t(s[i]) << 16;
  } else {
    for (int64_t i = 0; i < n; i++) dst[i] = f16_to_f32(s[i]);
  }
}

void gemv(float* y, int64_t ldy, const float* x, int64_t ldx, int M, const void* w, int wtype, int64_t n0,
          int64_t n1, int64_t K, const float* bias) {
  float row[kChunk];
  const char* wb = static_cast<const char*>(w);
  for (int64_t n = n0; n < n1; n++) {
    float acc[4] = {0, 0, 0, 0};
    for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
      int64_t kc = K - k0 < kChunk ? K - k0 : kChunk;
      widen(row, wb + (n * K + k0) * wbytes(wtype), wtype, kc);
      for (int m = 0; m < M; m++) acc[m] += dot(row, x + m * ldx + k0, kc);
    }
    for (int m = 0; m < M; m++) y[m * ldy + n] = acc[m] + (bias ? bias[n] : 0.f);
  }
}

constexpr int MR = 4, NR = 8;

void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, const float* bias, bool accumulate) {
  float acc[MR][NR];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) acc[i][j] = accumulate ? c[i * ldc + j] : (bias ? bias[j] : 0.f);
  for (int64_t k = 0; k < kc; k++)
    for (int i = 0; i < MR; i++)
      for (int j = 0; j < NR; j++) acc[i][j] += a[k * MR + i] * b[k * NR + j];
  for (int i = 0; i < MR; i++)
    for (int j = 0; j < NR; j++) c[i * ldc + j] = acc[i][j];
}

void pack_b(float* b, const void* w, int wtype, int64_t K, int64_t n0, int64_t nr, int64_t k0, int64_t kc) {
  for (int64_t kk = 0; kk < kc; kk++) {
    float* d = b + kk * NR;
    for (int64_t j = 0; j < nr; j++) d[j] = widen1(w, wtype, (n0 + j) * K + k0 + kk);
    for (int64_t j = nr; j < NR; j++) d[j] = 0.f;
  }
}

void axpy(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

float vmax(const float* x, int64_t n) {
  float m = -INFINITY;
  for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

float exp_sum(float* y, const float* x, float sub, int64_t n) {
  float s = 0;
  for (int64_t i = 0; i < n; i++) { y[i] = std::exp(x[i] - sub); s += y[i]; }
  return s;
}

void silu_mul(float* y, const float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

void add(float* y, const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void scale(float* y, const float* x, float s, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = x[i] * s;
}

void dots(float* out, const float* q, const float* k, int64_t ldk, int64_t n, int64_t hd, float sc) {
  for (int64_t s = 0; s < n; s++) out[s] = dot(q, k + s * ldk, hd) * sc;
}

void wsum(float* o, const float* p, const float* v, int64_t ldv, int64_t n, int64_t hd) {
  for (int64_t s = 0; s < n; s++)
    if (p[s] != 0.f) axpy(o, p[s], v + s * ldv, hd);
}

// NF4/FP4: two codes per byte through the block's LUT, 4 partial sums.
struct Q4Acc {
  static constexpr int64_t kStep = 8;
  float s[4] = {0, 0, 0, 0};
  float lut[16];
  void block(const Q4Weight& w, float sc) { q4_lut(w, sc, lut); }
  void store(float* l) const { std::memcpy(l, lut, sizeof lut); }
  void run(const uint8_t* p, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; i += 8, p += 4, x += 8)
      for (int j = 0; j < 4; j++) s[j] += lut[p[j] >> 4] * x[2 * j] + lut[p[j] & 15] * x[2 * j + 1];
  }
  float total() const { return (s[0] + s[1]) + (s[2] + s[3]); }
  void put(const uint8_t* p, float* d, int64_t n) const {
    for (int64_t i = 0; i < n; i += 2, p++) {
      d[i] = lut[*p >> 4];
      d[i + 1] = lut[*p & 15];
    }
  }
};

#include "q4_gemv.inc"
#include "qg_generic.inc"  // GPTQ 2/3/4/8-bit decode (gemv_qg), natural order

// NF4/FP4 decode with int16 activations (kernels.h): natural element order; per 64-element chunk an exact int32
// sum (64 products of |c| ≤ 2^14 and |xq| ≤ 8191 stay below 2^31), scaled by scale_block · dx_chunk.
void gemv_q4i(float* y, int64_t ldy, const float* x, int64_t ldx, const int16_t* xq, const float* dx, int M,
              const Q4Weight& w, int64_t n0, int64_t n1, const float* bias) {
  const int64_t K = w.K, bs = w.blocksize, nc = K / 64;
  const int16_t* code = w.code16;
  for (int64_t n = n0; n < n1; n++) {
    bool finite = true;  // over the blocks holding the row's elements (blocks may span rows)
    for (int64_t b = n * K / bs; b <= (n * K + K - 1) / bs && finite; b++) finite = std::isfinite(q4_block_scale(w, b));
    if (!finite) {
      for (int m = 0; m < M; m++) gemv_q4(y + m * ldy, x + m * ldx, w, n, n + 1, bias);
      continue;
    }
    const uint8_t* p = w.packed + n * (K / 2);
    for (int m = 0; m < M; m++) {
      const int16_t* q = xq + m * K;
      float acc = 0.f;
      for (int64_t c = 0; c < nc; c++) {
        int32_t s = 0;
        for (int64_t i = 0; i < 32; i++) {
          const uint8_t byte = p[c * 32 + i];
          s += int32_t(code[byte >> 4]) * q[c * 64 + 2 * i] + int32_t(code[byte & 15]) * q[c * 64 + 2 * i + 1];
        }
        acc += float(s) * (q4_block_scale(w, (n * K + c * 64) / bs) * dx[m * nc + c]);
      }
      y[m * ldy + n] = acc + (bias ? bias[n] : 0.f);
    }
  }
}

// LLM.int8: plain int32 sums, exact in any order; -O3 vectorizes the inner loop with the baseline ISA.
void dot_i8(int32_t* acc, int64_t ldacc, const int8_t* a, int64_t lda, int M, const int8_t* b, int64_t ldb, int64_t n0,
            int64_t n1, int64_t K) {
  for (int64_t n = n0; n < n1; n++) {
    const int8_t* w = b + n * ldb;
    for (int m = 0; m < M; m++) {
      const int8_t* x = a + m * lda;
      int32_t s = 0;
      for (int64_t k = 0; k < K; k++) s += int32_t(x[k]) * int32_t(w[k]);
      acc[m * ldacc + (n - n0)] = s;
    }
  }
}

// x rounded to float16 and back (f16ToF32(f32ToF16(x))). Normal float16 magnitudes round the float32 mantissa at bit 13
// in place; subnormals, overflow, infinities and NaN take the general conversion.
inline float round_f16(float x) {
  const uint32_t b = f32_bits(x), a = b & 0x7fffffffu;
  if (a >= 0x38800000u && a < 0x477ff000u) {  // [2^-14, 65520): stays a normal float16 (65520 rounds to ∞)
    const uint32_t r = (b + 0xfffu + ((b >> 13) & 1u)) & 0xffffe000u;
    float f;
    std::memcpy(&f, &r, 4);
    return f;
  }
  return f16_to_f32(f32_to_f16(x));
}

float i8_absmax_f16(float* h, uint8_t* flag, const float* x, int64_t n, float tf) {
  float mx = 0.f;
  for (int64_t k = 0; k < n; k++) {
    const float v = round_f16(x[k]), a = std::fabs(v);
    h[k] = v;
    if (a >= tf) flag[k] = 1;
    else if (a > mx || std::isnan(a)) mx = a;  // a NaN sticks, as Math.max
  }
  return mx;
}

void i8_quant(int8_t* q, const float* h, const uint8_t* flag, float s, int64_t n) {
  for (int64_t k = 0; k < n; k++) {
    const float p = h[k] * s;
    q[k] = flag[k] || std::isnan(p) ? int8_t(0) : int8_t(std::lrintf(p));
  }
}

const Kernels kTable = {"scalar", 0, gemv, MR, NR, 256, pack_b, micro, widen, dot, axpy, vmax, exp_sum, silu_mul, add, scale, dots, wsum, gemv_q4, dequant_q4,
                        nullptr, gemv_q4i,
                        nullptr, gemv_qg, dot_i8, i8_absmax_f16, i8_quant};

}  // namespace

const Kernels* kernels_scalar() { return &kTable; }

namespace {
const float kNf4[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
                        -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
                        0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                        0.7229568362236023f, 1.0f};
// bitsandbytes' FP4 magnitudes by the low 3 bits, divided by 12 (rounded once, as Float32Array.from(m / 12)).
const float kFp4[16] = {float(0 / 12.0), float(0.0625 / 12.0), float(8 / 12.0), float(12 / 12.0), float(4 / 12.0),
                        float(6 / 12.0), float(2 / 12.0), float(3 / 12.0), -0.0f, float(-0.0625 / 12.0), float(-8 / 12.0),
                        float(-12 / 12.0), float(-4 / 12.0), float(-6 / 12.0), float(-2 / 12.0), float(-3 / 12.0)};
}  // namespace

const float* q4_code_values(int quantType) { return quantType == Q4_FP4 ? kFp4 : kNf4; }

const int16_t* q4_code_i16(int quantType) {
  struct Table {
    int16_t v[2][16];
    Table() {
      for (int t = 0; t < 2; t++)
        for (int c = 0; c < 16; c++) v[t][c] = int16_t(std::nearbyint(q4_code_values(t)[c] * 16384.f));
    }
  };
  static const Table table;
  return table.v[quantType == Q4_FP4 ? 1 : 0];
}

}  // namespace lowbit
