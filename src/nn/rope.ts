// RoPE inverse frequencies, including the rope_scaling variants (../shared/spec/FORMATS.md §8.2). Everything here is computed
// in float32 like transformers' modeling_rope_utils, so angles agree with torch to the last bit or two.
import type { LlamaConfig } from '../io/config.js';

const f = Math.fround;

/** inv_freq[i] = 1 / base^(2i/dim), i < dim/2, in fp32 arithmetic. */
export function defaultInvFreq(base: number, dim: number): Float32Array {
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = f(1 / f(Math.pow(base, f(f(2 * i) / dim))));
  return out;
}

/** Llama-3.1 frequency-dependent scaling: long wavelengths slowed by `factor`, short kept, a smooth band between. */
export function llama3InvFreq(base: number, dim: number, s: Required<Pick<LlamaConfig['rope_scaling'] & object,
  'factor' | 'low_freq_factor' | 'high_freq_factor' | 'original_max_position_embeddings'>>): Float32Array {
  const inv = defaultInvFreq(base, dim);
  const lowWl = s.original_max_position_embeddings / s.low_freq_factor;
  const highWl = s.original_max_position_embeddings / s.high_freq_factor;
  const out = new Float32Array(inv.length);
  for (let i = 0; i < inv.length; i++) {
    const wl = f((2 * Math.PI) / inv[i]);
    const f1 = wl > lowWl ? f(inv[i] / s.factor) : inv[i];
    const smooth = f((s.original_max_position_embeddings / wl - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor));
    const medium = !(wl < highWl) && !(wl > lowWl);
    out[i] = medium ? f(f((1 - smooth) * f1) / s.factor + f(smooth * f1)) : f1;
  }
  return out;
}

/**
 * The inverse frequencies for a forward pass whose largest position is `maxPos` (only `dynamic` NTK scaling
 * depends on it: the base grows once the sequence outgrows the trained context).
 */
export function ropeInvFreq(cfg: LlamaConfig, maxPos: number): Float32Array {
  const dim = cfg.head_dim;
  const s = cfg.rope_scaling;
  if (!s) return defaultInvFreq(cfg.rope_theta, dim);
  switch (s.rope_type) {
    case 'linear': {
      const inv = defaultInvFreq(cfg.rope_theta, dim);
      for (let i = 0; i < inv.length; i++) inv[i] = f(inv[i] / s.factor);
      return inv;
    }
    case 'dynamic': {
      const orig = s.original_max_position_embeddings ?? cfg.max_position_embeddings;
      const seqLen = maxPos + 1;
      if (seqLen <= orig) return defaultInvFreq(cfg.rope_theta, dim);
      const base = cfg.rope_theta * Math.pow((s.factor * seqLen) / orig - (s.factor - 1), dim / (dim - 2));
      return defaultInvFreq(base, dim);
    }
    case 'llama3':
      return llama3InvFreq(cfg.rope_theta, dim, s as Required<typeof s>);
    default:
      return defaultInvFreq(cfg.rope_theta, dim);
  }
}

/**
 * ropeInvFreq memoised per model: the frequencies are fixed except under `dynamic` scaling, where they change only
 * with the sequence length once it passes the trained context. Decode steps then reuse one array instead of
 * recomputing `dim/2` powers per token.
 */
export class RopeFrequencies {
  private key = -1;
  private value: Float32Array | null = null;
  constructor(private readonly cfg: LlamaConfig) {}

  get(maxPos: number): Float32Array {
    const s = this.cfg.rope_scaling;
    const orig = s?.rope_type === 'dynamic' ? (s.original_max_position_embeddings ?? this.cfg.max_position_embeddings) : 0;
    // Every length up to the trained context gives the same frequencies; past it, each length has its own.
    const key = s?.rope_type === 'dynamic' ? Math.max(maxPos + 1, orig) : 0;
    if (this.value === null || key !== this.key) {
      this.value = ropeInvFreq(this.cfg, maxPos);
      this.key = key;
    }
    return this.value;
  }
}
