// Decode steps as CUDA graph replays: the launch overhead of a few hundred small kernels per token, which dominates
// batch-1 decode when every op is a JavaScript call, goes away. The model code does not change: one step's forward
// runs once under stream capture (src/backend/cuda/index.ts CaptureState: outputs from an arena in a fixed order,
// the token ids and positions read from device slots, the cache length read on the device by the KV append and the
// attention), and later steps only fill the slots and replay. The host side of the KV cache (its length, the rows'
// positions) advances as an eager step would.
//
// Used when every row's cache is unpadded (no key mask) and the model's step reads no other per-step host array;
// otherwise (OPT's learned positions are one) the capture fails, the graph is dropped and steps stay eager. A grown
// cache (new tensors) or a new batch means a new capture.
import type { CausalLM } from '../../models/model.js';
import type { KVCache } from '../../nn/kvcache.js';
import { cudaStatus, type CudaAlloc } from '../../native/cuda-addon.js';
import type { Tensor } from '../../tensor/tensor.js';
import { ArenaFullError, allocatedBytes, cudaBackend as cuda, setCapture, type CaptureState } from './index.js';

export class CudaDecodeGraph {
  private graph: object | null = null;
  /** The captured step's arena and slots: the graph reads them, so they live as long as it. */
  private state: CaptureState | null = null;
  private logits: Tensor<'F32'> | null = null;
  private slots: CudaAlloc | null = null;
  private capacity = -1;
  private stepBytes = 0;
  private eagerSteps = 0;
  /** Why replays are off for this model, once a capture failed. */
  unsupported: string | null = null;
  /** Replays run so far (tests, benches). */
  replays = 0;

  constructor(readonly model: CausalLM, readonly cache: KVCache) {
    if (model.backend !== cuda) throw new TypeError('CudaDecodeGraph: the model must run on the cuda backend');
    const rs = (model.config as { rope_scaling?: { rope_type: string } | null }).rope_scaling;
    if (rs?.rope_type === 'dynamic') this.unsupported = 'dynamic RoPE: the frequencies follow the length, so a captured step would keep stale ones';
  }

  /** One decode step of one new token per row: logits [B, 1, V] on the device, valid until the next step. */
  step(ids: ArrayLike<number>): Tensor<'F32'> {
    const B = this.cache.batch;
    if (ids.length !== B) throw new RangeError(`CudaDecodeGraph.step: ${ids.length} ids for a batch of ${B}`);
    const V = this.model.config.vocab_size;
    for (let b = 0; b < B; b++) {
      const id = ids[b];
      if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new RangeError(`CudaDecodeGraph.step: token id ${id} (row ${b}) is outside the vocabulary [0, ${V})`);
    }
    const rows = Array.from(ids, (id) => [id]);
    if (this.unsupported || this.padded()) return this.model.forward(rows, { cache: this.cache, logits: 'last' });
    this.cache.reserve(this.cache.length + 1);
    if (this.graph && this.capacity !== this.cache.capacity) this.graph = null;  // the cache grew: new tensors
    if (!this.graph && this.eagerSteps < 1) {
      // One eager step first: kernels load, constants (RoPE frequencies) go up, cuBLAS and scratch settle, and the
      // bytes a step allocates are counted for the arena.
      const before = allocatedBytes();
      const out = this.model.forward(rows, { cache: this.cache, logits: 'last' });
      this.stepBytes = allocatedBytes() - before;
      this.eagerSteps++;
      return out;
    }
    const positions = Int32Array.from(this.cache.seen);  // unpadded rows: position = tokens seen so far
    const idArr = Int32Array.from(ids);
    const pastLen = this.cache.length;
    if (!this.graph) {
      const captured = this.capture(idArr, positions);
      if (!captured) return this.model.forward(rows, { cache: this.cache, logits: 'last' });
    } else {
      this.cache.begin(1, null, positions);
      this.cache.advance(1);
    }
    this.fill(idArr, positions, pastLen);
    cudaStatus().addon!.launchGraph(this.graph!);
    this.replays++;
    return this.logits!;
  }

  private padded(): boolean {
    const { mask, capacity, length, batch } = this.cache;
    for (let b = 0; b < batch; b++) for (let s = 0; s < length; s++) if (!mask[b * capacity + s]) return true;
    return false;
  }

  private fill(ids: Int32Array, positions: Int32Array, pastLen: number): void {
    const a = cudaStatus().addon!, base = this.slots!.ptr, B = ids.length;
    a.upload(base, ids);
    a.upload(base + 4 * B, positions);
    a.upload(base + 8 * B, BigInt64Array.of(BigInt(pastLen)));
  }

  private capture(ids: Int32Array, positions: Int32Array): boolean {
    const a = cudaStatus().addon!, B = ids.length;
    this.slots ??= a.alloc(8 * B + 8, true);
    const base = this.slots.ptr;
    let arenaBytes = Math.ceil((this.stepBytes * 1.25 + (1 << 20)) / 256) * 256;
    // The cache's host state before the step: a failed capture leaves it as it was.
    const length = this.cache.length, seen = Int32Array.from(this.cache.seen);
    for (let attempt = 0; attempt < 3; attempt++) {
      const arena = a.alloc(arenaBytes, false);
      const state: CaptureState = { arena, arenaBytes, offset: 0, slots: new Map<ArrayBufferView, number>([[ids, base], [positions, base + 4 * B]]), pastLen: base + 8 * B };
      cuda.synchronize();
      a.beginCapture();
      setCapture(state);
      let logits: Tensor<'F32'>;
      try {
        logits = this.model.forward({ ids, batch: B }, { cache: this.cache, logits: 'last', positions });
      } catch (e) {
        setCapture(null);
        a.endCapture(true);
        this.cache.length = length;
        this.cache.seen.set(seen);
        if (e instanceof ArenaFullError && /is full/.test(e.message)) { arenaBytes *= 2; continue; }
        this.unsupported = (e as Error).message;
        return false;
      }
      setCapture(null);
      this.graph = a.endCapture()!;
      this.state = state;
      this.logits = logits;
      this.capacity = this.cache.capacity;
      return true;
    }
    this.unsupported = 'the capture arena kept overflowing';
    return false;
  }
}
