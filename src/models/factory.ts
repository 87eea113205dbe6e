// Build, then load (mlx-lm's nn.quantize + load_weights; GUIDE.md "Seams"): model files ask this factory for each
// linear layer by HF name and shape, and get a float Linear, a Linear4bit, a Linear8bitLt, a GptqLinear or an
// AwqLinear without knowing which. The quantization spec comes from config.json (the checkpoint holds bitsandbytes, GPTQ or AWQ tensors,
// read by name) or from the caller (float weights quantized as they are read; the mapped file is only read, new
// arrays hold the codes).
import type { Backend } from '../backend/backend.js';
import { UnsupportedModelError } from '../io/config.js';
import type { QuantizationSpec } from '../io/quantconfig.js';
import { Linear, type LinearLike } from '../nn/layers.js';
import { quantLinear, type AwqLinear, type GptqLinear } from '../nn/quant.js';
import { Bnb4Error, bnb4FromStateDict, quantize4bit, type TorchFloatDtype } from '../quant/bnb4.js';
import { Int8Error, int8FromStateDict, quantizeInt8 } from '../quant/int8.js';
import type { LoadedModel } from '../api.js';
import { gptqConfigDict, type GptqQuantizationSpec } from '../io/gptqconfig.js';
import { GptqError, gptqFromStateDict, packGptq } from '../quant/gptq-format.js';
import type { GptqCodes } from '../quant/gptq-types.js';
import { fromAwq, fromBnb4, fromGptq, fromInt8, type QuantizedWeight } from '../quant/qweight.js';
import { awqConfigDict, type AwqQuantizationSpec } from '../io/awqconfig.js';
import { AwqError, awqFromStateDict, packAwq } from '../quant/awq-format.js';
import { f16ToF32, f32ToF16, type DType } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { MissingTensorError, Weights } from './model.js';

/** A linear layer `name` ([out, in], with or without a bias), its weights read from the checkpoint. */
export type LinearFactory = (name: string, outFeatures: number, inFeatures: number, bias: boolean) => LinearLike;

/** 'load': the checkpoint already holds quantized tensors; 'quantize': quantize its float weights while building. */
export type QuantizeMode = 'load' | 'quantize';

const TORCH_DTYPE: Partial<Record<DType, TorchFloatDtype>> = { F32: 'float32', BF16: 'bfloat16', F16: 'float16' };

/**
 * Whether `name` stays in float. lm_head always does (transformers' default skips the output embedding, and lowbit
 * keeps it whatever llm_int8_skip_modules says); a skip entry matches whole dotted segments of the name, as
 * transformers' `key + "." in name or key == name` and short-name checks do ("out_proj", "model.layers.0.mlp").
 */
export function keepsFloat(name: string, spec: QuantizationSpec): boolean {
  if (name === 'lm_head') return true;
  // AWQ's modules_to_not_convert is matched as a substring of the name by AutoAWQ, transformers and vLLM alike.
  if (spec.method === 'awq') return (spec.modulesToNotConvert ?? []).some((k) => name.includes(k));
  return (spec.skipModules ?? []).some((k) => `.${name}.`.includes(`.${k}.`));
}

/** One linear layer quantized while building: its name, format and how long quantizing it took. */
export interface QuantizedLayerEvent {
  name: string;
  format: QuantizedWeight['format'];
  /** [out, in]. */
  shape: readonly [number, number];
  ms: number;
}

export function linearFactory(w: Weights, backend: Backend, spec: QuantizationSpec | null, mode: QuantizeMode = 'load',
  onQuantize?: (e: QuantizedLayerEvent) => void): LinearFactory {
  return (name, out, inp, hasBias) => {
    const bias = hasBias ? w.vector(`${name}.bias`, out) : null;
    if (!spec || keepsFloat(name, spec)) return new Linear(backend, name, w.matrix(`${name}.weight`, [out, inp]), bias);
    // A GPTQ checkpoint says by its names which layers it quantized: AutoGPTQ and optimum quantize the linears inside
    // the decoder blocks only (OPT's project_in/out stay float), modules_in_block_to_quantize may leave more.
    // AutoAWQ likewise (vLLM reads such layers as float too, from the tensors' dtypes).
    if ((spec.method === 'gptq' || spec.method === 'awq') && mode === 'load' && !w.has(`${name}.qweight`) && w.has(`${name}.weight`)) {
      return new Linear(backend, name, w.matrix(`${name}.weight`, [out, inp]), bias);
    }
    const t0 = performance.now();
    const qw = mode === 'load' ? loadQuantized(w, spec, name, out, inp) : quantizeFloat(w, spec, name, out, inp);
    onQuantize?.({ name, format: qw.format, shape: qw.shape, ms: performance.now() - t0 });
    if (qw.shape[0] !== out || qw.shape[1] !== inp) {
      throw new MissingTensorError(`${w.source}: tensor "${name}.weight" holds a [${qw.shape}] ${qw.format} weight, expected [${out},${inp}]`);
    }
    return quantLinear(backend, name, qw, bias);
  };
}

/** bitsandbytes' (§2.4, §3) or GPTQ's (§4.5) tensors of one layer, by name; every name read is recorded, so none is "unused". */
function loadQuantized(w: Weights, spec: QuantizationSpec, name: string, out: number, inp: number): QuantizedWeight {
  const get = (n: string) => w.take(n);
  try {
    if (spec.method === 'gptq') return fromGptq(gptqFromStateDict(name, get, spec, [out, inp]));
    if (spec.method === 'awq') return fromAwq(awqFromStateDict(name, get, spec, [out, inp]));
    if (spec.format === 'int8') return fromInt8(int8FromStateDict(name, get), spec.threshold);
    const q = fromBnb4(bnb4FromStateDict(name, get), spec.computeDtype);
    if (q.format !== spec.format) {
      throw new Bnb4Error(`${name}.weight: stored as ${q.format}, but quantization_config.bnb_4bit_quant_type is ${spec.format}`);
    }
    return q;
  } catch (e) {
    // Name the checkpoint as every other loader error does; the error class stays the quantizer's.
    if (e instanceof Bnb4Error || e instanceof Int8Error || e instanceof GptqError || e instanceof AwqError) {
      const E = e.constructor as new (m: string) => Error;
      throw new E(`${w.source}: ${e.message}`);
    }
    throw e;
  }
}

/** Quantize a float checkpoint weight as transformers + bitsandbytes do on load (CUDA semantics, block 64). */
function quantizeFloat(w: Weights, spec: QuantizationSpec, name: string, out: number, inp: number): QuantizedWeight {
  if (spec.method === 'gptq') {
    // GPTQ is not a per-weight rounding: it needs calibration activations flowing through the already-quantized
    // blocks, so it runs over a built float model (the GPTQ driver), never inside this per-layer factory.
    throw new UnsupportedModelError(`${w.source}: ${name}: GPTQ cannot quantize a layer while the model loads (it needs calibration data run `
      + 'through the model block by block); load the float model and quantize it with the GPTQ driver (lowbit quantize --method gptq), '
      + 'or load a GPTQ checkpoint');
  }
  if (spec.method === 'awq') {
    // AWQ's scale search likewise runs calibration activations through each block.
    throw new UnsupportedModelError(`${w.source}: ${name}: AWQ cannot quantize a layer while the model loads (its scale search needs calibration `
      + 'data run through the model block by block); load the float model and quantize it with the AWQ driver, or load an AWQ checkpoint');
  }
  // Quantized on the host (a device backend gets the codes; their layout goes up at the layer's first matmul).
  const t = w.unplaced().matrix(`${name}.weight`, [out, inp]);
  const x = t.toF32();                                                 // a new array: the mapping is never written
  if (spec.format === 'int8') return fromInt8(quantizeInt8(x, [out, inp]), spec.threshold);
  return fromBnb4(quantize4bit(x, [out, inp], {
    quantType: spec.format, doubleQuant: spec.doubleQuant, dtype: TORCH_DTYPE[t.dtype] ?? 'float32', blocksize: spec.blocksize,
  }), spec.computeDtype);
}

/**
 * A float32 bias rounded to float16 and back, as AutoGPTQ's and AutoAWQ's packs store it (`bias.half()`), on the
 * bias's own side (a device bias comes down, is rounded, and goes back up).
 */
function halfBias(be: Backend, bias: Tensor<'F32'>): Tensor<'F32'> {
  const src = (bias.device === 'cpu' ? bias : be.download(bias)).f32, out = new Float32Array(src.length);
  for (let i = 0; i < out.length; i++) out[i] = f16ToF32(f32ToF16(src[i]));
  const t = new Tensor('F32', bias.shape, out);
  return bias.device === 'cpu' ? t : be.upload(t);
}

/**
 * Hands GPTQ's output to a loaded float model (the GPTQ driver calls this once every layer is quantized): each
 * layer of `codesByLayer` is packed as AutoGPTQ packs it (v1 or v2 per spec.checkpointFormat) and swapped in as a
 * GptqLinear through replaceLinear, its bias kept (rounded to float16, as saved); the model's quantizationConfig becomes GPTQ's. The model then runs
 * quantized (matmulQ) and savePretrained writes the AutoGPTQ folder, through the same code as a loaded GPTQ file.
 */
export function installGptq(m: Pick<LoadedModel, 'model' | 'quantizationConfig'>, codesByLayer: Map<string, GptqCodes>, spec: GptqQuantizationSpec): void {
  const linears = m.model.linears();
  const layers: [string, GptqLinear][] = [];
  for (const [name, codes] of codesByLayer) {
    const old = linears.get(name);
    if (!old) throw new GptqError(`${name}: the model has no linear layer of that name`);
    if (!(old instanceof Linear)) throw new GptqError(`${name}: is a ${old.constructor.name}, not a float Linear; GPTQ quantizes float layers`);
    if (name === 'lm_head') throw new GptqError(`${name}: lm_head stays float (a quantized lm_head is not written)`);
    if (codes.shape[0] !== old.outFeatures || codes.shape[1] !== old.inFeatures) {
      throw new GptqError(`${name}: codes are [${codes.shape}], the layer is [${old.outFeatures}, ${old.inFeatures}]`);
    }
    if (codes.bits !== spec.bits || codes.groupSize !== spec.groupSize) {
      throw new GptqError(`${name}: codes are ${codes.bits}-bit group ${codes.groupSize}, the config says ${spec.bits}-bit group ${spec.groupSize}`);
    }
    const w = packGptq(codes, { name, sym: spec.sym, descAct: spec.descAct, checkpointFormat: spec.checkpointFormat });
    // AutoGPTQ's pack stores the bias as float16 (`linear.bias.half()`): the model runs with the bias it saves.
    const bias = old.bias && halfBias(m.model.backend, old.bias);
    layers.push([name, quantLinear(m.model.backend, name, fromGptq(w), bias) as GptqLinear]);
  }
  // Every layer is packed (and checked) before the first swap, so an error leaves the model as it was.
  for (const [name, layer] of layers) m.model.replaceLinear(name, layer);
  m.quantizationConfig = gptqConfigDict(spec);
}

/**
 * Hands AWQ's output (or round-to-nearest on AWQ's grid) to a loaded float model: each layer of `codesByLayer`
 * (4-bit GptqCodes, g_idx = floor(k / G)) is packed as AutoAWQ packs it in spec.layout (GEMM by default) and
 * swapped in as an AwqLinear, its bias rounded to float16 as AutoAWQ's `linear.bias.clone().half()` saves it; the
 * model's quantizationConfig becomes AWQ's (AutoAWQ's to_transformers_dict keys). The model then runs quantized and
 * savePretrained writes the AutoAWQ folder, through the same code as a loaded AWQ file. Every layer is packed and
 * checked before the first swap, so an error leaves the model as it was.
 */
export function installAwq(m: Pick<LoadedModel, 'model' | 'quantizationConfig'>, codesByLayer: Map<string, GptqCodes>,
  spec: Pick<AwqQuantizationSpec, 'groupSize' | 'zeroPoint' | 'version' | 'layout' | 'modulesToNotConvert'>): void {
  const linears = m.model.linears();
  const layers: [string, AwqLinear][] = [];
  for (const [name, codes] of codesByLayer) {
    const old = linears.get(name);
    if (!old) throw new AwqError(`${name}: the model has no linear layer of that name`);
    if (!(old instanceof Linear)) throw new AwqError(`${name}: is a ${old.constructor.name}, not a float Linear; AWQ quantizes float layers`);
    if (name === 'lm_head') throw new AwqError(`${name}: lm_head stays float (a quantized lm_head is not written)`);
    if ((spec.modulesToNotConvert ?? []).some((k) => name.includes(k))) throw new AwqError(`${name}: is listed in modules_to_not_convert, so it stays float`);
    if (codes.shape[0] !== old.outFeatures || codes.shape[1] !== old.inFeatures) {
      throw new AwqError(`${name}: codes are [${codes.shape}], the layer is [${old.outFeatures}, ${old.inFeatures}]`);
    }
    if (codes.groupSize !== spec.groupSize) throw new AwqError(`${name}: codes are group ${codes.groupSize}, the config says group ${spec.groupSize}`);
    const w = packAwq(codes, { name, layout: spec.layout });
    const bias = old.bias && halfBias(m.model.backend, old.bias);
    layers.push([name, quantLinear(m.model.backend, name, fromAwq(w), bias) as AwqLinear]);
  }
  for (const [name, layer] of layers) m.model.replaceLinear(name, layer);
  m.quantizationConfig = awqConfigDict(spec);
}
