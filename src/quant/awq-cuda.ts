// AWQ with the model on the GPU: the AwqMath of src/quant/awq.ts over device tensors (native/cuda/awq.cu), so
// `lowbit quantize --method awq --device cuda` keeps the recorded inputs, the candidates of the scale search, the
// module outputs it compares and the clip search on the device; only per-channel statistics (K values), the clip
// maxima and the final codes come down. Every kernel rounds as src/quant/awq.ts's twins do (the test compares them bit
// for bit); the mean squared error of the search is a float64 sum in another order (a tie between two grid points
// could then go the other way).
import { cudaAwq, cudaBackend, cudaGptq, cudaScope, cudaUntracked } from '../backend/cuda/index.js';
import { Tensor } from '../tensor/tensor.js';
import { AwqError } from './awq-format.js';
import { AWQ_CLIP_STEPS, AWQ_CLIP_TOKENS, AWQ_GRID, clipRatioOf, groupOf, type AwqMath } from './awq.js';
import type { GptqCodes } from './gptq-types.js';

const be = cudaBackend;
const up = (a: Float32Array) => be.upload(new Tensor('F32', [a.length], a)) as Tensor<'F32'>;

export const cudaAwqMath: AwqMath = {
  keepInput(x, K) {
    const out = cudaUntracked(() => be.empty('F32', [x.numel / K, K]));  // recorded inside a scoped forward, kept past it
    be.copy(out, 0, x, 0, x.numel);
    return out;
  },

  weight(w, shape, name) {
    const W = cudaGptq.toF32(w);
    if (!Number.isFinite(cudaGptq.dot(W, W))) {
      // Rare: bring it down to name the first bad element, as the host's check words it.
      const h = be.download(W).f32, i = h.findIndex((v) => !Number.isFinite(v));
      be.release!(W);
      throw new AwqError(`${name}: weight [${Math.floor(i / shape[1])}, ${i % shape[1]}] is ${h[i]}; AWQ needs finite weights`);
    }
    return W;
  },

  activationMean(inputs, K) {
    const acc = cudaAwq.absSums(inputs, K);
    let n = 0;
    for (const x of inputs) n += x.numel / K;
    if (!n) throw new AwqError('activationMean: no tokens');
    return Float32Array.from(acc, (v) => v / n);
  },

  weightMean(weights, K, G) {
    const acc = cudaAwq.weightSums(weights, K, G);
    let rows = 0;
    for (const w of weights) rows += w.numel / K;
    return Float32Array.from(acc, (v) => v / rows);
  },

  pseudoQuantize(w, N, K, s, opts, name) {
    const sd = s ? up(s) : null;
    const { out } = cudaAwq.pseudoQuantize(w, N, K, sd, opts.bits, groupOf(opts.groupSize, K, name), opts.zeroPoint);
    if (sd) be.release!(sd);
    return out;
  },

  meanSquaredError(pairs) {
    let sum = 0, n = 0;
    for (const [a, b] of pairs) {
      if (a.numel !== b.numel) throw new AwqError(`meanSquaredError: ${a.numel} vs ${b.numel} values`);
      sum += cudaGptq.squaredDistance(a, b);
      n += a.numel;
    }
    return sum / n;
  },

  scaleColumns(w, N, K, s) {
    const sd = up(s), out = cudaAwq.scaleColumns(w, N, K, sd);
    be.release!(sd);
    return out;
  },

  divideLastRows(w, N, K, s) {
    const sd = up(s), out = cudaAwq.divideLastRows(w, N, K, sd);
    be.release!(sd);
    return out;
  },

  divideTail(v, s) {
    // Norm weights and biases: K values, done on the host as awq.ts does them.
    const h = be.download(v).f32, out = Float32Array.from(h), o = h.length - s.length;
    if (o < 0) throw new AwqError(`divideTail: ${s.length} scales for ${h.length} values`);
    for (let i = 0; i < s.length; i++) out[o + i] = Math.fround(h[o + i] / s[i]);
    return be.upload(new Tensor('F32', v.shape, out)) as Tensor<'F32'>;
  },

  clip(w, N, K, inputs, s, opts, name) {
    const G = groupOf(opts.groupSize, K, name);
    // clipTokens: every max(1, n // 512)-th row of the inputs in order, ÷ s.
    let n = 0;
    for (const x of inputs) n += x.numel / K;
    const step = Math.max(1, Math.floor(n / AWQ_CLIP_TOKENS)), T = Math.ceil(n / step);
    const x = be.empty('F32', [T, K]), sd = s ? up(s) : null;
    let t = 0, base = 0;
    for (const inp of inputs) {
      const rows = inp.numel / K, r0 = (step - (base % step)) % step;
      const cnt = r0 < rows ? Math.ceil((rows - r0) / step) : 0;
      cudaAwq.gatherRows(x, t, inp, sd, r0, step, cnt, K);
      t += cnt;
      base += rows;
    }
    if (t !== T) throw new AwqError(`${name}: clip tokens ${t}, ${T} expected`);
    const gram = cudaAwq.groupGram(x, T, K, G);
    const best = cudaAwq.clipSearch(w, N, K, G, gram, T, opts.bits, opts.zeroPoint, AWQ_CLIP_STEPS, AWQ_GRID);
    const gmax = cudaAwq.groupAbsmax(w, N, K, G);
    const ratio = clipRatioOf(be.download(gmax).f32, be.download(best).f32);
    const clipped = cudaAwq.applyClip(w, best, N, K, G);
    be.release!(x, gram, best, gmax, ...(sd ? [sd] : []));
    return { w: clipped, ratio };
  },

  quantize(w, shape, opts, name) {
    const [N, K] = shape, G = groupOf(opts.groupSize, K, name), nG = K / G;
    const r = cudaAwq.pseudoQuantize(w, N, K, null, opts.bits, G, opts.zeroPoint, true);
    const codes: GptqCodes = {
      bits: opts.bits, groupSize: opts.groupSize, shape: [N, K], intWeight: be.download(r.codes!).data as Uint8Array,
      scales: be.download(r.scales!).f32, zeros: be.download(r.zeros!).data as Uint8Array, gIdx: new Int32Array(K),
    };
    for (let k = 0; k < K; k++) codes.gIdx[k] = Math.floor(k / G);
    be.release!(r.codes!, r.scales!, r.zeros!);
    return { codes, dequantized: r.out };
  },

  release(...ts) { be.release!(...ts); },
  scoped: (fn, keep) => cudaScope(fn, keep),
};
