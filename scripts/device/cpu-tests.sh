#!/usr/bin/env bash
# Runs the native CPU kernel tests on the device machine's host CPU, which has AVX-512 (this project's development
# machine has AVX2 only, so the AVX-512 kernels are otherwise never run). No Node.js or registry there: the caller
# carries .devnode/ (node.xz: the local node binary; inc.tar.xz: Node's headers and node-addon-api; nm.tar.xz: the
# runtime node_modules) and dist/ (the compiled TypeScript). The addon is built with g++ directly (no node-gyp), with
# the flags of native/cpu/binding.gyp. Usage, from the repo root on the device: bash scripts/device/cpu-tests.sh [test ...]
set -euo pipefail
T=/tmp/lowbit-node
mkdir -p "$T/bin" "$T/inc"
xz -dc .devnode/node.xz > "$T/bin/node" && chmod +x "$T/bin/node"
tar -xJf .devnode/inc.tar.xz -C "$T/inc"
[ -d node_modules ] || tar -xJf .devnode/nm.tar.xz
export PATH="$T/bin:$PATH"
grep -o -m1 'avx512[a-z_]*' /proc/cpuinfo | head -1 || true
lscpu | grep -E 'Model name|^CPU\(s\)' || true
out=native/cpu/build/Release
mkdir -p "$out" /tmp/lowbit-obj
srcs=$(sed -n '/"sources"/,/]/p' native/cpu/binding.gyp | grep -o '"[a-z0-9_]*\.cc"' | tr -d '"')
pids=()
for s in $srcs; do
  g++ -std=c++17 -O3 -fPIC -fexceptions -fno-math-errno -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS \
    -I"$T/inc/node" -I"$T/inc/node-addon-api" -c "native/cpu/$s" -o "/tmp/lowbit-obj/${s%.cc}.o" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done   # each compile's status, so set -e stops on a failed one
g++ -shared -o "$out/lowbit_cpu.node" /tmp/lowbit-obj/*.o -lpthread
node -e "const a=require('./$out/lowbit_cpu.node'); console.log(JSON.stringify(a.cpuInfo()))"
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(quant-kernels quant-int8-kernel ops threads quant-matmul quant-load models)
files=(); for t in "${tests[@]}"; do files+=("dist/test/$t.test.js"); done
node --test --test-concurrency=1 "${files[@]}" 2>&1 | grep -E '^# (tests|pass|fail|skipped)|^not ok|^ok' 
