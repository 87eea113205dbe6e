// The library's front door: load a model folder or Hub id into a ready model with its tokenizer and
// generation defaults.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Backend } from './backend/backend.js';
import { BackendName, defaultBackend, getBackend } from './backend/index.js';
import { GenerationConfig, readGenerationConfig } from './generate/config.js';
import { loadStateDict } from './io/checkpoint.js';
import { ConfigError, ModelConfig, readConfig } from './io/config.js';
import { BNB4_BLOCKSIZES } from './quant/bnb4.js';
import { resolveModelDir, ResolveOptions } from './io/hub.js';
import type { CausalLM } from './models/model.js';
import { Weights } from './models/model.js';
import { buildModel } from './models/registry.js';
import { parseQuantizationConfig, quantizationConfigDict, type BitsAndBytesConfig } from './io/quantconfig.js';
import type { GPTQConfig, GPTQConfigOptions } from './io/gptqconfig.js';
import type { AwqConfig, AwqConfigOptions } from './io/awqconfig.js';
import type { QuantizedLayerEvent } from './models/factory.js';
import type { Tensor } from './tensor/tensor.js';
import { Tokenizer } from './tokenizer/index.js';
import { checkProgressCallback, progressReporter } from './util/progress.js';
import { quantizeLoadedGptq } from './quant/gptq-run.js';
import { quantizeLoadedAwq } from './quant/awq-run.js';

export interface LoadOptions extends ResolveOptions {
  /** 'cpu' (native, default when built), 'cuda' (an NVIDIA GPU) or 'ref' (plain TypeScript), or a Backend object. */
  backend?: BackendName | Backend;
  /** transformers' device: 'cuda' runs on the GPU (the cuda backend), 'cpu' on the native CPU backend. */
  device?: 'cpu' | 'cuda';
  /**
   * Map the safetensors files (default true: zero-copy, pages shared with the OS cache). false reads them into
   * memory instead: slower to start and memory-hungry, but immune to another process truncating a mapped file,
   * which would otherwise kill this process with SIGBUS.
   */
  mmap?: boolean;
  /**
   * Quantize a float checkpoint as it loads, with transformers' BitsAndBytesConfig meanings (camelCase or
   * snake_case keys): NF4/FP4 (double quant optional) or LLM.int8. lm_head and llmInt8SkipModules stay float. A
   * checkpoint saved quantized (config.json has quantization_config) loads as it is and refuses this option.
   * A GPTQConfig (bits, groupSize, sym, descAct, dampPercent, dataset, nsamples, modelSeqlen …) quantizes the float
   * model after it is built, as optimum's GPTQQuantizer does: calibration windows from `dataset` (a text file, a JSONL
   * file with a "text" field, or a list of texts) run through it block by block; progress by linear layer.
   * An AwqConfig (groupSize, zeroPoint, version, dataset, nsamples, seqlen) likewise runs AutoAWQ's search (scales
   * folded into the norms and linears, clipping) on calibration blocks, then packs AutoAWQ's GEMM (or GEMV) layout.
   */
  quantizationConfig?: BitsAndBytesConfig | GPTQConfig | GPTQConfigOptions | AwqConfig | AwqConfigOptions | Record<string, unknown>;
  /**
   * 4-bit block size for quantizationConfig (32 … 4096, powers of two; default 64, bitsandbytes' `blocksize`).
   * transformers' BitsAndBytesConfig has no such field; the saved quant_state records it, so any size loads.
   */
  blocksize?: number;
  /**
   * Called after each linear layer is quantized on load (with quantizationConfig), in build order, with its name,
   * format, shape and time. `onProgress` gets the same work by decoder layer (task 'quantize', unit 'layers').
   */
  onQuantize?: (layer: QuantizedLayerEvent) => void;
}

export interface LoadedModel {
  model: CausalLM;
  config: ModelConfig;
  /** null when the folder has no tokenizer.json. */
  tokenizer: Tokenizer | null;
  /** generation_config.json, normalised to camelCase. */
  generationConfig: GenerationConfig;
  /** Every checkpoint tensor by name (zero-copy views of the mapped files). */
  tensors: Map<string, Tensor>;
  dir: string;
  loadMs: number;
  /**
   * The quantization_config transformers would write for this model (FORMATS.md §2.5; GPTQ: AutoGPTQ's key set,
   * §4.6; AWQ: AutoAWQ's to_transformers_dict keys, §5.5): the checkpoint's own, or the one quantizationConfig asked for; null for a float model. savePretrained
   * writes it.
   */
  quantizationConfig?: Map<string, unknown> | null;
}

export async function fromPretrained(idOrDir: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  const t0 = performance.now();
  checkProgressCallback(opts.onProgress, 'fromPretrained');  // before a download could call it
  const dir = await resolveModelDir(idOrDir, opts);
  const config = readConfig(join(dir, 'config.json'));
  if (opts.device !== undefined && opts.device !== 'cpu' && opts.device !== 'cuda') throw new ConfigError(`fromPretrained: device must be "cpu" or "cuda", got ${JSON.stringify(opts.device)}`);
  if (opts.device && opts.backend) throw new ConfigError('fromPretrained: give device or backend, not both');
  const backend = typeof opts.backend === 'object' ? opts.backend : opts.backend ? getBackend(opts.backend) : opts.device ? getBackend(opts.device) : defaultBackend();
  if (opts.mmap !== undefined && typeof opts.mmap !== 'boolean') throw new TypeError(`fromPretrained: mmap must be true or false, got ${JSON.stringify(opts.mmap)}`);
  const quantize = parseQuantizationConfig(opts.quantizationConfig, 'fromPretrained', { where: 'quantizationConfig', strict: true });
  if (opts.blocksize !== undefined) {
    if (!quantize || quantize.method !== 'bitsandbytes' || quantize.format === 'int8') throw new ConfigError('fromPretrained: blocksize applies to 4-bit quantizationConfig only (bitsandbytes nf4 or fp4)');
    if (!BNB4_BLOCKSIZES.includes(opts.blocksize)) throw new ConfigError(`fromPretrained: blocksize must be one of ${BNB4_BLOCKSIZES.join(', ')}, got ${JSON.stringify(opts.blocksize)}`);
    quantize.blocksize = opts.blocksize;
  }
  const { tensors } = loadStateDict(dir, { mmap: opts.mmap ?? true });
  // GPTQ and AWQ quantize a built float model (calibration runs through it block by block); bitsandbytes as it builds.
  const gptq = quantize?.method === 'gptq' ? quantize : null, awq = quantize?.method === 'awq' ? quantize : null;
  if ((gptq || awq) && config.quantization_config) {
    throw new ConfigError(`${dir}: the checkpoint is already quantized (config.json has a ${config.quantization_config.method} quantization_config); load it without quantizationConfig`);
  }
  // GPTQ and AWQ calibrate on the host backends and on cuda (src/quant/gptq-cuda.ts, awq-cuda.ts).
  if ((gptq || awq) && backend.device !== 'cpu' && backend.device !== 'cuda') {
    throw new ConfigError(`fromPretrained: ${gptq ? 'GPTQ' : 'AWQ'} calibration runs on the cpu backends or cuda, not ${backend.device}; quantize there, save, and load the result`);
  }
  const build = gptq || awq ? null : quantize;
  // buildModel checks the layers against config.json before building any, and warns about unused tensors.
  const layers = build ? layerProgress(config.num_hidden_layers, opts) : undefined;
  const model = buildModel(config, new Weights(tensors, dir), backend, { quantize: build, onQuantize: layers?.event });
  layers?.finish();
  const tokenizer = existsSync(join(dir, 'tokenizer.json')) ? Tokenizer.fromDir(dir) : null;
  const qc = config.quantization_config ? quantizationConfigDict(config.quantization_config, config.raw.quantization_config, join(dir, 'config.json'))
    : build ? quantizationConfigDict(build, opts.quantizationConfig, 'fromPretrained') : null;
  const loaded: LoadedModel = { model, config, tokenizer, generationConfig: readGenerationConfig(dir), tensors, dir, loadMs: 0, quantizationConfig: qc };
  if (gptq) quantizeLoadedGptq(loaded, gptq, { onProgress: opts.onProgress });
  if (awq) quantizeLoadedAwq(loaded, awq, { onProgress: opts.onProgress });
  loaded.loadMs = performance.now() - t0;
  return loaded;
}

/**
 * Quantize-on-load progress by decoder layer: linears arrive in build order, so when one of layer i arrives, layers
 * 0 … i−1 are done. OPT's project_in/project_out (outside the layers) only pass through to onQuantize.
 */
function layerProgress(total: number, opts: LoadOptions): { event: (e: QuantizedLayerEvent) => void; finish: () => void } {
  const report = progressReporter('quantize', 'layers', total, opts.onProgress);
  let current = -1;
  return {
    event: (e) => {
      opts.onQuantize?.(e);
      const m = /^(.*\.layers\.(\d+))\./.exec(e.name);
      if (m && Number(m[2]) !== current) { current = Number(m[2]); report(current, m[1]); }
    },
    finish: () => report(total),
  };
}

