// AWQ's hot loops (../shared/spec/FORMATS.md §5.2-5.3; src/quant/awq.ts holds the TypeScript twins, which compute the
// same operations in the same order, so the two agree bit for bit):
//   awq_pseudo_quantize  out = Q(W·diag(s)) / s for a whole weight [N,K], rows in parallel (AutoAWQ's
//                        pseudo_quantize_tensor; the group scale rounded to float16 as AutoAWQ's fp16 tensors hold it),
//                        optionally with the codes, scales and zero points
//   awq_group_gram       per input group g the Gram matrix Σ_t x_t,g x_t,gᵀ [G,G] in double (the clip search's inputs)
//   awq_clip_search      per (output row, group) the clipping max |w| with the smallest output error among
//                        max|w|·(1 − i/20), i < nShrink: err = dᵀ·Gram_g·d / T with d = Q(clamp(w)) − w, which is
//                        AutoAWQ's mean over tokens of (Σ_group x·Q(W_c) − Σ_group x·W)²
// Rows are split over the pool; every element is computed the same way whatever the split.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ops.h"
#include "pool.h"

// The twins round every operation separately; a fused multiply-add would round differently.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace lowbit {
namespace {

// The float16 value nearest to x (ties to even) as a float, saturated to ±65504 (the largest finite float16) so a
// scale never becomes infinite.
float f16_round(float x) {
  const float a = std::fabs(x);
  if (!(a < 65504.f)) return a >= 65504.f ? std::copysign(65504.f, x) : x;  // NaN passes through
  if (a < 6.103515625e-05f) return std::nearbyint(x * 16777216.f) / 16777216.f;  // subnormal: steps of 2^-24
  uint32_t bits;
  std::memcpy(&bits, &a, 4);
  const int e = int((bits >> 23) & 0xff) - 127;
  const float q = std::ldexp(1.f, e - 10);  // float16 keeps 10 mantissa bits
  return std::nearbyint(x / q) * q;
}

// One group of G weights w (times s when s is given): writes Q(w·s)/s (or Q(w)) to out, the codes to codes (if
// any), and returns the group's scale and zero point through scale/zero.
void quant_group(const float* w, const float* s, int64_t G, int bits, bool zero_point, float* out, uint8_t* codes,
                 float* scale_out, uint8_t* zero_out, float* ws) {
  for (int64_t k = 0; k < G; k++) ws[k] = s ? w[k] * s[k] : w[k];
  float scale;
  float zero;
  float qmin, qmax;
  if (zero_point) {
    float mx = ws[0], mn = ws[0];
    for (int64_t k = 1; k < G; k++) {
      mx = std::max(mx, ws[k]);
      mn = std::min(mn, ws[k]);
    }
    const float maxq = float((1 << bits) - 1);
    float range = mx - mn;
    if (range < 1e-5f) range = 1e-5f;
    scale = f16_round(range / maxq);
    zero = -std::nearbyint(mn / scale);
    zero = zero < 0.f ? 0.f : zero > maxq ? maxq : zero;
    qmin = 0.f;
    qmax = maxq;
  } else {
    float mx = 0.f;
    for (int64_t k = 0; k < G; k++) mx = std::max(mx, std::fabs(ws[k]));
    if (mx < 1e-5f) mx = 1e-5f;
    const float maxInt = float((1 << (bits - 1)) - 1);
    scale = f16_round(mx / maxInt);
    zero = float(1 << (bits - 1));
    qmin = -zero;
    qmax = maxInt;
  }
  for (int64_t k = 0; k < G; k++) {
    float q = std::nearbyint(ws[k] / scale) + 0.f;  // ties to even (the default rounding mode); + 0: never -0
    float v;
    if (zero_point) {
      q = q + zero;
      q = q < qmin ? qmin : q > qmax ? qmax : q;
      v = (q - zero) * scale;
      if (codes) codes[k] = uint8_t(q);
    } else {
      q = q < qmin ? qmin : q > qmax ? qmax : q;
      v = q * scale;
      if (codes) codes[k] = uint8_t(q + zero);
    }
    out[k] = s ? v / s[k] : v;
  }
  if (scale_out) *scale_out = scale;
  if (zero_out) *zero_out = uint8_t(zero);
}

}  // namespace

void awq_pseudo_quantize(const float* W, int64_t N, int64_t K, const float* s, int bits, int64_t G, bool zero_point,
                         float* out, uint8_t* codes, float* scales, uint8_t* zeros) {
  const int64_t nG = K / G;
  parallel_for(N, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, K)), [&](int64_t r0, int64_t r1) {
    std::vector<float> ws(static_cast<size_t>(G));
    for (int64_t n = r0; n < r1; n++)
      for (int64_t g = 0; g < nG; g++) {
        const int64_t o = n * K + g * G;
        quant_group(W + o, s ? s + g * G : nullptr, G, bits, zero_point, out + o, codes ? codes + o : nullptr,
                    scales ? scales + g * N + n : nullptr, zeros ? zeros + g * N + n : nullptr, ws.data());
      }
  });
}

void awq_group_gram(const float* x, int64_t T, int64_t K, int64_t G, double* gram) {
  // Row (g, i) of group g's Gram matrix: acc[j] = Σ_t x[t, gG+i]·x[t, gG+j], t ascending (vectorizes over j).
  parallel_for(K, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, T * G)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const int64_t g = r / G, i = r % G;
      double* acc = gram + (g * G + i) * G;
      std::fill(acc, acc + G, 0.0);
      for (int64_t t = 0; t < T; t++) {
        const float* xr = x + t * K + g * G;
        const double xi = xr[i];
        if (xi == 0) continue;
        for (int64_t j = 0; j < G; j++) acc[j] += xi * double(xr[j]);
      }
    }
  });
}

void awq_clip_search(const float* W, int64_t N, int64_t K, int64_t G, const double* gram, int64_t T, int bits,
                     bool zero_point, int n_shrink, int n_grid, float* best) {
  const int64_t nG = K / G;
  parallel_for(N, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, K * G / 16)), [&](int64_t r0, int64_t r1) {
    std::vector<float> cur(static_cast<size_t>(G)), q(static_cast<size_t>(G)), ws(static_cast<size_t>(G));
    std::vector<double> d(static_cast<size_t>(G)), hd(static_cast<size_t>(G));
    for (int64_t n = r0; n < r1; n++)
      for (int64_t g = 0; g < nG; g++) {
        const float* w = W + n * K + g * G;
        const double* H = gram + g * G * G;
        float org = 0.f;
        for (int64_t k = 0; k < G; k++) org = std::max(org, std::fabs(w[k]));
        float best_max = org;
        double min_err = 1e9;
        for (int i = 0; i < n_shrink; i++) {
          const float mv = float(double(org) * (1.0 - double(i) / double(n_grid)));
          for (int64_t k = 0; k < G; k++) cur[size_t(k)] = w[k] < -mv ? -mv : w[k] > mv ? mv : w[k];
          quant_group(cur.data(), nullptr, G, bits, zero_point, q.data(), nullptr, nullptr, nullptr, ws.data());
          for (int64_t k = 0; k < G; k++) d[size_t(k)] = double(q[size_t(k)]) - double(w[k]);
          std::fill(hd.begin(), hd.end(), 0.0);
          for (int64_t a = 0; a < G; a++) {
            const double da = d[size_t(a)];
            if (da == 0) continue;
            const double* h = H + a * G;
            for (int64_t b = 0; b < G; b++) hd[size_t(b)] += da * h[b];
          }
          double e = 0;
          for (int64_t b = 0; b < G; b++) e += hd[size_t(b)] * d[size_t(b)];
          e /= double(T);
          if (e < min_err) {
            min_err = e;
            best_max = mv;
          }
        }
        best[n * nG + g] = best_max;
      }
  });
}

}  // namespace lowbit
