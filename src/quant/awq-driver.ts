// AWQ over a whole model, one decoder layer at a time, as AutoAWQ's AwqQuantizer.quantize does
// (../shared/spec/FORMATS.md §5.2): the inputs of layer 0 are computed for every calibration sample; for each decoder
// layer the *unmodified float* layer runs on them while every linear's input is recorded, and its outputs become the
// next layer's inputs (AWQ feeds each block the float outputs of the blocks before it, unlike GPTQ). Then, on the
// recorded inputs: the scale search of every group of the layer's table (all on the original weights), the folding of
// all chosen scales, the clip search of every linear but q/k, and the quantization of every linear, which is replaced
// by a float Linear over its dequantized weight so the model runs as the quantized one will. Only one layer's
// activations are held at a time. lm_head, the embeddings and OPT's project_in / project_out stay float.
import { LayerNorm, Linear, RMSNorm, type LinearLike } from '../nn/layers.js';
import { DecoderLM, type CausalLM } from '../models/model.js';
import { Tensor } from '../tensor/tensor.js';
import type { OnProgress, Progress } from '../util/progress.js';
import { AwqError, checkAwqOptions, groupOf, hostAwqMath, searchScalesWith, type AwqMath, type AwqOptions, type AwqRunOptions } from './awq.js';
import { cudaAwqMath } from './awq-cuda.js';
import type { GptqCodes } from './gptq-types.js';

/** One group of linears that share an input and are scaled together (AutoAWQ's get_layers_for_scaling). */
export interface AwqGroupSpec {
  /**
   * The op that absorbs 1/s, relative to the layer: one of its norms (a key of DecoderLM.layerNorms; skipped on a
   * post-LN model, whose norm outputs are also the residual) or a linear (its last len(s) output rows are divided).
   */
  prev: string;
  /** The scaled linears (their input columns are multiplied by s); the first one's recorded input is the search's. */
  layers: string[];
  /** module2inspect, whose output the loss compares: the attention block, the MLP block, or the one scaled linear. */
  inspect: 'self_attn' | 'mlp' | 'layer';
  /** Only when prev's weight has the shape of the scaled linear's (v_proj → o_proj: skipped under GQA). */
  sameShape?: boolean;
}

/** Never clipped (AutoAWQ: "due to qk bmm, it is hard to clip precisely"): names containing any of these. */
export const AWQ_NO_CLIP = ['q_', 'k_', 'query', 'key', 'Wqkv'];

/** Per model_type: the decoder layers' prefix and the groups, in AutoAWQ's order (awq/models/llama.py, opt.py …). */
export const AWQ_LAYERS: Record<string, { prefix: string; groups: AwqGroupSpec[] }> = {
  llama: {
    prefix: 'model.layers',
    groups: [
      { prev: 'input_layernorm', layers: ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'], inspect: 'self_attn' },
      { prev: 'self_attn.v_proj', layers: ['self_attn.o_proj'], inspect: 'layer', sameShape: true },
      { prev: 'post_attention_layernorm', layers: ['mlp.gate_proj', 'mlp.up_proj'], inspect: 'mlp' },
      { prev: 'mlp.up_proj', layers: ['mlp.down_proj'], inspect: 'layer' },
    ],
  },
  opt: {
    prefix: 'model.decoder.layers',
    groups: [
      { prev: 'self_attn_layer_norm', layers: ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'], inspect: 'self_attn' },
      { prev: 'self_attn.v_proj', layers: ['self_attn.out_proj'], inspect: 'layer', sameShape: true },
      { prev: 'final_layer_norm', layers: ['fc1'], inspect: 'layer' },
      { prev: 'fc1', layers: ['fc2'], inspect: 'layer' },
    ],
  },
};
AWQ_LAYERS.mistral = AWQ_LAYERS.llama;
AWQ_LAYERS.qwen2 = AWQ_LAYERS.llama;

export interface AwqDriverOptions extends Partial<AwqRunOptions> {
  /** 'awq' (default) or 'rtn': AutoAWQ's grid with no scaling and no clipping, the baseline (needs no samples). */
  method?: 'awq' | 'rtn';
  /** Checked between groups and linears: an aborted signal stops the run with its reason. */
  signal?: AbortSignal;
}

/** One group's search. */
export interface AwqGroupStats {
  layer: number;
  /** Full HF names: the op that absorbed 1/s and the scaled linears. */
  prev: string;
  layers: string[];
  inspect: AwqGroupSpec['inspect'];
  /** The chosen α, its loss (mean squared error of module2inspect's output), the loss at α = 0, and every grid point's. */
  alpha: number;
  loss: number;
  lossAtAlpha0: number;
  losses: number[];
  ms: number;
}

/** A table group that did not apply, and why (GQA shapes, a post-LN norm). */
export interface AwqSkippedGroup { layer: number; prev: string; layers: string[]; reason: string }

/** One quantized linear's numbers. */
export interface AwqLayerStats {
  name: string;
  /** [out N, in K]. */
  shape: [number, number];
  method: 'awq' | 'rtn';
  /** α of the group that scaled this linear's inputs (absent when none did). */
  alpha?: number;
  /** Clip search: mean over (row, group) of the chosen max |w| over the original max |w| (1 = no clipping); absent when not searched. */
  clipRatio?: number;
  /** Milliseconds of the clip search and the quantization of this linear. */
  ms: number;
}

/** Progress of quantizeModelAwq: task 'quantize', unit 'layers' (linears); `stats` when a linear was quantized, `group` after a search. */
export interface AwqProgress extends Progress { readonly stats?: AwqLayerStats; readonly group?: AwqGroupStats }

export interface AwqModelResult {
  /** Every quantized linear's codes, by HF name, in quantization order. */
  codes: Map<string, GptqCodes>;
  stats: AwqLayerStats[];
  groups: AwqGroupStats[];
  skipped: AwqSkippedGroup[];
  options: AwqOptions;
  method: 'awq' | 'rtn';
  /** Linear layers left float (lm_head, OPT's project_in / project_out). */
  float: string[];
  /** Norms whose float weights (and biases) absorbed scales: a saved checkpoint takes them from the model. */
  scaledNorms: string[];
  ms: number;
}

/** Wraps a linear while the float layer runs: keeps its input (one copy per tensor shared by several linears). */
class Recorder implements LinearLike {
  constructor(readonly inner: Linear, private readonly math: AwqMath, private readonly seen: Map<unknown, Tensor<'F32'>>, readonly inputs: Tensor<'F32'>[]) {}
  get name(): string { return this.inner.name; }
  get inFeatures(): number { return this.inner.inFeatures; }
  get outFeatures(): number { return this.inner.outFeatures; }
  forward(x: Tensor<'F32'>): Tensor<'F32'> {
    const id = x.device === 'cpu' ? x.data : x.storage;  // the same tensor: its host array, or its device storage
    let copy = this.seen.get(id);
    if (!copy) { copy = this.math.keepInput(x, this.inner.inFeatures); this.seen.set(id, copy); }
    this.inputs.push(copy);
    return this.inner.forward(x);
  }
}

function floatLinear(model: CausalLM, name: string): Linear {
  const lin = model.linears().get(name);
  if (!lin) throw new AwqError(`AWQ: the model has no linear layer "${name}"`);
  if (!(lin instanceof Linear)) throw new AwqError(`AWQ: ${name} is a ${lin.constructor.name}, not a float Linear: AWQ quantizes a float model`);
  return lin;
}

/**
 * Quantize every linear of every decoder layer with AWQ (or RTN on AWQ's grid) calibrated on `samples` (token ids;
 * see src/quant/calib.ts), in place: scales are folded into the norms and linears, and every decoder linear becomes
 * a float Linear over its dequantized weight, so the model runs as the quantized one will.
 */
export function quantizeModelAwq(model: CausalLM, samples: readonly Int32Array[], options: AwqDriverOptions = {}, onProgress?: OnProgress<AwqProgress>): AwqModelResult {
  const t0 = performance.now();
  const { method = 'awq', signal, ...rest } = options;
  if (method !== 'awq' && method !== 'rtn') throw new AwqError(`AWQ: method must be "awq" or "rtn", got ${JSON.stringify(method)}`);
  const opts = checkAwqOptions(rest, 'AWQ');
  if (!(model instanceof DecoderLM)) throw new AwqError('AWQ: the model must be one of lowbit\'s decoder models (llama, mistral, qwen2, opt)');
  const table = AWQ_LAYERS[model.config.model_type];
  if (!table) throw new AwqError(`AWQ: no layer table for model_type "${model.config.model_type}" (known: ${Object.keys(AWQ_LAYERS).join(', ')})`);
  if (method === 'awq' && !samples.length) throw new AwqError('AWQ: no calibration samples (method "rtn" needs none)');
  samples.forEach((s, i) => {
    if (!(s instanceof Int32Array) || !s.length) throw new AwqError(`AWQ: calibration sample ${i} must be a non-empty Int32Array of token ids`);
    if (s.length > model.maxPositions) throw new AwqError(`AWQ: calibration sample ${i} has ${s.length} tokens, more than the model's ${model.maxPositions} positions`);
  });

  // Every linear of each layer, in model order; the table's names must exist, and every group size must divide.
  const nLayers = model.layers.length;
  const all = model.linears();
  const perLayer: string[][] = [];
  for (let l = 0; l < nLayers; l++) {
    const p = `${table.prefix}.${l}.`;
    const names = [...all.keys()].filter((n) => n.startsWith(p));
    for (const g of table.groups) {
      for (const n of g.layers) if (!names.includes(p + n)) throw new AwqError(`AWQ: the ${model.config.model_type} table names ${p + n}, which the model lacks`);
    }
    for (const n of names) groupOf(opts.groupSize, floatLinear(model, n).inFeatures, n);
    perLayer.push(names);
  }
  const inLayers = new Set(perLayer.flat());
  const floatNames = [...all.keys()].filter((n) => !inLayers.has(n));

  const total = inLayers.size;
  let done = 0;
  const codes = new Map<string, GptqCodes>();
  const stats: AwqLayerStats[] = [];
  const groups: AwqGroupStats[] = [];
  const skipped: AwqSkippedGroup[] = [];
  const scaledNorms: string[] = [];
  const progress = (p: { stats?: AwqLayerStats; group?: AwqGroupStats; item: string }) =>
    onProgress?.({ task: 'quantize', done, total, unit: 'layers', elapsedMs: performance.now() - t0, ...p });
  // Weights and activations on the host, or on the GPU for a cuda model (src/quant/awq-cuda.ts).
  const math = model.backend.device === 'cuda' ? cudaAwqMath : hostAwqMath(opts.kernels);
  const weightOf = (lin: Linear) => math.weight(lin.weight, [lin.outFeatures, lin.inFeatures], lin.name);
  const quantize = (name: string, w: Tensor<'F32'>, s: Omit<AwqLayerStats, 'ms' | 'shape' | 'method' | 'name'>, t: number) => {
    const lin = floatLinear(model, name), shape: [number, number] = [lin.outFeatures, lin.inFeatures];
    const q = math.quantize(w, shape, opts, name);
    math.release(w);
    model.replaceLinear(name, new Linear(model.backend, name, q.dequantized, lin.bias));
    codes.set(name, q.codes);
    const st: AwqLayerStats = { name, shape, method, ...s, ms: performance.now() - t };
    stats.push(st);
    done++;
    progress({ stats: st, item: name });
  };
  const result = (): AwqModelResult => ({
    codes, stats, groups, skipped, method, float: floatNames, scaledNorms, ms: performance.now() - t0,
    options: { bits: opts.bits, groupSize: opts.groupSize, zeroPoint: opts.zeroPoint, duoScaling: opts.duoScaling, applyClip: opts.applyClip },
  });

  if (method === 'rtn') {
    for (const name of perLayer.flat()) {
      signal?.throwIfAborted();
      quantize(name, weightOf(floatLinear(model, name)), {}, performance.now());
    }
    return result();
  }

  // Inputs of layer 0 for every sample, [T, hidden] each; replaced by each layer's float outputs in turn.
  let inps = samples.map((s) => model.layerInput(s, 1, s.length));
  for (let l = 0; l < nLayers; l++) {
    signal?.throwIfAborted();
    const p = `${table.prefix}.${l}.`;
    const names = perLayer[l];
    // 1. The float layer on every sample, recording each linear's inputs (one array per sample).
    const originals = names.map((n) => floatLinear(model, n));
    const inputs = new Map<string, Tensor<'F32'>[]>(names.map((n) => [n, []]));
    const outs: Tensor<'F32'>[] = [];
    try {
      inps.forEach((x, s) => {
        const seen = new Map<unknown, Tensor<'F32'>>();
        for (const lin of originals) model.replaceLinear(lin.name, new Recorder(lin, math, seen, inputs.get(lin.name)!));
        outs.push(math.scoped(() => model.forwardLayer(l, x, 1, samples[s].length), (y) => [y]));
      });
    } finally {
      originals.forEach((lin) => model.replaceLinear(lin.name, lin));
    }
    for (const [n, xs] of inputs) if (xs.length !== samples.length) throw new AwqError(`AWQ: layer ${l}'s forward did not run ${n} once per sample`);

    // 2. Every group's search, on the original weights and inputs (AutoAWQ searches all, then applies all).
    const found: { spec: AwqGroupSpec; scales: Float32Array; alpha: number }[] = [];
    for (const spec of table.groups) {
      signal?.throwIfAborted();
      const t = performance.now();
      const layerNames = spec.layers.map((n) => p + n);
      const scaled = layerNames.map((n) => floatLinear(model, n));
      const K = scaled[0].inFeatures;
      const why = groupSkipReason(model, l, spec);
      if (why) { skipped.push({ layer: l, prev: p + spec.prev, layers: layerNames, reason: why }); continue; }
      const X = inputs.get(layerNames[0])!;
      layerNames.forEach((n, i) => {
        if (inputs.get(n)!.some((x, s) => x !== X[s])) throw new AwqError(`AWQ: ${n} and ${layerNames[0]} do not read the same input, so they cannot be scaled together`);
        if (scaled[i].inFeatures !== K) throw new AwqError(`AWQ: ${n} has ${scaled[i].inFeatures} inputs, ${layerNames[0]} ${K}`);
      });
      // module2inspect's output on one sample (the scaled linears' outputs in order for 'layer'), with the candidates
      // in place of the scaled linears' weights when given.
      const inspect = (h: Tensor<'F32'>, T: number, cands?: Tensor<'F32'>[]): Tensor<'F32'>[] => {
        if (spec.inspect === 'layer' || opts.searchLoss === 'linears') {
          return scaled.map((lin, i) => new Linear(model.backend, lin.name, cands ? cands[i] : lin.weight, lin.bias).forward(h));
        }
        if (cands) scaled.forEach((lin, i) => model.replaceLinear(lin.name, new Linear(model.backend, lin.name, cands[i], lin.bias)));
        try {
          return [spec.inspect === 'self_attn' ? model.attentionBlock(l, h, 1, T) : model.mlpBlock(l, h)];
        } finally {
          if (cands) scaled.forEach((lin) => model.replaceLinear(lin.name, lin));
        }
      };
      const ref = X.map((x, s) => math.scoped(() => inspect(x, samples[s].length), (o) => o));
      const ws = scaled.map((lin) => ({ w: weightOf(lin), N: lin.outFeatures, name: lin.name }));
      const r = searchScalesWith(math, ws, K, math.activationMean(X, K), opts, (cands) => {
        const outs = X.map((x, s) => math.scoped(() => inspect(x, samples[s].length, cands), (o) => o));
        const loss = math.meanSquaredError(outs.flatMap((o, s) => o.map((v, i) => [v, ref[s][i]] as [Tensor<'F32'>, Tensor<'F32'>])));
        math.release(...outs.flat());
        return loss;
      });
      math.release(...ref.flat(), ...ws.map((w) => w.w));
      found.push({ spec, scales: r.scales, alpha: r.alpha });
      const g: AwqGroupStats = { layer: l, prev: p + spec.prev, layers: layerNames, inspect: spec.inspect, alpha: r.alpha, loss: r.loss, lossAtAlpha0: r.lossAtAlpha0, losses: r.losses, ms: performance.now() - t };
      groups.push(g);
      progress({ group: g, item: layerNames.join(', ') });
    }

    // 3. Fold every group's scales: prev ÷ s, the scaled linears' input columns × s (their inputs are now x ÷ s).
    const inScale = new Map<string, { s: Float32Array; alpha: number }>();
    for (const { spec, scales: s, alpha } of found) {
      const norm = foldScales(model, l, spec, s, math);
      if (norm) scaledNorms.push(norm);
      for (const n of spec.layers) inScale.set(p + n, { s, alpha });
    }

    // 4-5. Clip search (all but q/k) and quantization of every linear, in model order.
    for (const name of names) {
      signal?.throwIfAborted();
      const t = performance.now();
      const lin = floatLinear(model, name), N = lin.outFeatures, K = lin.inFeatures;
      let w = weightOf(lin);
      const sc = inScale.get(name);
      const st: Omit<AwqLayerStats, 'ms' | 'shape' | 'method' | 'name'> = sc ? { alpha: sc.alpha } : {};
      const rel = name.slice(p.length);
      if (opts.applyClip && !AWQ_NO_CLIP.some((a) => rel.includes(a))) {
        const c = math.clip(w, N, K, inputs.get(name)!, sc?.s ?? null, opts, name);
        st.clipRatio = c.ratio;
        math.release(w);
        w = c.w;
      }
      quantize(name, w, st, t);
    }
    math.release(...new Set([...inputs.values()].flat()), ...inps);
    inputs.clear();
    inps = outs;
  }
  math.release(...inps);
  return result();
}

/**
 * Fold scales s into decoder layer l for one group (AutoAWQ apply_scale): the previous norm's weight and bias ÷ s, or
 * the previous linear's last len(s) output rows and bias entries ÷ s; every scaled linear's input columns × s. Each
 * changed layer is replaced by a new one over new float32 arrays (the checkpoint's weights are never written). The
 * float function is unchanged (up to rounding). Returns the norm's name when a norm absorbed 1/s.
 */
export function foldScales(model: DecoderLM, l: number, spec: AwqGroupSpec, s: Float32Array, math: AwqMath = hostAwqMath()): string | null {
  const table = AWQ_LAYERS[model.config.model_type];
  if (!table) throw new AwqError(`AWQ: no layer table for model_type "${model.config.model_type}"`);
  const p = `${table.prefix}.${l}.`;
  const prevNorm = model.layerNorms(l)[spec.prev];
  let norm: string | null = null;
  if (prevNorm instanceof RMSNorm) {
    model.setLayerNorm(l, spec.prev, new RMSNorm(model.backend, prevNorm.name, math.divideTail(prevNorm.weight, s), prevNorm.eps));
    norm = prevNorm.name;
  } else if (prevNorm instanceof LayerNorm) {
    model.setLayerNorm(l, spec.prev, new LayerNorm(model.backend, prevNorm.name, math.divideTail(prevNorm.weight, s), math.divideTail(prevNorm.bias, s), prevNorm.eps));
    norm = prevNorm.name;
  } else {
    const prev = floatLinear(model, p + spec.prev), [N, K] = [prev.outFeatures, prev.inFeatures];
    const bias = prev.bias ? math.divideTail(prev.bias, s) : null;
    const w = math.weight(prev.weight, [N, K], prev.name);
    model.replaceLinear(prev.name, new Linear(model.backend, prev.name, math.divideLastRows(w, N, K, s), bias));
    math.release(w);
  }
  for (const n of spec.layers) {
    const lin = floatLinear(model, p + n), [N, K] = [lin.outFeatures, lin.inFeatures];
    if (K !== s.length) throw new AwqError(`AWQ: ${lin.name} has ${K} inputs, ${s.length} scales`);
    const w = math.weight(lin.weight, [N, K], lin.name);
    model.replaceLinear(lin.name, new Linear(model.backend, lin.name, math.scaleColumns(w, N, K, s), lin.bias));
    math.release(w);
  }
  return norm;
}

/** Why a table group does not apply to decoder layer l of this model (a post-LN norm, GQA shapes), or null when it does. */
export function groupSkipReason(model: DecoderLM, l: number, spec: AwqGroupSpec): string | null {
  const table = AWQ_LAYERS[model.config.model_type];
  if (!table) throw new AwqError(`AWQ: no layer table for model_type "${model.config.model_type}"`);
  const p = `${table.prefix}.${l}.`;
  const first = floatLinear(model, p + spec.layers[0]);
  if (spec.prev in model.layerNorms(l)) {
    return model.preNorm ? null : `${p + spec.prev} also feeds the residual (post-LN): 1/s cannot be folded into it`;
  }
  const prev = floatLinear(model, p + spec.prev);
  if (spec.sameShape && (prev.outFeatures !== first.outFeatures || prev.inFeatures !== first.inFeatures)) {
    return `${prev.name} [${prev.outFeatures}, ${prev.inFeatures}] and ${first.name} [${first.outFeatures}, ${first.inFeatures}] differ in shape (GQA)`;
  }
  return null;
}
