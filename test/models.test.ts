// Model forwards against HF transformers' golden logits (scripts/golden/make_goldens.py), on every backend,
// plus the invariants: incremental decode = full forward, a left-padded row = the row alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromPretrained } from '../src/api.js';
import { cpuAvailable } from '../src/backend/cpu/index.js';
import type { BackendName } from '../src/backend/index.js';
import { argmax, goldenCases, GOLDEN_DIR, relErr, maxRelErr } from './helpers.js';
import { join } from 'node:path';

const TOL = 1e-4;
const backends: BackendName[] = cpuAvailable() ? ['ref', 'cpu'] : ['ref'];
const cases = goldenCases();
/**
 * Dynamic NTK RoPE rescales the frequencies from the longest position seen, so keys cached under shorter lengths keep
 * their old rotation: an incremental decode legitimately differs from one full forward. transformers also keeps that
 * length as state across calls (its batched and single greedy runs disagree in make_goldens.log), so only stateless
 * single forwards are compared for it.
 */
const stateful = (name: string) => name.includes('dynamic');

test('golden fixtures are present', () => {
  assert.ok(cases.length >= 11, `expected ≥11 golden cases in test/fixtures/golden, found ${cases.length}`);
});

for (const g of cases) {
  for (const be of backends) {
    test(`${g.name} [${be}]: logits match transformers`, async () => {
      const { model } = await fromPretrained(g.dir, { backend: be });
      const ids = g.ints('input_ids').rows;
      const want = g.floats('logits').data;
      const got = model.forward(ids).f32;
      assert.equal(got.length, want.length);
      assert.ok(relErr(got, want) <= TOL, `rel err ${relErr(got, want)}`);
      assert.ok(maxRelErr(got, want) <= 10 * TOL, `max rel err ${maxRelErr(got, want)}`);
    });

    test(`${g.name} [${be}]: left-padded batch matches transformers`, async () => {
      const { model } = await fromPretrained(g.dir, { backend: be });
      const ids = g.ints('pad_input_ids').rows;
      const mask = g.ints('pad_attention_mask').rows;
      const want = g.floats('pad_logits').data;
      const got = model.forward(ids, { attentionMask: mask }).f32;  // positions derived from the mask
      const V = want.length / (ids.length * ids[0].length);
      const idx: number[] = [];
      mask.forEach((row, b) => row.forEach((m, t) => { if (m) for (let v = 0; v < V; v++) idx.push((b * row.length + t) * V + v); }));
      assert.ok(relErr(got, want, idx) <= TOL, `rel err ${relErr(got, want, idx)}`);
    });

    test(`${g.name} [${be}]: incremental decode with the KV cache equals the full forward`, { skip: stateful(g.name) ? 'dynamic RoPE: see `stateful`' : false }, async () => {
      const { model } = await fromPretrained(g.dir, { backend: be });
      const ids = g.ints('input_ids').rows;
      const T = ids[0].length, V = model.config.vocab_size;
      const full = g.floats('logits').data;
      const cache = model.createCache(ids.length, T);
      const parts: Float32Array[] = [model.forward(ids.map((r) => r.slice(0, 5)), { cache }).f32];
      for (let t = 5; t < T; t++) parts.push(model.forward(ids.map((r) => [r[t]]), { cache }).f32);
      // Reassemble [B, T, V] from the prefill [B, 5, V] and the steps [B, 1, V].
      const got = new Float32Array(full.length);
      for (let b = 0; b < ids.length; b++) {
        got.set(parts[0].subarray(b * 5 * V, (b + 1) * 5 * V), b * T * V);
        for (let t = 5; t < T; t++) got.set(parts[t - 4].subarray(b * V, (b + 1) * V), (b * T + t) * V);
      }
      assert.ok(relErr(got, full) <= TOL, `rel err ${relErr(got, full)}`);
    });

    test(`${g.name} [${be}]: greedy tokens match transformers generate()`, { skip: stateful(g.name) ? 'dynamic RoPE: see `stateful`' : false }, async () => {
      const { model } = await fromPretrained(g.dir, { backend: be });
      const want = g.ints('gen_greedy').rows[0];
      const seq = want.slice(0, 8);
      const cache = model.createCache(1, want.length);
      let logits = model.forward([seq], { cache, logits: 'last' });
      while (seq.length < want.length) {
        seq.push(argmax(logits.f32));
        if (seq.length < want.length) logits = model.forward([[seq[seq.length - 1]]], { cache, logits: 'last' });
      }
      assert.deepEqual(seq, want);
    });
  }
}

test('sliding windows follow transformers: Mistral slides in every layer, Qwen2 from max_window_layers on', async () => {
  const { randomLlama } = await import('../src/models/random.js');
  const { buildModel } = await import('../src/models/registry.js');
  const { Weights } = await import('../src/models/model.js');
  const { refBackend } = await import('../src/backend/ref/index.js');
  const shape = { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 3, num_attention_heads: 2, num_key_value_heads: 1, vocab_size: 32 };
  const m = randomLlama({ ...shape, model_type: 'mistral', sliding_window: 4 }, 'F32').config;
  assert.deepEqual(m.layer_types, ['sliding_attention', 'sliding_attention', 'sliding_attention']);
  const q = randomLlama({ ...shape, model_type: 'qwen2', use_sliding_window: true, sliding_window: 4, max_window_layers: 1 }, 'F32').config;
  assert.deepEqual(q.layer_types, ['full_attention', 'sliding_attention', 'sliding_attention']);
  assert.equal(randomLlama({ ...shape, model_type: 'qwen2', sliding_window: 4 }, 'F32').config.sliding_window, null);
  // Within the window a windowed model equals the same weights without one; beyond it, they differ.
  const a = randomLlama({ ...shape, model_type: 'mistral', sliding_window: 4 }, 'F32', 3);
  const b = randomLlama({ ...shape, model_type: 'mistral' }, 'F32', 3);
  const ma = buildModel(a.config, new Weights(a.tensors, 'a'), refBackend), mb = buildModel(b.config, new Weights(b.tensors, 'b'), refBackend);
  const V = 32, ids = [[3, 1, 4, 1, 5, 9, 2, 6]];
  const la = ma.forward(ids).f32, lb = mb.forward(ids).f32;
  assert.deepEqual(la.subarray(0, 4 * V), lb.subarray(0, 4 * V));
  assert.notDeepEqual(la.subarray(4 * V), lb.subarray(4 * V));
});

test('bad input: non-integer ids and out-of-range positions fail clearly; a failed forward leaves the cache as it was', async () => {
  const { model } = await fromPretrained(join(GOLDEN_DIR, 'llama_gqa'), { backend: 'ref' });
  assert.throws(() => model.forward([[2, 3.7]]), /row 0, position 1 is 3\.7/);
  const cache = model.createCache(1, 8);
  assert.throws(() => model.forward([[2, 999]], { cache }), /token id 999/);
  assert.equal(cache.length, 0);
  const after = model.forward([[2, 5]], { cache, logits: 'last' }).f32;
  const fresh = model.forward([[2, 5]], { logits: 'last' }).f32;
  assert.deepEqual(after, fresh);
  const opt = (await fromPretrained(join(GOLDEN_DIR, 'opt_125m_like'), { backend: 'ref' })).model;
  assert.throws(() => opt.forward([new Array(65).fill(5)]), /position 64 is past the 64 learned positions/);
  const { parseConfig } = await import('../src/io/config.js');
  const c = parseConfig({ model_type: 'llama', hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 8, pad_token_id: -1 });
  assert.equal(c.pad_token_id, -1);
  assert.equal((parseConfig({ model_type: 'mistral', hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 8 }) as { sliding_window: number }).sliding_window, 4096);
});

test('RoPE frequencies are computed once per model, not per forward; dynamic scaling recomputes only past the trained length', async () => {
  const { randomLlama } = await import('../src/models/random.js');
  const { buildModel } = await import('../src/models/registry.js');
  const { Weights } = await import('../src/models/model.js');
  const { refBackend } = await import('../src/backend/ref/index.js');
  const { ropeInvFreq } = await import('../src/nn/rope.js');
  const seen: Float32Array[] = [];
  const spy = { ...refBackend, rope(x: Parameters<typeof refBackend.rope>[0], p: Int32Array, inv: Float32Array) { seen.push(inv); refBackend.rope(x, p, inv); } };
  const shape = { model_type: 'llama', hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, vocab_size: 32, max_position_embeddings: 8 };
  const decode = (extra: object) => {
    const { config, tensors } = randomLlama({ ...shape, ...extra }, 'F32');
    const model = buildModel(config, new Weights(tensors, 'rope'), spy);
    seen.length = 0;
    const cache = model.createCache(1, 12);
    model.forward([[1, 2, 3, 4, 5, 6]], { cache });
    for (let t = 0; t < 5; t++) model.forward([[7]], { cache });   // positions 6 … 10
    return { config, calls: seen.filter((_, i) => i % 2 === 0) };  // q and k share one array per forward
  };
  const plain = decode({});
  assert.equal(plain.calls.length, 6);
  assert.equal(new Set(plain.calls).size, 1);
  const dyn = decode({ rope_scaling: { rope_type: 'dynamic', factor: 2 } });
  // Lengths 6, 7, 8 are within the trained 8 (one array); 9, 10, 11 each rescale.
  assert.equal(new Set(dyn.calls).size, 4);
  assert.equal(dyn.calls[0], dyn.calls[2]);
  dyn.calls.forEach((inv, i) => assert.deepEqual(inv, ropeInvFreq(dyn.config as never, 5 + i)));
});

test('linears() and replaceLinear() swap layers in Llama and OPT alike (one shared implementation)', async () => {
  const { Tensor } = await import('../src/tensor/tensor.js');
  for (const name of ['llama_gqa', 'opt_125m_like']) {
    const { model } = await fromPretrained(join(GOLDEN_DIR, name), { backend: 'ref' });
    const lin = model.linears();
    const L = model.config.num_hidden_layers;
    assert.equal(lin.size, (name === 'llama_gqa' ? 7 : 6) * L + 1, name);
    const q = [...lin.keys()].find((k) => k.endsWith('layers.0.self_attn.q_proj'))!;
    let calls = 0;
    const orig = lin.get(q)!;
    model.replaceLinear(q, { name: q, inFeatures: orig.inFeatures, outFeatures: orig.outFeatures, forward: (x) => { calls++; return orig.forward(x); } });
    const head = lin.get('lm_head')!;
    model.replaceLinear('lm_head', { name: 'lm_head', inFeatures: head.inFeatures, outFeatures: head.outFeatures, forward: (x) => Tensor.zeros('F32', [x.shape[0], head.outFeatures]) });
    const out = model.forward([[2, 5, 7]]).f32;
    assert.equal(calls, 1);
    assert.ok(out.every((v) => v === 0));
    assert.notEqual(model.linears().get(q), orig);
    assert.throws(() => model.replaceLinear('model.layers.99.mlp.nope', orig), /no linear layer named "model\.layers\.99\.mlp\.nope"/);
  }
});
