// LAMBADA last-word accuracy, as EleutherAI's lm-evaluation-harness scores lambada_openai: each passage is split at
// its last space into a context and a target (context = text.rsplit(' ', 1)[0], target = ' ' + last word); the
// context and context + target are tokenized with the tokenizer's special tokens (so a BOS is added once, at the
// start, as transformers adds it), the target tokens are what context + target has beyond as many tokens as the
// context has (lm-eval's whole_enc[len(context_enc):]), and one forward over context + target minus its last token
// scores them all. An example is correct iff the argmax at every target position is the target token: greedy
// decoding from the tokens before the target would produce it exactly. ppl is lm-eval's lambada perplexity: exp of
// the mean over examples of the target's summed −log p (per word, not per token); tokenPpl is the per-token figure.
//
// Where the context's tokens are a prefix of the whole's, that is lm-eval exactly. They are whenever no token spans
// the space before the word: the byte-level BPE of Llama 3, Qwen2 and OPT splits at spaces first, and SentencePiece
// vocabularies (Llama 2, Mistral) only hold a space as a piece's leading ▁. A BPE trained without a pre-tokenizer can
// merge across the space (tinystories-656k: "...worked" → "work", "ed" but "...worked together" →
// "worked▁", "together"), and lm-eval's slice would then be the wrong tokens, or none. For those examples
// (`boundaryMerge`) the target starts at the token of context + target that holds the word's first character, found
// by decoding prefixes; the tokens before it are the prompt, as generation from the real text's tokens would see it.
// Such a token may hold the end of the context too (tinystories-656k has one token "lived▁happily▁ever▁after"); the
// model must then produce that whole token, since no prompt ends inside it.
//
// lm-eval encodes without special tokens unless add_bos_token is set; here the tokenizer's own special tokens are
// added (BOS for Llama), as lm-eval does with add_bos_token=True.
//
// Examples run one per forward, or in batches of `batchSize`, left-padded with an attention mask (positions follow the
// mask, as in generate), so a row's logits are those of the row run alone up to float rounding.
import { readFileSync } from 'node:fs';
import type { LoadedModel } from '../api.js';
import { argmax } from '../generate/sampling.js';
import type { CausalLM } from '../models/model.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { probePath } from '../util/fs.js';
import { checkProgressCallback, type OnProgress, type Progress } from '../util/progress.js';
import { nllAt } from './perplexity.js';

/** A LAMBADA file or passage that cannot be used; the message names the file and line (or the example's index). */
export class LambadaDataError extends Error { override name = 'LambadaDataError'; }

/** One passage split for scoring: `target` starts with the space that separated it from `context`. */
export interface LambadaExample { context: string; target: string }

/** Progress of a LAMBADA run: task 'lambada', unit 'examples', plus the examples counted correct so far. */
export interface LambadaProgress extends Progress { readonly correct: number }

export interface LambadaOptions {
  /**
   * Examples per forward (default 1), left-padded to the longest of the batch. One example's forward is already a
   * matrix-matrix product over its tokens, so on a CPU batching only adds padding (measured: no gain on 2 cores).
   */
  batchSize?: number;
  /** Score only the first N examples. */
  maxExamples?: number;
  /** Called after each batch (src/util/progress.ts) with the examples done and in all, and how many were correct. */
  onProgress?: OnProgress<LambadaProgress>;
  /** Checked before each batch: an aborted signal stops the run with its reason. */
  signal?: AbortSignal;
}

export interface LambadaExampleResult {
  /** Whether greedy decoding reproduces every target token. */
  correct: boolean;
  /** The target's tokens, as context + target tokenizes beyond the context's tokens. */
  targetIds: number[];
  /** The argmax at each target position. */
  predicted: number[];
  /** Σ −log p over the target tokens, in nats (lm-eval's −loglikelihood). */
  nll: number;
  /** Context tokens dropped from the front to fit the model's positions (lm-eval truncates the same way); usually 0. */
  truncated: number;
  /** The context's own tokens are not a prefix of context + target's (a merge crosses the space; see the file's head). */
  boundaryMerge: boolean;
}

export interface LambadaResult {
  accuracy: number;
  correct: number;
  total: number;
  /** lm-eval's lambada perplexity: exp(mean over examples of the target's summed −log p). */
  ppl: number;
  /** exp(Σ nll / Σ target tokens): the per-token perplexity of the targets. */
  tokenPpl: number;
  /** Σ −log p over every target token. */
  nll: number;
  targetTokens: number;
  /** Examples whose context was cut from the front to fit (see LambadaExampleResult.truncated). */
  truncatedExamples: number;
  /** Examples whose context tokens are not a prefix of context + target's (see LambadaExampleResult.boundaryMerge). */
  boundaryMerges: number;
  examples: LambadaExampleResult[];
}

/**
 * A passage → context and target, as lm-eval's lambada_openai task does: split at the last ' ', the space kept with
 * the target. Trailing whitespace (a file's line ending) is removed first. A passage with no space, or with nothing
 * after or before the last one, has no context or no word to predict: a LambadaDataError naming `where`.
 */
export function lambadaExample(text: string, where = 'passage'): LambadaExample {
  const t = text.replace(/\s+$/u, '');
  if (t.length === 0) throw new LambadaDataError(`${where}: "text" is empty`);
  const i = t.lastIndexOf(' ');
  if (i < 0) throw new LambadaDataError(`${where}: "text" has no space, so no context before its last word (a LAMBADA passage is a context, a space and the word to predict)`);
  if (t.slice(0, i).trim().length === 0) throw new LambadaDataError(`${where}: "text" has nothing before its last word to use as context`);
  return { context: t.slice(0, i), target: t.slice(i) };
}

/**
 * A LAMBADA JSONL file (OpenAI's lambada_test.jsonl, EleutherAI's lambada_openai): one JSON object per line with a
 * string field `text`; blank lines are skipped. Errors are LambadaDataErrors naming `file:line`.
 */
export function readLambada(file: string, opts: { maxExamples?: number } = {}): LambadaExample[] {
  const p = probePath(file);
  if (p.kind === 'missing') throw new LambadaDataError(`${file}: no such file`);
  if (p.kind === 'dir') throw new LambadaDataError(`${file}: is a folder, not a file`);
  if (p.kind === 'bad') throw new LambadaDataError(`${file}: ${p.problem}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(readFileSync(file));
  } catch (e) {
    throw new LambadaDataError(`${file}: ${e instanceof TypeError ? 'is not valid UTF-8' : `cannot be read: ${(e as Error).message}`}`);
  }
  const out: LambadaExample[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (opts.maxExamples !== undefined && out.length >= opts.maxExamples) break;
    const line = lines[i].replace(/\r$/, '');
    if (line.trim() === '') continue;
    const where = `${file}:${i + 1}`;
    let row: unknown;
    try { row = JSON.parse(line); } catch (e) { throw new LambadaDataError(`${where}: not a JSON object (${(e as Error).message})`); }
    if (row === null || typeof row !== 'object' || Array.isArray(row)) throw new LambadaDataError(`${where}: not a JSON object, got ${Array.isArray(row) ? 'an array' : JSON.stringify(row)}`);
    if (!Object.hasOwn(row, 'text')) throw new LambadaDataError(`${where}: no "text" field (keys: ${Object.keys(row).join(', ') || 'none'})`);
    const t = (row as { text: unknown }).text;
    if (typeof t !== 'string') throw new LambadaDataError(`${where}: "text" must be a string, got ${t === null ? 'null' : typeof t}`);
    out.push(lambadaExample(t, where));
  }
  if (out.length === 0) throw new LambadaDataError(`${file}: holds no examples (one JSON object with a "text" field per line)`);
  return out;
}

interface Prepared { input: number[]; targetIds: number[]; truncated: number; boundaryMerge: boolean }

/** Tokenize one example as lm-eval's HF model does (_encode_pair), fitted to `positions` by cutting the context's front. */
function prepare(tokenizer: Tokenizer, ex: LambadaExample, index: number, positions: number): Prepared {
  let { context, target } = ex;
  // lm-eval moves the context's trailing whitespace onto the continuation before encoding.
  const spaces = context.length - context.trimEnd().length;
  if (spaces > 0) { target = context.slice(context.length - spaces) + target; context = context.slice(0, context.length - spaces); }
  const ctx = tokenizer.encode(context), whole = tokenizer.encode(context + target);
  const merged = ctx.length >= whole.length || ctx.some((t, i) => whole[i] !== t);
  const start = merged ? wordStartToken(tokenizer, whole, target.trimStart(), index) : ctx.length;
  const targetIds = whole.slice(start);
  if (start === 0) throw new LambadaDataError(`example ${index}: no token comes before the target, so no position predicts it`);
  if (targetIds.length > positions) throw new LambadaDataError(`example ${index}: the target is ${targetIds.length} tokens, more than the model's ${positions} positions`);
  let input = whole.slice(0, -1);                                 // position t predicts whole[t + 1]
  const truncated = Math.max(0, input.length - positions);
  if (truncated) input = input.slice(truncated);
  return { input, targetIds, truncated, boundaryMerge: merged };
}

/**
 * The index of the token of `whole` that holds the first character of `word` (the text's last characters): the
 * largest k whose prefix whole[:k] decodes to no more than the text before the word. Decoding drops special tokens;
 * a tokenizer that does not decode back to text ending in the word cannot say where the target starts.
 */
function wordStartToken(tokenizer: Tokenizer, whole: number[], word: string, index: number): number {
  const dec = (ids: number[]) => tokenizer.decode(ids, { skipSpecialTokens: true, cleanUpTokenizationSpaces: false });
  const text = dec(whole);
  if (!text.endsWith(word)) {
    throw new LambadaDataError(`example ${index}: context + target decodes to text that does not end in the target word ${JSON.stringify(word)}, so its tokens cannot be told apart from the context's`);
  }
  const wordStart = text.length - word.length;
  let k = whole.length - 1;
  while (k > 0 && dec(whole.slice(0, k)).length > wordStart) k--;
  return k;
}

/**
 * LAMBADA accuracy of `model` over `examples` (passages as text, split by lambadaExample, or already split).
 * `model` is a CausalLM or what fromPretrained returned; `tokenizer` may be null when it is a LoadedModel with one.
 */
export function lambada(model: CausalLM | LoadedModel, tokenizer: Tokenizer | null, examples: (string | LambadaExample)[], opts: LambadaOptions = {}): LambadaResult {
  const loaded = typeof (model as CausalLM).forward !== 'function' ? model as LoadedModel : null;
  const lm = loaded ? loaded.model : model as CausalLM;
  const tok = tokenizer ?? loaded?.tokenizer ?? null;
  if (!tok) throw new TypeError('lambada: needs a tokenizer (pass one, or the LoadedModel of a folder with tokenizer.json)');
  checkProgressCallback(opts.onProgress, 'lambada');
  const batchSize = opts.batchSize ?? 1;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`lambada: batchSize must be an integer ≥ 1, got ${batchSize}`);
  if (opts.maxExamples !== undefined && !(Number.isInteger(opts.maxExamples) && opts.maxExamples >= 1)) {
    throw new RangeError(`lambada: maxExamples must be an integer ≥ 1, got ${opts.maxExamples}`);
  }
  if (!Array.isArray(examples) || examples.length === 0) throw new RangeError('lambada: no examples given');
  const list = examples.slice(0, opts.maxExamples ?? examples.length).map((e, i) => {
    if (typeof e === 'string') return lambadaExample(e, `example ${i}`);
    if (e === null || typeof e !== 'object' || typeof e.context !== 'string' || typeof e.target !== 'string') {
      throw new LambadaDataError(`example ${i}: must be a passage (string) or { context, target } strings`);
    }
    if (e.target.trim() === '') throw new LambadaDataError(`example ${i}: the target is empty`);
    return e;
  });
  const V = lm.config.vocab_size;
  const results: LambadaExampleResult[] = [];
  let correct = 0;
  const t0 = performance.now();
  for (let start = 0; start < list.length; start += batchSize) {
    opts.signal?.throwIfAborted();
    const batch = list.slice(start, start + batchSize).map((e, j) => prepare(tok, e, start + j, lm.maxPositions));
    const T = Math.max(...batch.map((b) => b.input.length));
    // Left padding (token 0, masked out), so every row's targets sit at the end: [B, T].
    const ids = batch.map((b) => [...new Array<number>(T - b.input.length).fill(0), ...b.input]);
    const mask = batch.map((b) => [...new Array<number>(T - b.input.length).fill(0), ...new Array<number>(b.input.length).fill(1)]);
    const logits = lm.backend.download(lm.forward(ids, batch.length > 1 ? { attentionMask: mask } : {})).f32;   // [B, T, V]
    batch.forEach((b, r) => {
      const m = b.targetIds.length, predicted: number[] = [];
      let nll = 0;
      for (let j = 0; j < m; j++) {
        const t = T - m + j;                                      // padded position predicting target token j
        const row = logits.subarray((r * T + t) * V, (r * T + t + 1) * V);
        nll += nllAt(row, b.targetIds[j], `lambada: example ${start + r}, target token ${j}`);
        predicted.push(argmax(row));
      }
      const ok = predicted.every((p, j) => p === b.targetIds[j]);
      if (ok) correct++;
      results.push({ correct: ok, targetIds: b.targetIds, predicted, nll, truncated: b.truncated, boundaryMerge: b.boundaryMerge });
    });
    if (opts.onProgress) {
      opts.onProgress({ task: 'lambada', done: results.length, total: list.length, unit: 'examples', elapsedMs: performance.now() - t0, correct });
    }
  }
  const nll = results.reduce((s, r) => s + r.nll, 0), targetTokens = results.reduce((s, r) => s + r.targetIds.length, 0);
  return {
    accuracy: correct / results.length, correct, total: results.length,
    ppl: Math.exp(nll / results.length), tokenPpl: Math.exp(nll / targetTokens), nll, targetTokens,
    truncatedExamples: results.filter((r) => r.truncated > 0).length, boundaryMerges: results.filter((r) => r.boundaryMerge).length,
    examples: results,
  };
}
