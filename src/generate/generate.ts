// The generation loop: prompts as text or ids, fitted to the model's positions, left-padded batches, one prefill,
// then one-token decode steps over the KV cache, per-row stopping (eos list, stop strings, length) and a finish
// reason per row. ../shared/spec/FORMATS.md §7.3–7.4.
import type { LoadedModel } from '../api.js';
import { checkTokenId, type CausalLM } from '../models/model.js';
import type { Tokenizer } from '../tokenizer/index.js';
import type { Tensor } from '../tensor/tensor.js';
import { freshSeed, GenerationConfig, GenerationConfigError, normalizeGenerationConfig, resolveGeneration, ResolvedGeneration } from './config.js';
import { checkFiniteRow, historyInputs, processLogits } from './logits.js';
import { argmax, Rng, sample } from './sampling.js';
import { IncrementalDecoder, StopStringMatcher } from './stream.js';
import { progressReporter, type OnProgress } from '../util/progress.js';

export type FinishReason = 'eos' | 'length' | 'stop';

/** One prompt: text (tokenized with the tokenizer's special tokens, BOS included, as transformers' pipeline does) or ids. */
export type Prompt = string | number[];

export interface GenerateOptions extends GenerationConfig {
  /** Tokenizes string prompts; needed for stop strings and for text in events and results. Default: the LoadedModel's. */
  tokenizer?: Tokenizer;
  /** generation_config.json of the model, applied before the call options. Default: the LoadedModel's. */
  modelDefaults?: GenerationConfig;
  /**
   * What to do when a prompt + max(maxNewTokens, minNewTokens) does not fit `model.maxPositions`:
   * 'none' (default) refuses before the prefill; 'left' keeps each prompt's last (limit − new tokens) tokens and
   * reports the dropped counts in `GenerateResult.truncated`. Truncation never shortens the generation: a request
   * for as many new tokens as the model has positions is refused either way.
   */
  truncation?: 'left' | 'none';
  /**
   * Called after each token step (src/util/progress.ts): task 'generate', unit 'steps', done = steps so far, total =
   * the most there can be (maxNewTokens; generation may stop earlier).
   */
  onProgress?: OnProgress;
}

/** Option keys that are not generation settings (checked here, not by normalizeGenerationConfig). */
const CALL_ONLY = ['tokenizer', 'modelDefaults', 'truncation', 'onProgress'] as const;

export interface StreamEvent {
  /** Row of the batch. */
  row: number;
  tokenId: number;
  /** Newly final text of this row ('' while a multi-byte character is incomplete, or without a tokenizer). */
  text: string;
  /** Set on the row's last event: why it ended. */
  finishReason?: FinishReason;
}

export interface GenerateResult {
  /** Per row: the prompt as the model saw it (after any truncation, unpadded), then the generated tokens. */
  sequences: number[][];
  /** Per row: only the generated tokens, up to and including the stopping token. */
  tokens: number[][];
  /** Per row: the generated text, decoded after the prompt's last tokens so a leading space is kept ('' without a tokenizer). */
  texts: string[];
  finishReasons: FinishReason[];
  /** Per row: prompt tokens dropped from the front by `truncation: 'left'` (0 when none were). */
  truncated: number[];
  /** The sampler's seed: the one given, or a fresh random one (pass it as `seed` to repeat an unseeded run). */
  seed: number;
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
 * An error about one prompt of the batch: `row` is its index in the prompts given to generate (TokenIdError and
 * NonFiniteLogitsError have their own `row`; GenerationConfigErrors about one prompt get it here), so a caller that
 * ran a slice of a larger list can name the prompt in its own terms (lowbit generate names the prompts file's line).
 */
export type RowError = Error & { readonly row: number };

/** `e` with a `row` property (non-enumerable like `message`, and configurable so a copy can renumber it). */
function withRow<E extends Error>(e: E, row: number): E & { readonly row: number } {
  Object.defineProperty(e, 'row', { value: row, enumerable: false, writable: false, configurable: true });
  return e as E & { readonly row: number };
}

/** Whether `e` is about one prompt of the batch (see RowError). */
export function isRowError(e: unknown): e is RowError {
  return e instanceof Error && Number.isSafeInteger((e as { row?: unknown }).row);
}

function isLoadedModel(m: CausalLM | LoadedModel): m is LoadedModel {
  return typeof (m as CausalLM).forward !== 'function' && typeof (m as LoadedModel).model?.forward === 'function';
}

/** One prompt or a batch → token id rows, each id checked against the vocabulary. */
function promptIds(prompts: Prompt | Prompt[], tokenizer: Tokenizer | undefined, vocabSize: number): number[][] {
  const list: unknown[] = typeof prompts === 'string' ? [prompts]
    : Array.isArray(prompts) && prompts.length > 0 && prompts.every((x) => typeof x === 'number') ? [prompts]
    : Array.isArray(prompts) ? prompts : [prompts];
  if (list.length === 0) throw new GenerationConfigError('generate: no prompts given');
  return list.map((p, row) => {
    let ids: number[];
    if (typeof p === 'string') {
      if (!tokenizer) throw withRow(new GenerationConfigError(`generate: prompt ${row} is text but there is no tokenizer: pass options.tokenizer, or the LoadedModel from fromPretrained (its folder needs a tokenizer.json)`), row);
      ids = tokenizer.encode(p);
    } else if (Array.isArray(p)) {
      ids = p;
    } else {
      throw withRow(new GenerationConfigError(`generate: prompt ${row} must be a string or an array of token ids, got ${p === null ? 'null' : typeof p}`), row);
    }
    if (ids.length === 0) throw withRow(new GenerationConfigError(`generate: prompt ${row} has no tokens; every prompt needs at least one`), row);
    ids.forEach((id, t) => checkTokenId(id, row, t, vocabSize, 'prompt'));
    return ids;
  });
}

/**
 * Make every row fit the model's positions before anything runs: a long prompt would otherwise run past the
 * trained positions into garbage (or, at 370k tokens, into a prefill that never ends). Refuses as llama.cpp does,
 * or cuts from the left when asked.
 */
function fitPositions(prompts: number[][], g: ResolvedGeneration, limit: number, truncation: 'left' | 'none'): { prompts: number[][]; truncated: number[] } {
  const { newTokens, what } = checkRoom(g, limit);
  const room = limit - newTokens;
  let longest = 0;
  prompts.forEach((p, b) => { if (p.length > prompts[longest].length) longest = b; });
  const truncated = prompts.map((p) => Math.max(0, p.length - room));
  if (truncated[longest] === 0) return { prompts, truncated };
  if (truncation === 'none') {
    const n = prompts[longest].length;
    throw withRow(new GenerationConfigError(`prompt ${longest} has ${n} tokens; with ${what} that is ${n + newTokens} positions, but the model takes at most ${limit}. ` +
      `Shorten the prompt, ask for fewer new tokens, or pass truncation: 'left' (lowbit generate --truncate) to keep the prompt's last ${room} tokens`), longest);
  }
  return { prompts: prompts.map((p, b) => (truncated[b] ? p.slice(truncated[b]) : p)), truncated };
}

/** The new tokens a request reserves (the larger of max and min), refused when they leave no position for a prompt. */
function checkRoom(g: ResolvedGeneration, limit: number): { newTokens: number; what: string } {
  const fromMin = g.minNewTokens > g.maxNewTokens;
  const newTokens = fromMin ? g.minNewTokens : g.maxNewTokens;
  const what = fromMin ? `minNewTokens ${g.minNewTokens}` : `maxNewTokens ${g.maxNewTokens}`;
  if (newTokens >= limit) {
    throw new GenerationConfigError(`${what} leaves no room for a prompt: the model takes at most ${limit} positions (prompt + new tokens); ask for at most ${limit - 1} new tokens`);
  }
  return { newTokens, what };
}

/** The settings one call runs with: the model config's eos/pad ← generation_config.json ← the call. */
function resolveFor(lm: CausalLM, modelDefaults: GenerationConfig, call: GenerationConfig, promptLen: number): ResolvedGeneration {
  return resolveGeneration([
    { eosTokenId: lm.config.eos_token_id, padTokenId: lm.config.pad_token_id },
    modelDefaults,
    call,
  ], promptLen);
}

export interface FitsOptions extends GenerationConfig {
  /** The prompt's length in tokens (default 1, the shortest there is: then only the settings themselves are checked). */
  promptTokens?: number;
  /** As GenerateOptions.truncation: with 'left' an over-long prompt is not refused (new tokens still must fit). */
  truncation?: 'left' | 'none';
}

/**
 * What generate() checks before it runs anything, without running anything: the settings of generation_config.json
 * (`generationConfig`, default the LoadedModel's) and of `call` (generation options, as generate takes them) resolved
 * against the model the way generate resolves them, and a prompt of `promptTokens` plus the new tokens within
 * `model.maxPositions`. Throws what generate would throw (GenerationConfigError); returns the resolved settings.
 * `lowbit info` runs it with the command line's default answer length, so a model it accepts, generate runs.
 */
export function checkGenerationFits(model: CausalLM | LoadedModel, generationConfig?: GenerationConfig, call: FitsOptions = {}): ResolvedGeneration {
  const lm = isLoadedModel(model) ? model.model : model;
  const { promptTokens = 1, truncation = 'none', ...rest } = call;
  if (!Number.isSafeInteger(promptTokens) || promptTokens < 1) throw new GenerationConfigError(`promptTokens must be an integer ≥ 1, got ${String(promptTokens)}`);
  const settings = normalizeGenerationConfig(rest, 'generate options', { strict: true });
  const g = resolveFor(lm, generationConfig ?? (isLoadedModel(model) ? model.generationConfig : {}), settings, promptTokens);
  fitPositions([new Array<number>(promptTokens).fill(0)], g, lm.maxPositions, truncation);
  return g;
}

/**
 * Generate for one or more prompts, yielding each new token as it is chosen. The generator's return value is
 * the full result, so `for await` streams and `generate()` collects. `model` is a CausalLM or what fromPretrained
 * returned (then its tokenizer and generation_config.json are the defaults).
 */
export async function* generateStream(model: CausalLM | LoadedModel, prompts: Prompt | Prompt[], opts: GenerateOptions = {}): AsyncGenerator<StreamEvent, GenerateResult> {
  const loaded = isLoadedModel(model) ? model : null;
  const lm = loaded ? loaded.model : (model as CausalLM);
  // snake_case keys are mapped and unknown keys refused: a misspelt option must not be silently ignored.
  const call = normalizeGenerationConfig(opts, 'generate options', { strict: true, allow: CALL_ONLY });
  const truncation = opts.truncation ?? 'none';
  if (truncation !== 'left' && truncation !== 'none') throw new GenerationConfigError(`generate options: "truncation" must be 'left' or 'none', got ${JSON.stringify(truncation)}`);
  if (opts.onProgress !== undefined && typeof opts.onProgress !== 'function') throw new GenerationConfigError('generate options: "onProgress" must be a function');
  const tokenizer = opts.tokenizer ?? loaded?.tokenizer ?? undefined;
  const modelDefaults = opts.modelDefaults ?? loaded?.generationConfig ?? {};
  const V = lm.config.vocab_size;
  const given = promptIds(prompts, tokenizer, V);
  const g = resolveFor(lm, modelDefaults, call, Math.max(...given.map((p) => p.length)));
  if (g.stopStrings.length && !tokenizer) throw new GenerationConfigError('stopStrings need a tokenizer');
  const { prompts: rows, truncated } = fitPositions(given, g, lm.maxPositions, truncation);

  const B = rows.length;
  const maxPrompt = Math.max(...rows.map((p) => p.length));
  const seeded = call.seed != null || modelDefaults.seed != null;
  const seed = seeded ? g.seed : freshSeed();
  const rng = new Rng(seed);
  // A pad id outside the vocabulary (some configs say −1) is never attended to; feed a valid id in its place.
  const feedPad = g.padTokenId >= 0 && g.padTokenId < V ? g.padTokenId : 0;
  const { ids, mask } = padLeft(rows, feedPad);
  // Sized for the whole request but allocated in chunks as positions arrive (src/nn/kvcache.ts).
  const cache = lm.createCache(B, maxPrompt + g.maxNewTokens);
  const decoder = lm.backend.decoder?.(lm, cache);  // the cuda backend's graph replays
  const history = ids.map((r) => r.slice());
  const tokens: number[][] = rows.map(() => []);
  const finish: (FinishReason | null)[] = rows.map(() => null);
  const decoders = tokenizer ? rows.map((p) => new IncrementalDecoder(tokenizer, { context: p })) : null;
  // Each check sees only the text a new occurrence can touch: no step scans the whole output.
  const stops = decoders && g.stopStrings.length ? rows.map(() => new StopStringMatcher(g.stopStrings)) : null;
  const texts = rows.map(() => '');   // filled from the decoders at the end
  const timings = { prefillMs: 0, decodeMs: 0, decodeSteps: 0 };

  if (g.maxNewTokens === 0) finish.fill('length');
  // The token choice runs on the device where the backend has it, so the logits stay there and only ids come down:
  // greedy steps that no logits processor changes take its argmax (greedyIds); other steps its processors and draw
  // (sampleIds), given what depends only on the history and the uniform draws from our Rng, in the host's order.
  // Without them (the host backends) the logits come to the host.
  const be = lm.backend;
  const plainGreedy = (generated: number) => !g.doSample && !!be.greedyIds && g.repetitionPenalty === 1 && g.noRepeatNgramSize <= 0 &&
    generated >= g.minNewTokens;
  const onDevice = (generated: number) => plainGreedy(generated) || !!be.sampleIds;
  const chooseOnDevice = (t: Tensor<'F32'>, generated: number): Int32Array => {
    if (plainGreedy(generated)) return be.greedyIds!(t);
    const u = new Float64Array(B), penalized: number[][] = [], banned: number[][] = [];
    for (let b = 0; b < B; b++) {
      const h = finish[b] ? { penalized: [], banned: [] } : historyInputs(history[b], tokens[b].length, g, V);
      penalized.push(h.penalized);
      banned.push(h.banned);
      if (!finish[b] && g.doSample) u[b] = rng.next();
    }
    return be.sampleIds!(t, { penalized, banned, u, repetitionPenalty: g.repetitionPenalty, doSample: g.doSample, temperature: g.temperature,
      topK: g.topK, topP: g.topP, minP: g.minP ?? 0 });
  };
  let t0 = performance.now();
  let logitsT: Tensor<'F32'> | null = g.maxNewTokens > 0 ? lm.forward(ids, { attentionMask: mask, cache, logits: 'last' }) : null;
  let logits = logitsT && !onDevice(0) ? be.download(logitsT).f32 : null;
  if (logitsT && !logits) be.synchronize();
  timings.prefillMs = performance.now() - t0;
  t0 = performance.now();
  const report = progressReporter('generate', 'steps', g.maxNewTokens, opts.onProgress);
  for (let step = 0; logitsT && step < g.maxNewTokens; step++) {
    const next = new Array<number>(B);
    const device = logits === null ? chooseOnDevice(logitsT, Math.min(...tokens.map((t, b) => (finish[b] ? Infinity : t.length)))) : null;
    for (let b = 0; b < B; b++) {
      if (finish[b]) { next[b] = feedPad; continue; }         // finished rows are fed padding, as in transformers
      if (device && device[b] >= 0) { next[b] = device[b]; continue; }
      // NaN/Inf would make argmax return token 0 and sampling the last token: stop instead, naming where (a row the
      // device found non-finite comes down to be named).
      logits ??= be.download(logitsT).f32;
      checkFiniteRow(logits, b, V, step === 0 ? 'prefill' : step);
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
      else if (stops && stops[b].check(text, decoders![b].pendingText)) finish[b] = 'stop';
      else if (tokens[b].length >= g.maxNewTokens) finish[b] = 'length';
      if (finish[b] && decoders) text += decoders[b].flush();     // the row is done: nothing is held back any more
      events.push(finish[b] ? { row: b, tokenId: id, text, finishReason: finish[b]! } : { row: b, tokenId: id, text });
    }
    const allDone = finish.every((f) => f);
    report(step + 1, undefined, allDone ? step + 1 : undefined);  // an early end is the last report
    for (const e of events) yield e;
    if (allDone) break;
    logitsT = decoder ? decoder.step(next) : lm.forward(next.map((id) => [id]), { attentionMask: next.map(() => [1]), cache, logits: 'last' });
    const generated = Math.min(...tokens.map((t, b) => (finish[b] ? Infinity : t.length)));
    logits = onDevice(generated) ? null : be.download(logitsT).f32;
    timings.decodeSteps++;
  }
  timings.decodeMs = performance.now() - t0;
  // The authoritative text is one full decode per row (the streamed deltas add up to it: test/stream.test.ts).
  if (decoders) decoders.forEach((d, b) => { texts[b] = d.text; });
  return {
    sequences: rows.map((p, b) => [...p, ...tokens[b]]),
    tokens,
    texts,
    finishReasons: finish.map((f) => f ?? 'length'),
    truncated,
    seed,
    timings,
  };
}

/** Run generation to the end and return the result (no streaming). Arguments as for generateStream. */
export async function generate(model: CausalLM | LoadedModel, prompts: Prompt | Prompt[], opts: GenerateOptions = {}): Promise<GenerateResult> {
  const it = generateStream(model, prompts, opts);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
  }
}
