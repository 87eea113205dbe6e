// What every causal LM offers, the weight lookup the model files share, and input normalisation.
import type { Backend } from '../backend/backend.js';
import type { ModelConfig } from '../io/config.js';
import type { LayerNorm, LinearLike, RMSNorm } from '../nn/layers.js';
import { KVCache } from '../nn/kvcache.js';
import { DType, toF32Array } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { UnsupportedDtypeError } from '../io/safetensors.js';

/**
 * A tensor the config calls for is absent or has the wrong shape, or the checkpoint's layers disagree with it. (A
 * weight of a dtype that is not a float type is an UnsupportedDtypeError from io/safetensors.)
 */
export class MissingTensorError extends Error { override name = 'MissingTensorError'; }

/** An input token id that is not an integer in [0, vocab_size). `row`/`position` locate it in the input. */
export class TokenIdError extends RangeError {
  override name = 'TokenIdError';
  constructor(message: string, readonly row: number, readonly position: number, readonly id: unknown, readonly vocabSize: number) { super(message); }
}

export interface ForwardOptions {
  /** [B, T] for the new tokens, or [B, past+T] like transformers; 1 = real token, 0 = padding. */
  attentionMask?: ArrayLike<number>[] | Uint8Array;
  /** [B·T] explicit positions; by default they follow the mask (cumsum − 1), as in HF generate. */
  positions?: Int32Array;
  /** Reused across calls for incremental decoding; a fresh one is made when absent. */
  cache?: KVCache;
  /** 'all' (default, like transformers) or 'last': logits of the final position only, [B, 1, V]. */
  logits?: 'all' | 'last';
}

export interface CausalLM {
  readonly config: ModelConfig;
  readonly backend: Backend;
  /**
   * How many positions (prompt + generated tokens) one sequence may span: max_position_embeddings, or what the
   * RoPE scaling is documented to reach. generate() refuses longer requests before the prefill.
   */
  readonly maxPositions: number;
  /** Token ids [B, T] (or a flat Int32Array with `batch` rows) → logits [B, T, V] (or [B, 1, V]). */
  forward(inputIds: ArrayLike<number>[] | { ids: Int32Array; batch: number }, opts?: ForwardOptions): Tensor<'F32'>;
  /** A cache for `batch` rows of up to `capacity` positions; it allocates in chunks as positions arrive. */
  createCache(batch: number, capacity: number): KVCache;
  /** Every linear layer by HF name: the layers quantizers and LoRA swap. */
  linears(): Map<string, LinearLike>;
  replaceLinear(name: string, layer: LinearLike): void;
}

/**
 * Named weights of one checkpoint. Matrices keep their dtype; vectors (norms, biases) are widened to F32. Every name
 * a model reads is recorded, so the loader can report checkpoint tensors the model never used.
 */
export class Weights {
  private read = new Set<string>();
  /** For a device backend: each tensor as the model gets it (uploaded once, at its first read). */
  private placed: { backend: Backend; done: Map<Tensor, Tensor> } | null = null;
  /** For a renamed view: the checkpoint's own name of each tensor, so reads are recorded under it. */
  private original: Map<string, string> | null = null;

  constructor(readonly tensors: Map<string, Tensor>, readonly source: string) {}

  /**
   * The same tensors under other names (OPT checkpoints saved from OPTModel lack the "model." prefix); reads
   * through the view count as reads of the original names.
   */
  renamed(rename: (name: string) => string): Weights {
    const view = new Weights(new Map([...this.tensors].map(([k, t]) => [rename(k), t])), this.source);
    const original = new Map([...this.tensors.keys()].map((k) => [rename(k), this.original?.get(k) ?? k]));
    view.read = this.read;
    view.original = original;
    return view;
  }

  /**
   * The same tensors as a model on `backend` takes them: each float tensor read through matrix() / vector() is
   * uploaded to its device once (a tied embedding and LM head share one upload). Host backends get this object.
   */
  onto(backend: Backend): Weights {
    if (backend.device === 'cpu') return this;
    const view = new Weights(this.tensors, this.source);
    view.read = this.read;
    view.original = this.original;
    view.placed = { backend, done: new Map() };
    return view;
  }

  private place<T extends Tensor>(t: T): T {
    if (!this.placed) return t;
    let d = this.placed.done.get(t);
    if (!d) { d = this.placed.backend.upload(t); this.placed.done.set(t, d); }
    return d as T;
  }

  has(name: string): boolean { return this.tensors.has(name); }

  matrix(name: string, shape?: readonly number[]): Tensor {
    const t = this.tensors.get(name);
    if (!t) throw new MissingTensorError(`${this.source}: missing tensor "${name}"`);
    if (shape && (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))) {
      throw new MissingTensorError(`${this.source}: tensor "${name}" has shape [${t.shape}], expected [${shape}]`);
    }
    const floats: DType[] = ['F32', 'BF16', 'F16'];
    if (!floats.includes(t.dtype)) {
      // The checkpoint's own name, as the file spells it.
      throw new UnsupportedDtypeError(this.source, `has dtype ${t.dtype}; model weights must be F32, BF16 or F16`, this.original?.get(name) ?? name);
    }
    this.read.add(this.original?.get(name) ?? name);
    return this.place(t);
  }

  /** Any tensor by name, recorded as read (quantized layers' side tensors: absmax, SCB, quant_state…); undefined if absent. */
  take(name: string): Tensor | undefined {
    const t = this.tensors.get(name);
    if (t) this.read.add(this.original?.get(name) ?? name);
    return t;
  }

  vector(name: string, length: number): Tensor<'F32'> {
    const t = this.unplaced().matrix(name, [length]);
    return this.place(t.dtype === 'F32' ? (t as Tensor<'F32'>) : new Tensor('F32', t.shape, toF32Array(t.dtype, t.data)));
  }

  /** This view without uploads (reads still recorded): quantize-on-load reads the float weights on the host. */
  unplaced(): Weights {
    if (!this.placed) return this;
    const v = new Weights(this.tensors, this.source);
    v.read = this.read;
    v.original = this.original;
    return v;
  }

  optionalVector(name: string, length: number): Tensor<'F32'> | null {
    return this.has(name) ? this.vector(name, length) : null;
  }

  /** Checkpoint names (as stored) that no model code has read, in checkpoint order. */
  unused(): string[] {
    const names = this.original ? [...this.original.values()] : [...this.tensors.keys()];
    return names.filter((n) => !this.read.has(n));
  }
}

/**
 * Check the checkpoint's layers `${prefix}.<i>.*` against num_hidden_layers before a model allocates per-layer
 * state, so a config that claims 10⁹ layers fails on the first missing tensor instead of exhausting the heap.
 */
export function checkLayerCount(w: Weights, prefix: string, numLayers: number): void {
  const head = `${prefix}.`;
  const present = new Map<number, string>();            // layer index → one of its tensor names
  for (const name of w.tensors.keys()) {
    if (!name.startsWith(head)) continue;
    const m = /^(\d+)\./.exec(name.slice(head.length));
    if (m && !present.has(Number(m[1]))) present.set(Number(m[1]), name);
  }
  const extra = [...present.keys()].filter((i) => i >= numLayers).sort((a, b) => a - b);
  if (extra.length) {
    throw new MissingTensorError(`${w.source}: tensor "${present.get(extra[0])}" belongs to layer ${extra[0]}, but config.json has num_hidden_layers ${numLayers} (the checkpoint has ${present.size} layers)`);
  }
  // Only indices up to present.size can be the first gap, so this loop is short whatever numLayers says.
  for (let i = 0; i < numLayers; i++) {
    if (present.has(i)) continue;
    const like = present.get(0) ?? present.values().next().value;
    const missing = like ? `${head}${i}${like.slice(head.length).replace(/^\d+/, '')}` : `${head}${i}.*`;
    throw new MissingTensorError(`${w.source}: missing tensor "${missing}": config.json has num_hidden_layers ${numLayers}, the checkpoint has ${present.size} layer${present.size === 1 ? '' : 's'}`);
  }
}

export interface PreparedInput {
  ids: Int32Array;
  B: number;
  T: number;
  mask: Uint8Array | null;
}

/**
 * Flatten [B, T] ids (or take a flat Int32Array), check every id against the vocabulary before any kernel runs, and
 * cut the attention mask down to the new tokens.
 */
export function prepareInput(inputIds: ArrayLike<number>[] | { ids: Int32Array; batch: number }, opts: ForwardOptions, vocabSize: number): PreparedInput {
  let ids: Int32Array, B: number, T: number;
  if (Array.isArray(inputIds)) {
    B = inputIds.length;
    T = B ? inputIds[0].length : 0;
    ids = new Int32Array(B * T);
    inputIds.forEach((row, b) => {
      if (row.length !== T) throw new RangeError(`inputIds: row ${b} has ${row.length} tokens, row 0 has ${T}`);
      for (let t = 0; t < T; t++) {
        checkTokenId(row[t], b, t, vocabSize, 'inputIds');
        ids[b * T + t] = row[t];
      }
    });
  } else {
    const flat = inputIds as { ids: Int32Array; batch: number };
    ids = flat.ids; B = flat.batch; T = ids.length / B;
    if (!Number.isInteger(T)) throw new RangeError(`inputIds: ${ids.length} ids do not split into ${B} rows`);
    for (let i = 0; i < ids.length; i++) checkTokenId(ids[i], Math.floor(i / T), i % T, vocabSize, 'inputIds');
  }
  if (B === 0 || T === 0) throw new RangeError('inputIds: empty batch');
  let mask: Uint8Array | null = null;
  const m = opts.attentionMask;
  if (m) {
    const past = opts.cache?.length ?? 0;
    const flat = m instanceof Uint8Array ? m : Uint8Array.from((m as ArrayLike<number>[]).flatMap((r) => Array.from(r)));
    const cols = flat.length / B;
    if (cols !== T && cols !== past + T) throw new RangeError(`attentionMask: expected [${B}, ${T}] or [${B}, ${past + T}], got ${flat.length} values`);
    mask = new Uint8Array(B * T);
    for (let b = 0; b < B; b++) mask.set(flat.subarray(b * cols + cols - T, (b + 1) * cols), b * T);
  }
  return { ids, B, T, mask };
}

/** Throw a TokenIdError unless `id` is an integer in [0, vocabSize). `what` names the input ("inputIds", "prompt"). */
export function checkTokenId(id: unknown, row: number, position: number, vocabSize: number, what: string): void {
  if (typeof id === 'number' && Number.isInteger(id) && id >= 0 && id < vocabSize) return;
  const why = typeof id === 'number' && Number.isInteger(id)
    ? `is token id ${id}, outside the vocabulary (vocab_size ${vocabSize}: ids 0…${vocabSize - 1})`
    : `is ${JSON.stringify(id) ?? String(id)}, not an integer token id`;
  throw new TokenIdError(`${what}: row ${row}, position ${position} ${why}`, row, position, id, vocabSize);
}

/** Rows [B·T, D] → the last position of each sequence, [B, D]. */
export function lastRows(be: Backend, x: Tensor<'F32'>, B: number, T: number): Tensor<'F32'> {
  const D = x.shape[x.shape.length - 1];
  if (T === 1) return x.reshape([B, D]);
  const out = be.empty('F32', [B, D]);
  for (let b = 0; b < B; b++) be.copy(out, b * D, x, ((b + 1) * T - 1) * D, D);
  return out;
}

/** The linear layers of per-layer projection tables plus the LM head, by HF name. */
export function linearsOf(tables: Record<string, LinearLike>[], lmHead: LinearLike): Map<string, LinearLike> {
  const m = new Map<string, LinearLike>();
  for (const t of tables) for (const p of Object.values(t)) m.set(p.name, p);
  m.set(lmHead.name, lmHead);
  return m;
}

/** Swap the projection called `name` in one of the tables; false when none has it. */
export function replaceIn(tables: Record<string, LinearLike>[], name: string, layer: LinearLike): boolean {
  for (const t of tables) {
    for (const key of Object.keys(t)) {
      if (t[key].name === name) { t[key] = layer; return true; }
    }
  }
  return false;
}

/**
 * What decoder-only models share: the linear-layer hooks over per-layer projection tables (for quantizers and LoRA)
 * and the position limit. A model file supplies its layers, its head and its forward.
 */
export abstract class DecoderLM implements CausalLM {
  abstract readonly config: ModelConfig;
  abstract readonly backend: Backend;
  abstract readonly layers: { proj: Record<string, LinearLike> }[];
  abstract lmHead: LinearLike;
  abstract forward(inputIds: ArrayLike<number>[] | { ids: Int32Array; batch: number }, opts?: ForwardOptions): Tensor<'F32'>;
  abstract createCache(batch: number, capacity: number): KVCache;

  get maxPositions(): number { return this.config.max_position_embeddings; }

  /** Training keeps one layer's activations at a time and recomputes them in the backward (gradient_checkpointing_enable). */
  gradientCheckpointing = false;
  gradientCheckpointingEnable(): void { this.gradientCheckpointing = true; }

  /**
   * Layer-by-layer access for quantizers that calibrate one decoder layer at a time (GPTQ): the hidden states that
   * enter decoder layer 0 for B full sequences of T tokens (ids [B·T]; no padding, positions 0 … T−1), [B·T, hidden].
   */
  abstract layerInput(ids: Int32Array, B: number, T: number): Tensor<'F32'>;
  /** A copy of x on the model's backend (a device tensor has no host array to clone). */
  protected copyOf(x: Tensor<'F32'>): Tensor<'F32'> {
    if (x.device === 'cpu') return x.clone();
    const y = this.backend.empty('F32', x.shape);
    this.backend.copy(y, 0, x, 0, x.numel);
    return y;
  }

  /** Decoder layer l on such hidden states x [B·T, hidden], without a cache; x is not changed, the output is new. */
  abstract forwardLayer(l: number, x: Tensor<'F32'>, B: number, T: number): Tensor<'F32'>;

  /**
   * AWQ's module2inspect (src/quant/awq-driver.ts): decoder layer l's attention block on a normed input h [B·T,
   * hidden] of B full sequences (positions 0 … T−1, no cache), without the residual: o_proj(Attn(q, k, v)). The layer's
   * own forward runs through the same code.
   */
  abstract attentionBlock(l: number, h: Tensor<'F32'>, B: number, T: number): Tensor<'F32'>;
  /** The same for the MLP block: down_proj(silu(gate_proj(h))·up_proj(h)), or OPT's fc2(relu(fc1(h))). */
  abstract mlpBlock(l: number, h: Tensor<'F32'>): Tensor<'F32'>;
  /** Decoder layer l's norms by their HF names relative to the layer (input_layernorm, final_layer_norm, …). */
  abstract layerNorms(l: number): Record<string, RMSNorm | LayerNorm>;
  /** Swap one of them (AWQ folds its scales into a copy: checkpoint weights are read-only). */
  abstract setLayerNorm(l: number, key: string, norm: RMSNorm | LayerNorm): void;
  /** Whether each layer norm's output feeds only the linears after it (pre-LN); OPT's post-LN norms also feed the residual. */
  get preNorm(): boolean { return true; }

  /** Linear layers outside the per-layer tables (OPT's project_in / project_out), keyed by short name. */
  readonly outer: Record<string, LinearLike> = {};

  private tables(): Record<string, LinearLike>[] {
    return [this.outer, ...this.layers.map((L) => L.proj)];
  }

  linears(): Map<string, LinearLike> {
    return linearsOf(this.tables(), this.lmHead);
  }

  replaceLinear(name: string, layer: LinearLike): void {
    if (name === this.lmHead.name) { this.lmHead = layer; return; }
    if (!replaceIn(this.tables(), name, layer)) throw new Error(`no linear layer named "${name}"`);
  }
}
