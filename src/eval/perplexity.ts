// Perplexity over non-overlapping windows (the GPTQ/AWQ paper protocol, ../shared/spec/FORMATS.md §9.1): the text is
// tokenized once, cut into windows of `seqLen` tokens (remainder dropped unless it is the only window), each window is
// an independent forward without cache, and every position after a window's first is scored. Windows longer than the
// model's positions and non-finite logits are errors: either would yield a number that means nothing.
import { NonFiniteLogitsError } from '../generate/logits.js';
import type { CausalLM } from '../models/model.js';

export interface PerplexityOptions {
  seqLen?: number;
  /** Score at most this many windows. */
  maxWindows?: number;
  onProgress?: (window: number, windows: number) => void;
}

export interface PerplexityResult { perplexity: number; nll: number; tokens: number; windows: number }

export function perplexity(model: CausalLM, ids: ArrayLike<number>, opts: PerplexityOptions = {}): PerplexityResult {
  const seqLen = opts.seqLen ?? 256;
  if (!Number.isInteger(seqLen) || seqLen < 2) throw new RangeError(`perplexity: seqLen must be an integer ≥ 2, got ${seqLen}`);
  if (opts.maxWindows !== undefined && !(Number.isInteger(opts.maxWindows) && opts.maxWindows >= 1)) {
    throw new RangeError(`perplexity: maxWindows must be an integer ≥ 1, got ${opts.maxWindows}`);
  }
  if (ids.length < 2) throw new RangeError('perplexity needs at least 2 tokens');
  let windows = Math.floor(ids.length / seqLen);
  const len = windows === 0 ? ids.length : seqLen;
  if (windows === 0) windows = 1;
  if (len > model.maxPositions) {
    throw new RangeError(`perplexity: windows of ${len} tokens are longer than the model's ${model.maxPositions} positions; use seqLen ≤ ${model.maxPositions}`);
  }
  if (opts.maxWindows !== undefined) windows = Math.min(windows, opts.maxWindows);
  const V = model.config.vocab_size;
  let nll = 0, tokens = 0;
  for (let w = 0; w < windows; w++) {
    const win = Array.from({ length: len }, (_, i) => ids[w * seqLen + i]);
    const logits = model.forward([win]).f32;                      // [1, len, V]
    for (let t = 0; t < len - 1; t++) {
      const row = logits.subarray(t * V, (t + 1) * V);
      let max = -Infinity;
      for (let v = 0; v < V; v++) {
        // NaN would compare false and vanish from the max; Inf would give a perplexity of NaN or 1. Either is a broken model.
        if (row[v] - row[v] !== 0) {
          throw new NonFiniteLogitsError(`perplexity: non-finite logits in window ${w}, position ${t}: logit of token ${v} is ${row[v]}; the weights hold NaN/Inf or config.json has impossible values`, 'prefill', 0);
        }
        if (row[v] > max) max = row[v];
      }
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(row[v] - max);
      nll += Math.log(sum) + max - row[win[t + 1]];                 // −log softmax(target)
      tokens++;
    }
    opts.onProgress?.(w + 1, windows);
  }
  return { perplexity: Math.exp(nll / tokens), nll, tokens, windows };
}
