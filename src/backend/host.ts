// The memory half of the Backend interface for the host backends (ref, cpu): tensors are typed arrays, uploads and
// downloads are the tensor itself, and nothing is queued.
import type { Backend } from './backend.js';
import { ShapeError, Tensor } from '../tensor/tensor.js';

export const hostMemory: Pick<Backend, 'empty' | 'upload' | 'download' | 'copy' | 'synchronize'> = {
  empty: (dtype, shape) => Tensor.zeros(dtype, shape),
  upload(t) {
    if (t.device !== 'cpu') throw new TypeError(`upload: a ${t.device} tensor [${t.shape}] cannot move to the host backends; download it through its own backend`);
    return t;
  },
  download(t) {
    if (t.device !== 'cpu') throw new TypeError(`download: a ${t.device} tensor [${t.shape}] belongs to another backend`);
    return t;
  },
  copy(dst, dstOffset, src, srcOffset, n) {
    checkCopy(dst, dstOffset, src, srcOffset, n);
    dst.assertWritable('copy');
    (dst.data as Float32Array).set((src.data as Float32Array).subarray(srcOffset, srcOffset + n), dstOffset);
  },
  synchronize() {},
};

/** The bounds and dtype rule of Backend.copy, for every backend. */
export function checkCopy(dst: Tensor, dstOffset: number, src: Tensor, srcOffset: number, n: number): void {
  if (dst.dtype !== src.dtype) throw new TypeError(`copy: ${src.dtype} into ${dst.dtype}`);
  for (const [k, v] of Object.entries({ dstOffset, srcOffset, n })) if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`copy: ${k} must be a non-negative integer, got ${v}`);
  if (dstOffset + n > dst.numel || srcOffset + n > src.numel) {
    throw new ShapeError(`copy: ${n} elements from offset ${srcOffset} of [${src.shape}] to offset ${dstOffset} of [${dst.shape}] run past an end`);
  }
}
