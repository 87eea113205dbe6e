// Llama decoder (also Mistral; Qwen2 differs only in its bias table). ../shared/spec/FORMATS.md §8.2.
// Per layer, pre-norm: h += o_proj(Attn(RMSNorm(h))); h += down_proj(silu(gate_proj(x)) · up_proj(x)).
import type { Backend } from '../backend/backend.js';
import type { LlamaConfig } from '../io/config.js';
import { KVCache } from '../nn/kvcache.js';
import { Embedding, Linear, LinearLike, RMSNorm } from '../nn/layers.js';
import { forwardGateUp, forwardShared } from '../nn/quant.js';
import { RopeFrequencies } from '../nn/rope.js';
import { Tensor } from '../tensor/tensor.js';
import { linearFactory, type LinearFactory } from './factory.js';
import { checkLayerCount, DecoderLM, ForwardOptions, lastRows, prepareInput, Weights } from './model.js';

/** Which projections carry a bias: per-architecture data, not branches. */
export interface LlamaBiases { qkv: boolean; o: boolean; mlp: boolean }

/** What every layer of one forward shares: positions, RoPE frequencies, the cache (null: the new tokens are all). */
interface LayerContext {
  B: number; T: number; positions: Int32Array; invFreq: Float32Array; pastLen: number; keyMask: Uint8Array | null; cache: KVCache | null;
}

interface Layer {
  inputNorm: RMSNorm;
  postNorm: RMSNorm;
  proj: Record<'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj', LinearLike>;
}

export class LlamaForCausalLM extends DecoderLM {
  embed: Embedding;
  readonly layers: Layer[] = [];
  norm: RMSNorm;
  lmHead: LinearLike;
  private readonly rope: RopeFrequencies;

  /** `linear` builds every projection (float, or quantized per quantization_config); lm_head stays float. */
  constructor(readonly config: LlamaConfig, w: Weights, readonly backend: Backend,
              opts: { linear?: LinearFactory; biases?: LlamaBiases } = {}) {
    super();
    const c = config;
    checkLayerCount(w, 'model.layers', c.num_hidden_layers);
    this.rope = new RopeFrequencies(c);
    const b = opts.biases ?? { qkv: c.attention_bias, o: c.attention_bias, mlp: c.mlp_bias };
    if (c.hidden_act !== 'silu') throw new Error(`${w.source}: hidden_act "${c.hidden_act}" is not supported (only silu)`);
    const H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
    const qOut = c.num_attention_heads * hd, kvOut = c.num_key_value_heads * hd;
    const lin = opts.linear ?? linearFactory(w, backend, null);
    // Tied checkpoints may keep only one of the pair (torch's save_model drops the duplicate): tie either way.
    const embedName = c.tie_word_embeddings && !w.has('model.embed_tokens.weight') && w.has('lm_head.weight') ? 'lm_head.weight' : 'model.embed_tokens.weight';
    this.embed = new Embedding(backend, 'model.embed_tokens', w.matrix(embedName, [c.vocab_size, H]));
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const p = `model.layers.${i}`;
      this.layers.push({
        inputNorm: new RMSNorm(backend, `${p}.input_layernorm`, w.vector(`${p}.input_layernorm.weight`, H), c.rms_norm_eps),
        postNorm: new RMSNorm(backend, `${p}.post_attention_layernorm`, w.vector(`${p}.post_attention_layernorm.weight`, H), c.rms_norm_eps),
        proj: {
          q_proj: lin(`${p}.self_attn.q_proj`, qOut, H, b.qkv),
          k_proj: lin(`${p}.self_attn.k_proj`, kvOut, H, b.qkv),
          v_proj: lin(`${p}.self_attn.v_proj`, kvOut, H, b.qkv),
          o_proj: lin(`${p}.self_attn.o_proj`, H, qOut, b.o),
          gate_proj: lin(`${p}.mlp.gate_proj`, I, H, b.mlp),
          up_proj: lin(`${p}.mlp.up_proj`, I, H, b.mlp),
          down_proj: lin(`${p}.mlp.down_proj`, H, I, b.mlp),
        },
      });
    }
    this.norm = new RMSNorm(backend, 'model.norm', w.vector('model.norm.weight', H), c.rms_norm_eps);
    const tied = c.tie_word_embeddings || !w.has('lm_head.weight');
    if (tied && !c.tie_word_embeddings) throw new Error(`${w.source}: missing tensor "lm_head.weight" (tie_word_embeddings is false)`);
    this.lmHead = new Linear(backend, 'lm_head', tied ? this.embed.weight : w.matrix('lm_head.weight', [c.vocab_size, H]), null);
  }

  /**
   * Dynamic NTK scaling exists to run past the trained context: transformers documents `factor` × the original
   * length as what it reaches. Other scalings already state their reach in max_position_embeddings.
   */
  override get maxPositions(): number {
    const c = this.config, s = c.rope_scaling;
    if (s?.rope_type !== 'dynamic') return c.max_position_embeddings;
    return Math.max(c.max_position_embeddings, Math.floor(s.factor * (s.original_max_position_embeddings ?? c.max_position_embeddings)));
  }

  /** RoPE inverse frequencies for positions up to maxPos (dynamic scaling depends on it). */
  ropeInvFreq(maxPos: number): Float32Array {
    return this.rope.get(maxPos);
  }

  /** Every weight outside the linear layers (embedding, norms), for parameter counts. */
  nonLinearParameters(): Tensor[] {
    return [this.embed.weight, ...this.layers.flatMap((L) => [L.inputNorm.weight, L.postNorm.weight]), this.norm.weight];
  }

  createCache(batch: number, capacity: number): KVCache {
    const c = this.config;
    return new KVCache(c.num_hidden_layers, batch, capacity, c.num_key_value_heads, c.head_dim, this.backend);
  }

  forward(inputIds: ArrayLike<number>[] | { ids: Int32Array; batch: number }, opts: ForwardOptions = {}): Tensor<'F32'> {
    const c = this.config;
    const { ids, B, T, mask } = prepareInput(inputIds, opts, c.vocab_size);
    const cache = opts.cache ?? this.createCache(B, T);
    const pastLen = cache.length;
    const { positions, keyMask } = cache.begin(T, mask, opts.positions ?? null);
    let maxPos = 0;
    for (const p of positions) maxPos = Math.max(maxPos, p);
    const ctx: LayerContext = { B, T, positions, invFreq: this.rope.get(maxPos), pastLen, keyMask, cache };

    const x = this.embed.forward(ids);                                 // [B·T, H]
    // Each layer leaves its MLP output to be added at the start of the next (fused with that norm where the backend
    // can: addRmsnorm); the last one is added here.
    let pending: Tensor<'F32'> | null = null;
    for (let l = 0; l < this.layers.length; l++) pending = this.layer(l, x, ctx, pending);
    if (pending) { this.backend.add(x, pending, x); this.backend.release?.(pending); }
    cache.advance(T);
    const last = opts.logits === 'last';
    const hN = this.norm.forward(last ? lastRows(this.backend, x, B, T) : x);
    return this.lmHead.forward(hN).reshape([B, last ? 1 : T, c.vocab_size]);
  }

  layerInput(ids: Int32Array, B: number, T: number): Tensor<'F32'> {
    prepareInput({ ids, batch: B }, {}, this.config.vocab_size);
    if (ids.length !== B * T) throw new RangeError(`layerInput: ${ids.length} ids are not ${B} rows of ${T}`);
    return this.embed.forward(ids);
  }

  forwardLayer(l: number, x: Tensor<'F32'>, B: number, T: number): Tensor<'F32'> {
    const y = this.copyOf(x);
    this.backend.add(y, this.layer(l, y, this.plainContext(B, T), null), y);
    return y;
  }

  attentionBlock(l: number, h: Tensor<'F32'>, B: number, T: number): Tensor<'F32'> {
    return this.attention(l, h, this.plainContext(B, T));
  }

  mlpBlock(l: number, h: Tensor<'F32'>): Tensor<'F32'> {
    return this.mlp(l, h);
  }

  layerNorms(l: number): Record<string, RMSNorm> {
    const L = this.layers[l];
    return { input_layernorm: L.inputNorm, post_attention_layernorm: L.postNorm };
  }

  setLayerNorm(l: number, key: string, norm: RMSNorm): void {
    const L = this.layers[l];
    if (key === 'input_layernorm') L.inputNorm = norm;
    else if (key === 'post_attention_layernorm') L.postNorm = norm;
    else throw new Error(`${this.config.model_type} layer ${l} has no norm "${key}"`);
  }

  /** Positions 0 … T−1 for each of B sequences, no cache. */
  private plainContext(B: number, T: number): LayerContext {
    const positions = new Int32Array(B * T);
    for (let i = 0; i < B * T; i++) positions[i] = i % T;
    return { B, T, positions, invFreq: this.rope.get(T - 1), pastLen: 0, keyMask: null, cache: null };
  }

  /**
   * Decoder layer l on the residual stream x [B·T, H], in place: x += pending (the previous layer's MLP output),
   * x += attention, and the layer's MLP output is returned for the caller to add (so each residual add can fuse with
   * the norm after it). Without a cache, the new keys and values are the whole context.
   */
  private layer(l: number, x: Tensor<'F32'>, ctx: LayerContext, pending: Tensor<'F32'> | null): Tensor<'F32'> {
    const L = this.layers[l];
    const h = L.inputNorm.addForward(x, pending), a = this.attention(l, h, ctx);
    const h2 = L.postNorm.addForward(x, a), m = this.mlp(l, h2);
    this.backend.release?.(h, a, h2, pending);  // a device backend reuses their memory at once
    return m;
  }

  /** o_proj(Attn(q, k, v)) of the normed input h [B·T, H]. */
  private attention(l: number, h: Tensor<'F32'>, ctx: LayerContext): Tensor<'F32'> {
    const c = this.config, be = this.backend, L = this.layers[l];
    const { B, T, positions, invFreq, pastLen, keyMask, cache } = ctx;
    const nH = c.num_attention_heads, nKV = c.num_key_value_heads, hd = c.head_dim;
    // [B·T, nH·hd], [B·T, nKV·hd] ×2; one joined call where the backend can (GPTQ/AWQ).
    const [q, k, v] = forwardShared([L.proj.q_proj, L.proj.k_proj, L.proj.v_proj], h);
    if (cache?.memory.ropeAppend) {
      cache.appendRoped(l, q.reshape([B * T, nH, hd]), k.reshape([B * T, nKV, hd]), v, T, positions, invFreq);  // one op (cuda)
    } else {
      be.rope(q.reshape([B * T, nH, hd]), positions, invFreq);
      be.rope(k.reshape([B * T, nKV, hd]), positions, invFreq);
      cache?.write(l, k, v, T);
    }
    const attn = be.empty('F32', [B, T, nH, hd]);
    const window = c.layer_types[l] === 'sliding_attention' ? c.sliding_window! : 0;
    const kv = cache ? cache.layer(l) : { k: k.reshape([B, T, nKV, hd]), v: v.reshape([B, T, nKV, hd]) };  // [B, S, nKV, hd] each
    be.attention(q.reshape([B, T, nH, hd]), kv.k, kv.v, { pastLen, keyMask, scale: 1 / Math.sqrt(hd), window }, attn);
    const o = L.proj.o_proj.forward(attn.reshape([B * T, nH * hd]));
    be.release?.(q, k, v, attn);
    return o;
  }

  /** down_proj(silu(gate_proj(h))·up_proj(h)) of the normed input h [B·T, H]. */
  private mlp(l: number, h: Tensor<'F32'>): Tensor<'F32'> {
    const L = this.layers[l];
    const g = forwardGateUp(this.backend, L.proj.gate_proj, L.proj.up_proj, h);
    const d = L.proj.down_proj.forward(g);
    this.backend.release?.(g);
    return d;
  }
}
