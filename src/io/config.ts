// Typed readers for HF config.json (../shared/spec/FORMATS.md §8.1, §8.3). Field names keep their JSON spelling;
// defaults are transformers' own. transformers v5 folds rope_theta/rope_scaling into rope_parameters: both shapes
// are accepted. Values that no model can have (0 layers, eps ≤ 0, a RoPE factor ≤ 0, sizes past CONFIG_LIMITS) are
// rejected here, naming the file and key, because downstream they either abort the process (allocations sized by
// the config) or quietly produce garbage tokens.
import { dirname, join } from 'node:path';
import { probePath, readTextFile } from '../util/fs.js';
import { show } from '../util/text.js';
import { parseQuantizationConfig, type QuantizationSpec } from './quantconfig.js';

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
  /**
   * quantization_config, checked and normalised (src/io/quantconfig.ts), or, for an AutoGPTQ folder whose config.json
   * has none, its quantize_config.json (an old AutoAWQ folder: quant_config.json); null for a float checkpoint.
   */
  quantization_config: QuantizationSpec | null;
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

/**
 * Largest size accepted per key. Real checkpoints stay far below (Llama-3.1-405B: 126 layers, hidden 16384,
 * 128 heads, head_dim 128, intermediate 53248, vocab 128256; the largest vocabularies are ~256k; Llama-4-Scout has
 * 10M positions), so each bound leaves ≥ 4× headroom. They exist because arrays and caches are sized from these
 * numbers before any weight is read: `num_hidden_layers: 1e9` used to exhaust the V8 heap and abort the host
 * process. Whether the weights agree with the config is checked separately when the model is built.
 */
export const CONFIG_LIMITS = {
  num_hidden_layers: 1024,
  hidden_size: 65536,
  word_embed_proj_dim: 65536,
  num_attention_heads: 1024,
  num_key_value_heads: 1024,
  head_dim: 4096,
  intermediate_size: 1 << 20,
  ffn_dim: 1 << 20,
  vocab_size: 10_000_000,
  max_position_embeddings: 1 << 26,
  sliding_window: 1 << 26,
  original_max_position_embeddings: 1 << 26,
} as const;

/** A JSON config file's value; a FIFO, folder, dangling link or loop, or bad JSON is a ConfigError naming the file. */
function readJsonConfig(path: string): unknown {
  const text = readTextFile(path, (m) => new ConfigError(m));
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${path}: cannot read config: ${(e as Error).message}`);
  }
}

export function readConfig(path: string): ModelConfig {
  // Refuses a FIFO (reading one would block forever), a folder, a dangling link or a loop, naming the problem.
  const config = parseConfig(readJsonConfig(path), path);
  if (!config.quantization_config) config.quantization_config = readQuantizeConfigJson(dirname(path));
  if (!config.quantization_config) config.quantization_config = readAwqQuantConfigJson(dirname(path));
  return config;
}

/** AutoGPTQ's own config file, beside config.json (FORMATS.md §4.6). */
export const GPTQ_CONFIG_NAME = 'quantize_config.json';

/**
 * An AutoGPTQ save from before it copied its config into config.json has only quantize_config.json (whose oldest
 * versions lack quant_method: it is GPTQ's file). Null when the folder has none.
 */
function readQuantizeConfigJson(dir: string): QuantizationSpec | null {
  const path = join(dir, GPTQ_CONFIG_NAME);
  if (probePath(path).kind === 'missing') return null;
  const json = readJsonConfig(path);
  return parseQuantizationConfig(json, path, { where: '', defaultMethod: 'gptq' });
}

/** AutoAWQ's own config file (its deprecated quant_config.json: w_bit, q_group_size, zero_point, version). */
export const AWQ_CONFIG_NAME = 'quant_config.json';

/**
 * An AutoAWQ save from before transformers read AWQ has only quant_config.json, whose keys are AutoAWQ's (w_bit,
 * q_group_size, "version": "GEMM") and which may lack quant_method: it is AWQ's file (vLLM reads it too). Null when
 * the folder has none.
 */
function readAwqQuantConfigJson(dir: string): QuantizationSpec | null {
  const path = join(dir, AWQ_CONFIG_NAME);
  if (probePath(path).kind === 'missing') return null;
  return parseQuantizationConfig(readJsonConfig(path), path, { where: '', defaultMethod: 'awq' });
}

/** Check and type a parsed config.json; `source` (the file path) prefixes every error. */
export function parseConfig(json: unknown, source = 'config.json'): ModelConfig {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new ConfigError(`${source}: not a JSON object`);
  const raw = json as Record<string, unknown>;
  const r = new Reader(raw, source);
  const modelType = raw.model_type;
  if (typeof modelType !== 'string') throw new ConfigError(`${source}: missing "model_type" (a string such as "llama")`);
  if (modelType === 'opt') return parseOpt(r, raw);
  if (modelType === 'llama' || modelType === 'mistral' || modelType === 'qwen2') return parseLlama(r, raw, modelType);
  throw new UnsupportedModelError(
    `${source}: model_type ${JSON.stringify(modelType)} is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`);
}

function base(r: Reader, raw: Record<string, unknown>, d: { vocab: number; tie: boolean; maxPos: number; bos: number | null; eos: number | null; pad: number | null }): BaseConfig {
  const dtype = raw.torch_dtype ?? raw.dtype ?? null;
  if (dtype !== null && typeof dtype !== 'string') {
    r.bad(raw.torch_dtype != null ? 'torch_dtype' : 'dtype', 'a dtype name such as "bfloat16"');
  }
  // Only read here, but `lowbit info` prints it: a non-list would reach a .join().
  const arch = raw.architectures;
  if (arch != null && !(Array.isArray(arch) && arch.every((a) => typeof a === 'string'))) r.bad('architectures', 'a list of class names');
  return {
    vocab_size: r.size('vocab_size', d.vocab),
    hidden_size: r.size('hidden_size'),
    num_hidden_layers: r.size('num_hidden_layers'),
    num_attention_heads: r.size('num_attention_heads'),
    max_position_embeddings: r.size('max_position_embeddings', d.maxPos),
    tie_word_embeddings: r.bool('tie_word_embeddings', d.tie),
    // Token ids may be −1 in older conversions ("none"); transformers accepts them.
    bos_token_id: r.tokenId('bos_token_id', d.bos),
    eos_token_id: r.eos(d.eos),
    pad_token_id: r.tokenId('pad_token_id', d.pad),
    torch_dtype: dtype,
    quantization_config: parseQuantizationConfig(raw.quantization_config, r.source),
    raw,
  };
}

/**
 * The activations lowbit implements, by the names transformers' ACT2FN gives them: "swish" is another name for
 * SiLU there, so it is read as "silu". Anything else (gelu, relu, …) is a different function, refused at read.
 */
const HIDDEN_ACTS: Record<string, string> = { silu: 'silu', swish: 'silu' };

function parseLlama(r: Reader, raw: Record<string, unknown>, model_type: LlamaConfig['model_type']): LlamaConfig {
  const isQwen = model_type === 'qwen2';
  const b = base(r, raw, { vocab: 32000, tie: false, maxPos: model_type === 'mistral' ? 4096 * 32 : 2048, bos: 1, eos: 2, pad: null });
  const heads = b.num_attention_heads;
  if (b.hidden_size % heads !== 0 && raw.head_dim == null) {
    throw new ConfigError(`${r.source}: "hidden_size" ${b.hidden_size} is not divisible by "num_attention_heads" ${heads} and "head_dim" is not set`);
  }
  const kv = r.size('num_key_value_heads', heads);
  if (heads % kv !== 0) throw new ConfigError(`${r.source}: "num_attention_heads" ${heads} is not a multiple of "num_key_value_heads" ${kv}`);
  const headDim = r.size('head_dim', Math.floor(b.hidden_size / heads));
  if (headDim > CONFIG_LIMITS.head_dim) {      // only when derived: an explicit head_dim was checked by size()
    throw new ConfigError(`${r.source}: "hidden_size" ${b.hidden_size} / "num_attention_heads" ${heads} gives a head_dim of ${headDim}, past the limit ${CONFIG_LIMITS.head_dim}`);
  }
  // rotate_half splits each head in two halves (../shared/spec/FORMATS.md §8.2, RoPE): an odd head_dim has no
  // such split.
  if (headDim % 2 !== 0) r.bad('head_dim', 'even (RoPE rotates pairs of dimensions)', headDim);
  const ropeParams = r.objOrNull('rope_parameters');
  const ropeScaling = r.objOrNull('rope_scaling');
  // A top-level rope_theta (v4) wins over rope_parameters.rope_theta (v5); both are checked.
  const v5Theta = ropeParams && ropeParams.rope_theta != null ? ropeBase(ropeParams.rope_theta, 'rope_parameters.rope_theta', r.source) : 10000;
  const theta = raw.rope_theta != null ? ropeBase(raw.rope_theta, 'rope_theta', r.source) : v5Theta;
  const useSliding = isQwen ? r.bool('use_sliding_window', false) : true;
  // MistralConfig's default window is 4096; an explicit null turns it off.
  const slidingWindow = useSliding ? r.sizeOrNull('sliding_window', model_type === 'mistral' ? 4096 : null) : null;
  return {
    ...b,
    model_type,
    intermediate_size: r.size('intermediate_size'),
    num_key_value_heads: kv,
    head_dim: headDim,
    hidden_act: r.oneOf('hidden_act', 'silu', HIDDEN_ACTS, model_type),
    rms_norm_eps: r.positive('rms_norm_eps', 1e-6),
    rope_theta: theta,
    rope_scaling: ropeScaling ? parseRopeScaling(ropeScaling, 'rope_scaling', r.source)
      : ropeParams ? parseRopeScaling(ropeParams, 'rope_parameters', r.source) : null,
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
  if (given != null) {
    if (!Array.isArray(given) || given.length !== n || !given.every((t) => t === 'full_attention' || t === 'sliding_attention')) {
      r.bad('layer_types', `a list of ${n} entries (num_hidden_layers), each "full_attention" or "sliding_attention"`);
    }
    return window === null ? given.map(() => 'full_attention') : (given as LlamaConfig['layer_types']);
  }
  const from = isQwen ? r.count('max_window_layers', 28) : 0;
  return Array.from({ length: n }, (_, i) => (window !== null && i >= from ? 'sliding_attention' : 'full_attention'));
}

/**
 * RoPE's base θ: inv_freq[i] = θ^(−2i/d) must fall along the head (../shared/spec/FORMATS.md §8.2). θ ≤ 0 gives NaN,
 * and θ < 1 reverses the frequencies and, when tiny, overflows float32 to Infinity; every real model uses ≥ 10⁴.
 */
const THETA_WANT = 'a number > 1 (the RoPE base; 10000 by default)';
function ropeBase(v: unknown, name: string, source: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 1) throw new ConfigError(`${source}: "${name}" must be ${THETA_WANT}, got ${show(v)}`);
  return v;
}

/** A finite number > 0 at `obj[key]`, named `${where}.${key}` in errors. */
function positiveIn(obj: Record<string, unknown>, where: string, key: string, source: string): number {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new ConfigError(`${source}: "${where}.${key}" must be a number > 0, got ${show(v)}`);
  }
  return v;
}

function parseRopeScaling(s: Record<string, unknown>, where: string, source: string): RopeScaling | null {
  const type = s.rope_type ?? s.type ?? 'default';
  if (type === 'default') return null;
  if (type !== 'linear' && type !== 'dynamic' && type !== 'llama3') {
    throw new UnsupportedModelError(`${source}: "${where}.rope_type" ${show(type)} is not supported (supported: default, linear, dynamic, llama3)`);
  }
  const has = (k: string) => s[k] !== undefined && s[k] !== null;
  if (!has('factor')) throw new ConfigError(`${source}: "${where}" of type "${type}" needs "factor" (a number ≥ 1)`);
  // factor stretches the trained context: transformers' rope validation wants ≥ 1 (and only warns). Below 1 it
  // shrinks it, and a tiny factor overflows the float32 frequencies to Infinity, so it is an error here.
  const factor = s.factor;
  if (typeof factor !== 'number' || !Number.isFinite(factor) || factor < 1) {
    throw new ConfigError(`${source}: "${where}.factor" must be a number ≥ 1, got ${show(factor)}`);
  }
  const out: RopeScaling = { rope_type: type, factor };
  const origMax = (): number => {
    const v = s.original_max_position_embeddings;
    const lim = CONFIG_LIMITS.original_max_position_embeddings;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > lim) {
      throw new ConfigError(`${source}: "${where}.original_max_position_embeddings" must be an integer in [1, ${lim}], got ${show(v)}`);
    }
    return v;
  };
  if (type === 'llama3') {
    for (const k of ['low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'] as const) {
      if (!has(k)) throw new ConfigError(`${source}: "${where}" of type "llama3" needs "${k}"`);
    }
    out.low_freq_factor = positiveIn(s, where, 'low_freq_factor', source);
    out.high_freq_factor = positiveIn(s, where, 'high_freq_factor', source);
    // The smooth band is (orig/high, orig/low) in wavelength: it only exists when high > low
    // (../shared/spec/FORMATS.md §8.2, llama3).
    if (out.high_freq_factor <= out.low_freq_factor) {
      throw new ConfigError(`${source}: "${where}.high_freq_factor" must be greater than low_freq_factor ${out.low_freq_factor}, got ${out.high_freq_factor}`);
    }
    out.original_max_position_embeddings = origMax();
  } else if (has('original_max_position_embeddings')) {
    out.original_max_position_embeddings = origMax();
  }
  return out;
}

function parseOpt(r: Reader, raw: Record<string, unknown>): OptConfig {
  const b = base(r, raw, { vocab: 50272, tie: true, maxPos: 2048, bos: 2, eos: 2, pad: 1 });
  // OPTAttention splits hidden_size evenly over the heads (transformers raises otherwise).
  if (b.hidden_size % b.num_attention_heads !== 0) {
    throw new ConfigError(`${r.source}: "hidden_size" ${b.hidden_size} is not divisible by "num_attention_heads" ${b.num_attention_heads}`);
  }
  return {
    ...b,
    model_type: 'opt',
    ffn_dim: r.size('ffn_dim', 3072),
    word_embed_proj_dim: r.size('word_embed_proj_dim', b.hidden_size),
    do_layer_norm_before: r.bool('do_layer_norm_before', true),
    activation_function: r.oneOf('activation_function', 'relu', { relu: 'relu' }, 'opt'),
    enable_bias: r.bool('enable_bias', true),
    layer_norm_elementwise_affine: r.required('layer_norm_elementwise_affine', true, "lowbit's OPT LayerNorms always have a weight and a bias"),
    _remove_final_layer_norm: r.bool('_remove_final_layer_norm', false),
  };
}

type SizeKey = keyof typeof CONFIG_LIMITS;

class Reader {
  constructor(readonly raw: Record<string, unknown>, readonly source: string) {}
  bad(key: string, want: string, got: unknown = this.raw[key]): never {
    throw new ConfigError(`${this.source}: "${key}" must be ${want}, got ${show(got)}`);
  }
  /** A dimension or count: an integer in [1, CONFIG_LIMITS[key]]. */
  size(key: SizeKey, dflt?: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) {
      if (dflt === undefined) throw new ConfigError(`${this.source}: missing "${key}" (an integer ≥ 1)`);
      return dflt;
    }
    const max = CONFIG_LIMITS[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) this.bad(key, `an integer in [1, ${max}]`);
    return v;
  }
  sizeOrNull(key: SizeKey, dflt: number | null): number | null {
    const v = this.raw[key];
    if (v === undefined) return dflt;
    if (v === null) return null;
    return this.size(key);
  }
  /** A non-negative safe integer that sizes nothing (a layer index). */
  count(key: string, dflt: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) this.bad(key, 'a non-negative integer');
    return v;
  }
  tokenId(key: string, dflt: number | null): number | null {
    const v = this.raw[key];
    if (v === undefined) return dflt;
    if (v === null) return null;
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) this.bad(key, 'an integer token id or null');
    return v;
  }
  /** A finite number > 0 (rms_norm_eps: 0 or less gives NaN or Infinity for small rows, never an error downstream). */
  positive(key: string, dflt: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) this.bad(key, 'a number > 0');
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
  /** A string that lowbit implements: `names` maps each accepted spelling to the name the model code uses. */
  oneOf(key: string, dflt: string, names: Record<string, string>, modelType: string): string {
    const v = this.str(key, dflt);
    if (Object.hasOwn(names, v)) return names[v];
    throw new UnsupportedModelError(`${this.source}: "${key}" ${show(v)} is not supported for ${modelType} (supported: ${Object.keys(names).join(', ')})`);
  }
  /** A boolean that must have the one value lowbit implements (`why` says so in the message). */
  required(key: string, want: boolean, why: string): boolean {
    const v = this.bool(key, want);
    if (v !== want) throw new UnsupportedModelError(`${this.source}: "${key}" ${v} is not supported (only ${want}: ${why})`);
    return v;
  }
  objOrNull(key: string): Record<string, unknown> | null {
    const v = this.raw[key];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'object' || Array.isArray(v)) this.bad(key, 'an object or null');
    return v as Record<string, unknown>;
  }
  eos(dflt: number | null): number | number[] | null {
    const v = this.raw.eos_token_id;
    if (v === undefined) return dflt;
    if (v === null) return null;
    if (Array.isArray(v)) {
      if (!v.every((x) => typeof x === 'number' && Number.isSafeInteger(x))) this.bad('eos_token_id', 'an integer token id, a list of them, or null');
      return v as number[];
    }
    return this.tokenId('eos_token_id', dflt);
  }
}
