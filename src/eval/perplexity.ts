// Perplexity of a token stream, under one of two conventions (../shared/spec/FORMATS.md §9). The caller tokenizes the
// text once as one stream (with the tokenizer's special tokens, so a Llama stream starts with one BOS); every window
// is an independent forward without cache and without an extra BOS.
//
// §9.1, the GPTQ/AWQ paper protocol (no `stride`): ⌊n / seqLen⌋ non-overlapping windows of `seqLen` tokens, the
// trailing remainder dropped, the seqLen − 1 shifted targets of every window scored. ppl = exp(Σ nll / Σ targets),
// which is §9.1's exp(mean of the per-window mean losses) since every window scores as many targets (GPTQ multiplies
// each window's mean by seqLen and divides by n·seqLen: the same number). A stream shorter than one window has no
// §9.1 answer (GPTQ's script divides by zero); it is scored here as one window of its own length, and the result's
// `seqLen` says so.
//
// §9.2, HF's sliding window (`stride`): see slidingWindows. With stride = seqLen the windows are §9.1's plus the
// trailing remainder as one short window of its own; where the stream is a multiple of seqLen the two agree exactly.
//
// Windows longer than the model's positions and non-finite logits are errors: either would yield a number that means
// nothing.
import { NonFiniteLogitsError } from '../generate/logits.js';
import type { CausalLM } from '../models/model.js';
import { checkProgressCallback, type OnProgress, type Progress } from '../util/progress.js';

/** Progress of a perplexity run: task 'perplexity', unit 'windows', plus the tokens fed so far and the rate. */
export interface PerplexityProgress extends Progress { readonly tokens: number; readonly tokensPerSec: number }

export interface PerplexityOptions {
  /** Tokens per window (default 256): the GPTQ protocol's seqlen, or HF's max_length with `stride`. */
  seqLen?: number;
  /**
   * HF's sliding-window perplexity (FORMATS.md §9.2): a window of up to seqLen tokens starts every `stride` tokens and
   * scores only the tokens that the previous window did not reach. Without it, the GPTQ protocol (§9.1).
   */
  stride?: number;
  /** Score at most this many windows (the first ones). */
  maxWindows?: number;
  /** Called after each window (src/util/progress.ts) with the windows done and in all, and the throughput so far. */
  onProgress?: OnProgress<PerplexityProgress>;
  /** Checked before each window: an aborted signal stops the run with its reason (from onProgress, say). */
  signal?: AbortSignal;
}

export interface PerplexityResult {
  /** exp(nll / tokens). */
  perplexity: number;
  /**
   * Σ over windows of (the window's mean −log p(target), in nats) × (the window's token count): GPTQ's seqLen − 1;
   * HF's num_loss_tokens (§9.2, see slidingWindows). nll / tokens = log(perplexity).
   */
  nll: number;
  /** The count perplexity divides by: windows × (seqLen − 1) for GPTQ; Σ num_loss_tokens with a stride. */
  tokens: number;
  /**
   * Targets actually scored, each counted once, and Σ −log p over them. Equal to tokens / nll under GPTQ; with a
   * stride < seqLen, HF's count is one short of `scored` in every window after the first (§9.2), so
   * exp(scoredNll / scored) is the exact per-token perplexity of the same scores.
   */
  scored: number;
  scoredNll: number;
  windows: number;
  /** Tokens per window (the requested seqLen, or the whole stream when it is shorter than one window). */
  seqLen: number;
  /** The stride, when one was given (HF's sliding windows, §9.2). */
  stride?: number;
  /**
   * Windows in the whole stream before maxWindows: full windows for GPTQ (0 when the stream is shorter than one);
   * with a stride, every window of the sliding loop.
   */
  windowsAvailable: number;
}

/** One window of HF's sliding loop: input ids[begin, end); the last `scored` positions are targets. */
export interface SlidingWindow {
  begin: number;
  end: number;
  /** end − prev_end: the labels HF leaves at their token (the rest are −100). */
  trgLen: number;
  /** Targets scored after the shift: min(trgLen, end − begin − 1), the window's first token never being one. */
  scored: number;
  /** HF's num_loss_tokens: (labels ≠ −100) − 1 = min(trgLen, end − begin) − 1. */
  lossTokens: number;
}

/**
 * The windows of HF's "Perplexity of fixed-length models" loop (FORMATS.md §9.2) over a stream of `n` tokens:
 * for begin in 0, stride, 2·stride…: end = min(begin + maxLength, n), trg_len = end − prev_end, labels = the window
 * with all but its last trg_len positions set to −100; stop when end == n. The model's loss is the mean over the
 * labels left after its internal shift (label t + 1 against logits t), and the doc weights it by
 * num_loss_tokens = (labels ≠ −100) − batch size. That is the scored count in the first window and whenever
 * stride ≥ maxLength (the shift drops a real label); with overlapping windows the label the shift drops is already
 * −100, so each later window scores trg_len targets and is weighted by trg_len − 1 (the doc's count, kept here so
 * the number is HF's; `scored` in the result has the true count). A stride > maxLength skips the tokens between
 * windows. A final window of one token has no target: HF's code would add 0 × NaN (the mean of no labels) and answer
 * NaN; it adds nothing here.
 */
export function slidingWindows(n: number, maxLength: number, stride: number): SlidingWindow[] {
  const out: SlidingWindow[] = [];
  let prevEnd = 0;
  for (let begin = 0; begin < n; begin += stride) {
    const end = Math.min(begin + maxLength, n), len = end - begin, trgLen = end - prevEnd;
    out.push({ begin, end, trgLen, scored: Math.min(trgLen, len - 1), lossTokens: Math.min(trgLen, len) - 1 });
    prevEnd = end;
    if (end === n) break;
  }
  return out;
}

export function perplexity(model: CausalLM, ids: ArrayLike<number>, opts: PerplexityOptions = {}): PerplexityResult {
  const seqLen = opts.seqLen ?? 256;
  checkProgressCallback(opts.onProgress, 'perplexity');
  if (!Number.isInteger(seqLen) || seqLen < 2) throw new RangeError(`perplexity: seqLen must be an integer ≥ 2, got ${seqLen}`);
  if (opts.stride !== undefined && !(Number.isInteger(opts.stride) && opts.stride >= 1)) {
    throw new RangeError(`perplexity: stride must be an integer ≥ 1, got ${opts.stride}`);
  }
  if (opts.maxWindows !== undefined && !(Number.isInteger(opts.maxWindows) && opts.maxWindows >= 1)) {
    throw new RangeError(`perplexity: maxWindows must be an integer ≥ 1, got ${opts.maxWindows}`);
  }
  if (ids.length < 2) throw new RangeError('perplexity needs at least 2 tokens');
  let plan: SlidingWindow[], windowsAvailable: number;
  if (opts.stride === undefined) {
    windowsAvailable = Math.floor(ids.length / seqLen);           // §9.1: nsamples = numel // seqlen
    const len = windowsAvailable === 0 ? ids.length : seqLen;
    plan = Array.from({ length: Math.max(1, windowsAvailable) }, (_, w) => ({ begin: w * seqLen, end: w * seqLen + len, trgLen: len, scored: len - 1, lossTokens: len - 1 }));
  } else {
    plan = slidingWindows(ids.length, seqLen, opts.stride);
    windowsAvailable = plan.length;
  }
  const len = Math.min(seqLen, ids.length);
  if (len > model.maxPositions) {
    throw new RangeError(`perplexity: windows of ${len} tokens are longer than the model's ${model.maxPositions} positions; use seqLen ≤ ${model.maxPositions}`);
  }
  if (opts.maxWindows !== undefined) plan = plan.slice(0, opts.maxWindows);
  const V = model.config.vocab_size;
  let nll = 0, tokens = 0, scoredNll = 0, scored = 0, fed = 0;
  const t0 = performance.now();
  plan.forEach((w, k) => {
    opts.signal?.throwIfAborted();
    const n = w.end - w.begin;
    const win = Array.from({ length: n }, (_, i) => ids[w.begin + i]);
    const logits = model.backend.download(model.forward([win])).f32;                      // [1, n, V]
    let sum = 0;
    for (let t = n - 1 - w.scored; t < n - 1; t++) {              // position t predicts win[t + 1]
      sum += nllAt(logits.subarray(t * V, (t + 1) * V), win[t + 1], `perplexity: window ${k}, position ${t}`);
    }
    scoredNll += sum; scored += w.scored;
    if (w.scored > 0) { nll += (sum / w.scored) * w.lossTokens; tokens += w.lossTokens; }
    fed += n;
    if (opts.onProgress) {
      const elapsedMs = performance.now() - t0;
      opts.onProgress({ task: 'perplexity', done: k + 1, total: plan.length, unit: 'windows', elapsedMs, tokens: fed, tokensPerSec: elapsedMs > 0 ? fed / (elapsedMs / 1000) : 0 });
    }
  });
  if (opts.stride === undefined) { nll = scoredNll; tokens = scored; }   // the same sums, without the mean's rounding
  return {
    perplexity: Math.exp(nll / tokens), nll, tokens, scored, scoredNll, windows: plan.length, seqLen: len,
    ...(opts.stride !== undefined ? { stride: opts.stride } : {}), windowsAvailable,
  };
}

/** −log softmax(row)[target] in float64; a non-finite logit is an error naming `where` (the window and position). */
export function nllAt(row: Float32Array, target: number, where: string): number {
  let max = -Infinity;
  for (let v = 0; v < row.length; v++) {
    // NaN would compare false and vanish from the max; Inf would give a perplexity of NaN or 1. Either is a broken model.
    if (row[v] - row[v] !== 0) {
      throw new NonFiniteLogitsError(`${where}: non-finite logits: logit of token ${v} is ${row[v]}; the weights hold NaN/Inf or config.json has impossible values`, 'prefill', 0);
    }
    if (row[v] > max) max = row[v];
  }
  let sum = 0;
  for (let v = 0; v < row.length; v++) sum += Math.exp(row[v] - max);
  return Math.log(sum) + max - row[target];
}
