// AWQ's pieces (src/quant/awq.ts): the float16 rounding of scales, AutoAWQ's quantizer on hand-computed groups (half
// to even), the statistics, the scale search against a brute-force recomputation, the clip search against AutoAWQ's
// token formula, folding helpers, options, and the native twins (native/cpu/awq.cc) bit for bit against the TypeScript ones.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadAddon } from '../src/native/addon.js';
import {
  activationMean, applyClip, AWQ_CLIP_STEPS, AWQ_GRID, AwqError, awqPseudoQuantize, awqQuantize, awqScales, checkAwqOptions, clipSearch,
  clipTokens, divideLastRows, divideTail, f16Round, getAwqKernels, groupOf, meanSquaredError, nativeAwqKernels, refAwqKernels,
  scaleColumns, searchScales, weightMean,
} from '../src/quant/awq.js';
import { f16ToF32, f32ToF16 } from '../src/tensor/dtype.js';
import { PyRandom } from '../src/util/pyrandom.js';

const native = loadAddon() ? nativeAwqKernels() : null;
const SKIP_NATIVE = native ? false : 'native addon not built';

/** A standard normal draw (Box-Muller on 32-bit uniforms). */
function normal(r: PyRandom): number {
  const u = (r.getrandbits(32) + 1) / 4294967297, v = r.getrandbits(32) / 4294967296;
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

function gauss(r: PyRandom, n: number, std = 1): Float32Array {
  return Float32Array.from({ length: n }, () => Math.fround(normal(r) * std));
}

/** Inputs with a few large channels, as AWQ's activations have. */
function activations(r: PyRandom, T: number, K: number): Float32Array {
  const x = gauss(r, T * K);
  for (let t = 0; t < T; t++) for (const c of [1, 5, K - 2]) x[t * K + c] = Math.fround(x[t * K + c] * 20);
  return x;
}

describe('AWQ quantizer (§5.3)', () => {
  it('f16Round is float16 round-to-nearest-even (normal, subnormal, ties) and saturates at ±65504', () => {
    const r = new PyRandom(3);
    const vals = [0, -0, 1, 1 / 3, 0.2, 6.1e-5, 6.103515625e-05, 5.9604645e-08, 2.98e-8, 1e-5 / 15, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 65519, -2047.5, 2049];
    for (let i = 0; i < 2000; i++) vals.push(Math.fround(normal(r) * 10 ** r.randint(-9, 4)));
    for (const v of vals) {
      const f = Math.fround(v);
      assert.equal(f16Round(f), f16ToF32(f32ToF16(f)), `${f}`);
    }
    assert.equal(f16Round(70000), 65504);
    assert.equal(f16Round(-1e9), -65504);
  });

  it('zero point, 4-bit: hand-computed codes, scale, zero, with round half to even in the codes and the zero point', () => {
    // range 3.75 → scale 0.25 (exact in float16); zero = -round(-1/0.25) = 4; 0.125/0.25 = 0.5 → 0, 0.375/0.25 = 1.5 → 2.
    let q = awqQuantize(Float32Array.from([-1, 0.125, 0.375, 2.75]), [1, 4], { bits: 4, groupSize: 4, zeroPoint: true, kernels: 'ref' });
    assert.deepEqual([...q.codes.intWeight], [0, 4, 6, 15]);
    assert.deepEqual([...q.codes.scales], [0.25]);
    assert.deepEqual([...q.codes.zeros], [4]);
    assert.deepEqual([...q.dequantized], [-1, 0, 0.5, 2.75]);
    // min/scale = -2.5 → round → -2 → zero 2; -2.5 + 2 → 0 (value -0.5); 12.5 → 12 → 14 (value 3).
    q = awqQuantize(Float32Array.from([-0.625, 3.125]), [1, 2], { bits: 4, groupSize: -1, zeroPoint: true, kernels: 'ref' });
    assert.deepEqual([...q.codes.intWeight], [0, 14]);
    assert.deepEqual([...q.codes.zeros], [2]);
    assert.deepEqual([...q.dequantized], [-0.5, 3]);
    assert.equal(q.codes.groupSize, -1);
    // The scale is rounded to float16 before the codes: 1/15 → 0.066650390625.
    q = awqQuantize(Float32Array.from([0, 1]), [1, 2], { bits: 4, groupSize: 2, zeroPoint: true, kernels: 'ref' });
    assert.equal(q.codes.scales[0], 0.066650390625);
    assert.deepEqual([...q.codes.intWeight], [0, 15]);
    assert.equal(q.dequantized[1], Math.fround(15 * 0.066650390625));
  });

  it('symmetric variant: scale max|w|/(2^(b-1) − 1), codes offset by 2^(b-1), zero 2^(b-1)', () => {
    const q = awqQuantize(Float32Array.from([-1.75, 0.125, 0.375, 0.5]), [1, 4], { bits: 4, groupSize: 4, zeroPoint: false, kernels: 'ref' });
    assert.deepEqual([...q.codes.intWeight], [1, 8, 10, 10]);
    assert.deepEqual([...q.codes.zeros], [8]);
    assert.deepEqual([...q.dequantized], [-1.75, 0, 0.5, 0.5]);
  });

  it('codes layout: [N,K] codes, [nG,N] scales and zeros, gIdx = floor(k/G); every code in range; dequantize = (q − z)·scale', () => {
    const r = new PyRandom(5);
    for (const bits of [2, 3, 4, 8] as const) {
      for (const zeroPoint of [true, false]) {
        const N = 5, K = 96, G = 32, w = gauss(r, N * K);
        const { codes, dequantized } = awqQuantize(w, [N, K], { bits, groupSize: G, zeroPoint });
        assert.deepEqual([...codes.gIdx], Array.from({ length: K }, (_, k) => Math.floor(k / G)));
        assert.equal(codes.scales.length, 3 * N);
        for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) {
          const g = Math.floor(k / G), c = codes.intWeight[n * K + k];
          assert.ok(c < 2 ** bits);
          assert.equal(dequantized[n * K + k], Math.fround((c - codes.zeros[g * N + n]) * codes.scales[g * N + n]));
          assert.equal(f16Round(codes.scales[g * N + n]), codes.scales[g * N + n]);
        }
        // pseudo-quantize without s = the dequantized codes
        assert.deepEqual(awqPseudoQuantize(w, [N, K], null, { bits, groupSize: G, zeroPoint }), dequantized);
      }
    }
  });

  it('Q(W·s)/s: pseudo-quantizing with scales = quantizing the scaled weight, then dividing', () => {
    const r = new PyRandom(6);
    const N = 4, K = 64, w = gauss(r, N * K), s = Float32Array.from({ length: K }, () => Math.fround(Math.exp(normal(r))));
    const ws = scaleColumns(w, N, K, s);
    const q = awqQuantize(ws, [N, K], { bits: 3, groupSize: 32, zeroPoint: true, kernels: 'ref' }).dequantized;
    const want = Float32Array.from(q, (v, i) => Math.fround(v / s[i % K]));
    assert.deepEqual(awqPseudoQuantize(w, [N, K], s, { bits: 3, groupSize: 32, zeroPoint: true, kernels: 'ref' }), want);
  });

  it('refuses a group size that does not divide K, non-finite weights, bad options', () => {
    assert.throws(() => groupOf(128, 172, 'model.layers.0.mlp.down_proj'), (e: Error) => e instanceof AwqError && /down_proj.*128.*172/.test(e.message));
    assert.equal(groupOf(-1, 172, 'x'), 172);
    assert.throws(() => awqQuantize(Float32Array.from([1, NaN]), [1, 2], { bits: 4, groupSize: 2, zeroPoint: true }), /finite/);
    assert.deepEqual(checkAwqOptions({ w_bit: 3, q_group_size: 64, zero_point: false, duo_scaling: false, apply_clip: false }),
      { bits: 3, groupSize: 64, zeroPoint: false, duoScaling: false, applyClip: false });
    assert.deepEqual(checkAwqOptions({}), { bits: 4, groupSize: 128, zeroPoint: true, duoScaling: true, applyClip: true });
    assert.throws(() => checkAwqOptions({ bits: 5 } as never), /bits must be one of/);
    assert.throws(() => checkAwqOptions({ groupSize: 0 }), /groupSize/);
    assert.throws(() => checkAwqOptions({ zeroPoint: 1 } as never), /zeroPoint/);
    assert.throws(() => checkAwqOptions({ version: 'gemm' } as never), /unknown option "version"/);
  });
});

describe('AWQ statistics, search and folding (§5.2)', () => {
  it('x̄ = mean |x| per channel over every token; w̄ = mean over rows of |w| / (group max + 1e-6)', () => {
    const xm = activationMean([Float32Array.from([1, -2, 3, -4]), Float32Array.from([-5, 6])], 2);
    assert.deepEqual([...xm], [3, 4]);
    const wm = weightMean([Float32Array.from([1, -2, 4, 1]), Float32Array.from([0, 0, -2, 2])], 4, 2);
    const f = (a: number, m: number) => Math.fround(a / Math.fround(m + 1e-6));
    assert.deepEqual([...wm], [(f(1, 2) + 0) / 2, (f(2, 2) + 0) / 2, (f(4, 4) + f(2, 2)) / 2, (f(1, 4) + f(2, 2)) / 2].map(Math.fround));
  });

  it('scales: duo x̄^α/(w̄^(1−α) + 1e-4), clamped at 1e-4, normalised by sqrt(max·min); α = 0 without duo is all ones', () => {
    const xm = Float32Array.from([0, 1, 4, 9]), wm = Float32Array.from([0.5, 0.25, 1, 0.1]);
    assert.deepEqual([...awqScales(xm, null, 0)], [1, 1, 1, 1]);
    const s = awqScales(xm, null, 0.5);             // [1e-4 (0 clamped), 1, 2, 3] / sqrt(3e-4)
    const norm = Math.fround(Math.sqrt(Math.fround(3 * Math.fround(1e-4))));
    assert.deepEqual([...s], [Math.fround(Math.fround(1e-4) / norm), Math.fround(1 / norm), Math.fround(2 / norm), Math.fround(3 / norm)]);
    const d = awqScales(xm, wm, 0.25);
    const raw = [...xm].map((x, c) => Math.max(Math.fround(Math.fround(x ** 0.25) / Math.fround(Math.fround(wm[c] ** 0.75) + 1e-4)), Math.fround(1e-4)));
    const n2 = Math.fround(Math.sqrt(Math.fround(Math.max(...raw) * Math.min(...raw))));
    assert.deepEqual([...d], raw.map((v) => Math.fround(v / n2)));
  });

  for (const duoScaling of [true, false]) {
    it(`the search picks the grid point with the strictly smallest loss (brute-force recomputation, duo ${duoScaling})`, () => {
      const r = new PyRandom(duoScaling ? 7 : 8);
      const T = 64, K = 64, N1 = 24, N2 = 16;
      const x = activations(r, T, K), w1 = gauss(r, N1 * K, 0.05), w2 = gauss(r, N2 * K, 0.05);
      const opts = { bits: 3 as const, groupSize: 32, zeroPoint: true, duoScaling, kernels: 'ref' as const };
      const out = (w: Float32Array, N: number) => {
        const y = new Float32Array(T * N);
        for (let t = 0; t < T; t++) for (let n = 0; n < N; n++) { let a = 0; for (let k = 0; k < K; k++) a += x[t * K + k] * w[n * K + k]; y[t * N + n] = a; }
        return y;
      };
      const ref = [out(w1, N1), out(w2, N2)];
      const lossOf = (c: Float32Array[]) => meanSquaredError([[out(c[0], N1), ref[0]], [out(c[1], N2), ref[1]]]);
      const res = searchScales([{ w: w1, N: N1, name: 'a' }, { w: w2, N: N2, name: 'b' }], K, activationMean([x], K), opts, lossOf);
      // Brute force: every α from scratch.
      const wMean = duoScaling ? weightMean([w1, w2], K, 32) : null;
      const losses = Array.from({ length: AWQ_GRID }, (_, i) => {
        const s = awqScales(activationMean([x], K), wMean, i / AWQ_GRID);
        return lossOf([awqPseudoQuantize(w1, [N1, K], s, opts), awqPseudoQuantize(w2, [N2, K], s, opts)]);
      });
      assert.deepEqual(res.losses, losses);
      const best = losses.indexOf(Math.min(...losses));
      assert.equal(res.alpha, best / AWQ_GRID);
      assert.equal(res.loss, losses[best]);
      assert.equal(res.lossAtAlpha0, losses[0]);
      assert.deepEqual(res.scales, awqScales(activationMean([x], K), wMean, res.alpha));
      assert.ok(res.alpha > 0, 'outlier channels make some scaling better than none');
    });
  }

  it('folding helpers: columns × s, last rows ÷ s, tail ÷ s (new arrays)', () => {
    const w = Float32Array.from([1, 2, 3, 4, 5, 6]), s = Float32Array.from([2, 4]);
    assert.deepEqual([...scaleColumns(Float32Array.from([1, 2, 3, 4]), 2, 2, s)], [2, 8, 6, 16]);
    assert.deepEqual([...divideLastRows(w, 3, 2, s)], [1, 2, 1.5, 2, 1.25, 1.5]);
    assert.deepEqual([...w], [1, 2, 3, 4, 5, 6]);
    assert.deepEqual([...divideTail(Float32Array.from([8, 8, 8]), s)], [8, 4, 2]);
  });
});

describe('AWQ clip search (§5.2 step 5)', () => {
  it('clip tokens: every max(1, n // 512)-th row over the concatenated inputs, divided by s', () => {
    const K = 2;
    const mk = (rows: number, base: number) => Float32Array.from({ length: rows * K }, (_, i) => base + Math.floor(i / K));
    const inputs = [mk(700, 0), mk(600, 700)];                         // 1300 rows → step 2 → 650 tokens
    const { x, T } = clipTokens(inputs, K, Float32Array.from([1, 2]));
    assert.equal(T, 650);
    for (let t = 0; t < T; t++) assert.deepEqual([x[t * 2], x[t * 2 + 1]], [2 * t, Math.fround(2 * t / 2)]);
    assert.equal(clipTokens([mk(100, 0)], K, null).T, 100);
  });

  it('the chosen max per (row, group) minimises AutoAWQ\'s token error among the 10 shrink steps; the error never grows', () => {
    const r = new PyRandom(9);
    const N = 6, K = 64, G = 32, T = 200;
    const w = gauss(r, N * K, 0.05);
    for (let i = 0; i < N * K; i += 37) w[i] *= 8;                       // a few outlier weights worth clipping
    const x = activations(r, T, K);
    const opts = { bits: 3 as const, groupSize: G, zeroPoint: true, kernels: 'ref' as const };
    const best = clipSearch(w, [N, K], x, T, opts);
    // AutoAWQ's formula, directly over the tokens: mean_t (Σ_group x·Q(clamp(w)) − Σ_group x·w)².
    const err = (n: number, g: number, m: number) => {
      const cw = Float32Array.from({ length: G }, (_, k) => Math.min(Math.max(w[n * K + g * G + k], -m), m));
      const q = awqPseudoQuantize(cw, [1, G], null, { ...opts, groupSize: -1 });
      let e = 0;
      for (let t = 0; t < T; t++) { let a = 0; for (let k = 0; k < G; k++) a += x[t * K + g * G + k] * (q[k] - w[n * K + g * G + k]); e += a * a; }
      return e / T;
    };
    let shrunk = 0;
    for (let n = 0; n < N; n++) for (let g = 0; g < K / G; g++) {
      let org = 0;
      for (let k = 0; k < G; k++) org = Math.max(org, Math.abs(w[n * K + g * G + k]));
      const cands = Array.from({ length: AWQ_CLIP_STEPS }, (_, i) => Math.fround(org * (1 - i / AWQ_GRID)));
      const errs = cands.map((m) => err(n, g, m));
      const chosen = best[n * (K / G) + g];
      assert.ok(cands.includes(chosen));
      assert.ok(err(n, g, chosen) <= Math.min(...errs) * (1 + 1e-9) + 1e-15, `row ${n} group ${g}`);
      assert.ok(err(n, g, chosen) <= errs[0] * (1 + 1e-9) + 1e-15);
      if (chosen < org) shrunk++;
    }
    assert.ok(shrunk > 0, 'some group was clipped');
    const clipped = applyClip(w, N, K, G, best);
    for (let i = 0; i < N * K; i++) assert.ok(Math.abs(clipped[i]) <= best[Math.floor(i / K) * 2 + Math.floor((i % K) / G)]);
  });
});

describe('AWQ native twins (native/cpu/awq.cc) equal the TypeScript ones bit for bit', { skip: SKIP_NATIVE }, () => {
  it('pseudoQuantize: every bit width, both grids, with and without s and outputs, odd sizes', () => {
    const r = new PyRandom(11);
    for (const [N, K, G] of [[1, 8, 8], [7, 96, 32], [33, 256, 128], [5, 172, 4], [3, 64, 64]]) {
      for (const bits of [2, 3, 4, 8]) for (const zp of [true, false]) for (const withS of [false, true]) {
        const w = gauss(r, N * K, 0.1);
        w[0] = 0; if (N * K > 9) { w[3] = 1e-7; w[9] = -3; }
        const s = withS ? Float32Array.from({ length: K }, () => Math.fround(Math.exp(2 * normal(r)))) : null;
        const run = (k: typeof refAwqKernels) => {
          const out = new Float32Array(N * K), codes = new Uint8Array(N * K), scales = new Float32Array((K / G) * N), zeros = new Uint8Array((K / G) * N);
          k.pseudoQuantize(w, N, K, s, bits, G, zp, out, codes, scales, zeros);
          const o2 = new Float32Array(N * K);
          k.pseudoQuantize(w, N, K, s, bits, G, zp, o2, null, null, null);
          assert.deepEqual(o2, out);
          return { out, codes, scales, zeros };
        };
        assert.deepEqual(run(native!), run(refAwqKernels), `N ${N} K ${K} G ${G} bits ${bits} zp ${zp} s ${withS}`);
      }
    }
  });

  it('groupGram and clipSearch', () => {
    const r = new PyRandom(12);
    for (const [N, K, G, T] of [[4, 64, 32, 50], [9, 128, 128, 37], [3, 172, 4, 513]]) {
      const x = activations(r, T, K), w = gauss(r, N * K, 0.05);
      const gr = new Float64Array(K * G), gn = new Float64Array(K * G);
      refAwqKernels.groupGram(x, T, K, G, gr);
      native!.groupGram(x, T, K, G, gn);
      assert.deepEqual(gn, gr);
      for (const bits of [3, 4]) for (const zp of [true, false]) {
        const br = new Float32Array(N * (K / G)), bn = new Float32Array(N * (K / G));
        refAwqKernels.clipSearch(w, N, K, G, gr, T, bits, zp, AWQ_CLIP_STEPS, AWQ_GRID, br);
        native!.clipSearch(w, N, K, G, gr, T, bits, zp, AWQ_CLIP_STEPS, AWQ_GRID, bn);
        assert.deepEqual(bn, br, `N ${N} K ${K} G ${G} bits ${bits} zp ${zp}`);
      }
    }
    assert.equal(getAwqKernels().name, 'native');
  });

  it('argument checks name the function', () => {
    const a = loadAddon()!;
    assert.throws(() => a.awqPseudoQuantize(new Float32Array(8), 1, 8, null, 5, 8, true, new Float32Array(8), null, null, null), /awqPseudoQuantize: bits must be/);
    assert.throws(() => a.awqPseudoQuantize(new Float32Array(8), 1, 8, null, 4, 3, true, new Float32Array(8), null, null, null), /awqPseudoQuantize: group size G = 3 must divide K = 8/);
    assert.throws(() => a.awqPseudoQuantize(new Float32Array(8), 1, 8, null, 4, 8, true, new Float32Array(7), null, null, null), /awqPseudoQuantize: out has 7 elements/);
    assert.throws(() => a.awqGroupGram(new Float32Array(8), 1, 8, 4, new Float64Array(3)), /awqGroupGram: gram has 3 elements/);
    assert.throws(() => a.awqClipSearch(new Float32Array(8), 1, 8, 8, new Float64Array(64), 1, 4, true, 11, 10, new Float32Array(1)), /awqClipSearch: nShrink/);
  });
});
