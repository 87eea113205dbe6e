// Real checkpoints from ../shared/data: tinystories-656k against its float64 reference, eval-llama-16m (bf16) runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { cpuAvailable } from '../src/backend/cpu/index.js';
import { argmax, maxRelErr, NO_DATA, relErr, ROOT, sharedData } from './helpers.js';
import { generate } from '../src/generate/generate.js';

const data = sharedData();
const backends = cpuAvailable() ? (['ref', 'cpu'] as const) : (['ref'] as const);

for (const be of backends) {
  test(`tinystories-656k [${be}]: last logits and 48 greedy tokens match the reference`, { skip: data ? false : NO_DATA }, async () => {
    const ref = JSON.parse(readFileSync(join(data!, 'refs', 'tinystories656k_reference.json'), 'utf8'));
    const { model } = await fromPretrained(join(data!, 'models', 'tinystories-656k'), { backend: be });
    const prompt: number[] = ref.prompt_ids;
    const cache = model.createCache(1, prompt.length + 48);
    let logits = model.forward([prompt], { cache, logits: 'last' });
    const last = logits.f32;
    assert.ok(relErr(last, ref.logits_last) <= 1e-4, `rel err ${relErr(last, ref.logits_last)}`);
    assert.ok(maxRelErr(last, ref.logits_last) <= 1e-4, `max rel err ${maxRelErr(last, ref.logits_last)}`);
    const out: number[] = [];
    for (let i = 0; i < 48; i++) {
      out.push(argmax(logits.f32));
      if (i < 47) logits = model.forward([[out[i]]], { cache, logits: 'last' });
    }
    assert.deepEqual(out, ref.greedy_ids);
  });
}

for (const be of backends) {
  test(`eval-llama-16m (bf16) [${be}]: keeps 2 bytes per weight; logits and greedy tokens match transformers`, { skip: data ? false : NO_DATA }, async () => {
    // Golden: transformers with the bf16 weights upcast to fp32 (scripts/golden/make_tokenizer_goldens.py), which
    // is what lowbit computes: bf16 weights, fp32 arithmetic.
    const ref = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'eval_llama_16m.json'), 'utf8'));
    const { model, config, tokenizer } = await fromPretrained(join(data!, 'models', 'eval-llama-16m'), { backend: be });
    assert.equal(config.torch_dtype, 'bfloat16');
    for (const lin of model.linears().values()) assert.equal((lin as unknown as { weight: { dtype: string } }).weight.dtype, 'BF16');
    assert.deepEqual(tokenizer!.encode(ref.prompt), ref.prompt_ids);
    const r = await generate(model, [ref.prompt_ids], { maxNewTokens: 24, eosTokenId: [], padTokenId: 5 });
    assert.deepEqual(r.tokens[0], ref.greedy_ids);
    const last = model.forward([ref.prompt_ids], { logits: 'last' }).f32;
    assert.ok(relErr(last, ref.logits_last) <= 1e-4, `rel err ${relErr(last, ref.logits_last)}`);
  });
}
