// Non-matmul ops. Each splits rows (or flat ranges) over the pool; hot inner loops go through the kernel table.
#include <cmath>
#include <limits>

#include "kernels.h"
#include "ops.h"
#include "pool.h"
#include "scratch.h"

namespace lowbit {
namespace {
// Below this many elements of work a chunk is not worth waking another thread for.
constexpr int64_t kMinWork = 1 << 14;
int64_t row_grain(int64_t per_row) { return std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, per_row)); }
}  // namespace

void rmsnorm(float* y, const float* x, const float* w, int64_t rows, int64_t dim, float eps) {
  const Kernels* k = active();
  parallel_for(rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      double ss = k->dot(xr, xr, dim);
      float inv = float(1.0 / std::sqrt(ss / double(dim) + double(eps)));
      for (int64_t i = 0; i < dim; i++) yr[i] = w[i] * (xr[i] * inv);
    }
  });
}

void layernorm(float* y, const float* x, const float* w, const float* b, int64_t rows, int64_t dim, float eps) {
  parallel_for(rows, row_grain(dim), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      double mean = 0, var = 0;  // two passes in double: the variance of large-mean rows stays accurate
      for (int64_t i = 0; i < dim; i++) mean += xr[i];
      mean /= double(dim);
      for (int64_t i = 0; i < dim; i++) { double d = xr[i] - mean; var += d * d; }
      const float inv = float(1.0 / std::sqrt(var / double(dim) + double(eps))), mf = float(mean);
      for (int64_t i = 0; i < dim; i++) yr[i] = (xr[i] - mf) * inv * w[i] + b[i];
    }
  });
}

void rope(float* x, int64_t rows, int64_t nHeads, int64_t hd, const int32_t* pos, const float* invFreq) {
  const int64_t half = hd / 2;
  parallel_for(rows, row_grain(nHeads * hd * 4), [&](int64_t r0, int64_t r1) {
    thread_local Scratch<float> table;
    float* cs = table.get(size_t(2 * half));
    for (int64_t r = r0; r < r1; r++) {
      // Same rounding as the reference: the angle is rounded to f32 before cos/sin, which are rounded to f32.
      for (int64_t i = 0; i < half; i++) {
        float ang = float(double(pos[r]) * double(invFreq[i]));
        cs[i] = float(std::cos(double(ang)));
        cs[half + i] = float(std::sin(double(ang)));
      }
      for (int64_t h = 0; h < nHeads; h++) {
        float* o = x + (r * nHeads + h) * hd;
        for (int64_t i = 0; i < half; i++) {
          double a = o[i], bb = o[i + half], c = cs[i], s = cs[half + i];
          o[i] = float(a * c - bb * s);  // rotate_half: [x1, x2] → [−x2, x1]
          o[i + half] = float(bb * c + a * s);
        }
      }
    }
  });
}

namespace {
// Attention cost in key rows: query t sees keys(t) keys (pastLen + t + 1, or the window), plus about one row's worth
// of fixed work. Causal prefill costs grow with t, so equal item counts would hand the last chunk most of the work
// (and a caller waiting on it looks like it waits on a preempted worker); chunks are cut at equal cost instead.
struct AttnCost {
  int64_t T, H, pastLen, window;
  static constexpr int64_t kItem = 1;
  int64_t keys(int64_t t) const {
    const int64_t n = pastLen + t + 1;
    return window > 0 && n > window ? window : n;
  }
  // Σ_{u<m} (keys(u) + kItem): keys grow by one per row until they reach the window.
  __int128 rows(int64_t m) const {
    int64_t a = m;  // rows before the window is full
    if (window > 0) a = std::min(m, std::max<int64_t>(0, window - pastLen));
    const __int128 grow = __int128(a) * (pastLen + 1) + __int128(a) * (a - 1) / 2;
    return grow + __int128(m - a) * window + __int128(m) * kItem;
  }
  // Cost of items [0, i), items being (b, t, h) with h fastest.
  __int128 upto(int64_t i) const {
    const int64_t h = i % H, t = (i / H) % T, b = i / (H * T);
    return __int128(b) * H * rows(T) + __int128(H) * rows(t) + __int128(h) * (keys(t) + kItem);
  }
  // First item of chunk j of n: the smallest i with upto(i) >= total·j/n.
  int64_t edge(int64_t j, int64_t n, int64_t items, __int128 total) const {
    if (j <= 0) return 0;
    if (j >= n) return items;
    const __int128 target = total * j / n;
    int64_t lo = 0, hi = items;
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (upto(mid) < target) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
};
}  // namespace

void attention(float* out, const float* q, const float* kc, const float* vc, int64_t B, int64_t T, int64_t H,
               int64_t nKV, int64_t hd, int64_t S, int64_t pastLen, const uint8_t* keyMask, float scale,
               int64_t window) {
  const Kernels* k = active();
  const int64_t group = H / nKV, kvLen = pastLen + T, items = B * T * H;
  if (items <= 0) return;
  const AttnCost cost{T, H, pastLen, window};
  const __int128 total = cost.upto(items);
  // One chunk per kMinWork elements of work (q·k and p·v: 2·hd per key row), at most one per thread of the width.
  const __int128 work = total * std::max<int64_t>(hd, 1) * 2;
  const int64_t most = std::min<int64_t>(pool_width(), items);
  const int64_t chunks = int64_t(std::min<__int128>(most, std::max<__int128>(1, work / kMinWork)));
  // Items are (b, t, h) with h fastest, so the heads sharing one KV head sit together and reuse it from cache.
  auto run = [&](int64_t i0, int64_t i1) {
    thread_local Scratch<float> scores;
    float* sc = scores.get(size_t(kvLen));
    for (int64_t item = i0; item < i1; item++) {
      const int64_t h = item % H, t = (item / H) % T, b = item / (H * T);
      const int64_t kvh = h / group, last = pastLen + t;
      const float* qv = q + item * hd;
      float* o = out + item * hd;
      // Keys first..last are visible: causal, and within the sliding window when there is one (0 = none).
      const int64_t first = window > 0 && last - window + 1 > 0 ? last - window + 1 : 0;
      const uint8_t* mask = keyMask ? keyMask + b * kvLen + first : nullptr;
      const float ninf = -std::numeric_limits<float>::infinity();
      const int64_t ld = nKV * hd, n = last + 1 - first;
      const float* kb = kc + (b * S * nKV + kvh) * hd + first * ld;
      const float* vb = vc + (b * S * nKV + kvh) * hd + first * ld;
      k->dots(sc, qv, kb, ld, n, hd, scale);
      if (mask)
        for (int64_t s = 0; s < n; s++)
          if (!mask[s]) sc[s] = ninf;
      const float mx = k->max(sc, n);
      for (int64_t i = 0; i < hd; i++) o[i] = 0.f;
      if (mx == ninf) continue;  // no visible key (a padding query): zeros, as in the reference
      k->scale(sc, sc, 1.f / k->exp_sum(sc, sc, mx, n), n);
      if (mask)  // exp(-inf) is 0 already; this keeps masked rows out even if a kernel's exp underflows to a denormal
        for (int64_t s = 0; s < n; s++)
          if (!mask[s]) sc[s] = 0.f;
      k->wsum(o, sc, vb, ld, n, hd);
    }
  };
  if (chunks <= 1) { run(0, items); return; }
  // Chunk c runs items [edge(c), edge(c + 1)); each item is computed the same way whichever chunk holds it.
  parallel_for_n(chunks, chunks, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) {
      const int64_t i0 = cost.edge(c, chunks, items, total), i1 = cost.edge(c + 1, chunks, items, total);
      if (i0 < i1) run(i0, i1);
    }
  });
}

void silu_mul(float* y, const float* g, const float* u, int64_t n) {
  const Kernels* k = active();
  parallel_for(n, kMinWork, [&](int64_t b, int64_t e) { k->silu_mul(y + b, g + b, u + b, e - b); }, 16);
}

void relu(float* y, const float* x, int64_t n) {
  parallel_for(n, kMinWork * 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) y[i] = x[i] > 0.f ? x[i] : 0.f;
  }, 16);
}

void softmax(float* y, const float* x, int64_t rows, int64_t cols) {
  const Kernels* k = active();
  parallel_for(rows, row_grain(cols * 4), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      const float mx = k->max(xr, cols);
      const float sum = k->exp_sum(yr, xr, mx, cols);
      k->scale(yr, yr, 1.f / sum, cols);
    }
  });
}

void embedding(float* y, const void* table, int wtype, const int32_t* ids, int64_t nIds, int64_t dim) {
  const Kernels* k = active();
  const char* t = static_cast<const char*>(table);
  parallel_for(nIds, row_grain(dim), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) k->widen(y + i * dim, t + int64_t(ids[i]) * dim * wbytes(wtype), wtype, dim);
  });
}

void add(float* y, const float* a, const float* b, int64_t n) {
  const Kernels* k = active();
  parallel_for(n, kMinWork * 4, [&](int64_t s, int64_t e) { k->add(y + s, a + s, b + s, e - s); }, 16);
}

}  // namespace lowbit
