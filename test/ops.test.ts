// Native CPU backend vs the reference backend, op by op, at every SIMD level this CPU offers. Inputs are fresh
// random draws each run (the seed is printed with every failure; LOWBIT_TEST_SEED replays one).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { refBackend } from '../src/backend/ref/index.js';
import { cpuAvailable, cpuBackend } from '../src/backend/cpu/index.js';
import { addonLoadError, loadAddon, WTYPE, type NativeAddon } from '../src/native/addon.js';
import { Tensor } from '../src/tensor/tensor.js';
import { bf16ToF32, f16ToF32, fromF32Array, type DType } from '../src/tensor/dtype.js';
import { Rand } from './helpers.js';

const SEED = Number(process.env.LOWBIT_TEST_SEED ?? (Date.now() % 2 ** 31));
const rng = new Rand(SEED);
const rand = (): number => rng.next();
function randn(n: number, scale = 1, offset = 0): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = offset + scale * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  return a;
}
const f32t = (shape: number[], data: Float32Array): Tensor<'F32'> => new Tensor('F32', shape, data);

// fp32 bound of ../shared/GUIDE.md (Testing: oracles and tolerances). Half-precision weights are widened exactly by both sides (same bits), so they are
// held to the fp32 bound too rather than the looser 1e-2.
const TOL = 1e-5;
function relErr(got: Float32Array, want: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < want.length; i++) { const d = got[i] - want[i]; num += d * d; den += want[i] * want[i]; }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}
function close(got: Float32Array, want: Float32Array, what: string, tol = TOL): void {
  assert.equal(got.length, want.length, `${what}: length`);
  const nan = got.findIndex((v) => Number.isNaN(v));
  assert.equal(nan, -1, `${what}: NaN at ${nan} (seed ${SEED})`);
  const e = relErr(got, want);
  assert.ok(e <= tol, `${what}: relative error ${e.toExponential(2)} > ${tol} (seed ${SEED})`);
}

const addon: NativeAddon | null = loadAddon();
const skip = addon ? false : `native addon not built: ${addonLoadError}`;

function levels(): string[] {
  if (!addon) return [];
  const best = addon.cpuInfo() as { best?: string };
  const out = ['scalar'];
  if (best.best === 'avx2' || best.best === 'avx512') out.push('avx2');
  if (best.best === 'avx512') out.push('avx512');
  if (best.best === 'neon') out.push('neon');
  return out;
}

function weight(dtype: DType, N: number, K: number, scale = 0.5): Tensor {
  return new Tensor(dtype, [N, K], fromF32Array(dtype, randn(N * K, scale)));
}

function runBoth(fn: (b: typeof cpuBackend, out: Tensor<'F32'>) => void, n: number): [Float32Array, Float32Array] {
  const a = f32t([n], new Float32Array(n).fill(NaN)), b = f32t([n], new Float32Array(n).fill(NaN));
  fn(cpuBackend, a);
  fn(refBackend, b);
  return [a.f32, b.f32];
}

function opTests(level: string): void {
  it('matmul: GEMV and GEMM paths, F32/BF16/F16 weights, odd sizes, bias', () => {
    const shapes: [number, number, number][] = [
      [1, 33, 172], [5, 33, 172], [1, 96, 172], [5, 96, 172], [128, 96, 172], [128, 33, 172],
      [4, 7, 5], [8, 40, 33], [9, 40, 33], [17, 50, 300], [33, 64, 64], [2, 1000, 512],
    ];
    for (const dtype of ['F32', 'BF16', 'F16'] as DType[]) {
      shapes.forEach(([M, N, K], i) => {
        const x = f32t([M, K], randn(M * K));
        const w = weight(dtype, N, K);
        const bias = i % 2 ? f32t([N], randn(N)) : null;
        const [got, want] = runBoth((b, out) => b.matmul(x, w, bias, out.reshape([M, N])), M * N);
        close(got, want, `${level} matmul ${dtype} M=${M} N=${N} K=${K} bias=${!!bias}`);
      });
    }
  });

  it('matmul: identical results with 1 and 2+ threads', () => {
    const threads = addon!.getThreads();
    for (const [M, N, K] of [[1, 1003, 300], [64, 257, 700]]) {
      const x = f32t([M, K], randn(M * K)), w = weight('BF16', N, K);
      const run = (t: number): Float32Array => {
        addon!.setThreads(t);
        const out = f32t([M, N], new Float32Array(M * N));
        cpuBackend.matmul(x, w, null, out);
        return out.f32;
      };
      const one = run(1), many = run(Math.max(2, threads));
      addon!.setThreads(threads);
      assert.deepEqual(many, one, `${level} matmul M=${M}: thread count changed the result`);
    }
  });

  it('rmsnorm and layernorm (hidden 172, 2048)', () => {
    for (const [rows, D] of [[5, 172], [1, 2048], [64, 172]]) {
      const x = f32t([rows, D], randn(rows * D, 2, 0.5)), w = f32t([D], randn(D)), b = f32t([D], randn(D));
      let [got, want] = runBoth((be, out) => be.rmsnorm(x, w, 1e-5, out.reshape([rows, D])), rows * D);
      close(got, want, `${level} rmsnorm ${rows}x${D}`);
      const xs = f32t([rows, D], randn(rows * D, 1, 30)); // large mean: the variance must not cancel
      [got, want] = runBoth((be, out) => be.layernorm(xs, w, b, 1e-5, out.reshape([rows, D])), rows * D);
      close(got, want, `${level} layernorm ${rows}x${D}`);
    }
  });

  it('rope (hd 64 and 32, positions up to 8k)', () => {
    for (const [rows, nH, hd] of [[7, 3, 64], [1, 8, 32], [5, 2, 32]]) {
      const pos = Int32Array.from({ length: rows }, () => Math.floor(rand() * 8192));
      const inv = Float32Array.from({ length: hd / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / hd));
      const init = randn(rows * nH * hd);
      const a = f32t([rows, nH, hd], init.slice()), b = f32t([rows, nH, hd], init.slice());
      cpuBackend.rope(a, pos, inv);
      refBackend.rope(b, pos, inv);
      close(a.f32, b.f32, `${level} rope rows=${rows} hd=${hd}`);
    }
  });

  it('attention: GQA, decode with past, prefill, padded batch, no-visible-key rows', () => {
    type Case = { B: number; T: number; H: number; nKV: number; hd: number; S: number; past: number; pad?: number; window?: number };
    const cases: Case[] = [
      { B: 1, T: 1, H: 8, nKV: 2, hd: 64, S: 40, past: 21 },         // decode
      { B: 1, T: 7, H: 8, nKV: 2, hd: 32, S: 16, past: 0 },          // prefill
      { B: 2, T: 7, H: 8, nKV: 2, hd: 64, S: 12, past: 3, pad: 4 },  // row 1 left-padded: early queries see nothing
      { B: 2, T: 1, H: 8, nKV: 2, hd: 32, S: 30, past: 17, pad: 5 }, // padded decode
      { B: 1, T: 3, H: 4, nKV: 4, hd: 64, S: 300, past: 250 },       // MHA, long past
      { B: 1, T: 9, H: 4, nKV: 2, hd: 32, S: 16, past: 0, window: 4 },  // sliding window, prefill
      { B: 2, T: 1, H: 4, nKV: 2, hd: 64, S: 40, past: 30, pad: 3, window: 7 }, // sliding window, padded decode
    ];
    // Every head size with a specialised loop at some level (AVX2: 8..64, AVX-512: 16..128, NEON: 4..64), the
    // general path past them (256, and 128 on AVX2), and odd sizes that are no whole vector anywhere.
    for (const hd of [4, 8, 16, 32, 64, 128, 256, 33, 40, 1]) {
      cases.push({ B: 1, T: 1, H: 4, nKV: 2, hd, S: 24, past: 19 });                 // decode
      cases.push({ B: 2, T: 5, H: 4, nKV: 1, hd, S: 9, past: 2, pad: 3 });         // padded prefill, MQA
    }
    for (const c of cases) {
      const kvLen = c.past + c.T;
      const q = f32t([c.B, c.T, c.H, c.hd], randn(c.B * c.T * c.H * c.hd));
      const k = f32t([c.B, c.S, c.nKV, c.hd], randn(c.B * c.S * c.nKV * c.hd));
      const v = f32t([c.B, c.S, c.nKV, c.hd], randn(c.B * c.S * c.nKV * c.hd));
      let keyMask: Uint8Array | null = null;
      if (c.pad !== undefined) {
        keyMask = new Uint8Array(c.B * kvLen).fill(1);
        for (let s = 0; s < c.pad; s++) keyMask[kvLen + s] = 0;
      }
      const args = { pastLen: c.past, keyMask, scale: 1 / Math.sqrt(c.hd), window: c.window };
      const [got, want] = runBoth((be, out) => be.attention(q, k, v, args, out.reshape(q.shape)), q.numel);
      close(got, want, `${level} attention ${JSON.stringify(c)}`);
      if (c.window) {                                   // the window must change the result, or this proves nothing
        const [full] = runBoth((be, out) => be.attention(q, k, v, { ...args, window: 0 }, out.reshape(q.shape)), q.numel);
        assert.ok(full.some((x, i) => Math.abs(x - got[i]) > 1e-3), `${level} attention: window ${c.window} had no effect`);
      }
      if (c.pad !== undefined && c.T > 1) {
        const rowLen = c.H * c.hd, start = c.T * rowLen; // batch row 1, query 0: every visible key is padding
        assert.ok(got.subarray(start, start + rowLen).every((x) => x === 0), `${level} attention: masked query not zero`);
      }
    }
  });

  it('siluMul, relu, add, softmax (odd lengths, large rows)', () => {
    for (const n of [1, 172, 1001, 70001]) {
      const g = f32t([n], randn(n, 4)), u = f32t([n], randn(n));
      let [got, want] = runBoth((b, out) => b.siluMul(g, u, out), n);
      close(got, want, `${level} siluMul n=${n}`);
      [got, want] = runBoth((b, out) => b.relu(g, out), n);
      close(got, want, `${level} relu n=${n}`);
      [got, want] = runBoth((b, out) => b.add(g, u, out), n);
      close(got, want, `${level} add n=${n}`);
    }
    for (const [rows, D, scale] of [[5, 172, 3], [3, 32000, 10], [1, 7, 1], [40, 33, 50]]) {
      const x = f32t([rows, D], randn(rows * D, scale));
      const [got, want] = runBoth((b, out) => b.softmax(x, out.reshape([rows, D])), rows * D);
      close(got, want, `${level} softmax ${rows}x${D}`);
    }
  });

  it('embedding (F32/BF16/F16 tables, dim 172)', () => {
    for (const dtype of ['F32', 'BF16', 'F16'] as DType[]) {
      const table = weight(dtype, 50, 172, 1);
      const ids = Int32Array.from({ length: 9 }, () => Math.floor(rand() * 50));
      const [got, want] = runBoth((b, out) => b.embedding(table, ids, out.reshape([9, 172])), 9 * 172);
      assert.deepEqual(got, want, `${level} embedding ${dtype} must be exact`);
    }
  });

  it('widening is bit-exact for every bf16 and f16 pattern', () => {
    const bits = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const ids = Int32Array.from({ length: 256 }, (_, i) => i);
    for (const [dtype, dec] of [['BF16', bf16ToF32], ['F16', f16ToF32]] as const) {
      const out = new Float32Array(65536);
      addon!.embedding(out, bits, WTYPE[dtype], ids, 256);
      for (let i = 0; i < 65536; i++) {
        const want = dec(i);
        if (Number.isNaN(want)) assert.ok(Number.isNaN(out[i]), `${level} ${dtype} 0x${i.toString(16)} should be NaN`);
        else assert.ok(Object.is(out[i], Math.fround(want)), `${level} ${dtype} 0x${i.toString(16)}: ${out[i]} vs ${want}`);
      }
    }
  });
}

describe('cpu backend vs ref', { skip }, () => {
  for (const level of levels()) {
    describe(`level ${level}`, () => {
      before(() => { assert.equal(addon!.setLevel(level), level); });
      after(() => { addon!.setLevel('best'); });
      opTests(level);
    });
  }
});

describe('cpu addon surface', { skip }, () => {
  it('cpuInfo, setLevel and threads', () => {
    const info = addon!.cpuInfo();
    assert.equal(typeof info.avx2, 'boolean');
    assert.ok(['scalar', 'avx2', 'avx512', 'neon'].includes(info.level));
    assert.throws(() => addon!.setLevel('bogus'), RangeError);
    assert.equal(addon!.setLevel('scalar'), 'scalar');
    assert.equal(addon!.cpuInfo().level, 'scalar');
    addon!.setLevel('best');
    assert.ok(cpuAvailable());
    const t = addon!.getThreads();
    assert.ok(t >= 1);
    addon!.setThreads(1);
    assert.equal(addon!.getThreads(), 1);
    addon!.setThreads(t);
    assert.equal(addon!.getThreads(), t);
    assert.throws(() => addon!.setThreads(0), RangeError);
  });

  it('rejects bad arguments with TypeError / RangeError naming them', () => {
    const a = addon!;
    // A consistent call must run and compute: y[2,3] = x[2,3]·w[3,3]ᵀ + bias, checked by hand.
    const y = new Float32Array(6).fill(NaN), x = Float32Array.of(1, 2, 3, 4, 5, 6), w = Float32Array.of(1, 0, 0, 0, 1, 0, 1, 1, 1);
    a.matmul(y, x, w, 0, 2, 3, 3, Float32Array.of(0.5, 0, -1));
    assert.deepEqual([...y], [1.5, 2, 5, 4.5, 5, 14]);
    assert.throws(() => a.matmul(new Float32Array(7), x, w, 0, 2, 3, 3, null), { name: 'RangeError', message: /matmul: y has 7 elements, expected 6/ });
    assert.throws(() => a.matmul(new Float32Array(6), new Float32Array(5), w, 0, 2, 3, 3, null), { name: 'RangeError', message: /x has 5/ });
    assert.throws(() => a.matmul(y, x, new Uint16Array(9), 0, 2, 3, 3, null), { name: 'TypeError', message: /w must be a Float32Array/ });
    assert.throws(() => a.matmul(y, x, w, 7, 2, 3, 3, null), { name: 'RangeError', message: /wtype/ });
    assert.throws(() => a.matmul(y, x, w, 0, 2.5, 3, 3, null), { name: 'RangeError', message: /M must be an integer/ });
    assert.throws(() => a.matmul(y, x, w, 0, 2, 3, 3, new Float32Array(2)), { name: 'RangeError', message: /bias has 2/ });
    assert.throws(() => a.add(y, x, [1, 2] as unknown as Float32Array, 6), { name: 'TypeError', message: /add: b must be a Float32Array/ });
    const q = new Float32Array(2 * 4 * 8), kv = new Float32Array(2 * 5 * 2 * 8);
    assert.throws(() => a.attention(q, q, kv, kv, 2, 1, 4, 2, 8, 5, 5, null, 1, 0), { name: 'RangeError', message: /exceeds the cache capacity/ });
    assert.throws(() => a.attention(q, q, kv, kv, 2, 1, 4, 3, 8, 5, 2, null, 1, 0), { name: 'RangeError', message: /multiple of nKV/ });
    assert.throws(() => a.attention(q, q, kv, kv, 2, 1, 4, 2, 8, 5, 2, new Uint8Array(5), 1, 0), { name: 'RangeError', message: /keyMask has 5/ });
    assert.throws(() => a.embedding(new Float32Array(4), new Float32Array(8), 0, Int32Array.of(2), 4), { name: 'RangeError', message: /token id 2/ });
    assert.throws(() => a.embedding(new Float32Array(4), new Float32Array(8), 0, Int32Array.of(-1), 4), { name: 'RangeError', message: /token id -1/ });
    assert.throws(() => a.rope(new Float32Array(6), 1, 1, 6, new Int32Array(2), new Float32Array(3)), { name: 'RangeError', message: /positions has 2/ });
  });

  it('backend: clear errors for unsupported dtypes and shapes', () => {
    const x = f32t([1, 4], randn(4)), out = f32t([1, 2], new Float32Array(2));
    const w8 = new Tensor('I8', [2, 4], new Int8Array(8));
    assert.throws(() => cpuBackend.matmul(x, w8, null, out), /matmul: unsupported weight dtype I8/);
    assert.throws(() => cpuBackend.embedding(w8, Int32Array.of(0), f32t([4], new Float32Array(4))), /embedding: unsupported weight dtype I8/);
    assert.throws(() => cpuBackend.matmul(x, weight('F32', 2, 3), null, out), /matmul: x \[1,4\] vs w \[2,3\]/);
    assert.equal(cpuBackend.supports('matmul', ['BF16']), true);
    assert.equal(cpuBackend.supports('matmul', ['I8']), false);
  });

  it('decode-shaped calls allocate no scratch after the first (bf16 GEMV, GEMM, attention, rope)', () => {
    const threads = addon!.getThreads();
    addon!.setThreads(1);  // one thread: which worker first runs a chunk (and sizes its buffers) is up to the pool
    try {
      for (const level of levels()) {
        addon!.setLevel(level);
        const K = 300, N = 257, hd = 64, H = 4, nKV = 2, S = 40;
        const w = weight('BF16', N, K), x1 = f32t([1, K], randn(K)), x80 = f32t([80, K], randn(80 * K));
        const q = f32t([1, 1, H, hd], randn(H * hd)), kc = f32t([1, S, nKV, hd], randn(S * nKV * hd));
        const inv = Float32Array.from({ length: hd / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / hd));
        const step = (t: number) => {
          cpuBackend.matmul(x1, w, null, f32t([1, N], new Float32Array(N)));
          cpuBackend.matmul(x80, w, null, f32t([80, N], new Float32Array(80 * N)));
          cpuBackend.attention(q, kc, kc, { pastLen: 30, keyMask: null, scale: 0.125 }, f32t([1, 1, H, hd], new Float32Array(H * hd)));
          cpuBackend.rope(f32t([1, H, hd], randn(H * hd)), Int32Array.of(t), inv);
        };
        step(0);
        const before = addon!.scratchStats();
        for (let t = 1; t <= 20; t++) step(t);
        const after = addon!.scratchStats();
        assert.equal(after.grows, before.grows, `${level}: ${after.grows - before.grows} scratch allocations in 20 decode steps`);
        assert.ok(after.bytes > 0, `${level}: scratch bytes are counted`);
      }
    } finally {
      addon!.setLevel('best');
      addon!.setThreads(threads);
    }
  });

  it('ref and cpu reject bad shapes with the same ShapeError (one validation, src/backend/shapes.ts)', () => {
    const t = (shape: number[]) => f32t(shape, new Float32Array(shape.reduce((a, b) => a * b, 1)));
    const q = t([2, 1, 4, 8]), kv = t([2, 5, 2, 8]);
    const bad: [string, (b: typeof cpuBackend) => void, RegExp][] = [
      ['matmul K', (b) => b.matmul(t([2, 4]), t([3, 5]), null, t([2, 3])), /matmul: x \[2,4\] vs w \[3,5\]/],
      ['matmul out', (b) => b.matmul(t([2, 4]), t([3, 4]), null, t([2, 2])), /matmul out: expected 6 elements/],
      ['matmul bias', (b) => b.matmul(t([2, 4]), t([3, 4]), t([2]), t([2, 3])), /matmul bias: expected 3 elements/],
      ['rmsnorm w', (b) => b.rmsnorm(t([2, 4]), t([3]), 1e-5, t([2, 4])), /rmsnorm w: expected 4 elements/],
      ['layernorm b', (b) => b.layernorm(t([2, 4]), t([4]), t([5]), 1e-5, t([2, 4])), /layernorm b: expected 4 elements/],
      ['rope odd', (b) => b.rope(t([1, 2, 5]), Int32Array.of(0), new Float32Array(2)), /rope: head dim 5 must be even/],
      ['rope invFreq', (b) => b.rope(t([1, 2, 4]), Int32Array.of(0), new Float32Array(3)), /rope: invFreq has 3 entries, expected 2/],
      ['attention groups', (b) => b.attention(q, t([2, 5, 3, 8]), t([2, 5, 3, 8]), { pastLen: 0, keyMask: null, scale: 1 }, t([2, 1, 4, 8])), /4 heads not a multiple of 3 kv heads/],
      ['attention capacity', (b) => b.attention(q, kv, kv, { pastLen: 5, keyMask: null, scale: 1 }, t([2, 1, 4, 8])), /6 positions exceed the cache capacity 5/],
      ['attention v', (b) => b.attention(q, kv, t([2, 5, 2, 4]), { pastLen: 0, keyMask: null, scale: 1 }, t([2, 1, 4, 8])), /k cache \[2,5,2,8\] vs v cache \[2,5,2,4\]/],
      ['attention mask', (b) => b.attention(q, kv, kv, { pastLen: 2, keyMask: new Uint8Array(5), scale: 1 }, t([2, 1, 4, 8])), /keyMask has 5 entries, expected B·\(pastLen\+T\) = 6/],
      ['attention window', (b) => b.attention(q, kv, kv, { pastLen: 2, keyMask: null, scale: 1, window: -1 }, t([2, 1, 4, 8])), /window must be an integer >= 0/],
      ['siluMul', (b) => b.siluMul(t([6]), t([5]), t([6])), /siluMul up: expected 6 elements/],
      ['add', (b) => b.add(t([6]), t([6]), t([7])), /add out: expected 6 elements/],
      ['softmax', (b) => b.softmax(t([2, 3]), t([5])), /softmax out: expected 6 elements/],
      ['embedding', (b) => b.embedding(t([4, 3]), Int32Array.of(1, 2), t([5])), /embedding out: expected 6 elements/],
    ];
    for (const [what, call, message] of bad) {
      for (const be of [refBackend, cpuBackend]) assert.throws(() => call(be), { name: 'ShapeError', message }, `${be.name} ${what}`);
    }
  });

  it('mmap maps whole files read-only, empty files too, and names the path on failure', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-mmap-'));
    try {
      const bytes = Uint8Array.from({ length: 10007 }, (_, i) => (i * 31 + 7) & 255);
      writeFileSync(join(dir, 'f.bin'), bytes);
      writeFileSync(join(dir, 'empty.bin'), new Uint8Array(0));
      const buf = addon!.mmap(join(dir, 'f.bin'));
      assert.equal(buf.byteLength, bytes.length);
      assert.deepEqual(new Uint8Array(buf), bytes);
      assert.equal(addon!.mmap(join(dir, 'empty.bin')).byteLength, 0);
      const missing = join(dir, 'missing.bin');
      assert.throws(() => addon!.mmap(missing), (e: Error) => e.message.includes(missing));
      assert.throws(() => addon!.mmap(dir), (e: Error) => e.message.includes(dir));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('roofline probes return plausible numbers', () => {
    const bw = addon!.memBandwidth(16 << 20, 2), peak = addon!.fmaPeak(20);
    assert.ok(Number.isFinite(bw) && bw > 0.1 && bw < 1e4, `memBandwidth ${bw}`);
    assert.ok(Number.isFinite(peak) && peak > 0.1 && peak < 1e5, `fmaPeak ${peak}`);
    assert.throws(() => addon!.memBandwidth(100, 1), RangeError);
  });

});

describe('cpu backend without the addon', { skip: addon ? 'addon is built' : false }, () => {
  it('throws an error that says why', () => {
    assert.equal(cpuAvailable(), false);
    assert.throws(() => cpuBackend.add(f32t([1], new Float32Array(1)), f32t([1], new Float32Array(1)), f32t([1], new Float32Array(1))),
      (e: Error) => e.message.includes(addonLoadError ?? '???'));
  });
});
