// GPTQ over a whole model, one decoder layer at a time (../shared/spec/FORMATS.md §4.4, AutoGPTQ's quantize): the
// inputs of layer 0 are computed for every calibration sample; then for each decoder layer and each sub-list of its
// linears (true_sequential), the samples run through the *current*, partly quantized layer while recording linears
// accumulate their Hessians, those linears are quantized and replaced by float Linears over their dequantized
// weights, and finally the samples run through the fully quantized layer to give the next layer's inputs. Only one
// set of activations is kept (each sample's input is overwritten by its output). lm_head, the embeddings and OPT's
// project_in / project_out stay float, as in AutoGPTQ.
import { Linear, type LinearLike } from '../nn/layers.js';
import { DecoderLM, type CausalLM } from '../models/model.js';
import { Tensor } from '../tensor/tensor.js';
import type { AnyTypedArray } from '../tensor/dtype.js';
import type { OnProgress, Progress } from '../util/progress.js';
import { checkGptqOptions, GptqError, gptqQuantizePrepared, HessianAccumulator, outputError, prepareHessian, rtnQuantize, type GptqRunOptions, type PreparedHessian } from './gptq.js';
import type { GptqCodes, GptqOptions } from './gptq-types.js';

/**
 * The linears of one decoder layer in AutoGPTQ's true-sequential order (modeling/llama.py, opt.py …), relative to the
 * layer's prefix: each sub-list is calibrated on the outputs of the sub-lists before it, already quantized.
 */
export const GPTQ_LAYERS: Record<string, { prefix: string; sequential: string[][] }> = {
  llama: {
    prefix: 'model.layers',
    sequential: [['self_attn.k_proj', 'self_attn.v_proj', 'self_attn.q_proj'], ['self_attn.o_proj'], ['mlp.up_proj', 'mlp.gate_proj'], ['mlp.down_proj']],
  },
  opt: {
    prefix: 'model.decoder.layers',
    sequential: [['self_attn.k_proj', 'self_attn.v_proj', 'self_attn.q_proj'], ['self_attn.out_proj'], ['fc1'], ['fc2']],
  },
};
GPTQ_LAYERS.mistral = GPTQ_LAYERS.llama;
GPTQ_LAYERS.qwen2 = GPTQ_LAYERS.llama;

export interface GptqDriverOptions extends Partial<GptqRunOptions> {
  /** 'gptq' (default) or 'rtn': round-to-nearest on the same grid, the baseline. */
  method?: 'gptq' | 'rtn';
  /** Quantize each layer's sub-lists in order, each calibrated on the quantized ones before it (default true). */
  trueSequential?: boolean;
  /** Measure each linear's relative output error for GPTQ and RTN on the calibration inputs (default true). */
  errors?: boolean;
  /** Checked between linears: an aborted signal stops the run with its reason. */
  signal?: AbortSignal;
}

/** One quantized linear's numbers. Errors are ‖X·Wᵀ − X·Ŵᵀ‖² / ‖X·Wᵀ‖² over the calibration inputs X it saw. */
export interface GptqLayerStats {
  name: string;
  /** [out N, in K]. */
  shape: [number, number];
  method: 'gptq' | 'rtn';
  /** Relative output error of GPTQ's weight (method gptq, with errors on). */
  gptqError?: number;
  /** Relative output error of round-to-nearest on the same weight and inputs (with calibration and errors on). */
  rtnError?: number;
  /** AutoGPTQ's loss Σ (w − q)²/d²/2 (method gptq). */
  gptqLoss?: number;
  /** The damping used (method gptq; more than asked when dampAutoIncrement retried). */
  dampPercent?: number;
  /** Milliseconds spent on this linear (its share of the calibration forwards, the factorization and the quantization). */
  ms: number;
}

/** Progress of quantizeModelGptq: task 'quantize', unit 'layers' (linear layers), item = the linear just quantized. */
export interface GptqProgress extends Progress { readonly stats?: GptqLayerStats }

export interface GptqModelResult {
  /** Every quantized linear's codes, by HF name, in quantization order. */
  codes: Map<string, GptqCodes>;
  stats: GptqLayerStats[];
  /** The options every layer was quantized with. */
  options: GptqOptions;
  method: 'gptq' | 'rtn';
  /** Linear layers left float (lm_head, OPT's project_in / project_out). */
  float: string[];
  ms: number;
}

/** Thrown by a recording layer once every linear of the sub-list has seen the sample: the rest of the layer is not needed. */
const STOP = Symbol('gptq: sub-list recorded');

/** Wraps a linear during a calibration pass: adds its input to the Hessian of its input group, then runs it. */
class Recorder implements LinearLike {
  group!: InputGroup;
  constructor(readonly inner: Linear, private readonly pass: Pass) {}
  get name(): string { return this.inner.name; }
  get inFeatures(): number { return this.inner.inFeatures; }
  get outFeatures(): number { return this.inner.outFeatures; }
  forward(x: Tensor<'F32'>): Tensor<'F32'> {
    this.pass.record(this, x);
    if (++this.pass.seen === this.pass.recorders.length) throw STOP;
    return this.inner.forward(x);
  }
}

/** Linears that read the very same input tensor (q/k/v, gate/up) share one Hessian and one factorization. */
interface InputGroup { acc: HessianAccumulator; data: AnyTypedArray | null; sample: number; prepared?: PreparedHessian }

class Pass {
  recorders: Recorder[] = [];
  groups: InputGroup[] = [];
  sample = -1;
  seen = 0;
  constructor(private readonly linalg: 'native' | 'ref' | undefined) {}
  record(r: Recorder, x: Tensor<'F32'>): void {
    const tokens = x.numel / r.inFeatures;
    if (!r.group) {
      // First sample: join the group of a linear that already read this tensor, else open one.
      const g = this.groups.find((g) => g.sample === this.sample && g.data === x.data);
      if (g) { r.group = g; return; }
      r.group = { acc: new HessianAccumulator(r.inFeatures, this.linalg), data: null, sample: -1 };
      this.groups.push(r.group);
    }
    const g = r.group;
    if (g.sample === this.sample) {
      if (g.data !== x.data) throw new GptqError(`${r.name}: its input differs from the other linears of its group in sample ${this.sample}`);
      return;
    }
    g.acc.add(x.f32, tokens, 1);
    g.data = x.data;
    g.sample = this.sample;
  }
}

function floatLinear(model: CausalLM, name: string): Linear {
  const lin = model.linears().get(name);
  if (!lin) throw new GptqError(`GPTQ: the model has no linear layer "${name}"`);
  if (!(lin instanceof Linear)) throw new GptqError(`GPTQ: ${name} is a ${lin.constructor.name}, not a float Linear: GPTQ quantizes a float model`);
  return lin;
}

/**
 * Quantize every linear of every decoder layer with GPTQ (or RTN) calibrated on `samples` (token ids; see
 * src/quant/calib.ts), in place: each becomes a float Linear over its dequantized weight, so the model runs as the
 * quantized one will. With method 'rtn' and no samples (or errors off), no forward runs and no errors are measured.
 */
export function quantizeModelGptq(model: CausalLM, samples: readonly Int32Array[], options: GptqDriverOptions = {}, onProgress?: OnProgress<GptqProgress>): GptqModelResult {
  const t0 = performance.now();
  const { method = 'gptq', trueSequential = true, errors = true, signal, ...rest } = options;
  if (method !== 'gptq' && method !== 'rtn') throw new GptqError(`GPTQ: method must be "gptq" or "rtn", got ${JSON.stringify(method)}`);
  if (typeof trueSequential !== 'boolean') throw new GptqError(`GPTQ: trueSequential must be true or false, got ${JSON.stringify(trueSequential)}`);
  const opts = checkGptqOptions(rest, 'GPTQ');
  if (!(model instanceof DecoderLM)) throw new GptqError('GPTQ: the model must be one of lowbit\'s decoder models (llama, mistral, qwen2, opt)');
  const table = GPTQ_LAYERS[model.config.model_type];
  if (!table) throw new GptqError(`GPTQ: no layer table for model_type "${model.config.model_type}" (known: ${Object.keys(GPTQ_LAYERS).join(', ')})`);
  if (method === 'gptq' && !samples.length) throw new GptqError('GPTQ: no calibration samples (method "rtn" needs none)');
  samples.forEach((s, i) => {
    if (!(s instanceof Int32Array) || !s.length) throw new GptqError(`GPTQ: calibration sample ${i} must be a non-empty Int32Array of token ids`);
    if (s.length > model.maxPositions) throw new GptqError(`GPTQ: calibration sample ${i} has ${s.length} tokens, more than the model's ${model.maxPositions} positions`);
  });

  // The linears of each layer, checked against the table both ways.
  const nLayers = model.layers.length;
  const all = model.linears();
  const inLayers = new Set<string>();
  const lists: string[][][] = [];
  for (let l = 0; l < nLayers; l++) {
    const p = `${table.prefix}.${l}.`;
    const seq = table.sequential.map((list) => list.map((s) => p + s));
    for (const name of seq.flat()) { floatLinear(model, name); inLayers.add(name); }
    const extra = [...all.keys()].filter((n) => n.startsWith(p) && !inLayers.has(n));
    if (extra.length) throw new GptqError(`GPTQ: ${extra[0]} is not in the ${model.config.model_type} layer table`);
    lists.push(trueSequential ? seq : [seq.flat()]);
  }
  const floatNames = [...all.keys()].filter((n) => !inLayers.has(n));

  const total = inLayers.size;
  let done = 0;
  const codes = new Map<string, GptqCodes>();
  const stats: GptqLayerStats[] = [];
  const report = (s: GptqLayerStats) => {
    stats.push(s);
    onProgress?.({ task: 'quantize', done: ++done, total, unit: 'layers', item: s.name, elapsedMs: performance.now() - t0, stats: s });
  };
  const replace = (lin: Linear, deq: Float32Array) => {
    model.replaceLinear(lin.name, new Linear(model.backend, lin.name, new Tensor('F32', [lin.outFeatures, lin.inFeatures], deq), lin.bias));
  };
  const result = (): GptqModelResult => ({ codes, stats, options: stripRun(opts), method, float: floatNames, ms: performance.now() - t0 });

  if (!samples.length || (method === 'rtn' && !errors)) {           // RTN needs no calibration
    for (const name of lists.flat(2)) {
      signal?.throwIfAborted();
      const t = performance.now(), lin = floatLinear(model, name);
      const r = rtnQuantize(lin.weight.toF32(), [lin.outFeatures, lin.inFeatures], opts, name);
      replace(lin, r.dequantized);
      codes.set(name, r.codes);
      report({ name, shape: [lin.outFeatures, lin.inFeatures], method, ms: performance.now() - t });
    }
    return result();
  }

  // Inputs of layer 0 for every sample, [T, hidden] each; overwritten by each layer's outputs in turn.
  const inps = samples.map((s) => model.layerInput(s, 1, s.length));
  for (let l = 0; l < nLayers; l++) {
    for (const list of lists[l]) {
      signal?.throwIfAborted();
      const tPass = performance.now();
      const pass = new Pass(opts.linalg);
      const originals = list.map((n) => floatLinear(model, n));
      pass.recorders = originals.map((lin) => new Recorder(lin, pass));
      for (const r of pass.recorders) model.replaceLinear(r.name, r);
      try {
        inps.forEach((x, s) => {
          pass.sample = s;
          pass.seen = 0;
          try {
            model.forwardLayer(l, x, 1, samples[s].length);
          } catch (e) {
            if (e !== STOP) throw e;
          }
          if (pass.seen !== pass.recorders.length) throw new GptqError(`GPTQ: layer ${l} did not run every linear of [${list.join(', ')}]`);
        });
      } finally {
        originals.forEach((lin) => model.replaceLinear(lin.name, lin));
      }
      // The forwards' time is shared by the linears of the pass.
      const passMs = (performance.now() - tPass) / list.length;
      for (const r of pass.recorders) {
        signal?.throwIfAborted();
        const t = performance.now();
        const lin = r.inner, name = lin.name, shape: [number, number] = [lin.outFeatures, lin.inFeatures];
        const w = lin.weight.toF32();
        const H = r.group.acc.H;
        const s: GptqLayerStats = { name, shape, method, ms: 0 };
        const rtn = method === 'rtn' || errors ? rtnQuantize(w, shape, opts, name) : null;
        let chosen: { codes: GptqCodes; dequantized: Float32Array };
        if (method === 'gptq') {
          const runOpts = { ...opts, name };
          r.group.prepared ??= prepareHessian(H, shape[1], runOpts);
          const g = gptqQuantizePrepared(w, shape, r.group.prepared, runOpts);
          chosen = g;
          s.gptqLoss = g.loss;
          s.dampPercent = g.dampPercent;
          if (errors) s.gptqError = outputError(w, g.dequantized, H, shape[0], shape[1], opts.linalg);
        } else {
          chosen = rtn!;
        }
        if (errors) s.rtnError = outputError(w, rtn!.dequantized, H, shape[0], shape[1], opts.linalg);
        replace(lin, chosen.dequantized);
        codes.set(name, chosen.codes);
        s.ms = passMs + performance.now() - t;
        report(s);
      }
    }
    if (l + 1 < nLayers) inps.forEach((x, s) => { inps[s] = model.forwardLayer(l, x, 1, samples[s].length); });
  }
  return result();
}

function stripRun(o: GptqRunOptions): GptqOptions {
  return { bits: o.bits, groupSize: o.groupSize, sym: o.sym, descAct: o.descAct, staticGroups: o.staticGroups, dampPercent: o.dampPercent, blockSize: o.blockSize };
}
