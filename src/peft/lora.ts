// LoRA (../shared/spec/FORMATS.md §6.3): LoraLinear wraps any LinearLike (float or quantized) and adds
// scaling·B(A(x)) for each active adapter; the model file never sees the swap. PeftModel puts LoraLinears on the
// modules a LoraConfig targets, holds several named adapters, switches, merges and unmerges them, and saves / loads
// PEFT's adapter_config.json + adapter_model.safetensors. Training (src/train/) reads the adapters' A and B arrays and
// writes their gradients.
import { existsSync, mkdirSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from '../backend/backend.js';
import { readSafetensors, writeSafetensorsTemp } from '../io/safetensors.js';
import type { CausalLM, DecoderLM } from '../models/model.js';
import { LayerNorm, Linear, type LinearLike } from '../nn/layers.js';
import { QuantLinear, quantLinear } from '../nn/quant.js';
import { dequantizeWeight, type QuantizedWeight } from '../quant/qweight.js';
import { Tensor } from '../tensor/tensor.js';
import { commitTemp, writeFileTemp } from '../util/fs.js';
import { PyRandom } from '../util/pyrandom.js';
import { LoraConfig, PeftError, type LoraConfigOptions } from './config.js';
import { requantizeLike } from './requantize.js';

export { LoraConfig, PeftError };

/** One adapter on one module: A [r, in], B [out, r] in float32 (PEFT's default adapter dtype). */
export interface LoraAdapter {
  r: number;
  scaling: number;
  dropout: number;
  A: Float32Array;
  B: Float32Array;
  /** lora_B.bias [out] (lora_bias), else null. */
  bias: Float32Array | null;
}

/** uniform(−bound, bound) and normal draws from a seeded MT19937 (PyRandom), so an init is reproducible. */
class InitRng {
  private readonly r: PyRandom;
  constructor(seed: number) { this.r = new PyRandom(seed); }
  uniform(bound: number): number { return (this.r.getrandbits(32) / 2 ** 32 * 2 - 1) * bound; }
  normal(std: number): number {
    const u1 = (this.r.getrandbits(32) + 0.5) / 2 ** 32, u2 = this.r.getrandbits(32) / 2 ** 32;
    return std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
}

export class LoraLinear implements LinearLike {
  readonly adapters = new Map<string, LoraAdapter>();
  /** Adapters added in forward (PEFT's active_adapters). */
  active: string[] = [];
  /** Adapters folded into the base weight (merge); they are not added again in forward. */
  readonly merged: string[] = [];
  /** disable_adapter: forward runs the base alone. */
  disabled = false;

  constructor(public base: LinearLike, readonly backend: Backend) {}
  get name(): string { return this.base.name; }
  get inFeatures(): number { return this.base.inFeatures; }
  get outFeatures(): number { return this.base.outFeatures; }

  addAdapter(name: string, r: number, scaling: number, dropout: number, init: boolean | 'gaussian', rng: InitRng, loraBias: boolean): LoraAdapter {
    const K = this.inFeatures, N = this.outFeatures;
    const A = new Float32Array(r * K), B = new Float32Array(N * r);
    // PEFT: kaiming_uniform_(A, a=√5) = U(±1/√in); gaussian: N(0, 1/r); B zero. init false: B random too.
    if (init === 'gaussian') for (let i = 0; i < A.length; i++) A[i] = rng.normal(1 / r);
    else for (let i = 0; i < A.length; i++) A[i] = rng.uniform(1 / Math.sqrt(K));
    if (init === false) for (let i = 0; i < B.length; i++) B[i] = rng.uniform(1 / Math.sqrt(r));
    const a: LoraAdapter = { r, scaling, dropout, A, B, bias: loraBias ? new Float32Array(N) : null };
    this.adapters.set(name, a);
    return a;
  }

  /** Bumped by markChanged: device copies of the adapters older than this are made again. */
  private version = 0;
  private readonly deviceCopies = new WeakMap<LoraAdapter, { version: number; A: Tensor; Bs: Tensor; sBias: Tensor<'F32'> | null }>();

  /**
   * An adapter's A, B or bias changed in place (an optimizer step, a direct edit): a device backend uploads them again
   * at the next forward. The host backends read the arrays themselves and need no call.
   */
  markChanged(): void { this.version++; }

  /** A, scaling·B and scaling·bias on the backend's device, uploaded once per version. */
  private deviceCopy(a: LoraAdapter) {
    const hit = this.deviceCopies.get(a);
    if (hit && hit.version === this.version) return hit;
    const be = this.backend, s = a.scaling;
    if (hit) be.release?.(hit.A, hit.Bs, hit.sBias);
    const c = {
      version: this.version,
      A: be.upload(Tensor.f32([a.r, this.inFeatures], a.A)),
      Bs: be.upload(Tensor.f32([this.outFeatures, a.r], scaled(a.B, s))),
      sBias: a.bias ? be.upload(Tensor.f32([this.outFeatures], scaled(a.bias, s))) : null,
    };
    this.deviceCopies.set(a, c);
    return c;
  }

  forward(x: Tensor<'F32'>): Tensor<'F32'> {
    const y = this.base.forward(x);
    if (this.disabled) return y;
    const M = x.numel / this.inFeatures, N = this.outFeatures;
    for (const name of this.active) {
      if (this.merged.includes(name)) continue;
      const a = this.adapters.get(name)!;
      if (this.backend.device !== 'cpu') {
        // On a device: y += (x·Aᵀ)·(s·B)ᵀ + s·bias with the adapter's device copies (the scaling folded into B).
        const be = this.backend, c = this.deviceCopy(a), t = be.empty('F32', [M, a.r]), d = be.empty('F32', [M, N]);
        be.matmul(x.reshape([M, this.inFeatures]), c.A, null, t);
        be.matmul(t, c.Bs, c.sBias, d);
        be.add(y.reshape([M, N]), d, y.reshape([M, N]));
        be.release?.(t, d);
        continue;
      }
      const t = Tensor.zeros('F32', [M, a.r]);
      this.backend.matmul(x.reshape([M, this.inFeatures]), Tensor.f32([a.r, this.inFeatures], a.A), null, t);
      const d = Tensor.zeros('F32', [M, N]);
      this.backend.matmul(t, Tensor.f32([N, a.r], a.B), a.bias ? Tensor.f32([N], a.bias) : null, d);
      const Y = y.f32, D = d.f32;
      for (let i = 0; i < Y.length; i++) Y[i] += a.scaling * D[i];
    }
    return y;
  }

  /** ΔW = scaling · B·A, [out, in], in float32. */
  delta(name: string): Float32Array {
    const a = this.adapters.get(name);
    if (!a) throw new PeftError(`${this.name}: no adapter "${name}"`);
    const K = this.inFeatures, N = this.outFeatures, d = new Float32Array(N * K);
    for (let n = 0; n < N; n++) for (let j = 0; j < a.r; j++) {
      const b = a.scaling * a.B[n * a.r + j];
      if (b === 0) continue;
      for (let k = 0; k < K; k++) d[n * K + k] += b * a.A[j * K + k];
    }
    return d;
  }

  /** W ± ΔW into a new base layer (float: same dtype widened to float32; quantized: dequantize, add, requantize). */
  fold(name: string, sign: 1 | -1): void {
    const d = this.delta(name), a = this.adapters.get(name)!;
    const base = this.base;
    if (base instanceof Linear) {
      const w = base.weight.toF32();
      for (let i = 0; i < w.length; i++) w[i] += sign * d[i];
      let bias = base.bias;
      if (a.bias) {
        const b = bias ? bias.f32.slice() : new Float32Array(this.outFeatures);
        for (let i = 0; i < b.length; i++) b[i] += sign * a.scaling * a.bias[i];
        bias = Tensor.f32([b.length], b);
      }
      this.base = new Linear(base.backend, base.name, new Tensor('F32', base.weight.shape, w), bias);
      return;
    }
    if (base instanceof QuantLinear) {
      const qw = base.qweight as QuantizedWeight;
      const w = dequantizeWeight(qw);
      for (let i = 0; i < w.length; i++) w[i] += sign * d[i];
      warnLossy(base.name, qw.format);
      this.base = quantLinear(base.backend, base.name, requantizeLike(qw, w), base.bias);
      return;
    }
    throw new PeftError(`${this.name}: cannot merge into a ${base.constructor.name}`);
  }
}

const warned = new Set<string>();
function warnLossy(name: string, format: string): void {
  if (warned.has(format)) return;
  warned.add(format);
  process.emitWarning(`merging a LoRA adapter into ${format} weights (first: ${name}) dequantizes, adds and quantizes again: the merged model is not exactly base + adapter`, { code: 'LOWBIT_LOSSY_MERGE' });
}

export interface TrainableCount { trainable: number; all: number; percent: number }

/** A causal LM with LoRA adapters on the modules a LoraConfig targets (PEFT's PeftModelForCausalLM). */
export class PeftModel {
  readonly configs = new Map<string, LoraConfig>();
  readonly loras = new Map<string, LoraLinear>();
  activeAdapter = 'default';

  private constructor(readonly model: CausalLM, private readonly baseParams: number) {}

  /** get_peft_model: wraps `model` and adds the adapter `name` (default "default") to every targeted linear. */
  static wrap(model: CausalLM, config: LoraConfig | LoraConfigOptions, opts: { adapterName?: string; seed?: number; baseParams?: number } = {}): PeftModel {
    const p = new PeftModel(model, opts.baseParams ?? countBaseParameters(model));
    p.addAdapter(opts.adapterName ?? 'default', config, opts.seed ?? 0);
    return p;
  }

  /** Adds a named adapter (init per config.initLoraWeights) on the modules the config targets, and makes it active. */
  addAdapter(name: string, config: LoraConfig | LoraConfigOptions, seed = 0): void {
    const cfg = config instanceof LoraConfig ? config : new LoraConfig(config);
    if (this.configs.has(name)) throw new PeftError(`adapter "${name}" already exists`);
    const type = this.model.config.model_type, rng = new InitRng(seed);
    let n = 0;
    for (const [mod, lin] of this.model.linears()) {
      if (!cfg.targets(mod, type)) continue;
      let lora = this.loras.get(mod);
      if (!lora) {
        lora = new LoraLinear(lin, this.model.backend);
        this.model.replaceLinear(mod, lora);
        this.loras.set(mod, lora);
      }
      const { r, scaling } = cfg.rankAndAlpha(mod);
      lora.addAdapter(name, r, scaling, cfg.loraDropout, cfg.initLoraWeights, rng, cfg.loraBias);
      n++;
    }
    if (n === 0) throw new PeftError(`LoraConfig: target_modules ${JSON.stringify(cfg.targetModules)} match no linear layer of this ${type} model`);
    if (cfg.bias !== 'none' || cfg.modulesToSave?.length) {
      if (this.configs.size > 0) throw new PeftError(`adapter "${name}": bias "${cfg.bias}" / modules_to_save train base tensors, which only the first adapter of a model may do here`);
      this.makeBaseTrainable(cfg);
    }
    this.configs.set(name, cfg);
    this.setAdapter(name);
  }

  /**
   * Base tensors trained beside the adapters, by PEFT's state-dict key: biases (bias "all": every linear's and norm's;
   * "lora_only": the LoRA layers'; keys <module>.base_layer.bias for a LoRA layer) and modules_to_save (float linear
   * layers, trained whole: <module>.weight / .bias). Each is a float32 copy the model now holds; `decay` says whether
   * weight decay applies (not to biases).
   */
  readonly trainableBase = new Map<string, { values: Float32Array; decay: boolean; copy: boolean }>();

  private makeBaseTrainable(cfg: LoraConfig): void {
    const key = (n: string) => `base_model.model.${n}`;
    const biasCopy = (b: Tensor<'F32'> | null, k: string) => {
      if (!b) return null;
      const t = Tensor.f32([b.numel], b.f32);
      this.trainableBase.set(k, { values: t.f32, decay: false, copy: false });
      return t;
    };
    const withBias = (l: LinearLike, k: string): LinearLike => {
      if (l instanceof Linear) return l.bias ? new Linear(l.backend, l.name, l.weight, biasCopy(l.bias, k)) : l;
      if (l instanceof QuantLinear) return l.bias ? quantLinear(l.backend, l.name, l.qweight as QuantizedWeight, biasCopy(l.bias, k)) : l;
      return l;
    };
    const saved = cfg.modulesToSave ?? [];
    for (const [mod, lin] of this.model.linears()) {
      if (!saved.some((t) => mod === t || mod.endsWith(`.${t}`))) continue;
      if (this.loras.has(mod)) throw new PeftError(`modules_to_save: ${mod} is also a LoRA target`);
      if (!(lin instanceof Linear)) throw new PeftError(`modules_to_save: ${mod} is not a float linear layer (a quantized layer cannot be trained whole)`);
      const w = new Tensor('F32', lin.weight.shape, lin.weight.toF32());   // toF32 already copies
      this.trainableBase.set(key(`${mod}.weight`), { values: w.f32, decay: true, copy: true });
      const b = lin.bias ? Tensor.f32([lin.bias.numel], lin.bias.f32) : null;
      if (b) this.trainableBase.set(key(`${mod}.bias`), { values: b.f32, decay: false, copy: true });
      this.model.replaceLinear(mod, new Linear(lin.backend, lin.name, w, b));
    }
    if (saved.length && ![...this.trainableBase.values()].some((t) => t.copy)) throw new PeftError(`modules_to_save ${JSON.stringify(saved)} name no linear layer of this model`);
    if (cfg.bias === 'none') return;
    for (const [mod, lin] of this.model.linears()) {
      const lora = this.loras.get(mod);
      if (lora) lora.base = withBias(lora.base, key(`${mod}.base_layer.bias`));
      else if (cfg.bias === 'all' && !this.trainableBase.has(key(`${mod}.weight`))) {
        const nl = withBias(lin, key(`${mod}.bias`));
        if (nl !== lin) this.model.replaceLinear(mod, nl);
      }
    }
    if (cfg.bias !== 'all') return;
    const m = this.model as CausalLM & Partial<Pick<DecoderLM, 'layerNorms' | 'setLayerNorm'>> & { layers?: unknown[]; finalNorm?: LayerNorm | null };
    const ln = (n: LayerNorm) => new LayerNorm(n.backend, n.name, n.weight, biasCopy(n.bias, key(`${n.name}.bias`))!, n.eps);
    for (let l = 0; l < (m.layers?.length ?? 0); l++) {
      for (const [k, n] of Object.entries(m.layerNorms!(l))) if (n instanceof LayerNorm) m.setLayerNorm!(l, k, ln(n));
    }
    if (m.finalNorm instanceof LayerNorm) m.finalNorm = ln(m.finalNorm);
  }

  /** Makes `name` the one active adapter. */
  setAdapter(name: string): void {
    if (!this.configs.has(name)) throw new PeftError(`no adapter "${name}" (have: ${[...this.configs.keys()].join(', ')})`);
    this.activeAdapter = name;
    for (const l of this.loras.values()) l.active = l.adapters.has(name) ? [name] : [];
  }

  /** Runs fn with every adapter off (PEFT's disable_adapter context). */
  withAdaptersDisabled<T>(fn: () => T): T {
    for (const l of this.loras.values()) l.disabled = true;
    try { return fn(); } finally { for (const l of this.loras.values()) l.disabled = false; }
  }

  /** PEFT's get_nb_trainable_parameters: the active adapter's A and B (and lora biases); all = those plus the base's. */
  trainableParameters(): TrainableCount {
    let trainable = 0;
    for (const l of this.loras.values()) {
      const a = l.adapters.get(this.activeAdapter);
      if (a) trainable += a.A.length + a.B.length + (a.bias?.length ?? 0);
    }
    let others = 0;
    for (const l of this.loras.values()) for (const [an, a] of l.adapters) if (an !== this.activeAdapter) others += a.A.length + a.B.length + (a.bias?.length ?? 0);
    // Trained base tensors count as trainable; modules_to_save copies also add to all (PEFT keeps the original too).
    let copies = 0;
    const lora = trainable;
    for (const t of this.trainableBase.values()) {
      trainable += t.values.length;
      if (t.copy) copies += t.values.length;
    }
    const all = this.baseParams + lora + others + copies;
    return { trainable, all, percent: (100 * trainable) / all };
  }

  /** The line PEFT prints: "trainable params: 1,234 || all params: 5,678 || trainable%: 21.7330". */
  printTrainableParameters(log: (s: string) => void = console.log): string {
    const c = this.trainableParameters();
    const s = `trainable params: ${c.trainable.toLocaleString('en-US')} || all params: ${c.all.toLocaleString('en-US')} || trainable%: ${c.percent.toFixed(4)}`;
    log(s);
    return s;
  }

  /** Folds the active adapter into the base weights (dequantize, add, requantize on a quantized base, with a warning). */
  merge(name = this.activeAdapter): void {
    for (const l of this.loras.values()) {
      if (!l.adapters.has(name) || l.merged.includes(name)) continue;
      l.fold(name, 1);
      l.merged.push(name);
    }
  }

  unmerge(name = this.activeAdapter): void {
    for (const l of this.loras.values()) {
      const i = l.merged.indexOf(name);
      if (i < 0) continue;
      l.fold(name, -1);
      l.merged.splice(i, 1);
    }
  }

  /** merge_and_unload: merges the active adapter and puts the plain base layers back; returns the model. */
  mergeAndUnload(): CausalLM {
    this.merge();
    for (const [mod, l] of this.loras) this.model.replaceLinear(mod, l.base);
    this.loras.clear();
    return this.model;
  }

  /** PEFT's state-dict keys of one adapter: base_model.model.<module>.lora_A.weight [r, in] / lora_B.weight [out, r]. */
  adapterTensors(name = this.activeAdapter): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [mod, l] of this.loras) {
      const a = l.adapters.get(name);
      if (!a) continue;
      out.set(`base_model.model.${mod}.lora_A.weight`, Tensor.f32([a.r, l.inFeatures], a.A));
      out.set(`base_model.model.${mod}.lora_B.weight`, Tensor.f32([l.outFeatures, a.r], a.B));
      if (a.bias) out.set(`base_model.model.${mod}.lora_B.bias`, Tensor.f32([l.outFeatures], a.bias));
    }
    if (name === [...this.configs.keys()][0]) for (const [k, t] of this.trainableBase) out.set(k, Tensor.f32([t.values.length], t.values));
    return out;
  }

  /**
   * save_pretrained: adapter_config.json and adapter_model.safetensors in dir (for a non-default adapter name, in
   * dir/<name>, as PEFT does). Both files are written under temp names first and renamed once both are complete.
   */
  saveAdapter(dir: string, name = this.activeAdapter): string {
    const cfg = this.configs.get(name);
    if (!cfg) throw new PeftError(`no adapter "${name}"`);
    const out = name === 'default' ? dir : join(dir, name);
    mkdirSync(out, { recursive: true });
    const wPath = join(out, 'adapter_model.safetensors'), cPath = join(out, 'adapter_config.json');
    const tw = writeSafetensorsTemp(wPath, this.adapterTensors(name), { format: 'pt' });
    const json = cfg.toJsonString();
    const tc = writeFileTemp(cPath, (fd) => { const b = Buffer.from(json, 'utf8'); let o = 0; while (o < b.length) o += writeSync(fd, b, o, b.length - o); });
    commitTemp(tw, wPath);
    commitTemp(tc, cPath);
    return out;
  }

  /**
   * PeftModel.from_pretrained / load_adapter: reads a PEFT adapter folder (any PEFT version) onto `model` as adapter
   * `name`. Shapes and names are checked against the model; a key the model has no module for is an error naming it.
   */
  static fromPretrained(model: CausalLM, dir: string, opts: { adapterName?: string; baseParams?: number } = {}): PeftModel {
    const p = new PeftModel(model, opts.baseParams ?? countBaseParameters(model));
    p.loadAdapter(dir, opts.adapterName ?? 'default');
    return p;
  }

  loadAdapter(dir: string, name = 'default'): void {
    const cPath = join(dir, 'adapter_config.json');
    if (!existsSync(cPath)) throw new PeftError(`${dir}: no adapter_config.json (not a PEFT adapter folder)`);
    let json: unknown;
    try { json = JSON.parse(readFileSync(cPath, 'utf8')); } catch (e) { throw new PeftError(`${cPath}: not JSON (${(e as Error).message})`); }
    const cfg = LoraConfig.fromJson(json, cPath);
    const wPath = join(dir, 'adapter_model.safetensors');
    if (!existsSync(wPath)) throw new PeftError(`${dir}: no adapter_model.safetensors (adapter_model.bin, PyTorch pickles, cannot be read)`);
    const file = readSafetensors(wPath);
    // Start from a zero-initialised adapter on the targeted modules, then fill it from the file.
    this.addAdapter(name, cfg, 0);
    const seen = new Set<string>();
    for (const key of file.names()) {
      const base = this.trainableBase.get(key);
      if (base) {
        const t = file.get(key).toF32();
        if (t.length !== base.values.length) throw new PeftError(`${wPath}: "${key}" has ${t.length} values, the model's ${base.values.length}`);
        base.values.set(t);
        continue;
      }
      const m = /^base_model\.model\.(.+)\.lora_([AB])(?:\.[^.]+)?\.(weight|bias)$/.exec(key);
      if (!m) throw new PeftError(`${wPath}: tensor "${key}" is neither a LoRA A/B weight nor a tensor that the adapter's bias "${cfg.bias}" / modules_to_save ${JSON.stringify(cfg.modulesToSave)} train in this model`);
      const [, mod, which, kind] = m;
      const l = this.loras.get(mod);
      const a = l?.adapters.get(name);
      if (!l || !a) throw new PeftError(`${wPath}: "${key}" names module "${mod}", which the adapter's target_modules do not put a LoRA layer on in this model`);
      const t = file.get(key).toF32();
      const want = kind === 'bias' ? l.outFeatures : which === 'A' ? a.r * l.inFeatures : l.outFeatures * a.r;
      if (t.length !== want) throw new PeftError(`${wPath}: "${key}" has ${t.length} values; ${mod} with r=${a.r} needs ${want}`);
      if (kind === 'bias') { if (!a.bias) a.bias = new Float32Array(l.outFeatures); a.bias.set(t); }
      else (which === 'A' ? a.A : a.B).set(t);
      seen.add(`${mod}.${which}${kind === 'bias' ? '.bias' : ''}`);
    }
    for (const mod of this.loras.keys()) {
      if (!this.loras.get(mod)!.adapters.has(name)) continue;
      for (const w of ['A', 'B']) if (!seen.has(`${mod}.${w}`)) throw new PeftError(`${wPath}: no lora_${w} weight for ${mod}`);
    }
  }
}

/**
 * The base model's parameter count as PEFT counts it (named_parameters, tied weights once): float linears and
 * bitsandbytes layers count out·in (+ bias; a 4-bit layer's packed bytes count twice, i.e. out·in), GPTQ/AWQ layers
 * nothing (their tensors are buffers), plus embeddings, norms and an untied lm_head.
 */
export function countBaseParameters(model: CausalLM): number {
  let n = 0;
  const seen = new Set<unknown>();
  // A tensor's identity: its device storage, or its host array (tied weights share either).
  const key = (t: Tensor) => t.storage ?? t.data;
  for (const [, lin] of model.linears()) {
    const l = lin instanceof LoraLinear ? lin.base : lin;
    if (l instanceof Linear) {
      if (seen.has(key(l.weight))) continue;
      seen.add(key(l.weight));
      n += l.weight.numel + (l.bias?.numel ?? 0);
    } else if (l instanceof QuantLinear) {
      const qw = l.qweight as QuantizedWeight;
      if (qw.format === 'gptq' || qw.format === 'awq') continue;
      n += qw.shape[0] * qw.shape[1] + (l.bias?.numel ?? 0);
    }
  }
  const extra = (model as CausalLM & { nonLinearParameters?: () => Tensor[] }).nonLinearParameters?.() ?? [];
  for (const t of extra) if (!seen.has(key(t))) { seen.add(key(t)); n += t.numel; }
  return n;
}

/** s·v as a new array (a plain loop: Float32Array.from with a map function walks an iterator, ~50× slower). */
export function scaled(v: Float32Array, s: number): Float32Array {
  const out = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) out[i] = s * v[i];
  return out;
}

/** get_peft_model(model, config): PeftModel.wrap. */
export function getPeftModel(model: CausalLM, config: LoraConfig | LoraConfigOptions, opts: { adapterName?: string; seed?: number } = {}): PeftModel {
  return PeftModel.wrap(model, config, opts);
}

/**
 * PEFT's prepare_model_for_kbit_training: the base is frozen and computes in float32 here already (quantized layers
 * dequantize to float32; norms and embeddings are float32), so what remains is gradient checkpointing, on by default.
 */
export function prepareModelForKbitTraining<M extends CausalLM>(model: M, opts: { useGradientCheckpointing?: boolean } = {}): M {
  if (opts.useGradientCheckpointing ?? true) (model as unknown as { gradientCheckpointingEnable?: () => void }).gradientCheckpointingEnable?.();
  return model;
}
