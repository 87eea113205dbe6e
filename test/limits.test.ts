// Hostile and broken inputs at model build and generation: configs that disagree with the weights, unused
// checkpoint tensors, NaN weights, prompts past the model's positions, token ids outside the vocabulary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { refBackend } from '../src/backend/ref/index.js';
import { perplexity } from '../src/eval/perplexity.js';
import { GenerationConfigError } from '../src/generate/config.js';
import { generate } from '../src/generate/generate.js';
import { NonFiniteLogitsError } from '../src/generate/logits.js';
import type { LlamaConfig, OptConfig } from '../src/io/config.js';
import { serializeSafetensors } from '../src/io/safetensors.js';
import { MissingTensorError, TokenIdError, Weights } from '../src/models/model.js';
import { randomLlama } from '../src/models/random.js';
import { buildModel } from '../src/models/registry.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { setWarningHandler } from '../src/util/warn.js';
import { GOLDEN_DIR } from './helpers.js';

const TINY = {
  model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 64, max_position_embeddings: 32, rms_norm_eps: 1e-6, eos_token_id: 2,
};

function tiny(extra: Record<string, unknown> = {}, scale = 20) {
  const { config, tensors } = randomLlama({ ...TINY, ...extra }, 'F32', 7);
  // Larger weights than the benchmark default so that the argmax varies from step to step.
  for (const t of tensors.values()) if (t.shape.length === 2) for (let i = 0; i < t.data.length; i++) (t.data as Float32Array)[i] *= scale;
  return { config, tensors, model: () => buildModel(config, new Weights(tensors, 'tiny'), refBackend) };
}

/** Collect warnings emitted while `fn` runs (forgetting earlier ones, so each case can warn afresh). */
function warningsOf(fn: () => void): string[] {
  const got: string[] = [];
  const prev = setWarningHandler((m) => got.push(m), { reset: true });
  try { fn(); } finally { setWarningHandler(prev); }
  return got;
}

test('a config with more layers than the checkpoint fails on the first missing tensor, before building anything', () => {
  const { config, tensors } = tiny();
  const build = (c: LlamaConfig) => buildModel(c, new Weights(tensors, '/models/tiny'), refBackend);
  assert.throws(() => build({ ...config, num_hidden_layers: 3 }),
    (e: Error) => e instanceof MissingTensorError && /\/models\/tiny: missing tensor "model\.layers\.2\.input_layernorm\.weight"/.test(e.message) && /num_hidden_layers 3, the checkpoint has 2 layers/.test(e.message));
  // 10⁹ layers used to exhaust the V8 heap (the process aborted with exit 134); now it is one quick typed error.
  const t0 = performance.now();
  assert.throws(() => build({ ...config, num_hidden_layers: 1e9 }), MissingTensorError);
  assert.ok(performance.now() - t0 < 10_000);   // a hang detector with room for a busy CI machine
  // Layers the config does not have are a mismatch too, not something to ignore.
  assert.throws(() => build({ ...config, num_hidden_layers: 1 }),
    (e: Error) => e instanceof MissingTensorError && /tensor "model\.layers\.1\.[a-z_.]+" belongs to layer 1, but config\.json has num_hidden_layers 1/.test(e.message));
  // A gap in the middle is found as well.
  const gap = new Map([...tensors].filter(([n]) => !n.startsWith('model.layers.0.')));
  assert.throws(() => buildModel(config, new Weights(gap, 'gap'), refBackend), /missing tensor "model\.layers\.0\.input_layernorm\.weight"/);
});

test('fromPretrained names the folder when config.json and the weights disagree about layers', async () => {
  const { config, tensors } = tiny();
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-layers-'));
  try {
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...TINY, num_hidden_layers: 4 }));
    writeFileSync(join(dir, 'model.safetensors'), serializeSafetensors(tensors));
    await assert.rejects(fromPretrained(dir, { backend: 'ref' }),
      (e: Error) => e instanceof MissingTensorError && e.message.startsWith(`${dir}: missing tensor "model.layers.2.`));
    assert.equal(config.num_hidden_layers, 2);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('checkpoint tensors the model does not use are reported once, as transformers does; known leftovers are not', () => {
  const { config, tensors } = tiny();
  const extra = new Map<string, Tensor>(tensors);
  for (let i = 0; i < 12; i++) extra.set(`model.layers.0.mlp.adapter_${i}.weight`, tensors.get('model.norm.weight')!);
  const w = warningsOf(() => buildModel(config, new Weights(extra, '/ckpt/dir'), refBackend));
  assert.equal(w.length, 1);
  assert.match(w[0], /^Some weights of the model checkpoint at \/ckpt\/dir were not used when initializing LlamaForCausalLM: \['model\.layers\.0\.mlp\.adapter_0\.weight', /);
  assert.match(w[0], /'model\.layers\.0\.mlp\.adapter_9\.weight', … and 2 more\]$/);
  // RoPE's saved inv_freq buffer and a tied model's lm_head copy are expected leftovers.
  const tied = tiny({ tie_word_embeddings: true });
  const known = new Map<string, Tensor>(tied.tensors);
  known.set('model.layers.1.self_attn.rotary_emb.inv_freq', tensors.get('model.norm.weight')!);
  known.set('lm_head.weight', tensors.get('model.embed_tokens.weight')!);
  assert.deepEqual(warningsOf(() => buildModel(tied.config, new Weights(known, 'tied'), refBackend)), []);
  assert.deepEqual(warningsOf(() => buildModel(config, new Weights(tensors, 'plain'), refBackend)), []);
});

test('OPT checkpoints saved without the "model." prefix count as used; a stray tensor is still reported', async () => {
  const { model, tensors, config } = await fromPretrained(join(GOLDEN_DIR, 'opt_125m_like'), { backend: 'ref' });
  const bare = new Map([...tensors].map(([k, t]) => [k.replace(/^model\./, ''), t]));
  let built = model;
  assert.deepEqual(warningsOf(() => { built = buildModel(config, new Weights(bare, 'bare-opt'), refBackend); }), []);
  assert.deepEqual(built.forward([[2, 7, 9]]).f32, model.forward([[2, 7, 9]]).f32);
  bare.set('decoder.layers.0.extra.bias', tensors.get('model.decoder.final_layer_norm.bias')!);
  const w = warningsOf(() => buildModel(config, new Weights(bare, 'bare-opt'), refBackend));
  assert.equal(w.length, 1);
  assert.match(w[0], /when initializing OPTForCausalLM: \['decoder\.layers\.0\.extra\.bias'\]$/);
  assert.equal((config as OptConfig).model_type, 'opt');
});

test('NaN weights stop generation with an error naming the step and row instead of returning token 0', async () => {
  const t = tiny();
  const prompts = [[1, 2, 3], [30, 31]];
  const free = await generate(t.model(), prompts, { maxNewTokens: 4, eosTokenId: [], padTokenId: 0 });
  // A NaN embedding row for the token row 1 picks first: the prefill is clean, decode step 1 feeds it.
  const bad = free.tokens[1][0];
  assert.ok(!prompts.flat().includes(bad) && free.tokens[0][0] !== bad, 'the test needs a token only row 1 generates first');
  const embed = t.tensors.get('model.embed_tokens.weight')!.data as Float32Array;
  const H = TINY.hidden_size, saved = embed.slice(bad * H, (bad + 1) * H);
  embed.fill(NaN, bad * H, (bad + 1) * H);
  try {
    await assert.rejects(generate(t.model(), prompts, { maxNewTokens: 4, eosTokenId: [], padTokenId: 0 }),
      (e: Error) => e instanceof NonFiniteLogitsError && e.step === 1 && e.row === 1 && /non-finite logits at decode step 1, row 1: logit of token \d+ is NaN/.test(e.message));
    // A NaN in a prompt token's embedding poisons the prefill.
    await assert.rejects(generate(t.model(), [[bad, 3]], { maxNewTokens: 2 }), /non-finite logits at the prefill, row 0/);
    assert.throws(() => perplexity(t.model(), [1, 2, bad, 3, 4]), (e: Error) => e instanceof NonFiniteLogitsError && /window 0, position 2/.test(e.message));
  } finally { embed.set(saved, bad * H); }
  // An impossible config value (one the config reader now refuses) poisons the logits the same way: with
  // rms_norm_eps 0, a zero embedding row normalises to 0 · ∞.
  const eps0 = tiny();
  (eps0.tensors.get('model.embed_tokens.weight')!.data as Float32Array).fill(0, 0, H);
  const m0 = buildModel({ ...eps0.config, rms_norm_eps: 0 }, new Weights(eps0.tensors, 'eps0'), refBackend);
  await assert.rejects(generate(m0, [[0, 0]], { maxNewTokens: 2 }), NonFiniteLogitsError);
});

test('prompt + new tokens past the model\'s positions is refused before the prefill, with the numbers', async () => {
  const model = tiny().model();
  assert.equal(model.maxPositions, 32);
  const long = Array.from({ length: 30 }, (_, i) => 3 + (i % 50));
  await assert.rejects(generate(model, [long], { maxNewTokens: 5 }), (e: Error) => e instanceof GenerationConfigError &&
    /prompt 0 has 30 tokens; with maxNewTokens 5 that is 35 positions, but the model takes at most 32/.test(e.message) && /truncation: 'left'.*--truncate.*last 27 tokens/.test(e.message));
  await assert.rejects(generate(model, [[1, 2, 3]], { maxNewTokens: 3, minNewTokens: 40 }), /minNewTokens 40 leaves no room for a prompt: the model takes at most 32 positions/);
  await assert.rejects(generate(model, [[1, 2, 3]], { maxNewTokens: 32, truncation: 'left' }), /maxNewTokens 32 leaves no room.*at most 31 new tokens/);
  await assert.rejects(generate(model, [[1]], { maxNewTokens: 2, truncation: 'right' as 'left' }), /truncation" must be 'left' or 'none'/);
  // A 1 MB prompt (≈370k tokens) used to start a prefill that never finished.
  const huge = new Array(370_000).fill(7);
  const t0 = performance.now();
  await assert.rejects(generate(model, [huge], { maxNewTokens: 4 }), /370000 tokens/);
  assert.ok(performance.now() - t0 < 10_000, `refusal took ${performance.now() - t0} ms`);
  // OPT's learned positions are the model's own limit now (generate no longer asks for model_type).
  const opt = (await fromPretrained(join(GOLDEN_DIR, 'opt_125m_like'), { backend: 'ref' })).model;
  assert.equal(opt.maxPositions, 64);
  await assert.rejects(generate(opt, [new Array(60).fill(5)], { maxNewTokens: 10, padTokenId: 1 }), /60 tokens.*70 positions, but the model takes at most 64/);
});

test("truncation: 'left' keeps each prompt's last tokens and reports how many were dropped", async () => {
  const model = tiny().model();
  const long = Array.from({ length: 30 }, (_, i) => 3 + ((i * 7) % 55));
  const short = [8, 4, 9];
  const opts = { maxNewTokens: 5, eosTokenId: [] as number[], padTokenId: 0 };
  const r = await generate(model, [long, short], { ...opts, truncation: 'left' });
  assert.deepEqual(r.truncated, [3, 0]);
  const alone = await generate(model, [long.slice(3), short], opts);
  assert.deepEqual(r.tokens, alone.tokens);
  assert.deepEqual(r.sequences[0], [...long.slice(3), ...r.tokens[0]]);
  assert.deepEqual((await generate(model, [short], opts)).truncated, [0]);
});

test('perplexity refuses windows longer than the model\'s positions', () => {
  const model = tiny().model();
  const ids = Array.from({ length: 80 }, (_, i) => 3 + (i % 50));
  assert.throws(() => perplexity(model, ids, { seqLen: 40 }), /windows of 40 tokens are longer than the model's 32 positions/);
  assert.ok(Number.isFinite(perplexity(model, ids, { seqLen: 32 }).perplexity));
});

test('dynamic NTK scaling reaches factor × the trained length; other models stop at max_position_embeddings', () => {
  const dyn = tiny({ rope_scaling: { rope_type: 'dynamic', factor: 4 } }).model();
  assert.equal(dyn.maxPositions, 128);
  assert.equal(tiny({ rope_scaling: { rope_type: 'linear', factor: 4 } }).model().maxPositions, 32);
});

test('token ids outside the vocabulary are typed errors naming row, position, id and vocab size, before any kernel runs', async () => {
  const model = tiny().model();
  await assert.rejects(generate(model, [[1, 2], [3, 64, 5]], { maxNewTokens: 2 }), (e: Error) =>
    e instanceof TokenIdError && e instanceof RangeError && e.row === 1 && e.position === 1 && e.id === 64 && e.vocabSize === 64 &&
    /prompt: row 1, position 1 is token id 64, outside the vocabulary \(vocab_size 64/.test(e.message));
  await assert.rejects(generate(model, [[-1]], { maxNewTokens: 2 }), /row 0, position 0 is token id -1, outside the vocabulary/);
  assert.throws(() => model.forward([[3, 4], [5, 1000]]), (e: Error) => e instanceof TokenIdError && /inputIds: row 1, position 1 is token id 1000/.test(e.message));
  assert.throws(() => model.forward({ ids: Int32Array.from([1, 2, 3, 99]), batch: 2 }), /row 1, position 1 is token id 99/);
});
