// A Trainer in the manner of transformers' (issue 11): TrainingArguments with HF's names and defaults (camelCase, or
// snake_case from JSON), AdamW, gradient accumulation over micro-batches with every token weighted the same
// (num_items_in_batch), clipping, transformers' schedules, logging, atomic checkpoints and resume with the same loss
// curve, trainer_state.json, a loss CSV and an SVG loss curve. It trains the active LoRA adapter of a PeftModel.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { CausalLM, DecoderLM } from '../models/model.js';
import type { PeftModel } from '../peft/lora.js';
import { Tensor } from '../tensor/tensor.js';
import { fsyncDir, tempTag, writeFileAtomic } from '../util/fs.js';
import { PyRandom } from '../util/pyrandom.js';
import { lossChart } from './chart.js';
import { collate, type TrainExample } from './data.js';
import { TrainEngine } from './engine.js';
import { CudaTrainEngine } from './device-engine.js';
import { makeFullyTrainable, type FullParam } from './full.js';
import { AdamW, clipGradNorm, lrLambda, SCHEDULERS, type Param, type SchedulerType } from './optim.js';

export class TrainerError extends Error { override name = 'TrainerError'; }

export interface TrainingArgumentsOptions {
  outputDir: string;
  perDeviceTrainBatchSize?: number;
  gradientAccumulationSteps?: number;
  learningRate?: number;
  weightDecay?: number;
  adamBeta1?: number;
  adamBeta2?: number;
  adamEpsilon?: number;
  maxGradNorm?: number;
  numTrainEpochs?: number;
  /** > 0 overrides numTrainEpochs. */
  maxSteps?: number;
  lrSchedulerType?: SchedulerType;
  warmupSteps?: number;
  warmupRatio?: number;
  loggingSteps?: number;
  /** 0: no intermediate checkpoints. */
  saveSteps?: number;
  seed?: number;
  gradientCheckpointing?: boolean;
}

const DEFAULTS: Required<Omit<TrainingArgumentsOptions, 'outputDir'>> = {
  perDeviceTrainBatchSize: 8, gradientAccumulationSteps: 1, learningRate: 5e-5, weightDecay: 0, adamBeta1: 0.9, adamBeta2: 0.999,
  adamEpsilon: 1e-8, maxGradNorm: 1, numTrainEpochs: 3, maxSteps: -1, lrSchedulerType: 'linear', warmupSteps: 0, warmupRatio: 0,
  loggingSteps: 500, saveSteps: 500, seed: 42, gradientCheckpointing: false,
};

export type TrainingArguments = Required<TrainingArgumentsOptions>;

/** Complete and check TrainingArguments (camelCase or transformers' snake_case keys). */
export function trainingArguments(o: TrainingArgumentsOptions | Record<string, unknown>): TrainingArguments {
  const out: Record<string, unknown> = { ...DEFAULTS };
  for (const [k, v] of Object.entries(o)) {
    const key = k.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
    if (!(key in DEFAULTS) && key !== 'outputDir') throw new TrainerError(`TrainingArguments: unknown option "${k}"`);
    if (v !== undefined) out[key] = v;
  }
  const a = out as TrainingArguments;
  const bad = (m: string) => { throw new TrainerError(`TrainingArguments: ${m}`); };
  if (typeof a.outputDir !== 'string' || !a.outputDir) bad('outputDir is required');
  for (const k of ['perDeviceTrainBatchSize', 'gradientAccumulationSteps', 'loggingSteps'] as const) if (!(Number.isInteger(a[k]) && a[k] >= 1)) bad(`${k} must be a positive integer, got ${a[k]}`);
  for (const k of ['warmupSteps', 'saveSteps'] as const) if (!(Number.isInteger(a[k]) && a[k] >= 0)) bad(`${k} must be a non-negative integer, got ${a[k]}`);
  if (!(Number.isInteger(a.maxSteps) && (a.maxSteps === -1 || a.maxSteps >= 1))) bad(`maxSteps must be -1 or a positive integer, got ${a.maxSteps}`);
  if (!(a.learningRate > 0)) bad(`learningRate must be positive, got ${a.learningRate}`);
  if (!(a.warmupRatio >= 0 && a.warmupRatio < 1)) bad(`warmupRatio must be in [0, 1), got ${a.warmupRatio}`);
  if (!SCHEDULERS.includes(a.lrSchedulerType)) bad(`lrSchedulerType must be one of ${SCHEDULERS.join(', ')}, got "${a.lrSchedulerType}"`);
  if (!(a.numTrainEpochs > 0)) bad(`numTrainEpochs must be positive, got ${a.numTrainEpochs}`);
  return a;
}

export interface LogEntry { step: number; epoch: number; loss: number; learningRate: number; gradNorm: number; tokensPerSec: number }

export interface TrainResult { globalStep: number; logHistory: LogEntry[]; resumedFrom: number | null; trainSeconds: number; tokens: number }

export interface TrainerOptions {
  /** LoRA: the PeftModel whose active adapter trains (with any base tensors its config trains). */
  peft?: PeftModel;
  /** Full fine-tuning instead: every weight of this float model trains (src/train/full.ts); saved as model.safetensors. */
  model?: CausalLM;
  args: TrainingArgumentsOptions | Record<string, unknown>;
  trainDataset: TrainExample[];
  /** Padding id of the collator (the tokenizer's pad, else its EOS). */
  padId: number;
  /** Called at every logging step (a CLI prints it); the default prints nothing. */
  onLog?: (e: LogEntry, total: number) => void;
  /** Called after every optimizer step (progress bars). */
  onStep?: (step: number, total: number) => void;
  /**
   * Knowledge distillation: loss = (1 − alpha)·CE + alpha·τ²·KL(teacher ‖ student) on the softened logits (τ =
   * temperature). The teacher must share the student's vocabulary.
   */
  teacher?: { model: CausalLM; alpha?: number; temperature?: number };
}

export class Trainer {
  readonly args: TrainingArguments;
  /** TrainEngine on the host backends; CudaTrainEngine for a model on the cuda backend (same surface). */
  readonly engine: TrainEngine | CudaTrainEngine;
  readonly params: Param[];
  readonly optimizer: AdamW;
  readonly maxSteps: number;
  readonly warmup: number;
  readonly model: DecoderLM;
  /** Full fine-tuning: every trained tensor by HF name; null for LoRA. */
  readonly full: Map<string, FullParam> | null;
  private readonly batchesPerEpoch: number;

  constructor(private readonly o: TrainerOptions) {
    this.args = trainingArguments(o.args);
    const a = this.args;
    if (!o.trainDataset.length) throw new TrainerError('Trainer: the training dataset is empty');
    if (!o.peft === !o.model) throw new TrainerError('Trainer: give either peft (LoRA) or model (full fine-tuning)');
    const model = (o.peft?.model ?? o.model) as DecoderLM;
    this.model = model;
    this.full = o.model ? makeFullyTrainable(model) : null;
    const trainable = new Map<Float32Array, Float32Array>(), baseParams: Param[] = [];
    for (const [k, t] of this.full ?? o.peft!.trainableBase) {
      const g = new Float32Array(t.values.length);
      trainable.set(t.values, g);
      baseParams.push({ name: k, p: t.values, g, decay: t.decay });
    }
    const eo = { gradientCheckpointing: a.gradientCheckpointing || model.gradientCheckpointing, training: true, seed: a.seed, trainable };
    this.engine = model.backend.device === 'cuda' ? new CudaTrainEngine(model, eo) : new TrainEngine(model, eo);
    this.engine.zeroGrad();
    this.params = [];
    for (const [l, g] of this.engine.grads) {
      const ad = l.adapters.get(o.peft!.activeAdapter)!;
      this.params.push({ name: `${l.name}.lora_A`, p: ad.A, g: g.dA, decay: true }, { name: `${l.name}.lora_B`, p: ad.B, g: g.dB, decay: true });
      if (ad.bias && g.dBias) this.params.push({ name: `${l.name}.lora_B.bias`, p: ad.bias, g: g.dBias, decay: false });
    }
    this.params.push(...baseParams);
    if (!this.params.length) throw new TrainerError('Trainer: the model has no active LoRA adapter (or trainable tensor) to train');
    this.optimizer = new AdamW(this.params, { lr: a.learningRate, betas: [a.adamBeta1, a.adamBeta2], eps: a.adamEpsilon, weightDecay: a.weightDecay });
    // On cuda the adapters, their gradients and the AdamW moments stay on the device between steps.
    if (this.engine instanceof CudaTrainEngine) this.engine.attachOptimizer(this.optimizer);
    this.batchesPerEpoch = Math.ceil(o.trainDataset.length / a.perDeviceTrainBatchSize);
    const stepsPerEpoch = Math.max(1, Math.floor(this.batchesPerEpoch / a.gradientAccumulationSteps));
    this.maxSteps = a.maxSteps > 0 ? a.maxSteps : Math.ceil(a.numTrainEpochs * stepsPerEpoch);
    this.warmup = a.warmupSteps > 0 ? a.warmupSteps : Math.ceil(a.warmupRatio * this.maxSteps);
    const t = o.teacher;
    if (t) {
      const tv = t.model.config.vocab_size, sv = model.config.vocab_size;
      if (tv !== sv) throw new TrainerError(`distillation: the teacher's vocabulary (${tv} tokens) is not the student's (${sv}): distillation needs a shared vocabulary (the same tokenizer)`);
      if (!((t.alpha ?? 0.5) >= 0 && (t.alpha ?? 0.5) <= 1)) throw new TrainerError(`distillation: alpha must be in [0, 1], got ${t.alpha}`);
      if (!((t.temperature ?? 2) > 0)) throw new TrainerError(`distillation: temperature must be positive, got ${t.temperature}`);
    }
  }

  /** The examples of micro-batch i (global count): epoch-seeded shuffles, as a sampler with a fixed seed gives. */
  private microBatch(i: number): TrainExample[] {
    const a = this.args, data = this.o.trainDataset;
    const epoch = Math.floor(i / this.batchesPerEpoch), j = i % this.batchesPerEpoch;
    const order = this.orderOf(epoch);
    return order.slice(j * a.perDeviceTrainBatchSize, (j + 1) * a.perDeviceTrainBatchSize).map((k) => data[k]);
  }

  private orders = new Map<number, number[]>();
  private orderOf(epoch: number): number[] {
    let o = this.orders.get(epoch);
    if (!o) {
      o = Array.from({ length: this.o.trainDataset.length }, (_, k) => k);
      const r = new PyRandom(this.args.seed * 1000 + epoch);
      for (let k = o.length - 1; k > 0; k--) { const j = r.randint(0, k); [o[k], o[j]] = [o[j], o[k]]; }
      this.orders.set(epoch, o);
    }
    return o;
  }

  /**
   * Trains to maxSteps. With resume, continues from the newest complete checkpoint in outputDir (or the one named):
   * adapter, optimizer state, step, data order and dropout masks, so the loss curve continues as if never stopped.
   */
  train(opts: { resume?: boolean | string } = {}): TrainResult {
    const a = this.args, GA = a.gradientAccumulationSteps;
    let start = 0, resumedFrom: number | null = null;
    const history: LogEntry[] = [];
    if (opts.resume) {
      const dir = typeof opts.resume === 'string' ? opts.resume : latestCheckpoint(a.outputDir);
      if (dir) {
        const st = this.loadCheckpoint(dir);
        if (this.engine instanceof CudaTrainEngine) this.engine.reloadFromHost();
        start = st.globalStep;
        resumedFrom = start;
        history.push(...st.logHistory);
      }
    }
    const t0 = performance.now();
    let tokens = 0, sinceLog = { loss: 0, steps: 0, tokens: 0, t: performance.now() };
    for (let s = start; s < this.maxSteps; s++) {
      this.engine.zeroGrad();
      this.engine.microStep = s * GA;
      const batches = Array.from({ length: GA }, (_, j) => collate(this.microBatch(s * GA + j), this.o.padId));
      const divisor = batches.reduce((acc, b) => acc + scoredCount(b.labels, b.B, b.T), 0);
      let loss = 0;
      for (const b of batches) {
        const t = this.o.teacher;
        const distill = t ? {
          teacherLogits: t.model.forward({ ids: b.ids, batch: b.B }, b.mask ? { attentionMask: b.mask } : {}).f32,
          alpha: t.alpha ?? 0.5, temperature: t.temperature ?? 2,
        } : undefined;
        loss += this.engine.forwardBackward(b, Math.max(1, divisor), distill).loss;
        tokens += b.B * b.T;
        sinceLog.tokens += b.B * b.T;
      }
      const lr = a.learningRate * lrLambda(a.lrSchedulerType, s, this.warmup, this.maxSteps);
      const dev = this.engine instanceof CudaTrainEngine ? this.engine : null;
      let gradNorm: number;
      if (dev) {
        gradNorm = dev.clipGradNorm(a.maxGradNorm);
        dev.adamwStep(lr);
      } else {
        gradNorm = clipGradNorm(this.params, a.maxGradNorm);
        this.optimizer.step(lr);
      }
      sinceLog.loss += loss;
      sinceLog.steps++;
      this.o.onStep?.(s + 1, this.maxSteps);
      if ((s + 1) % a.loggingSteps === 0 || s + 1 === this.maxSteps) {
        const now = performance.now();
        const e: LogEntry = {
          step: s + 1, epoch: ((s + 1) * GA) / this.batchesPerEpoch, loss: sinceLog.loss / sinceLog.steps, learningRate: lr, gradNorm,
          tokensPerSec: sinceLog.tokens / ((now - sinceLog.t) / 1000),
        };
        history.push(e);
        this.o.onLog?.(e, this.maxSteps);
        sinceLog = { loss: 0, steps: 0, tokens: 0, t: now };
      }
      if (a.saveSteps > 0 && (s + 1) % a.saveSteps === 0 && s + 1 < this.maxSteps) {
        if (this.engine instanceof CudaTrainEngine) this.engine.syncToHost();
        this.saveCheckpoint(s + 1, history);
      }
    }
    const trainSeconds = (performance.now() - t0) / 1000;
    if (this.engine instanceof CudaTrainEngine) this.engine.syncToHost();  // the adapters (and moments) as trained
    this.saveModel(a.outputDir, history);
    return { globalStep: this.maxSteps, logHistory: history, resumedFrom, trainSeconds, tokens };
  }

  /** trainer.save_model: the adapter (PEFT files) or, fully fine-tuned, model.safetensors; trainer_state.json, loss.csv, loss.svg. */
  saveModel(dir: string, history: LogEntry[] = []): void {
    mkdirSync(dir, { recursive: true });
    this.saveWeights(dir);
    this.writeState(dir, this.maxSteps, history);
    writeFileAtomic(join(dir, 'loss.csv'), 'step,epoch,loss,learning_rate,grad_norm,tokens_per_sec\n' +
      history.map((e) => [e.step, e.epoch, e.loss, e.learningRate, e.gradNorm, e.tokensPerSec].join(',')).join('\n') + (history.length ? '\n' : ''));
    writeFileAtomic(join(dir, 'loss.svg'), lossChart(history.map((e) => [e.step, e.loss]), 'training loss'));
  }

  private writeState(dir: string, step: number, history: LogEntry[]): void {
    const a = this.args;
    const state = {
      global_step: step, max_steps: this.maxSteps, epoch: (step * a.gradientAccumulationSteps) / this.batchesPerEpoch,
      logging_steps: a.loggingSteps, save_steps: a.saveSteps, train_batch_size: a.perDeviceTrainBatchSize,
      log_history: history.map((e) => ({ step: e.step, epoch: e.epoch, loss: e.loss, learning_rate: e.learningRate, grad_norm: e.gradNorm, tokens_per_sec: e.tokensPerSec })),
      args: a,
    };
    writeFileAtomic(join(dir, 'trainer_state.json'), JSON.stringify(state, null, 2) + '\n');
  }

  /** checkpoint-N in outputDir, whole or not at all: written in a temp folder, then renamed. */
  saveCheckpoint(step: number, history: LogEntry[]): string {
    const final = join(this.args.outputDir, `checkpoint-${step}`);
    const tmp = `${final}.tmp-${tempTag()}`;
    mkdirSync(tmp, { recursive: true });
    this.saveWeights(tmp);
    const t = new Map<string, Tensor>();
    this.params.forEach((p, i) => {
      t.set(`${p.name}.exp_avg`, Tensor.f32([p.p.length], this.optimizer.m[i]));
      t.set(`${p.name}.exp_avg_sq`, Tensor.f32([p.p.length], this.optimizer.v[i]));
    });
    writeSafetensors(join(tmp, 'optimizer.safetensors'), t, { step: String(this.optimizer.t) });
    this.writeState(tmp, step, history);
    if (existsSync(final)) rmSync(final, { recursive: true, force: true });
    renameSync(tmp, final);
    fsyncDir(this.args.outputDir);
    return final;
  }

  /** The trained tensors: PEFT's adapter files, or model.safetensors (float32, HF names) for full fine-tuning. */
  private saveWeights(dir: string): void {
    if (this.o.peft) { this.o.peft.saveAdapter(dir); return; }
    const t = new Map<string, Tensor>();
    for (const [k, p] of this.full!) t.set(k, Tensor.f32(p.shape, p.values));
    writeSafetensors(join(dir, 'model.safetensors'), t, { format: 'pt' });
  }

  private loadCheckpoint(dir: string): { globalStep: number; logHistory: LogEntry[] } {
    const statePath = join(dir, 'trainer_state.json');
    if (!existsSync(statePath)) throw new TrainerError(`resume: ${dir} has no trainer_state.json`);
    const st = JSON.parse(readFileSync(statePath, 'utf8'));
    if (this.full) {
      const f = readSafetensors(join(dir, 'model.safetensors'));
      for (const [k, p] of this.full) {
        if (!f.has(k)) throw new TrainerError(`resume: ${dir}/model.safetensors has no "${k}"`);
        p.values.set(f.get(k).toF32());
      }
      return this.loadOptimizer(dir, st);
    }
    const w = readSafetensors(join(dir, 'adapter_model.safetensors'));
    for (const [l] of this.engine.grads) {
      const ad = l.adapters.get(this.o.peft!.activeAdapter)!;
      for (const [k, arr] of [['A', ad.A], ['B', ad.B]] as const) {
        const key = `base_model.model.${l.name}.lora_${k}.weight`;
        if (!w.has(key)) throw new TrainerError(`resume: ${dir}/adapter_model.safetensors has no "${key}" (a checkpoint of another adapter?)`);
        arr.set(w.get(key).toF32());
      }
      const bk = `base_model.model.${l.name}.lora_B.bias`;
      if (ad.bias && w.has(bk)) ad.bias.set(w.get(bk).toF32());
    }
    for (const [k, t] of this.o.peft!.trainableBase) {
      if (!w.has(k)) throw new TrainerError(`resume: ${dir}/adapter_model.safetensors has no "${k}"`);
      t.values.set(w.get(k).toF32());
    }
    return this.loadOptimizer(dir, st);
  }

  private loadOptimizer(dir: string, st: { global_step: number; log_history: Record<string, number>[] }): { globalStep: number; logHistory: LogEntry[] } {
    const opt = readSafetensors(join(dir, 'optimizer.safetensors'));
    this.params.forEach((p, i) => {
      this.optimizer.m[i].set(opt.get(`${p.name}.exp_avg`).toF32());
      this.optimizer.v[i].set(opt.get(`${p.name}.exp_avg_sq`).toF32());
    });
    this.optimizer.t = Number(opt.metadata?.step ?? st.global_step);
    const logHistory = (st.log_history as Record<string, number>[]).map((e) => ({ step: e.step, epoch: e.epoch, loss: e.loss, learningRate: e.learning_rate, gradNorm: e.grad_norm, tokensPerSec: e.tokens_per_sec }));
    return { globalStep: st.global_step, logHistory };
  }
}

function scoredCount(labels: Int32Array, B: number, T: number): number {
  let n = 0;
  for (let b = 0; b < B; b++) for (let t = 1; t < T; t++) if (labels[b * T + t] !== -100) n++;
  return n;
}

/** The newest checkpoint-N folder in dir that holds a trainer_state.json (an interrupted write never has one). */
export function latestCheckpoint(dir: string): string | null {
  if (!existsSync(dir)) return null;
  const steps = readdirSync(dir).map((n) => /^checkpoint-(\d+)$/.exec(n)).filter((m): m is RegExpExecArray => !!m)
    .map((m) => Number(m[1])).filter((s) => existsSync(join(dir, `checkpoint-${s}`, 'trainer_state.json'))).sort((x, y) => y - x);
  return steps.length ? join(dir, `checkpoint-${steps[0]}`) : null;
}
