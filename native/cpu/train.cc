// Training kernels (train.h). Plain loops over contiguous rows of hd that the compiler vectorizes; softmax sums in
// double, as the TypeScript twin's.
#include "train.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "pool.h"

namespace lowbit {

namespace {
// Σ a[i]·b[i] in float with 8 partial sums (vectorizable without reassociation flags).
inline float dot8(const float* a, const float* b, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
  float t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; i < n; i++) t += a[i] * b[i];
  return t;
}
}  // namespace

void attn_train_fwd(float* o, float* p, const float* q, const float* k, const float* v, const uint8_t* mask, int64_t B,
                    int64_t T, int64_t H, int64_t nKV, int64_t hd, float scale, int64_t window) {
  const int64_t group = H / nKV;
  parallel_for(B * H, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t bh = i0; bh < i1; bh++) {
      const int64_t b = bh / H, h = bh % H, kh = h / group;
      for (int64_t t = 0; t < T; t++) {
        const float* qr = q + ((b * T + t) * H + h) * hd;
        float* orow = o + ((b * T + t) * H + h) * hd;
        float* prow = p + ((b * H + h) * T + t) * T;
        std::memset(prow, 0, sizeof(float) * size_t(T));
        std::memset(orow, 0, sizeof(float) * size_t(hd));
        const int64_t first = window ? std::max<int64_t>(0, t - window + 1) : 0;
        double mx = -INFINITY;
        for (int64_t s = first; s <= t; s++) {
          if (mask && !mask[b * T + s]) continue;
          const float* kr = k + ((b * T + s) * nKV + kh) * hd;
          prow[s] = dot8(qr, kr, hd) * scale;
          mx = std::max(mx, double(prow[s]));
        }
        if (mx == -INFINITY) continue;
        double sum = 0;
        for (int64_t s = first; s <= t; s++) {
          if (mask && !mask[b * T + s]) continue;
          const double e = std::exp(double(prow[s]) - mx);
          prow[s] = float(e);
          sum += e;
        }
        const double inv = 1 / sum;
        for (int64_t s = first; s <= t; s++) {
          if (mask && !mask[b * T + s]) continue;
          prow[s] = float(prow[s] * inv);
          const float ps = prow[s];
          const float* vr = v + ((b * T + s) * nKV + kh) * hd;
          for (int64_t i = 0; i < hd; i++) orow[i] += ps * vr[i];
        }
      }
    }
  });
}

void attn_train_bwd(float* dq, float* dk, float* dv, const float* dO, const float* q, const float* k, const float* v,
                    const float* p, int64_t B, int64_t T, int64_t H, int64_t nKV, int64_t hd, float scale) {
  const int64_t group = H / nKV;
  parallel_for(B * nKV, 1, [&](int64_t i0, int64_t i1) {
    std::vector<float> dp(static_cast<size_t>(T));
    for (int64_t bk = i0; bk < i1; bk++) {
      const int64_t b = bk / nKV, kh = bk % nKV;
      for (int64_t s = 0; s < T; s++) {
        std::memset(dk + ((b * T + s) * nKV + kh) * hd, 0, sizeof(float) * size_t(hd));
        std::memset(dv + ((b * T + s) * nKV + kh) * hd, 0, sizeof(float) * size_t(hd));
      }
      for (int64_t h = kh * group; h < (kh + 1) * group; h++) {
        for (int64_t t = 0; t < T; t++) {
          const float* prow = p + ((b * H + h) * T + t) * T;
          const float* go = dO + ((b * T + t) * H + h) * hd;
          const float* qr = q + ((b * T + t) * H + h) * hd;
          float* gq = dq + ((b * T + t) * H + h) * hd;
          std::memset(gq, 0, sizeof(float) * size_t(hd));
          double dot = 0;
          for (int64_t s = 0; s <= t; s++) {
            const float ps = prow[s];
            if (ps == 0.f) { dp[size_t(s)] = 0.f; continue; }
            const float* vr = v + ((b * T + s) * nKV + kh) * hd;
            float* gv = dv + ((b * T + s) * nKV + kh) * hd;
            for (int64_t i = 0; i < hd; i++) gv[i] += ps * go[i];
            const float d = dot8(go, vr, hd);
            dp[size_t(s)] = d;
            dot += double(ps) * d;
          }
          for (int64_t s = 0; s <= t; s++) {
            const float ps = prow[s];
            if (ps == 0.f) continue;
            const float ds = float(ps * (dp[size_t(s)] - dot) * scale);
            const float* kr = k + ((b * T + s) * nKV + kh) * hd;
            float* gk = dk + ((b * T + s) * nKV + kh) * hd;
            for (int64_t i = 0; i < hd; i++) {
              gq[i] += ds * kr[i];
              gk[i] += ds * qr[i];
            }
          }
        }
      }
    }
  });
}

void silu_mul_bwd(float* dg, float* du, const float* dy, const float* g, const float* u, int64_t n) {
  parallel_for(n, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const float s = 1.f / (1.f + std::exp(-g[i]));
      dg[i] = dy[i] * u[i] * s * (1.f + g[i] * (1.f - s));
      du[i] = dy[i] * g[i] * s;
    }
  });
}

}  // namespace lowbit
