// What every .cu file of the addon shares: the launch helper (programmatic dependent launch on sm_90 and later) and
// the warp reductions (internal linkage: each .cu file gets its own copy).
#pragma once
#include <cuda_runtime.h>
#include <cstdint>
#include <cstdlib>
#include <utility>

#include "cuda_common.h"

namespace lowbit_cuda {
namespace {

constexpr int kWarp = 32;

// Programmatic dependent launch (sm_90 and later): every kernel here is launched with the attribute that lets it
// start while the kernel before it drains. Each calls pdl_wait() before it touches memory an earlier kernel wrote
// (or reads), then pdl_trigger() so that the next kernel may start in turn; the GEMV loads its first weights before
// the wait (weights are written by uploads, never by the kernel just before). Both are no-ops below sm_90 and for a
// kernel launched without the attribute (LOWBIT_CUDA_PDL=0).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

inline bool pdl_enabled() {
  static const bool on = [] {
    const char* e = getenv("LOWBIT_CUDA_PDL");
    if (e && e[0] == '0') return false;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
    return major >= 9;
  }();
  return on;
}

// One launch on the addon's stream, checked, with the programmatic-dependent-launch attribute where it is on.
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, A&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream();
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  cuda_check(cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...), "kernel launch");
}

// a[i] of a kernel parameter's small array by selects: a run-time index would copy the parameter to the stack.
template <typename T> __device__ __forceinline__ T pick3(const T (&a)[3], int i) { return i == 0 ? a[0] : i == 1 ? a[1] : a[2]; }

// Blocks for a grid-stride loop over n elements (at least 1, at most 65535·4).
inline unsigned grid_for(int64_t n, int threads = 256) {
  const int64_t g = (n + threads - 1) / threads;
  return unsigned(g < 1 ? 1 : g > 65535 * 4 ? 65535 * 4 : g);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

struct ReduceAdd { template <class T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; } };
struct ReduceMax { __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); } };

// The whole block's reduction of v (butterfly within each warp, then the warps' results in warp 0); every thread gets
// it. part: 32 slots of shared memory; identity fills the slots of warps the block does not have.
template <class T, class Op>
__device__ __forceinline__ T block_reduce(T v, T* part, T identity, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // part may still be read from a previous call
  if ((threadIdx.x & 31) == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    T t = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : identity;
    for (int o = 16; o > 0; o >>= 1) t = op(t, __shfl_xor_sync(0xffffffffu, t, o));
    if (threadIdx.x == 0) part[0] = t;
  }
  __syncthreads();
  return part[0];
}
template <class T> __device__ __forceinline__ T block_sum(T v, T* part) { return block_reduce(v, part, T(0), ReduceAdd()); }
__device__ __forceinline__ float block_max(float v, float* part) { return block_reduce(v, part, -INFINITY, ReduceMax()); }

// The outputs of a GEMV over 1-3 weights that read the same x (q/k/v, gate/up) in one launch, shared by the GPTQ/AWQ
// and NF4 GEMVs (kernels.cu's float GEMV spells the same logic out: with these helpers nvcc gave its bf16 batch-1
// instance 130 registers instead of 104, one 256-thread block a multiprocessor instead of two): rows [start[i], start[i] + n[i]) of the launch are weight i's, written to y[i] [M, n[i]]
// with bias[i]; an unused slot repeats the last one and starts past every row. With silu (gate in slot 0, up in
// slot 1) a warp takes row n of both and writes y[0][m, n] = silu(gate)·up, as siluMul would from the two products.
struct OutSegs {
  float* y[3];
  const float* bias[3];
  int64_t start[3];
  int64_t n[3];
  bool silu;
  // Host: 1-3 outputs (gate and up with silu); returns the rows of the launch (of one weight with silu).
  int64_t set(int nOut, float* const* ys, const float* const* biases, const int64_t* ns, bool gateUp) {
    int64_t at = 0;
    for (int i = 0; i < 3; i++) {
      const int j = i < nOut ? i : nOut - 1;
      y[i] = ys[j];
      bias[i] = biases[j];
      n[i] = ns[j];
      start[i] = i < nOut && !(gateUp && i > 0) ? at : INT64_MAX;
      if (i < nOut) at += ns[i];
    }
    silu = gateUp;
    return gateUp ? ns[0] : at;
  }
};

// Which weight (seg) and which of its rows (r) each of a warp's R rows is, the warp's first row n0 (R rows of the
// launch, or with silu row n0 of gate and of up); rows past N repeat n0 and are not written.
template <int R>
__device__ __forceinline__ void warp_rows(const OutSegs& o, int64_t n0, int64_t N, int (&seg)[R], int64_t (&r)[R]) {
#pragma unroll
  for (int i = 0; i < R; i++) {
    const int64_t n = o.silu || n0 + i >= N ? n0 : n0 + i;
    seg[i] = o.silu ? i : n >= o.start[2] ? 2 : n >= o.start[1] ? 1 : 0;
    r[i] = o.silu ? n0 : n - pick3(o.start, seg[i]);
  }
}

// Lane 0 writes the warp's sums v[i][m] (over the first mRows rows of x) plus bias, or silu(gate)·up.
template <int R, int M>
__device__ __forceinline__ void store_rows(const OutSegs& o, const int (&seg)[R], const int64_t (&r)[R], int64_t n0, int64_t N, int mRows,
                                           const float (&v)[R][M]) {
  if ((threadIdx.x & 31) != 0) return;
  if (o.silu) {
#pragma unroll
    for (int m = 0; m < M; m++) {
      if (m >= mRows) break;
      const float g = v[0][m] + (o.bias[0] ? o.bias[0][n0] : 0.f), u = v[1][m] + (o.bias[1] ? o.bias[1][n0] : 0.f);
      o.y[0][m * N + n0] = g / (1.f + expf(-g)) * u;
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < R; i++) {
    if (n0 + i >= N) continue;
    const float* bias = pick3(o.bias, seg[i]);
    float* y = pick3(o.y, seg[i]);
    const int64_t ny = pick3(o.n, seg[i]);
#pragma unroll
    for (int m = 0; m < M; m++) {
      if (m >= mRows) break;
      y[m * ny + r[i]] = v[i][m] + (bias ? bias[r[i]] : 0.f);
    }
  }
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace
}  // namespace lowbit_cuda
