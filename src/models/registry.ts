// model_type → model class. Adding an architecture is one line here and one file beside this one.
import type { Backend } from '../backend/backend.js';
import { ConfigError, ModelConfig, UnsupportedModelError } from '../io/config.js';
import { warnOnce } from '../util/warn.js';
import { LlamaForCausalLM } from './llama.js';
import type { QuantizationSpec } from '../io/quantconfig.js';
import type { QuantFormat } from '../quant/qweight.js';
import { linearFactory, type QuantizedLayerEvent, type QuantizeMode } from './factory.js';
import type { CausalLM, Weights } from './model.js';
import { OPTForCausalLM } from './opt.js';
import { Qwen2ForCausalLM } from './qwen2.js';

/** How many unused names the warning lists before it says "and N more" (transformers lists all; checkpoints can hold thousands). */
const UNUSED_LISTED = 10;

export interface BuildOptions {
  /**
   * Quantize the float checkpoint while building (fromPretrained's quantizationConfig). A checkpoint whose
   * config.json has a quantization_config is loaded as quantized instead, and refuses this option.
   */
  quantize?: QuantizationSpec | null;
  /** Told about each layer quantized while building (quantize mode only). */
  onQuantize?: (e: QuantizedLayerEvent) => void;
}

export function buildModel(config: ModelConfig, weights: Weights, backend: Backend, opts: BuildOptions = {}): CausalLM {
  // Off the CPU, a quantized model (saved so, or bitsandbytes-quantized on load: on the host, then its codes go up)
  // loads where the backend has its format's kernel (cuda: all of them).
  const stored = config.quantization_config, spec = stored ?? opts.quantize ?? null;
  const formats: QuantFormat[] = !spec ? [] : spec.method === 'bitsandbytes' ? [spec.format] : [spec.method];
  if (backend.device !== 'cpu' && spec && !backend.supports('matmulQ', formats)) {
    const what = stored ? `a ${formats.join('/')} checkpoint` : `quantizing to ${formats.join('/')} on load`;
    throw new ConfigError(`${weights.source}: ${what} on the ${backend.name} backend: the ${backend.name} backend has no kernel for ${formats.join('/')}. Use the cpu backend`);
  }
  const model = construct(config, weights.onto(backend), backend, opts);
  warnUnused(config, weights, model);
  return model;
}

function construct(config: ModelConfig, weights: Weights, backend: Backend, opts: BuildOptions): CausalLM {
  const stored = config.quantization_config;
  if (stored && opts.quantize) {
    throw new ConfigError(`${weights.source}: the checkpoint is already quantized (config.json has a ${stored.method} quantization_config); load it without quantizationConfig`);
  }
  const spec = stored ?? opts.quantize ?? null, mode: QuantizeMode = stored ? 'load' : 'quantize';
  const factory = (w: Weights) => linearFactory(w, backend, spec, mode, mode === 'quantize' ? opts.onQuantize : undefined);
  switch (config.model_type) {
    case 'llama':
    case 'mistral':
      return new LlamaForCausalLM(config, weights, backend, { linear: factory(weights) });
    case 'qwen2':
      return new Qwen2ForCausalLM(config, weights, backend, factory(weights));
    case 'opt':
      return new OPTForCausalLM(config, weights, backend, factory);
    default:
      throw new UnsupportedModelError(`model_type "${(config as { model_type: string }).model_type}" is not supported`);
  }
}

/**
 * Checkpoint tensors transformers loads without a word: old Llama checkpoints saved RoPE's `inv_freq` buffer, and a
 * tied model's `lm_head.weight` is the embedding again (`_tied_weights_keys`).
 */
function expectedUnused(config: ModelConfig, name: string): boolean {
  return /(^|\.)rotary_emb\.inv_freq$/.test(name) || (config.tie_word_embeddings && name === 'lm_head.weight');
}

/** transformers' "Some weights of the model checkpoint at … were not used" warning, once per checkpoint. */
function warnUnused(config: ModelConfig, weights: Weights, model: CausalLM): void {
  const unused = weights.unused().filter((n) => !expectedUnused(config, n));
  if (!unused.length) return;
  const archs = config.raw?.architectures;
  const arch = (Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : null) ?? model.constructor.name;
  const listed = unused.slice(0, UNUSED_LISTED).map((n) => `'${n}'`).join(', ');
  const more = unused.length > UNUSED_LISTED ? `, … and ${unused.length - UNUSED_LISTED} more` : '';
  warnOnce(`Some weights of the model checkpoint at ${weights.source} were not used when initializing ${arch}: [${listed}${more}]`);
}
