// Run-time selection of the kernel level. One build serves every x86-64 (and AArch64) CPU: SIMD code is compiled
// per function for its target and only ever called after the CPU says it has the instructions.
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "dispatch.h"

namespace lowbit {

CpuFeatures cpu_features() {
  CpuFeatures f{};
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  // __builtin_cpu_supports has no "f16c" key on older compilers; every AVX2 CPU shipped so far has F16C, and the
  // AVX-512 path uses the EVEX form, so read CPUID leaf 1 ECX bit 29 directly.
  unsigned a = 1, b = 0, c = 0, d = 0;
  __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
  f.f16c = (c >> 29) & 1;
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  unsigned a0 = 0, b0 = 0, c0 = 0, d0 = 0;  // leaf 0: highest standard leaf
  __asm__ volatile("cpuid" : "+a"(a0), "=b"(b0), "+c"(c0), "=d"(d0));
  if (a0 >= 7 && f.avx512f) {
    unsigned a7 = 7, b7 = 0, c7 = 1, d7 = 0;  // leaf 7 sub-leaf 1: EAX bit 5 = AVX512_BF16
    __asm__ volatile("cpuid" : "+a"(a7), "=b"(b7), "+c"(c7), "=d"(d7));
    f.avx512bf16 = (a7 >> 5) & 1;
  }
#endif
#if defined(__aarch64__)
  f.neon = true;
#endif
  return f;
}

namespace {

const Kernels* best() {
  CpuFeatures f = cpu_features();
  if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma && f.f16c && kernels_avx512()) return kernels_avx512();
  if (f.avx2 && f.fma && f.f16c && kernels_avx2()) return kernels_avx2();
  if (f.neon && kernels_neon()) return kernels_neon();
  return kernels_scalar();
}

std::atomic<const Kernels*> g_current{nullptr};

}  // namespace

const Kernels* best_kernels() {
  static const Kernels* b = best();
  return b;
}

const Kernels* active() {
  const Kernels* k = g_current.load(std::memory_order_relaxed);
  if (!k) {
    k = best_kernels();
    g_current.store(k, std::memory_order_relaxed);
  }
  return k;
}

// Levels in order; a request may name any level at or below the best one ("best" restores it).
const char* set_level(const std::string& name) {
  const Kernels* b = best_kernels();
  const Kernels* want = nullptr;
  if (name == "best" || name == "auto") want = b;
  else if (name == "scalar") want = kernels_scalar();
  else if (name == "avx2" && (b == kernels_avx2() || b == kernels_avx512())) want = kernels_avx2();
  else if (name == "avx512" && b == kernels_avx512()) want = kernels_avx512();
  else if (name == "neon" && b == kernels_neon()) want = kernels_neon();
  if (!want) throw std::invalid_argument("setLevel: level '" + name + "' is not available on this CPU (best is '" +
                                         b->name + "'; choose from scalar, avx2, avx512, neon, best)");
  g_current.store(want);
  return want->name;
}

}  // namespace lowbit
