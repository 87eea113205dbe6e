// Random weights in a real model's shape, for benchmarks and tests that need no checkpoint.
import { parseConfig, type LlamaConfig } from '../io/config.js';
import { Tensor } from '../tensor/tensor.js';

/** HF config.json contents of the shapes we benchmark (random weights are fine for speed). */
export const SHAPES: Record<string, Record<string, unknown>> = {
  'tinyllama-1.1b': {
    model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 2048, intermediate_size: 5632,
    num_hidden_layers: 22, num_attention_heads: 32, num_key_value_heads: 4, vocab_size: 32000,
    max_position_embeddings: 2048, rms_norm_eps: 1e-5, rope_theta: 10000.0, tie_word_embeddings: false,
    bos_token_id: 1, eos_token_id: 2, hidden_act: 'silu',
  },
  'llama-3-8b': {
    model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 4096, intermediate_size: 14336,
    num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 128256,
    max_position_embeddings: 8192, rms_norm_eps: 1e-5, rope_theta: 500000.0, tie_word_embeddings: false,
    bos_token_id: 128000, eos_token_id: 128001, hidden_act: 'silu',
  },
  'llama-3.2-1b': {
    model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 2048, intermediate_size: 8192,
    num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 64, vocab_size: 128256,
    max_position_embeddings: 131072, rms_norm_eps: 1e-5, rope_theta: 500000.0, tie_word_embeddings: true,
    rope_scaling: { rope_type: 'llama3', factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 },
    bos_token_id: 128000, eos_token_id: 128001, hidden_act: 'silu',
  },
};

/** xorshift32: fast and seedable; quality is irrelevant for weights that only need realistic magnitudes. */
function fill(t: Tensor, seed: number, std: number): void {
  let s = (seed * 2654435761) >>> 0 || 1;
  const next = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
  if (t.dtype === 'F32') {
    const a = t.data as Float32Array;
    const k = (2 * std * Math.sqrt(3)) / 4294967296; // uniform with standard deviation `std`
    for (let i = 0; i < a.length; i++) a[i] = next() * k - std * Math.sqrt(3);
    return;
  }
  // bf16/f16 bit patterns straight from the generator: a sign, a small exponent band and a random mantissa.
  const a = t.data as Uint16Array;
  const e0 = Math.round(Math.log2(std));
  for (let i = 0; i < a.length; i += 2) {
    const r = next();
    for (let j = 0; j < 2 && i + j < a.length; j++) {
      const h = (r >>> (16 * j)) & 0xffff;
      const sign = h & 0x8000, mant = h & 0x7f, ex = e0 - ((h >>> 7) & 3);
      a[i + j] = t.dtype === 'BF16' ? sign | ((ex + 127) << 7) | mant : sign | ((ex + 15) << 10) | (mant << 3);
    }
  }
}

/** Where random tensors are made: host arrays by default; a device backend fills its own memory (benchmarks). */
export interface RandomMaker {
  matrix(dtype: 'F32' | 'BF16' | 'F16', shape: number[], seed: number, std: number): Tensor;
  /** A float32 vector of ones (norm weights). */
  ones(len: number): Tensor;
}

export function randomLlama(shape: string | Record<string, unknown>, dtype: 'F32' | 'BF16' | 'F16', seed = 1, maker?: RandomMaker): { config: LlamaConfig; tensors: Map<string, Tensor> } {
  const raw = typeof shape === 'string' ? SHAPES[shape] : shape;
  if (!raw) throw new Error(`unknown shape "${shape as string}" (known: ${Object.keys(SHAPES).join(', ')})`);
  const config = parseConfig({ ...raw, torch_dtype: { F32: 'float32', BF16: 'bfloat16', F16: 'float16' }[dtype] }, 'shape') as LlamaConfig;
  const c = config, H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const tensors = new Map<string, Tensor>();
  let n = seed;
  const mat = (name: string, shape: number[], std = 0.02) => {
    if (maker) { tensors.set(name, maker.matrix(dtype, shape, n++, std)); return; }
    const t = Tensor.zeros(dtype, shape);
    fill(t, n++, std);
    tensors.set(name, t);
  };
  const ones = (name: string, len: number) => {
    if (maker) { tensors.set(name, maker.ones(len)); return; }
    const t = Tensor.zeros(dtype, [len]);
    (t.data as Float32Array | Uint16Array).fill(dtype === 'F32' ? 1 : dtype === 'BF16' ? 0x3f80 : 0x3c00);
    tensors.set(name, t);
  };
  mat('model.embed_tokens.weight', [c.vocab_size, H]);
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    ones(`${p}.input_layernorm.weight`, H);
    ones(`${p}.post_attention_layernorm.weight`, H);
    mat(`${p}.self_attn.q_proj.weight`, [c.num_attention_heads * hd, H]);
    mat(`${p}.self_attn.k_proj.weight`, [c.num_key_value_heads * hd, H]);
    mat(`${p}.self_attn.v_proj.weight`, [c.num_key_value_heads * hd, H]);
    mat(`${p}.self_attn.o_proj.weight`, [H, c.num_attention_heads * hd]);
    mat(`${p}.mlp.gate_proj.weight`, [I, H]);
    mat(`${p}.mlp.up_proj.weight`, [I, H]);
    mat(`${p}.mlp.down_proj.weight`, [H, I]);
  }
  ones('model.norm.weight', H);
  if (!c.tie_word_embeddings) mat('lm_head.weight', [c.vocab_size, H]);
  return { config, tensors };
}
