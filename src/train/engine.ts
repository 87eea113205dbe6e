// One training step's forward and backward for a decoder LM with LoRA adapters (issue 11): the loss of a batch and
// the gradients of every active adapter's A and B (and of base tensors trained beside them). The base stays frozen
// (float or quantized): its linears run their usual forward, and their input gradients come from the backend's
// transposed products (Backend.matmulT / matmulQT: tiles dequantized on the fly), or from a transposed float32 copy
// of the weight on a backend without them (weightT).
//
// The forward mirrors the inference forwards op for op (src/models/llama.ts, opt.ts) but keeps what the backward needs
// in explicit per-layer records, llm.c style; ops come from ./ops.ts (each one checked against finite differences) or,
// on the cpu backend, their native versions (./kernels.ts), and the products of the linears run on the backend. With
// gradient checkpointing only each layer's input is kept, and the layer's forward runs again, with the same dropout
// masks, when the backward reaches it.
//
// Families: Llama, Mistral, Qwen2 (RMSNorm, RoPE, GQA, SiLU·mul, sliding windows) and OPT (LayerNorm pre- or post-,
// learned positions, ReLU, project_in / project_out).
import { LlamaForCausalLM } from '../models/llama.js';
import type { DecoderLM } from '../models/model.js';
import { OPTForCausalLM } from '../models/opt.js';
import { Linear, type LinearLike } from '../nn/layers.js';
import { QuantLinear } from '../nn/quant.js';
import { LoraLinear, type LoraAdapter } from '../peft/lora.js';
import { dequantizeWeight, type QuantizedWeight } from '../quant/qweight.js';
import { Tensor } from '../tensor/tensor.js';
import { PyRandom } from '../util/pyrandom.js';
import * as kernels from './kernels.js';
import * as ops from './ops.js';

/** A batch of B rows of T tokens: labels −100 where nothing is scored (padding, prompts); mask 0 on padding. */
export interface TrainBatch {
  ids: Int32Array;
  labels: Int32Array;
  B: number;
  T: number;
  /** Attention mask [B·T] (1 = a real token); null when every token is real. */
  mask: Uint8Array | null;
}

/** Knowledge distillation for one batch: the teacher's logits [B, T, V], the weight α of the KL term, the temperature τ. */
export interface Distillation { teacherLogits: Float32Array; alpha: number; temperature: number }

export interface AdapterGrads { dA: Float32Array; dB: Float32Array; dBias: Float32Array | null }

export interface EngineOptions {
  /** Base tensors trained too (bias "all"/"lora_only", modules_to_save): their values → gradient buffers. */
  trainable?: Map<Float32Array, Float32Array>;
  gradientCheckpointing?: boolean;
  /** Dropout on (true) or off (eval). */
  training?: boolean;
  /** Seed of the dropout masks (each step draws from seed and the step's counter). */
  seed?: number;
}

/** y[M,N] = x[M,K]·w[N,K]ᵀ on the model's backend. */
function mm(be: DecoderLM['backend'], x: Float32Array, w: Float32Array, M: number, N: number, K: number): Float32Array {
  const out = Tensor.zeros('F32', [M, N]);
  be.matmul(view([M, K], x), view([N, K], w), null, out);
  return out.f32;
}

/** An F32 tensor over an existing array (no copy). */
function view(shape: number[], a: Float32Array): Tensor<'F32'> {
  return new Tensor('F32', shape, a);
}

function transpose(x: Float32Array, R: number, C: number): Float32Array {
  const y = new Float32Array(R * C);
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) y[c * R + r] = x[r * C + c];
  return y;
}

/** One linear's forward record. */
interface LinRec {
  lin: LinearLike;
  base: LinearLike;
  x: Float32Array;
  M: number;
  /** The active adapter, its dropped-out input (x itself without dropout), the dropout multipliers and t = xd·Aᵀ. */
  a: LoraAdapter | null;
  xd: Float32Array | null;
  drop: Float32Array | null;
  t: Float32Array | null;
}

export class TrainEngine {
  readonly grads = new Map<LoraLinear, AdapterGrads>();
  private readonly weightsT = new WeakMap<object, Float32Array>();
  private cachedBytes = 0;
  /** Transposed float32 copies of frozen weights are kept up to this many bytes (then made again per use). */
  static cacheLimitBytes = 2 ** 31;
  /** Micro-batches run so far: with the seed, it picks each step's dropout masks (a resumed run sets it). */
  microStep = 0;
  private rng: PyRandom | null = null;

  constructor(readonly model: DecoderLM, private readonly opts: EngineOptions = {}) {
    if (!(model instanceof LlamaForCausalLM) && !(model instanceof OPTForCausalLM)) {
      throw new Error(`training: ${model.config.model_type} models are not supported (llama, mistral, qwen2, opt)`);
    }
  }

  /** Zero (or create) the gradient buffers of every active adapter (and of trained base tensors). */
  zeroGrad(): void {
    for (const g of this.opts.trainable?.values() ?? []) g.fill(0);
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

  // ---- linears

  private linFwd(lin: LinearLike, x: Float32Array, M: number, layerSeed: number): { y: Float32Array; rec: LinRec } {
    const be = this.model.backend;
    const lora = lin instanceof LoraLinear ? lin : null, base = lora ? lora.base : lin;
    const y = base.forward(view([M, lin.inFeatures], x)).f32;
    const a = lora ? this.active(lora) : null;
    const rec: LinRec = { lin, base, x, M, a, xd: null, drop: null, t: null };
    if (!a) return { y, rec };
    let xd = x;
    if (this.opts.training !== false && a.dropout > 0) {
      // xorshift32 from the layer's seed: a mask per (step, layer, linear) that checkpointing can draw again.
      let r = (layerSeed ^ 0x9e3779b9) >>> 0 || 1;
      const keep = 1 / (1 - a.dropout), cut = a.dropout * 2 ** 32;
      const drop = new Float32Array(x.length);
      xd = new Float32Array(x.length);
      for (let i = 0; i < x.length; i++) {
        r ^= r << 13; r >>>= 0; r ^= r >>> 17; r ^= r << 5; r >>>= 0;
        const d = r >= cut ? keep : 0;
        drop[i] = d;
        xd[i] = x[i] * d;
      }
      rec.drop = drop;
    }
    const K = lin.inFeatures, N = lin.outFeatures;
    const t = mm(be, xd, a.A, M, a.r, K);
    const d = mm(be, t, a.B, M, N, a.r);
    if (a.bias) for (let m = 0, i = 0; m < M; m++) for (let n = 0; n < N; n++, i++) y[i] += a.scaling * (d[i] + a.bias[n]);
    else for (let i = 0; i < y.length; i++) y[i] += a.scaling * d[i];
    rec.xd = xd;
    rec.t = t;
    return { y, rec };
  }

  /** The frozen weight as float32 [K, N] (transposed), for dx = dy·W. */
  private weightT(base: LinearLike): Float32Array {
    const key = base instanceof Linear ? base.weight.data : base instanceof QuantLinear ? base.qweight : base;
    const hit = this.weightsT.get(key as object);
    if (hit) return hit;
    let w: Float32Array;
    if (base instanceof Linear) w = base.weight.toF32();
    else if (base instanceof QuantLinear) w = dequantizeWeight(base.qweight as QuantizedWeight);
    else throw new Error(`training: ${base.name} is a ${base.constructor.name}, whose input gradient is not known`);
    const wt = transpose(w, base.outFeatures, base.inFeatures);
    if (this.cachedBytes + wt.byteLength <= TrainEngine.cacheLimitBytes) {
      this.weightsT.set(key as object, wt);
      this.cachedBytes += wt.byteLength;
    }
    return wt;
  }

  /**
   * dy · W of a frozen layer: the backend's transposed product where it has one (weights read tile by tile, never
   * whole), else a transposed float32 copy of the weight (ops.linearBackwardInput's product; cached while it fits).
   */
  private inputGrad(base: LinearLike, dy: Float32Array, M: number): Float32Array {
    const be = this.model.backend, K = base.inFeatures, N = base.outFeatures;
    const out = Tensor.zeros('F32', [M, K]);
    if (base instanceof Linear && be.matmulT) { be.matmulT(view([M, N], dy), base.weight, out); return out.f32; }
    if (base instanceof QuantLinear && be.matmulQT?.(view([M, N], dy), base.qweight as QuantizedWeight, out)) return out.f32;
    return mm(be, dy, this.weightT(base), M, K, N);
  }

  /** Gradients of a trained base bias (Σ over rows of dy) and of a wholly trained float weight (dyᵀ·x). */
  private baseGrads(rec: LinRec, dy: Float32Array): void {
    const t = this.opts.trainable;
    if (!t) return;
    const base = rec.base, N = base.outFeatures, K = base.inFeatures, M = rec.M;
    const bias = base instanceof Linear || base instanceof QuantLinear ? base.bias : null;
    const gb = bias ? t.get(bias.f32) : undefined;
    if (gb) for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) gb[n] += dy[m * N + n];
    const gw = base instanceof Linear && base.weight.dtype === 'F32' ? t.get(base.weight.data as Float32Array) : undefined;
    if (gw) {
      const dw = mm(this.model.backend, transpose(dy, M, N), transpose(rec.x, M, K), N, K, M);
      for (let i = 0; i < dw.length; i++) gw[i] += dw[i];
    }
  }

  /** The gradient buffer of a trained base tensor (norm biases), if it is one. */
  gradOf(values: Float32Array): Float32Array | undefined {
    return this.opts.trainable?.get(values);
  }

  /** dx from dy, accumulating the adapter's dA, dB. */
  private linBwd(rec: LinRec, dy: Float32Array): Float32Array {
    const be = this.model.backend, { M, lin, a } = rec, K = lin.inFeatures, N = lin.outFeatures;
    const dx = this.inputGrad(rec.base, dy, M);
    this.baseGrads(rec, dy);
    if (!a) return dx;
    const g = this.grads.get(lin as LoraLinear);
    if (!g) throw new Error(`training: no gradient buffers for ${lin.name} (call zeroGrad first)`);
    const s = a.scaling;
    // dB[N,r] += s·dyᵀ·t;  dt[M,r] = s·dy·B;  dA[r,K] += dtᵀ·xd;  dx += dt·A (through the dropout mask).
    const dyT = transpose(dy, M, N);
    const dB = mm(be, dyT, transpose(rec.t!, M, a.r), N, a.r, M);
    for (let i = 0; i < dB.length; i++) g.dB[i] += s * dB[i];
    if (g.dBias) for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) g.dBias[n] += s * dy[m * N + n];
    const dt = mm(be, dy, transpose(a.B, N, a.r), M, a.r, N);
    for (let i = 0; i < dt.length; i++) dt[i] *= s;
    const dA = mm(be, transpose(dt, M, a.r), transpose(rec.xd!, M, K), a.r, K, M);
    for (let i = 0; i < dA.length; i++) g.dA[i] += dA[i];
    const dxl = mm(be, dt, transpose(a.A, a.r, K), M, K, a.r);
    const drop = rec.drop;
    if (drop) for (let i = 0; i < dx.length; i++) dx[i] += dxl[i] * drop[i];
    else for (let i = 0; i < dx.length; i++) dx[i] += dxl[i];
    return dx;
  }

  // ---- the step

  /**
   * Loss of the batch (mean over its scored tokens, or Σ/divisor) and, added into this.grads, the gradients of the
   * active adapters. Call zeroGrad() before the first micro-batch of an optimizer step.
   */
  forwardBackward(batch: TrainBatch, divisor?: number, distill?: Distillation): { loss: number; count: number; ce: number; kd: number | null } {
    const { B, T } = batch;
    if (batch.ids.length !== B * T || batch.labels.length !== B * T) throw new RangeError(`training batch: ids and labels must hold ${B}×${T} values`);
    if (this.grads.size === 0) this.zeroGrad();
    this.microStep++;
    const seed = (this.opts.seed ?? 0) * 1_000_003 + this.microStep;
    this.rng = new PyRandom(seed);
    const fam = this.model instanceof LlamaForCausalLM ? new LlamaFamily(this.model, this, batch) : new OptFamily(this.model as OPTForCausalLM, this, batch, this.rng.getrandbits(31));
    const L = this.model.layers.length, ckpt = this.opts.gradientCheckpointing ?? this.model.gradientCheckpointing;
    const layerSeeds = Array.from({ length: L }, () => this.rng!.getrandbits(31));
    const inputs: Float32Array[] = [];
    const recs: unknown[] = [];
    let x = fam.embed();
    for (let l = 0; l < L; l++) {
      inputs.push(x);
      const r = fam.layerFwd(l, x, layerSeeds[l]);
      if (!ckpt) recs.push(r.rec);
      x = r.y;
    }
    const head = fam.headFwd(x, this.rng.getrandbits(31));
    const V = this.model.config.vocab_size;
    const ce = ops.causalLmLoss(head.logits, batch.labels, B, T, V, divisor);
    let loss = ce.loss, kd: number | null = null, dlogits = ce.dlogits as Float32Array;
    if (distill) {
      if (distill.teacherLogits.length !== head.logits.length) throw new RangeError(`distillation: ${distill.teacherLogits.length} teacher logits for ${head.logits.length} student logits (the vocabularies must be the same)`);
      const k = ops.distillLoss(head.logits, distill.teacherLogits, batch.labels, B, T, V, distill.temperature, divisor);
      const a = distill.alpha;
      kd = k.loss;
      loss = (1 - a) * ce.loss + a * k.loss;
      for (let i = 0; i < dlogits.length; i++) dlogits[i] = (1 - a) * dlogits[i] + a * k.dlogits[i];
    }
    const count = ce.count;
    let dx = fam.headBwd(head.rec, dlogits);
    for (let l = L - 1; l >= 0; l--) {
      const rec = ckpt ? fam.layerFwd(l, inputs[l], layerSeeds[l]).rec : recs[l];
      dx = fam.layerBwd(l, rec, dx);
    }
    fam.embedBwd(dx);
    return { loss, count, ce: ce.loss, kd };
  }

  /** Exposed to the family helpers. */
  lin(lin: LinearLike, x: Float32Array, M: number, seed: number) { return this.linFwd(lin, x, M, seed); }
  linBack(rec: LinRec, dy: Float32Array) { return this.linBwd(rec, dy); }
}

const f32 = (v: ops.Vec) => v as Float32Array;

/** Positions 0…T−1 per row (HF's default position_ids in training), keyMask from the batch. */
function positionsOf(B: number, T: number): Int32Array {
  const p = new Int32Array(B * T);
  for (let i = 0; i < p.length; i++) p[i] = i % T;
  return p;
}

class LlamaFamily {
  private readonly c;
  private readonly pos: Int32Array;
  private readonly inv: Float32Array;
  constructor(private readonly m: LlamaForCausalLM, private readonly e: TrainEngine, private readonly b: TrainBatch) {
    this.c = m.config;
    this.pos = positionsOf(b.B, b.T);
    this.neg = this.pos.map((p) => -p);
    this.inv = m.ropeInvFreq(b.T - 1);
  }
  private readonly neg: Int32Array;

  embed(): Float32Array {
    const H = this.c.hidden_size, out = Tensor.zeros('F32', [this.b.ids.length, H]);
    this.m.backend.embedding(this.m.embed.weight, this.b.ids, out);
    return out.f32;
  }

  layerFwd(l: number, x: Float32Array, seed: number) {
    const c = this.c, L = this.m.layers[l], e = this.e, { B, T } = this.b, M = B * T, H = c.hidden_size;
    const nH = c.num_attention_heads, nKV = c.num_key_value_heads, hd = c.head_dim;
    const w1 = L.inputNorm.weight.f32, w2 = L.postNorm.weight.f32;
    const be = this.m.backend;
    const n1 = kernels.rmsnormForward(be, x, w1, c.rms_norm_eps, M, H);
    const q = e.lin(L.proj.q_proj, n1.y, M, seed + 1), k = e.lin(L.proj.k_proj, n1.y, M, seed + 2), v = e.lin(L.proj.v_proj, n1.y, M, seed + 3);
    // The projections' outputs are needed by nothing but RoPE: rotate them in place.
    const qr = kernels.ropeInPlace(be, q.y, this.pos, this.inv, nH, hd), kr = kernels.ropeInPlace(be, k.y, this.pos, this.inv, nKV, hd);
    const sh: ops.AttentionShape = { B, T, H: nH, nKV, hd, scale: 1 / Math.sqrt(hd), keyMask: this.b.mask, window: c.layer_types[l] === 'sliding_attention' ? c.sliding_window! : 0 };
    const at = kernels.attentionForward(this.m.backend, f32(qr), f32(kr), v.y, sh);
    const o = e.lin(L.proj.o_proj, f32(at.o), M, seed + 4);
    const x1 = kernels.add(be, x, o.y);
    const n2 = kernels.rmsnormForward(be, x1, w2, c.rms_norm_eps, M, H);
    const g = e.lin(L.proj.gate_proj, n2.y, M, seed + 5), u = e.lin(L.proj.up_proj, n2.y, M, seed + 6);
    const h = kernels.siluMulForward(be, g.y, u.y);
    const d = e.lin(L.proj.down_proj, h, M, seed + 7);
    return { y: kernels.add(be, x1, d.y), rec: { n1, q, k, v, sh, at, o, n2, g, u, d } };
  }

  layerBwd(l: number, rec: unknown, dy: Float32Array): Float32Array {
    const c = this.c, L = this.m.layers[l], e = this.e, M = this.b.B * this.b.T, H = c.hidden_size;
    const r = rec as ReturnType<LlamaFamily['layerFwd']>['rec'];
    const dh = e.linBack(r.d.rec, dy);
    const { dg, du } = kernels.siluMulBackward(this.m.backend, dh, r.g.y, r.u.y);
    const dn2 = ops.addVec(e.linBack(r.g.rec, f32(dg)), e.linBack(r.u.rec, f32(du)));
    const dx1 = ops.addVec(dy, this.rmsB(dn2, L.postNorm.weight.f32, r.n2.act, M, H));
    const dattn = e.linBack(r.o.rec, f32(dx1));
    const { dq, dk, dv } = kernels.attentionBackward(this.m.backend, dattn, r.at.act, r.sh);
    const dqn = kernels.ropeInPlace(this.m.backend, dq, this.neg, this.inv, c.num_attention_heads, c.head_dim);
    const dkn = kernels.ropeInPlace(this.m.backend, dk, this.neg, this.inv, c.num_key_value_heads, c.head_dim);
    const dn1 = e.linBack(r.q.rec, f32(dqn));
    ops.accumulate(dn1, e.linBack(r.k.rec, f32(dkn)));
    ops.accumulate(dn1, e.linBack(r.v.rec, f32(dv)));
    return f32(ops.addVec(dx1, this.rmsB(dn1, L.inputNorm.weight.f32, r.n1.act, M, H)));
  }

  headFwd(x: Float32Array, seed: number) {
    const c = this.c, M = this.b.B * this.b.T;
    const n = kernels.rmsnormForward(this.m.backend, x, this.m.norm.weight.f32, c.rms_norm_eps, M, c.hidden_size);
    const h = this.e.lin(this.m.lmHead, n.y, M, seed);
    return { logits: h.y, rec: { n, h } };
  }

  headBwd(r: unknown, dlogits: Float32Array): Float32Array {
    const M = this.b.B * this.b.T, rec = r as ReturnType<LlamaFamily['headFwd']>['rec'];
    const dn = this.e.linBack(rec.h.rec, dlogits);
    return this.rmsB(dn, this.m.norm.weight.f32, rec.n.act, M, this.c.hidden_size);
  }

  /** RMSNorm backward; the weight's gradient is kept when the weight trains (full fine-tuning). */
  private rmsB(d: ops.Vec, w: Float32Array, act: ops.RmsNormAct, M: number, H: number): Float32Array {
    const r = ops.rmsnormBackward(d, w, act, M, H), gw = this.e.gradOf(w);
    if (gw) ops.accumulate(gw, r.dw);
    return f32(r.dx);
  }

  /** A trained embedding table's gradient (full fine-tuning). */
  embedBwd(dx: Float32Array): void {
    const g = this.e.gradOf(this.m.embed.weight.data as Float32Array);
    if (g) ops.accumulate(g, ops.embeddingBackward(dx, this.b.ids, this.c.vocab_size, this.c.hidden_size));
  }
}

class OptFamily {
  private readonly c;
  constructor(private readonly m: OPTForCausalLM, private readonly e: TrainEngine, private readonly b: TrainBatch, private readonly seed: number) { this.c = m.config; }

  private proj: { rec: LinRec } | null = null;

  embed(): Float32Array {
    const c = this.c, { B, T, mask, ids } = this.b, be = this.m.backend, E = c.word_embed_proj_dim, H = c.hidden_size;
    const te = Tensor.zeros('F32', [ids.length, E]);
    be.embedding(this.m.embed.weight, ids, te);
    let x = te.f32;
    if (this.m.outer.project_in) { const p = this.e.lin(this.m.outer.project_in, x, ids.length, this.seed); x = p.y; this.proj = p; }
    // OPT's positions: cumsum(mask)·mask − 1 (padding → −1), plus the offset 2.
    const pos = new Int32Array(B * T);
    for (let b = 0; b < B; b++) { let s = 0; for (let t = 0; t < T; t++) { const m = mask ? mask[b * T + t] : 1; s += m; pos[b * T + t] = (m ? s - 1 : -1) + 2; } }
    const pe = Tensor.zeros('F32', [B * T, H]);
    be.embedding(this.m.positions.weight, pos, pe);
    this.posIds = pos;
    return f32(ops.addVec(x, pe.f32));
  }

  /** project_in (an adapter, or trained whole) and, in full fine-tuning, the token and position embeddings. */
  embedBwd(dx: Float32Array): void {
    const gp = this.e.gradOf(this.m.positions.weight.data as Float32Array);
    if (gp) ops.accumulate(gp, ops.embeddingBackward(dx, this.posIds!, this.m.positions.weight.shape[0], this.c.hidden_size));
    const dt = this.proj ? this.e.linBack(this.proj.rec, dx) : dx;
    const ge = this.e.gradOf(this.m.embed.weight.data as Float32Array);
    if (ge) ops.accumulate(ge, ops.embeddingBackward(dt, this.b.ids, this.c.vocab_size, this.c.word_embed_proj_dim));
  }
  private posIds: Int32Array | null = null;

  layerFwd(l: number, x: Float32Array, seed: number) {
    const c = this.c, L = this.m.layers[l], e = this.e, { B, T } = this.b, M = B * T, H = c.hidden_size;
    const nH = c.num_attention_heads, hd = H / nH, pre = c.do_layer_norm_before;
    const ln = (n: typeof L.attnNorm, v: Float32Array) => ops.layernormForward(v, n.weight.f32, n.bias.f32, 1e-5, M, H);
    const n1 = pre ? ln(L.attnNorm, x) : null;
    const hin = n1 ? f32(n1.y) : x;
    const q = e.lin(L.proj.q_proj, hin, M, seed + 1), k = e.lin(L.proj.k_proj, hin, M, seed + 2), v = e.lin(L.proj.v_proj, hin, M, seed + 3);
    const sh: ops.AttentionShape = { B, T, H: nH, nKV: nH, hd, scale: 1 / Math.sqrt(hd), keyMask: this.b.mask, window: 0 };
    const at = kernels.attentionForward(this.m.backend, q.y, k.y, v.y, sh);
    const o = e.lin(L.proj.out_proj, f32(at.o), M, seed + 4);
    const s1 = f32(ops.addVec(x, o.y));
    const p1 = pre ? null : ln(L.attnNorm, s1);
    const x1 = p1 ? f32(p1.y) : s1;
    const n2 = pre ? ln(L.ffnNorm, x1) : null;
    const f = e.lin(L.proj.fc1, n2 ? f32(n2.y) : x1, M, seed + 5);
    const r = ops.reluForward(f.y);
    const d = e.lin(L.proj.fc2, f32(r), M, seed + 6);
    const s2 = f32(ops.addVec(x1, d.y));
    const p2 = pre ? null : ln(L.ffnNorm, s2);
    return { y: p2 ? f32(p2.y) : s2, rec: { n1, q, k, v, sh, at, o, p1, n2, f, d, p2 } };
  }

  layerBwd(l: number, rec: unknown, dy: Float32Array): Float32Array {
    const c = this.c, L = this.m.layers[l], e = this.e, M = this.b.B * this.b.T, H = c.hidden_size;
    const r = rec as ReturnType<OptFamily['layerFwd']>['rec'];
    const lnB = (n: typeof L.attnNorm, act: ops.LayerNormAct, d: ops.Vec) => {
      const r = ops.layernormBackward(d, n.weight.f32, act, M, H), gb = e.gradOf(n.bias.f32), gw = e.gradOf(n.weight.f32);
      if (gb) ops.accumulate(gb, r.db);
      if (gw) ops.accumulate(gw, r.dw);
      return f32(r.dx);
    };
    const ds2 = r.p2 ? lnB(L.ffnNorm, r.p2.act, dy) : dy;
    const dr = e.linBack(r.d.rec, ds2);
    const df = f32(ops.reluBackward(dr, r.f.y));
    let dx1 = e.linBack(r.f.rec, df);
    if (r.n2) dx1 = lnB(L.ffnNorm, r.n2.act, dx1);
    ops.accumulate(dx1, ds2);
    const ds1 = r.p1 ? lnB(L.attnNorm, r.p1.act, dx1) : dx1;
    const dattn = e.linBack(r.o.rec, ds1);
    const { dq, dk, dv } = kernels.attentionBackward(this.m.backend, dattn, r.at.act, r.sh);
    const dh = e.linBack(r.q.rec, f32(dq));
    ops.accumulate(dh, e.linBack(r.k.rec, f32(dk)));
    ops.accumulate(dh, e.linBack(r.v.rec, f32(dv)));
    const dxa = r.n1 ? lnB(L.attnNorm, r.n1.act, dh) : dh;
    ops.accumulate(dxa, ds1);
    return dxa;
  }

  headFwd(x: Float32Array, seed: number) {
    const M = this.b.B * this.b.T, H = this.c.hidden_size, fn = this.m.finalNorm;
    const n = fn ? ops.layernormForward(x, fn.weight.f32, fn.bias.f32, 1e-5, M, H) : null;
    let y = n ? f32(n.y) : x;
    const po = this.m.outer.project_out ? this.e.lin(this.m.outer.project_out, y, M, seed + 1) : null;
    if (po) y = po.y;
    const h = this.e.lin(this.m.lmHead, y, M, seed);
    return { logits: h.y, rec: { n, po, h } };
  }

  headBwd(r: unknown, dlogits: Float32Array): Float32Array {
    const rec = r as ReturnType<OptFamily['headFwd']>['rec'];
    const M = this.b.B * this.b.T, H = this.c.hidden_size, fn = this.m.finalNorm;
    let d = this.e.linBack(rec.h.rec, dlogits);
    if (rec.po) d = this.e.linBack(rec.po.rec, d);
    if (rec.n && fn) {
      const r = ops.layernormBackward(d, fn.weight.f32, rec.n.act, M, H), gb = this.e.gradOf(fn.bias.f32), gw = this.e.gradOf(fn.weight.f32);
      if (gb) ops.accumulate(gb, r.db);
      if (gw) ops.accumulate(gw, r.dw);
      d = f32(r.dx);
    }
    return d;
  }
}
