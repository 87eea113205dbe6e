// AWQ (or round-to-nearest on AWQ's grid) on a loaded float model, end to end: calibration blocks from the spec's
// dataset and the model's tokenizer (awqCalibrationSamples, AutoAWQ's get_calib_dataset), the layer-by-layer driver
// (src/quant/awq-driver.ts: scale search, folding, clip search), then the codes packed in AutoAWQ's GEMM (or GEMV)
// layout and swapped in (installAwq), so the model runs quantized and savePretrained writes the AutoAWQ folder. The
// norms that absorbed scales are float tensors the checkpoint did not have: they replace the loaded ones in
// `m.tensors`, in float32, so a save writes exactly the weights the quantized model runs. fromPretrained's AwqConfig
// and `lowbit quantize --method awq` both come here.
import type { LoadedModel } from '../api.js';
import { ConfigError } from '../io/config.js';
import type { AwqQuantizationSpec } from '../io/awqconfig.js';
import { installAwq } from '../models/factory.js';
import { DecoderLM } from '../models/model.js';
import { LayerNorm } from '../nn/layers.js';
import { Tensor } from '../tensor/tensor.js';
import type { OnProgress } from '../util/progress.js';
import { existsSync } from 'node:fs';
import { awqCalibrationSamples, type CalibrationSet } from './calib.js';
import { quantizeModelAwq, type AwqModelResult, type AwqProgress } from './awq-driver.js';
import { AwqError, awqShapeProblem } from './awq-format.js';

export interface AwqRunOptions {
  /** 'awq' (default) or 'rtn': AutoAWQ's grid without scaling or clipping, no calibration needed. */
  method?: 'awq' | 'rtn';
  onProgress?: OnProgress<AwqProgress>;
  signal?: AbortSignal;
}

export interface AwqRun extends AwqModelResult {
  /** The calibration blocks used, or null (RTN without a dataset). */
  calibration: CalibrationSet | null;
}

/** Quantize `m` in place with `spec` (group size, zero point, layout, calibration data). */
export function quantizeLoadedAwq(m: Pick<LoadedModel, 'model' | 'tokenizer' | 'dir' | 'quantizationConfig' | 'tensors'>, spec: AwqQuantizationSpec,
  opts: AwqRunOptions = {}): AwqRun {
  const method = opts.method ?? 'awq';
  const where = `AWQ on ${m.dir}`;
  if (spec.modulesToNotConvert?.length) {
    throw new ConfigError(`${where}: modules_to_not_convert is honoured when loading AWQ checkpoints, but the AWQ search scales whole groups of layers (q/k/v, gate/up …) and lowbit quantizes every linear of each block; leave it out`);
  }
  // Every linear to quantize must fit the layout (K a multiple of the group, N of 8 for GEMM): say so before any
  // calibration runs, not after the last layer.
  for (const [name, lin] of m.model.linears()) {
    if (!/\.layers\.\d+\./.test(name)) continue;
    const problem = awqShapeProblem([lin.outFeatures, lin.inFeatures], spec.groupSize, spec.layout);
    if (problem) throw new AwqError(`${name}: ${problem}`);
  }
  let calibration: CalibrationSet | null = null;
  if (spec.dataset !== null) {
    if (!m.tokenizer) throw new ConfigError(`${where}: calibration needs the model's tokenizer, and ${m.dir} has no tokenizer.json`);
    if (typeof spec.dataset === 'string' && !existsSync(spec.dataset)) {
      throw new ConfigError(`${where}: dataset "${spec.dataset}" is not a file; give a text file, a JSONL file with a "text" field, or a list of texts (Hub dataset names such as "pileval" need a download, which lowbit does not do)`);
    }
    const tok = m.tokenizer;
    calibration = awqCalibrationSamples(spec.dataset, { encode: (t) => tok.encode(t) }, {
      nsamples: spec.nsamples, seqlen: Math.min(spec.seqlen, m.model.maxPositions), maxPositions: m.model.maxPositions,
    });
  } else if (method === 'awq') {
    throw new ConfigError(`${where}: AWQ needs calibration data: set dataset (a text file, a JSONL file with a "text" field, or a list of texts)`);
  }
  const result = quantizeModelAwq(m.model, calibration ? calibration.samples : [], {
    method, bits: spec.bits, groupSize: spec.groupSize, zeroPoint: spec.zeroPoint, signal: opts.signal,
  }, opts.onProgress);
  keepScaledNorms(m, result.scaledNorms);
  installAwq(m, result.codes, spec);
  return { ...result, calibration };
}

/** The folded norms' weights (and OPT's biases) replace the loaded tensors, in float32: what the model now runs. */
function keepScaledNorms(m: Pick<LoadedModel, 'model' | 'tensors'>, names: readonly string[]): void {
  const model = m.model;
  if (!names.length) return;
  if (!(model instanceof DecoderLM)) throw new AwqError('AWQ: scaled norms need a decoder model');
  for (const name of names) {
    const hit = /\.layers\.(\d+)\.([^.]+)$/.exec(name);
    const norm = hit ? model.layerNorms(Number(hit[1]))[hit[2]] : undefined;
    if (!norm) throw new AwqError(`AWQ: the model has no norm "${name}"`);
    // A cuda model's norms live on the device: the host copy comes down.
    const host = (t: Tensor<'F32'>) => new Tensor('F32', t.shape, t.device === 'cpu' ? t.f32.slice() : model.backend.download(t).f32);
    m.tensors.set(`${name}.weight`, host(norm.weight));
    if (norm instanceof LayerNorm) m.tensors.set(`${name}.bias`, host(norm.bias));
  }
}
