// GPTQ's algorithm (src/quant/gptq.ts) on small matrices: the quantizer grid against hand-worked rows, fasterquant
// against AutoGPTQ transliterated into numpy float32 (scripts/golden/make_gptq_fixture.py →
// test/fixtures/gptq/gptq_golden.safetensors), GPTQ's layer output error below RTN's on the same calibration data
// across bits, groups, act-order and static groups, the codes ↔ dequantized ↔ g_idx consistency, dead columns, the
// exact identity 2·loss = ‖W − Ŵ‖² in the damped Hessian's norm, and typed errors.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readSafetensors } from '../src/io/safetensors.js';
import { loadAddon } from '../src/native/addon.js';
import {
  checkGptqOptions, GptqCholeskyError, GptqError, gptqQuantize, HessianAccumulator, outputError, roundHalfEven, rtnQuantize,
  type GptqRunOptions,
} from '../src/quant/gptq.js';
import type { GptqBits, GptqCodes } from '../src/quant/gptq-types.js';
import { Rand, ROOT } from './helpers.js';

const LINALGS: ('ref' | 'native')[] = loadAddon() ? ['ref', 'native'] : ['ref'];
const rng = new Rand(20260102);
const randn = (): number => Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());

/** T calibration tokens of K correlated features with uneven scales (so the Hessian matters), and a weight [N, K]. */
function problem(N: number, K: number, T: number, deadCols: number[] = []): { W: Float32Array; X: Float32Array } {
  const X = new Float32Array(T * K);
  for (let t = 0; t < T; t++) {
    let prev = 0;
    for (let k = 0; k < K; k++) {
      prev = 0.7 * prev + randn() * (k % 7 === 0 ? 4 : 1);
      X[t * K + k] = deadCols.includes(k) ? 0 : prev;
    }
  }
  const W = Float32Array.from({ length: N * K }, () => 0.05 * randn());
  return { W, X };
}

function hessianOf(X: Float32Array, T: number, K: number, seq: number, linalg?: 'ref' | 'native'): Float32Array {
  const acc = new HessianAccumulator(K, linalg);
  for (let t = 0; t < T; t += seq) acc.add(X.subarray(t * K, Math.min(T, t + seq) * K), Math.min(seq, T - t));
  return acc.H;
}

/** ‖X·(W − Ŵ)ᵀ‖² / ‖X·Wᵀ‖², straight from the calibration inputs. */
function layerError(W: Float32Array, Wq: Float32Array, X: Float32Array, N: number, K: number, T: number): number {
  let num = 0, den = 0;
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      let y = 0, yq = 0;
      for (let k = 0; k < K; k++) { y += X[t * K + k] * W[n * K + k]; yq += X[t * K + k] * Wq[n * K + k]; }
      num += (y - yq) ** 2; den += y * y;
    }
  }
  return num / den;
}

/** Every dequantized value is scale·(q − zero) of its code's group, bit for bit, and the arrays have their shapes. */
function assertCodesGive(codes: GptqCodes, deq: Float32Array, what: string): void {
  const [N, K] = codes.shape;
  const nGroups = codes.groupSize === -1 ? 1 : Math.ceil(K / codes.groupSize);
  assert.equal(codes.scales.length, nGroups * N, `${what}: scales`);
  assert.equal(codes.zeros.length, nGroups * N, `${what}: zeros`);
  assert.equal(codes.gIdx.length, K, `${what}: gIdx`);
  const maxq = 2 ** codes.bits - 1;
  for (let c = 0; c < K; c++) {
    const g = codes.gIdx[c];
    assert.ok(g >= 0 && g < nGroups, `${what}: gIdx[${c}] = ${g}`);
    for (let n = 0; n < N; n++) {
      const q = codes.intWeight[n * K + c];
      assert.ok(q <= maxq);
      const v = Math.fround(codes.scales[g * N + n] * (q - codes.zeros[g * N + n]));
      if (v !== deq[n * K + c]) assert.fail(`${what}: [${n}, ${c}] codes give ${v}, dequantized holds ${deq[n * K + c]}`);
    }
  }
}

describe('quantizer grid (§4.1)', () => {
  it('round half to even, as torch.round', () => {
    assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 2.5001, -7.5].map(roundHalfEven), [0, 2, 2, 0, -2, -2, 2, 3, -8]);
  });

  // Expected values from AutoGPTQ's Quantizer in numpy float32 (scripts/golden/make_gptq_fixture.py's class).
  const rows = [[-1, 0.5, 2, 3], [0.5, 1, 3, 0.25], [0, 0, 0, 0], [-2, 1, -0.5, 0.125]];
  it('4-bit sym: ±max|x|, zero 8; a row without negatives keeps xmin = 0 and saturates (the reference quirk); all-zero row → [-1, 1]', () => {
    const { codes, dequantized } = rtnQuantize(Float32Array.from(rows.flat()), [4, 4], { bits: 4, groupSize: -1, sym: true });
    assert.deepEqual(Array.from(codes.scales), [0.4000000059604645, 0.20000000298023224, 0.13333334028720856, 0.2666666805744171]);
    assert.deepEqual(Array.from(codes.zeros), [8, 8, 8, 8]);
    assert.deepEqual(Array.from(codes.intWeight), [6, 9, 13, 15, 10, 13, 15, 9, 8, 8, 8, 8, 1, 12, 6, 8]);
    // Row 1: 3 saturates at code 15 → 0.2·7 = 1.4.
    assert.deepEqual(Array.from(dequantized.subarray(4, 8)), [0.4000000059604645, 1, 1.399999976158142, 0.20000000298023224]);
    assert.deepEqual(Array.from(codes.gIdx), [0, 0, 0, 0]);
  });
  it('4-bit asym: zero = round(−xmin/scale) in float32 (an all-zero row: round(7.4999995) = 7)', () => {
    const { codes, dequantized } = rtnQuantize(Float32Array.from(rows.flat()), [4, 4], { bits: 4, groupSize: -1, sym: false });
    assert.deepEqual(Array.from(codes.scales), [0.2666666805744171, 0.20000000298023224, 0.13333334028720856, 0.20000000298023224]);
    assert.deepEqual(Array.from(codes.zeros), [4, 0, 7, 10]);
    assert.deepEqual(Array.from(codes.intWeight), [0, 6, 11, 15, 2, 5, 15, 1, 7, 7, 7, 7, 0, 15, 8, 11]);
    assert.deepEqual(Array.from(dequantized.subarray(0, 4)), [-1.0666667222976685, 0.5333333611488342, 1.8666667938232422, 2.933333396911621]);
    assert.deepEqual(Array.from(dequantized.subarray(8, 12)), [0, 0, 0, 0]);
  });
  it('3-bit and 2-bit zero points', () => {
    const r3 = [[-0.3, 1, 0.2, -0.1], [0, 0, 0, 0], [0.5, 1, 3, 0.25]];
    const a = rtnQuantize(Float32Array.from(r3.flat()), [3, 4], { bits: 3, groupSize: -1, sym: false });
    assert.deepEqual(Array.from(a.codes.zeros), [2, 3, 0]);
    assert.deepEqual(Array.from(a.codes.scales), [0.18571427464485168, 0.2857142984867096, 0.4285714328289032]);
    assert.deepEqual(Array.from(a.codes.intWeight), [0, 7, 3, 1, 3, 3, 3, 3, 1, 2, 7, 1]);
    const s = rtnQuantize(Float32Array.from(r3.flat()), [3, 4], { bits: 3, groupSize: -1, sym: true });
    assert.deepEqual(Array.from(s.codes.zeros), [4, 4, 4]);
    assert.deepEqual(Array.from(s.codes.intWeight), [3, 7, 5, 4, 4, 4, 4, 4, 5, 6, 7, 5]);
    const b = rtnQuantize(Float32Array.from(r3[0]), [1, 4], { bits: 2, groupSize: -1, sym: false });
    assert.deepEqual([b.codes.scales[0], b.codes.zeros[0], ...b.codes.intWeight], [0.43333330750465393, 1, 0, 3, 1, 1]);
    const e = rtnQuantize(Float32Array.from(r3[0]), [1, 4], { bits: 8, groupSize: -1, sym: true });
    assert.equal(e.codes.zeros[0], 128);
  });
  it('groups run over consecutive columns; the last is shorter when G does not divide K', () => {
    const { W } = problem(3, 70, 1);
    const { codes, dequantized } = rtnQuantize(W, [3, 70], { bits: 4, groupSize: 32, sym: false });
    assert.deepEqual(Array.from(codes.gIdx), Array.from({ length: 70 }, (_, c) => Math.floor(c / 32)));
    assert.equal(codes.scales.length, 3 * 3);
    assertCodesGive(codes, dequantized, 'rtn g32');
    const last = rtnQuantize(W.filter((_, i) => i % 70 >= 64), [3, 6], { bits: 4, groupSize: -1, sym: false });
    for (let n = 0; n < 3; n++) assert.equal(codes.scales[2 * 3 + n], last.codes.scales[n]);
  });
});

describe('fasterquant = AutoGPTQ in numpy float32 (fixture)', () => {
  const f = readSafetensors(join(ROOT, 'test', 'fixtures', 'gptq', 'gptq_golden.safetensors'));
  const configs = JSON.parse(f.metadata!.configs) as Partial<GptqRunOptions>[];
  const losses = JSON.parse(f.metadata!.losses) as number[];
  const W = f.get('W').data as Float32Array, H = f.get('H').data as Float32Array, X = f.get('X').data as Float32Array;
  const [N, K] = f.get('W').shape as [number, number];
  for (const linalg of LINALGS) {
    it(`add_batch's running mean over six sequences [${linalg}]`, () => {
      const got = hessianOf(X, 180, K, 30, linalg);
      for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) {
        const tol = 1e-5 * Math.sqrt(H[i * K + i] * H[j * K + j]);
        if (!(Math.abs(got[i * K + j] - H[i * K + j]) <= tol)) assert.fail(`H[${i}, ${j}] ${got[i * K + j]} vs ${H[i * K + j]}`);
      }
    });
    configs.forEach((c, i) => {
      it(`${JSON.stringify(c)}: codes, zeros and g_idx exact; scales, Q and loss to float32 [${linalg}]`, () => {
        const r = gptqQuantize(W, [N, K], H, { ...c, linalg });
        assert.deepEqual(r.codes.intWeight, f.get(`c${i}.intWeight`).data);
        assert.deepEqual(r.codes.zeros, f.get(`c${i}.zeros`).data);
        assert.deepEqual(r.codes.gIdx, f.get(`c${i}.gIdx`).data);
        const sc = f.get(`c${i}.scales`).data as Float32Array, Q = f.get(`c${i}.Q`).data as Float32Array;
        assert.equal(r.codes.scales.length, sc.length);
        sc.forEach((s, j) => assert.ok(Math.abs(r.codes.scales[j] - s) <= 1e-6 * s, `scale ${j}: ${r.codes.scales[j]} vs ${s}`));
        Q.forEach((q, j) => assert.ok(Math.abs(r.dequantized[j] - q) <= 2e-6 * Math.abs(q) + 1e-9, `Q ${j}: ${r.dequantized[j]} vs ${q}`));
        assert.ok(Math.abs(r.loss - losses[i]) <= 1e-5 * losses[i], `loss ${r.loss} vs ${losses[i]}`);
        assertCodesGive(r.codes, r.dequantized, `c${i}`);
        // The dead column (5) quantizes to 0 in every row.
        for (let n = 0; n < N; n++) assert.equal(r.dequantized[n * K + 5], 0);
      });
    });
  }
});

describe('GPTQ against round-to-nearest on the same calibration data', () => {
  const N = 40, K = 200, T = 480;
  const { W, X } = problem(N, K, T);
  const H = hessianOf(X, T, K, 60);
  const cases: Partial<GptqRunOptions>[] = [];
  for (const bits of [2, 3, 4, 8] as GptqBits[]) for (const groupSize of [-1, 32, 64, 128]) cases.push({ bits, groupSize, sym: bits % 2 === 0 });
  cases.push({ bits: 4, groupSize: 64, sym: false, descAct: true }, { bits: 3, groupSize: 32, sym: true, descAct: true },
    { bits: 4, groupSize: 64, sym: false, staticGroups: true }, { bits: 3, groupSize: 128, sym: false, descAct: true, staticGroups: true },
    { bits: 2, groupSize: -1, sym: false, descAct: true }, { bits: 4, groupSize: 48, sym: false, blockSize: 32 });
  for (const c of cases) {
    it(`${JSON.stringify(c)}: lower layer output error; codes give the dequantized weight`, () => {
      const g = gptqQuantize(W, [N, K], H, c);
      const r = rtnQuantize(W, [N, K], { bits: c.bits!, groupSize: c.groupSize!, sym: c.sym! });
      const eg = layerError(W, g.dequantized, X, N, K, T), er = layerError(W, r.dequantized, X, N, K, T);
      assert.ok(eg < 0.7 * er, `GPTQ ${eg} vs RTN ${er}`);
      // outputError (through H) is the same ratio.
      assert.ok(Math.abs(outputError(W, g.dequantized, H, N, K) - eg) <= 1e-3 * eg);
      assertCodesGive(g.codes, g.dequantized, 'gptq');
      assertCodesGive(r.codes, r.dequantized, 'rtn');
      // 2·loss = Σ_n (w − ŵ)ᵀ (H + damp·mean(diag H)·I) (w − ŵ): W − Q = E·U with H⁻¹ = UᵀU makes it an identity.
      let mean = 0;
      for (let k = 0; k < K; k++) mean += H[k * K + k] / K;
      const Hd = H.slice();
      for (let k = 0; k < K; k++) Hd[k * K + k] += (c.dampPercent ?? 0.01) * mean;
      const D = W.map((w, i) => w - g.dequantized[i]);
      let q = 0;
      for (let n = 0; n < N; n++) for (let a = 0; a < K; a++) {
        let s = 0;
        for (let b = 0; b < K; b++) s += Hd[a * K + b] * D[n * K + b];
        q += D[n * K + a] * s;
      }
      assert.ok(Math.abs(2 * g.loss - q) <= 1e-3 * q, `2·loss ${2 * g.loss} vs ${q}`);
    });
  }

  it('act-order: g_idx maps columns to groups of G in decreasing diag(H) order; static groups keep c / G', () => {
    const G = 48;
    const g = gptqQuantize(W, [N, K], H, { bits: 4, groupSize: G, sym: false, descAct: true });
    const count = new Array(Math.ceil(K / G)).fill(0);
    g.codes.gIdx.forEach((x) => count[x]++);
    assert.deepEqual(count, [48, 48, 48, 48, 8]);
    const diag = (c: number) => H[c * K + c];
    for (let a = 0; a < K; a++) for (let b = 0; b < K; b++) {
      if (g.codes.gIdx[a] < g.codes.gIdx[b]) assert.ok(diag(a) >= diag(b), `column ${a} (group ${g.codes.gIdx[a]}) before ${b}`);
    }
    assert.ok(g.codes.gIdx.some((x, c) => x !== Math.floor(c / G)), 'act-order reorders');
    const s = gptqQuantize(W, [N, K], H, { bits: 4, groupSize: G, sym: false, descAct: true, staticGroups: true });
    assert.deepEqual(Array.from(s.codes.gIdx), Array.from({ length: K }, (_, c) => Math.floor(c / G)));
    // static groups: each group's grid is RTN's grid of the original columns.
    const r = rtnQuantize(W, [N, K], { bits: 4, groupSize: G, sym: false });
    assert.deepEqual(s.codes.scales, r.codes.scales);
    assert.deepEqual(s.codes.zeros, r.codes.zeros);
  });

  it('dead columns (an input that is always 0) are zeroed, quantize to the zero point, and H is left unchanged', () => {
    const dead = [0, 3, 130, 199];
    const p = problem(12, K, 300, dead);
    const Hd = hessianOf(p.X, 300, K, 50);
    const copy = Hd.slice();
    for (const descAct of [false, true]) {
      const g = gptqQuantize(p.W, [12, K], Hd, { bits: 3, groupSize: 64, sym: false, descAct });
      for (const c of dead) for (let n = 0; n < 12; n++) {
        assert.equal(g.dequantized[n * K + c], 0);
        assert.equal(g.codes.intWeight[n * K + c], g.codes.zeros[g.codes.gIdx[c] * 12 + n]);
      }
      assert.ok(Number.isFinite(g.loss));
    }
    assert.deepEqual(Hd, copy);
  });

  it('native = ref on a layer wider than two blocks (the same codes but for rare rounding-boundary flips)', { skip: LINALGS.length < 2 ? 'native addon not built' : false }, () => {
    const P = problem(30, 300, 400);
    const H2 = hessianOf(P.X, 400, 300, 100, 'ref');
    for (const c of [{ bits: 4 as GptqBits, groupSize: 128, sym: false }, { bits: 3 as GptqBits, groupSize: 32, sym: true, descAct: true }]) {
      const a = gptqQuantize(P.W, [30, 300], H2, { ...c, linalg: 'native' }), b = gptqQuantize(P.W, [30, 300], H2, { ...c, linalg: 'ref' });
      let diff = 0;
      a.codes.intWeight.forEach((q, i) => { if (q !== b.codes.intWeight[i]) diff++; });
      assert.ok(diff <= 0.005 * a.codes.intWeight.length, `${diff} codes differ`);
      assert.ok(Math.abs(a.loss - b.loss) <= 1e-3 * b.loss, `loss ${a.loss} vs ${b.loss}`);
    }
  });
});

describe('GPTQ errors', () => {
  it('a Hessian that is not positive definite names the layer; dampAutoIncrement retries as GPTQModel does', () => {
    const W = Float32Array.from([0.1, -0.2, 0.3, 0.05]);
    const H = Float32Array.from([1, 1.055, 1.055, 1]);          // eigenvalues 2.055 and −0.055
    assert.throws(() => gptqQuantize(W, [2, 2], H, { name: 'model.layers.7.mlp.up_proj', groupSize: -1 }),
      (e: unknown) => e instanceof GptqCholeskyError && e.layer === 'model.layers.7.mlp.up_proj' && /model\.layers\.7\.mlp\.up_proj: the damped Hessian is not positive definite/.test(e.message));
    const r = gptqQuantize(W, [2, 2], H, { groupSize: -1, dampAutoIncrement: 0.01 });
    assert.ok(r.dampPercent > 0.055 && r.dampPercent < 0.07, `damp ${r.dampPercent}`);
    const nan = Float32Array.from([1, 0, 0, NaN]);
    assert.throws(() => gptqQuantize(W, [2, 2], nan, { groupSize: -1, dampAutoIncrement: 0.1 }), GptqCholeskyError);
  });

  it('options and inputs are checked, snake_case accepted', () => {
    assert.throws(() => checkGptqOptions({ bits: 5 as GptqBits }), /bits must be one of 2, 3, 4, 8, got 5/);
    assert.throws(() => checkGptqOptions({ groupSize: 0 }), /groupSize must be -1 or a positive integer/);
    assert.throws(() => checkGptqOptions({ dampPercent: 2 }), /dampPercent must be a number in \[0, 1\]/);
    assert.throws(() => checkGptqOptions({ descAct: 'yes' as unknown as boolean }), /descAct must be true or false/);
    assert.throws(() => checkGptqOptions({ groupsize: 64 } as Record<string, unknown>), GptqError);
    assert.deepEqual(checkGptqOptions({ group_size: 64, desc_act: true, damp_percent: 0.1 }, 'x'),
      { bits: 4, groupSize: 64, sym: true, descAct: true, staticGroups: false, dampPercent: 0.1, blockSize: 128, dampAutoIncrement: 0 });
    assert.throws(() => gptqQuantize(Float32Array.from([1, NaN]), [1, 2], new Float32Array(4), { name: 'L' }), /L: weight \[0, 1\] is NaN/);
    assert.throws(() => gptqQuantize(new Float32Array(6), [2, 3], new Float32Array(4), { name: 'L' }), /L: H has 4 values/);
  });
});
