// LLM.int8 on the GPU: the twin of int8MatmulRef (src/quant/int8.ts), MatMul8bitLt's forward:
//   y[t,o] = Σ_k CA[t,k]·CB[o,k] · SCA[t]·SCB[o] / 127²  +  Σ_{k ∈ outliers} x[t,k]·dequant(W)[o,k]  +  b[o]
// The activations go to float16, columns where any row reaches the threshold are outliers (kept out of the int8
// product and taken from the float input against the dequantized weight), every other value is quantized per row with
// bitsandbytes' reciprocal (MUFU.RCP, rcp.approx.ftz) of its absmax. The int8 sums are exact (dp4a, int32) and the
// rest is computed in float64 as the reference does, so the result differs from it only in the outliers' summation
// order. Weights stay as the file holds them (int8 [N, K], SCB [N]). Up to 16 rows of x: one prep kernel and a GEMV;
// more: cuBLAS's int8 GEMM (exact int32), the outlier columns by cuBLAS's float64 GEMM, and an epilogue kernel.
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

// The reference's rules (int8VectorwiseQuant): a value v is an outlier when threshold > 0 and |fl16(v)| ≥ threshold;
// a column is an outlier column when any row has one there. A row's SCA is the max |fl16(v)| over its values that are
// not outliers (every column: a small value in an outlier column counts), NaN when the row holds a NaN.
__device__ __forceinline__ bool is_outlier(float a, float threshold) { return threshold > 0.f && a >= threshold; }

// mask[k] = 1 where some row has an outlier (mask zeroed before). Prefill only.
__global__ void i8_mask_kernel(uint8_t* mask, const float* x, int64_t M, int64_t K, float threshold) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < M * K; i += int64_t(gridDim.x) * blockDim.x)
    if (is_outlier(fabsf(f16r(x[i])), threshold)) mask[i % K] = 1;
}

// The block's max of mx (NaN when any thread saw one); every thread gets it.
__device__ float block_absmax(float mx, bool nan, float* part) {
  nan = __syncthreads_or(nan);
  const float m = block_reduce(mx, part, 0.f, ReduceMax());  // |x| ≥ 0: 0 is the identity
  return nan ? __int_as_float(0x7fc00000) : m;
}

// CA[m, k] = round_half_even(x16·fl(rcp(SCA)·127)), 0 in outlier columns and for NaN; row stride Kp (K padded to 16).
__device__ void quantize_row(int8_t* ca, const float* xr, float amax, const uint8_t* mask, int64_t K, int64_t Kp) {
  const float s = __fmul_rn(rcp_approx(amax), 127.f);
  auto q = [&](int64_t k) -> int8_t {
    if (k >= K || mask[k]) return 0;
    const float y = __fmul_rn(f16r(xr[k]), s);
    return isnan(y) ? 0 : int8_t(rintf(y));
  };
  // Four codes a thread a step (Kp is a multiple of 16, ca 16-byte aligned: its rows are Kp apart in the scratch).
  for (int64_t k = threadIdx.x * 4; k < Kp; k += blockDim.x * 4) {
    const char4 c = make_char4(q(k), q(k + 1), q(k + 2), q(k + 3));
    *reinterpret_cast<char4*>(ca + k) = c;
  }
}

// One block per row (prefill): SCA and CA against the mask made before.
__global__ void i8_rows_kernel(int8_t* CA, float* SCA, const float* x, const uint8_t* mask, int64_t K, int64_t Kp, float threshold) {
  pdl_wait();
  pdl_trigger();
  __shared__ float part[32];
  const int64_t m = blockIdx.x;
  const float* xr = x + m * K;
  float mx = 0.f;
  bool nan = false;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const float a = fabsf(f16r(xr[k]));
    nan |= isnan(a);
    if (!is_outlier(a, threshold)) mx = fmaxf(mx, a);
  }
  const float amax = block_absmax(mx, nan, part);
  quantize_row(CA + m * Kp, xr, amax, mask, K, Kp);
  if (threadIdx.x == 0) SCA[m] = amax;
}

// Decode (M ≤ kI8SmallRows, K ≤ kI8SmallK): one kernel does the mask, the list and the rows, so a layer is this and the
// GEMV. One block per row; each block finds the outlier columns itself (M·K reads from L2 a block, small at decode)
// into shared memory, and block 0 writes the list and its count (nothing to zero before). Four columns a thread a step
// (float4 loads, when K is a multiple of 4), so each thread has M float4 loads in flight: one block is latency-bound.
constexpr int kI8SmallRows = 16;
constexpr int kI8OutChunk = 512;  // outlier columns per float64 GEMM (prefill)
constexpr int64_t kI8SmallK = 48 * 1024;
__global__ void __launch_bounds__(1024) i8_prep_small_kernel(int8_t* CA, float* SCA, int* list, int* count, const float* x, int M, int64_t K,
                                                             int64_t Kp, float threshold) {
  pdl_wait();
  pdl_trigger();
  extern __shared__ uint8_t smask[];
  __shared__ float part[32];
  __shared__ int nlist;
  const int m = blockIdx.x;
  if (threadIdx.x == 0) nlist = 0;
  __syncthreads();
  const float* xr = x + int64_t(m) * K;
  float mx = 0.f;
  bool nan = false;
  const bool vec = K % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const int64_t step = vec ? 4 : 1;
  for (int64_t k = threadIdx.x * step; k < K; k += blockDim.x * step) {
    float v[4];
    bool col[4] = {false, false, false, false};
    if (vec) {
      const float4 a = *reinterpret_cast<const float4*>(xr + k);
      v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
      if (threshold > 0.f)
        for (int r = 0; r < M; r++) {
          const float4 b = *reinterpret_cast<const float4*>(x + int64_t(r) * K + k);
          col[0] |= is_outlier(fabsf(f16r(b.x)), threshold);
          col[1] |= is_outlier(fabsf(f16r(b.y)), threshold);
          col[2] |= is_outlier(fabsf(f16r(b.z)), threshold);
          col[3] |= is_outlier(fabsf(f16r(b.w)), threshold);
        }
    } else {
      v[0] = xr[k];
      if (threshold > 0.f)
        for (int r = 0; r < M; r++) col[0] |= is_outlier(fabsf(f16r(x[int64_t(r) * K + k])), threshold);
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
      if (j >= step) break;
      smask[k + j] = col[j];
      if (col[j] && m == 0) list[atomicAdd(&nlist, 1)] = int(k + j);
      const float a = fabsf(f16r(v[j]));
      nan |= isnan(a);
      if (!is_outlier(a, threshold)) mx = fmaxf(mx, a);
    }
  }
  const float amax = block_absmax(mx, nan, part);  // its barriers also publish smask and nlist
  quantize_row(CA + int64_t(m) * Kp, xr, amax, smask, K, Kp);
  if (threadIdx.x == 0) {
    SCA[m] = amax;
    if (m == 0) *count = nlist;
  }
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

// One warp per 2 weight rows, lanes over K 16 codes at a time (dp4a into an exact int32), up to 16 rows of x.
template <int M>
__global__ void i8_gemv_kernel(float* y, const int8_t* __restrict__ CB, const float* __restrict__ SCB, const float* __restrict__ bias,
                               const int8_t* __restrict__ CA, const float* __restrict__ SCA, const float* __restrict__ x,
                               const int* __restrict__ list, const int* __restrict__ count, int64_t N, int64_t K, int64_t Kp, int mRows,
                               bool vec) {
  constexpr int R = kI8Rows, U = 8;
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

// Prefill: the outlier columns gathered, J at a time, as float64 Xo [M, J] (x) and Wo [N, J] (the dequantized weight,
// dequantizeInt8's f(f(CB·SCB)·f(1/127))), for cuBLAS's float64 GEMM.
__global__ void i8_gather_kernel(double* Xo, double* Wo, const float* __restrict__ x, const int8_t* __restrict__ CB, const float* __restrict__ SCB,
                                 const int* __restrict__ list, int j0, int J, int64_t M, int64_t N, int64_t K) {
  pdl_wait();
  pdl_trigger();
  const float inv127 = __fdiv_rn(1.f, 127.f);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (M + N) * J; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / J;
    const int k = list[j0 + int(i % J)];
    if (r < M) Xo[i] = double(x[r * K + k]);
    else Wo[i - M * J] = double(__fmul_rn(__fmul_rn(float(CB[(r - M) * K + k]), SCB[r - M]), inv127));
  }
}

// Prefill epilogue: y = C·SCA·SCB/127² (cuBLAS's exact int32 sums) + the outliers' float64 product + bias, in float64.
__global__ void i8_epilogue_kernel(float* y, const int32_t* __restrict__ C, const double* __restrict__ Yo, const float* __restrict__ SCA,
                                   const float* __restrict__ SCB, const float* __restrict__ bias, int64_t M, int64_t N) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < M * N; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t m = i / N, n = i % N;
    const double v = double(C[i]) * double(SCA[m]) * double(SCB[n]) / 16129.0 + (Yo ? Yo[i] : 0.0);
    y[i] = float(v + (bias ? double(bias[n]) : 0.0));
  }
}

// dequantizeInt8: W [N, K] float32 = f(f(CB·SCB)·f(1/127)).
__global__ void i8_dequant_kernel(float* w, const int8_t* CB, const float* SCB, int64_t N, int64_t K) {
  pdl_wait();
  pdl_trigger();
  const float inv127 = __fdiv_rn(1.f, 127.f);
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * K; i += int64_t(gridDim.x) * blockDim.x)
    w[i] = __fmul_rn(__fmul_rn(float(CB[i]), SCB[i / K]), inv127);
}

}  // namespace

void int8_dequant(float* w, const int8_t* CB, const float* SCB, int64_t N, int64_t K) {
  if (N * K) launch(i8_dequant_kernel, grid_for(N * K), 256, 0, w, CB, SCB, N, K);
}

void int8_matmul(float* y, const float* x, const int8_t* CB, const float* SCB, const float* bias, int64_t M, int64_t N, int64_t K,
                 float threshold) {
  if (M == 0 || N == 0) return;
  const int64_t Kp = (K + 15) / 16 * 16;
  // Scratch: mask [K] (zeroed each prefill call), list [K], count, SCA [M], CA [M, Kp].
  const size_t maskB = (size_t(K) + 255) / 256 * 256, listB = (size_t(K) * 4 + 255) / 256 * 256, scaB = (size_t(M) * 4 + 255) / 256 * 256;
  uint8_t* buf = static_cast<uint8_t*>(scratch(6, maskB + listB + 256 + scaB + size_t(M) * Kp));
  uint8_t* mask = buf;
  int* list = reinterpret_cast<int*>(buf + maskB);
  int* count = reinterpret_cast<int*>(buf + maskB + listB);
  float* SCA = reinterpret_cast<float*>(buf + maskB + listB + 256);
  int8_t* CA = reinterpret_cast<int8_t*>(buf + maskB + listB + 256 + scaB);
  const bool small = M <= kI8SmallRows && K <= kI8SmallK;
  if (small) {
    launch(i8_prep_small_kernel, unsigned(M), 1024, size_t(K), CA, SCA, list, count, x, int(M), K, Kp, threshold);
  } else {
    cuda_check(cudaMemsetAsync(buf, 0, maskB + listB + 256, stream()), "cudaMemsetAsync (int8 mask)");
    if (threshold > 0.f) launch(i8_mask_kernel, grid_for(M * K), 256, 0, mask, x, M, K, threshold);
    launch(i8_rows_kernel, unsigned(M), 256, 0, CA, SCA, x, static_cast<const uint8_t*>(mask), K, Kp, threshold);
    launch(i8_list_kernel, 1u, 1024, 0, list, count, static_cast<const uint8_t*>(mask), K);
    // More rows than the GEMV takes: cuBLAS's int8 GEMM, the outliers by its float64 GEMM (their count comes to the
    // host to size that: this path syncs, so a graph capture takes the GEMV instead).
    cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    cuda_check(cudaStreamIsCapturing(stream(), &cap), "cudaStreamIsCapturing");
    if (M > kI8SmallRows && cap == cudaStreamCaptureStatusNone && K % 4 == 0 && cublas_available(nullptr)) {
      int nOut = 0;
      cuda_check(cudaMemcpyAsync(&nOut, count, sizeof(int), cudaMemcpyDeviceToHost, stream()), "cudaMemcpyAsync (int8 outlier count)");
      cuda_check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize (int8 outlier count)");
      const int J = nOut < kI8OutChunk ? nOut : kI8OutChunk;
      const size_t cB = (size_t(M) * size_t(N) * 4 + 255) / 256 * 256, yB = nOut ? size_t(M) * size_t(N) * 8 : 0;
      uint8_t* pb = static_cast<uint8_t*>(scratch(7, cB + yB + (size_t(M) + size_t(N)) * size_t(J) * 8));
      int32_t* C = reinterpret_cast<int32_t*>(pb);
      double* Yo = nOut ? reinterpret_cast<double*>(pb + cB) : nullptr;
      double* Xo = reinterpret_cast<double*>(pb + cB + yB);
      double* Wo = Xo + size_t(M) * J;
      if (int8_gemm_s32(C, CB, CA, M, N, K, Kp)) {
        for (int j0 = 0; j0 < nOut; j0 += J) {
          const int Jc = nOut - j0 < J ? nOut - j0 : J;
          launch(i8_gather_kernel, grid_for((M + N) * Jc), 256, 0, Xo, Wo, x, CB, SCB, static_cast<const int*>(list), j0, Jc, M, N, K);
          dgemm_nt(Yo, Xo, Wo, M, N, Jc, j0 > 0);
        }
        launch(i8_epilogue_kernel, grid_for(M * N), 256, 0, y, static_cast<const int32_t*>(C), static_cast<const double*>(Yo),
               static_cast<const float*>(SCA), SCB, bias, M, N);
        return;
      }
    }
  }
  // The GEMV, 16 rows of x at a time (the only path for K not a multiple of 4 or without cuBLAS).
  const bool vec = K % 16 == 0 && reinterpret_cast<uintptr_t>(CB) % 16 == 0;
  const int threads = 256, rowsPerBlock = threads / kWarp * kI8Rows;
  const dim3 grid(unsigned((N + rowsPerBlock - 1) / rowsPerBlock));
  for (int64_t m0 = 0; m0 < M; m0 += kI8SmallRows) {
    const int rows = int(M - m0 < kI8SmallRows ? M - m0 : kI8SmallRows);
    const int8_t* ca = CA + m0 * Kp;
    const float* sca = SCA + m0;
    const float* xm = x + m0 * K;
    float* ym = y + m0 * N;
    // Instances for 1-4 rows, then 8 and 16 with the count checked inside.
    const int inst = rows <= 4 ? rows : rows <= 8 ? 8 : 16;
    switch (inst) {
#define LOWBIT_I8(MM) case MM: launch(i8_gemv_kernel<MM>, grid, threads, 0, ym, CB, SCB, bias, ca, sca, xm, static_cast<const int*>(list), static_cast<const int*>(count), N, K, Kp, rows, vec); break;
      LOWBIT_I8(1) LOWBIT_I8(2) LOWBIT_I8(3) LOWBIT_I8(4) LOWBIT_I8(8) LOWBIT_I8(16)
#undef LOWBIT_I8
    }
  }
}

}  // namespace lowbit_cuda
