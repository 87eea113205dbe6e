// Perplexity over non-overlapping windows (the GPTQ/AWQ paper protocol, ../shared/spec/FORMATS.md §9.1): the caller
// tokenizes the text once as one stream (with the tokenizer's special tokens, so a Llama stream starts with one BOS);
// here it is cut into ⌊n / seqLen⌋ windows of `seqLen` tokens with the trailing remainder dropped, each window is an
// independent forward without cache and without an extra BOS, and the seqLen − 1 shifted targets of every window are
// scored. ppl = exp(Σ nll / Σ targets), which is §9.1's exp(mean of the per-window mean losses) since every window
// scores as many targets. A stream shorter than one window has no §9.1 answer (GPTQ's script divides by zero); it is
// scored here as one window of its own length, and the result's `seqLen` says so. Windows longer than the model's
// positions and non-finite logits are errors: either would yield a number that means nothing.
import { NonFiniteLogitsError } from '../generate/logits.js';
import type { CausalLM } from '../models/model.js';
import { checkProgressCallback, type OnProgress, type Progress } from '../util/progress.js';

/** Where a perplexity run stands after a window: tokens fed to the model so far and the time they took. */
/** Progress of a perplexity run: task 'perplexity', unit 'windows', plus the tokens fed so far and the rate. */
export interface PerplexityProgress extends Progress { readonly tokens: number; readonly tokensPerSec: number }

export interface PerplexityOptions {
  seqLen?: number;
  /** Score at most this many windows (the first ones). */
  maxWindows?: number;
  /** Called after each window (src/util/progress.ts) with the windows done and in all, and the throughput so far. */
  onProgress?: OnProgress<PerplexityProgress>;
  /** Checked before each window: an aborted signal stops the run with its reason (from onProgress, say). */
  signal?: AbortSignal;
}

export interface PerplexityResult {
  perplexity: number;
  /** Σ −log p(target) in nats over the scored targets; nll / tokens = log(perplexity). */
  nll: number;
  /** Targets scored: windows × (seqLen − 1). */
  tokens: number;
  windows: number;
  /** Tokens per window (the requested seqLen, or the whole stream when it is shorter than one window). */
  seqLen: number;
  /** Full windows in the stream before maxWindows (0 when the stream is shorter than one window). */
  windowsAvailable: number;
}

export function perplexity(model: CausalLM, ids: ArrayLike<number>, opts: PerplexityOptions = {}): PerplexityResult {
  const seqLen = opts.seqLen ?? 256;
  checkProgressCallback(opts.onProgress, 'perplexity');
  if (!Number.isInteger(seqLen) || seqLen < 2) throw new RangeError(`perplexity: seqLen must be an integer ≥ 2, got ${seqLen}`);
  if (opts.maxWindows !== undefined && !(Number.isInteger(opts.maxWindows) && opts.maxWindows >= 1)) {
    throw new RangeError(`perplexity: maxWindows must be an integer ≥ 1, got ${opts.maxWindows}`);
  }
  if (ids.length < 2) throw new RangeError('perplexity needs at least 2 tokens');
  const windowsAvailable = Math.floor(ids.length / seqLen);   // §9.1: nsamples = numel // seqlen
  let windows = Math.max(1, windowsAvailable);
  const len = windowsAvailable === 0 ? ids.length : seqLen;
  if (len > model.maxPositions) {
    throw new RangeError(`perplexity: windows of ${len} tokens are longer than the model's ${model.maxPositions} positions; use seqLen ≤ ${model.maxPositions}`);
  }
  if (opts.maxWindows !== undefined) windows = Math.min(windows, opts.maxWindows);
  const V = model.config.vocab_size;
  let nll = 0, tokens = 0;
  const t0 = performance.now();
  for (let w = 0; w < windows; w++) {
    opts.signal?.throwIfAborted();
    const win = Array.from({ length: len }, (_, i) => ids[w * seqLen + i]);
    const logits = model.forward([win]).f32;                      // [1, len, V]
    for (let t = 0; t < len - 1; t++) {                           // position t predicts win[t + 1]
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
    if (opts.onProgress) {
      const elapsedMs = performance.now() - t0, fed = (w + 1) * len;
      opts.onProgress({ task: 'perplexity', done: w + 1, total: windows, unit: 'windows', elapsedMs, tokens: fed, tokensPerSec: elapsedMs > 0 ? fed / (elapsedMs / 1000) : 0 });
    }
  }
  return { perplexity: Math.exp(nll / tokens), nll, tokens, windows, seqLen: len, windowsAvailable };
}
