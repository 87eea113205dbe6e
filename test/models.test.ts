// Model forwards against HF transformers' golden logits (scripts/golden/make_goldens.py), on every backend,
// plus the invariants: incremental decode = full forward, a left-padded row = the row alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromPretrained } from '../src/api.js';
import { cpuAvailable } from '../src/backend/cpu/index.js';
import type { BackendName } from '../src/backend/index.js';
import { argmax, goldenCases, relErr, maxRelErr } from './helpers.js';

const TOL = 1e-4;
const backends: BackendName[] = cpuAvailable() ? ['ref', 'cpu'] : ['ref'];
const cases = goldenCases();

test('golden fixtures are present', () => {
  assert.ok(cases.length >= 8, `expected ≥8 golden cases in test/fixtures/golden, found ${cases.length}`);
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

    test(`${g.name} [${be}]: incremental decode with the KV cache equals the full forward`, async () => {
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

    test(`${g.name} [${be}]: greedy tokens match transformers generate()`, async () => {
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

test('a sliding window lowbit does not implement is refused, not silently ignored', async () => {
  const { randomLlama } = await import('../src/models/random.js');
  const { buildModel } = await import('../src/models/registry.js');
  const { Weights } = await import('../src/models/model.js');
  const { refBackend } = await import('../src/backend/ref/index.js');
  const { config, tensors } = randomLlama({ model_type: 'mistral', hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, vocab_size: 32, sliding_window: 8 }, 'F32');
  const model = buildModel(config, new Weights(tensors, 'mistral-sw'), refBackend);
  assert.equal(model.forward([[1, 2, 3, 4, 5, 6, 7, 8]]).shape[1], 8);
  assert.throws(() => model.forward([[1, 2, 3, 4, 5, 6, 7, 8, 9]]), /9 positions exceed sliding_window 8/);
});
