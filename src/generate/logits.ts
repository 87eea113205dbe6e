// Logits processors in transformers' order (../shared/spec/FORMATS.md §7.2), on the fp32 logits of one row's last position.
// Each works in place on `scores` and sees the row's whole token history (prompt, padding and generated).
import type { ResolvedGeneration } from './config.js';

/**
 * The model produced NaN or ±Inf: broken weights (NaN/Inf in the checkpoint) or impossible config values. Choosing a
 * token from such scores would silently return token 0, so generation and perplexity stop here instead.
 */
export class NonFiniteLogitsError extends Error {
  override name = 'NonFiniteLogitsError';
  constructor(
    message: string,
    /** 'prefill', or the 1-based decode step whose logits were bad. */
    readonly step: 'prefill' | number,
    readonly row: number,
  ) { super(message); }
}

/** Index of the first NaN/±Inf in scores[from, to), or −1. One pass, no allocation. */
export function firstNonFinite(scores: Float32Array, from = 0, to = scores.length): number {
  for (let i = from; i < to; i++) {
    const x = scores[i];
    if (x - x !== 0) return i;                      // NaN − NaN and Inf − Inf are NaN; finite x − x is 0
  }
  return -1;
}

/** Throw NonFiniteLogitsError if row `row` of [rows, V] logits has a NaN/±Inf. `where` is e.g. "decode step 3". */
export function checkFiniteRow(logits: Float32Array, row: number, V: number, step: 'prefill' | number): void {
  const i = firstNonFinite(logits, row * V, (row + 1) * V);
  if (i < 0) return;
  const where = step === 'prefill' ? 'the prefill' : `decode step ${step}`;
  throw new NonFiniteLogitsError(`non-finite logits at ${where}, row ${row}: logit of token ${i - row * V} is ${logits[i]}; the weights hold NaN/Inf or config.json has impossible values (rms_norm_eps, rope_theta, RoPE factors)`, step, row);
}

/** Tokens seen anywhere in the row: s < 0 ? s·p : s/p, each id once. */
export function applyRepetitionPenalty(scores: Float32Array, history: ArrayLike<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of seenIds(history, scores.length)) {
    const s = scores[id];
    scores[id] = s < 0 ? s * penalty : s / penalty;
  }
}

/** The ids in a row's history, each once, those inside the vocabulary [0, V). */
function seenIds(history: ArrayLike<number>, V: number): number[] {
  const seen = new Set<number>();
  for (let i = 0; i < history.length; i++) seen.add(history[i]);
  return [...seen].filter((id) => id >= 0 && id < V);
}

/** Ban every token that would complete an n-gram already present in the row. */
export function applyNoRepeatNgram(scores: Float32Array, history: ArrayLike<number>, n: number): void {
  for (const id of noRepeatNgramBans(history, n)) scores[id] = -Infinity;
}

/** The tokens that would complete an n-gram already present in the row (repeats possible). */
export function noRepeatNgramBans(history: ArrayLike<number>, n: number): number[] {
  const bans: number[] = [];
  if (n <= 0 || history.length + 1 < n) return bans;
  const len = history.length;
  for (let start = 0; start + n <= len; start++) {
    let match = true;
    // Does history[start … start+n−2] equal the last n−1 tokens?
    for (let j = 0; j < n - 1; j++) {
      if (history[start + j] !== history[len - n + 1 + j]) { match = false; break; }
    }
    if (match) bans.push(history[start + n - 1]);
  }
  return bans;
}

/**
 * What processLogits takes from a row's history, for a device sampler (Backend.sampleIds): the ids the repetition
 * penalty applies to (each once, in range) and the ids it sets to −inf (n-gram bans, eos before min_new_tokens).
 */
export function historyInputs(history: ArrayLike<number>, generated: number, g: ResolvedGeneration, V: number): { penalized: number[]; banned: number[] } {
  const penalized = g.repetitionPenalty !== 1 ? seenIds(history, V) : [];
  const banned = noRepeatNgramBans(history, g.noRepeatNgramSize).filter((id) => id >= 0 && id < V);
  if (generated < g.minNewTokens) for (const e of g.eos) if (e >= 0 && e < V) banned.push(e);
  return { penalized, banned };
}

/** Eos can't win until enough new tokens exist. */
export function applyMinNewTokens(scores: Float32Array, generated: number, minNew: number, eos: number[]): void {
  if (generated >= minNew) return;
  for (const e of eos) if (e >= 0 && e < scores.length) scores[e] = -Infinity;
}

export function applyTemperature(scores: Float32Array, t: number): void {
  if (t === 1) return;
  for (let i = 0; i < scores.length; i++) scores[i] = scores[i] / t;
}

/** Keep scores ≥ the k-th largest (ties at the threshold survive, as in transformers). */
export function applyTopK(scores: Float32Array, k: number): void {
  if (k <= 0 || k >= scores.length) return;
  const sorted = Float32Array.from(scores).sort();
  const threshold = sorted[sorted.length - k];
  for (let i = 0; i < scores.length; i++) if (scores[i] < threshold) scores[i] = -Infinity;
}

/** Nucleus: drop the low tail whose cumulative probability is ≤ 1 − p; always keep the top token. */
export function applyTopP(scores: Float32Array, p: number): void {
  if (p >= 1) return;
  const order = Array.from(scores.keys()).sort((a, b) => scores[a] - scores[b]);   // ascending
  const probs = softmax(scores);
  let cum = 0;
  for (let r = 0; r < order.length - 1; r++) {
    cum += probs[order[r]];
    if (cum <= 1 - p) scores[order[r]] = -Infinity;
    else break;
  }
}

/** Drop tokens whose probability is below minP × the top probability. */
export function applyMinP(scores: Float32Array, minP: number): void {
  const probs = softmax(scores);
  let top = 0;
  for (const q of probs) top = Math.max(top, q);
  const cut = minP * top;
  for (let i = 0; i < scores.length; i++) if (probs[i] < cut) scores[i] = -Infinity;
}

export function softmax(scores: Float32Array): Float64Array {
  let max = -Infinity;
  for (const s of scores) if (s > max) max = s;
  const out = new Float64Array(scores.length);
  let sum = 0;
  for (let i = 0; i < scores.length; i++) { out[i] = Math.exp(scores[i] - max); sum += out[i]; }
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

/** The full chain for one row; sampling warpers only when sampling. */
export function processLogits(scores: Float32Array, history: ArrayLike<number>, generated: number, g: ResolvedGeneration): void {
  applyRepetitionPenalty(scores, history, g.repetitionPenalty);
  applyNoRepeatNgram(scores, history, g.noRepeatNgramSize);
  applyMinNewTokens(scores, generated, g.minNewTokens, g.eos);
  if (!g.doSample) return;
  applyTemperature(scores, g.temperature);
  applyTopK(scores, g.topK);
  applyTopP(scores, g.topP);
  if (g.minP !== null && g.minP > 0) applyMinP(scores, g.minP);
}
