import { AnyTypedArray, DType, DTYPE_BYTES, allocArray, toF32Array } from './dtype.js';

export type Device = 'cpu' | 'cuda';

/** Opaque device memory (a native handle); CPU tensors hold a typed array instead. */
export interface DeviceStorage {
  readonly device: Device;
  readonly byteLength: number;
}

export class ShapeError extends Error { override name = 'ShapeError'; }

/** A host read of a device tensor (its data stays on the device until a backend downloads it). */
export class DeviceTensorError extends Error { override name = 'DeviceTensorError'; }

/**
 * A write into a read-only tensor: a checkpoint's weights are views of its memory-mapped file (mapped read-only, so
 * a write would kill the process with SIGSEGV) and are marked read-only whether mapped or read. Take `writable()`.
 */
export class ReadOnlyTensorError extends Error { override name = 'ReadOnlyTensorError'; }

export interface TensorFlags {
  /** The data must not be written (a checkpoint's weights): ops refuse it as an output, `writable()` copies it. */
  readOnly?: boolean;
  /** Where the data comes from, for error messages: "<file>: <tensor name>". */
  origin?: string;
}

/**
 * A dense row-major tensor. On the CPU, `data` is a typed array view (bf16/f16 as raw uint16 bits), often a
 * zero-copy view into a memory-mapped checkpoint. On a device, `storage` is a native handle and `data` is absent.
 */
export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  readonly device: Device;
  readonly storage?: DeviceStorage;
  readonly #data: AnyTypedArray | null;
  /** True for a checkpoint's weights (zero-copy views of the file); see ReadOnlyTensorError. */
  readonly readOnly: boolean;
  /** "<file>: <tensor name>" for a checkpoint's tensor, else undefined. */
  readonly origin?: string;

  constructor(dtype: D, shape: readonly number[], data: AnyTypedArray | null, device: Device = 'cpu', storage?: DeviceStorage, flags: TensorFlags = {}) {
    const n = numelOf(shape);
    if (device === 'cpu' && (!data || data.length !== n)) {
      throw new ShapeError(`tensor of shape [${shape}] needs ${n} elements, got ${data ? data.length : 'none'}`);
    }
    if (device !== 'cpu' && !storage) throw new TypeError(`a ${device} tensor needs device storage`);
    this.dtype = dtype;
    this.shape = shape;
    this.#data = device === 'cpu' ? data : null;
    this.device = device;
    this.storage = storage;
    this.readOnly = flags.readOnly ?? false;
    this.origin = flags.origin;
  }

  static zeros<D extends DType>(dtype: D, shape: readonly number[]): Tensor<D> {
    return new Tensor(dtype, shape, allocArray(dtype, numelOf(shape)));
  }

  static f32(shape: readonly number[], data?: ArrayLike<number>): Tensor<'F32'> {
    const arr = new Float32Array(numelOf(shape));
    if (data) arr.set(data);
    return new Tensor('F32', shape, arr);
  }

  /** The host array (CPU tensors only: reading a device tensor's data is a DeviceTensorError, never a silent copy). */
  get data(): AnyTypedArray {
    if (this.#data === null) {
      throw new DeviceTensorError(`tensor [${this.shape}] ${this.dtype}${this.origin ? ` (${this.origin})` : ''} lives on ${this.device}; ` +
        'read it through backend.download(tensor)');
    }
    return this.#data;
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
    return new Tensor(this.dtype, shape, this.#data, this.device, this.storage, { readOnly: this.readOnly, origin: this.origin });
  }

  /** A writable copy of the data (same dtype and shape), never sharing storage with this tensor. */
  clone(): Tensor<D> {
    if (this.device !== 'cpu') throw new TypeError(`clone: a ${this.device} tensor has no host data`);
    return new Tensor(this.dtype, this.shape, this.data.slice() as AnyTypedArray, 'cpu');
  }

  /**
   * This tensor when it may be written, else a writable copy (copy-on-write). An algorithm that changes a weight
   * (AWQ scaling, a LoRA merge: P6 and P7) is to take its weights through this, so the mapped checkpoint is never written.
   */
  writable(): Tensor<D> {
    return this.readOnly ? this.clone() : this;
  }

  /** Throws ReadOnlyTensorError, naming `what` and the tensor's origin, when this tensor is read-only. */
  assertWritable(what: string): void {
    if (this.readOnly) {
      throw new ReadOnlyTensorError(`${what}: ${this.origin ?? `a read-only tensor [${this.shape}]`} is read-only (a checkpoint's weights, ` +
        'possibly a memory-mapped file); write into a copy: tensor.writable()');
    }
  }

  /** A copy decoded to f32 (for tests and the reference path). */
  toF32(): Float32Array { return toF32Array(this.dtype, this.data); }
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
