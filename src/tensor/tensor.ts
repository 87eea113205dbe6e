import { AnyTypedArray, DType, DTYPE_BYTES, allocArray, toF32Array } from './dtype.js';

export type Device = 'cpu' | 'cuda';

/** Opaque device memory (a native handle); CPU tensors hold a typed array instead. */
export interface DeviceStorage {
  readonly device: Device;
  readonly byteLength: number;
}

export class ShapeError extends Error { override name = 'ShapeError'; }

/**
 * A dense row-major tensor. On the CPU, `data` is a typed array view (bf16/f16 as raw uint16 bits), often a
 * zero-copy view into a memory-mapped checkpoint. On a device, `storage` is a native handle and `data` is absent.
 */
export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly device: Device;
  readonly data: AnyTypedArray;
  readonly storage?: DeviceStorage;

  constructor(dtype: D, shape: readonly number[], data: AnyTypedArray, device: Device = 'cpu', storage?: DeviceStorage) {
    const n = numelOf(shape);
    if (device === 'cpu' && data.length !== n) {
      throw new ShapeError(`tensor of shape [${shape}] needs ${n} elements, got ${data.length}`);
    }
    this.dtype = dtype;
    this.shape = shape;
    this.data = data;
    this.device = device;
    this.storage = storage;
  }

  static zeros<D extends DType>(dtype: D, shape: readonly number[]): Tensor<D> {
    return new Tensor(dtype, shape, allocArray(dtype, numelOf(shape)));
  }

  static f32(shape: readonly number[], data?: ArrayLike<number>): Tensor<'F32'> {
    const arr = new Float32Array(numelOf(shape));
    if (data) arr.set(data);
    return new Tensor('F32', shape, arr);
  }

  get numel(): number { return numelOf(this.shape); }
  get byteLength(): number { return this.numel * DTYPE_BYTES[this.dtype]; }
  get f32(): Float32Array {
    if (this.dtype !== 'F32') throw new TypeError(`expected an F32 tensor, got ${this.dtype}`);
    return this.data as Float32Array;
  }

  /** Same storage, new shape. */
  reshape(shape: readonly number[]): Tensor<D> {
    if (numelOf(shape) !== this.numel) throw new ShapeError(`cannot reshape [${this.shape}] to [${shape}]`);
    return new Tensor(this.dtype, shape, this.data, this.device, this.storage);
  }

  /** A copy decoded to f32 (for tests and the reference path). */
  toF32(): Float32Array { return toF32Array(this.dtype, this.data); }
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
