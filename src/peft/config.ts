// PEFT's LoraConfig (../shared/spec/FORMATS.md §6.1) with camelCase fields, read from and written to
// adapter_config.json with PEFT's snake_case keys and JSON conventions (indent 2, sorted keys, no trailing newline).
// Unknown keys (newer PEFT fields) are kept when reading and ignored; missing ones take PEFT's defaults, so adapters
// from any PEFT version load.
import { pyFloat, pyJsonDumps } from '../util/pyjson.js';

export class PeftError extends Error { override name = 'PeftError'; }

/** The PEFT release whose adapter_config.json field set lowbit writes (`peft_version`). */
export const PEFT_FORMAT_VERSION = '0.17.0';

/** PEFT's default LoRA targets per model type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING). */
export const DEFAULT_TARGETS: Record<string, string[]> = {
  llama: ['q_proj', 'v_proj'], mistral: ['q_proj', 'v_proj'], qwen2: ['q_proj', 'v_proj'], opt: ['q_proj', 'v_proj'],
};

export interface LoraConfigOptions {
  /** Rank (default 8). */
  r?: number;
  /** Scaling numerator (default 8): scaling = loraAlpha / r, or / sqrt(r) with useRslora. */
  loraAlpha?: number;
  loraDropout?: number;
  /** Module names (a name matches when it equals one or ends in "." + one), a regex string (full match), or "all-linear". */
  targetModules?: string[] | string | null;
  /** Names (same matching) or a regex string to leave out. */
  excludeModules?: string[] | string | null;
  /** 'none' (default), 'all' (train every bias), 'lora_only' (train the biases of LoRA layers). */
  bias?: 'none' | 'all' | 'lora_only';
  useRslora?: boolean;
  /** Modules trained in full and saved beside the adapter (e.g. lm_head). */
  modulesToSave?: string[] | null;
  /** true (PEFT's default: A Kaiming-uniform, B zero), false (both random: not an identity at init), or 'gaussian'. */
  initLoraWeights?: boolean | 'gaussian';
  taskType?: string | null;
  baseModelNameOrPath?: string | null;
  revision?: string | null;
  inferenceMode?: boolean;
  /** Per-module overrides of r / loraAlpha: regex (PEFT matches it against the end of the module name) → value. */
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  layersToTransform?: number[] | number | null;
  fanInFanOut?: boolean;
  useDora?: boolean;
  loraBias?: boolean;
}

const SNAKE: Record<string, keyof LoraConfigOptions> = {
  r: 'r', lora_alpha: 'loraAlpha', lora_dropout: 'loraDropout', target_modules: 'targetModules', exclude_modules: 'excludeModules',
  bias: 'bias', use_rslora: 'useRslora', modules_to_save: 'modulesToSave', init_lora_weights: 'initLoraWeights', task_type: 'taskType',
  base_model_name_or_path: 'baseModelNameOrPath', revision: 'revision', inference_mode: 'inferenceMode', rank_pattern: 'rankPattern',
  alpha_pattern: 'alphaPattern', layers_to_transform: 'layersToTransform', fan_in_fan_out: 'fanInFanOut', use_dora: 'useDora', lora_bias: 'loraBias',
};

export class LoraConfig {
  readonly peftType = 'LORA';
  r = 8;
  loraAlpha = 8;
  loraDropout = 0;
  targetModules: string[] | string | null = null;
  excludeModules: string[] | string | null = null;
  bias: 'none' | 'all' | 'lora_only' = 'none';
  useRslora = false;
  modulesToSave: string[] | null = null;
  initLoraWeights: boolean | 'gaussian' = true;
  taskType: string | null = null;
  baseModelNameOrPath: string | null = null;
  revision: string | null = null;
  inferenceMode = false;
  rankPattern: Record<string, number> = {};
  alphaPattern: Record<string, number> = {};
  layersToTransform: number[] | number | null = null;
  fanInFanOut = false;
  useDora = false;
  loraBias = false;
  /** Keys of a read adapter_config.json that lowbit does not use (newer PEFT fields), kept for the record. */
  readonly extra: Record<string, unknown> = {};

  /** camelCase options, or PEFT's snake_case keys (as in adapter_config.json). */
  constructor(opts: LoraConfigOptions | Record<string, unknown> = {}, where = 'LoraConfig') {
    for (const [k, v] of Object.entries(opts)) {
      const key = (SNAKE[k] ?? (Object.values(SNAKE).includes(k as keyof LoraConfigOptions) ? k : undefined)) as keyof LoraConfigOptions | undefined;
      if (!key) {
        if (where === 'LoraConfig') throw new PeftError(`${where}: unknown option "${k}"`);
        this.extra[k] = v;
        continue;
      }
      if (v !== undefined && !(v === null && !['targetModules', 'excludeModules', 'modulesToSave', 'taskType', 'baseModelNameOrPath', 'revision', 'layersToTransform'].includes(key))) {
        (this as Record<string, unknown>)[key] = v;
      }
    }
    this.check(where);
  }

  private check(where: string): void {
    const bad = (m: string) => { throw new PeftError(`${where}: ${m}`); };
    if (!(Number.isInteger(this.r) && this.r >= 1)) bad(`r must be a positive integer, got ${JSON.stringify(this.r)}`);
    if (!(typeof this.loraAlpha === 'number' && Number.isFinite(this.loraAlpha))) bad(`lora_alpha must be a number, got ${JSON.stringify(this.loraAlpha)}`);
    if (!(typeof this.loraDropout === 'number' && this.loraDropout >= 0 && this.loraDropout < 1)) bad(`lora_dropout must be in [0, 1), got ${JSON.stringify(this.loraDropout)}`);
    if (!['none', 'all', 'lora_only'].includes(this.bias)) bad(`bias must be "none", "all" or "lora_only", got ${JSON.stringify(this.bias)}`);
    if (!(this.initLoraWeights === true || this.initLoraWeights === false || this.initLoraWeights === 'gaussian')) {
      bad(`init_lora_weights ${JSON.stringify(this.initLoraWeights)} is not supported (true, false or "gaussian")`);
    }
    if (this.useDora) bad('use_dora (DoRA) is not supported');
    if (this.fanInFanOut) bad('fan_in_fan_out is for GPT-2 style Conv1D layers, which lowbit\'s models do not have');
    const t = this.targetModules;
    if (t !== null && typeof t !== 'string' && !(Array.isArray(t) && t.every((s) => typeof s === 'string'))) bad(`target_modules must be a list of names or a string, got ${JSON.stringify(t)}`);
  }

  /** The scaling of a module's adapter: alpha / r (or / sqrt(r) with rsLoRA), with rank/alpha patterns applied. */
  rankAndAlpha(module: string): { r: number; alpha: number; scaling: number } {
    const pick = (pat: Record<string, number>, dflt: number) => {
      for (const [k, v] of Object.entries(pat)) if (new RegExp(`(.*\\.)?${k}$`).test(module)) return v;
      return dflt;
    };
    const r = pick(this.rankPattern, this.r), alpha = pick(this.alphaPattern, this.loraAlpha);
    return { r, alpha, scaling: this.useRslora ? alpha / Math.sqrt(r) : alpha / r };
  }

  /** Whether PEFT would put an adapter on this module (check_target_module_exists), given the model's type. */
  targets(module: string, modelType: string, outputLayer = 'lm_head'): boolean {
    const match = (spec: string[] | string) => typeof spec === 'string' ? new RegExp(`^(?:${spec})$`).test(module) : spec.some((t) => module === t || module.endsWith(`.${t}`));
    if (this.excludeModules !== null && match(this.excludeModules)) return false;
    let t = this.targetModules;
    if (t === null) {
      t = DEFAULT_TARGETS[modelType];
      if (!t) throw new PeftError(`LoraConfig: no default target_modules for model type "${modelType}"; give targetModules`);
    }
    if (t === 'all-linear' || (Array.isArray(t) && t.length === 1 && t[0] === 'all-linear')) return module !== outputLayer && !module.endsWith(`.${outputLayer}`);
    if (!match(t)) return false;
    if (this.layersToTransform !== null) {
      const m = /\.layers\.(\d+)\./.exec(module);
      const want = Array.isArray(this.layersToTransform) ? this.layersToTransform : [this.layersToTransform];
      if (!m || !want.includes(Number(m[1]))) return false;
    }
    return true;
  }

  /** adapter_config.json as PEFT writes it (every core field, sorted keys, indent 2, no trailing newline). */
  toJsonString(): string {
    const t = this.targetModules;
    const obj: Record<string, unknown> = {
      alpha_pattern: this.alphaPattern, auto_mapping: null, base_model_name_or_path: this.baseModelNameOrPath, bias: this.bias,
      corda_config: null, eva_config: null, exclude_modules: this.excludeModules, fan_in_fan_out: this.fanInFanOut, inference_mode: true,
      init_lora_weights: this.initLoraWeights, layer_replication: null, layers_pattern: null, layers_to_transform: this.layersToTransform,
      loftq_config: {}, lora_alpha: Number.isInteger(this.loraAlpha) ? this.loraAlpha : pyFloat(this.loraAlpha), lora_bias: this.loraBias,
      lora_dropout: pyFloat(this.loraDropout), megatron_config: null, megatron_core: 'megatron.core', modules_to_save: this.modulesToSave,
      peft_type: 'LORA', peft_version: PEFT_FORMAT_VERSION, qalora_group_size: 16, r: this.r, rank_pattern: this.rankPattern,
      revision: this.revision, target_modules: Array.isArray(t) ? [...t].sort() : t, target_parameters: null, task_type: this.taskType,
      trainable_token_indices: null, use_dora: false, use_qalora: false, use_rslora: this.useRslora,
    };
    return pyJsonDumps(obj, { indent: 2, sortKeys: true });
  }

  /** From a parsed adapter_config.json (any PEFT version); refuses a non-LoRA adapter. */
  static fromJson(json: unknown, file = 'adapter_config.json'): LoraConfig {
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new PeftError(`${file}: not a JSON object`);
    const o = json as Record<string, unknown>;
    const type = o.peft_type ?? 'LORA';
    if (type !== 'LORA') throw new PeftError(`${file}: peft_type "${String(type)}" is not supported (only LORA)`);
    const rest = { ...o };
    delete rest.peft_type;
    return new LoraConfig(rest, file);
  }
}
