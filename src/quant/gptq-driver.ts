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
import { cudaBackend, cudaScope } from '../backend/cuda/index.js';
import type { OnProgress, Progress } from '../util/progress.js';
import { checkGptqOptions, GptqError, gptqQuantizePrepared, HessianAccumulator, outputError, prepareHessian, rtnQuantize, type GptqRunOptions, type PreparedHessian } from './gptq.js';
import { CudaHessian, cudaWeightF32, gptqQuantizeCuda, outputErrorCuda, prepareHessianCuda, rtnQuantizeCuda, type CudaPreparedHessian } from './gptq-cuda.js';
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

/**
 * A Hessian being accumulated and, once a linear of its group needs it, factorized: on the host (gptq.ts) or on the
 * device (gptq-cuda.ts).
 */
interface Hessian { add(x: Tensor<'F32'>, tokens: number): void; release(): void }

/**
 * Where the algorithm's arrays live, by the model's backend: the host (src/quant/gptq.ts over Float32Arrays, the
 * native or ref linear algebra) or the GPU (src/quant/gptq-cuda.ts: activations, Hessians and weights stay on the
 * device; only codes and grids come down). Weights and dequantized weights are F32 tensors [N, K] on that side.
 */
interface GptqMath {
  hessian(K: number): Hessian;
  weight(lin: Linear): Tensor<'F32'>;
  gptq(w: Tensor<'F32'>, shape: [number, number], h: Hessian, opts: GptqRunOptions): { codes: GptqCodes; dequantized: Tensor<'F32'>; loss: number; dampPercent: number };
  rtn(w: Tensor<'F32'>, shape: [number, number], opts: GptqRunOptions, name: string): { codes: GptqCodes; dequantized: Tensor<'F32'> };
  outputError(w: Tensor<'F32'>, wq: Tensor<'F32'>, h: Hessian, N: number, K: number): number;
  release(...ts: (Tensor | null)[]): void;
  /** fn, with what its ops allocated freed after, except keep(result) (cuda; the host leaves it to the collector). */
  scoped<T>(fn: () => T, keep: (result: T) => readonly Tensor[]): T;
}

class HostHessian implements Hessian {
  readonly acc: HessianAccumulator;
  prepared?: PreparedHessian;
  constructor(K: number, linalg: 'native' | 'ref' | undefined) { this.acc = new HessianAccumulator(K, linalg); }
  add(x: Tensor<'F32'>, tokens: number): void { this.acc.add(x.f32, tokens, 1); }
  release(): void {}
}

function hostMath(linalg: 'native' | 'ref' | undefined): GptqMath {
  const host = (shape: [number, number], a: Float32Array) => new Tensor('F32', shape, a);
  return {
    hessian: (K) => new HostHessian(K, linalg),
    weight: (lin) => host([lin.outFeatures, lin.inFeatures], lin.weight.toF32()),
    gptq(w, shape, h, opts) {
      const hh = h as HostHessian;
      hh.prepared ??= prepareHessian(hh.acc.H, shape[1], opts);
      const r = gptqQuantizePrepared(w.f32, shape, hh.prepared, opts);
      return { ...r, dequantized: host(shape, r.dequantized) };
    },
    rtn(w, shape, opts, name) {
      const r = rtnQuantize(w.f32, shape, opts, name);
      return { codes: r.codes, dequantized: host(shape, r.dequantized) };
    },
    outputError: (w, wq, h, N, K) => outputError(w.f32, wq.f32, (h as HostHessian).acc.H, N, K, linalg),
    release() {},
    scoped: (fn) => fn(),
  };
}

class DeviceHessian implements Hessian {
  readonly acc: CudaHessian;
  prepared?: CudaPreparedHessian;
  constructor(K: number) { this.acc = new CudaHessian(K); }
  add(x: Tensor<'F32'>, tokens: number): void { this.acc.add(x, tokens, 1); }
  release(): void { this.acc.release(); this.prepared?.release(); }
}

const cudaMath: GptqMath = {
  hessian: (K) => new DeviceHessian(K),
  weight: (lin) => cudaWeightF32(lin.weight, lin.name),
  gptq(w, shape, h, opts) {
    const dh = h as DeviceHessian;
    dh.prepared ??= prepareHessianCuda(dh.acc.H, shape[1], opts);
    return gptqQuantizeCuda(w, shape, dh.prepared, opts);
  },
  rtn: (w, shape, opts, name) => rtnQuantizeCuda(w, shape, opts, name),
  outputError: (w, wq, h, N, K) => outputErrorCuda(w, wq, (h as DeviceHessian).acc.H, N, K),
  release(...ts) { cudaBackend.release!(...ts); },
  scoped: (fn, keep) => cudaScope(fn, keep),
};

/** Linears that read the very same input tensor (q/k/v, gate/up) share one Hessian and one factorization. */
interface InputGroup { acc: Hessian; input: unknown; sample: number }

/** What makes two inputs the same tensor: its host array, or its device storage. */
const identity = (x: Tensor): unknown => (x.device === 'cpu' ? x.data : x.storage);

class Pass {
  recorders: Recorder[] = [];
  groups: InputGroup[] = [];
  sample = -1;
  seen = 0;
  constructor(private readonly math: GptqMath) {}
  record(r: Recorder, x: Tensor<'F32'>): void {
    const tokens = x.numel / r.inFeatures, id = identity(x);
    if (!r.group) {
      // First sample: join the group of a linear that already read this tensor, else open one.
      const g = this.groups.find((g) => g.sample === this.sample && g.input === id);
      if (g) { r.group = g; return; }
      r.group = { acc: this.math.hessian(r.inFeatures), input: null, sample: -1 };
      this.groups.push(r.group);
    }
    const g = r.group;
    if (g.sample === this.sample) {
      if (g.input !== id) throw new GptqError(`${r.name}: its input differs from the other linears of its group in sample ${this.sample}`);
      return;
    }
    g.acc.add(x, tokens);
    g.input = id;
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
  const math = model.backend.device === 'cuda' ? cudaMath : hostMath(opts.linalg);
  const replace = (lin: Linear, deq: Tensor<'F32'>) => {
    model.replaceLinear(lin.name, new Linear(model.backend, lin.name, deq, lin.bias));
  };
  const result = (): GptqModelResult => ({ codes, stats, options: stripRun(opts), method, float: floatNames, ms: performance.now() - t0 });

  if (!samples.length || (method === 'rtn' && !errors)) {           // RTN needs no calibration
    for (const name of lists.flat(2)) {
      signal?.throwIfAborted();
      const t = performance.now(), lin = floatLinear(model, name);
      const w = math.weight(lin);
      const r = math.rtn(w, [lin.outFeatures, lin.inFeatures], opts, name);
      math.release(w);
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
      const pass = new Pass(math);
      const originals = list.map((n) => floatLinear(model, n));
      pass.recorders = originals.map((lin) => new Recorder(lin, pass));
      for (const r of pass.recorders) model.replaceLinear(r.name, r);
      try {
        inps.forEach((x, s) => {
          pass.sample = s;
          pass.seen = 0;
          math.scoped(() => {
            try {
              model.forwardLayer(l, x, 1, samples[s].length);
            } catch (e) {
              if (e !== STOP) throw e;
            }
          }, () => []);
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
        const w = math.weight(lin);
        const h = r.group.acc;
        const s: GptqLayerStats = { name, shape, method, ms: 0 };
        const rtn = method === 'rtn' || errors ? math.rtn(w, shape, opts, name) : null;
        let chosen: { codes: GptqCodes; dequantized: Tensor<'F32'> };
        if (method === 'gptq') {
          const g = math.gptq(w, shape, h, { ...opts, name });
          chosen = g;
          s.gptqLoss = g.loss;
          s.dampPercent = g.dampPercent;
          if (errors) s.gptqError = math.outputError(w, g.dequantized, h, shape[0], shape[1]);
        } else {
          chosen = rtn!;
        }
        if (errors) s.rtnError = math.outputError(w, rtn!.dequantized, h, shape[0], shape[1]);
        math.release(w, rtn && rtn !== chosen ? rtn.dequantized : null);
        replace(lin, chosen.dequantized);
        codes.set(name, chosen.codes);
        s.ms = passMs + performance.now() - t;
        report(s);
      }
      for (const g of pass.groups) g.acc.release();
    }
    if (l + 1 < nLayers) {
      inps.forEach((x, s) => {
        inps[s] = math.scoped(() => model.forwardLayer(l, x, 1, samples[s].length), (y) => [y]);
        math.release(x);
      });
    }
  }
  math.release(...inps);
  return result();
}

function stripRun(o: GptqRunOptions): GptqOptions {
  return { bits: o.bits, groupSize: o.groupSize, sym: o.sym, descAct: o.descAct, staticGroups: o.staticGroups, dampPercent: o.dampPercent, blockSize: o.blockSize };
}
