// Shared test helpers: error metrics, the shared-data location, and golden fixture loading.
import { spawnSync } from 'node:child_process';
import { loadAddon } from '../src/native/addon.js';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fromPretrained } from '../src/api.js';
import type { BitsAndBytesConfig } from '../src/io/quantconfig.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { setWarningHandler } from '../src/util/warn.js';
import type { GptqBits, GptqCodes } from '../src/quant/gptq-types.js';
import { f16ToF32, f32ToF16 } from '../src/tensor/dtype.js';
import type { Tensor } from '../src/tensor/tensor.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Repo root (tests run from dist/test). */
export const ROOT = resolve(here, '..', '..');
export const GOLDEN_DIR = join(ROOT, 'test', 'fixtures', 'golden');
/** The built command line and the bundled demo model. */
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
export const KJV = join(ROOT, 'models', 'kjv-demo');

/** Runs `lowbit ...args` offline (HF_HUB_OFFLINE=1) and returns its exit code and output; a hung run is killed at 5 min. */
export function lowbit(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 300_000, env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** ../shared/data beside the repo, or $LOWBIT_TEST_DATA; null (and tests skip, saying why) when absent. */
export function sharedData(): string | null {
  const dir = process.env.LOWBIT_TEST_DATA ?? resolve(ROOT, '..', 'shared', 'data');
  return existsSync(dir) ? dir : null;
}
export const NO_DATA = 'shared test data not found: set LOWBIT_TEST_DATA or place ../shared/data beside the repo';

/** ‖a − b‖ / ‖b‖ over all elements (or the listed indices). */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>, idx?: number[]): number {
  let num = 0, den = 0;
  const each = (i: number) => { const d = a[i] - b[i]; num += d * d; den += b[i] * b[i]; };
  if (idx) idx.forEach(each); else for (let i = 0; i < b.length; i++) each(i);
  if (Number.isNaN(num)) return Infinity;
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** max |a − b| / max |b|: catches a single bad element that the norm would hide. */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= num)) num = Number.isNaN(d) ? Infinity : d;
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / Math.max(den, 1e-30);
}

export interface Golden {
  name: string;
  dir: string;
  ints(name: string): { shape: number[]; rows: number[][] };
  floats(name: string): { shape: number[]; data: Float32Array };
  has(name: string): boolean;
}

export function goldenCases(): Golden[] {
  if (!existsSync(GOLDEN_DIR)) return [];
  return readdirSync(GOLDEN_DIR).sort().filter((n) => existsSync(join(GOLDEN_DIR, n, 'golden.safetensors'))).map((name) => {
    const dir = join(GOLDEN_DIR, name);
    const f = readSafetensors(join(dir, 'golden.safetensors'));
    return {
      name, dir,
      has: (n: string) => f.has(n),
      ints(n: string) {
        const t = f.get(n);
        const flat = Array.from(t.data as BigInt64Array, Number);
        const cols = t.shape[t.shape.length - 1];
        const rows: number[][] = [];
        for (let i = 0; i < flat.length; i += cols) rows.push(flat.slice(i, i + cols));
        return { shape: [...t.shape], rows };
      },
      floats(n: string) { const t = f.get(n); return { shape: [...t.shape], data: t.data as Float32Array }; },
    };
  });
}

export function argmax(a: ArrayLike<number>, off = 0, len = a.length): number {
  let best = off;
  for (let i = off + 1; i < off + len; i++) if (a[i] > a[best]) best = i;
  return best - off;
}

/** mulberry32: a small seedable generator, good enough to pick fuzz inputs and random test data. */
export class Rand {
  private s: number;
  constructor(seed: number) { this.s = seed >>> 0; }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number { return Math.floor(this.next() * n); }
  chance(p: number): boolean { return this.next() < p; }
  pick<T>(a: readonly T[]): T { return a[this.int(a.length)]; }
}

/**
 * The golden GQA Llama quantized on load with `quantizationConfig`, once on the cpu backend and once on ref: the
 * relative error of the cpu logits against ref's over one 7-token prompt, and every warning said meanwhile (a
 * dispatcher fallback would be one).
 */
export async function quantizedCpuVsRef(quantizationConfig: BitsAndBytesConfig, ids = [[1, 5, 9, 2, 7, 3, 11]]): Promise<{ err: number; warnings: string[] }> {
  const dir = join(GOLDEN_DIR, 'llama_gqa');
  const warnings: string[] = [];
  const prev = setWarningHandler((m) => warnings.push(m), { reset: true });
  try {
    const cpu = await fromPretrained(dir, { quantizationConfig, backend: 'cpu' });
    const ref = await fromPretrained(dir, { quantizationConfig, backend: 'ref' });
    return { err: relErr(cpu.model.forward(ids).f32, ref.model.forward(ids).f32), warnings };
  } finally {
    setWarningHandler(prev, { reset: true });
  }
}

/** The kernel levels this CPU runs, lowest first (the native kernel tests compare every one with its twin). */
export function simdLevels(): string[] {
  const addon = loadAddon();
  if (!addon) return [];
  const best = addon.cpuInfo().best;
  return ['scalar', ...(best === 'avx2' || best === 'avx512' ? ['avx2'] : []), ...(best === 'avx512' ? ['avx512'] : []), ...(best === 'neon' ? ['neon'] : [])];
}

/** Random GPTQ codes for [N, K]: float16 scales, zeros within the bit width, g_idx in order or act-order shuffled. */
export function randomGptqCodes(rng: Rand, bits: GptqBits, N: number, K: number, groupSize: number, actOrder: boolean): GptqCodes {
  const maxq = (1 << bits) - 1, nG = groupSize === -1 ? 1 : Math.ceil(K / groupSize), G = groupSize === -1 ? K : groupSize;
  const intWeight = Uint8Array.from({ length: N * K }, () => Math.floor(rng.next() * (maxq + 1)));
  const scales = Float32Array.from({ length: nG * N }, () => f16ToF32(f32ToF16(0.001 + 0.02 * rng.next())));
  const zeros = Uint8Array.from({ length: nG * N }, () => Math.floor(rng.next() * (maxq + 1)));
  // act-order: g_idx[c] = (position of c in a random permutation) / G, as AutoGPTQ writes it.
  const pos = Int32Array.from({ length: K }, (_, k) => k);
  if (actOrder) for (let i = K - 1; i > 0; i--) { const j = Math.floor(rng.next() * (i + 1)); [pos[i], pos[j]] = [pos[j], pos[i]]; }
  const gIdx = Int32Array.from({ length: K }, (_, k) => Math.floor(pos[k] / G));
  return { bits, groupSize, shape: [N, K], intWeight, scales, zeros, gIdx };
}

/** The float weight that GPTQ/AWQ codes stand for: fl32(scale·(code − zero)) per (row, group of g_idx). */
export function dequantizeCodes(c: GptqCodes): Float32Array {
  const [N, K] = c.shape, out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) {
    const g = c.gIdx[k];
    out[n * K + k] = Math.fround(c.scales[g * N + n] * (c.intWeight[n * K + k] - c.zeros[g * N + n]));
  }
  return out;
}

/** A cheap fingerprint of a tensor's values (to check that a weight was left untouched). */
export function checksum(t: Tensor): number {
  let s = 0;
  const d = t.data as ArrayLike<number>;
  for (let i = 0; i < d.length; i++) s = (s * 31 + d[i]) % 1e9;
  return s;
}
