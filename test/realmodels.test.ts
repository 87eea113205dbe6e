// Real checkpoints from ../shared/data: tinystories-656k against its float64 reference, eval-llama-16m (bf16) runs,
// and tinystories' 512 positions as a real limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { cpuAvailable } from '../src/backend/cpu/index.js';
import { argmax, maxRelErr, NO_DATA, relErr, ROOT, sharedData } from './helpers.js';
import { generate } from '../src/generate/generate.js';
import { GenerationConfigError } from '../src/generate/config.js';
import { setWarningHandler } from '../src/util/warn.js';

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

test('tinystories-656k: a story ends at eos; a 1,200-token prompt is refused, or left-truncated on request; no unused-tensor warnings', { skip: data ? false : NO_DATA }, async () => {
  const warnings: string[] = [];
  const prev = setWarningHandler((m) => warnings.push(m), { reset: true });
  let m;
  try {
    m = await fromPretrained(join(data!, 'models', 'tinystories-656k'));
    await fromPretrained(join(data!, 'models', 'eval-llama-16m'));
  } finally { setWarningHandler(prev); }
  assert.deepEqual(warnings, []);
  const story = await generate(m, 'Once upon a time', { maxNewTokens: 400 });
  assert.deepEqual(story.finishReasons, ['eos']);
  assert.equal(story.tokens[0].at(-1), m.config.eos_token_id);
  assert.ok(story.tokens[0].length < 400);
  assert.equal(m.model.maxPositions, 512);
  const long = 'The little dog ran to the park and played with a red ball. '.repeat(135);
  const n = m.tokenizer!.encode(long).length;
  assert.ok(n > 1100, `${n} tokens`);
  await assert.rejects(generate(m, long, { maxNewTokens: 8 }), (e: Error) => e instanceof GenerationConfigError &&
    e.message.includes(`prompt 0 has ${n} tokens; with maxNewTokens 8 that is ${n + 8} positions, but the model takes at most 512`));
  const cut = await generate(m, long, { maxNewTokens: 8, truncation: 'left' });
  assert.deepEqual(cut.truncated, [n - 504]);
  assert.equal(cut.sequences[0].length, 504 + cut.tokens[0].length);
});
