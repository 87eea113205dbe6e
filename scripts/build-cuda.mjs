#!/usr/bin/env node
// Build the CUDA addon (native/cuda → native/cuda/build/lowbit_cuda.node) with nvcc for the kernels and g++ for the
// N-API glue, linked against CUDA's static runtime (cuBLAS is loaded at run time: native/cuda/gemm.cc).
//   node scripts/build-cuda.mjs            at install: builds where nvcc is found, else says so and succeeds
//   node scripts/build-cuda.mjs --required (npm run build:cuda, CI where nvcc exists): a missing nvcc or a failed
//                                          build is an error
// LOWBIT_NO_CUDA=1 skips the build (install only). LOWBIT_NVCC names nvcc; CUDA_HOME / CUDA_PATH name the toolkit.
// LOWBIT_CUDA_ARCHS overrides the targets (default: sm_90a machine code, the H200's, plus compute_80 PTX that any
// newer GPU's driver compiles at load). The build is skipped when the addon is newer than every source.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, realpathSync, renameSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const required = process.argv.includes('--required');
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'native', 'cuda');
const out = join(src, 'build');
const target = join(out, 'lowbit_cuda.node');

function say(msg) { console.log(`lowbit: ${msg}`); }
function fail(msg) {
  console.error(`lowbit: ${msg}`);
  process.exit(1);
}
function skip(msg) {
  if (required) fail(msg);
  say(`${msg}; the cuda backend is not built (npm run build:cuda builds it later)`);
  process.exit(0);
}

if (!required && process.env.LOWBIT_NO_CUDA === '1') skip('LOWBIT_NO_CUDA=1');

function which(cmd) {
  for (const d of (process.env.PATH ?? '').split(':')) {
    const p = join(d, cmd);
    if (d && existsSync(p)) return p;
  }
  return null;
}
const nvcc = process.env.LOWBIT_NVCC ?? which('nvcc') ?? (existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : null);
if (!nvcc) skip('nvcc not found (set LOWBIT_NVCC or put CUDA on PATH)');

// The toolkit: headers and the static runtime.
const candidates = [process.env.CUDA_HOME, process.env.CUDA_PATH, dirname(dirname(realpathSync(nvcc))), '/usr/local/cuda',
  ...(existsSync('/usr/local') ? readdirSync('/usr/local').filter((d) => d.startsWith('cuda-')).map((d) => join('/usr/local', d)) : [])]
  .filter(Boolean);
let cudaHome = null, libDir = null;
for (const c of candidates) {
  if (!existsSync(join(c, 'include', 'cuda_runtime_api.h'))) continue;
  libDir = ['lib64', 'targets/x86_64-linux/lib', 'targets/sbsa-linux/lib', 'lib'].map((l) => join(c, l)).find((l) => existsSync(join(l, 'libcudart_static.a')));
  if (libDir) { cudaHome = c; break; }
}
if (!cudaHome) skip(`a CUDA toolkit with include/cuda_runtime_api.h and libcudart_static.a was not found (tried ${candidates.join(', ')})`);

const nodeInclude = [join(dirname(process.execPath), '..', 'include', 'node'), '/usr/include/node'].find((d) => existsSync(join(d, 'node_api.h')));
if (!nodeInclude) skip("Node's headers (node_api.h) were not found beside the node binary");
const napiInclude = createRequire(import.meta.url)('node-addon-api').include_dir.replace(/^"|"$/g, '');

const sources = readdirSync(src).filter((f) => /\.(cu|cc|h|cuh)$/.test(f));
const newest = Math.max(...sources.map((f) => statSync(join(src, f)).mtimeMs), statSync(fileURLToPath(import.meta.url)).mtimeMs);
if (process.env.LOWBIT_REBUILD !== '1' && existsSync(target) && statSync(target).mtimeMs >= newest) {
  say(`CUDA addon is up to date (${target}); LOWBIT_REBUILD=1 forces a rebuild`);
  process.exit(0);
}

mkdirSync(out, { recursive: true });
function run(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : `exit code ${r.status}`;
    if (required) fail(`CUDA build step failed (${why}): ${cmd} ${args.join(' ')}`);
    say(`CUDA build step failed (${why}); the cuda backend is not built`);
    process.exit(0);
  }
}

const archs = (process.env.LOWBIT_CUDA_ARCHS ?? 'arch=compute_90a,code=sm_90a;arch=compute_80,code=compute_80').split(';').filter(Boolean);
say(`building the CUDA addon with ${nvcc} (${cudaHome}; ${archs.join(' ')})`);
const objs = [];
for (const f of sources.filter((f) => f.endsWith('.cu'))) {
  const o = join(out, f.replace(/\.cu$/, '.o'));
  run(nvcc, ['-c', '-O3', '-std=c++17', '-Xcompiler', '-fPIC', ...archs.flatMap((a) => ['-gencode', a]), '-I', src, join(src, f), '-o', o]);
  objs.push(o);
}
for (const f of sources.filter((f) => f.endsWith('.cc'))) {
  const o = join(out, f.replace(/\.cc$/, '.o'));
  run('g++', ['-c', '-O2', '-std=c++17', '-fPIC', '-fexceptions', '-DNAPI_VERSION=8', '-DNAPI_CPP_EXCEPTIONS', '-I', src,
    '-I', join(cudaHome, 'include'), '-I', nodeInclude, '-I', napiInclude, join(src, f), '-o', o]);
  objs.push(o);
}
const tmp = `${target}.tmp`;
run('g++', ['-shared', '-o', tmp, ...objs, '-L', libDir, '-lcudart_static', '-ldl', '-lpthread', '-lrt']);
renameSync(tmp, target);
say(`built ${target}`);
