// Kernel roofline bench for the native CPU backend. For each kernel: the measured figure (GB/s for memory-bound
// GEMV and attention, GFLOP/s for GEMM), the roofline figure measured by the same addon with the same threads
// (memBandwidth / fmaPeak), and their ratio; NF4 rows also give their speed-up over the bf16 kernel of the same
// shape measured in the same run (vs bf16). A memory-bound ratio above 100% means the data came from cache, not
// memory: every memory-bound case therefore cycles through copies of its operands that together exceed the
// last-level cache several times over, as a model's layers do.
// Run: npx tsc -p . && node dist/bench/kernels.js [--out FILE]
// Writes JSON to --out, default bench/out/kernels.json (ignored by git: results belong to a machine, not the repo).
// Options (env): LOWBIT_THREADS (read by the addon), LOWBIT_LEVEL (scalar|avx2|avx512|neon), LOWBIT_BENCH_SECONDS
// (per case, default 1).
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { randomFillSync } from 'node:crypto';
import { Q4TYPE, WTYPE, addonLoadError, loadAddon } from '../src/native/addon.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values: opts } = parseArgs({ options: { out: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
if (opts.help) {
  console.log('usage: node dist/bench/kernels.js [--out FILE]   (default bench/out/kernels.json; env LOWBIT_THREADS, LOWBIT_LEVEL, LOWBIT_BENCH_SECONDS)');
  process.exit(0);
}
// dist/bench → repo root
const outPath = resolve(opts.out ?? join(here, '..', '..', 'bench', 'out', 'kernels.json'));

const addon = loadAddon();
if (!addon) {
  console.error(`bench/kernels: ${addonLoadError}`);
  process.exit(1);
}
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

/** The largest data cache (Linux sysfs), or 32 MiB where it cannot be read. */
function lastLevelCacheBytes(): number {
  const dir = '/sys/devices/system/cpu/cpu0/cache';
  let best = 0;
  try {
    for (const e of readdirSync(dir)) {
      if (!e.startsWith('index')) continue;
      const type = readFileSync(join(dir, e, 'type'), 'utf8').trim();
      const m = /^(\d+)([KMG]?)/.exec(readFileSync(join(dir, e, 'size'), 'utf8').trim());
      if (type === 'Instruction' || !m) continue;
      best = Math.max(best, Number(m[1]) * ({ '': 1, K: 1024, M: 1 << 20, G: 1 << 30 } as Record<string, number>)[m[2]]);
    }
  } catch { /* not Linux, or no sysfs */ }
  return best || 32 << 20;
}
const llc = lastLevelCacheBytes();
// Working set of every memory-bound case: several times the LLC, so the copies evict each other.
const WORKING_SET = Math.min(2 ** 31, Math.max(256 << 20, 4 * llc));
const copiesFor = (bytes: number): number => Math.max(1, Math.ceil(WORKING_SET / bytes));

const bw = median([0, 1, 2].map(() => addon.memBandwidth(Math.max(512 << 20, 4 * llc), 4)));
const peak = median([0, 1, 2].map(() => addon.fmaPeak(300)));

type Row = { kernel: string; shape: string; dtype: string; ms: number; measured: number; unit: string; roofline: number; ratio: number; vsBf16?: number };
const rows: Row[] = [];
const DT = [['f32', WTYPE.F32, 4], ['bf16', WTYPE.BF16, 2], ['f16', WTYPE.F16, 2]] as const;

// GEMV (decode): weights are cycled through enough copies to exceed the last-level cache, as a model's layers are.
for (const N of [5632, 32000]) {
  const K = 2048, M = 1;
  for (const [name, wt, bytes] of DT) {
    const wBytes = N * K * bytes;
    const copies = copiesFor(wBytes);
    const ws = Array.from({ length: copies }, () => randomWeights(wt, N * K));
    const x = Float32Array.from({ length: M * K }, () => Math.random() - 0.5), y = new Float32Array(M * N);
    const s = time((i) => addon.matmul(y, x, ws[i % copies], wt, M, N, K, null));
    const gbs = wBytes / s / 1e9;
    rows.push({ kernel: 'gemv', shape: `M=${M} K=${K} N=${N}`, dtype: name, ms: s * 1e3, measured: gbs, unit: 'GB/s', roofline: bw, ratio: gbs / bw });
  }
}

// NF4 GEMV (decode, the fused dequantize-GEMV): random codes and scales (speed does not depend on the values). Bytes
// moved = packed codes + block scales (+ the nested scales and map with double quantization) + x. The QuantState
// dtype is the model's: bf16 with and without double quantization (lowbit bench --format nf4 [--double-quant] on a
// bf16 model) and float32 with plain absmax (a float32 model); all three take the int16-activation GEMV (gemv_q4i).
// vsBf16 = the bf16 GEMV's time on the same shape / this row's time (decode speed-up on these weights).
const Q4_CASES = [['nf4+dq bf16', true, WTYPE.BF16], ['nf4 bf16', false, WTYPE.BF16], ['nf4 f32', false, WTYPE.F32]] as const;
const gemvBf16Ms = (N: number): number | undefined => rows.find((r) => r.kernel === 'gemv' && r.dtype === 'bf16' && r.shape.endsWith(`N=${N}`))?.ms;
for (const N of [5632, 32000]) {
  const K = 2048, M = 1, bs = 64, nBlocks = Math.ceil((N * K) / bs), nNested = Math.ceil(nBlocks / 256);
  for (const [name, dq, dtype] of Q4_CASES) {
    const bytes = (N * K) / 2 + (dq ? nBlocks + nNested * 4 + 256 * 4 : nBlocks * 4) + K * 4;
    const copies = copiesFor(bytes);
    const ws = Array.from({ length: copies }, () => ({
      packed: randomFillSync(new Uint8Array((N * K) / 2)),
      absmax: dq ? null : Float32Array.from({ length: nBlocks }, () => Math.random() * 0.1),
      qabsmax: dq ? randomFillSync(new Uint8Array(nBlocks)) : null,
      nested: dq ? Float32Array.from({ length: nNested }, () => Math.random() * 0.01) : null,
    }));
    const map = Float32Array.from({ length: 256 }, (_, i) => (i - 127.5) / 128);
    const x = Float32Array.from({ length: M * K }, () => Math.random() - 0.5), y = new Float32Array(M * N);
    const s = time((i) => {
      const w = ws[i % copies];
      addon.matmulQ4(y, x, w.packed, w.absmax, w.qabsmax, w.nested, dq ? map : null, 256, 0.05, M, N, K, bs, Q4TYPE.nf4, dtype, null);
    });
    const gbs = bytes / s / 1e9, ref = gemvBf16Ms(N);
    rows.push({ kernel: 'gemv-nf4', shape: `M=${M} K=${K} N=${N} b${bs}`, dtype: name, ms: s * 1e3, measured: gbs, unit: 'GB/s', roofline: bw, ratio: gbs / bw,
      ...(ref ? { vsBf16: ref / (s * 1e3) } : {}) });
  }
}

// LLM.int8 GEMV (decode): random codes in [-127, 127] and row scales; bytes moved = codes + SCB + x. The activations
// are drawn below the threshold (no outlier columns), and again with 8 outlier columns (|x| = 8, threshold 6), whose
// float64 terms are computed per output row from the codes the integer pass just read.
function int8Weights(N: number, K: number): { CB: Int8Array; SCB: Float32Array } {
  const CB = randomFillSync(new Int8Array(N * K));
  for (let i = 0; i < CB.length; i++) if (CB[i] === -128) CB[i] = -127;  // as bitsandbytes writes them
  return { CB, SCB: Float32Array.from({ length: N }, () => Math.random() * 0.1) };
}
for (const N of [5632, 32000]) {
  const K = 2048, M = 1;
  const bytes = N * K + N * 4 + K * 4;
  const copies = copiesFor(bytes);
  const ws = Array.from({ length: copies }, () => int8Weights(N, K));
  for (const outliers of [0, 8]) {
    const x = Float32Array.from({ length: M * K }, () => 4 * (Math.random() - 0.5)), y = new Float32Array(M * N);
    for (let j = 0; j < outliers; j++) x[(j * 257) % K] = 8;
    const s = time((i) => addon.matmulInt8(y, x, ws[i % copies].CB, ws[i % copies].SCB, M, N, K, 6, null));
    const gbs = bytes / s / 1e9;
    rows.push({ kernel: 'gemv-int8', shape: `M=${M} K=${K} N=${N}`, dtype: outliers ? `int8+o${outliers}` : 'int8', ms: s * 1e3, measured: gbs, unit: 'GB/s', roofline: bw, ratio: gbs / bw });
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

// LLM.int8 prefill: multiply-adds per second against the fp32 FMA peak, next to the gemm rows of the same shape.
// Not a roofline of its own: vpmaddubsw does 32 int8 multiply-adds per instruction where vfmadd231ps does 8, so the
// ratio may pass 100%.
{
  const K = 2048, N = 5632, M = 128;
  const w = int8Weights(N, K);
  const x = Float32Array.from({ length: M * K }, () => 4 * (Math.random() - 0.5)), y = new Float32Array(M * N);
  const s = time(() => addon.matmulInt8(y, x, w.CB, w.SCB, M, N, K, 6, null));
  const gf = (2 * M * N * K) / s / 1e9;
  rows.push({ kernel: 'gemm-int8', shape: `M=${M} K=${K} N=${N}`, dtype: 'int8', ms: s * 1e3, measured: gf, unit: 'GOP/s', roofline: peak, ratio: gf / peak });
}

// NF4 GEMM (prefill, the tiled dequantize GEMM: each weight tile dequantized once, then the float micro-kernel),
// bf16 QuantState dtype with and without double quantization; vsBf16 = the bf16 GEMM's time on the same shape /
// this row's time (1 = prefill as fast as on the bf16 weights).
for (const N of [2048, 5632]) {
  const K = 2048, M = 128, bs = 64, nBlocks = Math.ceil((N * K) / bs), nNested = Math.ceil(nBlocks / 256);
  const ref = rows.find((r) => r.kernel === 'gemm' && r.dtype === 'bf16' && r.shape === `M=${M} K=${K} N=${N}`)?.ms;
  for (const [name, dq] of [['nf4+dq bf16', true], ['nf4 bf16', false]] as const) {
    const packed = randomFillSync(new Uint8Array((N * K) / 2));
    const absmax = dq ? null : Float32Array.from({ length: nBlocks }, () => Math.random() * 0.1);
    const qabsmax = dq ? randomFillSync(new Uint8Array(nBlocks)) : null;
    const nested = dq ? Float32Array.from({ length: nNested }, () => Math.random() * 0.01) : null;
    const map = Float32Array.from({ length: 256 }, (_, i) => (i - 127.5) / 128);
    const x = Float32Array.from({ length: M * K }, () => Math.random() - 0.5), y = new Float32Array(M * N);
    const s = time(() => addon.matmulQ4(y, x, packed, absmax, qabsmax, nested, dq ? map : null, 256, 0.05, M, N, K, bs, Q4TYPE.nf4, WTYPE.BF16, null));
    const gf = (2 * M * N * K) / s / 1e9;
    rows.push({ kernel: 'gemm-nf4', shape: `M=${M} K=${K} N=${N} b${bs}`, dtype: name, ms: s * 1e3, measured: gf, unit: 'GFLOP/s', roofline: peak, ratio: gf / peak,
      ...(ref ? { vsBf16: ref / (s * 1e3) } : {}) });
  }
}

// Small-M matmuls (speculative decode / short prompts): GFLOP/s against the FMA peak, with W cycled through
// copies like the GEMV rows so that it is read from memory as in a model.
{
  const K = 2048, N = 5632;
  const copies = copiesFor(N * K * 2);
  const ws = Array.from({ length: copies }, () => randomWeights(WTYPE.BF16, N * K));
  for (const M of [4, 8, 16, 32]) {
    const x = Float32Array.from({ length: M * K }, () => Math.random() - 0.5), y = new Float32Array(M * N);
    const s = time((i) => addon.matmul(y, x, ws[i % copies], WTYPE.BF16, M, N, K, null));
    const gf = (2 * M * N * K) / s / 1e9;
    rows.push({ kernel: 'matmul-smallM', shape: `M=${M} K=${K} N=${N}`, dtype: 'bf16', ms: s * 1e3, measured: gf, unit: 'GFLOP/s', roofline: peak, ratio: gf / peak });
  }
}

// Attention decode over a 1024-token cache, TinyLlama shape (H=32, nKV=4, hd=64): bytes of K and V read. One
// layer's cache is 2 MiB, which would stay in cache between calls (the 250%-of-bandwidth reading this row used to
// give); a model reads one such cache per layer per token, so the calls cycle through copies like layers.
{
  const B = 1, T = 1, H = 32, nKV = 4, hd = 64, S = 1024, past = 1023;
  const q = Float32Array.from({ length: B * T * H * hd }, () => Math.random()), out = new Float32Array(q.length);
  const cacheBytes = B * S * nKV * hd * 4;
  const copies = copiesFor(2 * cacheBytes);
  const ks = Array.from({ length: copies }, () => Float32Array.from({ length: B * S * nKV * hd }, () => Math.random() - 0.5));
  const vs = ks.map((k) => k.map((x) => -x));
  const s = time((i) => addon.attention(out, q, ks[i % copies], vs[i % copies], B, T, H, nKV, hd, S, past, null, 0.125, 0));
  const gbs = (2 * cacheBytes) / s / 1e9;
  rows.push({ kernel: 'attention-decode', shape: `H=${H} nKV=${nKV} hd=${hd} kv=${S}`, dtype: 'f32', ms: s * 1e3, measured: gbs, unit: 'GB/s', roofline: bw, ratio: gbs / bw });
}

const fmt = (x: number, d = 1): string => x.toFixed(d);
console.log(`lowbit cpu kernels — level ${info.level}, ${threads} threads; memBandwidth ${fmt(bw)} GB/s, fmaPeak ${fmt(peak)} GFLOP/s; ` +
  `last-level cache ${fmt(llc / 2 ** 20, 0)} MiB, memory-bound working sets ${fmt(WORKING_SET / 2 ** 20, 0)} MiB`);
console.log(['kernel', 'shape', 'dtype', 'ms', 'measured', 'roofline', 'ratio', 'vs bf16'].map((h, i) => h.padEnd([17, 28, 11, 9, 18, 18, 6, 7][i])).join(' '));
for (const r of rows) {
  console.log([r.kernel.padEnd(17), r.shape.padEnd(28), r.dtype.padEnd(11), fmt(r.ms, 3).padStart(8) + ' ',
    `${fmt(r.measured)} ${r.unit}`.padEnd(18), `${fmt(r.roofline)} ${r.unit}`.padEnd(18), `${fmt(r.ratio * 100, 0)}%`.padEnd(6),
    r.vsBf16 === undefined ? '' : `${fmt(r.vsBf16, 2)}x`].join(' '));
}
const over = rows.filter((r) => r.ratio > 1 && r.unit !== 'GOP/s');  // int8 ops are not bound by the fp32 FMA peak
if (over.length) {
  console.log(`warning: ${over.map((r) => `${r.kernel} ${r.shape} ${r.dtype}`).join(', ')} above 100% of the roofline: ` +
    'the data came from cache or the machine was busy while the roofline was measured');
}
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, JSON.stringify({ date: new Date().toISOString(), level: info.level, cpu: info, threads, llcBytes: llc, workingSetBytes: WORKING_SET, memBandwidthGBs: bw, fmaPeakGFLOPs: peak, rows }, null, 2) + '\n');
console.log(`wrote ${outPath}`);
