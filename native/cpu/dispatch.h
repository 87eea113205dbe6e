#pragma once
#include <string>

#include "kernels.h"

namespace lowbit {

struct CpuFeatures {
  bool avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512dq, avx512bf16, avx512vnni, neon;
};
CpuFeatures cpu_features();
// Throws std::invalid_argument for a level the CPU (or this build) lacks; returns the level now in use.
const char* set_level(const std::string& name);

}  // namespace lowbit
