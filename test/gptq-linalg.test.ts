// GPTQ's native linear algebra (native/cpu/linalg.cc) against its float64 TypeScript twins (src/quant/linalg.ts), at
// every SIMD level, on odd sizes that cross the 128-column panels and the GEMM's 128-row / 256-column tiles. The ref
// sums in float64 and rounds once; the native code keeps float32 storage and float32 micro-kernel sums, so sums are
// held to the a-priori bound (terms + 3)·2⁻²³·Σ|terms| and factorizations (backward stable) to a relative error a
// few hundred times float32's epsilon on well-conditioned matrices.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { addonLoadError, loadAddon } from '../src/native/addon.js';
import { nativeLinalg, refLinalg } from '../src/quant/linalg.js';
import { Rand, relErr } from './helpers.js';

const SEED = Number(process.env.LOWBIT_TEST_SEED ?? (Date.now() % 2 ** 31));
const rng = new Rand(SEED);
function randn(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = scale * Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
  return a;
}
const addon = loadAddon();
const skip = addon ? false : `native addon not built: ${addonLoadError}`;
const U23 = 2 ** -23;

function levels(): string[] {
  if (!addon) return [];
  const best = addon.cpuInfo().best;
  return ['scalar', ...(best === 'avx2' || best === 'avx512' ? ['avx2'] : []), ...(best === 'avx512' ? ['avx512'] : []), ...(best === 'neon' ? ['neon'] : [])];
}

/** A GPTQ-like Hessian: XᵀX/T of T > n correlated rows plus 1% of its mean diagonal (well conditioned, SPD). */
function hessian(n: number, T = 2 * n + 8): Float32Array {
  const x = randn(T * n);
  for (let t = 0; t < T; t++) for (let j = 1; j < n; j++) x[t * n + j] += 0.5 * x[t * n + j - 1];   // correlated columns
  const H = new Float32Array(n * n);
  refLinalg.xtx(H, x, T, n, 0, 1 / T);
  let mean = 0;
  for (let i = 0; i < n; i++) mean += H[i * n + i] / n;
  for (let i = 0; i < n; i++) H[i * n + i] += 0.01 * mean;
  return H;
}

function assertWithin(got: Float32Array, want: Float32Array, bound: Float64Array, what: string): void {
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= bound[i] + 2 ** -24 * Math.abs(want[i]))) assert.fail(`${what}: element ${i}: ${got[i]} vs ${want[i]} (bound ${bound[i]}, seed ${SEED})`);
  }
}

describe('GPTQ linear algebra: native = ref', { skip }, () => {
  after(() => { addon?.setLevel('best'); });
  const nat = addon ? nativeLinalg() : refLinalg;
  for (const level of levels()) {
    it(`xtx (H = beta·H + alpha·XᵀX) within the float32 summation bound [${level}]`, () => {
      assert.equal(addon!.setLevel(level), level);
      for (const [T, K] of [[1, 1], [3, 7], [50, 129], [300, 37], [129, 260]]) {
        const x = randn(T * K);
        const H0 = hessian(K, K + 3);
        const beta = 0.75, alpha = 2 / 3;
        const a = H0.slice(), b = H0.slice();
        nat.xtx(a, x, T, K, beta, alpha);
        refLinalg.xtx(b, x, T, K, beta, alpha);
        const s = Math.fround(Math.sqrt(alpha));
        const bound = new Float64Array(K * K);
        for (let i = 0; i < K; i++) {
          for (let j = 0; j < K; j++) {
            let sum = Math.abs(Math.fround(H0[i * K + j] * beta));
            for (let t = 0; t < T; t++) sum += Math.abs(Math.fround(x[t * K + i] * s) * Math.fround(x[t * K + j] * s));
            bound[i * K + j] = (T + 3) * U23 * sum;
          }
        }
        assertWithin(a, b, bound, `xtx T=${T} K=${K}`);
        for (let i = 0; i < K; i++) for (let j = 0; j < i; j++) assert.equal(a[i * K + j], a[j * K + i], 'symmetric');
      }
    });

    it(`cholesky (lower and upper) and cholesky_inverse on odd sizes [${level}]`, () => {
      assert.equal(addon!.setLevel(level), level);
      for (const n of [1, 2, 7, 64, 129, 200, 300]) {
        const H = hessian(n);
        const Ln = H.slice(), Lr = H.slice();
        assert.equal(nat.cholesky(Ln, n, false), -1);
        assert.equal(refLinalg.cholesky(Lr, n, false), -1);
        const eL = relErr(Ln, Lr);
        assert.ok(eL < 2e-5, `cholesky n=${n}: ${eL} (seed ${SEED})`);
        for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) assert.equal(Ln[i * n + j], 0, 'zeros above');
        // L·Lᵀ reproduces H (backward error).
        const R = new Float64Array(n * n);
        for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { let s = 0; for (let p = 0; p <= Math.min(i, j); p++) s += Ln[i * n + p] * Ln[j * n + p]; R[i * n + j] = s; }
        assert.ok(relErr(R, H) < 1e-6, `L·Lᵀ n=${n}: ${relErr(R, H)}`);

        const Un = H.slice(), Ur = H.slice();
        assert.equal(nat.cholesky(Un, n, true), -1);
        assert.equal(refLinalg.cholesky(Ur, n, true), -1);
        assert.ok(relErr(Un, Ur) < 2e-5, `upper cholesky n=${n}`);
        for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) assert.equal(Un[i * n + j], Ln[j * n + i], 'upper = lowerᵀ');

        // cholesky_inverse from the same factor; the upper triangle of the input is ignored (garbage there).
        const In = Lr.slice(), Ir = Lr.slice();
        for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) In[i * n + j] = 1e30;
        nat.choleskyInverse(In, n);
        refLinalg.choleskyInverse(Ir, n);
        const eI = relErr(In, Ir);
        assert.ok(eI < 1e-4, `cholesky_inverse n=${n}: ${eI} (seed ${SEED})`);
        // H·H⁻¹ = I
        let off = 0;
        for (let i = 0; i < Math.min(n, 20); i++) for (let j = 0; j < n; j++) { let s = 0; for (let p = 0; p < n; p++) s += H[i * n + p] * In[p * n + j]; off = Math.max(off, Math.abs(s - (i === j ? 1 : 0))); }
        assert.ok(off < 1e-3, `H·H⁻¹ n=${n}: ${off}`);
      }
    });

    it(`cholesky reports the first non-positive pivot, as the ref [${level}]`, () => {
      assert.equal(addon!.setLevel(level), level);
      for (const [n, k] of [[5, 3], [140, 0], [140, 133], [300, 200]]) {
        const H = hessian(n);
        // Make the leading (k+1)×(k+1) minor singular: row/column k = row/column k-1 (k = 0: a zero pivot).
        if (k === 0) H[0] = -1;
        else for (let j = 0; j < n; j++) { H[k * n + j] = H[(k - 1) * n + j]; H[j * n + k] = H[j * n + k - 1]; }
        if (k > 0) H[k * n + k] = H[(k - 1) * n + (k - 1)] * (1 - 1e-3);
        const a = H.slice(), b = H.slice();
        assert.equal(refLinalg.cholesky(b, n, false), k, `ref n=${n}`);
        assert.equal(nat.cholesky(a, n, false), k, `native n=${n}`);
      }
      const nan = hessian(9); nan[4 * 9 + 4] = NaN;
      assert.equal(nat.cholesky(nan, 9, true), 4);
    });

    it(`block update W[:, i2:] -= Err·U[i1:i2, i2:] within the summation bound [${level}]`, () => {
      assert.equal(addon!.setLevel(level), level);
      for (const [N, K, B, i1] of [[1, 5, 2, 1], [7, 300, 128, 0], [133, 390, 128, 128], [40, 129, 1, 127], [5, 64, 64, 0]]) {
        const W = randn(N * K), err = randn(N * B, 0.1), U = randn(K * K, 0.3);
        const a = W.slice(), b = W.slice();
        nat.blockUpdate(a, N, K, err, B, U, i1);
        refLinalg.blockUpdate(b, N, K, err, B, U, i1);
        const bound = new Float64Array(N * K);
        for (let r = 0; r < N; r++) for (let j = i1 + B; j < K; j++) {
          let s = Math.abs(W[r * K + j]);
          for (let p = 0; p < B; p++) s += Math.abs(err[r * B + p] * U[(i1 + p) * K + j]);
          bound[r * K + j] = (B + 3) * U23 * s;
        }
        assertWithin(a, b, bound, `blockUpdate N=${N} K=${K} B=${B} i1=${i1}`);
        for (let r = 0; r < N; r++) for (let j = 0; j < i1 + B; j++) assert.equal(a[r * K + j], W[r * K + j], 'columns before i2 untouched');
      }
    });

    it(`quantizeBlock (the column loop) bit for bit [${level}]`, () => {
      assert.equal(addon!.setLevel(level), level);
      for (const [N, K, B, i1, maxq] of [[1, 3, 3, 0, 15], [37, 300, 128, 128, 7], [9, 70, 6, 64, 255], [64, 129, 1, 128, 3]]) {
        const W = randn(N * K, 0.1);
        const U = new Float32Array(K * K);
        for (let i = 0; i < K; i++) for (let j = i; j < K; j++) U[i * K + j] = j === i ? 0.5 + Math.abs(randn(1)[0]) : 0.2 * randn(1)[0];
        const scale = Float32Array.from({ length: B * N }, () => 0.01 + 0.05 * Math.abs(randn(1)[0]));
        const zero = Float32Array.from({ length: B * N }, () => Math.floor(rng.next() * (maxq + 1)));
        // A few exact ties (w/s = k + 0.5) so round-half-to-even is exercised on both sides.
        for (let n = 0; n < N; n++) { scale[n] = 0.5; W[n * K + i1] = 0.25 + (n % 3); }
        const run = (la: typeof nat) => {
          const out = { codes: new Uint8Array(N * B), deq: new Float32Array(N * B), err: new Float32Array(N * B), loss: new Float64Array(N) };
          la.quantizeBlock(W, N, K, i1, B, U, scale, zero, maxq, out.codes, out.deq, out.err, out.loss);
          return out;
        };
        const a = run(nat), b = run(refLinalg);
        assert.deepEqual(a, b, `quantizeBlock N=${N} K=${K} B=${B} i1=${i1}`);
        assert.ok(a.codes.every((q) => q <= maxq));
      }
    });

    it(`quadForm Σ dᵀHd [${level}]`, () => {
      assert.equal(addon!.setLevel(level), level);
      for (const [N, K] of [[1, 1], [9, 70], [65, 129]]) {
        const D = randn(N * K), H = hessian(K);
        const a = nat.quadForm(D, H, N, K), b = refLinalg.quadForm(D, H, N, K);
        assert.ok(Math.abs(a - b) <= 1e-5 * Math.abs(b), `quadForm N=${N} K=${K}: ${a} vs ${b}`);
      }
    });
  }

  it('argument checks name the function and the argument', () => {
    assert.throws(() => addon!.gptqCholesky(new Float32Array(3), 2, false), /gptqCholesky: A has 3 elements, expected 4/);
    assert.throws(() => addon!.gptqBlockUpdate(new Float32Array(4), 2, 2, new Float32Array(4), 2, new Float32Array(4), 1), /gptqBlockUpdate: i1 \+ B = 3 exceeds K = 2/);
    assert.throws(() => addon!.gptqXtx(new Float32Array(4), new Float32Array(2), 1, 2, 1, -1), /gptqXtx: alpha must be finite and >= 0/);
  });
});
