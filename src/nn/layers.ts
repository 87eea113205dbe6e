// Layers hold weights under their HF names and call the backend's ops. Quantization and LoRA swap a `Linear`
// for another `LinearLike`; the model files never know which one they hold.
import type { Backend } from '../backend/backend.js';
import { Tensor } from '../tensor/tensor.js';

export interface LinearLike {
  /** The HF module path, e.g. model.layers.0.self_attn.q_proj. */
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** x [..., in] → [..., out]. */
  forward(x: Tensor<'F32'>): Tensor<'F32'>;
}

export class Linear implements LinearLike {
  readonly inFeatures: number;
  readonly outFeatures: number;
  constructor(
    readonly backend: Backend,
    readonly name: string,
    /** [out, in] in the checkpoint dtype. */
    readonly weight: Tensor,
    readonly bias: Tensor<'F32'> | null,
  ) {
    [this.outFeatures, this.inFeatures] = weight.shape;
  }
  forward(x: Tensor<'F32'>): Tensor<'F32'> {
    const rows = x.numel / this.inFeatures;
    const out = this.backend.empty('F32', [...x.shape.slice(0, -1), this.outFeatures]);
    if (!Number.isInteger(rows)) throw new Error(`${this.name}: input [${x.shape}] does not end in ${this.inFeatures}`);
    this.backend.matmul(x, this.weight, this.bias, out);
    return out;
  }
}

export class RMSNorm {
  constructor(readonly backend: Backend, readonly name: string, readonly weight: Tensor<'F32'>, readonly eps: number) {}
  forward(x: Tensor<'F32'>): Tensor<'F32'> {
    const out = this.backend.empty('F32', x.shape);
    this.backend.rmsnorm(x, this.weight, this.eps, out);
    return out;
  }
  /** x += residual (in place; none: x as it is), then forward(x): one op where the backend has addRmsnorm. */
  addForward(x: Tensor<'F32'>, residual: Tensor<'F32'> | null): Tensor<'F32'> {
    if (!residual) return this.forward(x);
    if (!this.backend.addRmsnorm) {
      this.backend.add(x, residual, x);
      return this.forward(x);
    }
    const out = this.backend.empty('F32', x.shape);
    this.backend.addRmsnorm(x, residual, this.weight, this.eps, out);
    return out;
  }
}

export class LayerNorm {
  constructor(readonly backend: Backend, readonly name: string, readonly weight: Tensor<'F32'>, readonly bias: Tensor<'F32'>, readonly eps: number) {}
  forward(x: Tensor<'F32'>): Tensor<'F32'> {
    const out = this.backend.empty('F32', x.shape);
    this.backend.layernorm(x, this.weight, this.bias, this.eps, out);
    return out;
  }
}

export class Embedding {
  constructor(readonly backend: Backend, readonly name: string, readonly weight: Tensor) {}
  get dim(): number { return this.weight.shape[1]; }
  forward(ids: Int32Array): Tensor<'F32'> {
    const out = this.backend.empty('F32', [ids.length, this.dim]);
    this.backend.embedding(this.weight, ids, out);
    return out;
  }
}
