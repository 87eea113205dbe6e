// LLM.int8 matmul driver: bitsandbytes' Linear8bitLt forward (../shared/spec/FORMATS.md §3; Dettmers et al. 2022,
// arXiv 2208.07339 §3.1-3.2), with the semantics of src/quant/int8.ts (int8VectorwiseQuant, int8MatmulRef):
//   y[m,n] = Σ_k CA[m,k]·CB[n,k] · SCA[m]·SCB[n] / 127²  +  Σ_{k ∈ outliers} x[m,k]·dq(CB[n,k])  +  bias[n]
// The activations are quantized once per call, row by row through the level's i8_absmax_f16 / i8_quant (a scalar
// pass cost ~10 ns per element, as much as the products of a small decode GEMV); the integer products go through the
// level's dot_i8 (exact in int32, so the summation order does not matter); the rescale, the
// outlier columns and the bias are then summed in float64 in the ref's order and rounded to float32 once. Every step
// is exact or rounded as the ref rounds it, so the output is bit for bit int8MatmulRef's (the tests check that).
//
// Blocking: output rows are split over the pool in L2-sized blocks of weight rows; each block is read from memory
// once and reused from L2 by every tile of up to 4 rows of x (decode: one tile; prefill: M/4 of them). The outlier
// columns of a block are read right after its products, while its rows are still in cache.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels.h"
#include "ops.h"
#include "pool.h"
#include "scratch.h"

namespace lowbit {
namespace {

// Weight rows per block (int8: K bytes per row), so the block stays in L2 while the tiles of x pass over it.
constexpr int64_t kBlockBytes = 192 * 1024;
// dot_i8 sums at most this many products per call: |Σ| ≤ 131072·127·128 < 2^31. Longer rows (no real layer has
// one) are cut into pieces whose int32 sums are added in int64.
constexpr int64_t kMaxKc = 131072;

// 1/x as bitsandbytes' fast-math GPU build computes it (MUFU.RCP): cudaReciprocal in src/quant/bnb4.ts, with its
// tables of the float16/bfloat16 mantissas (top 10 bits) that come out 1 ulp above or below IEEE on an H200.
const uint16_t kRcpAbove[] = {
    11,  17,  18,  20,  48,  91,  97,  98,  104, 105, 113, 138, 147, 148, 153, 203, 204, 209, 225, 226, 252, 260, 296,
    298, 304, 305, 346, 371, 386, 395, 396, 403, 408, 409, 417, 425, 439, 449, 453, 454, 458, 467, 481, 488, 498, 505,
    507, 519, 520, 521, 528, 531, 543, 547, 563, 564, 627, 647, 648, 650, 651, 667, 675, 676, 687, 700, 701, 724, 728,
    785, 786, 787, 789, 805, 807, 813, 823, 872, 874, 876, 878, 893, 920, 923, 928, 944, 968, 987, 988, 997};
const uint16_t kRcpBelow[] = {6,   14,  32,  46,  62,  70,  77,  86,  87,  88,  126, 127, 135, 160,
                              176, 179, 214, 219, 221, 274, 287, 325, 349, 401, 415, 443, 445, 473,
                              474, 558, 614, 751, 783, 950, 954, 956, 957, 965, 1010, 1016};

struct RcpUlps {
  int8_t v[1024] = {};
  RcpUlps() {
    for (uint16_t m : kRcpAbove) v[m] = 1;
    for (uint16_t m : kRcpBelow) v[m] = -1;
  }
};

float cuda_reciprocal(float x) {
  static const RcpUlps table;
  const uint32_t b = f32_bits(x);
  if ((b & 0x7f800000u) == 0) return INFINITY;  // zero or a subnormal flushed to zero
  float r = float(1.0 / double(x));             // fround(1 / x), as the ref
  if (std::fabs(r) < 0x1p-126f) return 0.f;
  const int ulps = (b & 0x1fffu) == 0 ? table.v[(b >> 13) & 0x3ffu] : 0;
  if (ulps == 0 || !std::isfinite(r)) return r;
  const uint32_t u = f32_bits(r) + uint32_t(int32_t(ulps));
  std::memcpy(&r, &u, 4);
  return r;
}

struct Int8Scratch {
  Scratch<float> x16, sca;
  Scratch<int8_t> ca;
  Scratch<uint8_t> flag;
  Scratch<int64_t> cols;
};

// int8VectorwiseQuant(x, M, K, threshold) with the CUDA reciprocal: x cast to float16; an element is an outlier when
// threshold > 0 and |x16| ≥ threshold (∞ included: values past float16's range), and a column is one when any row
// holds one; each row's SCA is the max |x16| over its non-outlier elements (a NaN sticks, as Math.max); CA =
// rne(fl32(x16 · fl32(rcp(SCA)·127))), 0 for NaN (0·∞, ∞·0) and in outlier columns. Returns the number of outlier
// columns, listed ascending in cols. The row passes are the level's i8_absmax_f16 / i8_quant.
int64_t quantize_activations(const Kernels* k, const float* x, int64_t M, int64_t K, double threshold, float* x16,
                             int8_t* CA, float* SCA, uint8_t* flag, int64_t* cols) {
  // For a float h, h ≥ threshold ⟺ h ≥ tf, the least float ≥ threshold; NaN compares false: no outliers.
  float tf = NAN;
  if (threshold > 0) {
    tf = float(threshold);
    if (double(tf) < threshold) tf = std::nextafter(tf, INFINITY);
  }
  std::fill(flag, flag + K, uint8_t(0));
  for (int64_t m = 0; m < M; m++) SCA[m] = k->i8_absmax_f16(x16 + m * K, flag, x + m * K, K, tf);
  int64_t nOut = 0, c = 0;
  for (; c + 8 <= K; c += 8) {  // outliers are rare: skip 8 clear flags at a time
    uint64_t word;
    std::memcpy(&word, flag + c, 8);
    if (word)
      for (int64_t i = c; i < c + 8; i++)
        if (flag[i]) cols[nOut++] = i;
  }
  for (; c < K; c++)
    if (flag[c]) cols[nOut++] = c;
  // |x16| ≤ SCA for every kept element and rcp(SCA)·127 is within a few ulp of 127/SCA, so codes stay in [-127, 127].
  for (int64_t m = 0; m < M; m++) k->i8_quant(CA + m * K, x16 + m * K, flag, cuda_reciprocal(SCA[m]) * 127.f, K);
  return nOut;
}

}  // namespace

void matmul_int8(float* y, const float* x, const int8_t* CB, const float* SCB, int64_t M, int64_t N, int64_t K,
                 double threshold, const float* bias) {
  if (M == 0 || N == 0) return;
  // The activation buffers belong to the calling thread, so one set serves every decode step.
  thread_local Int8Scratch s;
  const size_t mk = size_t(M * K);
  float* x16 = s.x16.get(mk);
  int8_t* CA = s.ca.get(mk);
  float* SCA = s.sca.get(size_t(M));
  int64_t* cols = s.cols.get(size_t(K));
  const Kernels* k = active();
  const int64_t nOut = quantize_activations(k, x, M, K, threshold, x16, CA, SCA, s.flag.get(size_t(K)), cols);

  const int64_t nb = std::max<int64_t>(4, kBlockBytes / std::max<int64_t>(1, K) / 4 * 4);
  const int64_t grain = std::max<int64_t>(4, (1 << 15) / std::max<int64_t>(1, K * std::min<int64_t>(M, 4)));
  const float inv127 = float(1.0 / 127.0);  // fl32(1/127), as dequantizeInt8
  parallel_for(N, grain, [&](int64_t b, int64_t e) {
    thread_local Scratch<int32_t> accBuf;
    thread_local Scratch<int64_t> wideBuf;
    const int64_t cap = std::min(nb, e - b);
    int32_t* acc = accBuf.get(size_t(4 * cap));
    int64_t* wide = K > kMaxKc ? wideBuf.get(size_t(4 * cap)) : nullptr;
    for (int64_t n0 = b; n0 < e; n0 += nb) {
      const int64_t n1 = std::min(e, n0 + nb), nn = n1 - n0;
      for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const int mm = int(std::min<int64_t>(4, M - m0));
        const int8_t* a = CA + m0 * K;
        if (!wide) {
          k->dot_i8(acc, cap, a, K, mm, CB, K, n0, n1, K);
        } else {
          for (int64_t k0 = 0; k0 < K; k0 += kMaxKc) {
            k->dot_i8(acc, cap, a + k0, K, mm, CB + k0, K, n0, n1, std::min(kMaxKc, K - k0));
            for (int m = 0; m < mm; m++)
              for (int64_t j = 0; j < nn; j++) wide[m * cap + j] = (k0 ? wide[m * cap + j] : 0) + acc[m * cap + j];
          }
        }
        for (int m = 0; m < mm; m++) {
          const float* xr = x + (m0 + m) * K;
          const double sca = SCA[m0 + m];
          float* yr = y + (m0 + m) * N;
          for (int64_t n = n0; n < n1; n++) {
            const int64_t j = n - n0;
            const double t = wide ? double(wide[m * cap + j]) : double(acc[m * cap + j]);
            double v = t * sca * double(SCB[n]) / 16129.0;
            // Outlier columns from the unrounded x against the dequantized weight fl32(fl32(CB·SCB)·fl32(1/127));
            // each product of two float32 is exact in a double, so only the sum rounds, as in the ref.
            const int8_t* w = CB + n * K;
            for (int64_t o = 0; o < nOut; o++) {
              const int64_t c = cols[o];
              const float wd = (float(w[c]) * SCB[n]) * inv127;
              v += double(xr[c]) * double(wd);
            }
            yr[n] = float(v + (bias ? double(bias[n]) : 0.0));
          }
        }
      }
    }
  }, 4);
}

}  // namespace lowbit
