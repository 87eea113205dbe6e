// generation_config.json and call options: every value is type- and range-checked with the file (or 'generate
// options') and key named; snake_case call options are mapped or, in strict mode, unknown keys refused with the
// nearest known key suggested; one sampling rule for the CLI and the library, with warnings for knobs that do
// nothing; an unseeded resolution gets a fresh random seed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freshSeed, GenerationConfigError, normalizeGenerationConfig, readGenerationConfig, resolveGeneration, type GenerationConfig } from '../src/generate/config.js';
import { setWarningHandler } from '../src/util/warn.js';
import { refBackend } from '../src/backend/ref/index.js';
import { generate } from '../src/generate/generate.js';
import { Weights } from '../src/models/model.js';
import { randomLlama } from '../src/models/random.js';
import { buildModel } from '../src/models/registry.js';

/** Run `fn` and return the warnings it emitted (each test starts from a clean warnOnce memory). */
function warnings(fn: () => void): string[] {
  const seen: string[] = [];
  const prev = setWarningHandler((m) => seen.push(m), { reset: true });
  try { fn(); } finally { setWarningHandler(prev, { reset: true }); }
  return seen;
}

function withFile<T>(json: string, fn: (dir: string, path: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-genconfig-'));
  try {
    const path = join(dir, 'generation_config.json');
    writeFileSync(path, json);
    return fn(dir, path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** readGenerationConfig on `json` throws a GenerationConfigError naming the file, `key` and `got`. */
function fileRejects(json: Record<string, unknown> | string, key: string, got: string): void {
  withFile(typeof json === 'string' ? json : JSON.stringify(json), (dir, path) => {
    assert.throws(() => readGenerationConfig(dir), (e: Error) => {
      assert.ok(e instanceof GenerationConfigError, `${e.name}: ${e.message}`);
      assert.ok(e.message.startsWith(`${path}: `), e.message);
      assert.ok(e.message.includes(key) && e.message.includes(got), e.message);
      return true;
    });
  });
}

test('generation_config.json values of the wrong type are errors naming the file and key', () => {
  fileRejects({ do_sample: 'false' }, '"do_sample" must be true or false', '"false"');
  fileRejects({ eos_token_id: '2' }, '"eos_token_id"', '"2"');
  fileRejects({ eos_token_id: [1, '2'] }, '"eos_token_id"', '[1,"2"]');
  fileRejects({ stop_strings: 5 }, '"stop_strings"', '5');
  fileRejects({ stop_strings: ['ok', ''] }, '"stop_strings"', '""');
  fileRejects({ max_length: 'long' }, '"max_length" must be a non-negative integer', '"long"');
  fileRejects({ max_new_tokens: -1 }, '"max_new_tokens"', '-1');
  fileRejects({ min_new_tokens: 1.5 }, '"min_new_tokens"', '1.5');
  fileRejects({ temperature: 'hot' }, '"temperature"', '"hot"');
  fileRejects({ temperature: -0.5 }, '"temperature"', '-0.5');
  fileRejects({ top_p: 1.5 }, '"top_p"', '1.5');                 // checked even when not sampling
  fileRejects({ top_k: 2.5 }, '"top_k"', '2.5');
  fileRejects({ min_p: -1 }, '"min_p"', '-1');
  fileRejects({ repetition_penalty: 0 }, '"repetition_penalty"', '0');
  fileRejects({ no_repeat_ngram_size: true }, '"no_repeat_ngram_size"', 'true');
  fileRejects({ pad_token_id: 1.5 }, '"pad_token_id"', '1.5');
  fileRejects({ seed: '7' }, '"seed"', '"7"');
  fileRejects('[1, 2]', 'must be an object', '[1,2]');
  fileRejects('null', 'must be an object', 'null');
  fileRejects('{"do_sample": tru', 'not valid JSON', 'JSON');
  // Nesting deep enough to overflow JSON.stringify while the message is written.
  fileRejects(`{"stop_strings": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`, '"stop_strings"', 'a deeply nested list');
  // A directory where the file should be.
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-genconfig-'));
  try {
    mkdirSync(join(dir, 'generation_config.json'));
    assert.throws(() => readGenerationConfig(dir), (e: Error) => e instanceof GenerationConfigError && e.message.includes('generation_config.json'));
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('real files stay lenient: bookkeeping keys ignored, null means unset except for token ids', () => {
  const c = withFile(JSON.stringify({ _from_model_config: true, bos_token_id: 1, eos_token_id: [2, 3], pad_token_id: null,
    transformers_version: '4.41.2', use_cache: true, output_attentions: false, top_k: null, stop_strings: '###' }), (dir) => readGenerationConfig(dir));
  assert.deepEqual(c, { bosTokenId: 1, eosTokenId: [2, 3], padTokenId: null, stopStrings: ['###'] });
  assert.deepEqual(withFile('{}', (dir) => readGenerationConfig(dir)), {});
  assert.deepEqual(readGenerationConfig(join(tmpdir(), 'no-such-model-dir')), {});
  // Settings transformers would act on but lowbit does not implement are warned about, not silently dropped.
  const w = warnings(() => normalizeGenerationConfig({ num_beams: 4, num_return_sequences: 1 }, 'x/generation_config.json'));
  assert.deepEqual(w, ['x/generation_config.json: "num_beams" is set to 4, which lowbit does not support: it has no effect']);
});

test('call options: snake_case is mapped, unknown keys are refused in strict mode', () => {
  const allow = ['tokenizer', 'modelDefaults', 'truncation', 'onProgress'];
  assert.deepEqual(normalizeGenerationConfig({ max_new_tokens: 5, topP: 0.5, tokenizer: {}, truncation: 'left' }, 'generate options', { strict: true, allow }),
    { maxNewTokens: 5, topP: 0.5 });
  const refuse = (o: Record<string, unknown>, re: RegExp, a: string[] = allow) =>
    assert.throws(() => normalizeGenerationConfig(o, 'generate options', { strict: true, allow: a }), (e: Error) => e instanceof GenerationConfigError && re.test(e.message));
  refuse({ maxNewToken: 5 }, /^generate options: unknown option "maxNewToken" \(did you mean "maxNewTokens"\?\)$/);
  refuse({ 'max-new-tokens': 5 }, /did you mean "maxNewTokens"/);
  refuse({ temprature: 0.5 }, /did you mean "temperature"/);
  refuse({ tokenizr: {} }, /did you mean "tokenizer"/);
  refuse({ tokenizer: {} }, /unknown option "tokenizer"/, []);
  refuse({ xyzzy: 1 }, /unknown option "xyzzy"$/);
  refuse({ ['k'.repeat(100_000)]: 1 }, /^generate options: unknown option "k{76}\.\.\.$/);   // a message, not a megabyte
  refuse({ num_beams: 2 }, /"num_beams" is not supported/);
  refuse({ max_new_tokens: 5, maxNewTokens: 6 }, /"max_new_tokens" and "maxNewTokens" name the same setting/);
  refuse({ doSample: 'yes' }, /^generate options: "doSample" must be true or false, got "yes"$/);
  // Object.prototype names are unknown keys, not settings.
  refuse({ constructor: 1 }, /unknown option "constructor"/);
  assert.deepEqual(normalizeGenerationConfig({ constructor: 1, toString: 2 }), {});
  // Without strict mode (files), unknown keys are ignored as transformers ignores them.
  assert.deepEqual(normalizeGenerationConfig({ maxNewToken: 5 }), {});
});

test('resolveGeneration maps snake_case and checks every layer, naming the options', () => {
  // Before: `max_new_tokens` in the call options was ignored and max_length 20 applied (19 new tokens).
  assert.equal(resolveGeneration([{ max_new_tokens: 3 } as GenerationConfig], 1).maxNewTokens, 3);
  assert.throws(() => resolveGeneration([{ stopStrings: 5 } as unknown as GenerationConfig], 1),
    (e: Error) => e instanceof GenerationConfigError && e.message === 'generate options: "stopStrings" must be a non-empty string or a list of them, got 5');
  assert.throws(() => resolveGeneration([{ maxLength: 'long' } as unknown as GenerationConfig], 1), /generate options: "maxLength"/);
  assert.throws(() => resolveGeneration([{ eosTokenId: '2' } as unknown as GenerationConfig, {}], 1), /: generation settings \(layer 1 of 2\): "eosTokenId"/);
  // A file's layer keeps its name through resolveGeneration.
  const file = normalizeGenerationConfig({ do_sample: true, temperature: 0 }, '/m/generation_config.json');
  assert.throws(() => resolveGeneration([file, { doSample: true }], 1), /doSample is true but temperature is 0/);
});

test('resolveGeneration uses a layer as normalizeGenerationConfig returned it, and checks it again once changed', () => {
  const file = normalizeGenerationConfig({ temperature: 0.5, eos_token_id: [2, 3] }, '/m/generation_config.json');
  const g = warnings(() => assert.deepEqual(resolveGeneration([file, {}], 1).eos, [2, 3]));
  assert.equal(g.length, 1);    // temperature without sampling
  (file as Record<string, unknown>).temperature = -1;
  const refused = (re: RegExp) => (e: Error) => e instanceof GenerationConfigError && re.test(e.message);
  assert.throws(() => resolveGeneration([file, {}], 1), refused(/^\/m\/generation_config\.json: "temperature" must be a number ≥ 0/));
  const ids = normalizeGenerationConfig({ eos_token_id: [2, 3] }, '/m/a.json');
  (ids.eosTokenId as unknown[]).push('4');       // changed in place
  assert.throws(() => resolveGeneration([ids, {}], 1), refused(/^\/m\/a\.json: "eosTokenId" must be a token id/));
  const added = normalizeGenerationConfig({}, '/m/b.json');
  (added as Record<string, unknown>).max_new_tokens = 3;
  assert.equal(resolveGeneration([added, {}], 1).maxNewTokens, 3);
});

test('without a seed, each resolution gets a fresh random seed (the one generate() uses), even within a millisecond', () => {
  const seeds = new Set(Array.from({ length: 8 }, () => resolveGeneration([{}], 1).seed));
  assert.equal(seeds.size, 8);                 // before: Date.now() >>> 0, the same within a millisecond
  for (const s of seeds) assert.ok(Number.isSafeInteger(s) && s >= 0 && s < 2 ** 32);
  assert.equal(resolveGeneration([{ seed: 7 }, {}], 1).seed, 7);
  assert.ok(Number.isSafeInteger(freshSeed()));
});

/** doSample as resolved for layers [file, call]. */
const sampling = (file: GenerationConfig, call: GenerationConfig) => resolveGeneration([{ eosTokenId: 2 }, file, call], 1).doSample;

test('one sampling rule: call knobs sample, explicit doSample wins, temperature 0 is greedy, files follow do_sample', () => {
  warnings(() => {
    assert.equal(sampling({}, { temperature: 1.5 }), true);                       // before: greedy in the library
    assert.equal(sampling({}, { topP: 0.9 }), true);
    assert.equal(sampling({}, { topK: 5 }), true);
    assert.equal(sampling({}, { minP: 0.1 }), true);
    assert.equal(sampling({ doSample: false }, { temperature: 0.7 }), true);
    assert.equal(sampling({}, { temperature: 1.5, doSample: false }), false);      // explicit doSample wins
    assert.equal(sampling({}, { temperature: 0 }), false);
    assert.equal(sampling({ doSample: true, temperature: 0.6 }, { temperature: 0 }), false);
    assert.equal(sampling({ doSample: true, temperature: 0.6, topP: 0.9 }, {}), true);  // the file's do_sample decides
    assert.equal(sampling({ temperature: 0.6 }, {}), false);                       // file without do_sample: greedy
    assert.equal(sampling({ doSample: true, temperature: 0 }, {}), false);        // a file's temperature 0: greedy
    assert.equal(sampling({ doSample: true }, { seed: 3 }), true);
    assert.equal(sampling({}, {}), false);
    assert.equal(resolveGeneration([{ doSample: true }], 1).doSample, true);
  });
  assert.throws(() => sampling({}, { doSample: true, temperature: 0 }), (e: Error) => e instanceof GenerationConfigError && /generate options: doSample is true but temperature is 0/.test(e.message));
});

test('knobs with no effect warn once, naming where they were set', () => {
  assert.deepEqual(warnings(() => sampling({}, { doSample: false, temperature: 0.7 })),
    ['generate options: `temperature` is set to 0.7 but doSample is false: it has no effect']);
  const file = normalizeGenerationConfig({ do_sample: false, temperature: 0.6, top_p: 0.9, top_k: 50 }, '/m/generation_config.json');
  assert.deepEqual(warnings(() => { sampling(file, {}); sampling(file, {}); }), [
    '/m/generation_config.json: `temperature` is set to 0.6 but doSample is false: it has no effect',
    '/m/generation_config.json: `topP` is set to 0.9 but doSample is false: it has no effect',
  ]);
  assert.deepEqual(warnings(() => sampling({}, { temperature: 0, minP: 0.2 })), ['generate options: `minP` is set to 0.2 but doSample is false: it has no effect']);
  // Choosing greedy over a file that samples, or temperature 0 alone, is not a mistake worth a warning.
  assert.deepEqual(warnings(() => sampling({ doSample: true, temperature: 0.6, topP: 0.9 }, { doSample: false })), []);
  assert.deepEqual(warnings(() => sampling({}, { temperature: 0 })), []);
  assert.deepEqual(warnings(() => sampling({}, { temperature: 1.2 })), []);
});

test('through generate(): temperature alone samples in the library as in the CLI; max_new_tokens is honoured', async () => {
  const { config, tensors } = randomLlama({ model_type: 'llama', hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1,
    num_attention_heads: 4, vocab_size: 64, max_position_embeddings: 64 }, 'F32', 5);
  for (const t of tensors.values()) if (t.shape.length === 2) (t.data as Float32Array).forEach((x, i, a) => { a[i] = x * 20; });
  const model = buildModel(config, new Weights(tensors, 'tiny'), refBackend);
  const run = (o: Record<string, unknown>) => generate(model, [[3, 5, 7]], { eosTokenId: [], maxNewTokens: 12, ...o } as GenerationConfig).then((r) => r.tokens[0]);
  const greedy = await run({});
  assert.deepEqual(await run({ temperature: 0 }), greedy);
  // Before, `temperature: 1.5` was greedy in the library: every seed gave the greedy tokens.
  const sampled = await Promise.all([1, 2, 3, 4].map((seed) => run({ temperature: 1.5, seed })));
  assert.ok(sampled.some((t) => t.join() !== greedy.join()), 'temperature 1.5 never left the greedy path');
  assert.deepEqual(await run({ temperature: 1.5, seed: 2 }), sampled[1]);
  const seen: string[] = [];
  const prev = setWarningHandler((m) => seen.push(m), { reset: true });
  try {
    assert.deepEqual(await run({ temperature: 1.5, doSample: false, seed: 2 }), greedy);
  } finally { setWarningHandler(prev, { reset: true }); }
  assert.deepEqual(seen, ['generate options: `temperature` is set to 1.5 but doSample is false: it has no effect']);
  assert.equal((await run({ maxNewTokens: undefined, max_new_tokens: 3 })).length, 3);
});
