// AWQ (Lin et al. 2023, arXiv 2306.00978) as AutoAWQ computes it (../shared/spec/FORMATS.md §5.2-5.3): the
// zero-point group quantizer, the activation / weight statistics, the grid search for one group of linears that share
// an input, the folding of the chosen scales into the previous op, and the weight-clipping search. The layer-by-layer
// driver is src/quant/awq-driver.ts; its output, per linear, is GptqCodes (src/quant/gptq-types.ts).
//
// Arithmetic: float32 throughout (AutoAWQ runs in float16), except that every group scale is rounded to float16 —
// the value AutoAWQ's fp16 tensors hold and the checkpoint stores — before the codes are computed, so a saved file
// dequantizes to exactly the weights measured here. The hot loops (pseudo-quantizing a whole W·s, the clip search)
// have native twins in native/cpu/awq.cc that agree with the TypeScript ones bit for bit.
import { loadAddon, requireAddon } from '../native/addon.js';
import { GPTQ_BITS, type GptqBits, type GptqCodes } from './gptq-types.js';
import { roundHalfEven } from './linalg.js';
import { AwqError } from './awq-format.js';
import { Tensor } from '../tensor/tensor.js';

/** Bad AWQ options or input (shapes, a group size that does not divide a layer, non-finite weights, a failed search). */
// One error class for AWQ, its algorithm and its files alike (defined with the format, re-exported here).
export { AwqError };

/** AutoAWQ's quant_config knobs (w_bit, q_group_size, zero_point) and quantizer switches, camelCase. */
export interface AwqOptions {
  bits: GptqBits;
  /** -1 (one group per row) or the group size G, which must divide every quantized layer's input size. */
  groupSize: number;
  /** true (AutoAWQ's default): asymmetric min/max grid with a zero point; false: symmetric [−2^(b−1), 2^(b−1) − 1]. */
  zeroPoint: boolean;
  /** AutoAWQ's duo_scaling (default true): s = x̄^α / (w̄^(1−α) + 1e-4); false: llm-awq's s = x̄^α. */
  duoScaling: boolean;
  /** AutoAWQ's apply_clip (default true): the weight-clipping search after scaling. */
  applyClip: boolean;
}

export const AWQ_DEFAULTS: AwqOptions = { bits: 4, groupSize: 128, zeroPoint: true, duoScaling: true, applyClip: true };

/** AwqOptions plus which kernels run them. */
export interface AwqRunOptions extends AwqOptions {
  /** 'native' (default when the addon loads) or 'ref' (the TypeScript twins). */
  kernels?: 'native' | 'ref';
  /**
   * What the scale search compares: 'module' (default, AutoAWQ) the output of module2inspect (the attention block for
   * q/k/v, the MLP for gate/up); 'linears' the scaled linears' own outputs, concatenated (the issue's simplified AWQ).
   */
  searchLoss?: 'module' | 'linears';
}

/** Grid points of the scale search (α = k/20, k = 0…19) and of the clip search (shrink 1 − i/20, i = 0…9). */
export const AWQ_GRID = 20;
export const AWQ_CLIP_STEPS = 10;
/** Tokens the clip search keeps: every (n // 512)-th one. */
export const AWQ_CLIP_TOKENS = 512;

/** Check and complete options (camelCase, or AutoAWQ's w_bit / q_group_size / zero_point … keys); unknown keys are refused. */
export function checkAwqOptions(opts: Partial<AwqRunOptions> | Record<string, unknown> = {}, where = 'awq'): AwqRunOptions {
  const snake: Record<string, string> = {
    w_bit: 'bits', q_group_size: 'groupSize', group_size: 'groupSize', zero_point: 'zeroPoint', duo_scaling: 'duoScaling', apply_clip: 'applyClip',
  };
  const known = new Set([...Object.keys(AWQ_DEFAULTS), 'kernels', 'searchLoss']);
  const o: Record<string, unknown> = {};
  for (const [k0, v] of Object.entries(opts)) {
    const k = snake[k0] ?? k0;
    if (!known.has(k)) throw new AwqError(`${where}: unknown option "${k0}" (known: ${[...known].join(', ')})`);
    if (v !== undefined) o[k] = v;
  }
  const r = { ...AWQ_DEFAULTS, ...o } as AwqRunOptions;
  if (!GPTQ_BITS.includes(r.bits)) throw new AwqError(`${where}: bits must be one of ${GPTQ_BITS.join(', ')}, got ${JSON.stringify(r.bits)}`);
  if (!(r.groupSize === -1 || (Number.isInteger(r.groupSize) && r.groupSize >= 1))) throw new AwqError(`${where}: groupSize must be -1 or a positive integer, got ${JSON.stringify(r.groupSize)}`);
  for (const k of ['zeroPoint', 'duoScaling', 'applyClip'] as const) {
    if (typeof r[k] !== 'boolean') throw new AwqError(`${where}: ${k} must be true or false, got ${JSON.stringify(r[k])}`);
  }
  if (r.searchLoss !== undefined && r.searchLoss !== 'module' && r.searchLoss !== 'linears') throw new AwqError(`${where}: searchLoss must be "module" or "linears", got ${JSON.stringify(r.searchLoss)}`);
  if (r.kernels !== undefined && r.kernels !== 'native' && r.kernels !== 'ref') throw new AwqError(`${where}: kernels must be "native" or "ref", got ${JSON.stringify(r.kernels)}`);
  return r;
}

/** The group size of a layer with K inputs (-1 → K); an AwqError naming the layer unless it divides K (AutoAWQ asserts so). */
export function groupOf(groupSize: number, K: number, name: string): number {
  const G = groupSize === -1 ? K : groupSize;
  if (K % G !== 0) throw new AwqError(`${name}: group size ${G} does not divide its ${K} inputs (AWQ's groups, and its checkpoint layout, need K % G = 0)`);
  return G;
}

// ---- §5.3 the quantizer

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float16 value nearest to x (ties to even), saturated to ±65504 so a scale never becomes infinite. */
export function f16Round(x: number): number {
  const a = Math.abs(x);
  if (!(a < 65504)) return a >= 65504 ? Math.sign(x) * 65504 : x;
  if (a < 6.103515625e-05) return (roundHalfEven(x * 16777216) / 16777216) || x * 0;   // subnormal: steps of 2^-24 (±0 keeps its sign)
  f32[0] = a;
  const q = 2 ** (((u32[0] >>> 23) & 0xff) - 127 - 10);                        // float16 keeps 10 mantissa bits
  return roundHalfEven(x / q) * q;
}

/**
 * One group of G weights w[wo …] (times s[so …] when s is given) on AutoAWQ's grid: writes Q(w·s)/s to out[oo …] and
 * the codes (if asked) to codes[oo …]; returns the group's float16-rounded scale and its zero point. Zero point:
 * scale = clamp(max − min, 1e-5)/(2^b − 1), zero = clamp(−round(min/scale), 0, 2^b − 1), q = clamp(round(w/scale) +
 * zero, 0, 2^b − 1), ŵ = (q − zero)·scale; symmetric: scale = clamp(max|w|, 1e-5)/(2^(b−1) − 1), q = clamp(round(w/scale),
 * −2^(b−1), 2^(b−1) − 1), ŵ = q·scale, code q + 2^(b−1). Rounding is half to even (torch.round).
 */
function quantGroupRef(w: Float32Array, wo: number, s: Float32Array | null, so: number, G: number, bits: number, zeroPoint: boolean,
  out: Float32Array, oo: number, codes: Uint8Array | null, ws: Float32Array): { scale: number; zero: number } {
  for (let k = 0; k < G; k++) ws[k] = s ? Math.fround(w[wo + k] * s[so + k]) : w[wo + k];
  let scale: number, zero: number, qmin: number, qmax: number;
  if (zeroPoint) {
    let mx = ws[0], mn = ws[0];
    for (let k = 1; k < G; k++) { if (ws[k] > mx) mx = ws[k]; if (ws[k] < mn) mn = ws[k]; }
    const maxq = 2 ** bits - 1;
    let range = Math.fround(mx - mn);
    if (range < Math.fround(1e-5)) range = Math.fround(1e-5);
    scale = f16Round(Math.fround(range / maxq));
    zero = -roundHalfEven(Math.fround(mn / scale));
    zero = zero < 0 ? 0 : zero > maxq ? maxq : zero;
    qmin = 0; qmax = maxq;
  } else {
    let mx = 0;
    for (let k = 0; k < G; k++) mx = Math.max(mx, Math.abs(ws[k]));
    if (mx < Math.fround(1e-5)) mx = Math.fround(1e-5);
    const maxInt = 2 ** (bits - 1) - 1;
    scale = f16Round(Math.fround(mx / maxInt));
    zero = 2 ** (bits - 1);
    qmin = -zero; qmax = maxInt;
  }
  for (let k = 0; k < G; k++) {
    let q = roundHalfEven(Math.fround(ws[k] / scale)) + 0;   // + 0: never −0 (the native twin's nearbyint gives −0)
    let v: number;
    if (zeroPoint) {
      q += zero;
      q = q < qmin ? qmin : q > qmax ? qmax : q;
      v = Math.fround((q - zero) * scale);
      if (codes) codes[oo + k] = q;
    } else {
      q = q < qmin ? qmin : q > qmax ? qmax : q;
      v = Math.fround(q * scale);
      if (codes) codes[oo + k] = q + zero;
    }
    out[oo + k] = s ? Math.fround(v / s[so + k]) : v;
  }
  return { scale, zero: zero + 0 };
}

/** The hot loops, as one interface with two twins (the same operations in the same order: they agree bit for bit). */
export interface AwqKernels {
  readonly name: 'ref' | 'native';
  /** out[N,K] = Q(W·diag(s))/s (s null: Q(W)); codes [N,K], scales/zeros [K/G, N] when given. G divides K. */
  pseudoQuantize(W: Float32Array, N: number, K: number, s: Float32Array | null, bits: number, G: number, zeroPoint: boolean,
    out: Float32Array, codes: Uint8Array | null, scales: Float32Array | null, zeros: Uint8Array | null): void;
  /** gram [K/G, G, G] = per group Σ_t x[t, group]ᵀ·x[t, group] in float64, x [T,K], t ascending. */
  groupGram(x: Float32Array, T: number, K: number, G: number, gram: Float64Array): void;
  /**
   * best [N, K/G]: per (row, group) the clip max|w|·(1 − i/nGrid), i < nShrink, whose quantization error
   * dᵀ·gram_g·d / T (d = Q(clamp(w, ±max)) − w) is strictly smallest (initial bound 1e9, as AutoAWQ).
   */
  clipSearch(W: Float32Array, N: number, K: number, G: number, gram: Float64Array, T: number, bits: number, zeroPoint: boolean,
    nShrink: number, nGrid: number, best: Float32Array): void;
}

export const refAwqKernels: AwqKernels = {
  name: 'ref',

  pseudoQuantize(W, N, K, s, bits, G, zeroPoint, out, codes, scales, zeros) {
    const nG = K / G, ws = new Float32Array(G);
    for (let n = 0; n < N; n++) {
      for (let g = 0; g < nG; g++) {
        const o = n * K + g * G;
        const p = quantGroupRef(W, o, s, g * G, G, bits, zeroPoint, out, o, codes, ws);
        if (scales) scales[g * N + n] = p.scale;
        if (zeros) zeros[g * N + n] = p.zero;
      }
    }
  },

  groupGram(x, T, K, G, gram) {
    for (let r = 0; r < K; r++) {
      const g = Math.floor(r / G), i = r % G, base = (g * G + i) * G;
      const acc = gram.subarray(base, base + G);
      acc.fill(0);
      for (let t = 0; t < T; t++) {
        const xr = t * K + g * G, xi = x[xr + i];
        if (xi === 0) continue;
        for (let j = 0; j < G; j++) acc[j] += xi * x[xr + j];
      }
    }
  },

  clipSearch(W, N, K, G, gram, T, bits, zeroPoint, nShrink, nGrid, best) {
    const nG = K / G;
    const cur = new Float32Array(G), q = new Float32Array(G), ws = new Float32Array(G);
    const d = new Float64Array(G), hd = new Float64Array(G);
    for (let n = 0; n < N; n++) {
      for (let g = 0; g < nG; g++) {
        const wo = n * K + g * G, ho = g * G * G;
        let org = 0;
        for (let k = 0; k < G; k++) org = Math.max(org, Math.abs(W[wo + k]));
        let bestMax = org, minErr = 1e9;
        for (let i = 0; i < nShrink; i++) {
          const mv = Math.fround(org * (1 - i / nGrid));
          for (let k = 0; k < G; k++) { const w = W[wo + k]; cur[k] = w < -mv ? -mv : w > mv ? mv : w; }
          quantGroupRef(cur, 0, null, 0, G, bits, zeroPoint, q, 0, null, ws);
          for (let k = 0; k < G; k++) d[k] = q[k] - W[wo + k];
          hd.fill(0);
          for (let a = 0; a < G; a++) {
            const da = d[a];
            if (da === 0) continue;
            const h = ho + a * G;
            for (let b = 0; b < G; b++) hd[b] += da * gram[h + b];
          }
          let e = 0;
          for (let b = 0; b < G; b++) e += hd[b] * d[b];
          e /= T;
          if (e < minErr) { minErr = e; bestMax = mv; }
        }
        best[n * nG + g] = bestMax;
      }
    }
  },
};

/** The native twins (native/cpu/awq.cc; requires the addon). */
export function nativeAwqKernels(): AwqKernels {
  const a = requireAddon('AWQ kernels');
  return {
    name: 'native',
    pseudoQuantize: (W, N, K, s, bits, G, zp, out, codes, scales, zeros) => a.awqPseudoQuantize(W, N, K, s, bits, G, zp, out, codes, scales, zeros),
    groupGram: (x, T, K, G, gram) => a.awqGroupGram(x, T, K, G, gram),
    clipSearch: (W, N, K, G, gram, T, bits, zp, nShrink, nGrid, best) => a.awqClipSearch(W, N, K, G, gram, T, bits, zp, nShrink, nGrid, best),
  };
}

/** 'native' when the addon loads, else 'ref'; or the one asked for. */
export function getAwqKernels(which?: 'ref' | 'native'): AwqKernels {
  if (which === 'ref') return refAwqKernels;
  if (which === 'native' || loadAddon()) return nativeAwqKernels();
  return refAwqKernels;
}

function checkWeight(w: Float32Array, N: number, K: number, name: string): void {
  if (!(Number.isInteger(N) && Number.isInteger(K) && N >= 1 && K >= 1)) throw new AwqError(`${name}: shape must be [N ≥ 1, K ≥ 1], got [${N}, ${K}]`);
  if (w.length !== N * K) throw new AwqError(`${name}: weight has ${w.length} elements, shape [${N}, ${K}] needs ${N * K}`);
  for (let i = 0; i < w.length; i++) {
    if (!Number.isFinite(w[i])) throw new AwqError(`${name}: weight [${Math.floor(i / K)}, ${i % K}] is ${w[i]}; AWQ needs finite weights`);
  }
}

/** Q(W·diag(s))/s for W [N,K] (s null: Q(W)): what a scaled linear computes with during the search. */
export function awqPseudoQuantize(w: Float32Array, shape: readonly [number, number], s: Float32Array | null,
  opts: Pick<AwqRunOptions, 'bits' | 'groupSize' | 'zeroPoint' | 'kernels'>, name = 'awq'): Float32Array {
  const [N, K] = shape;
  checkWeight(w, N, K, name);
  if (s && s.length !== K) throw new AwqError(`${name}: ${s.length} scales for ${K} inputs`);
  const out = new Float32Array(N * K);
  getAwqKernels(opts.kernels).pseudoQuantize(w, N, K, s, opts.bits, groupOf(opts.groupSize, K, name), opts.zeroPoint, out, null, null, null);
  return out;
}

/**
 * The final quantization of a (scaled, clipped) weight W [N,K] to codes on AutoAWQ's grid, and the float weight they
 * dequantize to. zeros are the true zero points (symmetric: 2^(b−1)); scales are float16 values.
 */
export function awqQuantize(w: Float32Array, shape: readonly [number, number], opts: Pick<AwqRunOptions, 'bits' | 'groupSize' | 'zeroPoint' | 'kernels'>,
  name = 'awq'): { codes: GptqCodes; dequantized: Float32Array } {
  const [N, K] = shape;
  checkWeight(w, N, K, name);
  const G = groupOf(opts.groupSize, K, name), nG = K / G;
  const codes: GptqCodes = {
    bits: opts.bits, groupSize: opts.groupSize, shape: [N, K], intWeight: new Uint8Array(N * K),
    scales: new Float32Array(nG * N), zeros: new Uint8Array(nG * N), gIdx: new Int32Array(K),
  };
  for (let k = 0; k < K; k++) codes.gIdx[k] = Math.floor(k / G);
  const deq = new Float32Array(N * K);
  getAwqKernels(opts.kernels).pseudoQuantize(w, N, K, null, opts.bits, G, opts.zeroPoint, deq, codes.intWeight, codes.scales, codes.zeros);
  return { codes, dequantized: deq };
}

// ---- §5.2 step 3: statistics and the scale search

/** x̄[c] = mean over all tokens of |x[:, c]| (float64 sums, rounded to float32): inputs as [tokens_i, K] arrays. */
export function activationMean(inputs: readonly Float32Array[], K: number): Float32Array {
  const acc = new Float64Array(K);
  let n = 0;
  for (const x of inputs) {
    if (x.length % K) throw new AwqError(`activationMean: an input of ${x.length} values is not rows of ${K}`);
    for (let i = 0; i < x.length; i += K) for (let c = 0; c < K; c++) acc[c] += Math.abs(x[i + c]);
    n += x.length / K;
  }
  if (!n) throw new AwqError('activationMean: no tokens');
  return Float32Array.from(acc, (v) => v / n);
}

/**
 * w̄[c] = mean over the output rows of all the scaled linears (concatenated) of |w| / (max |w| of its group + 1e-6),
 * groups of G along the input (AutoAWQ's duo-scaling statistic).
 */
export function weightMean(weights: readonly Float32Array[], K: number, G: number): Float32Array {
  const acc = new Float64Array(K);
  let rows = 0;
  for (const w of weights) {
    if (w.length % K) throw new AwqError(`weightMean: a weight of ${w.length} values is not rows of ${K}`);
    for (let r = 0; r < w.length; r += K) {
      for (let g = 0; g < K; g += G) {
        let mx = 0;
        for (let k = g; k < g + G; k++) mx = Math.max(mx, Math.abs(w[r + k]));
        const den = Math.fround(mx + 1e-6);
        for (let k = g; k < g + G; k++) acc[k] += Math.fround(Math.abs(w[r + k]) / den);
      }
    }
    rows += w.length / K;
  }
  return Float32Array.from(acc, (v) => v / rows);
}

/**
 * The candidate scales for ratio α: duo s = clamp(x̄^α / (w̄^(1−α) + 1e-4), 1e-4), else clamp(x̄^α, 1e-4); then
 * s / sqrt(max(s)·min(s)), with inf and NaN set to 1 (AutoAWQ _compute_best_scale), float32 at each step.
 */
export function awqScales(xMean: Float32Array, wMean: Float32Array | null, alpha: number): Float32Array {
  const K = xMean.length, s = new Float32Array(K);
  for (let c = 0; c < K; c++) {
    let v = Math.fround(xMean[c] ** alpha);
    if (wMean) v = Math.fround(v / Math.fround(Math.fround(wMean[c] ** (1 - alpha)) + 1e-4));
    s[c] = v < 1e-4 ? Math.fround(1e-4) : v;
  }
  let mx = -Infinity, mn = Infinity;
  for (const v of s) { if (v > mx) mx = v; if (v < mn) mn = v; }
  const norm = Math.fround(Math.sqrt(Math.fround(mx * mn)));
  for (let c = 0; c < K; c++) {
    const v = Math.fround(s[c] / norm);
    s[c] = Number.isFinite(v) ? v : 1;
  }
  return s;
}

export interface ScaleSearchResult {
  /** The chosen α (k/20). */
  alpha: number;
  /** The chosen scales [K]. */
  scales: Float32Array;
  /** Its loss, and the loss at α = 0 (for duo scaling, already weight-aware), and every grid point's. */
  loss: number;
  lossAtAlpha0: number;
  losses: number[];
}

/**
 * The grid search of one group (AutoAWQ _compute_best_scale): for α = k/20, every scaled linear's weight becomes
 * Q(W·s)/s and `loss` measures module2inspect's output against the float one; the strictly smallest loss wins.
 * `weights` are the scaled linears' [N_i, K] weights (not changed); `loss` receives their candidates in that order.
 */
export function searchScales(weights: readonly { w: Float32Array; N: number; name: string }[], K: number, xMean: Float32Array,
  opts: Pick<AwqRunOptions, 'bits' | 'groupSize' | 'zeroPoint' | 'duoScaling' | 'kernels'>, loss: (candidates: Float32Array[]) => number,
  nGrid = AWQ_GRID): ScaleSearchResult {
  if (!weights.length) throw new AwqError('searchScales: no layers to scale');
  for (const l of weights) checkWeight(l.w, l.N, K, l.name);
  const math = hostAwqMath(opts.kernels);
  return searchScalesWith(math, weights.map((l) => ({ w: new Tensor('F32', [l.N, K], l.w), N: l.N, name: l.name })), K, xMean, opts,
    (cands) => loss(cands.map((c) => c.f32)), nGrid);
}

/**
 * searchScales over an AwqMath (weights on the host or a device, checked by the caller): the same grid, the same
 * candidates, the strictly smallest loss wins. Candidates are released after their loss.
 */
export function searchScalesWith(math: AwqMath, weights: readonly { w: Tensor<'F32'>; N: number; name: string }[], K: number, xMean: Float32Array,
  opts: Pick<AwqRunOptions, 'bits' | 'groupSize' | 'zeroPoint' | 'duoScaling'>, loss: (candidates: Tensor<'F32'>[]) => number, nGrid = AWQ_GRID): ScaleSearchResult {
  if (!weights.length) throw new AwqError('searchScales: no layers to scale');
  if (xMean.length !== K) throw new AwqError(`searchScales: ${xMean.length} activation means for ${K} inputs`);
  const G = groupOf(opts.groupSize, K, weights[0].name);
  for (const l of weights) groupOf(opts.groupSize, K, l.name);
  const wMean = opts.duoScaling ? math.weightMean(weights.map((l) => l.w), K, G) : null;
  const losses: number[] = [];
  let best: ScaleSearchResult | null = null;
  for (let i = 0; i < nGrid; i++) {
    const alpha = i / nGrid;
    const s = awqScales(xMean, wMean, alpha);
    const cands = weights.map((l) => math.pseudoQuantize(l.w, l.N, K, s, opts, l.name));
    const v = loss(cands);
    math.release(...cands);
    losses.push(v);
    if (v < (best?.loss ?? Infinity)) best = { alpha, scales: s, loss: v, lossAtAlpha0: 0, losses };
  }
  if (!best) throw new AwqError(`${weights.map((l) => l.name).join(', ')}: no grid point gave a finite loss (losses ${losses.join(', ')})`);
  best.lossAtAlpha0 = losses[0];
  return best;
}

/** mean((a − b)²) over all elements of the pairs, float64 sums (AutoAWQ _compute_loss). */
export function meanSquaredError(pairs: readonly [Float32Array, Float32Array][]): number {
  let sum = 0, n = 0;
  for (const [a, b] of pairs) {
    if (a.length !== b.length) throw new AwqError(`meanSquaredError: ${a.length} vs ${b.length} values`);
    for (let i = 0; i < a.length; i++) { const d = a[i] - b[i]; sum += d * d; }
    n += a.length;
  }
  return sum / n;
}

// ---- §5.2 step 4: folding

/** W[:, c] · s[c] for W [N,K] (a new array): the scaled linears' input columns. */
export function scaleColumns(w: Float32Array, N: number, K: number, s: Float32Array): Float32Array {
  if (s.length !== K || w.length !== N * K) throw new AwqError(`scaleColumns: ${s.length} scales for a [${N}, ${K}] weight of ${w.length} values`);
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) for (let c = 0; c < K; c++) out[n * K + c] = Math.fround(w[n * K + c] * s[c]);
  return out;
}

/** The last len(s) rows of W [N,K] divided by s (a new array): the previous linear's outputs. */
export function divideLastRows(w: Float32Array, N: number, K: number, s: Float32Array): Float32Array {
  if (s.length > N || w.length !== N * K) throw new AwqError(`divideLastRows: ${s.length} scales for a [${N}, ${K}] weight of ${w.length} values`);
  const out = Float32Array.from(w), r0 = N - s.length;
  for (let r = r0; r < N; r++) for (let c = 0; c < K; c++) out[r * K + c] = Math.fround(w[r * K + c] / s[r - r0]);
  return out;
}

/** v's last len(s) entries divided by s (a new array): a norm's weight or bias, a previous linear's bias. */
export function divideTail(v: Float32Array, s: Float32Array): Float32Array {
  if (s.length > v.length) throw new AwqError(`divideTail: ${s.length} scales for ${v.length} values`);
  const out = Float32Array.from(v), o = v.length - s.length;
  for (let i = 0; i < s.length; i++) out[o + i] = Math.fround(v[o + i] / s[i]);
  return out;
}

// ---- §5.2 step 5: clipping

/**
 * The clip search's tokens: every max(1, n // 512)-th of the n input rows (the inputs concatenated in order), each
 * divided by s (the scales folded into this linear, or null), as one [T, K] array.
 */
export function clipTokens(inputs: readonly Float32Array[], K: number, s: Float32Array | null, maxTokens = AWQ_CLIP_TOKENS): { x: Float32Array; T: number } {
  let n = 0;
  for (const x of inputs) n += x.length / K;
  const step = Math.max(1, Math.floor(n / maxTokens)), T = Math.ceil(n / step);
  const out = new Float32Array(T * K);
  let t = 0, base = 0;
  for (const x of inputs) {
    const rows = x.length / K;
    for (let r = (step - (base % step)) % step; r < rows; r += step, t++) {
      for (let c = 0; c < K; c++) out[t * K + c] = s ? Math.fround(x[r * K + c] / s[c]) : x[r * K + c];
    }
    base += rows;
  }
  return { x: out, T };
}

/**
 * AutoAWQ's clip search for one linear W [N,K] on tokens x [T,K]: per (output row, group) the max |w| among
 * max|w|·(1 − i/20), i < 10, whose quantized group output over the tokens is closest to the float one. [N, K/G].
 */
export function clipSearch(w: Float32Array, shape: readonly [number, number], x: Float32Array, T: number,
  opts: Pick<AwqRunOptions, 'bits' | 'groupSize' | 'zeroPoint' | 'kernels'>, name = 'awq'): Float32Array {
  const [N, K] = shape;
  checkWeight(w, N, K, name);
  if (!(Number.isInteger(T) && T >= 1) || x.length !== T * K) throw new AwqError(`${name}: clip tokens have ${x.length} values, ${T} × ${K} expected`);
  const G = groupOf(opts.groupSize, K, name);
  const k = getAwqKernels(opts.kernels);
  const gram = new Float64Array(K * G);
  k.groupGram(x, T, K, G, gram);
  const best = new Float32Array(N * (K / G));
  k.clipSearch(w, N, K, G, gram, T, opts.bits, opts.zeroPoint, AWQ_CLIP_STEPS, AWQ_GRID, best);
  return best;
}

/** W clamped to ±max per (row, group) (a new array); max [N, K/G]. */
export function applyClip(w: Float32Array, N: number, K: number, G: number, max: Float32Array): Float32Array {
  const out = new Float32Array(N * K), nG = K / G;
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < K; c++) {
      const m = max[n * nG + Math.floor(c / G)], v = w[n * K + c];
      out[n * K + c] = v < -m ? -m : v > m ? m : v;
    }
  }
  return out;
}

// ---- the driver's arrays, on the host or on a device

/**
 * What quantizeModelAwq (src/quant/awq-driver.ts) does to weights and activations: on the host (this file's functions
 * over Float32Arrays, hostAwqMath) or on the GPU (src/quant/awq-cuda.ts, the same operations rounded the same way).
 * Tensors are F32 [rows, cols] on that side; s is always a host array.
 */
export interface AwqMath {
  /** A copy of a linear's input [rows, K] that outlives the forward that made it. */
  keepInput(x: Tensor<'F32'>, K: number): Tensor<'F32'>;
  /** A weight as float32 [N, K] (an AwqError names a non-finite element). */
  weight(w: Tensor, shape: [number, number], name: string): Tensor<'F32'>;
  activationMean(inputs: readonly Tensor<'F32'>[], K: number): Float32Array;
  weightMean(weights: readonly Tensor<'F32'>[], K: number, G: number): Float32Array;
  pseudoQuantize(w: Tensor<'F32'>, N: number, K: number, s: Float32Array | null, opts: Pick<AwqRunOptions, 'bits' | 'groupSize' | 'zeroPoint'>, name: string): Tensor<'F32'>;
  meanSquaredError(pairs: readonly [Tensor<'F32'>, Tensor<'F32'>][]): number;
  scaleColumns(w: Tensor<'F32'>, N: number, K: number, s: Float32Array): Tensor<'F32'>;
  divideLastRows(w: Tensor<'F32'>, N: number, K: number, s: Float32Array): Tensor<'F32'>;
  divideTail(v: Tensor<'F32'>, s: Float32Array): Tensor<'F32'>;
  /** The clip search on the inputs (÷ s when scales were folded in) and the clipped weight; ratio as the driver reports it. */
  clip(w: Tensor<'F32'>, N: number, K: number, inputs: readonly Tensor<'F32'>[], s: Float32Array | null,
    opts: Pick<AwqRunOptions, 'bits' | 'groupSize' | 'zeroPoint'>, name: string): { w: Tensor<'F32'>; ratio: number };
  quantize(w: Tensor<'F32'>, shape: [number, number], opts: Pick<AwqRunOptions, 'bits' | 'groupSize' | 'zeroPoint'>, name: string): { codes: GptqCodes; dequantized: Tensor<'F32'> };
  release(...ts: (Tensor | null | undefined)[]): void;
  /** fn, with what its ops allocated freed after, except keep(result) (cuda; the host leaves it to the collector). */
  scoped<T>(fn: () => T, keep: (result: T) => readonly Tensor[]): T;
}

/** Mean over (row, group) of best max / original max |w| (groups of all zeros count as 1); gmax [N, K/G]. */
export function clipRatioOf(gmax: Float32Array, best: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < gmax.length; i++) sum += gmax[i] > 0 ? best[i] / gmax[i] : 1;
  return sum / gmax.length;
}

/** AwqMath over Float32Arrays on the host: this file's functions and kernels (native or ref). */
export function hostAwqMath(kernels?: 'native' | 'ref'): AwqMath {
  const t = (shape: readonly number[], a: Float32Array) => new Tensor('F32', shape, a);
  const k = () => getAwqKernels(kernels);
  return {
    keepInput: (x, K) => t([x.numel / K, K], x.f32.slice()),
    weight(w, shape, name) {
      const a = w.toF32();
      checkWeight(a, shape[0], shape[1], name);
      return t(shape, a);
    },
    activationMean: (inputs, K) => activationMean(inputs.map((x) => x.f32), K),
    weightMean: (weights, K, G) => weightMean(weights.map((w) => w.f32), K, G),
    pseudoQuantize(w, N, K, s, opts, name) {
      const out = new Float32Array(N * K);
      k().pseudoQuantize(w.f32, N, K, s, opts.bits, groupOf(opts.groupSize, K, name), opts.zeroPoint, out, null, null, null);
      return t([N, K], out);
    },
    meanSquaredError: (pairs) => meanSquaredError(pairs.map(([a, b]) => [a.f32, b.f32])),
    scaleColumns: (w, N, K, s) => t([N, K], scaleColumns(w.f32, N, K, s)),
    divideLastRows: (w, N, K, s) => t([N, K], divideLastRows(w.f32, N, K, s)),
    divideTail: (v, s) => t(v.shape, divideTail(v.f32, s)),
    clip(w, N, K, inputs, s, opts, name) {
      const { x, T } = clipTokens(inputs.map((i) => i.f32), K, s);
      const G = groupOf(opts.groupSize, K, name), nG = K / G;
      const best = clipSearch(w.f32, [N, K], x, T, { ...opts, kernels }, name);
      const gmax = new Float32Array(N * nG);
      for (let n = 0; n < N; n++) {
        for (let g = 0; g < nG; g++) {
          let m = 0;
          for (let c = g * G; c < (g + 1) * G; c++) m = Math.max(m, Math.abs(w.f32[n * K + c]));
          gmax[n * nG + g] = m;
        }
      }
      return { w: t([N, K], applyClip(w.f32, N, K, G, best)), ratio: clipRatioOf(gmax, best) };
    },
    quantize(w, shape, opts, name) {
      const q = awqQuantize(w.f32, shape, { ...opts, kernels }, name);
      return { codes: q.codes, dequantized: t(shape, q.dequantized) };
    },
    release() {},
    scoped: (fn) => fn(),
  };
}
