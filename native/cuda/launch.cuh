// What every .cu file of the addon shares: the launch helper (programmatic dependent launch on sm_90 and later) and
// the warp reductions (internal linkage: each .cu file gets its own copy).
#pragma once
#include <cuda_runtime.h>
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
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace
}  // namespace lowbit_cuda
