// Build, then load (mlx-lm's nn.quantize + load_weights; GUIDE.md "Seams"): model files ask this factory for each
// linear layer by HF name and shape, and get a float Linear, a Linear4bit or a Linear8bitLt without knowing which.
// The quantization spec comes from config.json (the checkpoint holds bitsandbytes tensors, read by name) or from the
// caller (float weights quantized as they are read; the mapped file is only read, new arrays hold the codes).
import type { Backend } from '../backend/backend.js';
import type { QuantizationSpec } from '../io/quantconfig.js';
import { Linear, type LinearLike } from '../nn/layers.js';
import { quantLinear } from '../nn/quant.js';
import { Bnb4Error, bnb4FromStateDict, quantize4bit, type TorchFloatDtype } from '../quant/bnb4.js';
import { Int8Error, int8FromStateDict, quantizeInt8 } from '../quant/int8.js';
import { fromBnb4, fromInt8, type QuantizedWeight } from '../quant/qweight.js';
import type { DType } from '../tensor/dtype.js';
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
    const t0 = performance.now();
    const qw = mode === 'load' ? loadQuantized(w, spec, name) : quantizeFloat(w, spec, name, out, inp);
    onQuantize?.({ name, format: qw.format, shape: qw.shape, ms: performance.now() - t0 });
    if (qw.shape[0] !== out || qw.shape[1] !== inp) {
      throw new MissingTensorError(`${w.source}: tensor "${name}.weight" holds a [${qw.shape}] ${qw.format} weight, expected [${out},${inp}]`);
    }
    return quantLinear(backend, name, qw, bias);
  };
}

/** bitsandbytes' tensors of one layer, by name (§2.4, §3); every name read is recorded, so none is "unused". */
function loadQuantized(w: Weights, spec: QuantizationSpec, name: string): QuantizedWeight {
  const get = (n: string) => w.take(n);
  try {
    if (spec.format === 'int8') return fromInt8(int8FromStateDict(name, get), spec.threshold);
    const q = fromBnb4(bnb4FromStateDict(name, get), spec.computeDtype);
    if (q.format !== spec.format) {
      throw new Bnb4Error(`${name}.weight: stored as ${q.format}, but quantization_config.bnb_4bit_quant_type is ${spec.format}`);
    }
    return q;
  } catch (e) {
    // Name the checkpoint as every other loader error does; the error class stays the quantizer's.
    if (e instanceof Bnb4Error || e instanceof Int8Error) {
      const E = e.constructor as new (m: string) => Error;
      throw new E(`${w.source}: ${e.message}`);
    }
    throw e;
  }
}

/** Quantize a float checkpoint weight as transformers + bitsandbytes do on load (CUDA semantics, block 64). */
function quantizeFloat(w: Weights, spec: QuantizationSpec, name: string, out: number, inp: number): QuantizedWeight {
  const t = w.matrix(`${name}.weight`, [out, inp]);
  const x = t.toF32();                                                 // a new array: the mapping is never written
  if (spec.format === 'int8') return fromInt8(quantizeInt8(x, [out, inp]), spec.threshold);
  return fromBnb4(quantize4bit(x, [out, inp], {
    quantType: spec.format, doubleQuant: spec.doubleQuant, dtype: TORCH_DTYPE[t.dtype] ?? 'float32', blocksize: spec.blocksize,
  }), spec.computeDtype);
}
