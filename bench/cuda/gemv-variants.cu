// GEMV variants for batch-1 decode on the GPU, measured alone (no Node): which layout of the work reads bf16 weights
// closest to the memory roofline. Each variant runs the 32 layers of the Llama-3-8B shape (q/k/v 6144×4096, o 4096×4096,
// gate/up 28672×4096, down 4096×14336; every layer its own weights, 13.9 GB, far past the 50 MB L2) as one CUDA graph
// of 128 launches, with and without programmatic dependent launch, against a plain read of the same bytes.
// Build: nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o gemv-variants bench/cuda/gemv-variants.cu
// Run on the GPU machine: ./gemv-variants   (prints GB/s per variant; docs/cuda.md records what it showed)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <vector>

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e)); exit(1); } } while (0)

__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float dot8(uint4 u, const float* x) {
  const float4 a = *reinterpret_cast<const float4*>(x), b = *reinterpret_cast<const float4*>(x + 4);
  return __uint_as_float(u.x << 16) * a.x + __uint_as_float(u.x & 0xffff0000u) * a.y + __uint_as_float(u.y << 16) * a.z +
         __uint_as_float(u.y & 0xffff0000u) * a.w + __uint_as_float(u.z << 16) * b.x + __uint_as_float(u.z & 0xffff0000u) * b.y +
         __uint_as_float(u.w << 16) * b.z + __uint_as_float(u.w & 0xffff0000u) * b.w;
}

// V0: one warp a row, U 16-byte loads a lane in flight, the first U before the PDL wait (lowbit's kernel).
template <int U>
__global__ void gemv_warp(float* y, const uint16_t* w, const float* x, int N, int K) {
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (n >= N) return;
  const uint4* row = reinterpret_cast<const uint4*>(w + int64_t(n) * K);
  const int steps = K / 8;
  uint4 u[U];
  int s = lane;
#pragma unroll
  for (int i = 0; i < U; i++) u[i] = s + i * 32 < steps ? __ldg(row + s + i * 32) : make_uint4(0, 0, 0, 0);
  pdl_wait();
  pdl_trigger();
  float acc = 0.f;
  while (true) {
#pragma unroll
    for (int i = 0; i < U; i++)
      if (s + i * 32 < steps) acc += dot8(u[i], x + (s + i * 32) * 8);
    s += U * 32;
    if (s >= steps) break;
#pragma unroll
    for (int i = 0; i < U; i++) u[i] = s + i * 32 < steps ? __ldg(row + s + i * 32) : make_uint4(0, 0, 0, 0);
  }
  acc = warp_sum(acc);
  if (lane == 0) y[n] = acc;
}

// V1: R rows a warp, U loads each in flight (x chunk read once for R rows).
template <int R, int U>
__global__ void gemv_warp_rows(float* y, const uint16_t* w, const float* x, int N, int K) {
  const int lane = threadIdx.x & 31;
  const int n0 = (blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * R;
  if (n0 >= N) return;
  const int steps = K / 8;
  uint4 u[R][U];
  int s = lane;
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int i = 0; i < U; i++) u[r][i] = __ldg(reinterpret_cast<const uint4*>(w + int64_t(n0 + r) * K) + s + i * 32);
  pdl_wait();
  pdl_trigger();
  float acc[R] = {};
  while (true) {
#pragma unroll
    for (int i = 0; i < U; i++) {
      const float* xp = x + (s + i * 32) * 8;
#pragma unroll
      for (int r = 0; r < R; r++) acc[r] += dot8(u[r][i], xp);
    }
    s += U * 32;
    if (s >= steps) break;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int i = 0; i < U; i++) u[r][i] = __ldg(reinterpret_cast<const uint4*>(w + int64_t(n0 + r) * K) + s + i * 32);
  }
#pragma unroll
  for (int r = 0; r < R; r++) {
    const float v = warp_sum(acc[r]);
    if (lane == 0) y[n0 + r] = v;
  }
}

// V2: x staged in shared memory once per block (fp32), then warps stream rows (grid-stride over rows, persistent).
template <int U>
__global__ void gemv_smem_persistent(float* y, const uint16_t* w, const float* x, int N, int K) {
  extern __shared__ float xs[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  const int steps = K / 8;
  int n = blockIdx.x * nw + warp;
  uint4 u[U];
  int s = lane;
  if (n < N) {
#pragma unroll
    for (int i = 0; i < U; i++) u[i] = __ldg(reinterpret_cast<const uint4*>(w + int64_t(n) * K) + s + i * 32);
  }
  pdl_wait();
  pdl_trigger();
  for (int i = threadIdx.x * 4; i < K; i += blockDim.x * 4) *reinterpret_cast<float4*>(xs + i) = *reinterpret_cast<const float4*>(x + i);
  __syncthreads();
  for (; n < N; n += gridDim.x * nw) {
    const uint4* row = reinterpret_cast<const uint4*>(w + int64_t(n) * K);
    float acc = 0.f;
    s = lane;
    while (true) {
#pragma unroll
      for (int i = 0; i < U; i++) acc += dot8(u[i], xs + (s + i * 32) * 8);
      s += U * 32;
      if (s >= steps) break;
#pragma unroll
      for (int i = 0; i < U; i++) u[i] = __ldg(row + s + i * 32);
    }
    acc = warp_sum(acc);
    if (lane == 0) y[n] = acc;
    const int nn = n + gridDim.x * nw;
    if (nn < N) {
#pragma unroll
      for (int i = 0; i < U; i++) u[i] = __ldg(reinterpret_cast<const uint4*>(w + int64_t(nn) * K) + lane + i * 32);
    }
  }
}

// Plain read of the same bytes (the ceiling a GEMV can reach): grid-stride sum of 16-byte loads.
__global__ void read_all(const uint4* p, int64_t n, float* sink) {
  pdl_wait();
  pdl_trigger();
  uint32_t a = 0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldg(p + i);
    a ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (a == 0x12345678u) *sink = 1.f;
}

__global__ void fill(uint16_t* w, int64_t n, uint32_t seed) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ seed;
    h ^= h >> 15; h *= 0x2c1b3c6du; h ^= h >> 12;
    w[i] = __bfloat16_as_ushort(__float2bfloat16((float(h & 0xffff) / 65536.f - 0.5f) * 0.04f));
  }
}

struct Mat { int N, K; uint16_t* w; };

template <typename F>
float time_graph(F&& body, cudaStream_t st, int reps) {
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  body();
  CK(cudaStreamEndCapture(st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  for (int i = 0; i < 3; i++) CK(cudaGraphLaunch(ge, st));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  CK(cudaEventRecord(a, st));
  for (int i = 0; i < reps; i++) CK(cudaGraphLaunch(ge, st));
  CK(cudaEventRecord(b, st));
  CK(cudaEventSynchronize(b));
  float ms;
  CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  return ms / reps;
}

template <typename... P, typename... A>
void launch(bool pdl, cudaStream_t st, void (*k)(P...), dim3 grid, dim3 block, size_t smem, A... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid; cfg.blockDim = block; cfg.dynamicSmemBytes = smem; cfg.stream = st;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = at; cfg.numAttrs = pdl ? 1 : 0;
  CK(cudaLaunchKernelEx(&cfg, k, args...));
}

int main() {
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  int sms;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int L = 32;
  std::vector<Mat> mats;
  double bytes = 0;
  for (int l = 0; l < L; l++)
    for (auto nk : {std::pair<int, int>{6144, 4096}, {4096, 4096}, {28672, 4096}, {4096, 14336}}) {
      Mat m{nk.first, nk.second, nullptr};
      CK(cudaMalloc(&m.w, size_t(m.N) * m.K * 2));
      fill<<<4096, 256, 0, st>>>(m.w, int64_t(m.N) * m.K, l * 7 + m.N);
      bytes += double(m.N) * m.K * 2;
      mats.push_back(m);
    }
  float *x, *y, *sink;
  CK(cudaMalloc(&x, 14336 * 4));
  CK(cudaMalloc(&y, 28672 * 4));
  CK(cudaMalloc(&sink, 4));
  std::vector<float> hx(14336);
  for (int i = 0; i < 14336; i++) hx[i] = float((i * 37) % 101) / 101.f - 0.5f;
  CK(cudaMemcpy(x, hx.data(), 14336 * 4, cudaMemcpyHostToDevice));
  CK(cudaStreamSynchronize(st));
  printf("32 layers of llama-3-8b GEMVs: %.2f GB of bf16 weights, %d SMs\n", bytes / 1e9, sms);
  const int reps = 20;
  auto report = [&](const char* name, float ms) { printf("%-44s %8.3f ms  %7.1f GB/s\n", name, ms, bytes / (ms * 1e-3) / 1e9); };
  for (int pdl = 0; pdl < 2; pdl++) {
    report(pdl ? "read_all per matrix (PDL)" : "read_all per matrix", time_graph([&] {
      for (auto& m : mats) launch(pdl, st, read_all, dim3(sms * 8), dim3(256), 0, reinterpret_cast<const uint4*>(m.w), int64_t(m.N) * m.K / 8, sink);
    }, st, reps));
#define V(NAME, KERNEL, ROWS_PER_BLOCK, THREADS)                                                                                    \
    report(pdl ? NAME " (PDL)" : NAME, time_graph([&] {                                                                            \
      for (auto& m : mats) launch(pdl, st, KERNEL, dim3((m.N + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK), dim3(THREADS), 0, y, m.w, x, m.N, m.K); \
    }, st, reps));
    V("warp/row U=4 256thr", gemv_warp<4>, 8, 256)
    V("warp/row U=8 256thr", gemv_warp<8>, 8, 256)
    V("warp/row U=16 256thr", gemv_warp<16>, 8, 256)
    V("warp/row U=4 128thr", gemv_warp<4>, 4, 128)
    V("warp/row U=8 128thr", gemv_warp<8>, 4, 128)
    V("warp/row U=8 512thr", gemv_warp<8>, 16, 512)
    V("2 rows/warp U=4 256thr", (gemv_warp_rows<2, 4>), 16, 256)
    V("2 rows/warp U=8 256thr", (gemv_warp_rows<2, 8>), 16, 256)
    V("4 rows/warp U=4 256thr", (gemv_warp_rows<4, 4>), 32, 256)
#undef V
    for (int bpsm : {2, 4, 8}) {
      char name[64];
      snprintf(name, sizeof name, "smem x, persistent %d blk/SM U=8%s", bpsm, pdl ? " (PDL)" : "");
      report(name, time_graph([&] {
        for (auto& m : mats) {
          const int nw = 8, blocks = std::min((m.N + nw - 1) / nw, sms * bpsm);
          CK(cudaFuncSetAttribute(gemv_smem_persistent<8>, cudaFuncAttributeMaxDynamicSharedMemorySize, 14336 * 4));
          launch(pdl, st, gemv_smem_persistent<8>, dim3(blocks), dim3(nw * 32), size_t(m.K) * 4, y, m.w, x, m.N, m.K);
        }
      }, st, reps));
    }
  }
  // One big read (the copy roofline's read half, no launch gaps).
  {
    uint16_t* big;
    const int64_t n = int64_t(4) << 30;
    CK(cudaMalloc(&big, n));
    CK(cudaMemset(big, 1, n));
    const float ms = time_graph([&] { launch(false, st, read_all, dim3(sms * 8), dim3(256), 0, reinterpret_cast<const uint4*>(big), n / 16, sink); }, st, reps);
    printf("%-44s %8.3f ms  %7.1f GB/s\n", "read_all 4 GiB, one launch", ms, double(n) / (ms * 1e-3) / 1e9);
  }
  CK(cudaGetLastError());
  return 0;
}
