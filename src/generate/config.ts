// Generation settings: transformers' defaults, overridden by generation_config.json, overridden by call options.
// JSON files use snake_case keys; the TypeScript API uses camelCase. Every value is checked (type and range) where
// it enters, and errors name the file or the options object and the key.
//
// The sampling rule, one for the CLI and the library (resolveGeneration; the call options are the last layer):
//   1. An explicit `doSample` in the call options always wins (`doSample: true` with temperature 0 is an error, as
//      in transformers: there is nothing to sample from).
//   2. Otherwise a temperature of 0 (whichever layer set it last) means greedy. This includes a file that says
//      `do_sample: true, temperature: 0`, which transformers refuses.
//   3. Otherwise, when the call options set `temperature`, `topP`, `topK` or `minP`, they sample: asking for a
//      sampling knob is asking to sample (`--temperature 1.5` in the CLI, `temperature: 1.5` in the library).
//   4. Otherwise generation_config.json decides through `do_sample`, as in transformers; the default is greedy.
// A sampling knob that ends up with no effect (greedy decoding, and the layer that set it did not itself ask to
// sample) is warned about once, as transformers' GenerationConfig.validate does.
import { join } from 'node:path';
import { probePath, readTextFile } from '../util/fs.js';
import { nearest, show } from '../util/text.js';
import { warnOnce } from '../util/warn.js';

export interface GenerationConfig {
  maxNewTokens?: number;
  /** Prompt + new tokens (transformers' max_length, default 20) when maxNewTokens is not given. */
  maxLength?: number;
  minNewTokens?: number;
  minLength?: number;
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  noRepeatNgramSize?: number;
  /** One id or a list (the seeds' `terminators`). */
  eosTokenId?: number | number[] | null;
  padTokenId?: number | null;
  bosTokenId?: number | null;
  stopStrings?: string[];
  /** Seeds the sampler; the same seed gives the same tokens. */
  seed?: number;
}

export class GenerationConfigError extends Error { override name = 'GenerationConfigError'; }

/** transformers.GenerationConfig defaults (../shared/spec/FORMATS.md §7.1). */
export const GENERATION_DEFAULTS = {
  maxLength: 20, minLength: 0, doSample: false, temperature: 1.0, topK: 50, topP: 1.0,
  repetitionPenalty: 1.0, noRepeatNgramSize: 0,
} as const;

type Key = keyof GenerationConfig;

const SNAKE: Record<string, Key> = {
  max_new_tokens: 'maxNewTokens', max_length: 'maxLength', min_new_tokens: 'minNewTokens', min_length: 'minLength',
  do_sample: 'doSample', temperature: 'temperature', top_k: 'topK', top_p: 'topP', min_p: 'minP',
  repetition_penalty: 'repetitionPenalty', no_repeat_ngram_size: 'noRepeatNgramSize', eos_token_id: 'eosTokenId',
  pad_token_id: 'padTokenId', bos_token_id: 'bosTokenId', stop_strings: 'stopStrings', seed: 'seed',
};
const CAMEL = new Set<string>(Object.values(SNAKE));

const isCount = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isId = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v);
const isFinite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** What each key must hold. Ranges that hold in any mode are checked here; "temperature > 0 when sampling" later. */
const CHECKS: Record<Key, { ok: (v: unknown) => boolean; want: string }> = {
  maxNewTokens: { ok: isCount, want: 'a non-negative integer' },
  maxLength: { ok: isCount, want: 'a non-negative integer' },
  minNewTokens: { ok: isCount, want: 'a non-negative integer' },
  minLength: { ok: isCount, want: 'a non-negative integer' },
  doSample: { ok: (v) => typeof v === 'boolean', want: 'true or false' },
  temperature: { ok: (v) => isFinite(v) && v >= 0, want: 'a number ≥ 0 (0 means greedy)' },
  topK: { ok: isCount, want: 'a non-negative integer (0 turns top-k off)' },
  topP: { ok: (v) => isFinite(v) && v >= 0 && v <= 1, want: 'a number in [0, 1]' },
  minP: { ok: (v) => isFinite(v) && v >= 0 && v <= 1, want: 'a number in [0, 1]' },
  repetitionPenalty: { ok: (v) => isFinite(v) && v > 0, want: 'a number > 0 (1 turns it off)' },
  noRepeatNgramSize: { ok: isCount, want: 'a non-negative integer' },
  eosTokenId: { ok: (v) => v === null || isId(v) || (Array.isArray(v) && v.every(isId)), want: 'a token id, a list of token ids, or null' },
  padTokenId: { ok: (v) => v === null || isId(v), want: 'a token id or null' },
  bosTokenId: { ok: (v) => v === null || isId(v), want: 'a token id or null' },
  stopStrings: { ok: (v) => Array.isArray(v) && v.every((s) => typeof s === 'string' && s !== ''), want: 'a non-empty string or a list of them' },
  seed: { ok: isId, want: 'an integer' },
};

/** null means "unset" in transformers' files, except for token ids, where it means "none" (eos null: never stop on eos). */
const TOKEN_KEYS = new Set<string>(['eosTokenId', 'padTokenId', 'bosTokenId']);

/**
 * transformers settings that change what generate does but that lowbit does not implement, with their no-op value.
 * A file that sets one gets a warning (the model's authors expected it to act); call options that set one are refused.
 */
const UNSUPPORTED: Record<string, unknown> = {
  num_beams: 1, num_beam_groups: 1, num_return_sequences: 1, typical_p: 1, epsilon_cutoff: 0, eta_cutoff: 0,
  penalty_alpha: null, diversity_penalty: 0, encoder_repetition_penalty: 1, bad_words_ids: null, sequence_bias: null,
  suppress_tokens: null, begin_suppress_tokens: null, forced_bos_token_id: null, forced_eos_token_id: null,
  exponential_decay_length_penalty: null, renormalize_logits: false, max_time: null,
};

export interface NormalizeOptions {
  /**
   * Call options: unknown keys are errors (naming the nearest known key) instead of being ignored as in
   * generation_config.json, where transformers writes bookkeeping such as `transformers_version`.
   */
  strict?: boolean;
  /** Keys the caller's object legitimately carries besides generation settings (`tokenizer`, …): accepted, not copied. */
  allow?: readonly string[];
}

/**
 * Each object normalizeGenerationConfig returned: the file or options object it came from (for messages in
 * resolveGeneration) and its values as returned, so that resolveGeneration can skip checking it again unless it was
 * changed since.
 */
const NORMALIZED = new WeakMap<object, { source: string; values: Map<string, unknown> }>();

/** Whether `l` holds exactly the values normalizeGenerationConfig gave it (arrays compared by their elements). */
function unchangedSinceNormalized(l: object): boolean {
  const rec = NORMALIZED.get(l);
  if (!rec) return false;
  const entries = Object.entries(l);
  if (entries.length !== rec.values.size) return false;
  return entries.every(([k, v]) => {
    const was = rec.values.get(k);
    if (!Array.isArray(v) || !Array.isArray(was)) return Object.is(v, was);
    return v.length === was.length && v.every((x, i) => Object.is(x, was[i]));
  });
}

/**
 * Accept camelCase or snake_case keys, check every value, and return camelCase settings. `source` (a file path, or
 * a label such as 'generate options') starts every message. Unknown keys are ignored unless `strict`.
 */
export function normalizeGenerationConfig(raw: unknown, source = 'generation config', opts: NormalizeOptions = {}): GenerationConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new GenerationConfigError(`${source}: must be an object of generation settings, got ${show(raw)}`);
  }
  const out: Record<string, unknown> = {};
  const spelledAs: Record<string, string> = {};
  const allow = new Set(opts.allow ?? []);
  for (const [k, v0] of Object.entries(raw)) {
    // Own keys only: a key named "constructor" must not find Object.prototype's.
    const key = Object.hasOwn(SNAKE, k) ? SNAKE[k] : CAMEL.has(k) ? (k as Key) : null;
    if (key === null) {
      if (allow.has(k)) continue;
      const snakeOf = k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      const unsupported = Object.hasOwn(UNSUPPORTED, k) ? k : Object.hasOwn(UNSUPPORTED, snakeOf) ? snakeOf : null;
      if (opts.strict) {
        if (unsupported) throw new GenerationConfigError(`${source}: "${k}" is not supported by lowbit`);
        const near = nearest(k, [...CAMEL, ...allow]);
        throw new GenerationConfigError(`${source}: unknown option ${show(k)}${near ? ` (did you mean "${near}"?)` : ''}`);
      }
      if (unsupported && v0 != null && show(v0) !== show(UNSUPPORTED[unsupported])) {
        warnOnce(`${source}: "${k}" is set to ${show(v0)}, which lowbit does not support: it has no effect`);
      }
      continue;
    }
    if (v0 === undefined || (v0 === null && !TOKEN_KEYS.has(key))) continue;
    const v = key === 'stopStrings' && typeof v0 === 'string' ? [v0] : v0;
    if (!CHECKS[key].ok(v)) throw new GenerationConfigError(`${source}: "${k}" must be ${CHECKS[key].want}, got ${show(v0)}`);
    if (key in out && JSON.stringify(out[key]) !== JSON.stringify(v)) {
      throw new GenerationConfigError(`${source}: "${spelledAs[key]}" and "${k}" name the same setting with different values`);
    }
    out[key] = Array.isArray(v) ? v.slice() : v;
    spelledAs[key] = k;
  }
  NORMALIZED.set(out, { source, values: new Map(Object.entries(out).map(([k, v]) => [k, Array.isArray(v) ? v.slice() : v])) });
  return out as GenerationConfig;
}

/** The model folder's generation_config.json, checked; {} when there is none. */
export function readGenerationConfig(dir: string): GenerationConfig {
  const path = join(dir, 'generation_config.json');
  if (probePath(path).kind === 'missing') return {};
  // Refuses a FIFO (reading one would block forever), a folder, a dangling link or a loop, naming the problem.
  const text = readTextFile(path, (m) => new GenerationConfigError(m));
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new GenerationConfigError(`${path}: not valid JSON: ${(e as Error).message}`);
  }
  return normalizeGenerationConfig(json, path);
}

export interface ResolvedGeneration {
  maxNewTokens: number;
  minNewTokens: number;
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  minP: number | null;
  repetitionPenalty: number;
  noRepeatNgramSize: number;
  eos: number[];
  padTokenId: number;
  stopStrings: string[];
  seed: number;
}

const SAMPLING_KNOBS = ['temperature', 'topP', 'topK', 'minP'] as const;

/** A seed for a call that gave none: two unseeded calls must differ even within one millisecond. */
export function freshSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

/**
 * Merge defaults ← layers (earliest first: model config, generation_config.json, …; the last layer is the call's
 * options), check them, decide greedy or sampling by the rule at the top of this file, and settle max/min lengths
 * for a prompt of `promptLen` tokens. Layers may use either key spelling; keys that are not generation settings
 * (`tokenizer`, …) are ignored here (generate's options are checked strictly by normalizeGenerationConfig).
 */
export function resolveGeneration(layers: GenerationConfig[], promptLen: number): ResolvedGeneration {
  const n = layers.length;
  const label = (i: number) => NORMALIZED.get(layers[i])?.source ?? (i === n - 1 ? 'generate options' : `generation settings (layer ${i + 1} of ${n})`);
  // Layers that normalizeGenerationConfig returned (a file read by readGenerationConfig, generate's checked options)
  // are used as they are, unless changed since.
  const norm = layers.map((l, i) => (unchangedSinceNormalized(l) ? l : normalizeGenerationConfig(l, label(i))));
  if (!Number.isSafeInteger(promptLen) || promptLen < 0) throw new GenerationConfigError(`prompt length must be a non-negative integer, got ${promptLen}`);
  const c: GenerationConfig = Object.assign({}, GENERATION_DEFAULTS, ...norm);
  const call: GenerationConfig = norm[n - 1] ?? {};
  const callLabel = n ? label(n - 1) : 'generate options';

  let doSample: boolean;
  if (call.doSample !== undefined) {
    doSample = call.doSample;
    if (doSample && c.temperature === 0) {
      // transformers raises here too: a zero temperature divides the logits by zero.
      throw new GenerationConfigError(`${callLabel}: doSample is true but temperature is 0: use doSample: false (or temperature 0 alone) for greedy`);
    }
  } else if (c.temperature === 0) {
    doSample = false;
  } else if (SAMPLING_KNOBS.some((k) => call[k] !== undefined)) {
    doSample = true;
  } else {
    doSample = norm.slice(0, -1).reduce<boolean>((d, l) => l.doSample ?? d, false);
  }
  if (!doSample) {
    norm.forEach((l, i) => {
      if (l.doSample === true) return;          // that layer asked to sample; a later one chose greedy
      for (const k of SAMPLING_KNOBS) {
        const v = l[k];
        if (v === undefined || v === GENERATION_DEFAULTS[k as keyof typeof GENERATION_DEFAULTS] || (k === 'temperature' && v === 0)) continue;
        warnOnce(`${label(i)}: \`${k}\` is set to ${v} but doSample is false: it has no effect`);
      }
    });
  }

  const eos = c.eosTokenId == null ? [] : Array.isArray(c.eosTokenId) ? c.eosTokenId : [c.eosTokenId];
  const maxLength = c.maxLength ?? GENERATION_DEFAULTS.maxLength;
  if (c.maxNewTokens === undefined && promptLen >= maxLength) {
    // transformers raises here too, rather than returning nothing.
    throw new GenerationConfigError(`the prompt has ${promptLen} tokens but maxLength is ${maxLength}: set maxNewTokens`);
  }
  const maxNew = c.maxNewTokens ?? maxLength - promptLen;
  // MinLength and MinNewTokens are separate processors in transformers: the stricter one wins.
  const minNew = Math.max(c.minNewTokens ?? 0, (c.minLength ?? 0) - promptLen);
  return {
    maxNewTokens: maxNew,
    minNewTokens: minNew,
    doSample,
    temperature: c.temperature ?? 1,
    topK: c.topK ?? 50,
    topP: c.topP ?? 1,
    minP: c.minP ?? null,
    repetitionPenalty: c.repetitionPenalty ?? 1,
    noRepeatNgramSize: c.noRepeatNgramSize ?? 0,
    eos,
    // transformers: no pad id → the first eos id.
    padTokenId: c.padTokenId ?? eos[0] ?? 0,
    stopStrings: c.stopStrings ?? [],
    seed: c.seed ?? freshSeed(),
  };
}
