// AWQ on the device (../shared/spec/FORMATS.md §5.2-5.3): the twins of src/quant/awq.ts's kernels (refAwqKernels and
// native/cpu/awq.cc) and of its statistics, for `lowbit quantize --method awq --device cuda` (src/quant/awq-cuda.ts
// drives them). Every operation is rounded as the twins round it (float32 products and quotients one at a time, no
// fused multiply-add; float64 sums in the twins' order), so pseudo-quantization, the Gram matrices, the clip search and
// the statistics agree with them bit for bit.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda_common.h"
#include "launch.cuh"

namespace lowbit_cuda {

namespace {

constexpr int kClipWarps = 8;        // rows a block of the clip search (one warp each)
constexpr int kClipSmemGram = 128;   // groups up to this size keep their Gram matrix in shared memory

// awq.cc's f16_round: the float16 value nearest to x (ties to even), saturated to ±65504.
__device__ __forceinline__ float f16_round(float x) {
  const float a = fabsf(x);
  if (!(a < 65504.f)) return a >= 65504.f ? copysignf(65504.f, x) : x;
  return __half2float(__float2half_rn(x));
}

// The grid of one group (AutoAWQ's pseudo_quantize_tensor): from its min and max (zero point) or max |w| (symmetric).
struct Grid {
  float scale, zero, qmin, qmax;
  bool zp;
  __device__ __forceinline__ void set(float mn, float mx, float amax, int bits, bool zeroPoint) {
    zp = zeroPoint;
    if (zp) {
      const float maxq = float((1 << bits) - 1);
      float range = __fsub_rn(mx, mn);
      if (range < 1e-5f) range = 1e-5f;
      scale = f16_round(__fdiv_rn(range, maxq));
      zero = -rintf(__fdiv_rn(mn, scale));
      zero = zero < 0.f ? 0.f : zero > maxq ? maxq : zero;
      qmin = 0.f;
      qmax = maxq;
    } else {
      float m = amax < 1e-5f ? 1e-5f : amax;
      const float maxInt = float((1 << (bits - 1)) - 1);
      scale = f16_round(__fdiv_rn(m, maxInt));
      zero = float(1 << (bits - 1));
      qmin = -zero;
      qmax = maxInt;
    }
  }
  // The value of w on the grid; its code through code.
  __device__ __forceinline__ float value(float w, uint8_t* code) const {
    float q = rintf(__fdiv_rn(w, scale)) + 0.f;
    if (zp) {
      q = __fadd_rn(q, zero);
      q = q < qmin ? qmin : q > qmax ? qmax : q;
      if (code) *code = uint8_t(q);
      return __fmul_rn(__fsub_rn(q, zero), scale);
    }
    q = q < qmin ? qmin : q > qmax ? qmax : q;
    if (code) *code = uint8_t(q + zero);
    return __fmul_rn(q, scale);
  }
};

__device__ __forceinline__ void warp_min_max(float& mn, float& mx) {
  for (int o = 16; o > 0; o >>= 1) {
    mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  }
}

// out = Q(W·diag(s))/s (s null: Q(W)), one warp a (row, group); codes [N, K], scales [K/G, N] and zeros [K/G, N] when given.
__global__ void pq_kernel(float* out, uint8_t* codes, float* scales, uint8_t* zeros, const float* W, const float* s, int64_t N, int64_t K,
                          int64_t G, int bits, bool zeroPoint) {
  pdl_wait();
  const int lane = threadIdx.x % kWarp;
  const int64_t nG = K / G, warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp;
  if (warp < N * nG) {
    const int64_t n = warp / nG, g = warp % nG, o = n * K + g * G;
    const float* w = W + o;
    const float* sg = s ? s + g * G : nullptr;
    float mn = INFINITY, mx = -INFINITY, amax = 0.f;
    for (int64_t k = lane; k < G; k += kWarp) {
      const float v = sg ? __fmul_rn(w[k], sg[k]) : w[k];
      mn = fminf(mn, v);
      mx = fmaxf(mx, v);
      amax = fmaxf(amax, fabsf(v));
    }
    warp_min_max(mn, mx);
    for (int o2 = 16; o2 > 0; o2 >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o2));
    Grid gr;
    gr.set(mn, mx, amax, bits, zeroPoint);
    for (int64_t k = lane; k < G; k += kWarp) {
      const float v = sg ? __fmul_rn(w[k], sg[k]) : w[k];
      uint8_t c;
      const float q = gr.value(v, &c);
      out[o + k] = sg ? __fdiv_rn(q, sg[k]) : q;
      if (codes) codes[o + k] = c;
    }
    if (lane == 0 && scales) scales[g * N + n] = gr.scale;
    if (lane == 0 && zeros) zeros[g * N + n] = uint8_t(gr.zero);
  }
  pdl_trigger();
}

// gram [K/G, G, G]: row (g, i) = Σ_t x[t, gG+i]·x[t, gG+j] in float64, t ascending; one block a row.
__global__ void gram_kernel(double* gram, const float* x, int64_t T, int64_t K, int64_t G) {
  pdl_wait();
  const int64_t r = blockIdx.x, g = r / G, i = r % G;
  for (int64_t j = threadIdx.x; j < G; j += blockDim.x) {
    double acc = 0;
    for (int64_t t = 0; t < T; t++) {
      const float* xr = x + t * K + g * G;
      const double xi = xr[i];
      if (xi == 0) continue;
      acc = __dadd_rn(acc, __dmul_rn(xi, double(xr[j])));
    }
    gram[(g * G + i) * G + j] = acc;
  }
  pdl_trigger();
}

// awq_clip_search: one warp a (row, group) of group blockIdx.y; d = Q(clamp(w)) − w in shared memory per warp, the
// Gram matrix of the group in shared memory too when G ≤ kClipSmemGram; hd[b] = Σ_a d[a]·H[a, b] (a ascending) by
// the lane that owns b, and e = Σ_b hd[b]·d[b] summed in b order through shuffles, as the twins sum it.
template <bool SMEM_GRAM>
__global__ void clip_kernel(float* best, const float* W, int64_t N, int64_t K, int64_t G, const double* gram, int64_t T, int bits,
                            bool zeroPoint, int nShrink, int nGrid) {
  extern __shared__ double smem[];
  pdl_wait();
  const int warps = blockDim.x / kWarp, wid = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t g = blockIdx.y, nG = K / G;
  const double* H = gram + g * G * G;
  double* d = smem + (SMEM_GRAM ? G * G : 0) + wid * G;
  if (SMEM_GRAM) {
    double* h = smem;
    for (int64_t i = threadIdx.x; i < G * G; i += blockDim.x) h[i] = H[i];
    __syncthreads();
    H = h;
  }
  const int64_t n = int64_t(blockIdx.x) * warps + wid;
  if (n < N) {
    const float* w = W + n * K + g * G;
    float org = 0.f;
    for (int64_t k = lane; k < G; k += kWarp) org = fmaxf(org, fabsf(w[k]));
    for (int o = 16; o > 0; o >>= 1) org = fmaxf(org, __shfl_xor_sync(0xffffffffu, org, o));
    float bestMax = org;
    double minErr = 1e9;
    for (int i = 0; i < nShrink; i++) {
      const float mv = float(__dmul_rn(double(org), __dsub_rn(1.0, __ddiv_rn(double(i), double(nGrid)))));
      float mn = INFINITY, mx = -INFINITY, amax = 0.f;
      for (int64_t k = lane; k < G; k += kWarp) {
        const float c = w[k] < -mv ? -mv : w[k] > mv ? mv : w[k];
        mn = fminf(mn, c);
        mx = fmaxf(mx, c);
        amax = fmaxf(amax, fabsf(c));
      }
      warp_min_max(mn, mx);
      for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      Grid gr;
      gr.set(mn, mx, amax, bits, zeroPoint);
      for (int64_t k = lane; k < G; k += kWarp) {
        const float c = w[k] < -mv ? -mv : w[k] > mv ? mv : w[k];
        d[k] = __dsub_rn(double(gr.value(c, nullptr)), double(w[k]));
      }
      __syncwarp();
      double e = 0;
      for (int64_t b0 = 0; b0 < G; b0 += kWarp) {
        const int64_t b = b0 + lane;
        double p = 0;
        if (b < G) {
          double hd = 0;
          for (int64_t a = 0; a < G; a++) {
            const double da = d[a];
            if (da == 0) continue;
            hd = __dadd_rn(hd, __dmul_rn(da, H[a * G + b]));
          }
          p = __dmul_rn(hd, d[b]);
        }
        for (int l = 0; l < kWarp && b0 + l < G; l++) e = __dadd_rn(e, __shfl_sync(0xffffffffu, p, l));
      }
      e = __ddiv_rn(e, double(T));
      if (e < minErr) {
        minErr = e;
        bestMax = mv;
      }
      __syncwarp();
    }
    if (lane == 0) best[n * nG + g] = bestMax;
  }
  pdl_trigger();
}

// acc[c] += Σ_t |x[t, c]| in float64, t ascending (activationMean over one input of T rows).
__global__ void abs_sum_kernel(double* acc, const float* x, int64_t T, int64_t K) {
  pdl_wait();
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < K; c += int64_t(gridDim.x) * blockDim.x) {
    double a = acc[c];
    for (int64_t t = 0; t < T; t++) a = __dadd_rn(a, double(fabsf(x[t * K + c])));
    acc[c] = a;
  }
  pdl_trigger();
}

// gmax [N, K/G] = max |w| of each (row, group) (+ add, in float64 then rounded: weightMean's max + 1e-6).
__global__ void group_absmax_kernel(float* gmax, const float* W, int64_t N, int64_t K, int64_t G, double add) {
  pdl_wait();
  const int lane = threadIdx.x % kWarp;
  const int64_t nG = K / G, warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp;
  if (warp < N * nG) {
    const float* w = W + (warp / nG) * K + (warp % nG) * G;
    float m = 0.f;
    for (int64_t k = lane; k < G; k += kWarp) m = fmaxf(m, fabsf(w[k]));
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) gmax[warp] = add != 0 ? float(__dadd_rn(double(m), add)) : m;  // weightMean: fround(max + 1e-6) in double
  }
  pdl_trigger();
}

// weightMean's terms over one weight W [N, K]: acc[c] += Σ_r |w[r, c]| / gmax[r, c's group], float32 quotient,
// float64 sum, r ascending.
__global__ void weight_mean_kernel(double* acc, const float* W, const float* gmax, int64_t N, int64_t K, int64_t G) {
  pdl_wait();
  const int64_t nG = K / G;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < K; c += int64_t(gridDim.x) * blockDim.x) {
    double a = acc[c];
    for (int64_t r = 0; r < N; r++) a = __dadd_rn(a, double(__fdiv_rn(fabsf(W[r * K + c]), gmax[r * nG + c / G])));
    acc[c] = a;
  }
  pdl_trigger();
}

// out [N, K] = W·diag(s) (mode 0), or W with its last len(s) rows divided by s (mode 1: len(s) = ns), float32 each.
__global__ void scale_kernel(float* out, const float* W, const float* s, int64_t N, int64_t K, int64_t ns, int mode) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * K; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / K, c = i % K;
    if (mode == 0) out[i] = __fmul_rn(W[i], s[c]);
    else out[i] = r >= N - ns ? __fdiv_rn(W[i], s[r - (N - ns)]) : W[i];
  }
  pdl_trigger();
}

// out rows [t0, t0 + n) = x rows r0, r0 + step, … (each divided by s when given): clipTokens' gather.
__global__ void gather_rows_kernel(float* out, const float* x, const float* s, int64_t r0, int64_t step, int64_t n, int64_t K) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * K; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / K, c = i % K;
    const float v = x[(r0 + t * step) * K + c];
    out[i] = s ? __fdiv_rn(v, s[c]) : v;
  }
  pdl_trigger();
}

// applyClip: out = clamp(W, ±max[r, group]).
__global__ void apply_clip_kernel(float* out, const float* W, const float* mx, int64_t N, int64_t K, int64_t G) {
  pdl_wait();
  const int64_t nG = K / G;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * K; i += int64_t(gridDim.x) * blockDim.x) {
    const float m = mx[(i / K) * nG + (i % K) / G], v = W[i];
    out[i] = v < -m ? -m : v > m ? m : v;
  }
  pdl_trigger();
}

}  // namespace

void awq_pseudo_quantize_dev(float* out, uint8_t* codes, float* scales, uint8_t* zeros, const float* W, const float* s, int64_t N,
                             int64_t K, int64_t G, int bits, bool zeroPoint) {
  const int64_t warps = N * (K / G);
  launch(pq_kernel, dim3(unsigned((warps * kWarp + 255) / 256)), dim3(256), 0, out, codes, scales, zeros, W, s, N, K, G, bits, zeroPoint);
}

void awq_group_gram_dev(double* gram, const float* x, int64_t T, int64_t K, int64_t G) {
  launch(gram_kernel, dim3(unsigned(K)), dim3(unsigned(G < 256 ? G : 256)), 0, gram, x, T, K, G);
}

void awq_clip_search_dev(float* best, const float* W, int64_t N, int64_t K, int64_t G, const double* gram, int64_t T, int bits,
                         bool zeroPoint, int nShrink, int nGrid) {
  const bool smemGram = G <= kClipSmemGram;
  constexpr size_t kMaxSmem = 200 * 1024;
  // Shared memory: the Gram matrix (small groups) and one d [G] a warp.
  int warps = kClipWarps;
  while (warps > 1 && (smemGram ? G * G : 0) * 8 + size_t(warps) * G * 8 > kMaxSmem) warps--;
  const size_t smem = size_t(smemGram ? G * G : 0) * 8 + size_t(warps) * G * 8;
  if (smem > kMaxSmem)
    throw CudaError("awq clip search: a group of " + std::to_string(G) + " columns is more than the " + std::to_string(kMaxSmem / 8) +
                    " the device search holds (pass a group size)");
  const dim3 grid(unsigned((N + warps - 1) / warps), unsigned(K / G));
  if (smemGram) {
    static bool opted = false;
    if (!opted) {
      cuda_check(cudaFuncSetAttribute(clip_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kMaxSmem)), "cudaFuncSetAttribute (awq clip)");
      opted = true;
    }
    launch(clip_kernel<true>, grid, dim3(warps * kWarp), smem, best, W, N, K, G, gram, T, bits, zeroPoint, nShrink, nGrid);
  } else {
    static bool opted = false;
    if (!opted) {
      cuda_check(cudaFuncSetAttribute(clip_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kMaxSmem)), "cudaFuncSetAttribute (awq clip)");
      opted = true;
    }
    launch(clip_kernel<false>, grid, dim3(warps * kWarp), smem, best, W, N, K, G, gram, T, bits, zeroPoint, nShrink, nGrid);
  }
}

void awq_abs_sum_dev(double* acc, const float* x, int64_t T, int64_t K) {
  launch(abs_sum_kernel, dim3(grid_for(K)), dim3(256), 0, acc, x, T, K);
}

void awq_group_absmax_dev(float* gmax, const float* W, int64_t N, int64_t K, int64_t G, double add) {
  const int64_t warps = N * (K / G);
  launch(group_absmax_kernel, dim3(unsigned((warps * kWarp + 255) / 256)), dim3(256), 0, gmax, W, N, K, G, add);
}

void awq_weight_mean_dev(double* acc, const float* W, const float* gmax, int64_t N, int64_t K, int64_t G) {
  launch(weight_mean_kernel, dim3(grid_for(K)), dim3(256), 0, acc, W, gmax, N, K, G);
}

void awq_scale_dev(float* out, const float* W, const float* s, int64_t N, int64_t K, int64_t ns, int mode) {
  launch(scale_kernel, dim3(grid_for(N * K)), dim3(256), 0, out, W, s, N, K, ns, mode);
}

void awq_gather_rows_dev(float* out, const float* x, const float* s, int64_t r0, int64_t step, int64_t n, int64_t K) {
  if (n > 0) launch(gather_rows_kernel, dim3(grid_for(n * K)), dim3(256), 0, out, x, s, r0, step, n, K);
}

void awq_apply_clip_dev(float* out, const float* W, const float* mx, int64_t N, int64_t K, int64_t G) {
  launch(apply_clip_kernel, dim3(grid_for(N * K)), dim3(256), 0, out, W, mx, N, K, G);
}

}  // namespace lowbit_cuda
