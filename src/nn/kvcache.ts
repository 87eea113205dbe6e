// A preallocated KV cache: one K and one V tensor per layer, [B, S, nKV, hd] (S = capacity), plus the padding mask
// of every position written so far. Keeping the mask here lets decode steps pass only the new tokens' mask.
import { Tensor } from '../tensor/tensor.js';

export class CacheFullError extends Error { override name = 'CacheFullError'; }

export class KVCache {
  readonly k: Tensor<'F32'>[] = [];
  readonly v: Tensor<'F32'>[] = [];
  /** [B, S]: 1 where the position holds a real token. */
  readonly mask: Uint8Array;
  /** Real tokens seen per row (for positions derived from the mask). */
  readonly seen: Int32Array;
  /** Positions filled (the same for every row: padding keeps rows aligned). */
  length = 0;
  /** `seen` after the step in progress; committed by advance(), so a forward that throws changes nothing. */
  private pendingSeen: Int32Array;

  constructor(readonly nLayers: number, readonly batch: number, readonly capacity: number, readonly nKV: number, readonly headDim: number) {
    const bytes = 2 * nLayers * batch * capacity * nKV * headDim * 4;
    try {
      for (let l = 0; l < nLayers; l++) {
        this.k.push(Tensor.zeros('F32', [batch, capacity, nKV, headDim]));
        this.v.push(Tensor.zeros('F32', [batch, capacity, nKV, headDim]));
      }
    } catch (e) {
      throw new CacheFullError(`cannot allocate a KV cache of ${(bytes / 1e9).toFixed(2)} GB (batch ${batch} × ${capacity} positions × ${nLayers} layers, f32): ${(e as Error).message}; use fewer new tokens or a smaller batch`);
    }
    this.pendingSeen = new Int32Array(batch);
    this.mask = new Uint8Array(batch * capacity);
    this.seen = new Int32Array(batch);
  }

  get bytes(): number { return 2 * this.nLayers * this.batch * this.capacity * this.nKV * this.headDim * 4; }

  /** Store T new tokens' keys and values ([B·T, nKV·hd] each) at positions length … length+T−1. */
  write(layer: number, k: Tensor<'F32'>, v: Tensor<'F32'>, T: number): void {
    const row = this.nKV * this.headDim;
    const K = this.k[layer].f32, V = this.v[layer].f32, ks = k.f32, vs = v.f32;
    for (let b = 0; b < this.batch; b++) {
      const src = b * T * row, dst = (b * this.capacity + this.length) * row;
      K.set(ks.subarray(src, src + T * row), dst);
      V.set(vs.subarray(src, src + T * row), dst);
    }
  }

  /** Record the new tokens' mask ([B, T]) and return their positions ([B·T]) and the key mask [B, length+T]. */
  begin(T: number, newMask: Uint8Array | null, explicitPositions: Int32Array | null, padPosition = 1): { positions: Int32Array; keyMask: Uint8Array | null } {
    if (this.length + T > this.capacity) {
      throw new CacheFullError(`KV cache holds ${this.capacity} positions; ${this.length} used, ${T} more requested`);
    }
    const B = this.batch, S = this.capacity, L = this.length;
    const positions = new Int32Array(B * T);
    let anyPad = false;
    this.pendingSeen.set(this.seen);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < T; t++) {
        const m = newMask ? newMask[b * T + t] : 1;
        this.mask[b * S + L + t] = m;            // slots past `length` are not live until advance()
        if (m) this.pendingSeen[b]++;
        // HF: position = cumsum(mask) − 1; padded slots get 1 (Llama's generate) or −1 (OPT).
        positions[b * T + t] = m ? this.pendingSeen[b] - 1 : padPosition;
      }
    }
    for (let b = 0; b < B && !anyPad; b++) for (let s = 0; s < L + T; s++) if (!this.mask[b * S + s]) { anyPad = true; break; }
    let keyMask: Uint8Array | null = null;
    if (anyPad) {
      keyMask = new Uint8Array(B * (L + T));
      for (let b = 0; b < B; b++) keyMask.set(this.mask.subarray(b * S, b * S + L + T), b * (L + T));
    }
    return { positions: explicitPositions ?? positions, keyMask };
  }

  /** Commit T positions after every layer has written them. */
  advance(T: number): void {
    this.length += T;
    this.seen.set(this.pendingSeen);
  }

  reset(): void {
    this.length = 0;
    this.mask.fill(0);
    this.seen.fill(0);
  }
}
