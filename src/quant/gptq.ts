// GPTQ (Frantar et al. 2022, arXiv 2210.17323) and its round-to-nearest baseline, as AutoGPTQ computes them
// (../shared/spec/FORMATS.md §4.1-4.3): the quantizer grid per row and group, the running-mean Hessian, and
// fasterquant (dead columns, static groups, act-order, damping, Cholesky of the inverse, blockwise lazy updates).
// Everything is float32 like torch's; the heavy linear algebra goes through src/quant/linalg.ts (native, threaded, or
// its float64 ref twin). The output is GptqCodes (src/quant/gptq-types.ts), which src/quant/gptq-format.ts packs.
import { GPTQ_BITS, type GptqBits, type GptqCodes, type GptqOptions } from './gptq-types.js';
import { getLinalg, roundHalfEven, type Linalg } from './linalg.js';
import { GptqError } from './gptq-format.js';

export { roundHalfEven };

// One error class for GPTQ's algorithm and its files (bad options or input, non-finite weights, shapes that do not
// agree, packing): src/quant/gptq-format.ts defines it.
export { GptqError };

/**
 * The damped Hessian of a layer is not positive definite (Cholesky failed at `column`): its calibration inputs hold
 * NaN/Inf, or they are degenerate enough that the damping does not help. Raise dampPercent, or let
 * dampAutoIncrement retry (GPTQModel's way).
 */
export class GptqCholeskyError extends GptqError {
  override name = 'GptqCholeskyError';
  constructor(message: string, readonly layer: string, readonly dampPercent: number, readonly column: number) { super(message); }
}

/** AutoGPTQ's defaults for the algorithm, except groupSize (128, transformers' GPTQConfig) and descAct (false). */
export const GPTQ_DEFAULTS: GptqOptions = { bits: 4, groupSize: 128, sym: true, descAct: false, staticGroups: false, dampPercent: 0.01, blockSize: 128 };

/** GptqOptions plus how to run them. */
export interface GptqRunOptions extends GptqOptions {
  /** Layer name for error messages. */
  name?: string;
  /** 'native' (default when the addon loads) or 'ref' (the float64 TypeScript twins). */
  linalg?: 'native' | 'ref';
  /**
   * GPTQModel's retry: when Cholesky fails, add this to dampPercent and try again while dampPercent < 1 (GPTQModel's
   * HF entry point uses 0.0015). 0 (default, AutoGPTQ's behaviour): fail with GptqCholeskyError.
   */
  dampAutoIncrement?: number;
}

/** Check and complete options (camelCase or AutoGPTQ's snake_case keys); unknown keys are refused. */
export function checkGptqOptions(opts: Partial<GptqRunOptions> | Record<string, unknown> = {}, where = 'gptq'): GptqRunOptions {
  const snake: Record<string, string> = { group_size: 'groupSize', desc_act: 'descAct', static_groups: 'staticGroups', damp_percent: 'dampPercent', block_size: 'blockSize', damp_auto_increment: 'dampAutoIncrement' };
  const known = new Set([...Object.keys(GPTQ_DEFAULTS), 'name', 'linalg', 'dampAutoIncrement']);
  const o: Record<string, unknown> = {};
  for (const [k0, v] of Object.entries(opts)) {
    const k = snake[k0] ?? k0;
    if (!known.has(k)) throw new GptqError(`${where}: unknown option "${k0}" (known: ${[...known].join(', ')})`);
    if (v !== undefined) o[k] = v;
  }
  const r = { ...GPTQ_DEFAULTS, dampAutoIncrement: 0, ...o } as GptqRunOptions;
  if (!GPTQ_BITS.includes(r.bits)) throw new GptqError(`${where}: bits must be one of ${GPTQ_BITS.join(', ')}, got ${JSON.stringify(r.bits)}`);
  if (!(r.groupSize === -1 || (Number.isInteger(r.groupSize) && r.groupSize >= 1))) throw new GptqError(`${where}: groupSize must be -1 or a positive integer, got ${JSON.stringify(r.groupSize)}`);
  for (const k of ['sym', 'descAct', 'staticGroups'] as const) {
    if (typeof r[k] !== 'boolean') throw new GptqError(`${where}: ${k} must be true or false, got ${JSON.stringify(r[k])}`);
  }
  if (typeof r.dampPercent !== 'number' || !(r.dampPercent >= 0 && r.dampPercent <= 1)) throw new GptqError(`${where}: dampPercent must be a number in [0, 1], got ${JSON.stringify(r.dampPercent)}`);
  if (!(Number.isInteger(r.blockSize) && r.blockSize >= 1)) throw new GptqError(`${where}: blockSize must be a positive integer, got ${JSON.stringify(r.blockSize)}`);
  if (typeof r.dampAutoIncrement !== 'number' || !(r.dampAutoIncrement >= 0 && r.dampAutoIncrement < 1)) throw new GptqError(`${where}: dampAutoIncrement must be a number in [0, 1), got ${JSON.stringify(r.dampAutoIncrement)}`);
  if (r.linalg !== undefined && r.linalg !== 'native' && r.linalg !== 'ref') throw new GptqError(`${where}: linalg must be "native" or "ref", got ${JSON.stringify(r.linalg)}`);
  return r;
}

// ---- §4.1 the quantizer grid


/** Per-row scale and zero point of one slice of columns (Quantizer.find_params, weight=True, mse off). */
export interface RowParams { scale: Float32Array; zero: Float32Array }

/**
 * find_params over columns [c0, c1) of every row of W [N, ld] (float32 arithmetic as torch): the range always holds
 * 0; sym takes ±max|x| but keeps xmin = 0 for a row with no negative value (scale = xmax/maxq with zero (maxq+1)/2:
 * the reference's quirk); an all-zero row gets [-1, 1]; asym zero = round(-xmin/scale), ties to even.
 */
export function findParams(W: Float32Array, N: number, ld: number, c0: number, c1: number, bits: GptqBits, sym: boolean, out?: RowParams): RowParams {
  const maxq = 2 ** bits - 1;
  const p = out ?? { scale: new Float32Array(N), zero: new Float32Array(N) };
  for (let n = 0; n < N; n++) {
    let xmin = 0, xmax = 0;
    const row = n * ld;
    for (let c = c0; c < c1; c++) {
      const v = W[row + c];
      if (v < xmin) xmin = v;
      if (v > xmax) xmax = v;
    }
    if (sym) {
      xmax = Math.max(-xmin, xmax);
      if (xmin < 0) xmin = -xmax;
    }
    if (xmin === 0 && xmax === 0) { xmin = -1; xmax = 1; }
    const scale = Math.fround(Math.fround(xmax - xmin) / maxq);
    p.scale[n] = scale;
    p.zero[n] = sym ? (maxq + 1) / 2 : roundHalfEven(Math.fround(-xmin / scale));
  }
  return p;
}

/** q = clamp(round(x/scale) + zero, 0, maxq): the code of x. */
export function quantCode(x: number, scale: number, zero: number, maxq: number): number {
  const q = roundHalfEven(Math.fround(x / scale)) + zero;
  return q < 0 ? 0 : q > maxq ? maxq : q;
}

/** scale·(q − zero) in float32: the value of a code. */
export function dequantCode(q: number, scale: number, zero: number): number {
  return Math.fround(scale * (q - zero));
}

export function checkWeight(w: Float32Array, shape: readonly [number, number], name: string): void {
  const [N, K] = shape;
  if (!(Number.isInteger(N) && Number.isInteger(K) && N >= 1 && K >= 1)) throw new GptqError(`${name}: shape must be [N ≥ 1, K ≥ 1], got [${shape}]`);
  if (w.length !== N * K) throw new GptqError(`${name}: weight has ${w.length} elements, shape [${N}, ${K}] needs ${N * K}`);
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i])) throw new GptqError(`${name}: weight [${Math.floor(i / K)}, ${i % K}] is ${w[i]}; GPTQ needs finite weights`);
  }
}

export function newCodes(bits: GptqBits, groupSize: number, N: number, K: number): GptqCodes {
  const nGroups = groupSize === -1 ? 1 : Math.ceil(K / groupSize);
  return {
    bits, groupSize, shape: [N, K], intWeight: new Uint8Array(N * K),
    scales: new Float32Array(nGroups * N), zeros: new Uint8Array(nGroups * N), gIdx: new Int32Array(K),
  };
}

function storeGroup(codes: GptqCodes, g: number, p: RowParams): void {
  const N = codes.shape[0];
  codes.scales.set(p.scale, g * N);
  for (let n = 0; n < N; n++) codes.zeros[g * N + n] = p.zero[n];
}

/**
 * Round-to-nearest on the same grid and groups (consecutive columns, the last one shorter when G does not divide
 * K): the baseline GPTQ must beat. w is [N, K] row-major.
 */
export function rtnQuantize(w: Float32Array, shape: readonly [number, number], opts: Pick<GptqOptions, 'bits' | 'groupSize' | 'sym'>, name = 'rtn'): { codes: GptqCodes; dequantized: Float32Array } {
  const o = checkGptqOptions({ bits: opts.bits, groupSize: opts.groupSize, sym: opts.sym }, name);
  checkWeight(w, shape, name);
  const [N, K] = shape, maxq = 2 ** o.bits - 1;
  const G = o.groupSize === -1 ? K : o.groupSize;
  const codes = newCodes(o.bits, o.groupSize, N, K);
  const deq = new Float32Array(N * K);
  const p: RowParams = { scale: new Float32Array(N), zero: new Float32Array(N) };
  for (let g = 0, c0 = 0; c0 < K; g++, c0 += G) {
    const c1 = Math.min(K, c0 + G);
    findParams(w, N, K, c0, c1, o.bits, o.sym, p);
    storeGroup(codes, g, p);
    for (let c = c0; c < c1; c++) codes.gIdx[c] = g;
    for (let n = 0; n < N; n++) {
      const s = p.scale[n], z = p.zero[n];
      for (let c = c0; c < c1; c++) {
        const q = quantCode(w[n * K + c], s, z, maxq);
        codes.intWeight[n * K + c] = q;
        deq[n * K + c] = dequantCode(q, s, z);
      }
    }
  }
  return { codes, dequantized: deq };
}

// ---- §4.2 the Hessian

/**
 * H = 2/n·Σ xxᵀ as AutoGPTQ's add_batch keeps it: a float32 running mean, n counting sequences (GPTQModel counts
 * tokens; the algorithm is invariant to the factor, only rounding differs).
 */
export class HessianAccumulator {
  readonly H: Float32Array;
  /** Sequences added so far. */
  nsamples = 0;
  private readonly la: Linalg;
  constructor(readonly K: number, linalg?: 'native' | 'ref') {
    if (!(Number.isInteger(K) && K >= 1)) throw new GptqError(`HessianAccumulator: K must be a positive integer, got ${K}`);
    this.H = new Float32Array(K * K);
    this.la = getLinalg(linalg);
  }

  /** x [tokens, K] of `nSequences` sequences: H ← H·n/(n+b) + (√(2/(n+b))·X)ᵀ(√(2/(n+b))·X). */
  add(x: Float32Array, tokens: number, nSequences = 1): void {
    if (x.length !== tokens * this.K) throw new GptqError(`HessianAccumulator.add: x has ${x.length} values, ${tokens} tokens × K ${this.K} expected`);
    if (!(Number.isInteger(nSequences) && nSequences >= 1)) throw new GptqError(`HessianAccumulator.add: nSequences must be a positive integer, got ${nSequences}`);
    const n = this.nsamples, b = nSequences;
    this.nsamples = n + b;
    this.la.xtx(this.H, x, tokens, this.K, n / (n + b), 2 / (n + b));
  }
}

// ---- §4.3 fasterquant

/** What fasterquant derives from H alone (shared by every layer that reads the same input). */
export interface PreparedHessian {
  K: number;
  /** 1 where diag(H) = 0: those weight columns are zeroed. */
  dead: Uint8Array;
  /** act-order: perm[p] = the original column quantized p-th; null in natural order. */
  perm: Int32Array | null;
  /** Upper Cholesky factor U of the damped, permuted H⁻¹ (H⁻¹ = UᵀU) [K, K]. */
  U: Float32Array;
  /** The damping used (dampPercent, plus any automatic increments). */
  dampPercent: number;
}

/**
 * What fasterquant takes from H's diagonal alone: dead columns (diagonal 0, set to 1), the act-order permutation
 * (descAct) and the mean diagonal the damping scales (float32, as torch's mean). Shared with src/quant/gptq-cuda.ts.
 */
export function hessianPlan(diagH: Float32Array, descAct: boolean): { dead: Uint8Array; diag: Float32Array; perm: Int32Array | null; mean: number } {
  const K = diagH.length, dead = new Uint8Array(K), diag = Float32Array.from(diagH);
  for (let i = 0; i < K; i++) if (diag[i] === 0) { dead[i] = 1; diag[i] = 1; }
  let perm: Int32Array | null = null;
  if (descAct) {
    // torch.argsort(diag, descending=True); ties keep column order here (torch does not promise an order).
    perm = Int32Array.from({ length: K }, (_, i) => i).sort((a, b) => diag[b] - diag[a] || a - b);
  }
  let mean = 0;
  for (let i = 0; i < K; i++) mean += diag[i];
  return { dead, diag, perm, mean: Math.fround(mean / K) };
}

/** The Cholesky failure of a damped Hessian (both the host and the device factorization throw it). */
export function choleskyFailure(name: string, damp: number, column: number): GptqCholeskyError {
  return new GptqCholeskyError(`${name}: the damped Hessian is not positive definite (Cholesky failed at column ${column} with dampPercent ${damp}); ` +
    'its calibration inputs may hold NaN/Inf or be degenerate: raise dampPercent or set dampAutoIncrement', name, damp, column);
}

/** Dead columns, act-order permutation, damping, L = chol(H), H⁻¹ = cholesky_inverse(L), U = chol(H⁻¹, upper). H is not changed. */
export function prepareHessian(H: Float32Array, K: number, opts: GptqRunOptions): PreparedHessian {
  const name = opts.name ?? 'gptq';
  if (H.length !== K * K) throw new GptqError(`${name}: H has ${H.length} values, K×K = ${K * K} expected`);
  const la = getLinalg(opts.linalg);
  const diagH = new Float32Array(K);
  for (let i = 0; i < K; i++) diagH[i] = H[i * K + i];
  const { dead, diag, perm, mean } = hessianPlan(diagH, opts.descAct);
  let damp = opts.dampPercent;
  for (;;) {
    const U = new Float32Array(K * K);
    for (let i = 0; i < K; i++) {
      const src = perm ? perm[i] : i;
      for (let j = 0; j < K; j++) U[i * K + j] = H[src * K + (perm ? perm[j] : j)];
      U[i * K + i] = diag[src];
    }
    const d = Math.fround(damp * mean);
    for (let i = 0; i < K; i++) U[i * K + i] = Math.fround(U[i * K + i] + d);
    let fail = la.cholesky(U, K, false);
    if (fail < 0) {
      la.choleskyInverse(U, K);
      fail = la.cholesky(U, K, true);
    }
    if (fail < 0) return { K, dead, perm, U, dampPercent: damp };
    const inc = opts.dampAutoIncrement ?? 0;
    if (inc > 0 && damp + inc < 1) { damp += inc; continue; }
    throw choleskyFailure(name, damp, fail);
  }
}

export interface GptqResult {
  codes: GptqCodes;
  /** [N, K] the quantized weight in float32 (scale·(q − zero)), original column order. */
  dequantized: Float32Array;
  /** Σ (w − q)²/d²/2 over the weights (AutoGPTQ's reported error). */
  loss: number;
  /** The damping used. */
  dampPercent: number;
}

/** fasterquant on W [N, K] with a Hessian H [K, K] (§4.3). Neither w nor H is changed. */
export function gptqQuantize(w: Float32Array, shape: readonly [number, number], H: Float32Array, options: Partial<GptqRunOptions> = {}): GptqResult {
  const opts = checkGptqOptions(options, options.name ?? 'gptq');
  checkWeight(w, shape, opts.name ?? 'gptq');
  return gptqQuantizePrepared(w, shape, prepareHessian(H, shape[1], opts), opts);
}

/** fasterquant's weight part, given prepareHessian's output (so layers reading one input share one factorization). */
export function gptqQuantizePrepared(w: Float32Array, shape: readonly [number, number], prep: PreparedHessian, opts: GptqRunOptions): GptqResult {
  const name = opts.name ?? 'gptq';
  const [N, K] = shape;
  checkWeight(w, shape, name);
  if (prep.K !== K) throw new GptqError(`${name}: the Hessian is for K = ${prep.K} inputs, the weight has ${K}`);
  const la = getLinalg(opts.linalg);
  const { bits, sym } = opts, maxq = 2 ** bits - 1;
  const grouped = opts.groupSize !== -1, G = grouped ? opts.groupSize : K;
  const staticGroups = grouped && opts.staticGroups;
  const { perm, U } = prep;
  const codes = newCodes(bits, opts.groupSize, N, K);

  // 1. Without groups: one grid per row from the whole weight, before dead columns are zeroed (AutoGPTQ's order).
  const W = Float32Array.from(w);
  const whole = grouped ? null : findParams(W, N, K, 0, K, bits, sym);
  if (whole) storeGroup(codes, 0, whole);
  // 2. Dead columns.
  for (let c = 0; c < K; c++) if (prep.dead[c]) for (let n = 0; n < N; n++) W[n * K + c] = 0;
  // 3. Static groups: one grid per group of original columns, fixed before any update.
  const statics: RowParams[] = [];
  if (staticGroups) {
    for (let g = 0, c0 = 0; c0 < K; g++, c0 += G) {
      statics.push(findParams(W, N, K, c0, Math.min(K, c0 + G), bits, sym));
      storeGroup(codes, g, statics[g]);
    }
  }
  // 4. act-order: W's columns in perm order.
  const Wp = perm ? new Float32Array(N * K) : W;
  if (perm) for (let n = 0; n < N; n++) for (let p = 0; p < K; p++) Wp[n * K + p] = W[n * K + perm[p]];

  // 7. Blocks of columns with lazy updates.
  const deq = new Float32Array(N * K);
  const B0 = Math.min(opts.blockSize, K);
  const err = new Float32Array(N * B0), qb = new Uint8Array(N * B0), vb = new Float32Array(N * B0);
  const colScale = new Float32Array(B0 * N), colZero = new Float32Array(B0 * N), rowLoss = new Float64Array(N);
  let loss = 0;
  let current: RowParams | null = whole;
  for (let i1 = 0; i1 < K; i1 += B0) {
    const i2 = Math.min(K, i1 + B0), B = i2 - i1;
    // The grid of each column of the block, per row ([B, N]): a group's grid is taken when its first column is reached.
    for (let p = i1; p < i2; p++) {
      if (grouped) {
        if (staticGroups) current = statics[Math.floor((perm ? perm[p] : p) / G)];
        else if (p % G === 0) {
          // From the global W, which has every earlier block's lazy update but not this block's own (the reference's
          // quirk that matters when G < blockSize).
          current = findParams(Wp, N, K, p, Math.min(K, p + G), bits, sym);
          storeGroup(codes, p / G, current);
        }
      }
      colScale.set(current!.scale, (p - i1) * N);
      colZero.set(current!.zero, (p - i1) * N);
    }
    const e = err.subarray(0, N * B);
    la.quantizeBlock(Wp, N, K, i1, B, U, colScale.subarray(0, B * N), colZero.subarray(0, B * N), maxq, qb.subarray(0, N * B), vb.subarray(0, N * B), e, rowLoss);
    for (let n = 0; n < N; n++) {
      loss += rowLoss[n];
      for (let i = 0; i < B; i++) {
        const col = perm ? perm[i1 + i] : i1 + i;
        codes.intWeight[n * K + col] = qb[n * B + i];
        deq[n * K + col] = vb[n * B + i];
      }
    }
    if (i2 < K) la.blockUpdate(Wp, N, K, e, B, U, i1);
  }

  // 9. g_idx: the group of each original column.
  for (let c = 0; c < K; c++) codes.gIdx[c] = grouped ? Math.floor(c / G) : 0;
  if (perm && !staticGroups && grouped) for (let p = 0; p < K; p++) codes.gIdx[perm[p]] = Math.floor(p / G);
  return { codes, dequantized: deq, loss, dampPercent: prep.dampPercent };
}

/**
 * Relative output error ‖X·Wᵀ − X·Ŵᵀ‖² / ‖X·Wᵀ‖² on the inputs whose Hessian is H (∝ XᵀX; the factor cancels).
 * 0 when ‖X·Wᵀ‖ is 0.
 */
export function outputError(w: Float32Array, wq: Float32Array, H: Float32Array, N: number, K: number, linalg?: 'native' | 'ref'): number {
  const la = getLinalg(linalg);
  const d = new Float32Array(N * K);
  for (let i = 0; i < d.length; i++) d[i] = w[i] - wq[i];
  const den = la.quadForm(w, H, N, K);
  return den > 0 ? la.quadForm(d, H, N, K) / den : 0;
}
