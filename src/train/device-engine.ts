// The training step on the GPU (issue 12, step 6): TrainEngine's forward and backward (./engine.ts) with every
// activation a cuda tensor, for a model loaded with { device: 'cuda' }. The families, the order of the ops and the
// LoRA algebra are engine.ts's; the ops are the cuda backend's inference ops where the forward is the same (embedding,
// linears, RoPE, SiLU·mul, ReLU, residual adds) and native/cuda/train.cu's where the backward needs a record (norms,
// attention's probabilities) or is a backward (cudaTrain, twins of ./ops.ts). The frozen base's input gradient is the
// backend's matmulT / matmulQT (a quantized weight is dequantized on the device for it, then freed).
//
// The adapters live on the device while training: A, B (and a LoRA bias) go up at their first step, their gradients
// accumulate there over a step's micro-batches, and AdamW (adamwStep, clipGradNorm: src/train/optim.ts's arithmetic)
// updates them there with moments kept beside them. The host's arrays are brought up to date by syncToHost (the
// Trainer calls it before it saves; downloadGrads fills `grads` for a caller that wants them); reloadFromHost takes
// host-side changes (a resumed checkpoint). Per step only the batch goes up and the per-row losses come down.
//
// Differences from TrainEngine, by design: LoRA dropout draws its masks from a counter-based hash on the device (the
// same keep probability and scale; not the host's xorshift sequence, so a run with dropout is not bit-for-bit the cpu
// backend's). Not on the device yet (a clear error): trained base tensors (full fine-tuning, bias "all"/"lora_only",
// modules_to_save) and distillation; they run on the cpu backend.
import { cudaBackend, cudaTrain } from '../backend/cuda/index.js';
import { LlamaForCausalLM } from '../models/llama.js';
import type { DecoderLM } from '../models/model.js';
import { OPTForCausalLM } from '../models/opt.js';
import { Linear, type LinearLike } from '../nn/layers.js';
import { QuantLinear } from '../nn/quant.js';
import { LoraLinear, scaled, type LoraAdapter } from '../peft/lora.js';
import type { QuantizedWeight } from '../quant/qweight.js';
import { Tensor } from '../tensor/tensor.js';
import { PyRandom } from '../util/pyrandom.js';
import type { AdapterGrads, Distillation, EngineOptions, TrainBatch } from './engine.js';
import type { AttentionShape } from './ops.js';

type T = Tensor<'F32'>;
const be = cudaBackend;

/**
 * LOWBIT_TRAIN_PROFILE=1: milliseconds by part of the step, each part synchronized before and after (the step gets
 * slower; the shares are what to read). `lowbit bench --device cuda --train` prints them.
 */
export const trainProfile = new Map<string, number>();
const PROFILE = process.env.LOWBIT_TRAIN_PROFILE === '1';
function timed<R>(part: string, f: () => R): R {
  if (!PROFILE) return f();
  be.synchronize();
  const t0 = performance.now();
  const r = f();
  be.synchronize();
  trainProfile.set(part, (trainProfile.get(part) ?? 0) + performance.now() - t0);
  return r;
}

/** A trained tensor on the device: values, gradient (summed over a step's micro-batches), AdamW moments. */
interface DevParam { host: Float32Array; p: T; g: T; m: T | null; v: T | null; decay: boolean }
/** An adapter on the device: its parameters and the products' operands s·B and s·bias (made again after each update). */
interface DevAdapter { a: LoraAdapter; A: DevParam; B: DevParam; bias: DevParam | null; Bs: T; sBias: T | null }

/** What the device AdamW reads of the host optimizer (src/train/optim.ts's AdamW). */
export interface HostAdamW { params: { p: Float32Array; decay: boolean }[]; m: Float32Array[]; v: Float32Array[]; t: number; betas: [number, number]; eps: number; weightDecay: number }

interface LinRec { lin: LinearLike; base: LinearLike; x: T; M: number; d: DevAdapter | null; xd: T | null; drop: T | null; t: T | null }

function gemm(A: T, B: Tensor, M: number, N: number, K: number, ta: boolean, tb: boolean, into?: T, accumulate = false, alpha = 1): T {
  return cudaTrain.gemm(A, B, M, N, K, ta, tb, into, accumulate, alpha);
}

function add(a: T, b: T): T {
  const out = be.empty('F32', a.shape);
  be.add(a, b, out);
  return out;
}

function free(...ts: (Tensor | null | undefined)[]): void { be.release!(...ts); }


export class CudaTrainEngine {
  readonly grads = new Map<LoraLinear, AdapterGrads>();
  microStep = 0;
  private devs = new Map<LoraLinear, DevAdapter>();
  private opt: HostAdamW | null = null;
  private optIndex = new Map<Float32Array, number>();
  private clip = 1;
  private ones = new Map<number, T>();

  constructor(readonly model: DecoderLM, private readonly opts: EngineOptions = {}) {
    if (model.backend !== cudaBackend) throw new Error('CudaTrainEngine: the model is not on the cuda backend (load it with { device: "cuda" })');
    if (!(model instanceof LlamaForCausalLM) && !(model instanceof OPTForCausalLM)) {
      throw new Error(`training: ${model.config.model_type} models are not supported (llama, mistral, qwen2, opt)`);
    }
    if (opts.trainable && opts.trainable.size > 0) {
      throw new Error('training on cuda: trained base tensors (full fine-tuning, bias "all"/"lora_only", modules_to_save) run on the cpu backend for now; train LoRA adapters alone on cuda, or load the model with { backend: "cpu" }');
    }
  }

  zeroGrad(): void {
    for (const q of this.params()) cudaTrain.zero(q.g);
    for (const [, lin] of this.model.linears()) {
      if (!(lin instanceof LoraLinear)) continue;
      const a = this.active(lin);
      if (!a) continue;
      const g = this.grads.get(lin);
      if (g && g.dA.length === a.A.length) { g.dA.fill(0); g.dB.fill(0); g.dBias?.fill(0); continue; }
      this.grads.set(lin, { dA: new Float32Array(a.A.length), dB: new Float32Array(a.B.length), dBias: a.bias ? new Float32Array(a.bias.length) : null });
    }
  }

  private active(l: LoraLinear): LoraAdapter | null {
    if (l.disabled) return null;
    const name = l.active.find((n) => !l.merged.includes(n));
    return name ? l.adapters.get(name)! : null;
  }

  /** A column of M ones (LoRA's bias as a rank-1 product), kept per M. */
  onesOf(M: number): T {
    let t = this.ones.get(M);
    if (!t) { t = be.upload(new Tensor('F32', [M], new Float32Array(M).fill(1))); this.ones.set(M, t); }
    return t;
  }

  private devAdapter(lin: LoraLinear, a: LoraAdapter): DevAdapter {
    const hit = this.devs.get(lin);
    if (hit && hit.a === a) return hit;
    if (hit) this.freeAdapter(hit);
    const N = lin.outFeatures, K = lin.inFeatures;
    const d: DevAdapter = {
      a, A: this.param(a.A, [a.r, K], true), B: this.param(a.B, [N, a.r], true), bias: a.bias ? this.param(a.bias, [1, N], false) : null,
      Bs: be.empty('F32', [N, a.r]), sBias: a.bias ? be.empty('F32', [1, N]) : null,
    };
    this.scaleOperands(d);
    this.devs.set(lin, d);
    return d;
  }

  /** A host array on the device with a zero gradient, and its AdamW moments from the attached optimizer when it has them. */
  private param(host: Float32Array, shape: number[], decay: boolean): DevParam {
    const i = this.optIndex.get(host), opt = this.opt;
    const up = (a: Float32Array) => be.upload(new Tensor('F32', shape, a));
    return {
      host, p: up(host), g: cudaTrain.zeros(shape), decay: i !== undefined ? opt!.params[i].decay : decay,
      m: i !== undefined && opt!.t > 0 ? up(opt!.m[i]) : null, v: i !== undefined && opt!.t > 0 ? up(opt!.v[i]) : null,
    };
  }

  private scaleOperands(d: DevAdapter): void {
    cudaTrain.scaleCopy(d.Bs, d.B.p, d.a.scaling);
    if (d.sBias && d.bias) cudaTrain.scaleCopy(d.sBias, d.bias.p, d.a.scaling);
  }

  private freeAdapter(d: DevAdapter): void {
    for (const q of [d.A, d.B, d.bias]) if (q) free(q.p, q.g, q.m, q.v);
    free(d.Bs, d.sBias);
  }

  private *params(): Generator<DevParam> {
    for (const d of this.devs.values()) { yield d.A; yield d.B; if (d.bias) yield d.bias; }
  }

  /** The host optimizer whose moments and step count the device AdamW keeps (syncToHost writes them back). */
  attachOptimizer(opt: HostAdamW): void {
    this.opt = opt;
    this.optIndex = new Map(opt.params.map((q, i) => [q.p, i]));
  }

  /** The global gradient norm; above maxNorm (> 0) the next adamwStep scales the gradients by maxNorm / (norm + 1e-6). */
  clipGradNorm(maxNorm: number): number {
    const norm = Math.sqrt(cudaTrain.sumSquares([...this.params()].map((q) => q.g)));
    this.clip = maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
    return norm;
  }

  /** One AdamW update of every adapter on the device (the attached optimizer's settings; its step count advances). */
  adamwStep(lr: number): void {
    const o = this.opt;
    if (!o) throw new Error('CudaTrainEngine.adamwStep: attach the optimizer first (attachOptimizer)');
    o.t++;
    const [b1, b2] = o.betas, stepSize = lr / (1 - b1 ** o.t), bc2s = Math.sqrt(1 - b2 ** o.t);
    for (const q of this.params()) {
      q.m ??= cudaTrain.zeros(q.p.shape);
      q.v ??= cudaTrain.zeros(q.p.shape);
      const decay = q.decay && o.weightDecay > 0 ? 1 - lr * o.weightDecay : 1;
      cudaTrain.adamw(q.p, q.g, q.m, q.v, { lr, beta1: b1, beta2: b2, eps: o.eps, decay, stepSize, bc2s, clip: this.clip });
    }
    this.clip = 1;
    for (const d of this.devs.values()) this.scaleOperands(d);
  }

  /** The device's adapter values (and the attached optimizer's moments) into the host arrays; inference forwards re-upload. */
  syncToHost(): void {
    for (const [lin, d] of this.devs) {
      for (const q of [d.A, d.B, d.bias]) {
        if (!q) continue;
        q.host.set(be.download(q.p).f32);
        const i = this.optIndex.get(q.host);
        if (i !== undefined && q.m && q.v) { this.opt!.m[i].set(be.download(q.m).f32); this.opt!.v[i].set(be.download(q.v).f32); }
      }
      lin.markChanged();
    }
  }

  /** Drop the device copies: the next step uploads the host's adapters (and the attached optimizer's moments) again. */
  reloadFromHost(): void {
    for (const d of this.devs.values()) this.freeAdapter(d);
    this.devs = new Map();
  }

  /** The step's summed gradients into `grads` (host arrays, as TrainEngine leaves them). */
  downloadGrads(): void {
    for (const [lin, d] of this.devs) {
      const g = this.grads.get(lin);
      if (!g) continue;
      g.dA.set(be.download(d.A.g).f32);
      g.dB.set(be.download(d.B.g).f32);
      if (g.dBias && d.bias) g.dBias.set(be.download(d.bias.g).f32);
    }
  }

  linFwd(lin: LinearLike, x: T, M: number, seed: number): { y: T; rec: LinRec } {
    const lora = lin instanceof LoraLinear ? lin : null, base = lora ? lora.base : lin;
    const y = timed('base forward', () => base.forward(x));
    const a = lora ? this.active(lora) : null;
    const rec: LinRec = { lin, base, x, M, d: null, xd: null, drop: null, t: null };
    if (!a) return { y, rec };
    const d = timed('adapters up', () => this.devAdapter(lora!, a)), K = lin.inFeatures, N = lin.outFeatures;
    return timed('lora forward', () => this.loraFwd(d, a, x, y, rec, M, K, N, seed));
  }

  private loraFwd(d: DevAdapter, a: LoraAdapter, x: T, y: T, rec: LinRec, M: number, K: number, N: number, seed: number): { y: T; rec: LinRec } {
    let xd = x;
    if (this.opts.training !== false && a.dropout > 0) {
      const r = cudaTrain.dropout(x, a.dropout, seed);
      xd = r.xd;
      rec.drop = r.drop;
    }
    const t = gemm(xd, d.A.p, M, a.r, K, false, true);         // t = xd·Aᵀ
    gemm(t, d.Bs, M, N, a.r, false, true, y, true);             // y += s·t·Bᵀ
    if (d.sBias) gemm(this.onesOf(M), d.sBias, M, N, 1, false, false, y, true);  // y += s·bias
    rec.d = d;
    rec.xd = xd;
    rec.t = t;
    return { y, rec };
  }

  linBwd(rec: LinRec, dy: T): T {
    const { M, lin, d, base } = rec, K = lin.inFeatures, N = lin.outFeatures;
    const dx = be.empty('F32', [M, K]);
    timed('base input gradient', () => {
      if (base instanceof Linear) be.matmulT!(dy, base.weight, dx);
      else if (base instanceof QuantLinear) be.matmulQT!(dy, base.qweight as QuantizedWeight, dx);
      else throw new Error(`training: ${base.name} is a ${base.constructor.name}, whose input gradient is not known`);
    });
    if (!d) return dx;
    return timed('lora backward', () => this.loraBwd(rec, d, dy, dx, M, K, N));
  }

  private loraBwd(rec: LinRec, d: DevAdapter, dy: T, dx: T, M: number, K: number, N: number): T {
    const r = d.a.r;
    // Summed over the step's micro-batches: dB += s·dyᵀ·t;  dt = s·dy·B;  dA += dtᵀ·xd;  dx += dt·A (through the dropout mask).
    const s = d.a.scaling;
    gemm(dy, rec.t!, N, r, M, true, false, d.B.g, true, s);
    if (d.bias) gemm(this.onesOf(M), dy, 1, N, M, false, false, d.bias.g, true, s);
    const dt = gemm(dy, d.Bs, M, r, N, false, false);
    gemm(dt, rec.xd!, r, K, M, true, false, d.A.g, true);
    if (rec.drop) {
      const dxl = gemm(dt, d.A.p, M, K, r, false, false);
      cudaTrain.mulAdd(dx, dxl, rec.drop);
      free(dxl);
    } else gemm(dt, d.A.p, M, K, r, false, false, dx, true);
    free(dt, rec.t);
    return dx;
  }

  /**
   * Loss of the batch (as TrainEngine.forwardBackward); the active adapters' gradients add up on the device since the
   * last zeroGrad (downloadGrads brings them into this.grads; clipGradNorm and adamwStep use them where they are).
   */
  forwardBackward(batch: TrainBatch, divisor?: number, distill?: Distillation): { loss: number; count: number; ce: number; kd: number | null } {
    const { B, T } = batch;
    if (batch.ids.length !== B * T || batch.labels.length !== B * T) throw new RangeError(`training batch: ids and labels must hold ${B}×${T} values`);
    if (distill) throw new Error('training on cuda: distillation runs on the cpu backend for now');
    if (this.grads.size === 0) this.zeroGrad();
    this.microStep++;
    const rng = new PyRandom((this.opts.seed ?? 0) * 1_000_003 + this.microStep);
    const fam = this.model instanceof LlamaForCausalLM ? new LlamaFamily(this.model, this, batch) : new OptFamily(this.model as OPTForCausalLM, this, batch, rng.getrandbits(31));
    const L = this.model.layers.length, ckpt = this.opts.gradientCheckpointing ?? this.model.gradientCheckpointing;
    const layerSeeds = Array.from({ length: L }, () => rng.getrandbits(31));
    const inputs: T[] = [];
    const recs: unknown[] = [];
    let x = fam.embed();
    for (let l = 0; l < L; l++) {
      inputs.push(x);
      const r = fam.layerFwd(l, x, layerSeeds[l]);
      if (!ckpt) recs.push(r.rec);
      else fam.freeRec(r.rec);
      x = r.y;
    }
    const head = fam.headFwd(x, rng.getrandbits(31));
    const ce = timed('loss', () => cudaTrain.causalLmLoss(head.logits, batch.labels, B, T, this.model.config.vocab_size, divisor));
    free(head.logits);
    let dx = fam.headBwd(head.rec, ce.dlogits);
    free(ce.dlogits, x);
    for (let l = L - 1; l >= 0; l--) {
      const rec = ckpt ? fam.layerFwd(l, inputs[l], layerSeeds[l]).rec : recs[l];
      const dxl = fam.layerBwd(l, rec, dx);
      fam.freeRec(rec);
      free(dx);
      if (l > 0) free(inputs[l]);
      dx = dxl;
    }
    fam.embedBwd(dx);
    free(dx, inputs[0]);
    return { loss: ce.loss, count: ce.count, ce: ce.loss, kd: null };
  }
}

function positionsOf(B: number, T: number): Int32Array {
  const p = new Int32Array(B * T);
  for (let i = 0; i < p.length; i++) p[i] = i % T;
  return p;
}

class LlamaFamily {
  private readonly c;
  private readonly pos: Int32Array;
  private readonly neg: Int32Array;
  private readonly inv: Float32Array;
  constructor(private readonly m: LlamaForCausalLM, private readonly e: CudaTrainEngine, private readonly b: TrainBatch) {
    this.c = m.config;
    this.pos = positionsOf(b.B, b.T);
    this.neg = this.pos.map((p) => -p);
    this.inv = m.ropeInvFreq(b.T - 1);
  }

  embed(): T {
    const out = be.empty('F32', [this.b.ids.length, this.c.hidden_size]);
    be.embedding(this.m.embed.weight, this.b.ids, out);
    return out;
  }

  layerFwd(l: number, x: T, seed: number) {
    const c = this.c, L = this.m.layers[l], e = this.e, { B, T } = this.b, M = B * T;
    const nH = c.num_attention_heads, nKV = c.num_key_value_heads, hd = c.head_dim;
    const n1 = cudaTrain.rmsnormForward(x, L.inputNorm.weight, c.rms_norm_eps);
    const q = e.linFwd(L.proj.q_proj, n1.y, M, seed + 1), k = e.linFwd(L.proj.k_proj, n1.y, M, seed + 2), v = e.linFwd(L.proj.v_proj, n1.y, M, seed + 3);
    be.rope(q.y.reshape([M, nH, hd]), this.pos, this.inv);
    be.rope(k.y.reshape([M, nKV, hd]), this.pos, this.inv);
    const sh: AttentionShape = { B, T, H: nH, nKV, hd, scale: 1 / Math.sqrt(hd), keyMask: this.b.mask, window: c.layer_types[l] === 'sliding_attention' ? c.sliding_window! : 0 };
    const at = timed('attention forward', () => cudaTrain.attentionForward(q.y, k.y, v.y, sh));
    const o = e.linFwd(L.proj.o_proj, at.o.reshape([M, nH * hd]), M, seed + 4);
    const x1 = add(x, o.y);
    free(o.y);
    const n2 = cudaTrain.rmsnormForward(x1, L.postNorm.weight, c.rms_norm_eps);
    const g = e.linFwd(L.proj.gate_proj, n2.y, M, seed + 5), u = e.linFwd(L.proj.up_proj, n2.y, M, seed + 6);
    const h = be.empty('F32', g.y.shape);
    be.siluMul(g.y, u.y, h);
    const d = e.linFwd(L.proj.down_proj, h, M, seed + 7);
    const y = add(x1, d.y);
    free(d.y);
    return { y, rec: { x, n1, q, k, v, sh, at, o, x1, n2, g, u, h, d } };
  }

  layerBwd(l: number, rec: unknown, dy: T): T {
    const c = this.c, L = this.m.layers[l], e = this.e, M = this.b.B * this.b.T;
    const r = rec as ReturnType<LlamaFamily['layerFwd']>['rec'];
    const dh = e.linBwd(r.d.rec, dy);
    const { dg, du } = cudaTrain.siluMulBackward(dh, r.g.y, r.u.y);
    free(dh);
    const dn2 = e.linBwd(r.g.rec, dg), dn2u = e.linBwd(r.u.rec, du);
    be.add(dn2, dn2u, dn2);
    free(dg, du, dn2u);
    const dx1 = cudaTrain.rmsnormBackward(dn2, L.postNorm.weight, r.x1, r.n2.rstd, null);
    be.add(dx1, dy, dx1);
    free(dn2);
    const dattn = e.linBwd(r.o.rec, dx1);
    const { dq, dk, dv } = timed('attention backward', () => cudaTrain.attentionBackward(dattn, r.q.y, r.k.y, r.v.y, r.at.P, r.sh));
    free(dattn);
    be.rope(dq.reshape([M, c.num_attention_heads, c.head_dim]), this.neg, this.inv);
    be.rope(dk.reshape([M, c.num_key_value_heads, c.head_dim]), this.neg, this.inv);
    const dn1 = e.linBwd(r.q.rec, dq), dk1 = e.linBwd(r.k.rec, dk), dv1 = e.linBwd(r.v.rec, dv);
    be.add(dn1, dk1, dn1);
    be.add(dn1, dv1, dn1);
    free(dq, dk, dv, dk1, dv1);
    const dx = cudaTrain.rmsnormBackward(dn1, L.inputNorm.weight, r.x, r.n1.rstd, null);
    be.add(dx, dx1, dx);
    free(dn1, dx1);
    return dx;
  }

  freeRec(rec: unknown): void {
    const r = rec as ReturnType<LlamaFamily['layerFwd']>['rec'];
    free(r.n1.y, r.n1.rstd, r.q.y, r.k.y, r.v.y, r.at.o, r.at.P, r.x1, r.n2.y, r.n2.rstd, r.g.y, r.u.y, r.h);
    for (const lr of [r.q, r.k, r.v, r.o, r.g, r.u, r.d]) free(lr.rec.t, lr.rec.drop, lr.rec.xd === lr.rec.x ? null : lr.rec.xd);
  }

  headFwd(x: T, seed: number) {
    const M = this.b.B * this.b.T;
    const n = cudaTrain.rmsnormForward(x, this.m.norm.weight, this.c.rms_norm_eps);
    const h = this.e.linFwd(this.m.lmHead, n.y, M, seed);
    return { logits: h.y, rec: { x, n, h } };
  }

  headBwd(r: unknown, dlogits: T): T {
    const rec = r as ReturnType<LlamaFamily['headFwd']>['rec'];
    const dn = this.e.linBwd(rec.h.rec, dlogits);
    const dx = cudaTrain.rmsnormBackward(dn, this.m.norm.weight, rec.x, rec.n.rstd, null);
    free(dn, rec.n.y, rec.n.rstd);
    return dx;
  }

  embedBwd(_dx: T): void { /* the embedding is frozen (LoRA) */ }
}

class OptFamily {
  private readonly c;
  private proj: { rec: LinRec } | null = null;
  constructor(private readonly m: OPTForCausalLM, private readonly e: CudaTrainEngine, private readonly b: TrainBatch, private readonly seed: number) { this.c = m.config; }

  embed(): T {
    const c = this.c, { B, T, mask, ids } = this.b, E = c.word_embed_proj_dim, H = c.hidden_size;
    const te = be.empty('F32', [ids.length, E]);
    be.embedding(this.m.embed.weight, ids, te);
    let x = te;
    if (this.m.outer.project_in) { const p = this.e.linFwd(this.m.outer.project_in, x, ids.length, this.seed); x = p.y; this.proj = p; }
    const pos = new Int32Array(B * T);
    for (let b = 0; b < B; b++) { let s = 0; for (let t = 0; t < T; t++) { const m = mask ? mask[b * T + t] : 1; s += m; pos[b * T + t] = (m ? s - 1 : -1) + 2; } }
    const pe = be.empty('F32', [B * T, H]);
    be.embedding(this.m.positions.weight, pos, pe);
    const y = add(x, pe);
    free(pe, x);  // project_in's input (te) stays for its backward
    return y;
  }

  embedBwd(dx: T): void {
    if (this.proj) free(this.e.linBwd(this.proj.rec, dx), this.proj.rec.x);
  }

  layerFwd(l: number, x: T, seed: number) {
    const c = this.c, L = this.m.layers[l], e = this.e, { B, T } = this.b, M = B * T, H = c.hidden_size;
    const nH = c.num_attention_heads, hd = H / nH, pre = c.do_layer_norm_before;
    const ln = (n: typeof L.attnNorm, v: T) => cudaTrain.layernormForward(v, n.weight, n.bias, 1e-5);
    const n1 = pre ? ln(L.attnNorm, x) : null;
    const hin = n1 ? n1.y : x;
    const q = e.linFwd(L.proj.q_proj, hin, M, seed + 1), k = e.linFwd(L.proj.k_proj, hin, M, seed + 2), v = e.linFwd(L.proj.v_proj, hin, M, seed + 3);
    const sh: AttentionShape = { B, T, H: nH, nKV: nH, hd, scale: 1 / Math.sqrt(hd), keyMask: this.b.mask, window: 0 };
    const at = cudaTrain.attentionForward(q.y, k.y, v.y, sh);
    const o = e.linFwd(L.proj.out_proj, at.o.reshape([M, H]), M, seed + 4);
    const s1 = add(x, o.y);
    free(o.y);
    const p1 = pre ? null : ln(L.attnNorm, s1);
    const x1 = p1 ? p1.y : s1;
    const n2 = pre ? ln(L.ffnNorm, x1) : null;
    const f = e.linFwd(L.proj.fc1, n2 ? n2.y : x1, M, seed + 5);
    const r = be.empty('F32', f.y.shape);
    be.relu(f.y, r);
    const d = e.linFwd(L.proj.fc2, r, M, seed + 6);
    const s2 = add(x1, d.y);
    free(d.y);
    const p2 = pre ? null : ln(L.ffnNorm, s2);
    return { y: p2 ? p2.y : s2, rec: { n1, q, k, v, sh, at, o, s1, p1, n2, f, r, d, s2, p2 } };
  }

  layerBwd(l: number, rec: unknown, dy: T): T {
    const L = this.m.layers[l], e = this.e;
    const r = rec as ReturnType<OptFamily['layerFwd']>['rec'];
    const lnB = (n: typeof L.attnNorm, a: { xhat: T; rstd: T }, d: T) => cudaTrain.layernormBackward(d, n.weight, a.xhat, a.rstd, null, null);
    const ds2 = r.p2 ? lnB(L.ffnNorm, r.p2, dy) : dy;
    const dr = e.linBwd(r.d.rec, ds2);
    const df = cudaTrain.reluBackward(dr, r.f.y);
    free(dr);
    let dx1 = e.linBwd(r.f.rec, df);
    free(df);
    if (r.n2) { const t = lnB(L.ffnNorm, r.n2, dx1); free(dx1); dx1 = t; }
    be.add(dx1, ds2, dx1);
    if (ds2 !== dy) free(ds2);
    const ds1 = r.p1 ? lnB(L.attnNorm, r.p1, dx1) : dx1;
    const dattn = e.linBwd(r.o.rec, ds1);
    const { dq, dk, dv } = cudaTrain.attentionBackward(dattn, r.q.y, r.k.y, r.v.y, r.at.P, r.sh);
    free(dattn);
    const dh = e.linBwd(r.q.rec, dq), dhk = e.linBwd(r.k.rec, dk), dhv = e.linBwd(r.v.rec, dv);
    be.add(dh, dhk, dh);
    be.add(dh, dhv, dh);
    free(dq, dk, dv, dhk, dhv);
    let dxa = dh;
    if (r.n1) { dxa = lnB(L.attnNorm, r.n1, dh); free(dh); }
    be.add(dxa, ds1, dxa);
    free(ds1, ds1 === dx1 ? null : dx1);
    return dxa;
  }

  freeRec(rec: unknown): void {
    const r = rec as ReturnType<OptFamily['layerFwd']>['rec'];
    for (const n of [r.n1, r.p1, r.n2, r.p2]) if (n) free(n === r.p2 ? null : n.y, n.xhat, n.rstd);  // p2.y is the layer's output
    free(r.q.y, r.k.y, r.v.y, r.at.o, r.at.P, r.s1, r.f.y, r.r, r.p2 ? r.s2 : null);
    for (const lr of [r.q, r.k, r.v, r.o, r.f, r.d]) free(lr.rec.t, lr.rec.drop, lr.rec.xd === lr.rec.x ? null : lr.rec.xd);
  }

  headFwd(x: T, seed: number) {
    const M = this.b.B * this.b.T, fn = this.m.finalNorm;
    const n = fn ? cudaTrain.layernormForward(x, fn.weight, fn.bias, 1e-5) : null;
    let y = n ? n.y : x;
    const po = this.m.outer.project_out ? this.e.linFwd(this.m.outer.project_out, y, M, seed + 1) : null;
    if (po) y = po.y;
    const h = this.e.linFwd(this.m.lmHead, y, M, seed);
    return { logits: h.y, rec: { n, po, h } };
  }

  headBwd(r: unknown, dlogits: T): T {
    const rec = r as ReturnType<OptFamily['headFwd']>['rec'], fn = this.m.finalNorm;
    let d = this.e.linBwd(rec.h.rec, dlogits);
    if (rec.po) { const t = this.e.linBwd(rec.po.rec, d); free(d, rec.po.y); d = t; }
    if (rec.n && fn) { const t = cudaTrain.layernormBackward(d, fn.weight, rec.n.xhat, rec.n.rstd, null, null); free(d, rec.n.y, rec.n.xhat, rec.n.rstd); d = t; }
    return d;
  }
}
