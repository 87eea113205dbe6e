// bitsandbytes NF4 / FP4 on the GPU. The weight stays as the file packs it (§2.2: element i in byte i/2, the high
// nibble for even i) with one float32 absmax per block (a double-quantized absmax is expanded at load, as the CPU
// kernels read it).
//
// Decode (≤ 16 rows of x): one warp per 2 weight rows, each lane 8 codes (4 bytes) a step, 8 steps in flight; the
// code's value comes from a table in shared memory with a copy per bank (lane l reads column l: no conflicts); per
// 8 codes Σ value·x in float32, times the block's absmax. That is the dequantized product up to float rounding, with
// one difference: bitsandbytes rounds value·absmax to the weight's dtype before the product and this kernel does not
// (a difference of at most 2^-9 relative a weight for bf16; none for a float32 weight).
// Prefill (more rows): the weight dequantized exactly as dequantize_4bit does (value·absmax in float32, rounded to
// its dtype) into a bf16 / f16 / f32 scratch, then the float matmul (cuBLAS), as a model of that dtype runs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>

#include "cuda_common.h"
#include "launch.cuh"

namespace lowbit_cuda {

namespace {

constexpr int kB4Rows = 2;
constexpr int64_t kB4DecodeMaxRows = 16;  // rows of x the GEMV takes (batch-16 decode); more: dequantize + cuBLAS

struct B4Out {
  const uint8_t* packed[3];
  const float* absmax[3];
  OutSegs out;
};

// 8 codes of each of R rows (one 4-byte word each: byte b holds elements 2b [high nibble] and 2b+1) against
// x[m, k .. k+8): Σ value·x, times the block's absmax, into acc. A lane takes 8 consecutive elements a step, so a
// warp's x loads cover 1 KB in one go (32 consecutive codes a lane put each lane's x 128 bytes from the next: 32 cache
// lines an instruction; the 8B NF4 decode ran 161.9 tok/s that way, 262.9 this way).
template <int M, int R>
__device__ __forceinline__ void b4_word(const uint32_t (&word)[R], const float* tl, const float* __restrict__ x, int64_t K, int64_t k,
                                        const float* const (&am)[R], float (&acc)[R][M], int bsShift, int mRows) {
  float w[R][8];
#pragma unroll
  for (int i = 0; i < R; i++)
#pragma unroll
    for (int b = 0; b < 4; b++) {
      w[i][2 * b] = tl[32 * ((word[i] >> (8 * b + 4)) & 15)];
      w[i][2 * b + 1] = tl[32 * ((word[i] >> (8 * b)) & 15)];
    }
  float a[R];
#pragma unroll
  for (int i = 0; i < R; i++) a[i] = am[i][k >> bsShift];
#pragma unroll
  for (int m = 0; m < M; m++) {
    if (M > 8 && m >= mRows) break;  // the 12- and 16-row instances run fewer rows; the others run exactly M
    const float4 p = __ldg(reinterpret_cast<const float4*>(x + m * K + k));
    const float4 c = __ldg(reinterpret_cast<const float4*>(x + m * K + k + 4));
#pragma unroll
    for (int i = 0; i < R; i++)
      acc[i][m] += a[i] * (w[i][0] * p.x + w[i][1] * p.y + w[i][2] * p.z + w[i][3] * p.w + w[i][4] * c.x + w[i][5] * c.y + w[i][6] * c.z + w[i][7] * c.w);
  }
}

template <int M>
__global__ void __launch_bounds__(256, M <= 2 ? 2 : 1)
b4_gemv_kernel(B4Out o, const float* __restrict__ lut16, const float* __restrict__ x, int64_t N, int64_t K, int bs, int bsShift, bool vec,
               int mRows) {
  __shared__ float lut[16 * 32];
  for (int i = threadIdx.x; i < 16 * 32; i += blockDim.x) lut[i] = lut16[i / 32];  // the table is a constant: no wait
  __syncthreads();
  constexpr int R = kB4Rows, U = 8;
  const int lane = threadIdx.x & 31;
  const int64_t n0 = (int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp) * R;
  if (n0 >= N) {
    pdl_wait();
    pdl_trigger();
    return;
  }
  int seg[R];
  int64_t r[R];
  warp_rows(o.out, n0, N, seg, r);
  const uint8_t* row[R];
  const float* am[R];
#pragma unroll
  for (int i = 0; i < R; i++) {
    row[i] = pick3(o.packed, seg[i]) + r[i] * K / 2;
    am[i] = pick3(o.absmax, seg[i]) + (vec ? (r[i] * K) >> bsShift : 0);  // vec: blocks never span rows
  }
  float acc[R][M];
#pragma unroll
  for (int i = 0; i < R; i++)
#pragma unroll
    for (int m = 0; m < M; m++) acc[i][m] = 0.f;
  const float* tl = lut + lane;  // this lane's column: code c at tl[32·c]
  if (vec) {
    const int64_t steps = K / 8;  // 4-byte words of 8 codes, each inside one block
    int64_t s = lane;
    uint32_t raw[U][R];
    bool full = s + (U - 1) * kWarp < steps;
    if (full) {
#pragma unroll
      for (int u = 0; u < U; u++)
#pragma unroll
        for (int i = 0; i < R; i++) raw[u][i] = __ldg(reinterpret_cast<const uint32_t*>(row[i]) + s + u * kWarp);
    }
    pdl_wait();  // x comes from the kernel before
    pdl_trigger();
    while (full) {
#pragma unroll
      for (int u = 0; u < U; u++) b4_word<M, R>(raw[u], tl, x, K, (s + u * kWarp) * 8, am, acc, bsShift, mRows);
      s += U * kWarp;
      full = s + (U - 1) * kWarp < steps;
      if (full) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
          for (int i = 0; i < R; i++) raw[u][i] = __ldg(reinterpret_cast<const uint32_t*>(row[i]) + s + u * kWarp);
      }
    }
    for (; s < steps; s += kWarp) {
      uint32_t one[R];
#pragma unroll
      for (int i = 0; i < R; i++) one[i] = __ldg(reinterpret_cast<const uint32_t*>(row[i]) + s);
      b4_word<M, R>(one, tl, x, K, s * 8, am, acc, bsShift, mRows);
    }
  } else {
    pdl_wait();
    pdl_trigger();
    for (int64_t k = lane; k < K; k += kWarp)
#pragma unroll
      for (int i = 0; i < R; i++) {
        const int64_t e = r[i] * K + k;  // flattened element (blocks may span rows here)
        const uint8_t byte = pick3(o.packed, seg[i])[e / 2];
        const float w = lut[32 * ((e & 1) ? byte & 15 : byte >> 4)] * pick3(o.absmax, seg[i])[e / bs];
#pragma unroll
        for (int m = 0; m < M; m++) {
          if (M > 8 && m >= mRows) break;
          acc[i][m] += w * x[m * K + k];
        }
      }
  }
#pragma unroll
  for (int i = 0; i < R; i++)
#pragma unroll
    for (int m = 0; m < M; m++) acc[i][m] = warp_sum(acc[i][m]);
  store_rows(o.out, seg, r, n0, N, mRows, acc);
}

// dequantize_4bit into W [n] of the weight's dtype: round_dtype(value(code) · absmax[block]).
__global__ void b4_dequant_kernel(void* w, int wt, const uint8_t* packed, const float* absmax, const float* lut16, int64_t n, int bs) {
  pdl_wait();
  pdl_trigger();
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += int64_t(gridDim.x) * blockDim.x) {
    const uint8_t byte = packed[e / 2];
    const float v = __fmul_rn(lut16[(e & 1) ? byte & 15 : byte >> 4], absmax[e / bs]);
    if (wt == W_F32) static_cast<float*>(w)[e] = v;
    else if (wt == W_BF16) static_cast<__nv_bfloat16*>(w)[e] = __float2bfloat16_rn(v);
    else static_cast<__half*>(w)[e] = __float2half_rn(v);
  }
}

}  // namespace

void b4_dequant(void* w, int wt, const uint8_t* packed, const float* absmax, const float* lut, int64_t n, int blocksize) {
  if (n) launch(b4_dequant_kernel, grid_for(n), 256, 0, w, wt, packed, absmax, lut, n, blocksize);
}

void b4_matmul(const B4Call& q, const float* x, int64_t M) {
  int64_t N = 0;
  for (int i = 0; i < q.nOut; i++) N += q.n[i];
  if (M == 0 || N == 0) return;
  if (M > kB4DecodeMaxRows) {
    const int es = q.wt == W_F32 ? 4 : 2;
    for (int i = 0; i < q.nOut; i++) {
      void* w = scratch(3, size_t(q.n[i]) * size_t(q.K) * es);
      launch(b4_dequant_kernel, grid_for(q.n[i] * q.K), 256, 0, w, q.wt, q.packed[i], q.absmax[i], q.lut, q.n[i] * q.K, q.blocksize);
      matmul(q.y[i], x, w, q.wt, q.bias[i], M, q.n[i], q.K);
    }
    return;
  }
  B4Out o{};
  // The vector path: 8-code words inside one block and blocks inside rows (K a multiple of the block size, a power
  // of two as bitsandbytes' are), 4-byte aligned rows of codes, 16-byte aligned x rows.
  const int bsShift = (q.blocksize & (q.blocksize - 1)) == 0 ? __builtin_ctz(unsigned(q.blocksize)) : -1;
  bool vec = bsShift >= 3 && q.K % q.blocksize == 0 && q.K % 8 == 0 && (reinterpret_cast<uintptr_t>(x) % 16) == 0;
  for (int i = 0; i < 3; i++) {
    const int j = i < q.nOut ? i : q.nOut - 1;
    o.packed[i] = q.packed[j];
    o.absmax[i] = q.absmax[j];
    vec = vec && reinterpret_cast<uintptr_t>(q.packed[j]) % 4 == 0;
  }
  o.out.set(q.nOut, q.y, q.bias, q.n, false);
  const int threads = 256, rowsPerBlock = threads / kWarp * kB4Rows;
  const dim3 grid(unsigned((N + rowsPerBlock - 1) / rowsPerBlock));
  // 9-12 rows run the 12-row instance, 13-16 the 16-row one, over the rows there are.
  switch (M <= 8 ? M : M <= 12 ? 12 : 16) {
#define LOWBIT_B4(MM) case MM: launch(b4_gemv_kernel<MM>, grid, threads, 0, o, q.lut, x, N, q.K, q.blocksize, bsShift, vec, int(M)); break;
    LOWBIT_B4(1) LOWBIT_B4(2) LOWBIT_B4(3) LOWBIT_B4(4) LOWBIT_B4(5) LOWBIT_B4(6) LOWBIT_B4(7) LOWBIT_B4(8) LOWBIT_B4(12) LOWBIT_B4(16)
#undef LOWBIT_B4
  }
}

}  // namespace lowbit_cuda
