// quantization_config (config.json) and fromPretrained's quantizationConfig, read as transformers'
// BitsAndBytesConfig reads them (../shared/spec/FORMATS.md §2.5; defaults from transformers 5.17
// utils/quantization_config.py), or as GPTQ's writers spell theirs (quant_method "gptq": src/io/gptqconfig.ts,
// §4.6), or AWQ's (quant_method "awq": src/io/awqconfig.ts, §5.5). Errors name the file (or option) and key, like
// src/io/config.ts.
import { ConfigError, UnsupportedModelError } from './config.js';
import type { TorchFloatDtype } from '../quant/bnb4.js';
import { LLM_INT8_THRESHOLD } from '../quant/int8.js';
import { show } from '../util/text.js';
import { pyFloat } from '../util/pyjson.js';
import { warnOnce } from '../util/warn.js';
import { gptqConfigDict, parseGptqConfig, type GptqQuantizationSpec } from './gptqconfig.js';
import { awqConfigDict, parseAwqConfig, type AwqQuantizationSpec } from './awqconfig.js';

/** A bitsandbytes request, normalised. */
export interface BitsAndBytesSpec {
  method: 'bitsandbytes';
  format: 'nf4' | 'fp4' | 'int8';
  /** bnb_4bit_use_double_quant (4-bit only). */
  doubleQuant: boolean;
  /** bnb_4bit_compute_dtype (4-bit; null → float32, as transformers); int8 computes in float16. */
  computeDtype: TorchFloatDtype;
  /** llm_int8_threshold. */
  threshold: number;
  /** llm_int8_skip_modules: module names kept in float besides lm_head; null when not given. */
  skipModules: string[] | null;
  /**
   * 4-bit block size for quantize-on-load (fromPretrained's `blocksize`; bitsandbytes' 64 when absent).
   * BitsAndBytesConfig has no such key: a file's block size is in each layer's quant_state.
   */
  blocksize?: number;
}

/** A quantization request or a checkpoint's quantization, normalised: what the linear factory builds. */
export type QuantizationSpec = BitsAndBytesSpec | GptqQuantizationSpec | AwqQuantizationSpec;

/** transformers' BitsAndBytesConfig fields in camelCase; snake_case (as in config.json) is accepted too. */
export interface BitsAndBytesConfig {
  quantMethod?: 'bitsandbytes';
  loadIn4bit?: boolean;
  loadIn8bit?: boolean;
  bnb4bitQuantType?: 'nf4' | 'fp4';
  bnb4bitUseDoubleQuant?: boolean;
  bnb4bitComputeDtype?: 'float32' | 'float16' | 'bfloat16' | null;
  bnb4bitQuantStorage?: string;
  llmInt8Threshold?: number;
  llmInt8SkipModules?: string[] | null;
  llmInt8HasFp16Weight?: boolean;
  llmInt8EnableFp32CpuOffload?: boolean;
}

const CAMEL: Record<string, string> = {
  quantMethod: 'quant_method', loadIn4bit: 'load_in_4bit', loadIn8bit: 'load_in_8bit',
  bnb4bitQuantType: 'bnb_4bit_quant_type', bnb4bitUseDoubleQuant: 'bnb_4bit_use_double_quant',
  bnb4bitComputeDtype: 'bnb_4bit_compute_dtype', bnb4bitQuantStorage: 'bnb_4bit_quant_storage',
  llmInt8Threshold: 'llm_int8_threshold', llmInt8SkipModules: 'llm_int8_skip_modules',
  llmInt8HasFp16Weight: 'llm_int8_has_fp16_weight', llmInt8EnableFp32CpuOffload: 'llm_int8_enable_fp32_cpu_offload',
};
/** to_dict() also writes the private copies of the load flags. */
const SNAKE = new Set([...Object.values(CAMEL), '_load_in_4bit', '_load_in_8bit']);
const DTYPES = new Set(['float32', 'float16', 'bfloat16']);
/** bnb_4bit_quant_storage only reinterprets the packed bytes (src/quant/bnb4.ts reads bytes). */
const STORAGES = new Set(['uint8', 'int8', 'float16', 'bfloat16', 'float32']);

/**
 * Check and normalise a quantization config; null/undefined means none. `source` names where it came from
 * ("…/config.json" or "fromPretrained"), `where` the key path in errors. From a file, keys transformers may add
 * later are warned about once; from a call (`strict`), an unknown key is an error, as a typo would be.
 */
export function parseQuantizationConfig(v: unknown, source: string,
  opts: { where?: string; strict?: boolean; defaultMethod?: 'gptq' | 'awq' } = {}): QuantizationSpec | null {
  const where = opts.where ?? 'quantization_config';
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${source}: "${where || 'the config'}" must be an object or null, got ${show(v)}`);
  // GPTQ (a GPTQConfig, or quant_method "gptq"; AutoGPTQ's quantize_config.json may lack quant_method) has its reader.
  const rec = v as Record<string, unknown>, named = rec.quant_method ?? rec.quantMethod;
  if (named === 'gptq' || (named === undefined && opts.defaultMethod === 'gptq')) return parseGptqConfig(rec, source, opts);
  // AWQ (an AwqConfig, or quant_method "awq"; AutoAWQ's quant_config.json may lack it) likewise (src/io/awqconfig.ts).
  if ((typeof named === 'string' && named.toLowerCase() === 'awq') || (named === undefined && opts.defaultMethod === 'awq')) return parseAwqConfig(rec, source, opts);
  const o: Record<string, unknown> = {};
  const unknown: string[] = [];
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    const key = CAMEL[k] ?? k;
    if (!SNAKE.has(key)) {
      if (opts.strict) throw new ConfigError(`${source}: "${where}.${k}" is not a BitsAndBytesConfig field (known: ${Object.keys(CAMEL).join(', ')})`);
      unknown.push(k);
      continue;
    }
    if (key in o) throw new ConfigError(`${source}: "${where}" gives ${key} twice (camelCase and snake_case)`);
    o[key] = val;
  }
  const bad = (key: string, want: string): never => { throw new ConfigError(`${source}: "${where}.${key}" must be ${want}, got ${show(o[key])}`); };
  const bool = (key: string, dflt: boolean): boolean => {
    const x = o[key];
    if (x === undefined || x === null) return dflt;
    if (typeof x !== 'boolean') bad(key, 'true or false');
    return x as boolean;
  };
  const in4 = bool('load_in_4bit', bool('_load_in_4bit', false)), in8 = bool('load_in_8bit', bool('_load_in_8bit', false));
  for (const [pub, priv] of [['load_in_4bit', '_load_in_4bit'], ['load_in_8bit', '_load_in_8bit']]) {
    if (o[pub] != null && o[priv] != null && o[pub] !== o[priv]) bad(priv, `equal to "${pub}" (${String(o[pub])})`);
  }
  const method = o.quant_method ?? (in4 || in8 ? 'bitsandbytes' : undefined);
  if (method === undefined) throw new ConfigError(`${source}: "${where}" has no "quant_method" (and neither load_in_4bit nor load_in_8bit)`);
  if (method !== 'bitsandbytes') {
    throw new UnsupportedModelError(`${source}: "${where}.quant_method" ${show(method)} is not supported (supported: bitsandbytes, gptq, awq)`);
  }
  if (in4 && in8) throw new ConfigError(`${source}: "${where}" sets both load_in_4bit and load_in_8bit`);
  if (!in4 && !in8) throw new ConfigError(`${source}: "${where}" is bitsandbytes but sets neither load_in_4bit nor load_in_8bit`);
  const quantType = o.bnb_4bit_quant_type ?? 'fp4';                     // BitsAndBytesConfig's default
  if (quantType !== 'nf4' && quantType !== 'fp4') bad('bnb_4bit_quant_type', '"nf4" or "fp4"');
  let computeDtype: TorchFloatDtype = 'float32';
  const cd = o.bnb_4bit_compute_dtype;
  if (cd !== undefined && cd !== null) {
    const name = typeof cd === 'string' ? cd.replace(/^torch\./, '') : cd;
    if (typeof name !== 'string' || !DTYPES.has(name)) bad('bnb_4bit_compute_dtype', '"float32", "float16", "bfloat16" or null');
    computeDtype = name as TorchFloatDtype;
  }
  const storage = o.bnb_4bit_quant_storage;
  if (storage != null && (typeof storage !== 'string' || !STORAGES.has(storage.replace(/^torch\./, '')))) {
    bad('bnb_4bit_quant_storage', `one of ${[...STORAGES].join(', ')}`);
  }
  const threshold = o.llm_int8_threshold ?? LLM_INT8_THRESHOLD;
  if (typeof threshold !== 'number' || !Number.isFinite(threshold) || threshold < 0) bad('llm_int8_threshold', 'a number ≥ 0');
  const skip = o.llm_int8_skip_modules ?? null;
  if (skip !== null && !(Array.isArray(skip) && skip.every((s) => typeof s === 'string' && s !== ''))) {
    bad('llm_int8_skip_modules', 'a list of module names or null');
  }
  if (bool('llm_int8_has_fp16_weight', false)) {
    throw new UnsupportedModelError(`${source}: "${where}.llm_int8_has_fp16_weight" true is not supported (it keeps float16 weights for training)`);
  }
  bool('llm_int8_enable_fp32_cpu_offload', false);                     // every weight is on the CPU already
  // Said only for a config that is otherwise accepted, so a refused one gives its error alone.
  for (const k of unknown) warnOnce(`${source}: "${where}.${k}" is not a BitsAndBytesConfig field lowbit knows; ignored`);
  return {
    method: 'bitsandbytes', format: in8 ? 'int8' : (quantType as 'nf4' | 'fp4'),
    doubleQuant: in4 && bool('bnb_4bit_use_double_quant', false), computeDtype: in8 ? 'float16' : computeDtype,
    threshold: threshold as number, skipModules: skip as string[] | null,
  };
}

/**
 * The quantization_config transformers writes for an accepted BitsAndBytesConfig (`to_dict()`, FORMATS.md §2.5):
 * every field with its default filled in, snake_case, keys sorted as `to_json_string(sort_keys=True)` sorts them.
 * `llm_int8_threshold` is a float (BitsAndBytesConfig refuses an int), compute dtypes lose their `torch.` prefix.
 * Keys lowbit does not know (warned about at read) are not written back.
 */
export function bitsAndBytesConfigDict(v: unknown, source: string): Map<string, unknown> {
  const spec = parseQuantizationConfig(v, source);
  if (!spec) throw new ConfigError(`${source}: no quantization_config to write`);
  if (spec.method !== 'bitsandbytes') throw new ConfigError(`${source}: a ${spec.method} quantization_config is not a BitsAndBytesConfig`);
  const o: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) o[CAMEL[k] ?? k] = val;
  const torchName = (x: unknown, dflt: string) => (typeof x === 'string' ? x.replace(/^torch\./, '') : dflt);
  const in4 = spec.format !== 'int8';
  return new Map<string, unknown>([
    ['_load_in_4bit', in4],
    ['_load_in_8bit', !in4],
    ['bnb_4bit_compute_dtype', torchName(o.bnb_4bit_compute_dtype, 'float32')],
    ['bnb_4bit_quant_storage', torchName(o.bnb_4bit_quant_storage, 'uint8')],
    ['bnb_4bit_quant_type', o.bnb_4bit_quant_type ?? 'fp4'],
    ['bnb_4bit_use_double_quant', o.bnb_4bit_use_double_quant ?? false],
    ['llm_int8_enable_fp32_cpu_offload', o.llm_int8_enable_fp32_cpu_offload ?? false],
    ['llm_int8_has_fp16_weight', false],
    ['llm_int8_skip_modules', spec.skipModules],
    ['llm_int8_threshold', pyFloat(spec.threshold)],
    ['load_in_4bit', in4],
    ['load_in_8bit', !in4],
    ['quant_method', 'bitsandbytes'],
  ]);
}

/**
 * The quantization_config savePretrained writes: bitsandbytes' from the config as given (`v`, from `source`), GPTQ's
 * from the normalised spec (AutoGPTQ's key set, gptqConfigDict), AWQ's likewise (AutoAWQ's to_transformers_dict
 * keys, awqConfigDict), whatever tool wrote the checkpoint.
 */
export function quantizationConfigDict(spec: QuantizationSpec, v: unknown, source: string): Map<string, unknown> {
  if (spec.method === 'awq') return awqConfigDict(spec);
  return spec.method === 'gptq' ? gptqConfigDict(spec) : bitsAndBytesConfigDict(v, source);
}
