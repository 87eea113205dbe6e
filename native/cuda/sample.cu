// Token choice on the device: the logits processors of src/generate/logits.ts (repetition penalty, bans, temperature,
// top-k, top-p, min-p) and the draw of sampling.ts's sample(), one block a row, so a decode step brings ids down, not
// logits. The host decides what depends only on token history (which ids the penalty touches, which are banned: no-repeat
// n-grams, eos before min_new_tokens) and draws the uniform u from its seeded Rng, so the device follows the host's
// choice exactly: the same float32 roundings of every processed score, softmax in float64; only the order of float64
// sums differs (a u or a top-p mass within ~1e-16 of a boundary could pick the neighbour).
//
// Top-k and top-p need no sort: the k-th largest score is found by a radix select on the scores' order-preserving keys
// (4 passes of 8-bit histograms), and top-p's boundary, the smallest score whose ascending cumulative probability
// passes 1 − p, by the same select weighted by probability; within a group of equal scores at that boundary the host's
// stable ascending sort removes the lowest indices first, and so does this.
#include <cuda_runtime.h>
#include <cstdint>

#include "cuda_common.h"
#include "launch.cuh"

namespace lowbit_cuda {

namespace {

constexpr int kSampleThreads = 1024;

// A float's order-preserving key; −0 and +0 are one key (they are equal scores: the host sorts them as ties).
__device__ __forceinline__ uint32_t fkey(float f) {
  if (f == 0.f) return 0x80000000u;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Exclusive prefix over the block's threads (in thread order) of v; the total in *total.
template <class T>
__device__ T block_exclusive_scan(T v, T* sh, T* total) {
  const int lane = threadIdx.x & 31, w = threadIdx.x / 32, nw = blockDim.x / 32;
  T x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  __syncthreads();
  if (lane == 31) sh[w] = x;
  __syncthreads();
  if (threadIdx.x == 0) {
    T run = 0;
    for (int i = 0; i < nw; i++) { const T t = sh[i]; sh[i] = run; run += t; }
    sh[32] = run;
  }
  __syncthreads();
  const T r = sh[w] + x - v;
  *total = sh[32];
  __syncthreads();
  return r;
}

struct SampleParams {
  double temperature, topP, minP, penalty;
  int topK, doSample;
};

// One block per row. x [rows, V] the raw logits; s [rows, V] the work copy; meta (int32): u as float64 [rows], then per
// row (penStart, penEnd, banStart, banEnd) into the same array, then the ids. out[r] = the chosen id, −1 when the raw
// row holds a NaN or an infinity (the host names it).
__global__ void __launch_bounds__(kSampleThreads) sample_kernel(int32_t* out, const float* __restrict__ x, float* __restrict__ sAll,
                                                                 const int32_t* __restrict__ meta, int64_t V, SampleParams p) {
  pdl_wait();
  pdl_trigger();
  __shared__ double shd[33];
  __shared__ float shf[32];
  __shared__ int shi[33];
  __shared__ uint32_t hist[256];
  __shared__ double mass[256];
  __shared__ uint32_t selB;
  __shared__ int selK;
  __shared__ double selAcc;
  __shared__ int pick;
  const int r = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
  const float* xr = x + int64_t(r) * V;
  float* s = sAll + int64_t(r) * V;
  const int rows = gridDim.x;
  const double u = reinterpret_cast<const double*>(meta)[r];
  const int32_t* off = meta + 2 * rows + 4 * r;

  // 1. The raw row: finite? Then the work copy.
  bool bad = false;
  for (int64_t i = tid; i < V; i += nt) {
    const float a = xr[i];
    bad |= !isfinite(a);
    s[i] = a;
  }
  if (__syncthreads_or(bad)) {
    if (tid == 0) out[r] = -1;
    return;
  }
  // 2. Repetition penalty (each id once), then the bans.
  for (int j = off[0] + tid; j < off[1]; j += nt) {
    const int id = meta[j];
    const double v = s[id];
    s[id] = float(v < 0 ? v * p.penalty : v / p.penalty);
  }
  __syncthreads();
  for (int j = off[2] + tid; j < off[3]; j += nt) s[meta[j]] = -INFINITY;
  __syncthreads();

  // Greedy: the first maximum.
  auto argmax_first = [&]() {
    float bv = -INFINITY;
    int64_t bi = V;
    for (int64_t i = tid; i < V; i += nt)
      if (s[i] > bv) { bv = s[i]; bi = i; }
    const float m = block_max(bv, shf);
    if (tid == 0) pick = int(V);
    __syncthreads();
    if (bv == m && bi < V) atomicMin(&pick, int(bi));
    __syncthreads();
    return pick == int(V) ? 0 : pick;  // every score −inf: token 0, as the host's argmax
  };
  if (!p.doSample) {
    const int id = argmax_first();
    if (tid == 0) out[r] = id;
    return;
  }
  // 3. Temperature.
  if (p.temperature != 1.0)
    for (int64_t i = tid; i < V; i += nt) s[i] = float(double(s[i]) / p.temperature);
  __syncthreads();

  // 4. Top-k: keep scores ≥ the k-th largest (ties survive).
  if (p.topK > 0 && p.topK < V) {
    uint32_t prefix = 0, mask = 0;
    int kk = p.topK;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = tid; i < 256; i += nt) hist[i] = 0;
      __syncthreads();
      for (int64_t i = tid; i < V; i += nt) {
        const uint32_t key = fkey(s[i]);
        if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
      }
      __syncthreads();
      if (tid == 0) {
        int b = 255;
        for (; b > 0; b--) {
          if (int(hist[b]) >= kk) break;
          kk -= int(hist[b]);
        }
        selB = uint32_t(b);
        selK = kk;
      }
      __syncthreads();
      prefix |= selB << shift;
      mask |= 255u << shift;
      kk = selK;
      __syncthreads();
    }
    for (int64_t i = tid; i < V; i += nt)
      if (fkey(s[i]) < prefix) s[i] = -INFINITY;
    __syncthreads();
  }

  // Softmax terms of the current scores: e_i = exp(s_i − max) (max stays: no step removes the top score).
  float mx = -INFINITY;
  for (int64_t i = tid; i < V; i += nt) mx = fmaxf(mx, s[i]);
  mx = block_max(mx, shf);
  if (mx == -INFINITY) {  // every score −inf: the host's softmax is NaN and its sample falls back to argmax, token 0
    if (tid == 0) out[r] = 0;
    return;
  }
  auto exp_sum = [&]() {
    double t = 0.0;
    for (int64_t i = tid; i < V; i += nt) t += exp(double(s[i]) - double(mx));
    return block_sum(t, shd);
  };

  // 5. Top-p: remove the ascending prefix whose cumulative probability stays ≤ 1 − p (never the last, top score).
  if (p.topP < 1.0) {
    const double sum = exp_sum(), target = 1.0 - p.topP;
    uint32_t prefix = 0, mask = 0;
    double below = 0.0;  // probability of the scores under the selected prefix
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = tid; i < 256; i += nt) { mass[i] = 0.0; hist[i] = 0; }
      __syncthreads();
      for (int64_t i = tid; i < V; i += nt) {
        const uint32_t key = fkey(s[i]);
        if ((key & mask) == prefix) {
          const double e = exp(double(s[i]) - double(mx)) / sum;
          atomicAdd(&mass[(key >> shift) & 255u], e);
          atomicAdd(&hist[(key >> shift) & 255u], 1u);
        }
      }
      __syncthreads();
      if (tid == 0) {
        // The first bucket whose mass takes the running sum past the target; none (rounding): the last non-empty one.
        double acc = below;
        int b = 0, last = 0;
        bool hit = false;
        for (; b < 256; b++) {
          if (hist[b]) last = b;
          if (acc + mass[b] > target) { hit = true; break; }
          acc += mass[b];
        }
        if (!hit) {
          b = last;
          acc = below;
          for (int c = 0; c < last; c++) acc += mass[c];
        }
        selB = uint32_t(b);
        selAcc = acc;
      }
      __syncthreads();
      prefix |= selB << shift;
      mask |= 255u << shift;
      below = selAcc;
      __syncthreads();
    }
    // prefix: the boundary score's key. Its group of equal scores loses its first c members by index while
    // below + j·q ≤ target (the host adds them one by one); the top score's group keeps at least one.
    const float v = __uint_as_float((prefix & 0x80000000u) ? (prefix & 0x7fffffffu) : ~prefix);
    const double q = exp(double(v) - double(mx)) / sum;
    // Contiguous chunks a thread, so a member's rank by index is a scan of per-thread counts.
    const int64_t chunk = (V + nt - 1) / nt, lo = tid * chunk, hi = lo + chunk < V ? lo + chunk : V;
    int mine = 0;
    for (int64_t i = lo; i < hi; i++) mine += fkey(s[i]) == prefix;
    int nEq = 0;
    int rank = block_exclusive_scan(mine, shi, &nEq);
    if (tid == 0) {
      const int maxC = fkey(mx) == prefix ? nEq - 1 : nEq;
      int c = 0;
      double cum = below;
      while (c < maxC && q > 0.0 && cum + q <= target) { cum += q; c++; }
      selK = c;
    }
    __syncthreads();
    const int c = selK;
    for (int64_t i = lo; i < hi; i++) {
      const uint32_t key = fkey(s[i]);
      if (key < prefix) s[i] = -INFINITY;
      else if (key == prefix) {
        if (rank < c) s[i] = -INFINITY;
        rank++;
      }
    }
    __syncthreads();
  }

  // 6. Min-p: remove probabilities under min_p × the top one.
  if (p.minP > 0.0) {
    const double sum = exp_sum(), cut = p.minP * (1.0 / sum);
    for (int64_t i = tid; i < V; i += nt)
      if (exp(double(s[i]) - double(mx)) / sum < cut) s[i] = -INFINITY;
    __syncthreads();
  }

  // 7. The draw: the first i where u − Σ_{j ≤ i} p_j < 0, the host walking its probabilities in index order; past a
  // rounding sliver, the last token with any probability.
  const double sum = exp_sum();
  const int64_t chunk = (V + nt - 1) / nt, lo = tid * chunk, hi = lo + chunk < V ? lo + chunk : V;
  double part = 0.0;
  for (int64_t i = lo; i < hi; i++) part += exp(double(s[i]) - double(mx)) / sum;
  double total = 0.0;
  const double before = block_exclusive_scan(part, shd, &total);
  if (tid == 0) pick = int(V);
  __syncthreads();
  double left = u - before;
  if (left >= 0.0 && (left < part || tid == nt - 1)) {
    for (int64_t i = lo; i < hi; i++) {
      left -= exp(double(s[i]) - double(mx)) / sum;
      if (left < 0) { atomicMin(&pick, int(i)); break; }
    }
  }
  __syncthreads();
  if (pick == int(V)) {
    int last = -1;
    for (int64_t i = tid; i < V; i += nt)
      if (exp(double(s[i]) - double(mx)) / sum > 0.0 && int(i) > last) last = int(i);
    __syncthreads();
    if (tid == 0) pick = -1;
    __syncthreads();
    atomicMax(&pick, last);
    __syncthreads();
    if (pick < 0) {
      const int id = argmax_first();
      if (tid == 0) out[r] = id;
      return;
    }
  }
  if (tid == 0) out[r] = pick;
}

}  // namespace

void sample_rows(int32_t* out, const float* x, const int32_t* meta, int64_t rows, int64_t V, double temperature, int topK, double topP,
                 double minP, double penalty, bool doSample) {
  if (rows == 0) return;
  float* work = static_cast<float*>(scratch(8, size_t(rows) * size_t(V) * sizeof(float)));
  const SampleParams p{temperature, topP, minP, penalty, topK, doSample ? 1 : 0};
  launch(sample_kernel, unsigned(rows), kSampleThreads, 0, out, x, work, meta, V, p);
}

}  // namespace lowbit_cuda
