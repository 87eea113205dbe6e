// OPT decoder (facebook/opt-*), ../shared/spec/FORMATS.md §8.3. Learned positions with offset 2, LayerNorm with bias, ReLU MLP,
// pre-LN (125m, 1.3b+) or post-LN (350m), and project_in/out when word_embed_proj_dim ≠ hidden_size.
import type { Backend } from '../backend/backend.js';
import type { OptConfig } from '../io/config.js';
import { KVCache } from '../nn/kvcache.js';
import { Embedding, LayerNorm, Linear, LinearLike } from '../nn/layers.js';
import { forwardShared } from '../nn/quant.js';
import { Tensor } from '../tensor/tensor.js';
import { linearFactory, type LinearFactory } from './factory.js';
import { checkLayerCount, DecoderLM, ForwardOptions, lastRows, prepareInput, Weights } from './model.js';

const POSITION_OFFSET = 2;

/** What every layer of one forward shares: the cache (null: the new tokens are all) and its mask. */
interface LayerContext { B: number; T: number; pastLen: number; keyMask: Uint8Array | null; cache: KVCache | null }

interface Layer {
  attnNorm: LayerNorm;
  ffnNorm: LayerNorm;
  proj: Record<'q_proj' | 'k_proj' | 'v_proj' | 'out_proj' | 'fc1' | 'fc2', LinearLike>;
}

export class OPTForCausalLM extends DecoderLM {
  embed: Embedding;
  positions: Embedding;
  readonly layers: Layer[] = [];
  finalNorm: LayerNorm | null;
  lmHead: LinearLike;

  /** `linear(w)` makes the factory for the (possibly renamed) weights; lm_head stays float. */
  constructor(readonly config: OptConfig, weights: Weights, readonly backend: Backend,
              linear: (w: Weights) => LinearFactory = (w) => linearFactory(w, backend, null)) {
    super();
    const c = config;
    if (c.activation_function !== 'relu') throw new Error(`${weights.source}: activation_function "${c.activation_function}" is not supported (only relu)`);
    // Checkpoints saved from OPTModel lack the "model." prefix; transformers accepts both.
    const prefixed = [...weights.tensors.keys()].some((k) => k.startsWith('model.decoder.'));
    const w = prefixed ? weights : weights.renamed((k) => (k.startsWith('decoder.') ? `model.${k}` : k));
    const H = c.hidden_size, E = c.word_embed_proj_dim, F = c.ffn_dim;
    const bias = c.enable_bias;
    const lin = linear(w);
    const ln = (name: string, dim: number) => new LayerNorm(backend, name, w.vector(`${name}.weight`, dim), w.vector(`${name}.bias`, dim), 1e-5);
    if (!c.layer_norm_elementwise_affine) throw new Error(`${weights.source}: layer_norm_elementwise_affine=false is not supported`);

    const d = 'model.decoder';
    checkLayerCount(w, `${d}.layers`, c.num_hidden_layers);
    this.embed = new Embedding(backend, `${d}.embed_tokens`, w.matrix(`${d}.embed_tokens.weight`, [c.vocab_size, E]));
    this.positions = new Embedding(backend, `${d}.embed_positions`,
      w.matrix(`${d}.embed_positions.weight`, [c.max_position_embeddings + POSITION_OFFSET, H]));
    if (E !== H) {
      this.outer.project_in = lin(`${d}.project_in`, H, E, false);
      this.outer.project_out = lin(`${d}.project_out`, E, H, false);
    }
    for (let i = 0; i < c.num_hidden_layers; i++) {
      const p = `${d}.layers.${i}`;
      this.layers.push({
        attnNorm: ln(`${p}.self_attn_layer_norm`, H),
        ffnNorm: ln(`${p}.final_layer_norm`, H),
        proj: {
          q_proj: lin(`${p}.self_attn.q_proj`, H, H, bias),
          k_proj: lin(`${p}.self_attn.k_proj`, H, H, bias),
          v_proj: lin(`${p}.self_attn.v_proj`, H, H, bias),
          out_proj: lin(`${p}.self_attn.out_proj`, H, H, bias),
          fc1: lin(`${p}.fc1`, F, H, bias),
          fc2: lin(`${p}.fc2`, H, F, bias),
        },
      });
    }
    this.finalNorm = c.do_layer_norm_before && !c._remove_final_layer_norm ? ln(`${d}.final_layer_norm`, H) : null;
    const head = w.has('lm_head.weight') && !c.tie_word_embeddings ? w.matrix('lm_head.weight', [c.vocab_size, E]) : this.embed.weight;
    this.lmHead = new Linear(backend, 'lm_head', head, null);
  }

  /** Every weight outside the linear layers (embeddings, LayerNorm weights and biases), for parameter counts. */
  nonLinearParameters(): Tensor[] {
    const norms = [...this.layers.flatMap((L) => [L.attnNorm, L.ffnNorm]), ...(this.finalNorm ? [this.finalNorm] : [])];
    return [this.embed.weight, this.positions.weight, ...norms.flatMap((n) => [n.weight, n.bias])];
  }

  createCache(batch: number, capacity: number): KVCache {
    const c = this.config;
    return new KVCache(c.num_hidden_layers, batch, capacity, c.num_attention_heads, c.hidden_size / c.num_attention_heads, this.backend);
  }

  forward(inputIds: ArrayLike<number>[] | { ids: Int32Array; batch: number }, opts: ForwardOptions = {}): Tensor<'F32'> {
    const c = this.config;
    const { ids, B, T, mask } = prepareInput(inputIds, opts, c.vocab_size);
    const cache = opts.cache ?? this.createCache(B, T);
    const pastLen = cache.length;
    // OPT: position = cumsum(mask)·mask − 1, so padding → −1 → row 1 after the offset.
    const { positions, keyMask } = cache.begin(T, mask, opts.positions ?? null, -1);
    let x = this.embedTokens(ids, positions);                          // [B·T, H]
    for (let l = 0; l < this.layers.length; l++) x = this.layer(l, x, { B, T, pastLen, keyMask, cache });
    cache.advance(T);
    const last = opts.logits === 'last';
    let y = last ? lastRows(this.backend, x, B, T) : x;
    if (this.finalNorm) y = this.finalNorm.forward(y);
    if (this.outer.project_out) y = this.outer.project_out.forward(y); // [B·T, E]
    return this.lmHead.forward(y).reshape([B, last ? 1 : T, c.vocab_size]);
  }

  layerInput(ids: Int32Array, B: number, T: number): Tensor<'F32'> {
    prepareInput({ ids, batch: B }, {}, this.config.vocab_size);
    if (ids.length !== B * T) throw new RangeError(`layerInput: ${ids.length} ids are not ${B} rows of ${T}`);
    const positions = new Int32Array(B * T);
    for (let i = 0; i < B * T; i++) positions[i] = i % T;
    return this.embedTokens(ids, positions);
  }

  forwardLayer(l: number, x: Tensor<'F32'>, B: number, T: number): Tensor<'F32'> {
    return this.layer(l, this.copyOf(x), { B, T, pastLen: 0, keyMask: null, cache: null });
  }

  /** Token embeddings (through project_in) plus the learned positions: what enters layer 0, [B·T, H]. */
  private embedTokens(ids: Int32Array, positions: Int32Array): Tensor<'F32'> {
    const c = this.config;
    const posIds = new Int32Array(positions.length);
    for (let i = 0; i < posIds.length; i++) {
      if (positions[i] >= c.max_position_embeddings) {
        throw new RangeError(`OPT: position ${positions[i]} is past the ${c.max_position_embeddings} learned positions (max_position_embeddings)`);
      }
      posIds[i] = positions[i] + POSITION_OFFSET;
    }
    let x = this.embed.forward(ids);                                   // [B·T, E]
    if (this.outer.project_in) x = this.outer.project_in.forward(x);   // [B·T, H]
    this.backend.add(x, this.positions.forward(posIds), x);
    return x;
  }

  attentionBlock(l: number, h: Tensor<'F32'>, B: number, T: number): Tensor<'F32'> {
    return this.attention(l, h, { B, T, pastLen: 0, keyMask: null, cache: null });
  }

  mlpBlock(l: number, h: Tensor<'F32'>): Tensor<'F32'> {
    return this.mlp(l, h);
  }

  layerNorms(l: number): Record<string, LayerNorm> {
    const L = this.layers[l];
    return { self_attn_layer_norm: L.attnNorm, final_layer_norm: L.ffnNorm };
  }

  setLayerNorm(l: number, key: string, norm: LayerNorm): void {
    const L = this.layers[l];
    if (key === 'self_attn_layer_norm') L.attnNorm = norm;
    else if (key === 'final_layer_norm') L.ffnNorm = norm;
    else throw new Error(`opt layer ${l} has no norm "${key}"`);
  }

  override get preNorm(): boolean { return this.config.do_layer_norm_before; }

  /** Decoder layer l on x [B·T, H], in place; without a cache, the new keys and values are the whole context. */
  private layer(l: number, x: Tensor<'F32'>, ctx: LayerContext): Tensor<'F32'> {
    const be = this.backend, L = this.layers[l];
    const pre = this.config.do_layer_norm_before;
    be.add(x, this.attention(l, pre ? L.attnNorm.forward(x) : x, ctx), x);
    if (!pre) x = L.attnNorm.forward(x);
    be.add(x, this.mlp(l, pre ? L.ffnNorm.forward(x) : x), x);
    if (!pre) x = L.ffnNorm.forward(x);
    return x;
  }

  /** out_proj(Attn(q, k, v)) of the (normed) input h [B·T, H]. */
  private attention(l: number, h: Tensor<'F32'>, ctx: LayerContext): Tensor<'F32'> {
    const c = this.config, be = this.backend, L = this.layers[l];
    const { B, T, pastLen, keyMask, cache } = ctx;
    const nH = c.num_attention_heads, hd = c.hidden_size / nH;
    const [q, k, v] = forwardShared([L.proj.q_proj, L.proj.k_proj, L.proj.v_proj], h);   // [B·T, H] = [B, T, nH, hd]
    cache?.write(l, k, v, T);
    const attn = be.empty('F32', [B, T, nH, hd]);
    // transformers scales q by hd^-0.5 before q·kᵀ; folding it into the score scale is the same product.
    const kv = cache ? cache.layer(l) : { k: k.reshape([B, T, nH, hd]), v: v.reshape([B, T, nH, hd]) };  // [B, S, nH, hd] each
    be.attention(q.reshape([B, T, nH, hd]), kv.k, kv.v, { pastLen, keyMask, scale: 1 / Math.sqrt(hd) }, attn);
    const o = L.proj.out_proj.forward(attn.reshape([B * T, c.hidden_size]));
    be.release?.(q, k, v, attn);  // a device backend reuses their memory at once
    return o;
  }

  /** fc2(relu(fc1(h))). */
  private mlp(l: number, h: Tensor<'F32'>): Tensor<'F32'> {
    const L = this.layers[l];
    const f = L.proj.fc1.forward(h);
    this.backend.relu(f, f);
    const y = L.proj.fc2.forward(f);
    this.backend.release?.(f);
    return y;
  }
}
