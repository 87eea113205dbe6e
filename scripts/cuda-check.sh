#!/usr/bin/env bash
# The GPU machine's run (the `device` tool, from the repo root): the cuda backend's test suite, then the bench
# (lowbit vs PyTorch eager on the same shapes). Node is not installed there, so it comes along, built here:
#   .devdata/node.xz                (xz -c $(which node))
#   .devdata/node_modules.tar.xz    (tar -cJf … node_modules, without typescript)
#   dist/, native/cpu/build/, native/cuda/build/  (npx tsc -p . ; npm run build:cuda)
# carry: [".devdata", "dist", "native/cpu/build", "native/cuda/build"]. Everything it prints also goes to $OUT.
# Usage: bash scripts/cuda-check.sh [test] [bench] [torch] [profile] [profile-prefill]   (default: the first three; SHAPES,
#        FORMATS, DECODE narrow the bench; profile: ncu's per-kernel device time of a few eager decode steps of the first
#        SHAPES × FORMATS; profile-prefill: the same for 512-token prefills)
set -uo pipefail
OUT=${OUT:-/tmp/lowbit-out}
mkdir -p "$OUT" /tmp/lowbit-node
steps=${*:-test bench torch}
exec > >(tee -a "$OUT/cuda-check.log") 2>&1

if ! command -v node >/dev/null; then
  xz -dc .devdata/node.xz > /tmp/lowbit-node/node && chmod +x /tmp/lowbit-node/node
  export PATH=/tmp/lowbit-node:$PATH
fi
[ -d node_modules ] || tar -xJf .devdata/node_modules.tar.xz
# cuBLAS: the toolkit's, or the one PyTorch's wheels bring.
if [ -z "${LOWBIT_CUBLAS:-}" ]; then
  LOWBIT_CUBLAS=$(ls /usr/local/cuda/lib64/libcublas.so.1[0-9] 2>/dev/null | head -1)
  [ -n "$LOWBIT_CUBLAS" ] || LOWBIT_CUBLAS=$(python3 -c "import nvidia, os, glob; print(next(iter(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], '**', 'libcublas.so.*'), recursive=True))), ''))")
  export LOWBIT_CUBLAS
fi
echo "node $(node --version); cuBLAS: ${LOWBIT_CUBLAS:-none}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv

for s in $steps; do
  case $s in
    test)
      echo "== cuda test suite"
      node --test --test-reporter=spec dist/test/cuda.test.js 2>&1 | tail -60 ;;
    bench)
      echo "== lowbit bench --device cuda"
      for shape in ${SHAPES:-llama-3-8b llama-3.2-1b}; do
        for format in ${FORMATS:-bf16 gptq4 awq4 nf4 int8}; do
          node dist/src/cli/main.js bench --device cuda --shape "$shape" --format "$format" --batch 1,16 --decode-len ${DECODE:-64} --prefill-len 512 --json
          mv -f bench-cuda-*.json "$OUT/" 2>/dev/null
        done
      done ;;
    profile)
      shape=${SHAPES%% *}; shape=${shape:-llama-3-8b}; format=${FORMATS%% *}; format=${format:-bf16}
      echo "== ncu: per-kernel device time, $shape $format, batch 1, 8 eager decode steps (kernels serialized: no PDL overlap)"
      NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
      "$NCU" --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
        --kernel-name regex:'^(?!fill_random|qg_repack)' node dist/src/cli/main.js bench --device cuda --shape "$shape" \
        --format "$format" --batch 1 --decode-len 8 --prefill-len 0 --eager > "$OUT/ncu-$shape-$format.txt" 2>&1
      # One line a kernel and grid: name, grid, invocations, average µs.
      awk '/^  [a-zA-Z_].*Invocations/ { name=$0; sub(/^  (void )?/, "", name); sub(/lowbit_cuda::<unnamed>::/, "", name); sub(/\(.*\) \(/, " (", name); sub(/, Device.*Invocations /, " ×", name) }
           /gpu__time_duration.sum/ { printf "%-90s %s %s\n", substr(name, 1, 90), $NF, $2 }' "$OUT/ncu-$shape-$format.txt" ;;
    profile-prefill)
      shape=${SHAPES%% *}; shape=${shape:-llama-3-8b}; format=${FORMATS%% *}; format=${format:-bf16}
      echo "== ncu: per-kernel device time, $shape $format, 512-token prefills (4 of them; the 8 decode steps' kernels have 1-row grids)"
      NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
      "$NCU" --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
        --kernel-name regex:'^(?!fill_random|qg_repack)' node dist/src/cli/main.js bench --device cuda --shape "$shape" \
        --format "$format" --batch 1 --prompt-len 1 --decode-len 8 --prefill-len 512 --eager > "$OUT/ncu-prefill-$shape-$format.txt" 2>&1
      awk '/^  [a-zA-Z_].*Invocations/ { name=$0; sub(/^  (void )?/, "", name); sub(/lowbit_cuda::<unnamed>::/, "", name); sub(/\(.*\) \(/, " (", name); sub(/, Device.*Invocations /, " ×", name) }
           /gpu__time_duration.sum/ { printf "%-90s %s %s\n", substr(name, 1, 90), $NF, $2 }' "$OUT/ncu-prefill-$shape-$format.txt" ;;
    torch)
      echo "== PyTorch eager, same shapes"
      for shape in ${SHAPES:-llama-3-8b llama-3.2-1b}; do
        python3 scripts/bench_torch.py --shape "$shape" --batch 1,16 --decode-len ${DECODE:-64} --prefill-len 512 --out "$OUT/torch-$shape.json"
      done ;;
  esac
done
