// The dense linear algebra GPTQ needs (../shared/spec/FORMATS.md §4.2-4.3), as one interface with two twins:
// `refLinalg` (plain TypeScript, float64 arithmetic rounded to float32 once per output: the oracle) and
// `nativeLinalg()` (native/cpu/linalg.cc: blocked, threaded, float32 storage and float32 micro-kernel sums, as torch's
// float32 Hessian; its panel steps accumulate in double). Matrices are row-major Float32Arrays.
import { requireAddon, loadAddon, WTYPE } from '../native/addon.js';

/** torch.round: to nearest, ties to even. */
export function roundHalfEven(v: number): number {
  const f = Math.floor(v), d = v - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

export interface Linalg {
  readonly name: 'ref' | 'native';
  /** H[K,K] = beta·H + (√alpha·x)ᵀ(√alpha·x) for x [T,K] (AutoGPTQ add_batch); H's lower triangle is read, both are written. */
  xtx(H: Float32Array, x: Float32Array, T: number, K: number, beta: number, alpha: number): void;
  /**
   * Cholesky factor of a symmetric positive definite A [n,n], in place: lower L (A = L·Lᵀ, zeros above), or with
   * `upper` U = Lᵀ (A = Uᵀ·U, zeros below). Returns -1, or the first column whose pivot is not positive (A then holds
   * partial results).
   */
  cholesky(A: Float32Array, n: number, upper: boolean): number;
  /** A holds a lower Cholesky factor L (upper triangle ignored) → (L·Lᵀ)⁻¹ in place, both triangles (torch.cholesky_inverse). */
  choleskyInverse(A: Float32Array, n: number): void;
  /**
   * fasterquant's column loop over W[:, i1:i1+B] (W [N,K] is read, not written: the in-block updates stay in a row
   * buffer). Column i of row n is quantized on the grid scale/zero[i·N + n]: q = clamp(round(w/s) + z, 0, maxq),
   * v = s·(q − z), err = (w − v)/U[c,c], then the row's later columns of the block take −err·U[c, ·]. Writes codes, v
   * and err as [N,B] and rowLoss[n] = Σ (w − v)²/U[c,c]²/2. Both twins compute in double rounded to float32 at the
   * same steps, so they agree bit for bit.
   */
  quantizeBlock(W: Float32Array, N: number, K: number, i1: number, B: number, U: Float32Array, scale: Float32Array, zero: Float32Array,
    maxq: number, codes: Uint8Array, deq: Float32Array, err: Float32Array, rowLoss: Float64Array): void;
  /** W[N,K]: W[:, i1+B:] -= err[N,B]·U[i1:i1+B, i1+B:] with U [K,K] (fasterquant's lazy block update). */
  blockUpdate(W: Float32Array, N: number, K: number, err: Float32Array, B: number, U: Float32Array, i1: number): void;
  /** Σ_n d_nᵀ·H·d_n for D [N,K] and a symmetric H [K,K] (= ‖X·Dᵀ‖² when H = XᵀX), in float64. */
  quadForm(D: Float32Array, H: Float32Array, N: number, K: number): number;
}

export const refLinalg: Linalg = {
  name: 'ref',

  xtx(H, x, T, K, beta, alpha) {
    const s = Math.fround(Math.sqrt(alpha));
    const xs = new Float32Array(T * K);
    for (let i = 0; i < T * K; i++) xs[i] = x[i] * s;          // √alpha·x in float32, as AutoGPTQ scales its inputs
    const acc = new Float64Array(K);
    for (let i = 0; i < K; i++) {
      acc.fill(0);
      for (let t = 0; t < T; t++) {
        const xi = xs[t * K + i];
        if (xi === 0) continue;
        const row = t * K;
        for (let j = 0; j <= i; j++) acc[j] += xi * xs[row + j];
      }
      const b = Math.fround(beta);
      for (let j = 0; j <= i; j++) H[i * K + j] = H[j * K + i] = Math.fround(H[i * K + j] * b) + acc[j];
    }
  },

  cholesky(A, n, upper) {
    const L = Float64Array.from(A);
    for (let j = 0; j < n; j++) {
      let d = L[j * n + j];
      for (let p = 0; p < j; p++) d -= L[j * n + p] * L[j * n + p];
      if (!(d > 0)) { for (let i = 0; i < n * n; i++) A[i] = L[i]; return j; }
      const ljj = Math.sqrt(d);
      L[j * n + j] = ljj;
      for (let i = j + 1; i < n; i++) {
        let s = L[i * n + j];
        for (let p = 0; p < j; p++) s -= L[i * n + p] * L[j * n + p];
        L[i * n + j] = s / ljj;
      }
    }
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) A[i * n + j] = upper ? (j >= i ? L[j * n + i] : 0) : (j <= i ? L[i * n + j] : 0);
    }
    return -1;
  },

  choleskyInverse(A, n) {
    // X = L⁻¹ by forward substitution per column, then A = Xᵀ·X.
    const X = new Float64Array(n * n);
    for (let c = 0; c < n; c++) {
      X[c * n + c] = 1 / A[c * n + c];
      for (let i = c + 1; i < n; i++) {
        let s = 0;
        for (let p = c; p < i; p++) s += A[i * n + p] * X[p * n + c];
        X[i * n + c] = -s / A[i * n + i];
      }
    }
    for (let i = 0; i < n; i++) {
      for (let j = 0; j <= i; j++) {
        let s = 0;
        for (let p = i; p < n; p++) s += X[p * n + i] * X[p * n + j];
        A[i * n + j] = A[j * n + i] = s;
      }
    }
  },

  quantizeBlock(W, N, K, i1, B, U, scale, zero, maxq, codes, deq, err, rowLoss) {
    const row = new Float32Array(B);
    for (let n = 0; n < N; n++) {
      row.set(W.subarray(n * K + i1, n * K + i1 + B));
      let loss = 0;
      for (let i = 0; i < B; i++) {
        const s = scale[i * N + n], z = zero[i * N + n], x = row[i];
        let q = roundHalfEven(Math.fround(x / s)) + z;
        q = q < 0 ? 0 : q > maxq ? maxq : q;
        const v = Math.fround(s * (q - z));
        const u = (i1 + i) * K + i1;
        const d = U[u + i], dx = x - v;
        const e = Math.fround(dx / d);
        loss += (dx * dx) / (d * d) / 2;
        codes[n * B + i] = q;
        deq[n * B + i] = v;
        err[n * B + i] = e;
        for (let j = i + 1; j < B; j++) row[j] -= e * U[u + j];
      }
      rowLoss[n] = loss;
    }
  },

  blockUpdate(W, N, K, err, B, U, i1) {
    const i2 = i1 + B;
    const acc = new Float64Array(K - i2);
    for (let r = 0; r < N; r++) {
      acc.fill(0);
      for (let b = 0; b < B; b++) {
        const e = err[r * B + b];
        if (e === 0) continue;
        const u = (i1 + b) * K + i2;
        for (let j = 0; j < K - i2; j++) acc[j] += e * U[u + j];
      }
      for (let j = 0; j < K - i2; j++) W[r * K + i2 + j] -= acc[j];
    }
  },

  quadForm(D, H, N, K) {
    let total = 0;
    const hd = new Float64Array(K);
    for (let r = 0; r < N; r++) {
      const d = D.subarray(r * K, (r + 1) * K);
      hd.fill(0);
      for (let k = 0; k < K; k++) {
        if (d[k] === 0) continue;
        const row = k * K;
        for (let j = 0; j < K; j++) hd[j] += d[k] * H[row + j];
      }
      for (let j = 0; j < K; j++) total += hd[j] * d[j];
    }
    return total;
  },
};

/** The native twins (requires the addon; throws NativeUnavailableError naming GPTQ otherwise). */
export function nativeLinalg(): Linalg {
  const a = requireAddon('GPTQ linear algebra');
  return {
    name: 'native',
    xtx: (H, x, T, K, beta, alpha) => a.gptqXtx(H, x, T, K, beta, alpha),
    cholesky: (A, n, upper) => a.gptqCholesky(A, n, upper),
    choleskyInverse: (A, n) => a.gptqCholeskyInverse(A, n),
    quantizeBlock: (W, N, K, i1, B, U, scale, zero, maxq, codes, deq, err, rowLoss) =>
      a.gptqQuantizeBlock(W, N, K, i1, B, U, scale, zero, maxq, codes, deq, err, rowLoss),
    blockUpdate: (W, N, K, err, B, U, i1) => a.gptqBlockUpdate(W, N, K, err, B, U, i1),
    quadForm(D, H, N, K) {
      // D·H through the float32 GEMM (H is symmetric, so D·Hᵀ = D·H), then the row dots in float64. Done in slabs of
      // rows so the temporary stays at most ~16 MB.
      const rows = Math.max(1, Math.min(N, Math.floor((4 << 20) / Math.max(1, K))));
      const y = new Float32Array(rows * K);
      let total = 0;
      for (let r0 = 0; r0 < N; r0 += rows) {
        const m = Math.min(rows, N - r0);
        const d = D.subarray(r0 * K, (r0 + m) * K), ym = y.subarray(0, m * K);
        a.matmul(ym, d, H, WTYPE.F32, m, K, K, null);
        for (let i = 0; i < m * K; i++) total += ym[i] * d[i];
      }
      return total;
    },
  };
}

/** 'native' when the addon loads, else 'ref'; or the one asked for. */
export function getLinalg(which?: 'ref' | 'native'): Linalg {
  if (which === 'ref') return refLinalg;
  if (which === 'native' || loadAddon()) return nativeLinalg();
  return refLinalg;
}
