// Qwen2 = Llama with biases on q/k/v (hard-coded in transformers, not via attention_bias) and none on o_proj.
import type { Backend } from '../backend/backend.js';
import type { LlamaConfig } from '../io/config.js';
import { LlamaForCausalLM } from './llama.js';
import type { LinearFactory } from './factory.js';
import type { Weights } from './model.js';

export class Qwen2ForCausalLM extends LlamaForCausalLM {
  constructor(config: LlamaConfig, w: Weights, backend: Backend, linear?: LinearFactory) {
    super(config, w, backend, { linear, biases: { qkv: true, o: false, mlp: false } });
  }
}
