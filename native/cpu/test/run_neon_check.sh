#!/usr/bin/env bash
# Cross-compiles neon_check.cc for AArch64 (static) and runs it under qemu-aarch64: the NEON kernel level checked
# against the scalar oracle without an ARM machine. Needs g++-aarch64-linux-gnu and qemu-user (Debian packages);
# without the cross compiler it says so and exits 0. Extra arguments go to the compiler (e.g. -O3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/.."
CXX="${AARCH64_CXX:-aarch64-linux-gnu-g++}"
if ! command -v "$CXX" >/dev/null 2>&1; then
  echo "run_neon_check: SKIPPED - cross compiler '$CXX' not found (apt-get install g++-aarch64-linux-gnu qemu-user)"
  exit 0
fi
QEMU=""
for q in qemu-aarch64 qemu-aarch64-static; do
  if command -v "$q" >/dev/null 2>&1; then QEMU="$q"; break; fi
done
out="${NEON_CHECK_BUILD:-${TMPDIR:-/tmp}/lowbit-neon-check}"
mkdir -p "$out"
echo "run_neon_check: $("$CXX" --version | head -1)"
# Same source files as binding.gyp minus addon.cc (N-API) and roofline.cc; the x86 kernel files compile to nullptr.
"$CXX" -O2 -std=c++17 -static -fno-math-errno -Wall -Wextra -Wno-unused-parameter -pthread "$@" -o "$out/neon_check" \
  "$here/neon_check.cc" "$src/kernels_scalar.cc" "$src/kernels_neon.cc" "$src/kernels_avx2.cc" "$src/kernels_avx512.cc" \
  "$src/dispatch.cc" "$src/gemm.cc" "$src/int8.cc" "$src/linalg.cc" "$src/ops.cc" "$src/pool.cc"
if [ -z "$QEMU" ]; then
  if [ "$(uname -m)" = "aarch64" ]; then exec "$out/neon_check"; fi
  echo "run_neon_check: built $out/neon_check but no qemu-aarch64 to run it (apt-get install qemu-user)"
  exit 1
fi
echo "run_neon_check: $("$QEMU" --version | head -1)"
exec "$QEMU" "$out/neon_check"
