// The KV cache grows in chunks (src/nn/kvcache.ts): a long allowance costs nothing until it is used, growth keeps what
// was cached, and a growing cache gives exactly the logits and tokens of one allocated in full.
import { hostMemory } from '../src/backend/host.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpuAvailable } from '../src/backend/cpu/index.js';
import { getBackend } from '../src/backend/index.js';
import { refBackend } from '../src/backend/ref/index.js';
import { generate } from '../src/generate/generate.js';
import type { LlamaConfig } from '../src/io/config.js';
import { CausalLM, Weights } from '../src/models/model.js';
import { randomLlama } from '../src/models/random.js';
import { buildModel } from '../src/models/registry.js';
import { CACHE_CHUNK, CacheFullError, KVCache } from '../src/nn/kvcache.js';
import { Tensor } from '../src/tensor/tensor.js';

const TINY = {
  model_type: 'llama', hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, vocab_size: 64, max_position_embeddings: 8192, rms_norm_eps: 1e-6, eos_token_id: 2,
};
const backends = cpuAvailable() ? (['ref', 'cpu'] as const) : (['ref'] as const);

function tinyModel(backend: 'ref' | 'cpu' = 'ref', extra: Record<string, unknown> = {}) {
  const { config, tensors } = randomLlama({ ...TINY, ...extra }, 'F32', 7);
  for (const t of tensors.values()) if (t.shape.length === 2) for (let i = 0; i < t.data.length; i++) (t.data as Float32Array)[i] *= 20;
  return buildModel(config, new Weights(tensors, 'tiny'), backend === 'ref' ? refBackend : getBackend('cpu'));
}

/** The model, with every cache it makes recorded and made by `make` (default: the model's own). */
function recordCaches(model: CausalLM, make?: (batch: number, capacity: number) => KVCache): KVCache[] {
  const made: KVCache[] = [];
  const own = model.createCache.bind(model);
  model.createCache = (b, c) => { const k = make ? make(b, c) : own(b, c); made.push(k); return k; };
  return made;
}

function cacheFor(model: CausalLM, batch: number, capacity: number, chunk: number): KVCache {
  const c = model.config as LlamaConfig;
  return new KVCache(c.num_hidden_layers, batch, capacity, c.num_key_value_heads, c.head_dim, hostMemory, chunk);
}

test('growth keeps every cached key, value and mask bit, in chunks, and never past the maximum', () => {
  const cache = new KVCache(1, 2, 600, 1, 2);
  assert.equal(cache.capacity, 0);
  assert.equal(cache.bytes, 0);
  let next = 0;
  const step = (T: number, mask: Uint8Array | null) => {
    cache.begin(T, mask, null);
    // [B·T, nKV·hd]: row b, token t holds (b, position) so the test can find it after growth.
    const k = Tensor.zeros('F32', [2 * T, 2]), v = Tensor.zeros('F32', [2 * T, 2]);
    for (let b = 0; b < 2; b++) for (let t = 0; t < T; t++) {
      k.f32.set([b, next + t], (b * T + t) * 2);
      v.f32.set([-b, -(next + t)], (b * T + t) * 2);
    }
    cache.write(0, k, v, T);
    cache.advance(T);
    next += T;
  };
  step(10, Uint8Array.from([0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
  assert.equal(cache.capacity, CACHE_CHUNK);
  assert.equal(cache.bytes, 2 * 1 * 2 * CACHE_CHUNK * 1 * 2 * 4);
  for (let i = 0; i < 246; i++) step(1, null);
  assert.equal(cache.capacity, 256);
  step(1, null); step(1, null);                        // 258 positions: doubles to 512
  assert.equal(cache.capacity, 512);
  step(200, null);
  assert.equal(cache.length, 458);                      // 200 more would pass 600: refused, nothing changed
  assert.throws(() => cache.begin(200, null, null), (e: Error) => e instanceof CacheFullError && /at most 600 positions; 458 used, 200 more/.test(e.message));
  assert.equal(cache.capacity, 512);
  step(100, null);
  assert.equal(cache.capacity, 600);                   // capped at the maximum, not 1024
  const { k, v } = cache.layer(0);
  assert.deepEqual(k.shape, [2, 600, 1, 2]);
  for (let b = 0; b < 2; b++) for (let s = 0; s < 558; s++) {
    assert.deepEqual(Array.from(k.f32.subarray((b * 600 + s) * 2, (b * 600 + s + 1) * 2)), [b, s]);
    assert.equal(v.f32[(b * 600 + s) * 2 + 1], -s);
  }
  assert.deepEqual(Array.from(cache.mask.subarray(0, 12)), [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  assert.deepEqual(Array.from(cache.seen), [8 + 548, 10 + 548]);
  assert.throws(() => cache.layer(1), /no layer 1/);
});

for (const be of backends) {
  test(`[${be}] a growing cache gives exactly the logits of one allocated in full`, () => {
    const model = tinyModel(be);
    const prompts = [[0, 0, 5, 9, 11], [8, 4, 30, 31, 32]];
    const mask = [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]];
    const run = (chunk: number) => {
      const cache = cacheFor(model, 2, 64, chunk);
      const out = [model.forward(prompts, { attentionMask: mask, cache, logits: 'last' }).f32];
      for (let t = 0; t < 30; t++) out.push(model.forward([[t + 3], [60 - t]], { cache, logits: 'last' }).f32);
      return { out, cache };
    };
    const full = run(64), grown = run(3);
    assert.equal(full.cache.capacity, 64);
    assert.equal(grown.cache.capacity, 48);           // 35 positions: 6 → 12 → 24 → 48, copied at each growth
    grown.out.forEach((o, i) => assert.deepEqual(o, full.out[i], `step ${i}`));
  });
}

test('generate with maxNewTokens 4096 that stops at eos after a few tokens holds one chunk, and equals a full allocation', async () => {
  const model = tinyModel();
  const prompts = [[5, 9, 11], [8, 4]];
  const free = await generate(model, prompts, { maxNewTokens: 6, eosTokenId: [], padTokenId: 0 });
  const eos = [free.tokens[0][3], free.tokens[1][3]];   // each row ends by its 4th token
  const cut = (row: number[]) => row.slice(0, row.findIndex((x) => eos.includes(x)) + 1);
  const grown = recordCaches(model);
  const a = await generate(model, prompts, { maxNewTokens: 4096, eosTokenId: eos, padTokenId: 0 });
  assert.equal(grown.length, 1);
  assert.equal(grown[0].maxCapacity, 3 + 4096);
  assert.equal(grown[0].capacity, CACHE_CHUNK, 'only the first chunk is allocated');
  assert.equal(grown[0].bytes, 2 * 2 * 2 * CACHE_CHUNK * 2 * 8 * 4);   // K and V × layers × rows × positions × nKV × hd × f32
  const full = recordCaches(model, (b, c) => cacheFor(model, b, c, c));
  const b = await generate(model, prompts, { maxNewTokens: 4096, eosTokenId: eos, padTokenId: 0 });
  assert.equal(full[0].capacity, 3 + 4096);
  assert.deepEqual(a.tokens, b.tokens);
  assert.deepEqual(a.tokens, free.tokens.map(cut));
  assert.deepEqual(a.finishReasons, ['eos', 'eos']);
});
