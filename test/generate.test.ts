// Generation: logits processors against transformers' semantics, batch = each prompt alone, per-row stopping,
// reproducible sampling, and HF generate() goldens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { refBackend } from '../src/backend/ref/index.js';
import { Weights } from '../src/models/model.js';
import { randomLlama } from '../src/models/random.js';
import { buildModel } from '../src/models/registry.js';
import { fromPretrained } from '../src/api.js';
import { checkGenerationFits, generate, generateStream, GenerateOptions, GenerateResult, isRowError } from '../src/generate/generate.js';
import { IncrementalDecoder } from '../src/generate/stream.js';
import { Tokenizer } from '../src/tokenizer/index.js';
import { applyNoRepeatNgram, applyRepetitionPenalty, applyTopK, applyTopP, applyMinP, historyInputs, processLogits } from '../src/generate/logits.js';
import { GenerationConfig, GenerationConfigError, normalizeGenerationConfig, resolveGeneration } from '../src/generate/config.js';
import { goldenCases, NO_DATA, ROOT, sharedData } from './helpers.js';
import { join } from 'node:path';

const TINY = {
  model_type: 'llama', hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4,
  num_key_value_heads: 2, vocab_size: 64, max_position_embeddings: 128, rms_norm_eps: 1e-6, eos_token_id: 2,
};

function tinyModel() {
  const { config, tensors } = randomLlama(TINY, 'F32', 7);
  // Larger weights than the benchmark default so that the argmax varies from step to step.
  for (const t of tensors.values()) if (t.shape.length === 2) for (let i = 0; i < t.data.length; i++) (t.data as Float32Array)[i] *= 20;
  return buildModel(config, new Weights(tensors, 'tiny'), refBackend);
}

test('repetition penalty divides positive and multiplies negative scores of seen tokens once', () => {
  const s = Float32Array.from([2, -2, 1, 4]);
  applyRepetitionPenalty(s, [0, 1, 1, 0], 2);
  assert.deepEqual(Array.from(s), [1, -4, 1, 4]);
});

test('no-repeat n-gram bans completions of n-grams already in the row', () => {
  const s = new Float32Array(6);
  applyNoRepeatNgram(s, [1, 2, 3, 1, 2], 3);       // "1 2 → 3" occurred, the row ends in "1 2"
  assert.equal(s[3], -Infinity);
  assert.equal([...s].filter((x) => x === -Infinity).length, 1);
  const s2 = new Float32Array(6);
  applyNoRepeatNgram(s2, [4], 3);                  // too short: no ban
  assert.ok(s2.every((x) => x === 0));
});

test('historyInputs: its penalized and banned ids, applied, give processLogits\' greedy scores (what a device sampler takes)', () => {
  const V = 50;
  const g = resolveGeneration([{ repetitionPenalty: 1.5, noRepeatNgramSize: 2, minNewTokens: 3, eosTokenId: [7, 60] }], 4);
  const history = [3, 9, 3, 12, -1, 9, 3, 55, 9, 3];
  for (const generated of [1, 5]) {
    const scores = Float32Array.from({ length: V }, (_, i) => Math.sin(i) * 4);
    const want = scores.slice();
    processLogits(want, history, generated, g);
    const { penalized, banned } = historyInputs(history, generated, g, V);
    assert.deepEqual([...penalized].sort((a, b) => a - b), [3, 9, 12]);     // each once; −1 and 55 are outside the vocabulary
    assert.deepEqual(banned.includes(7), generated < 3);                     // eos before min_new_tokens
    assert.ok(banned.includes(9) && !banned.includes(60));                   // "3 9" was seen, the history ends with 3
    for (const id of penalized) scores[id] = scores[id] < 0 ? scores[id] * 1.5 : scores[id] / 1.5;
    for (const id of banned) scores[id] = -Infinity;
    assert.deepEqual(scores, want);
  }
});

test('top-k keeps ties at the threshold; top-p keeps the nucleus; min-p scales with the top probability', () => {
  const k = Float32Array.from([1, 3, 3, 2, 0]);
  applyTopK(k, 2);
  assert.deepEqual(Array.from(k), [-Infinity, 3, 3, -Infinity, -Infinity]);
  const p = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
  applyTopP(p, 0.8);                               // cum ascending: .05, .20 (≤ .2 removed), .50 → keep .5 and .3
  assert.deepEqual(Array.from(p).map((x) => x === -Infinity), [false, false, true, true]);
  const m = Float32Array.from([Math.log(0.6), Math.log(0.3), Math.log(0.1)]);
  applyMinP(m, 0.25);                              // cut = 0.15
  assert.deepEqual(Array.from(m).map((x) => x === -Infinity), [false, false, true]);
});

test('generation config: snake_case from JSON, defaults, max_length vs max_new_tokens', () => {
  const c = normalizeGenerationConfig({ max_new_tokens: 5, eos_token_id: [1, 9], do_sample: true, top_p: 0.9, unknown: 1 });
  assert.deepEqual(c, { maxNewTokens: 5, eosTokenId: [1, 9], doSample: true, topP: 0.9 });
  const r = resolveGeneration([{ eosTokenId: 2 }, c], 4);
  assert.equal(r.maxNewTokens, 5);
  assert.deepEqual(r.eos, [1, 9]);
  assert.equal(r.padTokenId, 1);
  assert.equal(resolveGeneration([{}], 4).maxNewTokens, 16);  // max_length 20 − prompt 4
  assert.throws(() => resolveGeneration([{ doSample: true, topP: 1.5 }], 1), /topP/);
  assert.equal(resolveGeneration([{ temperature: 0 }], 1).doSample, false);        // warpers unchecked when greedy
  assert.deepEqual(normalizeGenerationConfig({ top_k: null, eos_token_id: null }), { eosTokenId: null });
  assert.throws(() => resolveGeneration([{}], 20), /prompt has 20 tokens but maxLength is 20/);
  assert.equal(resolveGeneration([{ minNewTokens: 2, minLength: 10 }], 4).minNewTokens, 6);
  assert.throws(() => resolveGeneration([{ maxNewTokens: 3, stopStrings: [''] }], 1), /stopStrings/);
});

test('a left-padded batch gives each prompt the tokens it gets alone', async () => {
  const model = tinyModel();
  const prompts = [[5, 9, 11, 3, 7, 20], [8, 4], [30, 31, 32, 33]];
  const opts = { maxNewTokens: 10, eosTokenId: [] as number[], padTokenId: 0 };
  const batch = await generate(model, prompts, opts);
  for (let i = 0; i < prompts.length; i++) {
    const alone = await generate(model, [prompts[i]], opts);
    assert.deepEqual(batch.tokens[i], alone.tokens[0], `row ${i}`);
  }
  assert.deepEqual(batch.finishReasons, ['length', 'length', 'length']);
  assert.ok(new Set(batch.tokens[0]).size > 1, 'the tiny model should not repeat a single token');
});

test('generation stops on any listed terminator, per row, with finish reasons', async () => {
  const model = tinyModel();
  const prompts = [[5, 9, 11], [8, 4]];
  const free = await generate(model, prompts, { maxNewTokens: 8, eosTokenId: [], padTokenId: 0 });
  // Force terminators: the 3rd token of row 0 and the 5th of row 1, given as a list like the seeds' `terminators`.
  const t0 = free.tokens[0][2], t1 = free.tokens[1][4];
  const stopped = await generate(model, prompts, { maxNewTokens: 8, eosTokenId: [t0, t1], padTokenId: 0 });
  const cut = (row: number[], ids: number[]) => row.slice(0, row.findIndex((x) => ids.includes(x)) + 1);
  assert.deepEqual(stopped.tokens[0], cut(free.tokens[0], [t0, t1]));
  assert.deepEqual(stopped.tokens[1], cut(free.tokens[1], [t0, t1]));
  assert.deepEqual(stopped.finishReasons, ['eos', 'eos']);
  const streamed: number[] = [];
  const it = generateStream(model, [prompts[0]], { maxNewTokens: 8, eosTokenId: [t0], padTokenId: 0 });
  for await (const e of it) streamed.push(e.tokenId);
  assert.deepEqual(streamed, stopped.tokens[0]);
});

test('sampling is reproducible with a seed and varies without one', async () => {
  const model = tinyModel();
  const o = { maxNewTokens: 24, doSample: true, temperature: 1.5, topK: 0, eosTokenId: [] as number[], padTokenId: 0 };
  const a = await generate(model, [[1, 2, 3]], { ...o, seed: 42 });
  const b = await generate(model, [[1, 2, 3]], { ...o, seed: 42 });
  assert.deepEqual(a.tokens, b.tokens);
  assert.equal(a.seed, 42);
  // Two unseeded runs: different draws (200 seeds gave 200 different 12-token samples from this model).
  const u1 = await generate(model, [[1, 2, 3]], o);
  const u2 = await generate(model, [[1, 2, 3]], o);
  assert.notDeepEqual(u1.tokens, u2.tokens);
  // An unseeded run is repeated by its reported seed.
  assert.deepEqual((await generate(model, [[1, 2, 3]], { ...o, seed: u1.seed })).tokens, u1.tokens);
  // Calls within one millisecond must not share a seed (a clock-derived seed did): 50 quick calls, 50 seeds.
  const seeds = new Set<number>();
  for (let i = 0; i < 50; i++) seeds.add((await generate(model, [[1]], { ...o, maxNewTokens: 0 })).seed);
  assert.equal(seeds.size, 50);
});

test('finish reasons: "eos" when the model config\'s eos is the greedy token, "length" when eos cannot occur', async () => {
  const { config, tensors } = randomLlama(TINY, 'F32', 7);
  for (const t of tensors.values()) if (t.shape.length === 2) for (let i = 0; i < t.data.length; i++) (t.data as Float32Array)[i] *= 20;
  const build = (eos: number | null) => buildModel({ ...config, eos_token_id: eos }, new Weights(tensors, 'tiny'), refBackend);
  const free = await generate(build(null), [[5, 9, 11]], { maxNewTokens: 6 });
  assert.deepEqual(free.finishReasons, ['length']);              // eos_token_id null: nothing can end the row early
  assert.equal(free.tokens[0].length, 6);
  const first = free.tokens[0][0];
  const reports: [number, number][] = [];
  const r = await generate(build(first), [[5, 9, 11]], { maxNewTokens: 6, onProgress: (p) => reports.push([p.done, p.total]) });
  assert.deepEqual(r.tokens, [[first]]);
  assert.deepEqual(r.finishReasons, ['eos']);
  assert.deepEqual(reports, [[1, 1]]);  // ended at step 1 of at most 6: the last report says so (done = total)
  // Stream events say how each row ended on its last event only; onProgress counts the steps.
  const events: { finishReason?: string }[] = [];
  const steps: number[] = [];
  for await (const e of generateStream(build(null), [[5, 9, 11], [7]], { maxNewTokens: 3, onProgress: (p) => { assert.equal(p.task + p.unit, 'generatesteps'); steps.push(p.done * 10 + p.total); } })) events.push(e);
  assert.deepEqual(events.map((e) => e.finishReason ?? '-'), ['-', '-', '-', '-', 'length', 'length']);
  assert.deepEqual(steps, [13, 23, 33]);
});

// Dynamic-RoPE goldens are skipped: transformers keeps the longest length seen as state across calls (models.test.ts).
for (const g of goldenCases().filter((c) => !c.name.includes('dynamic'))) {
  test(`${g.name}: generate() equals transformers (greedy, no_repeat_ngram_size=2, repetition_penalty=1.3, batch)`, async () => {
    const { model } = await fromPretrained(g.dir);
    const pad = model.config.model_type === 'opt' ? 1 : 0;
    const base = { eosTokenId: [] as number[], padTokenId: pad };
    const run = async (name: string, extra: object) => {
      const want = g.ints(name).rows[0];
      const r = await generate(model, [want.slice(0, 8)], { ...base, maxNewTokens: want.length - 8, ...extra });
      assert.deepEqual(r.sequences[0], want, name);
    };
    await run('gen_greedy', {});
    await run('gen_ngram2', { noRepeatNgramSize: 2 });
    await run('gen_rep13', { repetitionPenalty: 1.3 });
    const ids = g.ints('gen_batch_ids').rows, mask = g.ints('gen_batch_mask').rows, out = g.ints('gen_batch_out').rows;
    const prompts = ids.map((r, b) => r.filter((_, t) => mask[b][t]));
    const r = await generate(model, prompts, { ...base, maxNewTokens: out[0].length - ids[0].length });
    r.tokens.forEach((toks, b) => assert.deepEqual(toks, out[b].slice(ids[0].length), `batch row ${b}`));
  });
}

test('stop strings end a row with finish reason "stop"; generation_config.json defaults apply', async () => {
  const { model, tokenizer, generationConfig } = await fromPretrained(join(ROOT, 'models', 'kjv-demo'));
  assert.equal(generationConfig.maxNewTokens, 64);
  assert.deepEqual(generationConfig.eosTokenId, [1, 4]);
  const ids = tokenizer!.encode('In the beginning');
  const free = await generate(model, [ids], { tokenizer: tokenizer!, modelDefaults: generationConfig, maxNewTokens: 24, eosTokenId: [] });
  const text = free.texts[0];
  const word = text.trim().split(/\s+/)[2];                          // some word the model writes
  const r = await generate(model, [ids], { tokenizer: tokenizer!, modelDefaults: generationConfig, maxNewTokens: 24, eosTokenId: [], stopStrings: [word] });
  assert.equal(r.finishReasons[0], 'stop');
  assert.ok(r.texts[0].includes(word) && r.texts[0].length < text.length, `${r.texts[0]} vs ${text}`);
  const d = await generate(model, [ids], { tokenizer: tokenizer!, modelDefaults: generationConfig, eosTokenId: [] });
  assert.equal(d.tokens[0].length, 64);                                // max_new_tokens from generation_config.json
});

/**
 * A SentencePiece-style (Metaspace) tokenizer built here: like Llama's, it decodes a first "▁and" as "and", which is
 * how continuations used to lose their leading space.
 */
function wordTokenizer(): Tokenizer {
  const special = ['<unk>', '<s>', '</s>'];
  const words = ['▁The', '▁little', '▁dog', '▁and', '▁his', '▁ran', '.', ',', '▁do', "n't", '▁I', '▁'];
  return new Tokenizer({
    version: '1.0', truncation: null, padding: null, normalizer: null,
    added_tokens: special.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    post_processor: {
      type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }], special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    model: { type: 'Unigram', unk_id: 0, byte_fallback: false, vocab: [...special.map((s) => [s, 0]), ...words.map((w) => [w, w === '▁' ? -3 : -1])] },
  }, { bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }, 'word-tokenizer');
}

test('decoded continuations keep their leading space, streamed and final, with the prompt as context', () => {
  const tok = wordTokenizer();
  const ids = tok.encode('The little dog and his dog.');
  assert.deepEqual(ids.slice(0, 4), [1, 3, 4, 5]);             // <s> ▁The ▁little ▁dog
  assert.equal(tok.decode(ids.slice(4), { skipSpecialTokens: true }), 'and his dog.');   // alone: the space is lost
  const dec = new IncrementalDecoder(tok, { context: ids.slice(0, 4) });
  let streamed = '';
  for (const id of ids.slice(4)) streamed += dec.push(id);
  streamed += dec.flush();
  assert.equal(streamed, ' and his dog.');
  assert.equal(dec.text, ' and his dog.');
  // Without context the decoder behaves as before (the whole output from its first token).
  const bare = new IncrementalDecoder(tok);
  ids.slice(4).forEach((id) => bare.push(id));
  assert.equal(bare.text, 'and his dog.');
});

test('generate takes text and a LoadedModel: its tokenizer (with BOS) and generation config are the defaults', async () => {
  const tok = wordTokenizer();
  const { config, tensors } = randomLlama({ ...TINY, vocab_size: 15 }, 'F32', 3);
  const model = buildModel(config, new Weights(tensors, 'words'), refBackend);
  const loaded = { model, config, tokenizer: tok, generationConfig: { maxNewTokens: 4, eosTokenId: [] }, tensors, dir: 'words', loadMs: 0 };
  const byText = await generate(loaded, 'The little dog');
  const byIds = await generate(model, [[1, 3, 4, 5]], { tokenizer: tok, maxNewTokens: 4, eosTokenId: [] });
  assert.deepEqual(byText.sequences, byIds.sequences);
  assert.equal(byText.tokens[0].length, 4);                    // maxNewTokens from the LoadedModel's generation config
  assert.deepEqual(byText.texts, byIds.texts);
  const full = tok.decode(byText.sequences[0], { skipSpecialTokens: true });
  assert.equal('The little dog' + byText.texts[0], full);
  // One prompt or a batch, text or ids, mixed.
  const mixed = await generate(loaded, ['The little dog', [1, 3, 4, 5]]);
  assert.deepEqual(mixed.tokens, [byText.tokens[0], byText.tokens[0]]);
  assert.deepEqual((await generate(loaded, [1, 3, 4, 5])).tokens, byText.tokens);
  // Call options still win over the model's defaults; snake_case keys are mapped, misspelt ones refused.
  assert.equal((await generate(loaded, 'The dog', { max_new_tokens: 2 } as GenerateOptions)).tokens[0].length, 2);
  await assert.rejects(generate(loaded, 'The dog', { maxNewToken: 2 } as GenerateOptions), /generate options: unknown option "maxNewToken" \(did you mean "maxNewTokens"\?\)/);
  await assert.rejects(generate(model, 'The dog', { maxNewTokens: 2 }), (e: Error) => e instanceof GenerationConfigError && /prompt 0 is text but there is no tokenizer/.test(e.message));
  await assert.rejects(generate(model, [], { maxNewTokens: 2 }), /no prompts given/);
  await assert.rejects(generate(model, [[]], { maxNewTokens: 2 }), /prompt 0 has no tokens/);
});

test('tinystories-656k: "The little dog" continues with " and his dog", streamed and returned', { skip: sharedData() ? false : NO_DATA }, async () => {
  const m = await fromPretrained(join(sharedData()!, 'models', 'tinystories-656k'));
  let streamed = '';
  const it = generateStream(m, 'The little dog', { maxNewTokens: 12 });
  let r: GenerateResult;
  for (;;) {
    const n = await it.next();
    if (n.done) { r = n.value; break; }
    streamed += n.value.text;
  }
  assert.ok(r.texts[0].startsWith(' and his dog'), JSON.stringify(r.texts[0]));
  assert.equal(streamed, r.texts[0]);
  assert.equal(m.tokenizer!.decode(r.sequences[0], { skipSpecialTokens: true }), 'The little dog' + r.texts[0]);
  assert.equal(r.sequences[0][0], m.tokenizer!.bosTokenId);     // text prompts get BOS, as transformers' pipeline
});

test('checkGenerationFits runs generate\'s pre-flight checks without running the model, and refuses what generate refuses', async () => {
  const model = tinyModel();                                        // 128 positions
  const g = checkGenerationFits(model, { maxNewTokens: 20, temperature: 0.7 }, {});
  assert.equal(g.maxNewTokens, 20);
  assert.equal(g.doSample, false);                                  // generation_config.json alone: greedy unless do_sample
  assert.equal(checkGenerationFits(model, {}, { maxNewTokens: 127 }).maxNewTokens, 127);
  for (const [file, call] of [[{ maxNewTokens: 128 }, {}], [{}, { minNewTokens: 200, maxNewTokens: 4 }], [{ max_new_tokens: 300 } as GenerationConfig, {}]] as [GenerationConfig, GenerationConfig][]) {
    const fits = (() => { try { checkGenerationFits(model, file, call); return null; } catch (e) { return e as Error; } })();
    assert.ok(fits instanceof GenerationConfigError, JSON.stringify([file, call]));
    await assert.rejects(generate(model, [[1, 2, 3]], { modelDefaults: file, ...call }), (e: Error) => e.message === fits.message);
  }
  // A prompt length can be checked too; truncation: 'left' lets a long prompt through, as in generate.
  assert.throws(() => checkGenerationFits(model, {}, { maxNewTokens: 28, promptTokens: 101 }), /prompt 0 has 101 tokens; with maxNewTokens 28 that is 129 positions/);
  checkGenerationFits(model, {}, { maxNewTokens: 28, promptTokens: 101, truncation: 'left' });
  assert.throws(() => checkGenerationFits(model, {}, { maxNewTokens: 4, tokenizr: 1 } as never), /unknown option "tokenizr"/);
});

test('errors about one prompt carry its row (the index in the prompts given)', async () => {
  const model = tinyModel();
  const rowOf = async (p: Promise<unknown>) => { try { await p; } catch (e) { assert.ok(isRowError(e), String(e)); return e.row; } assert.fail('no error'); };
  assert.equal(await rowOf(generate(model, [[1, 2], [3, ...new Array(125).fill(4)]], { maxNewTokens: 8 })), 1);   // too long
  assert.equal(await rowOf(generate(model, [[1, 2], [1], []], { maxNewTokens: 2 })), 2);                           // no tokens
  assert.equal(await rowOf(generate(model, [[1, 2], [1, 64]], { maxNewTokens: 2 })), 1);                           // TokenIdError
  assert.equal(await rowOf(generate(model, [[1], 'text'], { maxNewTokens: 2 })), 1);                               // no tokenizer
  // Errors about the settings concern no row.
  await generate(model, [[1]], { maxNewTokens: 200 }).then(() => assert.fail('accepted'), (e) => assert.ok(!isRowError(e)));
});
