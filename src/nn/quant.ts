// Linear layers over quantized weights, named as bitsandbytes names them (GPTQ's after AutoGPTQ's QuantLinear, AWQ's
// after AutoAWQ's WQLinear). They are LinearLikes: a model holds them
// where it would hold a Linear and never knows the difference. Forward goes through the matmulQ dispatcher, so a
// backend without a kernel for the format falls back to ref with a warning instead of failing.
import type { Backend } from '../backend/backend.js';
import { matmulQ } from '../backend/dispatch.js';
import type { AwqQuantizedWeight, Bnb4QuantizedWeight, GptqQuantizedWeight, Int8QuantizedWeight, QuantizedWeight } from '../quant/qweight.js';
import { ShapeError, Tensor } from '../tensor/tensor.js';
import { Linear, type LinearLike } from './layers.js';

/** What every quantized linear layer shares: a quantized weight [out, in], a float32 bias, matmulQ through dispatch. */
export abstract class QuantLinear<W extends QuantizedWeight = QuantizedWeight> implements LinearLike {
  readonly inFeatures: number;
  readonly outFeatures: number;
  constructor(readonly backend: Backend, readonly name: string, readonly qweight: W, readonly bias: Tensor<'F32'> | null) {
    [this.outFeatures, this.inFeatures] = qweight.shape;
    if (bias && bias.numel !== this.outFeatures) throw new ShapeError(`${name}.bias: ${bias.numel} values for ${this.outFeatures} outputs`);
  }
  forward(x: Tensor<'F32'>): Tensor<'F32'> {
    if (x.numel % this.inFeatures !== 0) throw new ShapeError(`${this.name}: input [${x.shape}] does not end in ${this.inFeatures}`);
    const out = this.backend.empty('F32', [...x.shape.slice(0, -1), this.outFeatures]);
    matmulQ(this.backend, x, this.qweight, this.bias, out);
    return out;
  }
}

/** bitsandbytes' Linear4bit: NF4 or FP4 blocks, optionally with double-quantized scales. */
export class Linear4bit extends QuantLinear<Bnb4QuantizedWeight> {}

/** bitsandbytes' Linear8bitLt: LLM.int8 rows with the outlier threshold the weight carries. */
export class Linear8bitLt extends QuantLinear<Int8QuantizedWeight> {}

/** A GPTQ layer (AutoGPTQ's QuantLinear): packed qweight / qzeros / scales / g_idx at 2, 3, 4 or 8 bits. */
export class GptqLinear extends QuantLinear<GptqQuantizedWeight> {}

/** An AWQ layer (AutoAWQ's WQLinear_GEMM / WQLinear_GEMV): 4-bit qweight / qzeros / scales in either layout. */
export class AwqLinear extends QuantLinear<AwqQuantizedWeight> {}

/** The layer class for a quantized weight's format. */
export function quantLinear(backend: Backend, name: string, qw: QuantizedWeight, bias: Tensor<'F32'> | null): Linear4bit | Linear8bitLt | GptqLinear | AwqLinear {
  if (qw.format === 'gptq') return new GptqLinear(backend, name, qw, bias);
  if (qw.format === 'awq') return new AwqLinear(backend, name, qw, bias);
  return qw.format === 'int8' ? new Linear8bitLt(backend, name, qw, bias) : new Linear4bit(backend, name, qw, bias);
}

/**
 * silu(gate(x))·up(x) for a gated MLP on backend `be`: one call where `be` fuses it (matmulSiluMul: both layers float
 * Linears, or both GPTQ/AWQ layers, on `be`), else the two products (forwardShared) and siluMul. The caller owns the
 * result (release it when done).
 */
export function forwardGateUp(be: Backend, gate: LinearLike, up: LinearLike, x: Tensor<'F32'>): Tensor<'F32'> {
  const parts = (l: LinearLike) => (l instanceof Linear ? { w: l.weight as Tensor | QuantizedWeight, l } : l instanceof GptqLinear || l instanceof AwqLinear ? { w: l.qweight, l } : null);
  const g = parts(gate), u = parts(up);
  if (be.matmulSiluMul && g && u && g.l.backend === be && u.l.backend === be && gate.outFeatures === up.outFeatures) {
    const out = be.empty('F32', [...x.shape.slice(0, -1), gate.outFeatures]);
    if (be.matmulSiluMul(x, g.w, u.w, g.l.bias, u.l.bias, out)) return out;
    be.release?.(out);
  }
  const [gy, uy] = forwardShared([gate, up], x);
  be.siluMul(gy, uy, gy);
  be.release?.(uy);
  return gy;
}

/**
 * The linears that read the same x (q/k/v, gate/up), as one backend call when the backend can join them (matmulMany
 * for float Linears; matmulQMany for quantized ones: GPTQ/AWQ on cpu and cuda, NF4/FP4 on cuda); otherwise each layer's own
 * forward. The results are the same either way.
 */
export function forwardShared(lins: LinearLike[], x: Tensor<'F32'>): Tensor<'F32'>[] {
  const first = lins[0];
  if (lins.length > 1 && lins.length <= 3 && lins.every((l) => l instanceof Linear)) {
    const fl = lins as Linear[], be = fl[0].backend;
    if (be.matmulMany && fl.every((l) => l.backend === be && l.inFeatures === first.inFeatures)) {
      const lead = x.shape.slice(0, -1);
      const outs = fl.map((l) => be.empty('F32', [...lead, l.outFeatures]));
      if (be.matmulMany(x, fl.map((l) => l.weight), fl.map((l) => l.bias), outs)) return outs;
      be.release?.(...outs);
    }
  }
  if (lins.length > 1 && lins.every((l) => l instanceof QuantLinear)) {
    const ql = lins as QuantLinear[];
    const be = ql[0].backend;
    if (be.matmulQMany && ql.every((l) => l.backend === be && l.inFeatures === first.inFeatures) && be.supports('matmulQMany', ql.map((l) => l.qweight.format))) {
      const lead = x.shape.slice(0, -1);
      const outs = ql.map((l) => be.empty('F32', [...lead, l.outFeatures]));
      if (be.matmulQMany(x, ql.map((l) => l.qweight), ql.map((l) => l.bias), outs)) return outs;
      be.release?.(...outs);
    }
  }
  return lins.map((l) => l.forward(x));
}
