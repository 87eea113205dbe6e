// Fuzz the config.json and generation-config readers: random JSON values, types, sizes and nesting, and mutations
// of real configs. The only errors allowed are the typed ones (ConfigError and its UnsupportedModelError,
// GenerationConfigError); no case may hang; and whatever is accepted must be usable (sizes within limits, positive
// eps/theta/factors, finite RoPE frequencies, a sane resolved generation), and a small accepted config builds a
// model with weights of its shapes that runs a forward pass to finite logits.
// Seeded: a failure prints the seed and case number, and LOWBIT_FUZZ_SEED / LOWBIT_FUZZ_CASES replay or widen it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONFIG_LIMITS, ConfigError, parseConfig, readConfig, type LlamaConfig, type ModelConfig } from '../src/io/config.js';
import { GenerationConfigError, normalizeGenerationConfig, resolveGeneration, type GenerationConfig } from '../src/generate/config.js';
import { refBackend } from '../src/backend/ref/index.js';
import { Weights } from '../src/models/model.js';
import { buildModel } from '../src/models/registry.js';
import { ropeInvFreq } from '../src/nn/rope.js';
import { Tensor } from '../src/tensor/tensor.js';
import { setWarningHandler } from '../src/util/warn.js';
import { GOLDEN_DIR, Rand, ROOT, sharedData } from './helpers.js';

const SEED = Number(process.env.LOWBIT_FUZZ_SEED ?? 20240611);
const CASES = Number(process.env.LOWBIT_FUZZ_CASES ?? 8000);
/**
 * A single case slower than this counts as a hang. Parsing a config takes microseconds and building a small model
 * milliseconds; the margin is for a loaded two-core CI machine.
 */
const SLOW_MS = 5000;
/** Accepted configs whose weights have at most this many elements are built and run; larger ones only parse. */
const BUILD_ELEMS = 1 << 18;

const NUMBERS = [0, -0, 1, -1, 2, 3, 4, 8, 15, 16, 64, 0.5, 1e-6, -1e-6, 1e-300, 1e9, 1e308, -1e308, 2 ** 31, 2 ** 32, 2 ** 53,
  2 ** 53 + 2, 1023, 1024, 1025, 4096, 4097, 65536, 65537, 1 << 20, (1 << 20) + 1, 10_000_000, 10_000_001, 1 << 26, 2 ** 27,
  NaN, Infinity, -Infinity, 10000, 500000, 0.9, 1.5, 20, 50];
const STRINGS = ['', 'llama', 'mistral', 'qwen2', 'opt', 'gpt2', 'silu', 'relu', 'linear', 'dynamic', 'llama3', 'default', 'yarn',
  'full_attention', 'sliding_attention', 'false', 'true', '2', 'long', 'NaN', '__proto__', 'constructor', 'bfloat16', '\u0000', '💥'];

function randomString(r: Rand): string {
  if (r.chance(0.7)) return r.pick(STRINGS);
  const n = r.chance(0.05) ? 10_000 + r.int(100_000) : r.int(20);
  return Array.from({ length: Math.min(n, 64) }, () => String.fromCharCode(r.int(0x3000))).join('').repeat(Math.ceil(n / 64)).slice(0, n);
}

function randomNumber(r: Rand): number {
  const x = r.next();
  if (x < 0.6) return r.pick(NUMBERS);
  if (x < 0.8) return r.int(200) - 20;
  return (r.next() - 0.5) * 10 ** r.int(20);
}

/** Deep nesting built iteratively (so that building it cannot overflow the stack, only readers that recurse). */
function deep(r: Rand): unknown {
  let v: unknown = r.pick(NUMBERS);
  const depth = 1000 + r.int(20_000);
  const asList = r.chance(0.5);
  for (let i = 0; i < depth; i++) v = asList ? [v] : { a: v };
  return v;
}

function randomValue(r: Rand, keys: readonly string[], depth = 0): unknown {
  const x = r.next();
  if (x < 0.25) return randomNumber(r);
  if (x < 0.4) return randomString(r);
  if (x < 0.5) return r.chance(0.5);
  if (x < 0.58) return null;
  if (x < 0.6) return undefined;
  if (x < 0.61) return deep(r);
  if (depth > 4) return r.int(10);
  if (x < 0.8) {
    // Long lists hold scalars of one kind (they reach further into readers that check element types, and a long
    // list of nested values would multiply into gigabytes); short ones hold anything.
    if (r.chance(0.03)) {
      const n = 1000 + r.int(5000), ints = r.chance(0.5);
      return Array.from({ length: n }, () => (ints ? r.int(100) : r.pick(['full_attention', 'sliding_attention'])));
    }
    return Array.from({ length: r.int(6) }, () => randomValue(r, keys, depth + 1));
  }
  return randomObject(r, keys, depth + 1);
}

function randomObject(r: Rand, keys: readonly string[], depth = 0): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  const n = r.int(12);
  for (let i = 0; i < n; i++) o[r.chance(0.85) ? r.pick(keys) : randomString(r)] = randomValue(r, keys, depth);
  return o;
}

const CONFIG_KEYS = ['model_type', 'vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads',
  'head_dim', 'intermediate_size', 'ffn_dim', 'word_embed_proj_dim', 'max_position_embeddings', 'tie_word_embeddings',
  'bos_token_id', 'eos_token_id', 'pad_token_id', 'torch_dtype', 'dtype', 'architectures', 'hidden_act', 'rms_norm_eps',
  'rope_theta', 'rope_scaling', 'rope_parameters', 'attention_bias', 'mlp_bias', 'sliding_window', 'use_sliding_window',
  'max_window_layers', 'layer_types', 'do_layer_norm_before', 'activation_function', 'enable_bias',
  'layer_norm_elementwise_affine', '_remove_final_layer_norm', 'quantization_config'] as const;
const ROPE_KEYS = ['rope_type', 'type', 'factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings', 'rope_theta'];

function realConfigs(): Record<string, unknown>[] {
  const files = readdirSync(GOLDEN_DIR).map((d) => join(GOLDEN_DIR, d, 'config.json'));
  files.push(join(ROOT, 'models', 'kjv-demo', 'config.json'));
  const data = sharedData();
  if (data) for (const d of readdirSync(join(data, 'models'))) files.push(join(data, 'models', d, 'config.json'));
  return files.filter(existsSync).map((f) => JSON.parse(readFileSync(f, 'utf8')));
}

/** A real config with one to four keys changed, deleted or given a boundary value (rope dicts included). */
function mutate(r: Rand, base: Record<string, unknown>): Record<string, unknown> {
  const c = structuredClone(base);
  for (let m = 1 + r.int(4); m > 0; m--) {
    const rope = (['rope_scaling', 'rope_parameters'] as const).find((k) => c[k] && typeof c[k] === 'object' && !Array.isArray(c[k]));
    const target = rope && r.chance(0.3) ? (c[rope] as Record<string, unknown>) : c;
    const key = target === c ? (r.chance(0.7) ? r.pick(Object.keys(c).concat(CONFIG_KEYS)) : r.pick(CONFIG_KEYS)) : r.pick(ROPE_KEYS);
    const x = r.next();
    if (x < 0.15) delete target[key];
    else if (x < 0.6) target[key] = r.pick(NUMBERS);
    else if (x < 0.7 && key === 'rope_scaling') {
      target[key] = { rope_type: r.pick(['linear', 'dynamic', 'llama3']), factor: r.pick(NUMBERS), low_freq_factor: r.pick(NUMBERS),
        high_freq_factor: r.pick(NUMBERS), original_max_position_embeddings: r.pick(NUMBERS) };
    }
    else target[key] = randomValue(r, target === c ? CONFIG_KEYS : ROPE_KEYS);
  }
  return c;
}

/**
 * The tensors a model of config `c` reads, by their HF names, as zeros; null when they would hold more than
 * BUILD_ELEMS elements (a fuzzed config may ask for 1024 layers of hidden size 65536).
 */
function tinyTensors(c: ModelConfig): Map<string, Tensor> | null {
  const shapes = new Map<string, number[]>();
  let total = 0;
  const add = (name: string, ...shape: number[]) => { shapes.set(name, shape); total += shape.reduce((a, b) => a * b, 1); };
  const H = c.hidden_size, V = c.vocab_size;
  const linear = (name: string, out: number, inp: number, bias: boolean) => { add(`${name}.weight`, out, inp); if (bias) add(`${name}.bias`, out); };
  if (c.model_type === 'opt') {
    const E = c.word_embed_proj_dim, F = c.ffn_dim, d = 'model.decoder', b = c.enable_bias;
    add(`${d}.embed_tokens.weight`, V, E);
    add(`${d}.embed_positions.weight`, c.max_position_embeddings + 2, H);   // OPT's learned positions start at 2
    if (E !== H) { linear(`${d}.project_in`, H, E, false); linear(`${d}.project_out`, E, H, false); }
    for (let i = 0; i < c.num_hidden_layers && total <= BUILD_ELEMS; i++) {
      const p = `${d}.layers.${i}`;
      for (const n of ['self_attn_layer_norm', 'final_layer_norm']) { add(`${p}.${n}.weight`, H); add(`${p}.${n}.bias`, H); }
      for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) linear(`${p}.self_attn.${n}`, H, H, b);
      linear(`${p}.fc1`, F, H, b);
      linear(`${p}.fc2`, H, F, b);
    }
    if (c.do_layer_norm_before && !c._remove_final_layer_norm) { add(`${d}.final_layer_norm.weight`, H); add(`${d}.final_layer_norm.bias`, H); }
    if (!c.tie_word_embeddings) add('lm_head.weight', V, E);
  } else {
    const I = c.intermediate_size, hd = c.head_dim, qOut = c.num_attention_heads * hd, kvOut = c.num_key_value_heads * hd;
    // Qwen2 has q/k/v biases whatever attention_bias says (src/models/qwen2.ts).
    const qkv = c.model_type === 'qwen2' || c.attention_bias, o = c.model_type !== 'qwen2' && c.attention_bias;
    const mlp = c.model_type !== 'qwen2' && c.mlp_bias;
    add('model.embed_tokens.weight', V, H);
    for (let i = 0; i < c.num_hidden_layers && total <= BUILD_ELEMS; i++) {
      const p = `model.layers.${i}`;
      add(`${p}.input_layernorm.weight`, H);
      add(`${p}.post_attention_layernorm.weight`, H);
      linear(`${p}.self_attn.q_proj`, qOut, H, qkv);
      linear(`${p}.self_attn.k_proj`, kvOut, H, qkv);
      linear(`${p}.self_attn.v_proj`, kvOut, H, qkv);
      linear(`${p}.self_attn.o_proj`, H, qOut, o);
      linear(`${p}.mlp.gate_proj`, I, H, mlp);
      linear(`${p}.mlp.up_proj`, I, H, mlp);
      linear(`${p}.mlp.down_proj`, H, I, mlp);
    }
    add('model.norm.weight', H);
    if (!c.tie_word_embeddings) add('lm_head.weight', V, H);
  }
  if (total > BUILD_ELEMS) return null;
  return new Map([...shapes].map(([name, shape]) => [name, Tensor.zeros('F32', shape)]));
}

let built = 0;

/** An accepted config that is small enough builds a model from weights of its shapes, which runs to finite logits. */
function buildAccepted(c: ModelConfig): void {
  const tensors = tinyTensors(c);
  if (!tensors) return;
  const model = buildModel(c, new Weights(tensors, 'fuzz'), refBackend);
  const T = Math.min(3, model.maxPositions);
  const logits = model.forward([Array.from({ length: T }, (_, i) => (i * 7) % c.vocab_size)], { logits: 'last' });
  assert.deepEqual([...logits.shape], [1, 1, c.vocab_size]);
  for (const x of logits.f32) assert.ok(Number.isFinite(x), `logit ${x}`);
  built++;
}

/** What an accepted config promises to the model code. */
function checkAccepted(c: ModelConfig): void {
  for (const [k, lim] of Object.entries(CONFIG_LIMITS)) {
    const v = (c as unknown as Record<string, unknown>)[k];
    if (v === undefined || v === null) continue;
    assert.ok(Number.isInteger(v) && (v as number) >= 1 && (v as number) <= lim, `${k} = ${String(v)} accepted`);
  }
  if (c.model_type === 'opt') {
    assert.equal(c.hidden_size % c.num_attention_heads, 0);
    buildAccepted(c);
    return;
  }
  const l = c as LlamaConfig;
  assert.ok(l.rms_norm_eps > 0 && Number.isFinite(l.rms_norm_eps), `rms_norm_eps ${l.rms_norm_eps} accepted`);
  assert.ok(l.rope_theta > 0 && Number.isFinite(l.rope_theta), `rope_theta ${l.rope_theta} accepted`);
  assert.equal(l.head_dim % 2, 0);
  assert.equal(l.num_attention_heads % l.num_key_value_heads, 0);
  assert.equal(l.layer_types.length, l.num_hidden_layers);
  const s = l.rope_scaling;
  if (s) assert.ok(s.factor > 0 && (s.rope_type !== 'llama3' || s.high_freq_factor! > s.low_freq_factor! && s.low_freq_factor! > 0));
  for (const pos of [0, 4095, l.max_position_embeddings * 2]) {
    const inv = ropeInvFreq(l, pos);
    assert.equal(inv.length, l.head_dim / 2);
    for (const f of inv) assert.ok(Number.isFinite(f), `inv_freq ${f} at position ${pos}`);
  }
  buildAccepted(c);
}

/** Run one case: typed errors only, and quickly. Returns whether the input was accepted. */
function runCase(what: string, i: number, input: unknown, fn: () => void, typed: (e: unknown) => boolean): boolean {
  const t0 = performance.now();
  let ok = true;
  try {
    fn();
  } catch (e) {
    ok = false;
    if (!typed(e)) {
      let shown: string;
      try { shown = JSON.stringify(input)?.slice(0, 400) ?? String(input); } catch { shown = '(deeply nested)'; }
      assert.fail(`${what} case ${i} (seed ${SEED}) threw ${(e as Error)?.stack ?? String(e)}\ninput: ${shown}`);
    }
  }
  const ms = performance.now() - t0;
  assert.ok(ms < SLOW_MS, `${what} case ${i} (seed ${SEED}) took ${ms.toFixed(0)} ms`);
  return ok;
}

test('config.json fuzz: random and mutated real configs give a usable config or a ConfigError', { timeout: 120_000 }, (t) => {
  const r = new Rand(SEED);
  const reals = realConfigs();
  assert.ok(reals.length >= 11);
  let accepted = 0;
  built = 0;
  // Unused-tensor warnings from the builds are not under test.
  const prev = setWarningHandler(() => {}, { reset: true });
  try {
    for (let i = 0; i < CASES; i++) {
      const x = r.next();
      const input = x < 0.1 ? randomValue(r, CONFIG_KEYS)
        : x < 0.4 ? { model_type: r.pick(['llama', 'mistral', 'qwen2', 'opt', 'gpt2']), ...randomObject(r, CONFIG_KEYS) }
          : mutate(r, r.pick(reals));
      if (runCase('config', i, input, () => checkAccepted(parseConfig(input, 'fuzz/config.json')),
        (e) => e instanceof ConfigError && e.message.startsWith('fuzz/config.json: '))) accepted++;
    }
  } finally {
    setWarningHandler(prev, { reset: true });
  }
  // The mutations must leave enough configs valid to exercise the accepted path, and break enough to test errors;
  // and enough accepted configs must be small enough to build.
  t.diagnostic(`${accepted} of ${CASES} accepted, ${built} built and run`);
  assert.ok(accepted > CASES * 0.05 && accepted < CASES * 0.9, `${accepted} of ${CASES} accepted`);
  assert.ok(built > accepted * 0.2, `only ${built} of ${accepted} accepted configs built`);
});

test('config.json fuzz through the file reader: corrupted text is a ConfigError naming the file', { timeout: 60_000 }, () => {
  const r = new Rand(SEED + 1);
  const texts = realConfigs().map((c) => JSON.stringify(c, null, 2));
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-fuzz-config-'));
  try {
    const path = join(dir, 'config.json');
    for (let i = 0; i < Math.ceil(CASES / 40); i++) {
      const chars = r.pick(texts).split('');
      for (let m = 1 + r.int(3); m > 0; m--) {
        const at = r.int(chars.length);
        const op = r.int(3);
        if (op === 0) chars.splice(at, 1);
        else if (op === 1) chars.splice(at, 0, r.pick(['{', '}', '[', ']', '"', ',', ':', '0', '-', 'e', '9', ' ', 'N', 'null']));
        else chars[at] = String.fromCharCode(r.int(128));
      }
      writeFileSync(path, chars.join(''));
      runCase('config file', i, chars.join(''), () => checkAccepted(readConfig(path)),
        (e) => e instanceof ConfigError && e.message.startsWith(`${path}: `));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const GEN_KEYS = ['max_new_tokens', 'max_length', 'min_new_tokens', 'min_length', 'do_sample', 'temperature', 'top_k', 'top_p',
  'min_p', 'repetition_penalty', 'no_repeat_ngram_size', 'eos_token_id', 'pad_token_id', 'bos_token_id', 'stop_strings', 'seed',
  'maxNewTokens', 'maxLength', 'minNewTokens', 'minLength', 'doSample', 'temperature', 'topK', 'topP', 'minP',
  'repetitionPenalty', 'noRepeatNgramSize', 'eosTokenId', 'padTokenId', 'bosTokenId', 'stopStrings', 'seed',
  'num_beams', 'typical_p', 'transformers_version', '_from_model_config', 'use_cache', 'tokenizer', 'truncation', 'constructor'];
const ALLOW = ['tokenizer', 'modelDefaults', 'truncation', 'onProgress'];

/** Mostly a plausible value for the key (so that cases get past the first check), sometimes anything. */
function genValue(r: Rand, key: string): unknown {
  if (r.chance(0.2)) return randomValue(r, GEN_KEYS);
  const k = key.toLowerCase().replace(/_/g, '');
  if (k === 'dosample') return r.chance(0.5);
  if (k.endsWith('tokenid')) return r.chance(0.2) ? [r.int(40), r.int(40)] : r.chance(0.1) ? null : r.int(40);
  if (k === 'stopstrings') return r.pick(['###', 'stop', ['a', 'b'], []]);
  if (['temperature', 'topp', 'minp', 'repetitionpenalty'].includes(k)) return r.pick([0, 0.1, 0.5, 0.9, 1, 1.5]);
  if (k === 'maxlength') return r.int(60);
  return r.int(r.chance(0.9) ? 20 : 100_000);
}

function genObject(r: Rand, strictish: boolean): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (let n = r.int(6); n > 0; n--) {
    const key = r.chance(0.95) ? r.pick(strictish && r.chance(0.9) ? GEN_KEYS.slice(0, 32) : GEN_KEYS) : randomString(r);
    o[key] = genValue(r, key);
  }
  return o;
}

function checkResolved(g: ReturnType<typeof resolveGeneration>): void {
  assert.ok(Number.isSafeInteger(g.maxNewTokens) && g.maxNewTokens >= 0, `maxNewTokens ${g.maxNewTokens}`);
  assert.ok(Number.isFinite(g.minNewTokens));
  assert.equal(typeof g.doSample, 'boolean');
  if (g.doSample) assert.ok(g.temperature > 0 && Number.isFinite(g.temperature), `sampling at temperature ${g.temperature}`);
  assert.ok(g.topP >= 0 && g.topP <= 1 && Number.isSafeInteger(g.topK) && g.topK >= 0);
  assert.ok(g.minP === null || (g.minP >= 0 && g.minP <= 1));
  assert.ok(g.repetitionPenalty > 0 && Number.isFinite(g.repetitionPenalty));
  assert.ok(g.eos.every((id) => Number.isSafeInteger(id)) && Number.isSafeInteger(g.padTokenId) && Number.isSafeInteger(g.seed));
  assert.ok(g.stopStrings.every((s) => typeof s === 'string' && s.length > 0));
}

test('generation config fuzz: file and call options give a sane resolution or a GenerationConfigError', { timeout: 120_000 }, (t) => {
  const r = new Rand(SEED + 2);
  const prev = setWarningHandler(() => {}, { reset: true });
  let resolved = 0;
  try {
    for (let i = 0; i < CASES; i++) {
      const strict = r.chance(0.5);
      const file = r.chance(0.05) ? randomValue(r, GEN_KEYS) : genObject(r, false);
      const call = r.chance(0.05) ? randomValue(r, GEN_KEYS) : genObject(r, strict);
      const promptLen = 1 + r.int(r.chance(0.9) ? 30 : 5000);
      const typed = (e: unknown) => e instanceof GenerationConfigError;
      if (runCase('generation config', i, { file, call, strict, promptLen }, () => {
        const fromFile = normalizeGenerationConfig(file, 'fuzz/generation_config.json');
        const fromCall = strict ? normalizeGenerationConfig(call, 'generate options', { strict: true, allow: ALLOW }) : call as GenerationConfig;
        checkResolved(resolveGeneration([{ eosTokenId: 2, padTokenId: null }, fromFile, fromCall], promptLen));
      }, typed)) resolved++;
    }
  } finally {
    setWarningHandler(prev, { reset: true });
  }
  t.diagnostic(`${resolved} of ${CASES} resolved`);
  assert.ok(resolved > CASES * 0.05 && resolved < CASES * 0.95, `${resolved} of ${CASES} resolved`);
});
