// Typed readers for HF config.json (FORMATS.md §8). Field names keep their JSON spelling; defaults are
// transformers' own. transformers v5 folds rope_theta/rope_scaling into rope_parameters: both shapes are accepted.
import { readFileSync } from 'node:fs';

export class ConfigError extends Error { override name = 'ConfigError'; }
export class UnsupportedModelError extends ConfigError { override name = 'UnsupportedModelError'; }

export interface RopeScaling {
  rope_type: 'default' | 'linear' | 'dynamic' | 'llama3';
  factor: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
}

interface BaseConfig {
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  tie_word_embeddings: boolean;
  bos_token_id: number | null;
  eos_token_id: number | number[] | null;
  pad_token_id: number | null;
  torch_dtype: string | null;
  /** Anything else from the file (quantization_config and so on). */
  raw: Record<string, unknown>;
}

/** llama, mistral and qwen2 share one decoder. */
export interface LlamaConfig extends BaseConfig {
  model_type: 'llama' | 'mistral' | 'qwen2';
  intermediate_size: number;
  num_key_value_heads: number;
  head_dim: number;
  hidden_act: string;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: RopeScaling | null;
  attention_bias: boolean;
  mlp_bias: boolean;
  sliding_window: number | null;
  /** Per layer: whether it attends through the sliding window (resolved from layer_types / use_sliding_window). */
  layer_types: ('full_attention' | 'sliding_attention')[];
}

export interface OptConfig extends BaseConfig {
  model_type: 'opt';
  ffn_dim: number;
  word_embed_proj_dim: number;
  do_layer_norm_before: boolean;
  activation_function: string;
  enable_bias: boolean;
  layer_norm_elementwise_affine: boolean;
  _remove_final_layer_norm: boolean;
}

export type ModelConfig = LlamaConfig | OptConfig;

export const SUPPORTED_MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'opt'] as const;

export function readConfig(path: string): ModelConfig {
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(`${path}: cannot read config: ${(e as Error).message}`);
  }
  return parseConfig(json, path);
}

export function parseConfig(json: unknown, source = 'config.json'): ModelConfig {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new ConfigError(`${source}: not a JSON object`);
  const raw = json as Record<string, unknown>;
  const r = new Reader(raw, source);
  const modelType = raw.model_type;
  if (typeof modelType !== 'string') throw new ConfigError(`${source}: missing "model_type"`);
  if (modelType === 'opt') return parseOpt(r, raw);
  if (modelType === 'llama' || modelType === 'mistral' || modelType === 'qwen2') return parseLlama(r, raw, modelType);
  throw new UnsupportedModelError(
    `${source}: model_type "${modelType}" is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`);
}

function base(r: Reader, raw: Record<string, unknown>, d: { vocab: number; tie: boolean; maxPos: number; bos: number | null; eos: number | null; pad: number | null }): BaseConfig {
  return {
    vocab_size: r.int('vocab_size', d.vocab),
    hidden_size: r.int('hidden_size'),
    num_hidden_layers: r.int('num_hidden_layers'),
    num_attention_heads: r.int('num_attention_heads'),
    max_position_embeddings: r.int('max_position_embeddings', d.maxPos),
    tie_word_embeddings: r.bool('tie_word_embeddings', d.tie),
    // Token ids may be −1 in older conversions ("none"); transformers accepts them.
    bos_token_id: r.tokenId('bos_token_id', d.bos),
    eos_token_id: r.eos(d.eos),
    pad_token_id: r.tokenId('pad_token_id', d.pad),
    torch_dtype: (raw.torch_dtype ?? raw.dtype ?? null) as string | null,
    raw,
  };
}

function parseLlama(r: Reader, raw: Record<string, unknown>, model_type: LlamaConfig['model_type']): LlamaConfig {
  const isQwen = model_type === 'qwen2';
  const b = base(r, raw, { vocab: 32000, tie: false, maxPos: model_type === 'mistral' ? 4096 * 32 : 2048, bos: 1, eos: 2, pad: null });
  const heads = b.num_attention_heads;
  if (b.hidden_size % heads !== 0 && raw.head_dim == null) {
    throw new ConfigError(`${r.source}: hidden_size ${b.hidden_size} is not divisible by num_attention_heads ${heads} and head_dim is not set`);
  }
  const kv = r.int('num_key_value_heads', heads);
  if (heads % kv !== 0) throw new ConfigError(`${r.source}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kv}`);
  const ropeParams = (raw.rope_parameters ?? null) as Record<string, unknown> | null;
  const theta = r.num('rope_theta', typeof ropeParams?.rope_theta === 'number' ? ropeParams.rope_theta : 10000);
  const useSliding = isQwen ? r.bool('use_sliding_window', false) : true;
  // MistralConfig's default window is 4096; an explicit null turns it off.
  const slidingWindow = useSliding ? r.intOrNull('sliding_window', model_type === 'mistral' ? 4096 : null) : null;
  return {
    ...b,
    model_type,
    intermediate_size: r.int('intermediate_size'),
    num_key_value_heads: kv,
    head_dim: r.int('head_dim', Math.floor(b.hidden_size / heads)),
    hidden_act: r.str('hidden_act', 'silu'),
    rms_norm_eps: r.num('rms_norm_eps', 1e-6),
    rope_theta: theta,
    rope_scaling: parseRopeScaling((raw.rope_scaling ?? ropeParams ?? null) as Record<string, unknown> | null, r.source),
    attention_bias: r.bool('attention_bias', false),
    mlp_bias: r.bool('mlp_bias', false),
    sliding_window: slidingWindow,
    layer_types: layerTypes(r, raw, b.num_hidden_layers, slidingWindow, isQwen),
  };
}

/**
 * Which layers use the sliding window. transformers ≥ 4.5x writes `layer_types`; older configs imply it: Mistral
 * slides in every layer when sliding_window is set, Qwen2 only from layer max_window_layers on.
 */
function layerTypes(r: Reader, raw: Record<string, unknown>, n: number, window: number | null, isQwen: boolean): LlamaConfig['layer_types'] {
  const given = raw.layer_types;
  if (Array.isArray(given)) {
    if (given.length !== n || !given.every((t) => t === 'full_attention' || t === 'sliding_attention')) {
      throw new ConfigError(`${r.source}: "layer_types" must list ${n} entries of "full_attention" or "sliding_attention"`);
    }
    return window === null ? given.map(() => 'full_attention') : (given as LlamaConfig['layer_types']);
  }
  const from = isQwen ? r.int('max_window_layers', 28) : 0;
  return Array.from({ length: n }, (_, i) => (window !== null && i >= from ? 'sliding_attention' : 'full_attention'));
}

function parseRopeScaling(s: Record<string, unknown> | null, source: string): RopeScaling | null {
  if (!s) return null;
  const type = (s.rope_type ?? s.type ?? 'default') as string;
  if (type === 'default') return null;
  if (type !== 'linear' && type !== 'dynamic' && type !== 'llama3') {
    throw new ConfigError(`${source}: rope_scaling type "${type}" is not supported (supported: linear, dynamic, llama3)`);
  }
  const num = (k: string): number | undefined => {
    const v = s[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number') throw new ConfigError(`${source}: rope_scaling.${k} must be a number`);
    return v;
  };
  const factor = num('factor');
  if (factor === undefined) throw new ConfigError(`${source}: rope_scaling of type "${type}" needs "factor"`);
  const out: RopeScaling = { rope_type: type, factor };
  if (type === 'llama3') {
    for (const k of ['low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'] as const) {
      const v = num(k);
      if (v === undefined) throw new ConfigError(`${source}: rope_scaling of type "llama3" needs "${k}"`);
      out[k] = v;
    }
  } else {
    out.original_max_position_embeddings = num('original_max_position_embeddings');
  }
  return out;
}

function parseOpt(r: Reader, raw: Record<string, unknown>): OptConfig {
  const b = base(r, raw, { vocab: 50272, tie: true, maxPos: 2048, bos: 2, eos: 2, pad: 1 });
  return {
    ...b,
    model_type: 'opt',
    ffn_dim: r.int('ffn_dim', 3072),
    word_embed_proj_dim: r.int('word_embed_proj_dim', b.hidden_size),
    do_layer_norm_before: r.bool('do_layer_norm_before', true),
    activation_function: r.str('activation_function', 'relu'),
    enable_bias: r.bool('enable_bias', true),
    layer_norm_elementwise_affine: r.bool('layer_norm_elementwise_affine', true),
    _remove_final_layer_norm: r.bool('_remove_final_layer_norm', false),
  };
}

class Reader {
  constructor(readonly raw: Record<string, unknown>, readonly source: string) {}
  private bad(key: string, want: string): never {
    throw new ConfigError(`${this.source}: "${key}" must be ${want}, got ${JSON.stringify(this.raw[key])}`);
  }
  int(key: string, dflt?: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (dflt === undefined) throw new ConfigError(`${this.source}: missing "${key}"`);
      return dflt;
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.bad(key, 'a non-negative integer');
    return v;
  }
  intOrNull(key: string, dflt: number | null): number | null {
    const v = this.raw[key];
    if (v === undefined) return dflt;
    if (v === null) return null;
    return this.int(key);
  }
  tokenId(key: string, dflt: number | null): number | null {
    const v = this.raw[key];
    if (v === undefined) return dflt;
    if (v === null) return null;
    if (typeof v !== 'number' || !Number.isInteger(v)) this.bad(key, 'an integer token id');
    return v;
  }
  num(key: string, dflt: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.bad(key, 'a number');
    return v;
  }
  bool(key: string, dflt: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.bad(key, 'true or false');
    return v;
  }
  str(key: string, dflt: string): string {
    const v = this.raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'string') this.bad(key, 'a string');
    return v;
  }
  eos(dflt: number | null): number | number[] | null {
    const v = this.raw.eos_token_id;
    if (v === undefined) return dflt;
    if (v === null) return null;
    if (Array.isArray(v) && v.every((x) => Number.isInteger(x))) return v as number[];
    return this.tokenId('eos_token_id', dflt);
  }
}
