// GPTQ's quantization config as the tools that write GPTQ checkpoints spell it (../shared/spec/FORMATS.md §4.6):
// AutoGPTQ's quantize_config.json (BaseQuantizeConfig), optimum / transformers' GPTQConfig, GPTQModel's
// QuantizeConfig (format / checkpoint_format, meta, pack_dtype, dynamic), and the synonyms w_bit / q_group_size.
// One reader for all of them, and GPTQConfig, the API's request in camelCase. Errors name the file (or option) and
// key, as src/io/quantconfig.ts does for bitsandbytes.
import { GPTQ_CHECKPOINT_FORMATS, type GptqCheckpointFormat } from '../quant/gptq-format.js';
import { GPTQ_BITS, type GptqBits } from '../quant/gptq-types.js';
import { pyFloat } from '../util/pyjson.js';
import { nearest, show } from '../util/text.js';
import { warnOnce } from '../util/warn.js';
import { ConfigError, UnsupportedModelError } from './config.js';

/** A GPTQ request or checkpoint, normalised: what the linear factory and the GPTQ driver read. */
export interface GptqQuantizationSpec {
  method: 'gptq';
  format: 'gptq';
  bits: GptqBits;
  /** -1 (one group per row) or the group size. */
  groupSize: number;
  sym: boolean;
  /** act-order: columns quantized by decreasing Hessian diagonal; g_idx then maps columns to groups. */
  descAct: boolean;
  staticGroups: boolean;
  trueSequential: boolean;
  /** Dampening, a fraction of the mean Hessian diagonal. */
  dampPercent: number;
  /** The qzeros convention: "gptq" (v1, zero − 1) or "gptq_v2" (GPTQModel, the true zero). */
  checkpointFormat: GptqCheckpointFormat;
  /** Calibration data (quantizing only): a dataset name or text/JSONL file, or the texts; null when not given. */
  dataset: string | string[] | null;
  /** Calibration windows (quantizing only). */
  nsamples: number;
  /** Calibration window length in tokens (quantizing only); null: the model's limit, at most 2048. */
  modelSeqlen: number | null;
  /** Seed of the calibration windows' random offsets (quantizing only). */
  seed: number;
  /** Which modules of each block are quantized, in sequential groups (GPTQConfig's modules_in_block_to_quantize). */
  modulesInBlockToQuantize: string[][] | null;
  /** GPTQ layers hold no skip list; layers outside the blocks and lm_head stay float (see linearFactory). */
  skipModules: null;
  /** AutoGPTQ's kernels compute in float16 (the scales' dtype); lowbit's activations stay float32. */
  computeDtype: 'float16';
}

/** transformers' GPTQConfig fields in camelCase (snake_case, as in config.json, is accepted too). */
export interface GPTQConfigOptions {
  /** 2, 3, 4 or 8. */
  bits: GptqBits;
  /** -1 or the group size (default 128, as transformers' GPTQConfig). */
  groupSize?: number;
  /** Default 0.01 (AutoGPTQ and the GPTQ paper; transformers' GPTQConfig says 0.1). */
  dampPercent?: number;
  /** Default false (transformers' GPTQConfig; AutoGPTQ's BaseQuantizeConfig says true). */
  descAct?: boolean;
  staticGroups?: boolean;
  /** Default true: symmetric, zero = 2^(bits−1). */
  sym?: boolean;
  trueSequential?: boolean;
  /** Default "gptq" (v1, what AutoGPTQ / optimum / transformers write); "gptq_v2" keeps asymmetric zeros of 0 intact. */
  checkpointFormat?: GptqCheckpointFormat;
  /** Calibration texts, a text / JSONL file, or a dataset name. */
  dataset?: string | string[] | null;
  /** Calibration windows (default 128; a lowbit addition, as in AutoGPTQ's examples). */
  nsamples?: number;
  /** Calibration window length (default: the model's limit, at most 2048). */
  modelSeqlen?: number | null;
  /** Seed of the calibration windows (default 0; lowbit addition). */
  seed?: number;
  modulesInBlockToQuantize?: string[][] | null;
  [snakeCase: string]: unknown;
}

/** camelCase → the snake_case key files use. */
const CAMEL: Record<string, string> = {
  quantMethod: 'quant_method', bits: 'bits', groupSize: 'group_size', dampPercent: 'damp_percent', descAct: 'desc_act',
  staticGroups: 'static_groups', sym: 'sym', trueSequential: 'true_sequential', checkpointFormat: 'checkpoint_format',
  format: 'format', dataset: 'dataset', nsamples: 'nsamples', modelSeqlen: 'model_seqlen', seed: 'seed',
  modulesInBlockToQuantize: 'modules_in_block_to_quantize', actGroupAware: 'act_group_aware', tokenizer: 'tokenizer',
  blockNameToQuantize: 'block_name_to_quantize', moduleNamePrecedingFirstBlock: 'module_name_preceding_first_block',
  batchSize: 'batch_size', padTokenId: 'pad_token_id', maxInputLength: 'max_input_length', cacheBlockOutputs: 'cache_block_outputs',
  useCudaFp16: 'use_cuda_fp16', useExllama: 'use_exllama', disableExllama: 'disable_exllama', exllamaConfig: 'exllama_config',
  backend: 'backend', meta: 'meta', dynamic: 'dynamic', packDtype: 'pack_dtype', lmHead: 'lm_head', method: 'method',
  isMarlinFormat: 'is_marlin_format', modelNameOrPath: 'model_name_or_path', modelFileBaseName: 'model_file_base_name',
};
const SNAKE = new Set(Object.values(CAMEL));
/** Other writers' names for the same keys (FORMATS.md §4.6). */
const SYNONYMS: Record<string, string> = { w_bit: 'bits', q_group_size: 'group_size' };
/** GPTQModel keys about how it calibrated (its meta holds more): read past without a warning. */
const QUIET = new Set(['mse', 'damp_auto_increment', 'hyb_act', 'v2', 'v2_alpha', 'v2_memory_device', 'adapter', 'rotation',
  'is_sym', 'offload_to_disk', 'offload_to_disk_path', 'pack_impl', 'mock_quantization', 'fail_safe', 'gptaq']);
/** GPTQModel format names of kernel-repacked layouts: the same weights, not AutoGPTQ's tensors. */
const REPACKED = new Set(['marlin', 'bitblas', 'ipex', 'qqq']);

export interface GptqParseOptions {
  /** Key path in messages ('' for a file whose top level is the config, quantize_config.json). */
  where?: string;
  /** From a call: unknown keys are errors, as a typo would be; GPTQ options lowbit does not implement are refused. */
  strict?: boolean;
}

/**
 * Check and normalise a GPTQ quantization config (quant_method "gptq", or AutoGPTQ's quantize_config.json, whose
 * old versions have no quant_method). Defaults: transformers' GPTQConfig (group_size 128, desc_act false, sym,
 * true_sequential) with AutoGPTQ's damp_percent 0.01. GPTQModel keeps damp_percent, static_groups and
 * true_sequential in `meta`; they are read from there when the top level lacks them.
 */
export function parseGptqConfig(v: Record<string, unknown>, source: string, opts: GptqParseOptions = {}): GptqQuantizationSpec {
  const where = opts.where ?? 'quantization_config';
  const at = (k: string) => (where ? `${where}.${k}` : k);
  const o: Record<string, unknown> = {};
  const unknown: string[] = [];
  for (const [k, val] of Object.entries(v)) {
    const key = CAMEL[k] ?? SYNONYMS[k] ?? k;
    if (!SNAKE.has(key)) {
      if (opts.strict) {
        const near = nearest(k, Object.keys(CAMEL));
        throw new ConfigError(`${source}: "${at(k)}" is not a GPTQConfig field${near ? ` (did you mean ${near}?)` : ''}`);
      }
      if (!QUIET.has(k)) unknown.push(k);
      continue;
    }
    if (key in o) throw new ConfigError(`${source}: "${where || 'the config'}" gives ${key} twice (${k} and another spelling)`);
    o[key] = val;
  }
  const bad = (key: string, want: string, got: unknown = o[key]): never => { throw new ConfigError(`${source}: "${at(key)}" must be ${want}, got ${show(got)}`); };
  const unsupported = (key: string, what: string): never => { throw new UnsupportedModelError(`${source}: "${at(key)}" ${show(o[key])} is not supported: ${what}`); };
  const meta = o.meta ?? null;
  if (meta !== null && (typeof meta !== 'object' || Array.isArray(meta))) bad('meta', 'an object or null');
  const fromMeta = (key: string) => (o[key] !== undefined && o[key] !== null ? o[key] : (meta as Record<string, unknown> | null)?.[key]);
  const bool = (key: string, dflt: boolean, x: unknown = o[key]): boolean => {
    if (x === undefined || x === null) return dflt;
    if (typeof x !== 'boolean') bad(key, 'true or false', x);
    return x as boolean;
  };
  const int = (key: string, dflt: number | null, ok: (n: number) => boolean, want: string): number | null => {
    const x = o[key];
    if (x === undefined || x === null) return dflt;
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || !ok(x)) bad(key, want);
    return x as number;
  };

  if (o.quant_method !== undefined && o.quant_method !== 'gptq') bad('quant_method', '"gptq"');
  if (o.method !== undefined && o.method !== null && o.method !== 'gptq') unsupported('method', 'lowbit reads GPTQ checkpoints (method "gptq")');
  if (o.bits === undefined || o.bits === null) throw new ConfigError(`${source}: "${where || 'the config'}" has no "bits" (2, 3, 4 or 8)`);
  const bits = o.bits;
  if (!GPTQ_BITS.includes(bits as GptqBits)) bad('bits', `one of ${GPTQ_BITS.join(', ')}`);
  const groupSize = int('group_size', 128, (n) => n === -1 || n >= 1, '-1 or a positive integer')!;
  const damp = fromMeta('damp_percent') ?? 0.01;
  if (typeof damp !== 'number' || !(damp > 0 && damp < 1)) bad('damp_percent', 'a number between 0 and 1 (exclusive)', damp);

  // The zero-point convention: checkpoint_format (AutoGPTQ, transformers) or format (GPTQModel, newest optimum).
  const cf = o.checkpoint_format ?? null, f = o.format ?? null;
  if (cf !== null && f !== null && cf !== f) {
    throw new ConfigError(`${source}: "${at('checkpoint_format')}" ${show(cf)} and "${at('format')}" ${show(f)} disagree`);
  }
  const fmtKey = cf !== null ? 'checkpoint_format' : 'format', fmt = cf ?? f ?? 'gptq';
  if (typeof fmt === 'string' && REPACKED.has(fmt)) {
    unsupported(fmtKey, `a ${fmt}-repacked layout is a kernel's private layout; load or save the plain GPTQ checkpoint (format "gptq" or "gptq_v2")`);
  }
  if (!GPTQ_CHECKPOINT_FORMATS.includes(fmt as GptqCheckpointFormat)) bad(fmtKey, '"gptq" or "gptq_v2"', fmt);
  if (bool('is_marlin_format', false)) {
    unsupported('is_marlin_format', 'AutoGPTQ\'s Marlin-repacked tensors differ from qweight/qzeros; use the checkpoint saved with is_marlin_format false');
  }
  const dynamic = o.dynamic ?? null;
  if (dynamic !== null) {
    if (typeof dynamic !== 'object' || Array.isArray(dynamic)) bad('dynamic', 'an object of per-module overrides or null');
    const rules = Object.keys(dynamic as object);
    if (rules.length) unsupported('dynamic', `per-module overrides (${rules.slice(0, 3).map((r) => JSON.stringify(r)).join(', ')}${rules.length > 3 ? ', …' : ''}) change bits or group size by layer; lowbit reads one setting for every layer`);
  }
  const pack = o.pack_dtype ?? null;
  if (pack !== null && pack !== 'int32' && pack !== 'torch.int32') unsupported('pack_dtype', 'qweight and qzeros are read as int32 words (pack_dtype "int32")');
  if (bool('lm_head', false)) unsupported('lm_head', 'a quantized lm_head; lowbit keeps lm_head in float');

  const dataset = o.dataset ?? null;
  if (dataset !== null && !(typeof dataset === 'string' && dataset !== '') && !(Array.isArray(dataset) && dataset.every((s) => typeof s === 'string'))) {
    bad('dataset', 'a dataset name or file, a list of texts, or null', dataset);
  }
  const mods = o.modules_in_block_to_quantize ?? null;
  if (mods !== null && !(Array.isArray(mods) && mods.every((g) => Array.isArray(g) && g.every((s) => typeof s === 'string' && s !== '')))) {
    bad('modules_in_block_to_quantize', 'a list of lists of module names, or null');
  }
  const actGroupAware = bool('act_group_aware', false);
  // Options that only steer how the Python tools calibrate or which kernel they pick; from a call, the one that
  // changes the algorithm lowbit runs is refused rather than ignored.
  if (opts.strict && actGroupAware) unsupported('act_group_aware', 'group-aware act-order (GAR) is not implemented; use descAct');
  const spec: GptqQuantizationSpec = {
    method: 'gptq', format: 'gptq', bits: bits as GptqBits, groupSize,
    sym: bool('sym', true), descAct: bool('desc_act', false),
    staticGroups: bool('static_groups', false, fromMeta('static_groups')), trueSequential: bool('true_sequential', true, fromMeta('true_sequential')),
    dampPercent: damp as number, checkpointFormat: fmt as GptqCheckpointFormat,
    dataset: dataset as string | string[] | null, nsamples: int('nsamples', 128, (n) => n >= 1, 'a positive integer')!,
    modelSeqlen: int('model_seqlen', null, (n) => n >= 1, 'a positive integer or null'), seed: int('seed', 0, (n) => n >= 0, 'an integer ≥ 0')!,
    modulesInBlockToQuantize: mods as string[][] | null, skipModules: null, computeDtype: 'float16',
  };
  // Said only for a config that is otherwise accepted, so a refused one gives its error alone.
  for (const k of unknown) warnOnce(`${source}: "${at(k)}" is not a GPTQ config field lowbit knows; ignored`);
  return spec;
}

/**
 * The quantization_config lowbit writes for a GPTQ model: AutoGPTQ's BaseQuantizeConfig.to_dict() in its insertion
 * order, which carries checkpoint_format (FORMATS.md §4.6), the set every GPTQ reader accepts. config.json sorts it
 * (transformers' sort_keys); quantize_config.json keeps this order (`gptqQuantizeConfigText`).
 */
export function gptqConfigDict(spec: GptqQuantizationSpec): Map<string, unknown> {
  return new Map<string, unknown>([
    ['bits', spec.bits],
    ['group_size', spec.groupSize],
    ['damp_percent', pyFloat(spec.dampPercent)],
    ['desc_act', spec.descAct],
    ['static_groups', spec.staticGroups],
    ['sym', spec.sym],
    ['true_sequential', spec.trueSequential],
    ['model_name_or_path', null],
    ['model_file_base_name', null],
    ['quant_method', 'gptq'],
    ['checkpoint_format', spec.checkpointFormat],
  ]);
}

/**
 * A camelCase GPTQ request (transformers' GPTQConfig; snake_case accepted), checked as it is built: unknown keys and
 * bad values throw ConfigError. Pass it as fromPretrained's quantizationConfig.
 */
export class GPTQConfig {
  readonly quantMethod = 'gptq' as const;
  readonly bits: GptqBits;
  readonly groupSize: number;
  readonly dampPercent: number;
  readonly descAct: boolean;
  readonly staticGroups: boolean;
  readonly sym: boolean;
  readonly trueSequential: boolean;
  readonly checkpointFormat: GptqCheckpointFormat;
  readonly dataset: string | string[] | null;
  readonly nsamples: number;
  readonly modelSeqlen: number | null;
  readonly seed: number;
  readonly modulesInBlockToQuantize: string[][] | null;

  constructor(opts: GPTQConfigOptions) {
    if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) throw new ConfigError(`GPTQConfig: expected an options object, got ${show(opts)}`);
    const given = 'quantMethod' in opts || 'quant_method' in opts ? opts : { ...opts, quant_method: 'gptq' };
    const s = parseGptqConfig(given, 'GPTQConfig', { where: '', strict: true });
    this.bits = s.bits; this.groupSize = s.groupSize; this.dampPercent = s.dampPercent; this.descAct = s.descAct;
    this.staticGroups = s.staticGroups; this.sym = s.sym; this.trueSequential = s.trueSequential;
    this.checkpointFormat = s.checkpointFormat; this.dataset = s.dataset; this.nsamples = s.nsamples;
    this.modelSeqlen = s.modelSeqlen; this.seed = s.seed; this.modulesInBlockToQuantize = s.modulesInBlockToQuantize;
  }

  /** The quantization_config a model quantized with this request is saved with. */
  toDict(): Map<string, unknown> {
    return gptqConfigDict(parseGptqConfig({ ...this } as Record<string, unknown>, 'GPTQConfig', { where: '', strict: true }));
  }
}
