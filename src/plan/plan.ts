// Memory and speed planning for inference (seed 004): weights + KV cache against a device's memory, and the batch
// at which decode stops being memory-bound. KV bytes = 2 (K and V) × layers × KV heads × head_dim × tokens × batch
// × bytes per element — GQA models store only their KV heads.
import type { LlamaConfig, ModelConfig } from '../io/config.js';

export interface DeviceSpec {
  name: string;
  /** Usable memory in bytes. */
  memoryBytes: number;
  /** Memory bandwidth, bytes/s. */
  bandwidth: number;
  /** Dense matrix throughput at the compute dtype, FLOP/s. */
  flops: number;
  note: string;
}

const GB = 1e9;
/** Datasheet figures (dense fp16/bf16 tensor-core rates; no sparsity). */
export const DEVICES: Record<string, DeviceSpec> = {
  h100: { name: 'H100 SXM 80GB', memoryBytes: 80 * GB, bandwidth: 3.35e12, flops: 989e12, note: 'datasheet, bf16 dense' },
  'a100-40g': { name: 'A100 40GB', memoryBytes: 40 * GB, bandwidth: 1.555e12, flops: 312e12, note: 'datasheet, bf16 dense' },
  a10g: { name: 'A10G 24GB', memoryBytes: 24 * GB, bandwidth: 600e9, flops: 125e12, note: 'datasheet, fp16 dense' },
  'rtx-4090': { name: 'RTX 4090 24GB', memoryBytes: 24 * GB, bandwidth: 1.008e12, flops: 165e12, note: 'datasheet, fp16 dense, fp32 accumulate' },
};

export const BYTES_PER_ELEMENT: Record<string, number> = { fp32: 4, fp16: 2, bf16: 2, int8: 1, int4: 0.5 };

/** Model shapes known without a download (HF config.json fields). */
export const MODEL_PRESETS: Record<string, Record<string, unknown>> = {
  'llama-2-7b': { model_type: 'llama', hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, vocab_size: 32000, max_position_embeddings: 4096 },
  'llama-2-13b': { model_type: 'llama', hidden_size: 5120, intermediate_size: 13824, num_hidden_layers: 40, num_attention_heads: 40, num_key_value_heads: 40, vocab_size: 32000, max_position_embeddings: 4096 },
  'llama-2-70b': { model_type: 'llama', hidden_size: 8192, intermediate_size: 28672, num_hidden_layers: 80, num_attention_heads: 64, num_key_value_heads: 8, vocab_size: 32000, max_position_embeddings: 4096 },
  'llama-3-8b': { model_type: 'llama', hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 128256, max_position_embeddings: 8192 },
  'mistral-7b': { model_type: 'mistral', hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 32000, max_position_embeddings: 32768 },
  'tinyllama-1.1b': { model_type: 'llama', hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 22, num_attention_heads: 32, num_key_value_heads: 4, vocab_size: 32000, max_position_embeddings: 2048 },
};

/** The planner's name for a config's torch_dtype / dtype (null when unset or not a float type the planner knows). */
export function plannerDtype(torchDtype: string | null | undefined): 'fp32' | 'fp16' | 'bf16' | null {
  switch (torchDtype) {
    case 'float32': return 'fp32';
    case 'float16': return 'fp16';
    case 'bfloat16': return 'bf16';
    default: return null;
  }
}

export interface ModelShape {
  layers: number; kvHeads: number; heads: number; headDim: number; hidden: number; params: number;
}

/** Parameter count and attention shape from a config (Llama family and OPT). */
export function modelShape(c: ModelConfig): ModelShape {
  if (c.model_type === 'opt') {
    const H = c.hidden_size, E = c.word_embed_proj_dim, L = c.num_hidden_layers;
    const perLayer = 4 * (H * H + H) + 2 * H * c.ffn_dim + c.ffn_dim + H + 4 * H;
    const params = c.vocab_size * E + (c.max_position_embeddings + 2) * H + L * perLayer + (E !== H ? 2 * E * H : 2 * H);
    return { layers: L, kvHeads: c.num_attention_heads, heads: c.num_attention_heads, headDim: H / c.num_attention_heads, hidden: H, params };
  }
  const l = c as LlamaConfig;
  const H = l.hidden_size, hd = l.head_dim, L = l.num_hidden_layers;
  const attn = H * l.num_attention_heads * hd * 2 + H * l.num_key_value_heads * hd * 2;
  const perLayer = attn + 3 * H * l.intermediate_size + 2 * H;
  const params = l.vocab_size * H * (l.tie_word_embeddings ? 1 : 2) + L * perLayer + H;
  return { layers: L, kvHeads: l.num_key_value_heads, heads: l.num_attention_heads, headDim: hd, hidden: H, params };
}

export function kvBytesPerToken(s: ModelShape, bytesPerElement: number): number {
  return 2 * s.layers * s.kvHeads * s.headDim * bytesPerElement;
}

export interface Plan {
  params: number;
  weightBytes: number;
  kvBytesPerSequence: number;
  kvBytesPerToken: number;
  /** Memory left for the KV cache after weights and the activation reserve. */
  freeBytes: number;
  maxBatch: number;
  /** Smallest batch at which a decode step takes longer on compute than on memory traffic (null: never). */
  computeBoundBatch: number | null;
  arithmeticIntensityAtMaxBatch: number;
}

export interface PlanInput {
  shape: ModelShape;
  device: DeviceSpec;
  seqLen: number;
  weightBytesPerParam: number;
  kvBytesPerElement: number;
  /** Memory kept back for activations and the runtime (bytes). */
  reserveBytes?: number;
}

export function plan(p: PlanInput): Plan {
  const s = p.shape;
  const weightBytes = s.params * p.weightBytesPerParam;
  const kvTok = kvBytesPerToken(s, p.kvBytesPerElement);
  const kvSeq = kvTok * p.seqLen;
  const free = p.device.memoryBytes - weightBytes - (p.reserveBytes ?? 0);
  const maxBatch = free > 0 ? Math.floor(free / kvSeq) : 0;
  // One decode step at batch b: reads the weights once and every sequence's cache; computes 2·params FLOPs per
  // sequence plus attention (q·kᵀ and p·v: 4·layers·heads·hd·seqLen). Compute-bound once
  // b·flopsPerSeq / F ≥ (W + b·KV) / BW  ⇔  b ≥ (W/BW) / (flopsPerSeq/F − KV/BW).
  const flopsPerSeq = 2 * s.params + 4 * s.layers * s.heads * s.headDim * p.seqLen;
  const denom = flopsPerSeq / p.device.flops - kvSeq / p.device.bandwidth;
  const computeBoundBatch = denom > 0 ? Math.ceil(weightBytes / p.device.bandwidth / denom) : null;
  const b = Math.max(1, maxBatch);
  return {
    params: s.params, weightBytes, kvBytesPerSequence: kvSeq, kvBytesPerToken: kvTok, freeBytes: free, maxBatch,
    computeBoundBatch, arithmeticIntensityAtMaxBatch: (b * flopsPerSeq) / (weightBytes + b * kvSeq),
  };
}
