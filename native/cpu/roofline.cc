// Roofline probes, measured with the same pool and threads as the kernels: read bandwidth (each thread sums its
// own slice as several streams with wide loads; the best of `iters` passes) and FMA peak (each thread runs
// independent FMA chains at the best SIMD level). Both must bound the kernels from above: a kernel above 100% of
// them means the probe, not the kernel, is wrong.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "ops.h"
#include "pool.h"
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LOWBIT_X86 1
#endif
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags the _mm512_undefined_* inside its own _mm512_reduce_add_ps; not our code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace lowbit {
namespace {

using Clock = std::chrono::steady_clock;
double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// ---- read bandwidth: sum of a slice read as kStreams interleaved sequential streams, as the GEMV kernels read
// 4-8 weight rows at once. One stream per thread leaves the hardware prefetchers under-used and read 20-40% below
// what the GEMV reaches on the same machine (GEMV rows then showed above 100% of the "roofline").
constexpr int kStreams = 8;

float sum_scalar(const float* p, int64_t n) {
  const int64_t len = n / kStreams / 16 * 16;
  float s[kStreams][8] = {};
  for (int64_t i = 0; i < len; i += 8)
    for (int r = 0; r < kStreams; r++)
      for (int j = 0; j < 8; j++) s[r][j] += p[r * len + i + j];
  float t = 0;
  for (int r = 0; r < kStreams; r++)
    for (int j = 0; j < 8; j++) t += s[r][j];
  return t;
}
#ifdef LOWBIT_X86
__attribute__((target("avx2"))) float sum_avx2(const float* p, int64_t n) {
  const int64_t len = n / kStreams / 16 * 16;
  __m256 s[kStreams];
  for (int r = 0; r < kStreams; r++) s[r] = _mm256_setzero_ps();
  for (int64_t i = 0; i < len; i += 16)
    for (int r = 0; r < kStreams; r++) {
      const float* q = p + r * len + i;
      _mm_prefetch(reinterpret_cast<const char*>(q) + 512, _MM_HINT_T0);
      s[r] = _mm256_add_ps(s[r], _mm256_add_ps(_mm256_load_ps(q), _mm256_load_ps(q + 8)));
    }
  __m256 a = s[0];
  for (int r = 1; r < kStreams; r++) a = _mm256_add_ps(a, s[r]);
  float t[8];
  _mm256_storeu_ps(t, a);
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
__attribute__((target("avx512f"))) float sum_avx512(const float* p, int64_t n) {
  const int64_t len = n / kStreams / 16 * 16;
  __m512 s[kStreams];
  for (int r = 0; r < kStreams; r++) s[r] = _mm512_setzero_ps();
  for (int64_t i = 0; i < len; i += 16)
    for (int r = 0; r < kStreams; r++) {
      const float* q = p + r * len + i;
      _mm_prefetch(reinterpret_cast<const char*>(q) + 1024, _MM_HINT_T0);
      s[r] = _mm512_add_ps(s[r], _mm512_load_ps(q));
    }
  __m512 a = s[0];
  for (int r = 1; r < kStreams; r++) a = _mm512_add_ps(a, s[r]);
  return _mm512_reduce_add_ps(a);
}
#endif

// ---- FMA chains: `iters` steps of kAcc independent multiply-adds (values stay in (0, 1], no denormals). kAcc must
// cover latency (4) × FMA pipes (2) on every current x86 core, and the chains plus the two constants must fit the
// register file: 16 chains + 2 constants in AVX2's 16 ymm registers spilled to the stack, and the probe then
// measured a store-to-load chain at about 2/3 of the FMA peak (so GEMM read as 150-170% of "peak").
constexpr int kAcc = 16;         // scalar and AVX-512 (32 zmm registers)
constexpr int kAccAvx2 = 12;     // 12 + 2 constants of the 16 ymm registers
float fma_scalar(int64_t iters) {
  float a[kAcc];
  for (int i = 0; i < kAcc; i++) a[i] = 0.5f + i * 0.01f;
  for (int64_t it = 0; it < iters; it++)
    for (int i = 0; i < kAcc; i++) a[i] = a[i] * 0.9999999f + 1e-7f;
  float s = 0;
  for (int i = 0; i < kAcc; i++) s += a[i];
  return s;
}
#ifdef LOWBIT_X86
__attribute__((target("avx2,fma"))) float fma_avx2(int64_t iters) {
  __m256 a[kAccAvx2];
  const __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < kAccAvx2; i++) a[i] = _mm256_set1_ps(0.5f + i * 0.01f);
  for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < kAccAvx2; i++) a[i] = _mm256_fmadd_ps(a[i], m, c);
  }
  __m256 s = a[0];
  for (int i = 1; i < kAccAvx2; i++) s = _mm256_add_ps(s, a[i]);
  float t[8];
  _mm256_storeu_ps(t, s);
  return t[0];
}
__attribute__((target("avx512f"))) float fma_avx512(int64_t iters) {
  __m512 a[kAcc];
  const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < kAcc; i++) a[i] = _mm512_set1_ps(0.5f + i * 0.01f);
  for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 16
    for (int i = 0; i < kAcc; i++) a[i] = _mm512_fmadd_ps(a[i], m, c);
  }
  __m512 s = a[0];
  for (int i = 1; i < kAcc; i++) s = _mm512_add_ps(s, a[i]);
  return _mm512_reduce_add_ps(s);
}
#endif

volatile float g_sink;

}  // namespace

double mem_bandwidth(int64_t bytes, int iters) {
  if (bytes < (1 << 20)) throw std::range_error("memBandwidth: bytes must be at least 1 MiB");
  if (iters < 1) throw std::range_error("memBandwidth: iters must be at least 1");
  const std::string lvl = best_kernels()->name;
  float (*sum)(const float*, int64_t) = sum_scalar;
#ifdef LOWBIT_X86
  if (lvl == "avx512") sum = sum_avx512;
  else if (lvl == "avx2") sum = sum_avx2;
#endif
  const int64_t n = bytes / 4 / 1024 * 1024;  // whole 4 KiB pages; every thread's slice a multiple of 64 floats
  float* buf = static_cast<float*>(std::aligned_alloc(4096, size_t(n) * 4));
  if (!buf) throw std::range_error("memBandwidth: cannot allocate " + std::to_string(bytes) + " bytes");
  // First touch by the thread that will read the slice (page placement on NUMA machines).
  // Every configured thread (parallel_for_n, not the adaptive width): the roofline of the thread count in use.
  const int64_t T = pool_threads();
  parallel_for_n(T, n, [&](int64_t b, int64_t e) { std::memset(buf + b, 0, size_t(e - b) * 4); }, 1024);
  std::vector<float> sums(256);
  auto pass = [&] {
    parallel_for_n(T, n, [&](int64_t b, int64_t e) { sums[size_t(b * 255 / n)] += sum(buf + b, e - b); }, 1024);
  };
  pass();  // warm-up (TLB, frequency)
  // The best pass: a roofline is what the machine can do, and a pass slowed by another process's traffic is not it.
  double best = 0;
  for (int i = 0; i < iters; i++) {
    const auto t0 = Clock::now();
    pass();
    best = std::max(best, double(n) * 4 / secs(t0, Clock::now()) / 1e9);
  }
  g_sink = sums[0];
  std::free(buf);
  return best;
}

double fma_peak(double ms) {
  if (!(ms > 0)) throw std::range_error("fmaPeak: ms must be positive");
  const std::string lvl = best_kernels()->name;
  float (*run)(int64_t) = fma_scalar;
  int lanes = 1, chains = kAcc;
#ifdef LOWBIT_X86
  if (lvl == "avx512") { run = fma_avx512; lanes = 16; }
  else if (lvl == "avx2") { run = fma_avx2; lanes = 8; chains = kAccAvx2; }
#endif
  // One chunk per thread, each running FMA chains for `ms`; the rate is the total work over the wall time of the
  // whole job, so a chunk that runs late or on the caller's thread (the pool lets any thread take any chunk)
  // lowers the figure instead of being counted as if it ran in parallel.
  const int T = pool_threads();
  std::vector<double> flops(size_t(T), 0.0);
  const int64_t chunk = 1 << 16;
  run(chunk);  // warm-up: wake the wide units
  const auto t0 = Clock::now();
  parallel_for_n(T, T, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      const auto c0 = Clock::now();
      double f = 0;
      float s = 0;
      do {
        s += run(chunk);
        f += double(chunk) * chains * lanes * 2;
      } while (secs(c0, Clock::now()) * 1e3 < ms);
      g_sink = s;
      flops[size_t(t)] = f;
    }
  });
  const double wall = secs(t0, Clock::now());
  double total = 0;
  for (int t = 0; t < T; t++) total += flops[size_t(t)];
  return total / wall / 1e9;
}

}  // namespace lowbit
