// A merged weight quantized again in its layer's format, as PEFT's merge does for bitsandbytes layers
// (../shared/spec/FORMATS.md §6.3): new NF4/FP4 blocks (float32 quant state: base bf16 + adapter fp32 promotes to
// fp32 in torch) or new LLM.int8 rows. GPTQ and AWQ layers have no merge in PEFT either; they are refused.
import { quantize4bit } from '../quant/bnb4.js';
import { quantizeInt8 } from '../quant/int8.js';
import { fromBnb4, fromInt8, type QuantizedWeight } from '../quant/qweight.js';
import { PeftError } from './config.js';

export function requantizeLike(qw: QuantizedWeight, w: Float32Array): QuantizedWeight {
  if (qw.format === 'nf4' || qw.format === 'fp4') {
    const b = qw.bnb4;
    return fromBnb4(quantize4bit(w, b.shape, { quantType: b.quantType, blocksize: b.blocksize, doubleQuant: b.nested !== null, dtype: 'float32' }), qw.computeDtype);
  }
  if (qw.format === 'int8') return fromInt8(quantizeInt8(w, qw.shape), qw.threshold, qw.computeDtype);
  throw new PeftError(`a LoRA adapter cannot be merged into ${qw.format.toUpperCase()} weights (PEFT cannot either): merge it into the float model, then quantize`);
}
