// What every causal LM offers, the weight lookup the model files share, and input normalisation.
import type { Backend } from '../backend/backend.js';
import type { ModelConfig } from '../io/config.js';
import type { LinearLike } from '../nn/layers.js';
import { KVCache } from '../nn/kvcache.js';
import { DType, toF32Array } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';

export class MissingTensorError extends Error { override name = 'MissingTensorError'; }

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
  /** Token ids [B, T] (or a flat Int32Array with `batch` rows) → logits [B, T, V] (or [B, 1, V]). */
  forward(inputIds: ArrayLike<number>[] | { ids: Int32Array; batch: number }, opts?: ForwardOptions): Tensor<'F32'>;
  createCache(batch: number, capacity: number): KVCache;
  /** Every linear layer by HF name: the layers quantizers and LoRA swap. */
  linears(): Map<string, LinearLike>;
  replaceLinear(name: string, layer: LinearLike): void;
}

/** Named weights of one checkpoint. Matrices keep their dtype; vectors (norms, biases) are widened to F32. */
export class Weights {
  constructor(readonly tensors: Map<string, Tensor>, readonly source: string) {}

  has(name: string): boolean { return this.tensors.has(name); }

  matrix(name: string, shape?: readonly number[]): Tensor {
    const t = this.tensors.get(name);
    if (!t) throw new MissingTensorError(`${this.source}: missing tensor "${name}"`);
    if (shape && (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))) {
      throw new MissingTensorError(`${this.source}: tensor "${name}" has shape [${t.shape}], expected [${shape}]`);
    }
    const floats: DType[] = ['F32', 'BF16', 'F16'];
    if (!floats.includes(t.dtype)) throw new MissingTensorError(`${this.source}: tensor "${name}" has dtype ${t.dtype}, expected a float type`);
    return t;
  }

  vector(name: string, length: number): Tensor<'F32'> {
    const t = this.matrix(name, [length]);
    return t.dtype === 'F32' ? (t as Tensor<'F32'>) : new Tensor('F32', t.shape, toF32Array(t.dtype, t.data));
  }

  optionalVector(name: string, length: number): Tensor<'F32'> | null {
    return this.has(name) ? this.vector(name, length) : null;
  }
}

export interface PreparedInput {
  ids: Int32Array;
  B: number;
  T: number;
  mask: Uint8Array | null;
}

export function prepareInput(inputIds: ArrayLike<number>[] | { ids: Int32Array; batch: number }, opts: ForwardOptions): PreparedInput {
  let ids: Int32Array, B: number, T: number;
  if (Array.isArray(inputIds)) {
    B = inputIds.length;
    T = B ? inputIds[0].length : 0;
    ids = new Int32Array(B * T);
    inputIds.forEach((row, b) => {
      if (row.length !== T) throw new RangeError(`inputIds: row ${b} has ${row.length} tokens, row 0 has ${T}`);
      for (let t = 0; t < T; t++) {
        if (!Number.isInteger(row[t])) throw new RangeError(`inputIds: row ${b}, position ${t} is ${JSON.stringify(row[t])}, not an integer token id`);
        ids[b * T + t] = row[t];
      }
    });
  } else {
    const flat = inputIds as { ids: Int32Array; batch: number };
    ids = flat.ids; B = flat.batch; T = ids.length / B;
    if (!Number.isInteger(T)) throw new RangeError(`inputIds: ${ids.length} ids do not split into ${B} rows`);
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

/** Rows [B·T, D] → the last position of each sequence, [B, D]. */
export function lastRows(x: Tensor<'F32'>, B: number, T: number): Tensor<'F32'> {
  const D = x.shape[x.shape.length - 1];
  const out = Tensor.zeros('F32', [B, D]);
  for (let b = 0; b < B; b++) out.f32.set(x.f32.subarray(((b + 1) * T - 1) * D, (b + 1) * T * D), b * D);
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
