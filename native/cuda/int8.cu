// LLM.int8 on the GPU: the twin of int8MatmulRef (src/quant/int8.ts), MatMul8bitLt's forward:
//   y[t,o] = Σ_k CA[t,k]·CB[o,k] · SCA[t]·SCB[o] / 127²  +  Σ_{k ∈ outliers} x[t,k]·dequant(W)[o,k]  +  b[o]
// The activations go to float16, columns where any row reaches the threshold are outliers (kept out of the int8
// product and taken from the float input against the dequantized weight), every other value is quantized per row with
// bitsandbytes' reciprocal (MUFU.RCP, rcp.approx.ftz) of its absmax. The int8 sums are exact (dp4a, int32) and the
// rest is computed in float64 as the reference does, so the result differs from it only in the outliers' summation
// order. Weights stay as the file holds them (int8 [N, K], SCB [N]). Any number of rows: the GEMV takes 8 at a time.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>

#include "cuda_common.h"
#include "launch.cuh"

namespace lowbit_cuda {

namespace {

constexpr int kI8Rows = 2;

__device__ __forceinline__ float f16r(float v) { return __half2float(__float2half_rn(v)); }

__device__ __forceinline__ float rcp_approx(float x) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

// mask[k] = 1 where some row's float16 |x| reaches the threshold (mask zeroed before).
__global__ void i8_mask_kernel(uint8_t* mask, const float* x, int64_t M, int64_t K, float threshold) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < M * K; i += int64_t(gridDim.x) * blockDim.x)
    if (fabsf(f16r(x[i])) >= threshold) mask[i % K] = 1;
}

// One block per row: SCA = max |x16| over the non-outlier columns; CA = round_half_even(x16·fl(rcp(SCA)·127)), 0 in
// outlier columns and for NaN. Row stride Kp (K padded to 16) in CA.
__global__ void i8_rows_kernel(int8_t* CA, float* SCA, const float* x, const uint8_t* mask, int64_t K, int64_t Kp) {
  pdl_wait();
  pdl_trigger();
  __shared__ float part[32];
  const int64_t m = blockIdx.x;
  const float* xr = x + m * K;
  float mx = 0.f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
    if (!mask[k]) mx = fmaxf(mx, fabsf(f16r(xr[k])));
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  if ((threadIdx.x & 31) == 0) part[threadIdx.x / 32] = mx;
  __syncthreads();
  if (threadIdx.x < 32) {
    float t = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, o));
    if (threadIdx.x == 0) part[0] = t;
  }
  __syncthreads();
  const float amax = part[0];
  const float s = __fmul_rn(rcp_approx(amax), 127.f);
  for (int64_t k = threadIdx.x; k < Kp; k += blockDim.x) {
    int8_t c = 0;
    if (k < K && !mask[k]) {
      const float y = __fmul_rn(f16r(xr[k]), s);
      c = isnan(y) ? 0 : int8_t(rintf(y));
    }
    CA[m * Kp + k] = c;
  }
  if (threadIdx.x == 0) SCA[m] = amax;
}

// The outlier columns as a list (any order: the float64 sum over them is order-independent to far below float32).
__global__ void i8_list_kernel(int* list, int* count, const uint8_t* mask, int64_t K) {
  pdl_wait();
  pdl_trigger();
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x)
    if (mask[k]) list[atomicAdd(count, 1)] = int(k);
}

__device__ __forceinline__ int warp_sum_i(int v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One warp per 2 weight rows, lanes over K 16 codes at a time (dp4a into an exact int32), up to 8 rows of x.
template <int M>
__global__ void i8_gemv_kernel(float* y, const int8_t* __restrict__ CB, const float* __restrict__ SCB, const float* __restrict__ bias,
                               const int8_t* __restrict__ CA, const float* __restrict__ SCA, const float* __restrict__ x,
                               const int* __restrict__ list, const int* __restrict__ count, int64_t N, int64_t K, int64_t Kp, int mRows,
                               bool vec) {
  constexpr int R = kI8Rows, U = 4;
  const int lane = threadIdx.x & 31;
  const int64_t n0 = (int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp) * R;
  if (n0 >= N) {
    pdl_wait();
    pdl_trigger();
    return;
  }
  const int8_t* row[R];
#pragma unroll
  for (int i = 0; i < R; i++) row[i] = CB + (n0 + i < N ? n0 + i : n0) * K;
  int acc[R][M];
#pragma unroll
  for (int i = 0; i < R; i++)
#pragma unroll
    for (int m = 0; m < M; m++) acc[i][m] = 0;
  if (vec) {
    const int64_t steps = K / 16;
    int64_t s = lane;
    uint4 raw[U][R];
    bool full = s + (U - 1) * kWarp < steps;
    if (full) {
#pragma unroll
      for (int u = 0; u < U; u++)
#pragma unroll
        for (int i = 0; i < R; i++) raw[u][i] = __ldg(reinterpret_cast<const uint4*>(row[i]) + s + u * kWarp);
    }
    pdl_wait();  // CA, SCA and the outlier list come from the prep kernels
    pdl_trigger();
    auto step = [&](const uint4 (&w)[R], int64_t ss) {
#pragma unroll
      for (int m = 0; m < M; m++) {
        if (m >= mRows) break;
        const uint4 a = __ldg(reinterpret_cast<const uint4*>(CA + m * Kp) + ss);
#pragma unroll
        for (int i = 0; i < R; i++) {
          int t = acc[i][m];
          t = __dp4a(int(w[i].x), int(a.x), t);
          t = __dp4a(int(w[i].y), int(a.y), t);
          t = __dp4a(int(w[i].z), int(a.z), t);
          t = __dp4a(int(w[i].w), int(a.w), t);
          acc[i][m] = t;
        }
      }
    };
    while (full) {
#pragma unroll
      for (int u = 0; u < U; u++) step(raw[u], s + u * kWarp);
      s += U * kWarp;
      full = s + (U - 1) * kWarp < steps;
      if (full) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
          for (int i = 0; i < R; i++) raw[u][i] = __ldg(reinterpret_cast<const uint4*>(row[i]) + s + u * kWarp);
      }
    }
    for (; s < steps; s += kWarp) {
      uint4 one[R];
#pragma unroll
      for (int i = 0; i < R; i++) one[i] = __ldg(reinterpret_cast<const uint4*>(row[i]) + s);
      step(one, s);
    }
  } else {
    pdl_wait();
    pdl_trigger();
    for (int64_t k = lane; k < K; k += kWarp)
#pragma unroll
      for (int m = 0; m < M; m++) {
        if (m >= mRows) break;
        const int a = CA[m * Kp + k];
#pragma unroll
        for (int i = 0; i < R; i++) acc[i][m] += a * int(row[i][k]);
      }
  }
  const int nOut = *count;
  const float inv127 = __fdiv_rn(1.f, 127.f);
#pragma unroll
  for (int i = 0; i < R; i++) {
    const int64_t n = n0 + i < N ? n0 + i : n0;
    const float scb = SCB[n];
#pragma unroll
    for (int m = 0; m < M; m++) {
      if (m >= mRows) break;
      double outl = 0.0;
      for (int j = lane; j < nOut; j += kWarp) {
        const int k = list[j];
        const float dq = __fmul_rn(__fmul_rn(float(row[i][k]), scb), inv127);  // dequantizeInt8's f(f(CB·SCB)·f(1/127))
        outl += double(x[m * K + k]) * double(dq);
      }
      const int a = warp_sum_i(acc[i][m]);
      outl = warp_sum_d(outl);
      if (lane == 0 && n0 + i < N) {
        const double v = double(a) * double(SCA[m]) * double(scb) / 16129.0 + outl;
        y[m * N + n] = float(v + (bias ? double(bias[n]) : 0.0));
      }
    }
  }
}

}  // namespace

void int8_matmul(float* y, const float* x, const int8_t* CB, const float* SCB, const float* bias, int64_t M, int64_t N, int64_t K,
                 float threshold) {
  if (M == 0 || N == 0) return;
  const int64_t Kp = (K + 15) / 16 * 16;
  // Scratch: mask [K] (zeroed each call), list [K], count, SCA [M], CA [M, Kp].
  const size_t maskB = (size_t(K) + 255) / 256 * 256, listB = (size_t(K) * 4 + 255) / 256 * 256, scaB = (size_t(M) * 4 + 255) / 256 * 256;
  uint8_t* buf = static_cast<uint8_t*>(scratch(6, maskB + listB + 256 + scaB + size_t(M) * Kp));
  uint8_t* mask = buf;
  int* list = reinterpret_cast<int*>(buf + maskB);
  int* count = reinterpret_cast<int*>(buf + maskB + listB);
  float* SCA = reinterpret_cast<float*>(buf + maskB + listB + 256);
  int8_t* CA = reinterpret_cast<int8_t*>(buf + maskB + listB + 256 + scaB);
  cuda_check(cudaMemsetAsync(buf, 0, maskB + listB + 256, stream()), "cudaMemsetAsync (int8 mask)");
  if (threshold > 0.f) launch(i8_mask_kernel, grid_for(M * K), 256, 0, mask, x, M, K, threshold);
  launch(i8_rows_kernel, unsigned(M), 256, 0, CA, SCA, x, static_cast<const uint8_t*>(mask), K, Kp);
  launch(i8_list_kernel, 1u, 1024, 0, list, count, static_cast<const uint8_t*>(mask), K);
  const bool vec = K % 16 == 0 && reinterpret_cast<uintptr_t>(CB) % 16 == 0;
  const int threads = 256, rowsPerBlock = threads / kWarp * kI8Rows;
  const dim3 grid(unsigned((N + rowsPerBlock - 1) / rowsPerBlock));
  for (int64_t m0 = 0; m0 < M; m0 += 8) {
    const int rows = int(M - m0 < 8 ? M - m0 : 8);
    const int8_t* ca = CA + m0 * Kp;
    const float* sca = SCA + m0;
    const float* xm = x + m0 * K;
    float* ym = y + m0 * N;
    switch (rows) {
#define LOWBIT_I8(MM) case MM: launch(i8_gemv_kernel<MM>, grid, threads, 0, ym, CB, SCB, bias, ca, sca, xm, static_cast<const int*>(list), static_cast<const int*>(count), N, K, Kp, rows, vec); break;
      LOWBIT_I8(1) LOWBIT_I8(2) LOWBIT_I8(3) LOWBIT_I8(4) LOWBIT_I8(5) LOWBIT_I8(6) LOWBIT_I8(7) LOWBIT_I8(8)
#undef LOWBIT_I8
    }
  }
}

}  // namespace lowbit_cuda
