// GPTQ (or round-to-nearest) on a loaded float model, end to end: calibration windows from the spec's dataset and
// the model's tokenizer (src/quant/calib.ts), the layer-by-layer driver (src/quant/gptq-driver.ts), then the codes
// packed as AutoGPTQ packs them and swapped in (installGptq), so the model runs quantized and savePretrained writes
// the AutoGPTQ folder. fromPretrained's GPTQConfig and `lowbit quantize --method gptq|rtn` both come here.
import type { LoadedModel } from '../api.js';
import { ConfigError } from '../io/config.js';
import type { GptqQuantizationSpec } from '../io/gptqconfig.js';
import { installGptq } from '../models/factory.js';
import type { OnProgress } from '../util/progress.js';
import { calibrationSamples, type CalibrationSet } from './calib.js';
import { quantizeModelGptq, type GptqModelResult, type GptqProgress } from './gptq-driver.js';
import { existsSync } from 'node:fs';
import { GptqError, gptqShapeProblem } from './gptq-format.js';

export interface GptqRunOptions {
  /** 'gptq' (default) or 'rtn': round-to-nearest on GPTQ's grid, no calibration needed (with a dataset, errors are measured). */
  method?: 'gptq' | 'rtn';
  onProgress?: OnProgress<GptqProgress>;
  signal?: AbortSignal;
}

export interface GptqRun extends GptqModelResult {
  /** The calibration set used, or null (RTN without a dataset). */
  calibration: CalibrationSet | null;
}

/** Quantize `m` in place with `spec` (bits, group size, sym, act-order, damping, calibration data). */
export function quantizeLoadedGptq(m: Pick<LoadedModel, 'model' | 'tokenizer' | 'dir' | 'quantizationConfig'>, spec: GptqQuantizationSpec,
  opts: GptqRunOptions = {}): GptqRun {
  const method = opts.method ?? 'gptq';
  const where = `GPTQ on ${m.dir}`;
  if (spec.modulesInBlockToQuantize) {
    throw new ConfigError(`${where}: modules_in_block_to_quantize is read from checkpoints, but lowbit quantizes every linear of each block in AutoGPTQ's order; leave it out`);
  }
  // Every linear of the blocks must be packable at these bits (AutoGPTQ's qweight / qzeros layouts): say so before
  // any calibration runs, not after the last layer.
  for (const [name, lin] of m.model.linears()) {
    if (!/\.layers\.\d+\./.test(name)) continue;
    const problem = gptqShapeProblem([lin.outFeatures, lin.inFeatures], spec.bits);
    if (problem) throw new GptqError(`${name}: ${problem}`);
  }
  let calibration: CalibrationSet | null = null;
  if (spec.dataset !== null) {
    if (!m.tokenizer) throw new ConfigError(`${where}: calibration needs the model's tokenizer, and ${m.dir} has no tokenizer.json`);
    if (typeof spec.dataset === 'string' && !existsSync(spec.dataset)) {
      throw new ConfigError(`${where}: dataset "${spec.dataset}" is not a file; give a text file, a JSONL file with a "text" field, or a list of texts (Hub dataset names such as "c4" or "wikitext2" need a download, which lowbit does not do)`);
    }
    const tok = m.tokenizer;
    calibration = calibrationSamples(spec.dataset, { encode: (t) => tok.encode(t) }, {
      nsamples: spec.nsamples, seqlen: spec.modelSeqlen ?? undefined, seed: spec.seed, maxPositions: m.model.maxPositions,
    });
  } else if (method === 'gptq') {
    throw new ConfigError(`${where}: GPTQ needs calibration data: set dataset (a text file, a JSONL file with a "text" field, or a list of texts)`);
  }
  const result = quantizeModelGptq(m.model, calibration ? calibration.samples : [], {
    method, bits: spec.bits, groupSize: spec.groupSize, sym: spec.sym, descAct: spec.descAct, staticGroups: spec.staticGroups,
    dampPercent: spec.dampPercent, trueSequential: spec.trueSequential, signal: opts.signal,
  }, opts.onProgress);
  installGptq(m, result.codes, spec);
  return { ...result, calibration };
}
