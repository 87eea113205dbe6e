// lowbit's CUDA kernels: the op catalogue of src/backend/backend.ts on device memory. Activations are float32;
// weights keep their checkpoint dtype (F32 / BF16 / F16) and are widened in registers. Each launcher checks its
// launch (cuda_check) and runs on the one stream the addon owns (stream()). The TypeScript `ref` backend is every
// kernel's twin (test/cuda.test.ts compares them on random inputs).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cfloat>
#include <cstdint>

#include "cuda_common.h"
#include "launch.cuh"

namespace lowbit_cuda {

namespace {

// 8 weights of one dtype, as loaded (16 bytes; F32: 32 in two registers' worth), widened to float.
template <int WT> struct W8;
template <> struct W8<W_F32> {
  __device__ __forceinline__ static void widen(const uint4* u, float (&w)[8]) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
      w[4 * i] = __uint_as_float(u[i].x); w[4 * i + 1] = __uint_as_float(u[i].y);
      w[4 * i + 2] = __uint_as_float(u[i].z); w[4 * i + 3] = __uint_as_float(u[i].w);
    }
  }
};
template <> struct W8<W_BF16> {
  __device__ __forceinline__ static void widen(const uint4* u, float (&w)[8]) {
    const uint32_t v[4] = {u->x, u->y, u->z, u->w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      w[2 * i] = __uint_as_float(v[i] << 16);
      w[2 * i + 1] = __uint_as_float(v[i] & 0xffff0000u);
    }
  }
};
template <> struct W8<W_F16> {
  __device__ __forceinline__ static void widen(const uint4* u, float (&w)[8]) {
    const uint32_t v[4] = {u->x, u->y, u->z, u->w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&v[i]));
      w[2 * i] = f.x;
      w[2 * i + 1] = f.y;
    }
  }
};

__device__ __forceinline__ float widen1(const void* w, int wt, int64_t i) {
  if (wt == W_F32) return static_cast<const float*>(w)[i];
  const uint16_t h = static_cast<const uint16_t*>(w)[i];
  return wt == W_BF16 ? __uint_as_float(uint32_t(h) << 16) : __half2float(__ushort_as_half(h));
}

// ---- GEMV (decode, M ≤ 8 rows of x): one warp per 2 weight rows (each x chunk loaded once for both), 8 weights per
// lane per step, U steps in flight (8 for 1-2 rows of x, else 4); the first U steps' weights are loaded before
// pdl_wait, so they stream while the kernel before still runs.
// y[m, n] = Σ_k x[m, k]·w[n, k] (+ bias[n]). Rows that are 16-byte aligned with K % 8 == 0 take the vector loop;
// others the scalar one (both sum in float32, lanes strided, then a warp reduction). Several weights that read the
// same x (q/k/v, gate/up) run as one launch over their rows in turn: segment i has its own weight, output and bias.
// Measured on the H200 over the 32 layers of the 8B shape (bench/cuda/gemv-variants.cu, one graph of 128 launches,
// 13.96 GB): one row a warp 3553 GB/s (3712 with PDL), 2 rows a warp 4018 (4059 with PDL, U=8); a plain read of the
// same matrices 4145-4181, of one 4 GiB buffer 4531. A block of warps sharing rows through shared x was slower.
struct GemvOut {
  const void* w[3];
  float* y[3];
  int64_t start[3];  // first row of each output
  int64_t n[3];      // rows of each output (its row length in y)
  const float* bias[3];
  // gate/up with SiLU·mul in the epilogue: a warp takes row n of w[0] (gate) and of w[1] (up) and writes
  // y[0][m, n] = silu(gate)·up, as siluMul would from the two products (N = rows of each).
  bool silu;
};

__device__ __forceinline__ int gemv_seg(const GemvOut& o, int64_t n) { return n >= o.start[2] ? 2 : n >= o.start[1] ? 1 : 0; }

// 8 weights as loaded (16 bytes; F32: 32), widened only when used.
template <int WT> struct Raw8 {
  static constexpr int V = WT == W_F32 ? 2 : 1;
  uint4 v[V];
  __device__ __forceinline__ void load(const char* p) {
#pragma unroll
    for (int i = 0; i < V; i++) v[i] = __ldg(reinterpret_cast<const uint4*>(p) + i);
  }
  __device__ __forceinline__ void widen(float (&w)[8]) const { W8<WT>::widen(v, w); }
};

constexpr int kGemvRows = 2;  // weight rows a warp

template <int WT, int M>
__global__ void gemv_kernel(GemvOut o, const float* __restrict__ x, int64_t N, int64_t K, bool vec) {
  constexpr int R = kGemvRows, U = M <= 2 && WT != W_F32 ? 8 : 4, es = WT == W_F32 ? 4 : 2;
  const int lane = threadIdx.x & 31;
  const int64_t warpId = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int64_t n0 = o.silu ? warpId : warpId * R;
  if (n0 >= N) return;
  int seg[R];
  int64_t r[R];
  const char* row[R];
#pragma unroll
  for (int i = 0; i < R; i++) {
    const int64_t n = o.silu || n0 + i >= N ? n0 : n0 + i;  // past the end: row n0 again, not written
    seg[i] = o.silu ? i : gemv_seg(o, n);
    r[i] = o.silu ? n0 : n - pick3(o.start, seg[i]);
    row[i] = static_cast<const char*>(pick3(o.w, seg[i])) + r[i] * K * es;
  }
  float acc[R][M];
#pragma unroll
  for (int i = 0; i < R; i++)
#pragma unroll
    for (int m = 0; m < M; m++) acc[i][m] = 0.f;
  if (vec) {
    const int64_t steps = K / 8;  // 8-weight groups in the row
    int64_t s = lane;
    Raw8<WT> raw[R][U];
    bool full = s + (U - 1) * kWarp < steps;
    if (full) {
#pragma unroll
      for (int u = 0; u < U; u++)
#pragma unroll
        for (int i = 0; i < R; i++) raw[i][u].load(row[i] + (s + u * kWarp) * 8 * es);
    }
    pdl_wait();  // x comes from the kernel before
    pdl_trigger();
    while (full) {
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int64_t k = (s + u * kWarp) * 8;
        float w[R][8];
#pragma unroll
        for (int i = 0; i < R; i++) raw[i][u].widen(w[i]);
#pragma unroll
        for (int m = 0; m < M; m++) {
          const float4 a = __ldg(reinterpret_cast<const float4*>(x + m * K + k));
          const float4 b = __ldg(reinterpret_cast<const float4*>(x + m * K + k + 4));
#pragma unroll
          for (int i = 0; i < R; i++)
            acc[i][m] += w[i][0] * a.x + w[i][1] * a.y + w[i][2] * a.z + w[i][3] * a.w +
                         w[i][4] * b.x + w[i][5] * b.y + w[i][6] * b.z + w[i][7] * b.w;
        }
      }
      s += U * kWarp;
      full = s + (U - 1) * kWarp < steps;
      if (full) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
          for (int i = 0; i < R; i++) raw[i][u].load(row[i] + (s + u * kWarp) * 8 * es);
      }
    }
    for (; s < steps; s += kWarp) {
      const int64_t k = s * 8;
      float w[R][8];
#pragma unroll
      for (int i = 0; i < R; i++) {
        Raw8<WT> one;
        one.load(row[i] + s * 8 * es);
        one.widen(w[i]);
      }
#pragma unroll
      for (int m = 0; m < M; m++) {
        const float4 a = __ldg(reinterpret_cast<const float4*>(x + m * K + k));
        const float4 b = __ldg(reinterpret_cast<const float4*>(x + m * K + k + 4));
#pragma unroll
        for (int i = 0; i < R; i++)
          acc[i][m] += w[i][0] * a.x + w[i][1] * a.y + w[i][2] * a.z + w[i][3] * a.w + w[i][4] * b.x + w[i][5] * b.y + w[i][6] * b.z + w[i][7] * b.w;
      }
    }
  } else {
    pdl_wait();
    pdl_trigger();
    for (int64_t k = lane; k < K; k += kWarp)
#pragma unroll
      for (int i = 0; i < R; i++) {
        const float wk = widen1(row[i], WT, k);
#pragma unroll
        for (int m = 0; m < M; m++) acc[i][m] += wk * x[m * K + k];
      }
  }
  if (o.silu) {
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float g = warp_sum(acc[0][m]) + (o.bias[0] ? o.bias[0][n0] : 0.f), u = warp_sum(acc[1][m]) + (o.bias[1] ? o.bias[1][n0] : 0.f);
      if (lane == 0) o.y[0][m * N + n0] = g / (1.f + expf(-g)) * u;
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < R; i++) {
    const float* bias = pick3(o.bias, seg[i]);
    float* y = pick3(o.y, seg[i]);
    const int64_t ny = pick3(o.n, seg[i]);
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float v = warp_sum(acc[i][m]);
      if (lane == 0 && n0 + i < N) y[m * ny + r[i]] = v + (bias ? bias[r[i]] : 0.f);
    }
  }
}

template <int WT>
void gemv_launch(const GemvOut& o, int nOut, const float* x, int64_t M, int64_t N, int64_t K) {
  bool vec = K % 8 == 0 && (reinterpret_cast<uintptr_t>(x) % 16) == 0;
  for (int i = 0; i < nOut; i++) vec = vec && reinterpret_cast<uintptr_t>(o.w[i]) % 16 == 0;
  const int threads = 256, rowsPerBlock = threads / kWarp * (o.silu ? 1 : kGemvRows);
  const dim3 grid(unsigned((N + rowsPerBlock - 1) / rowsPerBlock));
  switch (M) {
#define LOWBIT_GEMV(MM) case MM: launch(gemv_kernel<WT, MM>, grid, threads, 0, o, x, N, K, vec); break;
    LOWBIT_GEMV(1) LOWBIT_GEMV(2) LOWBIT_GEMV(3) LOWBIT_GEMV(4) LOWBIT_GEMV(5) LOWBIT_GEMV(6) LOWBIT_GEMV(7) LOWBIT_GEMV(8)
#undef LOWBIT_GEMV
  }
}

// ---- elementwise and row kernels
__global__ void f32_to_half_kernel(void* dst, const float* src, int64_t n, bool bf16) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (bf16) static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(src[i]);
    else static_cast<__half*>(dst)[i] = __float2half_rn(src[i]);
  }
}
// The same, 8 values a thread (two 16-byte loads, one 16-byte store): n8 groups of 8, both pointers 16-byte aligned.
__device__ __forceinline__ uint32_t pack_half2(float a, float b, bool bf16) {
  if (bf16) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  const __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<const uint32_t*>(&v);
}
__global__ void f32_to_half8_kernel(uint4* dst, const float4* src, int64_t n8, bool bf16) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n8; i += int64_t(gridDim.x) * blockDim.x) {
    const float4 a = src[2 * i], b = src[2 * i + 1];
    dst[i] = make_uint4(pack_half2(a.x, a.y, bf16), pack_half2(a.z, a.w, bf16), pack_half2(b.x, b.y, bf16), pack_half2(b.z, b.w, bf16));
  }
}

__global__ void bias_rows_kernel(float* y, const float* bias, int64_t rows, int64_t N) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * N; i += int64_t(gridDim.x) * blockDim.x) y[i] += bias[i % N];
}

// One block per row: with a residual, x += residual in place first (the residual add and the next norm in one
// launch); then the mean of squares in float32 (block reduction) and out = x·rsqrt(ms + eps)·w.
__global__ void rmsnorm_kernel(float* out, float* x, const float* residual, const float* w, int64_t D, float eps) {
  pdl_wait();
  pdl_trigger();
  __shared__ float part[32];
  float* xr = x + int64_t(blockIdx.x) * D;
  float* orow = out + int64_t(blockIdx.x) * D;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    float v = xr[i];
    if (residual) {
      v += residual[int64_t(blockIdx.x) * D + i];
      xr[i] = v;
    }
    s += v * v;
  }
  const float r = rsqrtf(block_sum(s, part) / float(D) + eps);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) orow[i] = xr[i] * r * w[i];
}

__global__ void layernorm_kernel(float* y, const float* x, const float* w, const float* b, int64_t D, float eps) {
  pdl_wait();
  pdl_trigger();
  __shared__ float part[32];
  const float* xr = x + int64_t(blockIdx.x) * D;
  float* yr = y + int64_t(blockIdx.x) * D;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += xr[i];
  const float mean = block_sum(s, part) / float(D);
  float v = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
  const float r = rsqrtf(block_sum(v, part) / float(D) + eps);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) yr[i] = (xr[i] - mean) * r * w[i] + b[i];
}

// Rotate-half RoPE in place on x [rows, nH, hd]: angle fl(p·invFreq[i]) in float32 as the ref computes it, then
// sincosf of it.
__global__ void rope_kernel(float* x, const int32_t* pos, const float* invFreq, int64_t rows, int nH, int hd) {
  pdl_wait();
  pdl_trigger();
  const int half = hd / 2;
  const int64_t total = rows * half;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / half;
    const int j = int(i % half);
    const float ang = __fmul_rn(float(pos[r]), invFreq[j]);
    float s, c;
    sincosf(ang, &s, &c);  // full-precision float (not __sincosf): within 2 ulp of the ref's rounded double
    for (int h = 0; h < nH; h++) {
      float* p = x + (r * nH + h) * hd;
      const float a = p[j], b = p[j + half];
      p[j] = a * c - b * s;
      p[j + half] = b * c + a * s;
    }
  }
}

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.f + expf(-g)) * u; }
__global__ void silu_mul_kernel(float* y, const float* g, const float* u, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = silu_times(g[i], u[i]);
}
// The same, 4 values a thread (16-byte loads and store): n4 groups of 4, every pointer 16-byte aligned.
__global__ void silu_mul4_kernel(float4* y, const float4* g, const float4* u, int64_t n4) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n4; i += int64_t(gridDim.x) * blockDim.x) {
    const float4 a = g[i], b = u[i];
    y[i] = make_float4(silu_times(a.x, b.x), silu_times(a.y, b.y), silu_times(a.z, b.z), silu_times(a.w, b.w));
  }
}
__global__ void relu_kernel(float* y, const float* x, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) y[i] = fmaxf(x[i], 0.f);
}
__global__ void add_kernel(float* y, const float* a, const float* b, int64_t n) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) y[i] = a[i] + b[i];
}

__global__ void softmax_kernel(float* y, const float* x, int64_t D) {
  pdl_wait();
  pdl_trigger();
  __shared__ float part[32];
  const float* xr = x + int64_t(blockIdx.x) * D;
  float* yr = y + int64_t(blockIdx.x) * D;
  float m = -FLT_MAX;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) m = fmaxf(m, xr[i]);
  m = warp_max(m);
  __shared__ float mx[32];
  if ((threadIdx.x & 31) == 0) mx[threadIdx.x / 32] = m;
  __syncthreads();
  float t = threadIdx.x < blockDim.x / 32 ? mx[threadIdx.x] : -FLT_MAX;
  if (threadIdx.x < 32) t = warp_max(t);
  if (threadIdx.x == 0) mx[0] = t;
  __syncthreads();
  m = mx[0];
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += expf(xr[i] - m);
  const float inv = 1.f / block_sum(s, part);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) yr[i] = expf(xr[i] - m) * inv;
}

__global__ void embedding_kernel(float* y, const void* table, int wt, const int32_t* ids, int64_t n, int64_t D) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n * D; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / D, d = i % D;
    y[i] = widen1(table, wt, int64_t(ids[r]) * D + d);
  }
}

// Combines n partial online-softmax states (running max m(i), sum l(i), unnormalised output o(i, d)) of one
// (query, head), the block's threads over the hd dims: dst[d] = Σ o(i,d)·e^(m(i) − M) / Σ l(i)·e^(m(i) − M), zeros
// when no state saw a key. With ml (a split's partial for a later merge), dst gets the unnormalised sums and ml the
// pair (M, Σ l·e^(m − M)), or (−inf, 0). Warps of a block merge through shared memory, splits through global memory.
template <typename Mf, typename Lf, typename Of>
__device__ __forceinline__ void merge_softmax_states(int n, int hd, Mf m, Lf l, Of o, float* dst, float* ml) {
  float M = -INFINITY;
  for (int i = 0; i < n; i++) M = fmaxf(M, m(i));
  if (M == -INFINITY) {
    for (int d = threadIdx.x; d < hd; d += blockDim.x) dst[d] = 0.f;
    if (ml && threadIdx.x == 0) { ml[0] = -INFINITY; ml[1] = 0.f; }
    return;
  }
  float tot = 0.f;
  for (int i = 0; i < n; i++) tot += m(i) == -INFINITY ? 0.f : l(i) * expf(m(i) - M);
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float a = 0.f;
    for (int i = 0; i < n; i++) if (m(i) != -INFINITY) a += o(i, d) * expf(m(i) - M);
    dst[d] = ml ? a : a / tot;
  }
  if (ml && threadIdx.x == 0) { ml[0] = M; ml[1] = tot; }
}

// ---- attention: one block per (query token, head); each warp takes every nWarps-th visible key with a running
// max / sum / output (online softmax), lanes holding hd/32 output elements each; the warps then merge. q [B,T,H,hd],
// K/V [B,S,nKV,hd], keyMask [B, pastLen+T] (1 = attend) or null. A query that sees no key gets zeros (the ref).
constexpr int kAttnMaxHd = 256;
// Decode (T = 1) splits the cache over blocks (flash-decoding): gridDim.y blocks per (row, head), each over kps keys,
// write their running max, sum and unnormalised output to part [B·H, splits, hd + 2]; attention_merge_kernel combines
// them. Each warp's chain of dependent key loads is then kps / warps long instead of the whole cache over 16 warps.
__global__ void attention_kernel(float* out, const float* q, const float* K, const float* V, int B, int T, int H,
                                 int nKV, int hd, int64_t S, int64_t pastLen, const int64_t* pastLenDev,
                                 const uint8_t* keyMask, int64_t maskStride, float scale, int64_t window, float* part, int64_t kps) {
  pdl_wait();
  pdl_trigger();
  if (pastLenDev) pastLen = *pastLenDev;  // a captured decode step: the cache length of this replay
  const int h = blockIdx.x % H;
  const int64_t bt = blockIdx.x / H;
  const int b = int(bt / T), t = int(bt % T);
  const int kvh = h / (H / nKV);
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, nWarps = blockDim.x / 32;
  constexpr int kPer = kAttnMaxHd / 32;
  const int per = (hd + 31) / 32;
  const float* qr = q + (bt * H + h) * hd;
  float qv[kPer], o[kPer];
#pragma unroll
  for (int j = 0; j < kPer; j++) {
    const int i = lane + 32 * j;
    qv[j] = j < per && i < hd ? qr[i] : 0.f;
    o[j] = 0.f;
  }
  const int64_t kvLen = maskStride > 0 ? maskStride : pastLen + T;
  int64_t last = pastLen + t, first = window > 0 ? (last - window + 1 > 0 ? last - window + 1 : 0) : 0;
  if (part) {
    const int64_t lo = int64_t(blockIdx.y) * kps;
    first = first > lo ? first : lo;
    last = last < lo + kps - 1 ? last : lo + kps - 1;
  }
  float mx = -INFINITY, sum = 0.f;
  for (int64_t s = first + warp; s <= last; s += nWarps) {
    if (keyMask && !keyMask[int64_t(b) * kvLen + s]) continue;
    const float* kr = K + ((int64_t(b) * S + s) * nKV + kvh) * hd;
    float d = 0.f;
#pragma unroll
    for (int j = 0; j < kPer; j++) {
      const int i = lane + 32 * j;
      if (j < per && i < hd) d += qv[j] * kr[i];
    }
    d = warp_sum(d) * scale;
    const float nm = fmaxf(mx, d);
    const float c = expf(mx - nm), p = expf(d - nm);  // mx = -inf at first: c = 0
    sum = sum * c + p;
    const float* vr = V + ((int64_t(b) * S + s) * nKV + kvh) * hd;
#pragma unroll
    for (int j = 0; j < kPer; j++) {
      const int i = lane + 32 * j;
      if (j < per && i < hd) o[j] = o[j] * c + p * vr[i];
    }
    mx = nm;
  }
  // Merge the warps: per warp (mx, sum) and its o; shared [nWarps][hd].
  extern __shared__ float sh[];
  float* so = sh;                       // [nWarps * hd]
  float* sm = sh + nWarps * hd;         // [nWarps]
  float* ss = sm + nWarps;              // [nWarps]
#pragma unroll
  for (int j = 0; j < kPer; j++) {
    const int i = lane + 32 * j;
    if (j < per && i < hd) so[warp * hd + i] = o[j];
  }
  if (lane == 0) { sm[warp] = mx; ss[warp] = sum; }
  __syncthreads();
  float* prow = part ? part + (bt * H + h) * int64_t(gridDim.y) * (hd + 2) + int64_t(blockIdx.y) * (hd + 2) : nullptr;
  merge_softmax_states(nWarps, hd, [&](int w) { return sm[w]; }, [&](int w) { return ss[w]; }, [&](int w, int d) { return so[w * hd + d]; },
                       prow ? prow + 2 : out + (bt * H + h) * hd, prow);
}

// Decode attention (T = 1, head_dim = 32·PER for PER = 1, 2, 4, 8), one split of kps keys a block (gridDim.y splits):
// each lane holds PER consecutive dims (vector loads of a key's row), each warp takes 8 keys at once (their K and V
// rows requested together, one latency for the 8), then the warps merge as attention_kernel's do and the block writes
// its partial (running max, sum, unnormalised output) for attention_merge_kernel.
template <int PER> struct VecF;
template <> struct VecF<1> { __device__ __forceinline__ static void load(const float* p, float* v) { v[0] = p[0]; } };
template <> struct VecF<2> { __device__ __forceinline__ static void load(const float* p, float* v) { const float2 a = *reinterpret_cast<const float2*>(p); v[0] = a.x; v[1] = a.y; } };
template <> struct VecF<4> { __device__ __forceinline__ static void load(const float* p, float* v) { const float4 a = *reinterpret_cast<const float4*>(p); v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; } };
template <> struct VecF<8> {
  __device__ __forceinline__ static void load(const float* p, float* v) { VecF<4>::load(p, v); VecF<4>::load(p + 4, v + 4); }
};

template <int PER>
__global__ void attention_decode_kernel(float* out, float* part, unsigned* done, const float* q, const float* K, const float* V, int H, int nKV, int64_t S, int64_t pastLen,
                                        const int64_t* pastLenDev, const uint8_t* keyMask, int64_t maskStride, float scale, int64_t window,
                                        int64_t kps) {
  pdl_wait();
  pdl_trigger();
  constexpr int KPW = 8, hd = 32 * PER;
  if (pastLenDev) pastLen = *pastLenDev;
  const int h = blockIdx.x % H, b = blockIdx.x / H, kvh = h / (H / nKV);
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, nWarps = blockDim.x / 32;
  float qv[PER], o[PER];
  VecF<PER>::load(q + int64_t(blockIdx.x) * hd + PER * lane, qv);
#pragma unroll
  for (int i = 0; i < PER; i++) o[i] = 0.f;
  const int64_t kvLen = maskStride > 0 ? maskStride : pastLen + 1, lo0 = int64_t(blockIdx.y) * kps;
  int64_t last = pastLen, first = window > 0 ? (last - window + 1 > 0 ? last - window + 1 : 0) : 0;
  first = first > lo0 ? first : lo0;
  last = last < lo0 + kps - 1 ? last : lo0 + kps - 1;
  float mx = -INFINITY, sum = 0.f;
  for (int64_t base = first + int64_t(warp) * KPW; base <= last; base += int64_t(nWarps) * KPW) {
    float kk[KPW][PER], vv[KPW][PER];
    bool ok[KPW];
#pragma unroll
    for (int j = 0; j < KPW; j++) {
      const int64_t s = base + j;
      ok[j] = s <= last && (!keyMask || keyMask[int64_t(b) * kvLen + s]);
      if (ok[j]) {
        const int64_t off = ((int64_t(b) * S + s) * nKV + kvh) * hd + PER * lane;
        VecF<PER>::load(K + off, kk[j]);
        VecF<PER>::load(V + off, vv[j]);
      }
    }
    float sc[KPW], mnew = mx;
#pragma unroll
    for (int j = 0; j < KPW; j++) {
      float d = 0.f;
#pragma unroll
      for (int i = 0; i < PER; i++) d += ok[j] ? qv[i] * kk[j][i] : 0.f;
      sc[j] = ok[j] ? warp_sum(d) * scale : -INFINITY;
      mnew = fmaxf(mnew, sc[j]);
    }
    if (mnew == -INFINITY) continue;
    const float c = expf(mx - mnew);  // mx = -inf at first: c = 0
    sum *= c;
#pragma unroll
    for (int i = 0; i < PER; i++) o[i] *= c;
#pragma unroll
    for (int j = 0; j < KPW; j++) {
      if (!ok[j]) continue;
      const float p = expf(sc[j] - mnew);
      sum += p;
#pragma unroll
      for (int i = 0; i < PER; i++) o[i] += p * vv[j][i];
    }
    mx = mnew;
  }
  extern __shared__ float sh[];
  float* so = sh;                // [nWarps * hd]
  float* sm = sh + nWarps * hd;  // [nWarps]
  float* ss = sm + nWarps;       // [nWarps]
#pragma unroll
  for (int i = 0; i < PER; i++) so[warp * hd + PER * lane + i] = o[i];
  if (lane == 0) { sm[warp] = mx; ss[warp] = sum; }
  __syncthreads();
  float* prow = part + (int64_t(blockIdx.x) * gridDim.y + blockIdx.y) * (hd + 2);
  merge_softmax_states(nWarps, hd, [&](int w) { return sm[w]; }, [&](int w) { return ss[w]; }, [&](int w, int d) { return so[w * hd + d]; },
                       prow + 2, prow);
  // The last split of this (row, head) to finish merges them all (no second launch): partials made visible, then
  // counted; the counter goes back to 0 for the next call.
  __shared__ bool lastOne;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) lastOne = atomicAdd(&done[blockIdx.x], 1u) == gridDim.y - 1;
  __syncthreads();
  if (!lastOne) return;
  __threadfence();
  const float* p = part + int64_t(blockIdx.x) * gridDim.y * (hd + 2);  // other blocks wrote it: read past L1
  merge_softmax_states(int(gridDim.y), hd, [&](int i) { return __ldcg(p + int64_t(i) * (hd + 2)); },
                       [&](int i) { return __ldcg(p + int64_t(i) * (hd + 2) + 1); }, [&](int i, int d) { return __ldcg(p + int64_t(i) * (hd + 2) + 2 + d); },
                       out + int64_t(blockIdx.x) * hd, nullptr);
  if (threadIdx.x == 0) done[blockIdx.x] = 0;
}

// Prefill attention (T > 1), tiled: a block of 128 threads takes 32 queries of one (row, head) and walks the visible
// keys in tiles of 32, K and V tiles in shared memory. Thread (query qi, quarter j4) scores keys j4, j4+4, … of the
// tile, the 4 threads of a query share the running max and sum through shuffles, and the thread keeps output dims
// j4, j4+4, … (D4 = ceil(hd/4) of them at most). Causal, key mask and sliding window as attention_kernel; a query
// that sees no key gets zeros. Shared: Q, K, V tiles [32][hd + 1] (padded: no bank conflicts) and P [32][33].
constexpr int kPfQ = 32, kPfK = 32;
template <int D4>
__global__ void attention_prefill_kernel(float* out, const float* q, const float* K, const float* V, int T, int H, int nKV, int hd,
                                         int64_t S, int64_t pastLen, const uint8_t* keyMask, int64_t maskStride, float scale, int64_t window) {
  pdl_wait();
  pdl_trigger();
  extern __shared__ float sh[];
  const int ld = hd + 1;
  float* Qs = sh;                 // [kPfQ][ld]
  float* Ks = Qs + kPfQ * ld;     // [kPfK][ld]
  float* Vs = Ks + kPfK * ld;     // [kPfK][ld]
  float* Ps = Vs + kPfK * ld;     // [kPfQ][kPfK + 1]
  const int bh = blockIdx.y, b = bh / H, h = bh % H, kvh = h / (H / nKV);
  const int t0 = blockIdx.x * kPfQ;
  const int tid = threadIdx.x, qi = tid / 4, j4 = tid % 4;
  const int64_t kvLen = maskStride > 0 ? maskStride : pastLen + T;
  // Q tile (rows past T are zeros, never written out).
  for (int i = tid; i < kPfQ * hd; i += blockDim.x) {
    const int r = i / hd, d = i % hd;
    Qs[r * ld + d] = t0 + r < T ? q[((int64_t(b) * T + t0 + r) * H + h) * hd + d] : 0.f;
  }
  const int tq = t0 + qi;                       // this thread's query (may be past T)
  const int64_t pos = pastLen + (tq < T ? tq : T - 1);
  const int64_t lastPos = pastLen + (t0 + kPfQ - 1 < T ? t0 + kPfQ - 1 : T - 1);
  const int64_t firstPos = pastLen + t0;
  const int64_t kFirst = window > 0 ? (firstPos - window + 1 > 0 ? firstPos - window + 1 : 0) : 0;
  float o[D4];
#pragma unroll
  for (int v = 0; v < D4; v++) o[v] = 0.f;
  float mx = -INFINITY, sum = 0.f;
  for (int64_t k0 = kFirst - kFirst % kPfK; k0 <= lastPos; k0 += kPfK) {
    __syncthreads();  // the previous tile's K, V and P are no longer read
    for (int i = tid; i < kPfK * hd; i += blockDim.x) {
      const int r = i / hd, d = i % hd;
      const int64_t sIdx = k0 + r;
      const bool in = sIdx < S;
      const int64_t off = ((int64_t(b) * S + (in ? sIdx : 0)) * nKV + kvh) * hd + d;
      Ks[r * ld + d] = in ? K[off] : 0.f;
      Vs[r * ld + d] = in ? V[off] : 0.f;
    }
    __syncthreads();
    // Scores of this thread's 8 keys.
    float sc[kPfK / 4], tmax = -INFINITY;
#pragma unroll
    for (int u = 0; u < kPfK / 4; u++) {
      const int kk = j4 + 4 * u;
      const int64_t sIdx = k0 + kk;
      bool ok = tq < T && sIdx <= pos && sIdx < S && (window <= 0 || sIdx >= pos - window + 1);
      if (ok && keyMask) ok = keyMask[int64_t(b) * kvLen + sIdx] != 0;
      float d = 0.f;
      if (ok)
        for (int e = 0; e < hd; e++) d += Qs[qi * ld + e] * Ks[kk * ld + e];
      sc[u] = ok ? d * scale : -INFINITY;
      tmax = fmaxf(tmax, sc[u]);
    }
    // The query's 4 threads are neighbouring lanes: their max and sum by shuffles.
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
    const float mnew = fmaxf(mx, tmax);
    float psum = 0.f;
#pragma unroll
    for (int u = 0; u < kPfK / 4; u++) {
      const float p = mnew == -INFINITY || sc[u] == -INFINITY ? 0.f : expf(sc[u] - mnew);
      Ps[qi * (kPfK + 1) + j4 + 4 * u] = p;
      psum += p;
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    psum += __shfl_xor_sync(0xffffffffu, psum, 2);
    const float c = mnew == -INFINITY ? 1.f : expf(mx - mnew);  // mx = -inf at first: c = 0
    sum = sum * c + psum;
    mx = mnew;
    __syncthreads();  // P of every query written
#pragma unroll
    for (int v = 0; v < D4; v++) {
      const int d = j4 + 4 * v;
      if (d >= hd) break;
      float a = o[v] * c;
      for (int kk = 0; kk < kPfK; kk++) a += Ps[qi * (kPfK + 1) + kk] * Vs[kk * ld + d];
      o[v] = a;
    }
  }
  if (tq >= T) return;
  float* orow = out + ((int64_t(b) * T + tq) * H + h) * hd;
#pragma unroll
  for (int v = 0; v < D4; v++) {
    const int d = j4 + 4 * v;
    if (d >= hd) break;
    orow[d] = mx == -INFINITY ? 0.f : o[v] / sum;
  }
}

// Prefill attention on the tensor cores (T > 1; hd = 8·ND, 16-byte-aligned rows): flash-attention 2 in 3xTF32.
// A block of 4 warps takes 64 queries of one (row, head), each warp 16 of them, and walks the visible keys in tiles
// of 64 (K and V tiles in shared memory by cp.async, V's landing while S is computed; rows padded to hd + 4 floats:
// the fragment loads below hit 32 banks).
// S = Q·Kᵀ and O += P·V run as mma.m16n8k8 with TF32 operands, each operand split into a TF32 part and the TF32
// rounding of its remainder, and three products (small·big, big·small, big·big) summed in float32: about float32's
// precision (the ref's, within 1e-5), at a fraction of the CUDA-core kernel's time, which shared-memory loads bound.
// The online softmax runs on S's accumulator registers: a thread holds rows g and g+8 of its warp's 16 (g = lane/4)
// and columns 2·tg, 2·tg+1 of each 8-key tile (tg = lane%4); the row's 4 threads share max and sum by shuffles.
// P goes from those registers straight into P·V's A operand: its k order inside an 8-key step is free as long as
// V's rows follow it, so A's column tg is key 2·tg and column tg+4 key 2·tg+1, and B reads V's rows 2·tg, 2·tg+1.
// Causal, key mask and sliding window as attention_kernel; a query that sees no key gets zeros. The heaviest query
// blocks (the last, with the most keys) are launched first.
constexpr int kTcQ = 64, kTcK = 64;
__device__ __forceinline__ uint32_t tf32_of(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ void tf32_split(float x, uint32_t& big, uint32_t& small) {
  big = tf32_of(x);
  small = tf32_of(x - __uint_as_float(big));
}
__device__ __forceinline__ void mma_tf32(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// c[n] += a·b[n] for NB tiles in about float32 precision: a = (ab, as), b[n] = (bb, bs), big and small TF32 parts
// ({b0, b1} each). The three products of one tile depend on each other through c[n], so they go in three sweeps over
// the tiles: NB independent MMAs between two dependent ones.
// 16 bytes global → shared without a register round trip (cp.async; zeros when !valid, src then unread).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = unsigned(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

template <int NB>
__device__ __forceinline__ void mma_3xtf32(float (*c)[4], const uint32_t (&ab)[4], const uint32_t (&as)[4], const uint32_t (*bb)[2],
                                           const uint32_t (*bs)[2]) {
#pragma unroll
  for (int n = 0; n < NB; n++) mma_tf32(c[n], as[0], as[1], as[2], as[3], bb[n][0], bb[n][1]);
#pragma unroll
  for (int n = 0; n < NB; n++) mma_tf32(c[n], ab[0], ab[1], ab[2], ab[3], bs[n][0], bs[n][1]);
#pragma unroll
  for (int n = 0; n < NB; n++) mma_tf32(c[n], ab[0], ab[1], ab[2], ab[3], bb[n][0], bb[n][1]);
}
// O's output tiles N0 … N0+7 (fewer at the end) += P·V for one 8-key step: vb points at V's row 2·tg, column g.
template <int ND, int N0>
__device__ __forceinline__ void pv_tiles(float (*o)[4], const float* vb, int ld, const uint32_t (&ab)[4], const uint32_t (&as)[4]) {
  if constexpr (N0 < ND) {
    constexpr int NB = ND - N0 < 8 ? ND - N0 : 8;
    uint32_t bb[NB][2], bs[NB][2];
#pragma unroll
    for (int n = 0; n < NB; n++) {
      tf32_split(vb[8 * (N0 + n)], bb[n][0], bs[n][0]);
      tf32_split(vb[ld + 8 * (N0 + n)], bb[n][1], bs[n][1]);
    }
    mma_3xtf32<NB>(o + N0, ab, as, bb, bs);
    pv_tiles<ND, N0 + 8>(o, vb, ld, ab, as);
  }
}

template <int ND>
__global__ void __launch_bounds__(128) attention_prefill_tc_kernel(float* out, const float* q, const float* K, const float* V, int T, int H,
                                                                   int nKV, int64_t S, int64_t pastLen, const uint8_t* keyMask,
                                                                   int64_t maskStride, float scale, int64_t window) {
  pdl_wait();
  pdl_trigger();
  constexpr int hd = 8 * ND, ld = hd + 4, V4 = hd / 4;
  extern __shared__ float sh[];
  float* Qs = sh;                     // [kTcQ][ld]
  float* Ks = Qs + kTcQ * ld;         // [kTcK][ld]
  float* Vs = Ks + kTcK * ld;         // [kTcK][ld]
  int* kOk = reinterpret_cast<int*>(Vs + kTcK * ld);  // [kTcK]: the key exists and the mask lets it be seen
  const int bh = blockIdx.y, b = bh / H, h = bh % H, kvh = h / (H / nKV);
  const int t0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * kTcQ;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tg = lane & 3;
  const int64_t kvLen = maskStride > 0 ? maskStride : pastLen + T;
  // Every tile goes global → shared by cp.async, all of a thread's copies in flight at once: Q with the first K tile
  // (group 1), then V (group 2), which lands while S is computed.
  for (int i = tid; i < kTcQ * V4; i += blockDim.x) {
    const int r = i / V4, c = i % V4;
    const bool in = t0 + r < T;
    cp_async16(Qs + r * ld + 4 * c, in ? q + ((int64_t(b) * T + t0 + r) * H + h) * hd + 4 * c : q, in);
  }
  // This thread's two rows (g and g + 8 of the warp's 16) and their positions; rows past T see nothing.
  const int r0 = warp * 16 + g, r1 = r0 + 8;
  const bool live0 = t0 + r0 < T, live1 = t0 + r1 < T;
  const int64_t pos0 = pastLen + t0 + r0, pos1 = pastLen + t0 + r1;
  const int64_t lastPos = pastLen + (t0 + kTcQ - 1 < T ? t0 + kTcQ - 1 : T - 1);
  const int64_t firstPos = pastLen + t0;
  const int64_t kFirst = window > 0 ? (firstPos - window + 1 > 0 ? firstPos - window + 1 : 0) : 0;
  const float sl2 = scale * 1.4426950408889634f;  // scores in log2 units: exp2 below
  float o[ND][4];
#pragma unroll
  for (int n = 0; n < ND; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
  for (int64_t k0 = kFirst - kFirst % kTcK; k0 <= lastPos; k0 += kTcK) {
    __syncthreads();  // the previous tile's K, V and flags are no longer read
    for (int i = tid; i < kTcK * V4; i += blockDim.x) {
      const int r = i / V4, c = i % V4;
      const int64_t s = k0 + r;
      cp_async16(Ks + r * ld + 4 * c, s < S ? K + ((int64_t(b) * S + s) * nKV + kvh) * hd + 4 * c : K, s < S);
    }
    cp_async_commit();
    for (int i = tid; i < kTcK * V4; i += blockDim.x) {
      const int r = i / V4, c = i % V4;
      const int64_t s = k0 + r;
      cp_async16(Vs + r * ld + 4 * c, s < S ? V + ((int64_t(b) * S + s) * nKV + kvh) * hd + 4 * c : V, s < S);
    }
    cp_async_commit();
    if (tid < kTcK) {
      const int64_t s = k0 + tid;
      kOk[tid] = s < S && (!keyMask || keyMask[int64_t(b) * kvLen + s] != 0);
    }
    cp_async_wait<1>();  // this thread's Q and K copies
    __syncthreads();     // everyone's
    // S = Q·Kᵀ for this warp's 16 rows and the tile's 64 keys (8 tiles of 8).
    float sc[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
    for (int e = 0; e < ND; e++) {
      uint32_t ab[4], as[4];
      const float* qa = Qs + (warp * 16 + g) * ld + 8 * e + tg;
      tf32_split(qa[0], ab[0], as[0]);
      tf32_split(qa[8 * ld], ab[1], as[1]);
      tf32_split(qa[4], ab[2], as[2]);
      tf32_split(qa[8 * ld + 4], ab[3], as[3]);
      uint32_t bb[8][2], bs[8][2];
#pragma unroll
      for (int n = 0; n < 8; n++) {
        const float* kb = Ks + (8 * n + g) * ld + 8 * e + tg;
        tf32_split(kb[0], bb[n][0], bs[n][0]);
        tf32_split(kb[4], bb[n][1], bs[n][1]);
      }
      mma_3xtf32<8>(sc, ab, as, bb, bs);
    }
    // Mask, scale, and the rows' new maxima.
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < 8; n++) {
#pragma unroll
      for (int j = 0; j < 2; j++) {
        const int kk = 8 * n + 2 * tg + j;
        const int64_t s = k0 + kk;
        const bool ok = kOk[kk] != 0;
        const bool ok0 = ok && live0 && s <= pos0 && (window <= 0 || s >= pos0 - window + 1);
        const bool ok1 = ok && live1 && s <= pos1 && (window <= 0 || s >= pos1 - window + 1);
        sc[n][j] = ok0 ? sc[n][j] * sl2 : -INFINITY;
        sc[n][2 + j] = ok1 ? sc[n][2 + j] * sl2 : -INFINITY;
        mx0 = fmaxf(mx0, sc[n][j]);
        mx1 = fmaxf(mx1, sc[n][2 + j]);
      }
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    const float c0 = mn0 == -INFINITY ? 1.f : exp2f(m0 - mn0), c1 = mn1 == -INFINITY ? 1.f : exp2f(m1 - mn1);  // m = -inf: 0
    float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
    for (int n = 0; n < 8; n++) {
#pragma unroll
      for (int j = 0; j < 2; j++) {
        sc[n][j] = sc[n][j] == -INFINITY ? 0.f : exp2f(sc[n][j] - mn0);
        sc[n][2 + j] = sc[n][2 + j] == -INFINITY ? 0.f : exp2f(sc[n][2 + j] - mn1);
        ps0 += sc[n][j];
        ps1 += sc[n][2 + j];
      }
    }
    l0 = l0 * c0 + ps0;  // this thread's part of the row sums; the 4 parts are added at the end
    l1 = l1 * c1 + ps1;
    m0 = mn0;
    m1 = mn1;
#pragma unroll
    for (int n = 0; n < ND; n++) {
      o[n][0] *= c0; o[n][1] *= c0;
      o[n][2] *= c1; o[n][3] *= c1;
    }
    // O += P·V, 8 keys a step.
    cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < 8; kk++) {
      uint32_t ab[4], as[4];
      tf32_split(sc[kk][0], ab[0], as[0]);  // (row g,     key 2tg)
      tf32_split(sc[kk][2], ab[1], as[1]);  // (row g + 8, key 2tg)
      tf32_split(sc[kk][1], ab[2], as[2]);  // (row g,     key 2tg + 1)
      tf32_split(sc[kk][3], ab[3], as[3]);  // (row g + 8, key 2tg + 1)
      pv_tiles<ND, 0>(o, Vs + (8 * kk + 2 * tg) * ld + g, ld, ab, as);  // in groups of 8 tiles, as S's
    }
  }
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  if (live0) {
    float* orow = out + ((int64_t(b) * T + t0 + r0) * H + h) * hd + 2 * tg;
#pragma unroll
    for (int n = 0; n < ND; n++)
      *reinterpret_cast<float2*>(orow + 8 * n) = m0 == -INFINITY ? make_float2(0.f, 0.f) : make_float2(o[n][0] / l0, o[n][1] / l0);
  }
  if (live1) {
    float* orow = out + ((int64_t(b) * T + t0 + r1) * H + h) * hd + 2 * tg;
#pragma unroll
    for (int n = 0; n < ND; n++)
      *reinterpret_cast<float2*>(orow + 8 * n) = m1 == -INFINITY ? make_float2(0.f, 0.f) : make_float2(o[n][2] / l1, o[n][3] / l1);
  }
}

template <int ND>
void attention_prefill_tc(float* out, const float* q, const float* K, const float* V, int B, int T, int H, int nKV, int64_t S, int64_t pastLen,
                          const uint8_t* keyMask, int64_t maskStride, float scale, int64_t window) {
  constexpr int ld = 8 * ND + 4;
  const size_t shmem = size_t(kTcQ + 2 * kTcK) * ld * sizeof(float) + kTcK * sizeof(int);
  static bool raised = false;
  if (!raised) {
    cuda_check(cudaFuncSetAttribute(attention_prefill_tc_kernel<ND>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shmem)), "cudaFuncSetAttribute");
    raised = true;
  }
  const dim3 grid(unsigned((T + kTcQ - 1) / kTcQ), unsigned(int64_t(B) * H));
  launch(attention_prefill_tc_kernel<ND>, grid, 128, shmem, out, q, K, V, T, H, nKV, S, pastLen, keyMask, maskStride, scale, window);
}

// The splits of a decode attention: out = Σ_s o_s·e^(m_s − M) / Σ_s l_s·e^(m_s − M); zeros where no key was seen.
__global__ void attention_merge_kernel(float* out, const float* part, int hd, int nSplit) {
  pdl_wait();
  pdl_trigger();
  const float* p = part + int64_t(blockIdx.x) * nSplit * (hd + 2);
  merge_softmax_states(nSplit, hd, [&](int i) { return p[int64_t(i) * (hd + 2)]; }, [&](int i) { return p[int64_t(i) * (hd + 2) + 1]; },
                       [&](int i, int d) { return p[int64_t(i) * (hd + 2) + 2 + d]; }, out + int64_t(blockIdx.x) * hd, nullptr);
}

// Argmax of rows in two stages (one block over a 128k vocabulary took 194 µs): blocks of 256 threads each reduce a
// chunk of a row to (max, first index of it), then one block per row reduces the chunks' pairs. Ties give the smallest
// index, as the ref's scan does; a row holding a NaN or an infinity gives -1 (greedy decoding stops on it).
__device__ __forceinline__ void argmax_merge(float& v, int64_t& idx, float ov, int64_t oi) {
  if (ov > v || (ov == v && oi < idx)) { v = ov; idx = oi; }
}
__device__ void argmax_block(float& v, int64_t& idx) {
  __shared__ float bv[32];
  __shared__ int64_t bi[32];
  for (int o = 16; o > 0; o >>= 1) argmax_merge(v, idx, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, idx, o));
  if ((threadIdx.x & 31) == 0) { bv[threadIdx.x / 32] = v; bi[threadIdx.x / 32] = idx; }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < int(blockDim.x / 32); w++) argmax_merge(v, idx, bv[w], bi[w]);
}
constexpr int64_t kArgmaxChunk = 4096;
__global__ void argmax_chunks_kernel(float* pv, int64_t* pi, const float* x, int64_t D, int nChunks) {
  pdl_wait();
  pdl_trigger();
  const int64_t lo = int64_t(blockIdx.x) * kArgmaxChunk, hi = lo + kArgmaxChunk < D ? lo + kArgmaxChunk : D;
  const float* xr = x + int64_t(blockIdx.y) * D;
  float v = -INFINITY;
  int64_t idx = lo;
  bool bad = false;
  for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
    const float a = xr[i];
    bad = bad || !isfinite(a);
    if (a > v) { v = a; idx = i; }
  }
  bad = __syncthreads_or(bad);
  argmax_block(v, idx);
  // A chunk holding a NaN or an infinity reports NaN: its row's answer is -1 (generate() names the value).
  if (threadIdx.x == 0) { pv[int64_t(blockIdx.y) * nChunks + blockIdx.x] = bad ? __int_as_float(0x7fc00000) : v; pi[int64_t(blockIdx.y) * nChunks + blockIdx.x] = idx; }
}
__global__ void argmax_final_kernel(int32_t* out, const float* pv, const int64_t* pi, int nChunks) {
  pdl_wait();
  pdl_trigger();
  float v = -INFINITY;
  int64_t idx = 0;
  bool bad = false;
  for (int c = threadIdx.x; c < nChunks; c += blockDim.x) {
    const float cv = pv[int64_t(blockIdx.x) * nChunks + c];
    bad = bad || isnan(cv);
    argmax_merge(v, idx, cv, pi[int64_t(blockIdx.x) * nChunks + c]);
  }
  bad = __syncthreads_or(bad);
  argmax_block(v, idx);
  if (threadIdx.x == 0) out[blockIdx.x] = bad ? -1 : int32_t(idx);
}

// KV cache append: dst [B, cap, row] at position `len` (or *lenDev in a captured step) ← src [B, T, row].
__global__ void kv_write_kernel(float* dst, const float* src, int64_t B, int64_t T, int64_t cap, int64_t row, int64_t len,
                                const int64_t* lenDev) {
  pdl_wait();
  pdl_trigger();
  if (lenDev) len = *lenDev;
  const int64_t n = B * T * row;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / (T * row), r = i % (T * row);
    dst[(b * cap + len) * row + r] = src[i];
  }
}

// RoPE of q and k and the KV append in one launch (a decode step's 4 launches → 1): one thread per (row, head of q
// or k, rotation pair). q [rows, nH, hd] and k [rows, nKV, hd] are rotated in place as rope_kernel does; k's and
// v's rows also go to the caches kc/vc [B, cap, nKV, hd] at position len + t (len from lenDev in a captured step).
__global__ void rope_append_kernel(float* q, float* k, const float* v, const int32_t* pos, const float* invFreq, float* kc, float* vc,
                                   int64_t B, int64_t T, int nH, int nKV, int hd, int64_t cap, int64_t len, const int64_t* lenDev) {
  pdl_wait();
  pdl_trigger();
  if (lenDev) len = *lenDev;
  const int half = hd / 2, heads = nH + nKV;
  const int64_t total = B * T * heads * half;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int j = int(i % half);
    const int h = int((i / half) % heads);
    const int64_t r = i / (int64_t(half) * heads);
    const float ang = __fmul_rn(float(pos[r]), invFreq[j]);
    float sn, cs;
    sincosf(ang, &sn, &cs);
    float* p = h < nH ? q + (r * nH + h) * hd : k + (r * nKV + (h - nH)) * hd;
    const float a = p[j], b = p[j + half];
    const float a2 = a * cs - b * sn, b2 = b * cs + a * sn;
    p[j] = a2;
    p[j + half] = b2;
    if (h >= nH) {
      const int kh = h - nH;
      const int64_t bb = r / T, t = r % T;
      const int64_t o = ((bb * cap + len + t) * nKV + kh) * hd;
      kc[o + j] = a2;
      kc[o + j + half] = b2;
      const float* vr = v + (r * nKV + kh) * hd;
      vc[o + j] = vr[j];
      vc[o + j + half] = vr[j + half];
    }
  }
}

// Random weights for benchmarks (a hash per element; the same magnitudes as src/models/random.ts).
__global__ void fill_random_kernel(void* dst, int wt, int64_t n, uint32_t seed, float stdv) {
  pdl_wait();
  pdl_trigger();
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed ^ uint32_t(i >> 32) * 40503u;
    h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
    const float u = (float(h) / 4294967296.f * 2.f - 1.f) * stdv * 1.7320508f;
    if (wt == W_F32) static_cast<float*>(dst)[i] = u;
    else if (wt == W_BF16) static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(u);
    else static_cast<__half*>(dst)[i] = __float2half_rn(u);
  }
}

// Holds the stream for about `ns` nanoseconds (benchmarks: queue a step's launches behind it to time the device alone).
__global__ void spin_kernel(int64_t ns) {
  pdl_wait();
  pdl_trigger();
  const int64_t t0 = clock64();
  // clock64 counts SM cycles; ~2 GHz, so ns·2 cycles, checked with __nanosleep steps.
  while (clock64() - t0 < ns * 2) __nanosleep(1000);
}

}  // namespace

void gemv_multi(float* const* ys, const void* const* ws, const int64_t* ns, const float* const* biases, int nOut, const float* x,
                int wt, int64_t M, int64_t K) {
  GemvOut o{};
  int64_t start = 0;
  for (int i = 0; i < 3; i++) {
    const int j = i < nOut ? i : nOut - 1;  // unused segments repeat the last one (start past N: never chosen)
    o.y[i] = ys[j];
    o.w[i] = ws[j];
    o.n[i] = ns[j];
    o.bias[i] = biases[j];
    o.start[i] = i < nOut ? start : INT64_MAX;
    if (i < nOut) start += ns[i];
  }
  const int64_t N = start;
  if (wt == W_F32) gemv_launch<W_F32>(o, nOut, x, M, N, K);
  else if (wt == W_BF16) gemv_launch<W_BF16>(o, nOut, x, M, N, K);
  else gemv_launch<W_F16>(o, nOut, x, M, N, K);
  cuda_check(cudaGetLastError(), "gemv launch");
}

void gemv_silu(float* y, const float* x, const void* wGate, const void* wUp, const float* bGate, const float* bUp, int wt, int64_t M,
               int64_t N, int64_t K) {
  GemvOut o{};
  o.silu = true;
  o.w[0] = wGate; o.w[1] = wUp; o.w[2] = wUp;
  o.y[0] = o.y[1] = o.y[2] = y;
  o.bias[0] = bGate; o.bias[1] = bUp; o.bias[2] = bUp;
  o.n[0] = o.n[1] = o.n[2] = N;
  o.start[0] = 0; o.start[1] = o.start[2] = INT64_MAX;
  if (wt == W_F32) gemv_launch<W_F32>(o, 2, x, M, N, K);
  else if (wt == W_BF16) gemv_launch<W_BF16>(o, 2, x, M, N, K);
  else gemv_launch<W_F16>(o, 2, x, M, N, K);
}

void gemv(float* y, const float* x, const void* w, int wt, const float* bias, int64_t M, int64_t N, int64_t K) {
  gemv_multi(&y, &w, &N, &bias, 1, x, wt, M, K);
}

void f32_to_half(void* dst, const float* src, int64_t n, bool bf16) {
  if (n % 8 == 0 && (uintptr_t(dst) | uintptr_t(src)) % 16 == 0)
    launch(f32_to_half8_kernel, grid_for(n / 8), 256, 0, static_cast<uint4*>(dst), reinterpret_cast<const float4*>(src), n / 8, bf16);
  else
    launch(f32_to_half_kernel, grid_for(n), 256, 0, dst, src, n, bf16);
}

void bias_rows(float* y, const float* bias, int64_t rows, int64_t N) {
  launch(bias_rows_kernel, grid_for(rows * N), 256, 0, y, bias, rows, N);
  cuda_check(cudaGetLastError(), "bias launch");
}

void rmsnorm(float* y, const float* x, const float* w, int64_t rows, int64_t D, float eps) {
  if (rows == 0) return;
  launch(rmsnorm_kernel, unsigned(rows), D >= 4096 ? 1024 : D >= 1024 ? 512 : 256, 0, y, const_cast<float*>(x), nullptr, w, D, eps);
  cuda_check(cudaGetLastError(), "rmsnorm launch");
}

void add_rmsnorm(float* out, float* x, const float* y, const float* w, int64_t rows, int64_t D, float eps) {
  if (rows == 0) return;
  launch(rmsnorm_kernel, unsigned(rows), D >= 4096 ? 1024 : D >= 1024 ? 512 : 256, 0, out, x, y, w, D, eps);
  cuda_check(cudaGetLastError(), "add_rmsnorm launch");
}

void layernorm(float* y, const float* x, const float* w, const float* b, int64_t rows, int64_t D, float eps) {
  if (rows == 0) return;
  launch(layernorm_kernel, unsigned(rows), 256, 0, y, x, w, b, D, eps);
  cuda_check(cudaGetLastError(), "layernorm launch");
}

void rope(float* x, const int32_t* pos, const float* invFreq, int64_t rows, int nH, int hd) {
  if (rows == 0) return;
  launch(rope_kernel, grid_for(rows * (hd / 2)), 256, 0, x, pos, invFreq, rows, nH, hd);
  cuda_check(cudaGetLastError(), "rope launch");
}

void silu_mul(float* y, const float* g, const float* u, int64_t n) {
  if (n == 0) return;
  if (n % 4 == 0 && (uintptr_t(y) | uintptr_t(g) | uintptr_t(u)) % 16 == 0)
    launch(silu_mul4_kernel, grid_for(n / 4), 256, 0, reinterpret_cast<float4*>(y), reinterpret_cast<const float4*>(g),
           reinterpret_cast<const float4*>(u), n / 4);
  else
    launch(silu_mul_kernel, grid_for(n), 256, 0, y, g, u, n);
}
void relu(float* y, const float* x, int64_t n) {
  if (n == 0) return;
  launch(relu_kernel, grid_for(n), 256, 0, y, x, n);
  cuda_check(cudaGetLastError(), "relu launch");
}
void add(float* y, const float* a, const float* b, int64_t n) {
  if (n == 0) return;
  launch(add_kernel, grid_for(n), 256, 0, y, a, b, n);
  cuda_check(cudaGetLastError(), "add launch");
}
void softmax(float* y, const float* x, int64_t rows, int64_t D) {
  if (rows == 0) return;
  launch(softmax_kernel, unsigned(rows), 256, 0, y, x, D);
  cuda_check(cudaGetLastError(), "softmax launch");
}
void embedding(float* y, const void* table, int wt, const int32_t* ids, int64_t n, int64_t D) {
  if (n == 0) return;
  launch(embedding_kernel, grid_for(n * D), 256, 0, y, table, wt, ids, n, D);
  cuda_check(cudaGetLastError(), "embedding launch");
}

void attention(float* out, const float* q, const float* K, const float* V, int B, int T, int H, int nKV, int hd,
               int64_t S, int64_t pastLen, const int64_t* pastLenDev, const uint8_t* keyMask, int64_t maskStride,
               float scale, int64_t window) {
  if (hd > kAttnMaxHd) throw CudaError("attention: head_dim " + std::to_string(hd) + " is above the kernel's " + std::to_string(kAttnMaxHd));
  if (int64_t(B) * T * H == 0) return;
  const int threads = 256, nWarps = threads / 32;
  const size_t shmem = size_t(nWarps) * (hd + 2) * sizeof(float);
  if (T == 1) {
    // Flash-decoding: splits of kps keys over the cache's capacity S (fixed for a cache, so a captured step keeps
    // its grid while the length grows; splits past the length exit at once), at most 256 of them.
    const int64_t kps = S <= 256 * 32 ? 32 : (S + 255) / 256;
    const int nSplit = int((S + kps - 1) / kps);
    float* part = static_cast<float*>(scratch(4, size_t(B) * H * nSplit * (hd + 2) * sizeof(float)));
    unsigned* done = static_cast<unsigned*>(scratch_zeroed(5, size_t(B) * H * sizeof(unsigned)));
    const dim3 grid(unsigned(int64_t(B) * H), unsigned(nSplit));
    const size_t dshmem = size_t(4) * (hd + 2) * sizeof(float);  // 4 warps × 8 keys = one split of 32 in one pass
    const uintptr_t addr = uintptr_t(q) | uintptr_t(K) | uintptr_t(V);
    const int vecBytes = hd >= 128 ? 16 : hd == 64 ? 8 : 4;  // the decode kernel's vector loads
    switch ((addr % vecBytes) == 0 ? hd : 0) {
      case 32: launch(attention_decode_kernel<1>, grid, 128, dshmem, out, part, done, q, K, V, H, nKV, S, pastLen, pastLenDev, keyMask, maskStride, scale, window, kps); break;
      case 64: launch(attention_decode_kernel<2>, grid, 128, dshmem, out, part, done, q, K, V, H, nKV, S, pastLen, pastLenDev, keyMask, maskStride, scale, window, kps); break;
      case 128: launch(attention_decode_kernel<4>, grid, 128, dshmem, out, part, done, q, K, V, H, nKV, S, pastLen, pastLenDev, keyMask, maskStride, scale, window, kps); break;
      case 256: launch(attention_decode_kernel<8>, grid, 128, dshmem, out, part, done, q, K, V, H, nKV, S, pastLen, pastLenDev, keyMask, maskStride, scale, window, kps); break;
      default:
        launch(attention_kernel, grid, threads, shmem, out, q, K, V, B, T, H, nKV, hd, S, pastLen, pastLenDev, keyMask, maskStride, scale, window, part, kps);
        launch(attention_merge_kernel, unsigned(int64_t(B) * H), 128, 0, out, static_cast<const float*>(part), hd, nSplit);
    }
    return;
  }
  if (!pastLenDev) {
    // Prefill on the tensor cores where head_dim has a kernel and the rows are 16-byte aligned (LOWBIT_CUDA_ATTN_TC=0:
    // the CUDA-core kernel below, for A/B runs).
    static const bool tc = [] { const char* e = getenv("LOWBIT_CUDA_ATTN_TC"); return !(e && e[0] == '0'); }();
    if (tc && ((uintptr_t(q) | uintptr_t(K) | uintptr_t(V) | uintptr_t(out)) % 16) == 0) {
      switch (hd) {
        case 32: attention_prefill_tc<4>(out, q, K, V, B, T, H, nKV, S, pastLen, keyMask, maskStride, scale, window); return;
        case 64: attention_prefill_tc<8>(out, q, K, V, B, T, H, nKV, S, pastLen, keyMask, maskStride, scale, window); return;
        case 80: attention_prefill_tc<10>(out, q, K, V, B, T, H, nKV, S, pastLen, keyMask, maskStride, scale, window); return;
        case 96: attention_prefill_tc<12>(out, q, K, V, B, T, H, nKV, S, pastLen, keyMask, maskStride, scale, window); return;
        case 128: attention_prefill_tc<16>(out, q, K, V, B, T, H, nKV, S, pastLen, keyMask, maskStride, scale, window); return;
        default: break;
      }
    }
    // Otherwise the tiled CUDA-core kernel (one block per 32 queries of a (row, head)).
    const size_t pshmem = (size_t(kPfQ + 2 * kPfK) * (hd + 1) + size_t(kPfQ) * (kPfK + 1)) * sizeof(float);
    const dim3 pgrid(unsigned((T + kPfQ - 1) / kPfQ), unsigned(int64_t(B) * H));
    if (hd <= 128) {
      static bool raised = false;
      if (!raised) {
        cuda_check(cudaFuncSetAttribute(attention_prefill_kernel<32>, cudaFuncAttributeMaxDynamicSharedMemorySize, int((3 * 32 * 129 + 32 * 33) * 4)), "cudaFuncSetAttribute");
        raised = true;
      }
      launch(attention_prefill_kernel<32>, pgrid, 128, pshmem, out, q, K, V, T, H, nKV, hd, S, pastLen, keyMask, maskStride, scale, window);
      return;
    }
    static bool raised256 = false;
    if (!raised256) {
      cuda_check(cudaFuncSetAttribute(attention_prefill_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, int((3 * 32 * 257 + 32 * 33) * 4)), "cudaFuncSetAttribute");
      raised256 = true;
    }
    launch(attention_prefill_kernel<64>, pgrid, 128, pshmem, out, q, K, V, T, H, nKV, hd, S, pastLen, keyMask, maskStride, scale, window);
    return;
  }
  launch(attention_kernel, unsigned(int64_t(B) * T * H), threads, shmem, out, q, K, V, B, T, H, nKV, hd, S, pastLen, pastLenDev, keyMask,
         maskStride, scale, window, static_cast<float*>(nullptr), int64_t(0));
}

void argmax_rows(int32_t* out, const float* x, int64_t rows, int64_t D) {
  if (rows == 0) return;
  const int nChunks = int((D + kArgmaxChunk - 1) / kArgmaxChunk);
  float* pv = static_cast<float*>(scratch(1, size_t(rows) * nChunks * (sizeof(float) + sizeof(int64_t))));
  int64_t* pi = reinterpret_cast<int64_t*>(pv + ((rows * nChunks + 1) / 2) * 2);
  launch(argmax_chunks_kernel, dim3(unsigned(nChunks), unsigned(rows)), 256, 0, pv, pi, x, D, nChunks);
  launch(argmax_final_kernel, unsigned(rows), 256, 0, out, pv, pi, nChunks);
}

void kv_write(float* dst, const float* src, int64_t B, int64_t T, int64_t cap, int64_t row, int64_t len, const int64_t* lenDev) {
  if (B * T * row == 0) return;
  launch(kv_write_kernel, grid_for(B * T * row), 256, 0, dst, src, B, T, cap, row, len, lenDev);
  cuda_check(cudaGetLastError(), "kv_write launch");
}

void rope_append(float* q, float* k, const float* v, const int32_t* pos, const float* invFreq, float* kc, float* vc, int64_t B,
                 int64_t T, int nH, int nKV, int hd, int64_t cap, int64_t len, const int64_t* lenDev) {
  const int64_t n = B * T * (nH + nKV) * (hd / 2);
  if (n == 0) return;
  launch(rope_append_kernel, grid_for(n), 256, 0, q, k, v, pos, invFreq, kc, vc, B, T, nH, nKV, hd, cap, len, lenDev);
  cuda_check(cudaGetLastError(), "rope_append launch");
}

void spin(int64_t ns) {
  launch(spin_kernel, 1, 1, 0, ns);
  cuda_check(cudaGetLastError(), "spin launch");
}

void fill_random(void* dst, int wt, int64_t n, uint32_t seed, float stdv) {
  launch(fill_random_kernel, grid_for(n), 256, 0, dst, wt, n, seed, stdv);
  // These are weights: a GEMV loads its first weights before its pdl_wait, so none may still be in flight.
  cuda_check(cudaStreamSynchronize(stream()), "fill_random");
}

}  // namespace lowbit_cuda
