// Kernel roofline bench for the native CPU backend. For each kernel: the measured figure (GB/s for memory-bound
// GEMV, GFLOP/s for GEMM), the roofline figure measured by the same addon with the same threads (memBandwidth /
// fmaPeak), and their ratio. Writes bench/kernels.json. Run: npx tsc -p . && node dist/bench/kernels.js
// Options (env): LOWBIT_THREADS, LOWBIT_LEVEL (scalar|avx2|avx512), LOWBIT_BENCH_SECONDS (per case, default 1).
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WTYPE, addonLoadError, loadAddon } from '../src/backend/cpu/addon.js';

const addon = loadAddon();
if (!addon) {
  console.error(`bench/kernels: ${addonLoadError}`);
  process.exit(1);
}
if (process.env.LOWBIT_THREADS) addon.setThreads(Number(process.env.LOWBIT_THREADS));
if (process.env.LOWBIT_LEVEL) addon.setLevel(process.env.LOWBIT_LEVEL);
const SECONDS = Number(process.env.LOWBIT_BENCH_SECONDS ?? 1);
const threads = addon.getThreads();
const info = addon.cpuInfo();

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median seconds per call of fn(i) over ~SECONDS, after a warm-up call. */
function time(fn: (i: number) => void): number {
  fn(0);
  const samples: number[] = [];
  const end = performance.now() + SECONDS * 1000;
  for (let i = 1; samples.length < 5 || (performance.now() < end && samples.length < 2000); i++) {
    const t0 = performance.now();
    fn(i);
    samples.push((performance.now() - t0) / 1000);
  }
  return median(samples);
}

function randomWeights(wtype: number, n: number): Float32Array | Uint16Array {
  if (wtype === WTYPE.F32) {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = Math.random() - 0.5;
    return a;
  }
  const a = new Uint16Array(n);
  // bf16 / f16 patterns of small normal numbers (sign, exponent near 1, random mantissa)
  const hi = wtype === WTYPE.BF16 ? 0x3c00 : 0x3000;
  for (let i = 0; i < n; i++) a[i] = hi | (Math.random() * 0x3ff) | (Math.random() < 0.5 ? 0x8000 : 0);
  return a;
}

const bw = median([0, 1, 2].map(() => addon.memBandwidth(512 << 20, 4)));
const peak = median([0, 1, 2].map(() => addon.fmaPeak(300)));

type Row = { kernel: string; shape: string; dtype: string; ms: number; measured: number; unit: string; roofline: number; ratio: number };
const rows: Row[] = [];
const DT = [['f32', WTYPE.F32, 4], ['bf16', WTYPE.BF16, 2], ['f16', WTYPE.F16, 2]] as const;

// GEMV (decode): weights are cycled through enough copies to exceed the L3 cache, as a model's layers would.
for (const N of [5632, 32000]) {
  const K = 2048, M = 1;
  for (const [name, wt, bytes] of DT) {
    const wBytes = N * K * bytes;
    const copies = Math.max(1, Math.ceil((256 << 20) / wBytes));
    const ws = Array.from({ length: copies }, () => randomWeights(wt, N * K));
    const x = Float32Array.from({ length: M * K }, () => Math.random() - 0.5), y = new Float32Array(M * N);
    const s = time((i) => addon.matmul(y, x, ws[i % copies], wt, M, N, K, null));
    const gbs = wBytes / s / 1e9;
    rows.push({ kernel: 'gemv', shape: `M=${M} K=${K} N=${N}`, dtype: name, ms: s * 1e3, measured: gbs, unit: 'GB/s', roofline: bw, ratio: gbs / bw });
  }
}

// GEMM (prefill): compute-bound.
for (const N of [2048, 5632]) {
  const K = 2048, M = 128;
  for (const [name, wt] of DT) {
    if (name === 'f16') continue;
    const w = randomWeights(wt, N * K);
    const x = Float32Array.from({ length: M * K }, () => Math.random() - 0.5), y = new Float32Array(M * N);
    const s = time(() => addon.matmul(y, x, w, wt, M, N, K, null));
    const gf = (2 * M * N * K) / s / 1e9;
    rows.push({ kernel: 'gemm', shape: `M=${M} K=${K} N=${N}`, dtype: name, ms: s * 1e3, measured: gf, unit: 'GFLOP/s', roofline: peak, ratio: gf / peak });
  }
}

// Small-M matmuls (speculative decode / short prompts): reported against bandwidth, since W is read once.
for (const M of [4, 8, 16, 32]) {
  const K = 2048, N = 5632;
  const w = randomWeights(WTYPE.BF16, N * K);
  const x = Float32Array.from({ length: M * K }, () => Math.random() - 0.5), y = new Float32Array(M * N);
  const s = time(() => addon.matmul(y, x, w, WTYPE.BF16, M, N, K, null));
  const gf = (2 * M * N * K) / s / 1e9;
  rows.push({ kernel: 'matmul-smallM', shape: `M=${M} K=${K} N=${N}`, dtype: 'bf16', ms: s * 1e3, measured: gf, unit: 'GFLOP/s', roofline: peak, ratio: gf / peak });
}

// Attention decode over a 1024-token cache, TinyLlama shape (H=32, nKV=4, hd=64): bytes of K and V read.
{
  const B = 1, T = 1, H = 32, nKV = 4, hd = 64, S = 1024, past = 1023;
  const q = Float32Array.from({ length: B * T * H * hd }, () => Math.random()), out = new Float32Array(q.length);
  const k = Float32Array.from({ length: B * S * nKV * hd }, () => Math.random() - 0.5), v = k.slice();
  const s = time(() => addon.attention(out, q, k, v, B, T, H, nKV, hd, S, past, null, 0.125, 0));
  const gbs = (2 * S * nKV * hd * 4) / s / 1e9;
  rows.push({ kernel: 'attention-decode', shape: `H=${H} nKV=${nKV} hd=${hd} kv=${S}`, dtype: 'f32', ms: s * 1e3, measured: gbs, unit: 'GB/s', roofline: bw, ratio: gbs / bw });
}

const fmt = (x: number, d = 1): string => x.toFixed(d);
console.log(`lowbit cpu kernels — level ${info.level}, ${threads} threads; memBandwidth ${fmt(bw)} GB/s, fmaPeak ${fmt(peak)} GFLOP/s`);
console.log(['kernel', 'shape', 'dtype', 'ms', 'measured', 'roofline', 'ratio'].map((h, i) => h.padEnd([17, 28, 6, 9, 18, 18, 6][i])).join(' '));
for (const r of rows) {
  console.log([r.kernel.padEnd(17), r.shape.padEnd(28), r.dtype.padEnd(6), fmt(r.ms, 3).padStart(8) + ' ',
    `${fmt(r.measured)} ${r.unit}`.padEnd(18), `${fmt(r.roofline)} ${r.unit}`.padEnd(18), `${fmt(r.ratio * 100, 0)}%`].join(' '));
}
const here = dirname(fileURLToPath(import.meta.url));
const outPath = join(here, '..', '..', 'bench', 'kernels.json');
writeFileSync(outPath, JSON.stringify({ date: new Date().toISOString(), level: info.level, cpu: info, threads, memBandwidthGBs: bw, fmaPeakGFLOPs: peak, rows }, null, 2) + '\n');
console.log(`wrote ${outPath}`);
