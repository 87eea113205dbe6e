// The generation loop: left-padded batches, one prefill, then one-token decode steps over the KV cache, per-row
// stopping (eos list, stop strings, length) and a finish reason per row. FORMATS.md §7.3–7.4.
import type { CausalLM } from '../models/model.js';
import type { Tokenizer } from '../tokenizer/index.js';
import { GenerationConfig, GenerationConfigError, resolveGeneration, ResolvedGeneration } from './config.js';
import { processLogits } from './logits.js';
import { argmax, Rng, sample } from './sampling.js';
import { IncrementalDecoder } from './stream.js';

export type FinishReason = 'eos' | 'length' | 'stop';

export interface GenerateOptions extends GenerationConfig {
  /** Needed for stop strings and for text in stream events and results. */
  tokenizer?: Tokenizer;
  /** generation_config.json of the model, applied before the call options. */
  modelDefaults?: GenerationConfig;
}

export interface StreamEvent {
  /** Row of the batch. */
  row: number;
  tokenId: number;
  /** Newly final text of this row ('' while a multi-byte character is incomplete, or without a tokenizer). */
  text: string;
}

export interface GenerateResult {
  /** Per row: the prompt (unpadded) followed by the generated tokens. */
  sequences: number[][];
  /** Per row: only the generated tokens, up to and including the stopping token. */
  tokens: number[][];
  texts: string[];
  finishReasons: FinishReason[];
  timings: { prefillMs: number; decodeMs: number; decodeSteps: number };
}

/** Left-pad ragged prompts: rows [pad…pad, tokens] with mask 0 on the pads. */
export function padLeft(prompts: number[][], padId: number): { ids: number[][]; mask: number[][] } {
  const T = Math.max(...prompts.map((p) => p.length));
  return {
    ids: prompts.map((p) => [...new Array(T - p.length).fill(padId), ...p]),
    mask: prompts.map((p) => [...new Array(T - p.length).fill(0), ...new Array(p.length).fill(1)]),
  };
}

/**
 * Generate for one or more prompts, yielding each new token as it is chosen. The generator's return value is
 * the full result, so `for await` streams and `generate()` collects.
 */
export async function* generateStream(model: CausalLM, prompts: number[][], opts: GenerateOptions = {}): AsyncGenerator<StreamEvent, GenerateResult> {
  if (prompts.length === 0 || prompts.some((p) => p.length === 0)) throw new GenerationConfigError('every prompt needs at least one token');
  const B = prompts.length;
  const maxPrompt = Math.max(...prompts.map((p) => p.length));
  const cfgEos = model.config.eos_token_id;
  const g: ResolvedGeneration = resolveGeneration([
    { eosTokenId: cfgEos, padTokenId: model.config.pad_token_id },
    opts.modelDefaults ?? {},
    opts,
  ], maxPrompt);
  if (g.stopStrings.length && !opts.tokenizer) throw new GenerationConfigError('stopStrings need a tokenizer');
  const rng = new Rng(g.seed);
  const V = model.config.vocab_size;
  // A pad id outside the vocabulary (some configs say −1) is never attended to; feed a valid id in its place.
  const feedPad = g.padTokenId >= 0 && g.padTokenId < V ? g.padTokenId : 0;
  const { ids, mask } = padLeft(prompts, feedPad);
  if (model.config.model_type === 'opt' && maxPrompt + g.maxNewTokens > model.config.max_position_embeddings) {
    throw new GenerationConfigError(`OPT has ${model.config.max_position_embeddings} learned positions; ${maxPrompt} prompt + ${g.maxNewTokens} new tokens do not fit`);
  }
  const cache = model.createCache(B, maxPrompt + g.maxNewTokens);
  const history = ids.map((r) => r.slice());
  const tokens: number[][] = prompts.map(() => []);
  const finish: (FinishReason | null)[] = prompts.map(() => null);
  const decoders = opts.tokenizer ? prompts.map(() => new IncrementalDecoder(opts.tokenizer!)) : null;
  const texts = prompts.map(() => '');   // filled from the decoders at the end
  const timings = { prefillMs: 0, decodeMs: 0, decodeSteps: 0 };

  if (g.maxNewTokens === 0) finish.fill('length');
  let t0 = performance.now();
  let logits = g.maxNewTokens > 0 ? model.forward(ids, { attentionMask: mask, cache, logits: 'last' }).f32 : null;
  timings.prefillMs = performance.now() - t0;
  t0 = performance.now();
  for (let step = 0; logits && step < g.maxNewTokens; step++) {
    const next = new Array<number>(B);
    for (let b = 0; b < B; b++) {
      if (finish[b]) { next[b] = feedPad; continue; }         // finished rows are fed padding, as in transformers
      const scores = logits.slice(b * V, (b + 1) * V);
      processLogits(scores, history[b], tokens[b].length, g);
      next[b] = g.doSample ? sample(scores, rng) : argmax(scores);
    }
    const events: StreamEvent[] = [];
    for (let b = 0; b < B; b++) {
      if (finish[b]) continue;
      const id = next[b];
      tokens[b].push(id);
      history[b].push(id);
      let text = decoders ? decoders[b].push(id) : '';
      if (g.eos.includes(id)) finish[b] = 'eos';
      else if (g.stopStrings.length && g.stopStrings.some((s) => decoders![b].text.includes(s))) finish[b] = 'stop';
      else if (tokens[b].length >= g.maxNewTokens) finish[b] = 'length';
      if (finish[b] && decoders) text += decoders[b].flush();     // the row is done: nothing is held back any more
      events.push({ row: b, tokenId: id, text });
    }
    for (const e of events) yield e;
    if (finish.every((f) => f)) break;
    logits = model.forward(next.map((id) => [id]), { attentionMask: next.map(() => [1]), cache, logits: 'last' }).f32;
    timings.decodeSteps++;
  }
  timings.decodeMs = performance.now() - t0;
  // The authoritative text is the full decode (streamed deltas may differ only where clean-up rewrote a word).
  if (decoders) decoders.forEach((d, b) => { texts[b] = d.text; });
  return {
    sequences: prompts.map((p, b) => [...p, ...tokens[b]]),
    tokens,
    texts,
    finishReasons: finish.map((f) => f ?? 'length'),
    timings,
  };
}

/** Run generation to the end and return the result (no streaming). */
export async function generate(model: CausalLM, prompts: number[][], opts: GenerateOptions = {}): Promise<GenerateResult> {
  const it = generateStream(model, prompts, opts);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
  }
}
