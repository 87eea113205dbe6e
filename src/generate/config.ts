// Generation settings: transformers' defaults, overridden by generation_config.json, overridden by call options.
// JSON files use snake_case keys; the TypeScript API uses camelCase. Both are accepted here.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

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

/** transformers.GenerationConfig defaults (FORMATS.md §7.1). */
export const GENERATION_DEFAULTS = {
  maxLength: 20, minLength: 0, doSample: false, temperature: 1.0, topK: 50, topP: 1.0,
  repetitionPenalty: 1.0, noRepeatNgramSize: 0,
} as const;

const SNAKE: Record<string, keyof GenerationConfig> = {
  max_new_tokens: 'maxNewTokens', max_length: 'maxLength', min_new_tokens: 'minNewTokens', min_length: 'minLength',
  do_sample: 'doSample', temperature: 'temperature', top_k: 'topK', top_p: 'topP', min_p: 'minP',
  repetition_penalty: 'repetitionPenalty', no_repeat_ngram_size: 'noRepeatNgramSize', eos_token_id: 'eosTokenId',
  pad_token_id: 'padTokenId', bos_token_id: 'bosTokenId', stop_strings: 'stopStrings', seed: 'seed',
};

const TOKEN_KEYS = new Set(['eosTokenId', 'padTokenId', 'bosTokenId']);

/** Accept camelCase or snake_case keys; unknown keys are ignored as transformers ignores them. */
export function normalizeGenerationConfig(raw: Record<string, unknown>): GenerationConfig {
  const out: Record<string, unknown> = {};
  const camel = new Set(Object.values(SNAKE) as string[]);
  for (const [k, v] of Object.entries(raw)) {
    const key = SNAKE[k] ?? (camel.has(k) ? k : null);
    // null in a JSON file means "unset", except for token ids, where it means "none" (eos null: never stop on eos).
    if (v === undefined || (v === null && !TOKEN_KEYS.has(key ?? ''))) continue;
    if (key) out[key] = v;
  }
  if (typeof out.stopStrings === 'string') out.stopStrings = [out.stopStrings];
  return out as GenerationConfig;
}

export function readGenerationConfig(dir: string): GenerationConfig {
  const path = join(dir, 'generation_config.json');
  if (!existsSync(path)) return {};
  try {
    return normalizeGenerationConfig(JSON.parse(readFileSync(path, 'utf8')));
  } catch (e) {
    throw new GenerationConfigError(`${path}: ${(e as Error).message}`);
  }
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

/** Merge defaults ← file ← call, check ranges, and settle max/min lengths for a prompt of `promptLen` tokens. */
export function resolveGeneration(layers: GenerationConfig[], promptLen: number): ResolvedGeneration {
  const c: GenerationConfig = Object.assign({}, GENERATION_DEFAULTS, ...layers.map((l) => dropUndefined(l)));
  const num = (name: keyof GenerationConfig, v: number | undefined, ok: (x: number) => boolean, want: string) => {
    if (v !== undefined && (typeof v !== 'number' || !ok(v))) throw new GenerationConfigError(`${name} must be ${want}, got ${v}`);
  };
  num('maxNewTokens', c.maxNewTokens, (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer');
  if (c.doSample) {
    // The warpers only run when sampling (transformers warns, not fails, about them otherwise).
    num('temperature', c.temperature, (x) => x > 0 && Number.isFinite(x), 'a positive number (use doSample: false for greedy)');
    num('topK', c.topK, (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer');
    num('topP', c.topP, (x) => x >= 0 && x <= 1, 'in [0, 1]');
    num('minP', c.minP, (x) => x >= 0 && x <= 1, 'in [0, 1]');
  }
  num('repetitionPenalty', c.repetitionPenalty, (x) => x > 0, 'a positive number');
  num('noRepeatNgramSize', c.noRepeatNgramSize, (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer');
  const eos = c.eosTokenId == null ? [] : Array.isArray(c.eosTokenId) ? c.eosTokenId : [c.eosTokenId];
  const maxLength = c.maxLength ?? 20;
  if (c.maxNewTokens === undefined && promptLen >= maxLength) {
    // transformers raises here too, rather than returning nothing.
    throw new GenerationConfigError(`the prompt has ${promptLen} tokens but maxLength is ${maxLength}: set maxNewTokens`);
  }
  const maxNew = c.maxNewTokens ?? maxLength - promptLen;
  // MinLength and MinNewTokens are separate processors in transformers: the stricter one wins.
  const minNew = Math.max(c.minNewTokens ?? 0, (c.minLength ?? 0) - promptLen);
  if (c.stopStrings?.some((s) => typeof s !== 'string' || s === '')) throw new GenerationConfigError('stopStrings must be non-empty strings');
  return {
    maxNewTokens: maxNew,
    minNewTokens: minNew,
    doSample: !!c.doSample,
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
    seed: c.seed ?? (Date.now() >>> 0),
  };
}

function dropUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
