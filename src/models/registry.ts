// model_type → model class. Adding an architecture is one line here and one file beside this one.
import type { Backend } from '../backend/backend.js';
import { ModelConfig, UnsupportedModelError } from '../io/config.js';
import { LlamaForCausalLM } from './llama.js';
import type { CausalLM, Weights } from './model.js';
import { OPTForCausalLM } from './opt.js';
import { Qwen2ForCausalLM } from './qwen2.js';

export function buildModel(config: ModelConfig, weights: Weights, backend: Backend): CausalLM {
  switch (config.model_type) {
    case 'llama':
    case 'mistral':
      return new LlamaForCausalLM(config, weights, backend);
    case 'qwen2':
      return new Qwen2ForCausalLM(config, weights, backend);
    case 'opt':
      return new OPTForCausalLM(config, weights, backend);
    default:
      throw new UnsupportedModelError(`model_type "${(config as { model_type: string }).model_type}" is not supported`);
  }
}
