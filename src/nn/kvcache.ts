// A KV cache that grows in chunks: one K and one V tensor per layer, [B, S, nKV, hd] with S the positions allocated
// so far, plus the padding mask of every position written. Keeping the mask here lets decode steps pass only the
// new tokens' mask.
//
// Growth: nothing is allocated until the first forward; then S = the positions needed rounded up to CACHE_CHUNK,
// doubled (in whole chunks) whenever a step needs more, never past `maxCapacity`. A generation that may run to 4,096
// tokens but stops at eos after ten therefore holds one chunk, not 4,096 slots per row; doubling keeps the copying
// on growth to at most the final size in total. The attention kernels take S from the tensors' shape
// (AttentionArgs in src/backend/backend.ts), so models fetch the tensors through `layer(l)` after `begin()` and never
// see the layout change under them.
import type { Backend } from '../backend/backend.js';
import { hostMemory } from '../backend/host.js';
import type { Tensor } from '../tensor/tensor.js';

/** The memory half of a backend: where the cache's tensors live (the model's backend; host memory by default). */
export type CacheMemory = Pick<Backend, 'empty' | 'copy'> & {
  /** Where a backend has it: the append as one op (the cuda backend's reads the length on the device in a graph). */
  cacheWrite?(dst: Tensor<'F32'>, src: Tensor<'F32'>, B: number, T: number, capacity: number, length: number): void;
  /** Where a backend has it: RoPE of q and k in place and the append of k and v, as one op (see appendRoped). */
  ropeAppend?(q: Tensor<'F32'>, k: Tensor<'F32'>, v: Tensor<'F32'>, positions: Int32Array, invFreq: Float32Array,
    kCache: Tensor<'F32'>, vCache: Tensor<'F32'>, B: number, T: number, capacity: number, length: number): void;
};

export class CacheFullError extends Error { override name = 'CacheFullError'; }

/** Positions per growth chunk: small enough that a short generation stays small, large enough that growth is rare. */
export const CACHE_CHUNK = 256;

export class KVCache {
  private k: Tensor<'F32'>[] = [];
  private v: Tensor<'F32'>[] = [];
  /** [B, capacity]: 1 where the position holds a real token. */
  private maskBuf = new Uint8Array(0);
  /** Positions allocated now (grows up to maxCapacity). */
  capacity = 0;
  /** Real tokens seen per row (for positions derived from the mask). */
  readonly seen: Int32Array;
  /** Positions filled (the same for every row: padding keeps rows aligned). */
  length = 0;
  /** `seen` after the step in progress; committed by advance(), so a forward that throws changes nothing. */
  private pendingSeen: Int32Array;

  constructor(
    readonly nLayers: number,
    readonly batch: number,
    /** The most positions this cache may ever hold (prompt + new tokens). */
    readonly maxCapacity: number,
    readonly nKV: number,
    readonly headDim: number,
    readonly memory: CacheMemory = hostMemory,
    readonly chunk = CACHE_CHUNK,
  ) {
    for (const [name, v] of Object.entries({ nLayers, batch, maxCapacity, nKV, headDim, chunk })) {
      if (!Number.isSafeInteger(v) || v < (name === 'nLayers' || name === 'maxCapacity' ? 0 : 1)) {
        throw new RangeError(`KVCache: ${name} must be a ${name === 'nLayers' || name === 'maxCapacity' ? 'non-negative' : 'positive'} integer, got ${v}`);
      }
    }
    this.pendingSeen = new Int32Array(batch);
    this.seen = new Int32Array(batch);
  }

  /** Bytes allocated now (K and V, f32). */
  get bytes(): number { return 2 * this.nLayers * this.batch * this.capacity * this.nKV * this.headDim * 4; }

  /** [B, capacity] padding mask of the positions written so far (slots past `length` are not live). */
  get mask(): Uint8Array { return this.maskBuf; }

  /** Layer l's keys and values, [B, capacity, nKV, hd] each; valid until the next `begin()` (which may grow them). */
  layer(l: number): { k: Tensor<'F32'>; v: Tensor<'F32'> } {
    if (!(l >= 0 && l < this.k.length)) throw new RangeError(`KVCache: no layer ${l} (${this.nLayers} layers, ${this.capacity} positions allocated)`);
    return { k: this.k[l], v: this.v[l] };
  }

  /** Make room for `positions` positions in total, copying what is cached into larger tensors. */
  reserve(positions: number): void {
    if (positions <= this.capacity) return;
    if (positions > this.maxCapacity) {
      throw new CacheFullError(`KV cache holds at most ${this.maxCapacity} positions; ${this.length} used, ${positions - this.length} more requested`);
    }
    const roundUp = (n: number) => Math.ceil(n / this.chunk) * this.chunk;
    const next = Math.min(this.maxCapacity, Math.max(roundUp(positions), roundUp(2 * this.capacity)));
    const { batch: B, length: L } = this;
    const row = this.nKV * this.headDim;
    const k: Tensor<'F32'>[] = [], v: Tensor<'F32'>[] = [];
    try {
      for (let l = 0; l < this.nLayers; l++) {
        k.push(this.memory.empty('F32', [B, next, this.nKV, this.headDim]));
        v.push(this.memory.empty('F32', [B, next, this.nKV, this.headDim]));
      }
    } catch (e) {
      const gb = (2 * this.nLayers * B * next * row * 4) / 1e9;
      throw new CacheFullError(`cannot allocate a KV cache of ${gb.toFixed(2)} GB (batch ${B} × ${next} positions × ${this.nLayers} layers, f32): ${(e as Error).message}; use fewer new tokens or a smaller batch`);
    }
    // Only the live positions [0, length) of each row move; slots past `length` are never read before written.
    for (let l = 0; l < this.k.length; l++) {
      for (let b = 0; b < B && L > 0; b++) {
        const src = b * this.capacity * row, dst = b * next * row;
        this.memory.copy(k[l], dst, this.k[l], src, L * row);
        this.memory.copy(v[l], dst, this.v[l], src, L * row);
      }
    }
    const mask = new Uint8Array(B * next);
    for (let b = 0; b < B; b++) mask.set(this.maskBuf.subarray(b * this.capacity, b * this.capacity + L), b * next);
    this.k = k; this.v = v; this.maskBuf = mask; this.capacity = next;
  }

  /** Store T new tokens' keys and values ([B·T, nKV·hd] each) at positions length … length+T−1. */
  write(layer: number, k: Tensor<'F32'>, v: Tensor<'F32'>, T: number): void {
    if (this.length + T > this.capacity) throw new CacheFullError(`KVCache.write: ${this.length + T} positions but ${this.capacity} allocated; call begin() first`);
    if (this.memory.cacheWrite) {
      this.memory.cacheWrite(this.k[layer], k, this.batch, T, this.capacity, this.length);
      this.memory.cacheWrite(this.v[layer], v, this.batch, T, this.capacity, this.length);
      return;
    }
    const row = this.nKV * this.headDim;
    for (let b = 0; b < this.batch; b++) {
      const src = b * T * row, dst = (b * this.capacity + this.length) * row;
      this.memory.copy(this.k[layer], dst, k, src, T * row);
      this.memory.copy(this.v[layer], dst, v, src, T * row);
    }
  }

  /**
   * RoPE of q [B·T, nH, hd] and k [B·T, nKV, hd] in place, then write(layer, k, v, T): one op on a backend that has
   * ropeAppend (callers check `memory.ropeAppend` first), the same values as rope, rope, write.
   */
  appendRoped(layer: number, q: Tensor<'F32'>, k: Tensor<'F32'>, v: Tensor<'F32'>, T: number, positions: Int32Array, invFreq: Float32Array): void {
    if (!this.memory.ropeAppend) throw new TypeError('KVCache.appendRoped: this backend has no ropeAppend');
    if (this.length + T > this.capacity) throw new CacheFullError(`KVCache.appendRoped: ${this.length + T} positions but ${this.capacity} allocated; call begin() first`);
    this.memory.ropeAppend(q, k, v, positions, invFreq, this.k[layer], this.v[layer], this.batch, T, this.capacity, this.length);
  }

  /**
   * Make room for T new tokens, record their mask ([B, T]) and return their positions ([B·T]) and the key mask
   * [B, length+T] (null when nothing is padded).
   */
  begin(T: number, newMask: Uint8Array | null, explicitPositions: Int32Array | null, padPosition = 1): { positions: Int32Array; keyMask: Uint8Array | null } {
    this.reserve(this.length + T);
    const B = this.batch, S = this.capacity, L = this.length, m0 = this.maskBuf;
    const positions = new Int32Array(B * T);
    let anyPad = false;
    this.pendingSeen.set(this.seen);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        const m = newMask ? newMask[b * T + t] : 1;
        m0[b * S + L + t] = m;                    // slots past `length` are not live until advance()
        if (m) this.pendingSeen[b]++;
        // HF: position = cumsum(mask) − 1; padded slots get 1 (Llama's generate) or −1 (OPT).
        positions[b * T + t] = m ? this.pendingSeen[b] - 1 : padPosition;
      }
    }
    for (let b = 0; b < B && !anyPad; b++) for (let s = 0; s < L + T; s++) if (!m0[b * S + s]) { anyPad = true; break; }
    let keyMask: Uint8Array | null = null;
    if (anyPad) {
      keyMask = new Uint8Array(B * (L + T));
      for (let b = 0; b < B; b++) keyMask.set(m0.subarray(b * S, b * S + L + T), b * (L + T));
    }
    return { positions: explicitPositions ?? positions, keyMask };
  }

  /** Commit T positions after every layer has written them. */
  advance(T: number): void {
    this.length += T;
    this.seen.set(this.pendingSeen);
  }

  /** Forget the cached positions; the allocation is kept for reuse. */
  reset(): void {
    this.length = 0;
    this.maskBuf.fill(0);
    this.seen.fill(0);
  }
}
