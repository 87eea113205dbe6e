// AWQ's quantization config as the tools that write AWQ checkpoints spell it (../shared/spec/FORMATS.md §5.5):
// AutoAWQ's to_transformers_dict in config.json (quant_method "awq", zero_point, group_size, bits, version,
// modules_to_not_convert), its older quant_config.json (w_bit, q_group_size, version "GEMM"), and transformers'
// AwqConfig (backend, do_fuse, fuse_max_seq_len, modules_to_fuse, exllama_config). One reader for all of them, and
// AwqConfig, the API's request in camelCase. Errors name the file (or option) and key, as gptqconfig.ts does.
import { AWQ_BITS, type AwqLayout } from '../quant/awq-format.js';
import { nearest, show } from '../util/text.js';
import { warnOnce } from '../util/warn.js';
import { ConfigError, UnsupportedModelError } from './config.js';

/** transformers' AWQLinearVersion values whose tensors lowbit reads: exllama and ipex load GEMM's tensors. */
export type AwqVersion = 'gemm' | 'gemv' | 'exllama' | 'ipex';
export const AWQ_VERSIONS: readonly AwqVersion[] = ['gemm', 'gemv', 'exllama', 'ipex'];

/** An AWQ request or checkpoint, normalised: what the linear factory, the writer and the AWQ driver read. */
export interface AwqQuantizationSpec {
  method: 'awq';
  format: 'awq';
  bits: 4;
  /** -1 (one group per row) or the group size G. */
  groupSize: number;
  /** Zero-point (asymmetric) quantization, AutoAWQ's default; the tensors carry qzeros either way. */
  zeroPoint: boolean;
  /** The config's version, lowercase; exllama and ipex read GEMM's tensors. */
  version: AwqVersion;
  /** The tensors' layout the version implies. */
  layout: AwqLayout;
  /** Modules kept in float: a layer whose name contains one of these stays a float Linear (AutoAWQ, transformers, vLLM match substrings). */
  modulesToNotConvert: string[] | null;
  /** The same list, under the name the linear factory reads for every method. */
  skipModules: string[] | null;
  /** Calibration data (quantizing only): a text / JSONL file or the texts; null when not given. */
  dataset: string | string[] | null;
  /** Calibration samples (quantizing only; AutoAWQ's max_calib_samples, 128). */
  nsamples: number;
  /** Calibration sample length in tokens (quantizing only; AutoAWQ's max_calib_seq_len, 512). */
  seqlen: number;
  /** Seed of the calibration windows (quantizing only). */
  seed: number;
  /** AutoAWQ's kernels compute in float16 (the scales' dtype); lowbit's activations stay float32. */
  computeDtype: 'float16';
}

/** transformers' AwqConfig fields in camelCase (snake_case, as in config.json, is accepted too). */
export interface AwqConfigOptions {
  /** 4 (the only width AWQ checkpoints pack). */
  bits?: 4;
  /** -1 or the group size (default 128). */
  groupSize?: number;
  /** Default true. */
  zeroPoint?: boolean;
  /** "gemm" (default) or "gemv": the layout savePretrained writes. */
  version?: 'gemm' | 'gemv' | 'GEMM' | 'GEMV';
  /** Module names kept in float (substring match, as AutoAWQ and vLLM). */
  modulesToNotConvert?: string[] | null;
  /** Calibration texts or a text / JSONL file (lowbit addition). */
  dataset?: string | string[] | null;
  /** Calibration samples (default 128; lowbit addition, AutoAWQ's max_calib_samples). */
  nsamples?: number;
  /** Calibration sample length (default 512; lowbit addition, AutoAWQ's max_calib_seq_len). */
  seqlen?: number;
  /** Seed of the calibration windows (default 0; lowbit addition). */
  seed?: number;
  [snakeCase: string]: unknown;
}

/** camelCase → the snake_case key files use. */
const CAMEL: Record<string, string> = {
  quantMethod: 'quant_method', bits: 'bits', groupSize: 'group_size', zeroPoint: 'zero_point', version: 'version',
  modulesToNotConvert: 'modules_to_not_convert', backend: 'backend', doFuse: 'do_fuse', fuseMaxSeqLen: 'fuse_max_seq_len',
  modulesToFuse: 'modules_to_fuse', exllamaConfig: 'exllama_config', dataset: 'dataset', nsamples: 'nsamples',
  seqlen: 'seqlen', seed: 'seed',
};
const SNAKE = new Set(Object.values(CAMEL));
/** AutoAWQ's own names (quant_config.json, its quant_config dict). */
const SYNONYMS: Record<string, string> = { w_bit: 'bits', q_group_size: 'group_size', wBit: 'bits', qGroupSize: 'group_size' };
/** Versions of AutoAWQ / llm-awq whose tensors are another layout. */
const REPACKED: Record<string, string> = {
  marlin: 'AutoAWQ\'s Marlin-repacked tensors (WQLinear_Marlin)',
  gemv_fast: 'AutoAWQ\'s GEMVFast tensors (interleaved qweight, float16 zeros)',
};

export interface AwqParseOptions {
  /** Key path in messages ('' for a file whose top level is the config, quant_config.json). */
  where?: string;
  /** From a call: unknown keys are errors, as a typo would be. */
  strict?: boolean;
}

/**
 * Check and normalise an AWQ quantization config (quant_method "awq", or AutoAWQ's quant_config.json, whose keys
 * are w_bit / q_group_size and which may lack quant_method). Defaults: transformers' AwqConfig (bits 4, group 128,
 * zero_point true, version gemm, backend autoawq).
 */
export function parseAwqConfig(v: Record<string, unknown>, source: string, opts: AwqParseOptions = {}): AwqQuantizationSpec {
  const where = opts.where ?? 'quantization_config';
  const at = (k: string) => (where ? `${where}.${k}` : k);
  const o: Record<string, unknown> = {};
  const unknown: string[] = [];
  for (const [k, val] of Object.entries(v)) {
    const key = CAMEL[k] ?? SYNONYMS[k] ?? k;
    if (!SNAKE.has(key)) {
      if (opts.strict) {
        const near = nearest(k, Object.keys(CAMEL));
        throw new ConfigError(`${source}: "${at(k)}" is not an AwqConfig field${near ? ` (did you mean ${near}?)` : ''}`);
      }
      unknown.push(k);
      continue;
    }
    if (key in o) throw new ConfigError(`${source}: "${where || 'the config'}" gives ${key} twice (${k} and another spelling)`);
    o[key] = val;
  }
  const bad = (key: string, want: string, got: unknown = o[key]): never => { throw new ConfigError(`${source}: "${at(key)}" must be ${want}, got ${show(got)}`); };
  const unsupported = (key: string, what: string): never => { throw new UnsupportedModelError(`${source}: "${at(key)}" ${show(o[key])} is not supported: ${what}`); };
  const bool = (key: string, dflt: boolean): boolean => {
    const x = o[key];
    if (x === undefined || x === null) return dflt;
    if (typeof x !== 'boolean') bad(key, 'true or false');
    return x as boolean;
  };
  const int = (key: string, dflt: number, ok: (n: number) => boolean, want: string): number => {
    const x = o[key];
    if (x === undefined || x === null) return dflt;
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || !ok(x)) bad(key, want);
    return x as number;
  };

  if (o.quant_method !== undefined && (typeof o.quant_method !== 'string' || o.quant_method.toLowerCase() !== 'awq')) bad('quant_method', '"awq"');
  const bits = o.bits ?? AWQ_BITS;
  if (bits !== AWQ_BITS) {
    if (typeof bits === 'number' && [2, 3, 8].includes(bits)) {
      unsupported('bits', 'AWQ checkpoints pack 4-bit codes only (AutoAWQ\'s WQLinear and vLLM\'s AWQ loader take bits 4); quantize other widths with GPTQ\'s format');
    }
    bad('bits', '4');
  }
  const groupSize = int('group_size', 128, (n) => n === -1 || n >= 1, '-1 or a positive integer');
  const zeroPoint = bool('zero_point', true);
  const vraw = o.version ?? 'gemm';
  if (typeof vraw !== 'string') bad('version', '"gemm" or "gemv"', vraw);
  const version = (vraw as string).toLowerCase();
  if (REPACKED[version]) unsupported('version', `${REPACKED[version]} are a kernel's private layout; load or save the GEMM checkpoint`);
  if (!AWQ_VERSIONS.includes(version as AwqVersion)) bad('version', '"gemm" or "gemv" (or "exllama" / "ipex", which read GEMM\'s tensors)', vraw);
  if (opts.strict && version !== 'gemm' && version !== 'gemv') bad('version', '"gemm" or "gemv" (the layouts lowbit writes)', vraw);
  const backend = o.backend ?? null;
  if (backend !== null && typeof backend !== 'string') bad('backend', 'a string such as "autoawq", or null');
  if (typeof backend === 'string' && backend.toLowerCase() === 'llm-awq') {
    unsupported('backend', 'llm-awq\'s real-quant tensors (int16 qweight with a 4-row interleave, scaled_zeros) differ from AutoAWQ\'s; use an AutoAWQ checkpoint');
  }
  const skip = o.modules_to_not_convert ?? null;
  if (skip !== null && !(Array.isArray(skip) && skip.every((s) => typeof s === 'string' && s !== ''))) bad('modules_to_not_convert', 'a list of module names or null');
  bool('do_fuse', false);                                               // fused modules are a CUDA kernel choice
  const fuseLen = o.fuse_max_seq_len ?? null;
  if (fuseLen !== null && !(typeof fuseLen === 'number' && Number.isSafeInteger(fuseLen) && fuseLen > 0)) bad('fuse_max_seq_len', 'a positive integer or null');
  for (const k of ['modules_to_fuse', 'exllama_config']) {
    const x = o[k] ?? null;
    if (x !== null && (typeof x !== 'object' || Array.isArray(x))) bad(k, 'an object or null');
  }
  const dataset = o.dataset ?? null;
  if (dataset !== null && !(typeof dataset === 'string' && dataset !== '') && !(Array.isArray(dataset) && dataset.every((s) => typeof s === 'string'))) {
    bad('dataset', 'a text or JSONL file, a list of texts, or null', dataset);
  }
  const spec: AwqQuantizationSpec = {
    method: 'awq', format: 'awq', bits: 4, groupSize, zeroPoint, version: version as AwqVersion,
    layout: version === 'gemv' ? 'gemv' : 'gemm', modulesToNotConvert: skip as string[] | null, skipModules: skip as string[] | null,
    dataset: dataset as string | string[] | null, nsamples: int('nsamples', 128, (n) => n >= 1, 'a positive integer'),
    seqlen: int('seqlen', 512, (n) => n >= 1, 'a positive integer'), seed: int('seed', 0, (n) => n >= 0, 'an integer ≥ 0'),
    computeDtype: 'float16',
  };
  // Said only for a config that is otherwise accepted, so a refused one gives its error alone.
  for (const k of unknown) warnOnce(`${source}: "${at(k)}" is not an AWQ config field lowbit knows; ignored`);
  return spec;
}

/**
 * The quantization_config lowbit writes for an AWQ model: exactly AutoAWQ's to_transformers_dict() keys (FORMATS.md
 * §5.5), which transformers' AwqConfig and vLLM's AWQConfig / AWQMarlinConfig read (bits, group_size, zero_point
 * required by vLLM). config.json sorts them (transformers' sort_keys).
 */
export function awqConfigDict(spec: Pick<AwqQuantizationSpec, 'zeroPoint' | 'groupSize' | 'version' | 'modulesToNotConvert'>): Map<string, unknown> {
  return new Map<string, unknown>([
    ['quant_method', 'awq'],
    ['zero_point', spec.zeroPoint],
    ['group_size', spec.groupSize],
    ['bits', AWQ_BITS],
    ['version', spec.version],
    ['modules_to_not_convert', spec.modulesToNotConvert],
  ]);
}

/**
 * A camelCase AWQ request (transformers' AwqConfig; snake_case and AutoAWQ's w_bit / q_group_size accepted), checked
 * as it is built: unknown keys and bad values throw ConfigError.
 */
export class AwqConfig {
  readonly quantMethod = 'awq' as const;
  readonly bits: 4;
  readonly groupSize: number;
  readonly zeroPoint: boolean;
  readonly version: 'gemm' | 'gemv';
  readonly modulesToNotConvert: string[] | null;
  readonly dataset: string | string[] | null;
  readonly nsamples: number;
  readonly seqlen: number;
  readonly seed: number;

  constructor(opts: AwqConfigOptions = {}) {
    if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) throw new ConfigError(`AwqConfig: expected an options object, got ${show(opts)}`);
    const given = 'quantMethod' in opts || 'quant_method' in opts ? opts : { ...opts, quant_method: 'awq' };
    const s = parseAwqConfig(given, 'AwqConfig', { where: '', strict: true });
    this.bits = s.bits; this.groupSize = s.groupSize; this.zeroPoint = s.zeroPoint; this.version = s.layout;
    this.modulesToNotConvert = s.modulesToNotConvert; this.dataset = s.dataset; this.nsamples = s.nsamples;
    this.seqlen = s.seqlen; this.seed = s.seed;
  }

  /** The normalised spec (what fromPretrained and the AWQ driver take). */
  toSpec(): AwqQuantizationSpec {
    return parseAwqConfig({ ...this } as Record<string, unknown>, 'AwqConfig', { where: '', strict: true });
  }

  /** The quantization_config a model quantized with this request is saved with. */
  toDict(): Map<string, unknown> {
    return awqConfigDict(this.toSpec());
  }
}
