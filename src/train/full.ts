// Full fine-tuning (issue 11: "trains the student, full or LoRA"): every weight of a float model becomes a float32
// copy that training updates: linear weights and biases, norm weights (and LayerNorm biases), the embeddings (OPT's
// learned positions too); a tied lm_head stays tied to the embedding copy. The result maps each HF tensor name to its
// values (for the optimizer and for saving), with weight decay off for biases and norms, as transformers' Trainer does.
import { LlamaForCausalLM } from '../models/llama.js';
import type { DecoderLM } from '../models/model.js';
import { OPTForCausalLM } from '../models/opt.js';
import { Embedding, LayerNorm, Linear, RMSNorm } from '../nn/layers.js';
import { Tensor } from '../tensor/tensor.js';

export interface FullParam { values: Float32Array; shape: number[]; decay: boolean }

export function makeFullyTrainable(model: DecoderLM): Map<string, FullParam> {
  if (!(model instanceof LlamaForCausalLM) && !(model instanceof OPTForCausalLM)) throw new Error(`full fine-tuning: ${model.config.model_type} models are not supported`);
  const out = new Map<string, FullParam>();
  const copies = new Map<unknown, Tensor<'F32'>>();   // one copy per shared tensor (tied weights stay tied)
  const copy = (t: Tensor, name: string, decay: boolean): Tensor<'F32'> => {
    let c = copies.get(t.data);
    if (!c) {
      c = new Tensor('F32', t.shape, t.toF32());   // toF32 already copies
      copies.set(t.data, c);
      out.set(name, { values: c.f32, shape: [...t.shape], decay });
    }
    return c;
  };
  const emb = (e: Embedding) => new Embedding(e.backend, e.name, copy(e.weight, `${e.name}.weight`, true));
  const rms = (n: RMSNorm) => new RMSNorm(n.backend, n.name, copy(n.weight, `${n.name}.weight`, false), n.eps);
  const ln = (n: LayerNorm) => new LayerNorm(n.backend, n.name, copy(n.weight, `${n.name}.weight`, false), copy(n.bias, `${n.name}.bias`, false), n.eps);
  // Embeddings first: a tied lm_head then finds the embedding's copy and keeps the checkpoint's name for it.
  model.embed = emb(model.embed);
  if (model instanceof OPTForCausalLM) model.positions = emb(model.positions);
  for (let l = 0; l < model.layers.length; l++) {
    for (const [k, n] of Object.entries(model.layerNorms(l))) (model as DecoderLM).setLayerNorm(l, k, n instanceof LayerNorm ? ln(n) : rms(n as RMSNorm));
  }
  if (model instanceof LlamaForCausalLM) model.norm = rms(model.norm);
  else if (model.finalNorm) model.finalNorm = ln(model.finalNorm);
  for (const [name, lin] of model.linears()) {
    if (!(lin instanceof Linear)) throw new Error(`full fine-tuning: ${name} is a ${lin.constructor.name}; only a float model trains whole (use LoRA on a quantized base)`);
    model.replaceLinear(name, new Linear(lin.backend, lin.name, copy(lin.weight, `${name}.weight`, true), lin.bias ? copy(lin.bias, `${name}.bias`, false) : null));
  }
  return out;
}
