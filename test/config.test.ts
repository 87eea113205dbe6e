// config.json reader: impossible values and sizes past CONFIG_LIMITS are ConfigErrors naming the file, the key and
// the value, before anything is allocated from them (a layer count of 10⁹ would exhaust the heap; eps, θ or RoPE
// factors ≤ 0 and 0 layers would give garbage tokens without an error); settings lowbit does not implement
// (activations, LayerNorms without weights) are UnsupportedModelErrors. Real configs (goldens, shared models,
// presets) still parse.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CONFIG_LIMITS, ConfigError, parseConfig, readConfig, UnsupportedModelError, type LlamaConfig, type OptConfig } from '../src/io/config.js';
import { MODEL_PRESETS } from '../src/plan/plan.js';
import { SHAPES } from '../src/models/random.js';
import { GOLDEN_DIR, ROOT, sharedData } from './helpers.js';

const LLAMA = { model_type: 'llama', hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 };
const OPT = { model_type: 'opt', hidden_size: 64, ffn_dim: 96, num_hidden_layers: 2, num_attention_heads: 4 };

/** parseConfig must throw a ConfigError whose message names the source, the key and (when given) the value. */
function rejects(json: Record<string, unknown>, key: string, value?: string): void {
  assert.throws(() => parseConfig(json, '/m/config.json'), (e: Error) => {
    assert.ok(e instanceof ConfigError, `${e.name}: ${e.message}`);
    assert.match(e.message, /^\/m\/config\.json: /);
    assert.ok(e.message.includes(key), `"${key}" not in: ${e.message}`);
    if (value !== undefined) assert.ok(e.message.includes(value), `"${value}" not in: ${e.message}`);
    return true;
  });
}

test('sizes past the limits are ConfigErrors, not heap exhaustion', () => {
  rejects({ ...LLAMA, num_hidden_layers: 1e9 }, 'num_hidden_layers', '1000000000');
  rejects({ ...LLAMA, hidden_size: 1 << 20, head_dim: 16 }, 'hidden_size', String(1 << 20));
  rejects({ ...LLAMA, num_attention_heads: 4096, num_key_value_heads: 1, head_dim: 16 }, 'num_attention_heads', '4096');
  rejects({ ...LLAMA, num_key_value_heads: 2048 }, 'num_key_value_heads', '2048');
  rejects({ ...LLAMA, head_dim: 1 << 14 }, 'head_dim', String(1 << 14));
  rejects({ ...LLAMA, hidden_size: 65536 }, 'head_dim of 16384');                          // derived: 65536 / 4 heads
  rejects({ ...LLAMA, intermediate_size: 1e12 }, 'intermediate_size', '1000000000000');
  rejects({ ...LLAMA, vocab_size: 1e8 }, 'vocab_size', '100000000');
  rejects({ ...LLAMA, max_position_embeddings: 2 ** 40 }, 'max_position_embeddings');
  rejects({ ...LLAMA, model_type: 'mistral', sliding_window: 2 ** 40 }, 'sliding_window');
  rejects({ ...OPT, ffn_dim: 1e9 }, 'ffn_dim', '1000000000');
  rejects({ ...OPT, word_embed_proj_dim: 1e6 }, 'word_embed_proj_dim', '1000000');
  // The limit itself is accepted.
  assert.equal(parseConfig({ ...LLAMA, num_hidden_layers: CONFIG_LIMITS.num_hidden_layers }).num_hidden_layers, 1024);
});

test('zero sizes and impossible numbers are rejected when reading', () => {
  for (const k of ['num_hidden_layers', 'num_attention_heads', 'hidden_size', 'intermediate_size', 'num_key_value_heads', 'vocab_size', 'max_position_embeddings', 'head_dim']) {
    rejects({ ...LLAMA, [k]: 0 }, k, '0');
  }
  rejects({ ...LLAMA, rms_norm_eps: 0 }, 'rms_norm_eps', '0');
  rejects({ ...LLAMA, rms_norm_eps: -1e-6 }, 'rms_norm_eps', '-0.000001');
  rejects({ ...LLAMA, rope_theta: 0 }, 'rope_theta', '0');
  rejects({ ...LLAMA, rope_theta: -10000 }, 'rope_theta', '-10000');
  rejects({ ...LLAMA, rope_theta: 1e-300 }, 'rope_theta', '1e-300');          // inv_freq overflows float32
  rejects({ ...LLAMA, rope_theta: 500000, rope_parameters: { rope_type: 'default', rope_theta: -1 } }, 'rope_parameters.rope_theta', '-1');
  rejects({ ...LLAMA, rope_parameters: { rope_type: 'default', rope_theta: 0 } }, 'rope_parameters.rope_theta', '0');
  rejects({ ...LLAMA, rope_parameters: { rope_type: 'default', rope_theta: '1e4' } }, 'rope_parameters.rope_theta', '"1e4"');
  rejects({ ...LLAMA, hidden_size: Infinity }, 'hidden_size');
  rejects({ ...LLAMA, rms_norm_eps: NaN }, 'rms_norm_eps');
  rejects({ ...LLAMA, num_hidden_layers: 2.5 }, 'num_hidden_layers', '2.5');
  rejects({ ...OPT, ffn_dim: 0 }, 'ffn_dim', '0');
  rejects({ ...OPT, word_embed_proj_dim: 0 }, 'word_embed_proj_dim', '0');
});

test('RoPE: base > 1, scaling factors ≥ 1, llama3 factors positive and bands ordered', () => {
  rejects({ ...LLAMA, rope_scaling: { rope_type: 'linear', factor: 0 } }, 'rope_scaling.factor', '0');
  rejects({ ...LLAMA, rope_parameters: { rope_type: 'dynamic', factor: -2, rope_theta: 1e4 } }, 'rope_parameters.factor', '-2');
  rejects({ ...LLAMA, rope_scaling: { type: 'dynamic', factor: 2, original_max_position_embeddings: 0 } }, 'original_max_position_embeddings', '0');
  rejects({ ...LLAMA, rope_scaling: { type: 'linear', factor: 1e-300 } }, 'rope_scaling.factor', '1e-300');   // inv_freq / factor = Infinity
  rejects({ ...LLAMA, rope_scaling: { type: 'linear', factor: 0.5 } }, 'rope_scaling.factor', '0.5');       // transformers: ≥ 1
  rejects({ ...LLAMA, rope_scaling: { type: 'linear' } }, 'rope_scaling');
  const l3 = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
  assert.deepEqual((parseConfig({ ...LLAMA, rope_scaling: l3 }) as LlamaConfig).rope_scaling, l3);
  rejects({ ...LLAMA, rope_scaling: { ...l3, low_freq_factor: 0 } }, 'rope_scaling.low_freq_factor', '0');
  rejects({ ...LLAMA, rope_scaling: { ...l3, high_freq_factor: -4 } }, 'rope_scaling.high_freq_factor', '-4');
  rejects({ ...LLAMA, rope_scaling: { ...l3, high_freq_factor: 1 } }, 'high_freq_factor');          // band of width 0
  rejects({ ...LLAMA, rope_scaling: { ...l3, original_max_position_embeddings: 81.5 } }, 'original_max_position_embeddings', '81.5');
  rejects({ ...LLAMA, rope_scaling: { ...l3, original_max_position_embeddings: -1 } }, 'original_max_position_embeddings', '-1');
  // A non-object used to be read as "no scaling".
  rejects({ ...LLAMA, rope_scaling: 'linear' }, 'rope_scaling', '"linear"');
  rejects({ ...LLAMA, rope_parameters: [1, 2] }, 'rope_parameters');
  assert.throws(() => parseConfig({ ...LLAMA, rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'c.json'), UnsupportedModelError);
});

test('shapes that no layer can hold are rejected', () => {
  rejects({ ...LLAMA, head_dim: 15 }, 'head_dim', '15');                                  // RoPE needs pairs
  rejects({ ...LLAMA, hidden_size: 66 }, 'hidden_size');                                   // 66 / 4 heads, no head_dim
  rejects({ ...OPT, hidden_size: 66 }, 'hidden_size', '66');                               // OPT has no head_dim
  rejects({ ...LLAMA, num_key_value_heads: 3 }, 'num_key_value_heads');
  rejects({ ...LLAMA, layer_types: 'sliding_attention' }, 'layer_types');
  rejects({ ...LLAMA, architectures: 5 }, 'architectures', '5');
  rejects({ ...LLAMA, torch_dtype: 16 }, 'torch_dtype', '16');
  rejects({ ...LLAMA, eos_token_id: [1, '2'] }, 'eos_token_id');
  rejects({ ...LLAMA, model_type: 'qwen2', max_window_layers: -1 }, 'max_window_layers', '-1');
  // Nesting deep enough to overflow JSON.stringify while the message is written (before: a RangeError).
  rejects({ ...LLAMA, hidden_act: JSON.parse(`${'['.repeat(100_000)}${']'.repeat(100_000)}`) }, 'hidden_act', 'a deeply nested list');
  // Legitimate oddities still parse: −1 token ids, an explicit head_dim that does not divide hidden_size.
  assert.equal(parseConfig({ ...LLAMA, hidden_size: 66, head_dim: 16, pad_token_id: -1 }).pad_token_id, -1);
});

test('activations and LayerNorms that lowbit does not implement are UnsupportedModelErrors naming the file, key and value', () => {
  const unsupported = (json: Record<string, unknown>, re: RegExp) => assert.throws(() => parseConfig(json, '/m/config.json'),
    (e: Error) => e instanceof UnsupportedModelError && re.test(e.message));
  for (const model_type of ['llama', 'mistral', 'qwen2']) {
    unsupported({ ...LLAMA, model_type, hidden_act: 'gelu' }, new RegExp(`^/m/config\\.json: "hidden_act" "gelu" is not supported for ${model_type} \\(supported: silu, swish\\)$`));
  }
  unsupported({ ...LLAMA, hidden_act: 'relu' }, /"hidden_act" "relu"/);
  unsupported({ ...OPT, activation_function: 'gelu' }, /^\/m\/config\.json: "activation_function" "gelu" is not supported for opt \(supported: relu\)$/);
  unsupported({ ...OPT, layer_norm_elementwise_affine: false }, /^\/m\/config\.json: "layer_norm_elementwise_affine" false is not supported \(only true/);
  // transformers' ACT2FN maps "swish" to SiLU too; the model code sees one name.
  assert.equal((parseConfig({ ...LLAMA, hidden_act: 'swish' }) as LlamaConfig).hidden_act, 'silu');
  assert.equal((parseConfig(LLAMA) as LlamaConfig).hidden_act, 'silu');
  const opt = parseConfig({ ...OPT, activation_function: 'relu', layer_norm_elementwise_affine: true }) as OptConfig;
  assert.equal(opt.activation_function, 'relu');
  rejects({ ...OPT, activation_function: 5 }, 'activation_function', '5');
});

test('readConfig names the file; long values are cut short in messages', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-config-'));
  try {
    const path = join(dir, 'config.json');
    writeFileSync(path, JSON.stringify({ ...LLAMA, rms_norm_eps: 0 }));
    assert.throws(() => readConfig(path), (e: Error) => e instanceof ConfigError && e.message.startsWith(`${path}: "rms_norm_eps" must be a number > 0, got 0`));
    writeFileSync(path, JSON.stringify({ ...LLAMA, hidden_act: 'x'.repeat(100_000), rope_theta: 'y'.repeat(100_000) }));
    assert.throws(() => readConfig(path), (e: Error) => e instanceof ConfigError && e.message.length < 300);
    writeFileSync(path, '{"model_type": "llama", "rms_norm_eps": NaN}');     // Python's json.dump writes NaN
    assert.throws(() => readConfig(path), (e: Error) => e instanceof ConfigError && e.message.startsWith(path));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('every real config in the repository still parses', () => {
  const files = readdirSync(GOLDEN_DIR).map((d) => join(GOLDEN_DIR, d, 'config.json')).filter(existsSync);
  files.push(join(ROOT, 'models', 'kjv-demo', 'config.json'));
  const data = sharedData();
  if (data) for (const d of readdirSync(join(data, 'models'))) if (existsSync(join(data, 'models', d, 'config.json'))) files.push(join(data, 'models', d, 'config.json'));
  assert.ok(files.length >= 11);
  for (const f of files) {
    const c = readConfig(f);
    assert.equal(c.model_type, JSON.parse(readFileSync(f, 'utf8')).model_type, f);
  }
  for (const [name, raw] of [...Object.entries(MODEL_PRESETS), ...Object.entries(SHAPES)]) parseConfig(raw, name);
  const opt = parseConfig(OPT) as OptConfig;
  assert.equal(opt.word_embed_proj_dim, 64);
});
