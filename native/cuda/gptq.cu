// GPTQ on the device (../shared/spec/FORMATS.md §4.2-4.3): the twins of src/quant/linalg.ts and of the grid of
// src/quant/gptq.ts, for `lowbit quantize --device cuda` (src/quant/gptq-cuda.ts drives them).
//   - the Hessian's running mean by cuBLAS (float32, no TF32), as AutoGPTQ's add_batch;
//   - the factorization in float64: the damped, permuted H as a column-major matrix, a blocked right-looking
//     Cholesky (a 64-column diagonal block in shared memory, cuBLAS's dtrsm for the panel and dsyrk for the rest),
//     H⁻¹ = L⁻ᵀL⁻¹ (dtrsm on the identity, dsyrk), the Cholesky of H⁻¹; its lower factor read row-major is U;
//   - the column loop of a block, one thread a weight row, with the arithmetic of refLinalg.quantizeBlock (double
//     rounded to float32 at the same steps), so the codes of both agree bit for bit on the same W and U;
//   - the lazy block update by cuBLAS (float32).
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_common.h"
#include "launch.cuh"

namespace lowbit_cuda {

namespace {

constexpr int kNb = 64;        // columns of a diagonal block of the Cholesky
constexpr int kRows = 32;      // weight rows a block of the column loop (one thread each)

__global__ void to_f32_kernel(float* dst, const void* src, int wt, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (wt == W_F32) dst[i] = static_cast<const float*>(src)[i];
    else if (wt == W_BF16) dst[i] = __uint_as_float(uint32_t(static_cast<const uint16_t*>(src)[i]) << 16);
    else dst[i] = __half2float(static_cast<const __half*>(src)[i]);
  }
  pdl_trigger();
}

__global__ void diag_kernel(float* out, const float* H, int64_t K) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < K; i += int64_t(gridDim.x) * blockDim.x) out[i] = H[i * K + i];
  pdl_trigger();
}

// torch.round / roundHalfEven on a float32 value.
__device__ __forceinline__ float round_even(float v) { return rintf(v); }

// find_params over columns [c0, c1) of each row (one warp a row): src/quant/gptq.ts findParams, float32 as there.
__global__ void find_params_kernel(float* scale, float* zero, const float* W, int64_t N, int64_t ld, int64_t c0, int64_t c1, float maxq,
                                   bool sym) {
  pdl_wait();
  const int lane = threadIdx.x % kWarp;
  const int64_t n = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / kWarp;
  if (n < N) {
    float lo = 0.f, hi = 0.f;
    const float* row = W + n * ld;
    for (int64_t c = c0 + lane; c < c1; c += kWarp) {
      lo = fminf(lo, row[c]);
      hi = fmaxf(hi, row[c]);
    }
    for (int o = 16; o > 0; o >>= 1) {
      lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
      hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
    }
    if (lane == 0) {
      float xmin = lo, xmax = hi;
      if (sym) {
        xmax = fmaxf(-xmin, xmax);
        if (xmin < 0) xmin = -xmax;
      }
      if (xmin == 0.f && xmax == 0.f) {
        xmin = -1.f;
        xmax = 1.f;
      }
      const float s = float(double(float(double(xmax) - double(xmin))) / double(maxq));
      scale[n] = s;
      zero[n] = sym ? (maxq + 1.f) / 2.f : round_even(float(double(-xmin) / double(s)));
    }
  }
  pdl_trigger();
}

// dst[n, p] = W[n, perm[p]], or 0 where that column is dead (perm null: the identity; dst may then be W).
__global__ void columns_kernel(float* dst, const float* W, const int32_t* perm, const uint8_t* dead, int64_t N, int64_t K) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * K; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / K, p = i % K, c = perm ? perm[p] : p;
    dst[i] = dead && dead[c] ? 0.f : W[n * K + c];
  }
  pdl_trigger();
}

// A (column-major, K×K; symmetric, so either order) = H permuted, its diagonal replaced by diag (damped, in the
// permuted order). H's lower triangle is read, as the CPU's factorization reads it.
__global__ void build_kernel(double* A, const float* H, const int32_t* perm, const float* diag, int64_t K) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < K * K; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / K, c = i % K;
    if (r == c) {
      A[i] = diag[r];
      continue;
    }
    const int64_t a = perm ? perm[r] : r, b = perm ? perm[c] : c;
    A[i] = H[a > b ? a * K + b : b * K + a];
  }
  pdl_trigger();
}

// The Cholesky factor of one diagonal block [kb ≤ 64] of A (column-major, leading dimension ld), lower triangle, in
// shared memory; the first non-positive pivot's global column goes to *fail (atomicMin).
__global__ void potrf_block_kernel(double* A, int64_t ld, int kb, int64_t col0, int* fail) {
  __shared__ double s[kNb][kNb + 1];
  pdl_wait();
  for (int i = threadIdx.x; i < kb * kb; i += blockDim.x) {
    const int r = i / kb, c = i % kb;
    if (r >= c) s[r][c] = A[r + c * ld];
  }
  __syncthreads();
  for (int j = 0; j < kb; j++) {
    if (threadIdx.x == 0) {
      const double d = s[j][j];
      if (!(d > 0)) atomicMin(fail, int(col0 + j));
      s[j][j] = sqrt(d);
    }
    __syncthreads();
    const double p = s[j][j];
    for (int i = j + 1 + threadIdx.x; i < kb; i += blockDim.x) s[i][j] /= p;
    __syncthreads();
    const int m = kb - j - 1;
    for (int i = threadIdx.x; i < m * m; i += blockDim.x) {
      const int r = j + 1 + i / m, c = j + 1 + i % m;
      if (c <= r) s[r][c] -= s[r][j] * s[c][j];
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < kb * kb; i += blockDim.x) {
    const int r = i / kb, c = i % kb;
    if (r >= c) A[r + c * ld] = s[r][c];
  }
  pdl_trigger();
}

__global__ void identity_kernel(double* X, int64_t K) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < K * K; i += int64_t(gridDim.x) * blockDim.x)
    X[i] = i / K == i % K ? 1.0 : 0.0;
  pdl_trigger();
}

// U row-major = the lower factor of A (column-major) read row-major: U[i, j] = L[j, i] for j ≥ i, zeros below.
__global__ void upper_out_kernel(float* U, const double* A, int64_t K) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < K * K; i += int64_t(gridDim.x) * blockDim.x)
    U[i] = i % K >= i / K ? float(A[i]) : 0.f;
  pdl_trigger();
}

// Lower Cholesky of A (column-major K×K) in place; *fail gets the first column whose pivot is not positive.
void cholesky_lower(double* A, int64_t K, int* fail) {
  for (int64_t k0 = 0; k0 < K; k0 += kNb) {
    const int kb = int(K - k0 < kNb ? K - k0 : kNb);
    double* a11 = A + k0 + k0 * K;
    launch(potrf_block_kernel, dim3(1), dim3(256), 0, a11, K, kb, k0, fail);
    const int64_t rest = K - k0 - kb;
    if (rest > 0) {
      double* a21 = A + (k0 + kb) + k0 * K;
      dtrsm_cm(true, true, true, rest, kb, 1.0, a11, K, a21, K);                            // A21 ← A21·L11⁻ᵀ
      dsyrk_lower(false, rest, kb, -1.0, a21, K, 1.0, A + (k0 + kb) + (k0 + kb) * K, K);  // A22 ← A22 − A21·A21ᵀ
    }
  }
}

// refLinalg.quantizeBlock on rows [32·blockIdx.x, +32): each thread walks its row's B columns; the row's values live
// in shared memory (column-major in the block, padded: conflict-free). Codes and values go to the original column
// (perm), err to [N, B], the row's loss is added to rowLoss.
__global__ void quant_block_kernel(const float* __restrict__ W, int64_t N, int64_t K, int64_t i1, int B, const float* __restrict__ U,
                                   const float* __restrict__ scales, const float* __restrict__ zeros, const int32_t* __restrict__ colGroup,
                                   const int32_t* __restrict__ perm, float maxq, uint8_t* codes, float* deq, float* err, double* rowLoss) {
  extern __shared__ float buf[];  // [B][kRows + 1]
  pdl_wait();
  const int64_t row0 = int64_t(blockIdx.x) * kRows;
  const int rows = int(N - row0 < kRows ? N - row0 : kRows);
  for (int i = threadIdx.x; i < rows * B; i += blockDim.x) {
    const int r = i / B, c = i % B;
    buf[c * (kRows + 1) + r] = W[(row0 + r) * K + i1 + c];
  }
  __syncthreads();
  const int t = threadIdx.x;
  if (t < rows) {
    const int64_t n = row0 + t;
    double loss = 0;
    for (int i = 0; i < B; i++) {
      const int64_t p = i1 + i;
      const int64_t g = colGroup[p];
      const float s = scales[g * N + n], z = zeros[g * N + n], x = buf[i * (kRows + 1) + t];
      float q = round_even(float(double(x) / double(s))) + z;
      q = q < 0.f ? 0.f : q > maxq ? maxq : q;
      const float v = float(double(s) * double(q - z));
      const float* u = U + p * K + i1;
      const double d = u[i], dx = double(x) - double(v);
      const float e = float(dx / d);
      loss += dx * dx / (d * d) / 2;
      const int64_t col = perm ? perm[p] : p;
      codes[n * K + col] = uint8_t(q);
      deq[n * K + col] = v;
      err[n * B + i] = e;
      for (int j = i + 1; j < B; j++) {
        float& r = buf[j * (kRows + 1) + t];
        r = float(double(r) - double(e) * double(u[j]));
      }
    }
    rowLoss[n] += loss;
  }
  pdl_trigger();
}

// Round to nearest on given grids: codes and values of W [N, K] (column c on grid colGroup[c]).
__global__ void rtn_kernel(uint8_t* codes, float* deq, const float* W, const float* scales, const float* zeros, const int32_t* colGroup,
                           int64_t N, int64_t K, float maxq) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * K; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / K, g = colGroup[i % K];
    const float s = scales[g * N + n], z = zeros[g * N + n];
    float q = round_even(float(double(W[i]) / double(s))) + z;
    q = q < 0.f ? 0.f : q > maxq ? maxq : q;
    codes[i] = uint8_t(q);
    deq[i] = float(double(s) * double(q - z));
  }
  pdl_trigger();
}

__global__ void sub_kernel(float* d, const float* a, const float* b, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) d[i] = a[i] - b[i];
  pdl_trigger();
}

constexpr int kDotBlocks = 64;

// Σ a·b in float64, one partial per block.
__global__ void dot_kernel(double* partials, const float* a, const float* b, int64_t n) {
  __shared__ double part[32];
  pdl_wait();
  double acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) acc += double(a[i]) * b[i];
  acc = block_sum(acc, part);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
  pdl_trigger();
}

}  // namespace

void gptq_to_f32(float* dst, const void* src, int wt, int64_t n) { launch(to_f32_kernel, dim3(grid_for(n)), dim3(256), 0, dst, src, wt, n); }

void gptq_diag(float* out, const float* H, int64_t K) { launch(diag_kernel, dim3(grid_for(K)), dim3(256), 0, out, H, K); }

void gptq_xtx(float* H, const float* X, int64_t T, int64_t K, float beta, float alpha) {
  // Row-major X [T, K] is column-major Xc [K, T]; H = beta·H + alpha·Xc·Xcᵀ (the same K×K either way).
  sgemm_cm(false, true, K, K, T, alpha, X, K, X, K, beta, H, K);
}

void gptq_find_params(float* scale, float* zero, const float* W, int64_t N, int64_t ld, int64_t c0, int64_t c1, int bits, bool sym) {
  const float maxq = float((1 << bits) - 1);
  launch(find_params_kernel, dim3(unsigned((N * kWarp + 255) / 256)), dim3(256), 0, scale, zero, W, N, ld, c0, c1, maxq, sym);
}

void gptq_columns(float* dst, const float* W, const int32_t* perm, const uint8_t* dead, int64_t N, int64_t K) {
  if (perm && dst == W) throw CudaError("gptq columns: a permutation needs a separate destination");
  launch(columns_kernel, dim3(grid_for(N * K)), dim3(256), 0, dst, W, perm, dead, N, K);
}

void gptq_prepare(float* U, double* A, double* X, int32_t* fail, const float* H, const int32_t* perm, const float* diag, int64_t K) {
  cuda_check(cudaMemsetAsync(fail, 0x7f, 2 * sizeof(int32_t), stream()), "cudaMemsetAsync (gptq fail)");
  const unsigned g = grid_for(K * K);
  launch(build_kernel, dim3(g), dim3(256), 0, A, H, perm, diag, K);
  cholesky_lower(A, K, fail);                                 // H = L·Lᵀ
  launch(identity_kernel, dim3(g), dim3(256), 0, X, K);
  dtrsm_cm(false, true, false, K, K, 1.0, A, K, X, K);        // X = L⁻¹
  dsyrk_lower(true, K, K, 1.0, X, K, 0.0, A, K);              // A = XᵀX = H⁻¹ (lower triangle)
  cholesky_lower(A, K, fail + 1);                             // H⁻¹ = L'·L'ᵀ = UᵀU
  launch(upper_out_kernel, dim3(g), dim3(256), 0, U, A, K);
}

void gptq_quant_block(const float* W, int64_t N, int64_t K, int64_t i1, int B, const float* U, const float* scales, const float* zeros,
                      const int32_t* colGroup, const int32_t* perm, int bits, uint8_t* codes, float* deq, float* err, double* rowLoss) {
  if (B < 1 || B > kGptqMaxBlock) throw CudaError("gptq quantBlock: the block has " + std::to_string(B) + " columns (1 to " +
                                                  std::to_string(kGptqMaxBlock) + ")");
  const size_t smem = size_t(B) * (kRows + 1) * sizeof(float);
  static bool opted = false;
  if (!opted) {
    cuda_check(cudaFuncSetAttribute(quant_block_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(size_t(kGptqMaxBlock) * (kRows + 1) * sizeof(float))),
               "cudaFuncSetAttribute (gptq quantBlock)");
    opted = true;
  }
  launch(quant_block_kernel, dim3(unsigned((N + kRows - 1) / kRows)), dim3(kRows), smem, W, N, K, i1, B, U, scales, zeros, colGroup, perm,
         float((1 << bits) - 1), codes, deq, err, rowLoss);
}

void gptq_block_update(float* W, int64_t N, int64_t K, const float* err, int B, const float* U, int64_t i1) {
  const int64_t i2 = i1 + B;
  if (i2 >= K) return;
  // Row-major W[:, i2:] −= err [N, B]·U[i1:i2, i2:]; column-major: W' [K−i2, N] −= U' [K−i2, B]·err' [B, N].
  sgemm_cm(false, false, K - i2, N, B, -1.f, U + i1 * K + i2, K, err, B, 1.f, W + i2, K);
}

void gptq_rtn(uint8_t* codes, float* deq, const float* W, const float* scales, const float* zeros, const int32_t* colGroup, int64_t N,
              int64_t K, int bits) {
  launch(rtn_kernel, dim3(grid_for(N * K)), dim3(256), 0, codes, deq, W, scales, zeros, colGroup, N, K, float((1 << bits) - 1));
}

void gptq_sub(float* d, const float* a, const float* b, int64_t n) { launch(sub_kernel, dim3(grid_for(n)), dim3(256), 0, d, a, b, n); }

void gptq_dot(double* partials, const float* a, const float* b, int64_t n) {
  launch(dot_kernel, dim3(kDotBlocks), dim3(256), 0, partials, a, b, n);
}

}  // namespace lowbit_cuda
