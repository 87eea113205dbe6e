// NEON (AArch64 ASIMD) kernels: placeholder until filled in below.
#include "kernels.h"

namespace lowbit {
const Kernels* kernels_neon() { return nullptr; }
}
