// Build, then load: bitsandbytes checkpoints saved by transformers load by name through the linear factory, and
// quantization_config is checked where it enters (src/io/quantconfig.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { refBackend } from '../src/backend/ref/index.js';
import { ConfigError, readConfig, UnsupportedModelError } from '../src/io/config.js';
import { loadStateDict } from '../src/io/checkpoint.js';
import { parseQuantizationConfig, type BitsAndBytesSpec } from '../src/io/quantconfig.js';
import { keepsFloat } from '../src/models/factory.js';
import { Weights } from '../src/models/model.js';
import { buildModel } from '../src/models/registry.js';
import { Linear, type LinearLike } from '../src/nn/layers.js';
import { Linear4bit, Linear8bitLt } from '../src/nn/quant.js';
import { Bnb4Error, bnb4ToStateDict } from '../src/quant/bnb4.js';
import { Int8Error, int8ToStateDict } from '../src/quant/int8.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { dequantizeWeight, type Bnb4QuantizedWeight, type Int8QuantizedWeight } from '../src/quant/qweight.js';
import { setWarningHandler } from '../src/util/warn.js';
import { GOLDEN_DIR, relErr, ROOT } from './helpers.js';

const FIX = join(ROOT, 'test', 'fixtures', 'bnb');
const IDS = [[1, 5, 9, 3, 7, 11, 2, 4], [0, 127, 64, 33, 8, 90, 45, 6]];

/** Run `fn`, returning its value and every warning it emitted (earlier warnings forgotten, so each can fire again). */
async function withWarnings<T>(fn: () => Promise<T>): Promise<{ value: T; warnings: string[] }> {
  const warnings: string[] = [];
  const prev = setWarningHandler((m) => warnings.push(m), { reset: true });
  try {
    return { value: await fn(), warnings };
  } finally {
    setWarningHandler(prev, { reset: true });
  }
}

const qweight = (l: LinearLike): Bnb4QuantizedWeight | Int8QuantizedWeight => (l as Linear4bit | Linear8bitLt).qweight;

/** The worst relative error of a quantized model's weights against the float model's: the scale logits can move by. */
function worstWeightErr(q: Map<string, LinearLike>, f: Map<string, LinearLike>): number {
  let worst = 0;
  for (const [name, l] of q) {
    if (name === 'lm_head') continue;
    worst = Math.max(worst, relErr(dequantizeWeight(qweight(l)), (f.get(name) as Linear).weight.toF32()));
  }
  return worst;
}

test('transformers nf4 (double quant) and int8 saves load by name, lm_head float, logits close to the bf16 model', async () => {
  const float = await fromPretrained(join(FIX, 'hf_llama_bf16'), { backend: 'ref' });
  const ref = float.model.forward(IDS).f32;
  for (const [dir, cls, format] of [['hf_llama_nf4dq', Linear4bit, 'nf4'], ['hf_llama_int8', Linear8bitLt, 'int8']] as const) {
    // ref has matmulQ, so a warning here could only be the unused-tensor one (or an unknown config key).
    const { value: m, warnings } = await withWarnings(() => fromPretrained(join(FIX, dir), { backend: 'ref' }));
    assert.deepEqual(warnings, [], `${dir}: absmax, quant_map, nested_*, quant_state, SCB and weight_format are all read`);
    const lin = m.model.linears();
    assert.equal(lin.size, 8);
    for (const [name, l] of lin) {
      if (name === 'lm_head') { assert.ok(l instanceof Linear); continue; }
      assert.ok(l instanceof cls, `${dir}: ${name} is ${l.constructor.name}`);
      assert.equal(qweight(l).format, format);
    }
    const q = qweight(lin.get('model.layers.0.mlp.down_proj')!);
    if (q.format === 'int8') {
      assert.equal(q.threshold, 6);
    } else {
      assert.ok(q.bnb4.nested && q.bnb4.blocksize === 64 && q.bnb4.dtype === 'bfloat16');
      assert.equal(q.computeDtype, 'bfloat16');
    }
    const y = m.model.forward(IDS).f32;
    assert.ok(y.every(Number.isFinite));
    // The logits move by about the weights' own quantization error (random init, one layer): measured NF4 weights
    // 0.090-0.094, logits 0.130; int8 weights 0.0058-0.0065, logits 0.0123 (activations are rounded to int8 too).
    // Allowed: 2.5x the worst weight error, and more than nothing (a float weight slipping through would show).
    const wErr = worstWeightErr(lin, float.model.linears()), lErr = relErr(y, ref);
    assert.ok(lErr < 2.5 * wErr && lErr > 0.1 * wErr, `${dir}: logits rel. error ${lErr}, weights ${wErr}`);
  }
});

test('a quantized checkpoint missing a side tensor or of the wrong quant type is a typed error naming dir and tensor', () => {
  for (const [dir, drop, E] of [
    ['hf_llama_nf4dq', 'model.layers.0.self_attn.k_proj.weight.nested_quant_map', Bnb4Error],
    ['hf_llama_int8', 'model.layers.0.mlp.up_proj.SCB', Int8Error],
  ] as const) {
    const path = join(FIX, dir);
    const config = readConfig(join(path, 'config.json'));
    const { tensors } = loadStateDict(path, { mmap: false });
    tensors.delete(drop);
    assert.throws(() => buildModel(config, new Weights(tensors, path), refBackend),
      (e: Error) => e instanceof E && e.message.startsWith(`${path}: ${drop}: missing`), drop);
  }
  const path = join(FIX, 'hf_llama_nf4dq'), { tensors } = loadStateDict(path, { mmap: false });
  const config = readConfig(join(path, 'config.json'));
  const fp4 = { ...config, quantization_config: { ...(config.quantization_config as BitsAndBytesSpec), format: 'fp4' as const } };
  assert.throws(() => buildModel(fp4, new Weights(tensors, path), refBackend), /stored as nf4, but .*bnb_4bit_quant_type is fp4/);
  assert.throws(() => buildModel(config, new Weights(tensors, path), refBackend, { quantize: config.quantization_config }),
    (e: Error) => e instanceof ConfigError && /already quantized/.test(e.message));
});

test('quantization_config is checked where it enters, naming file and key', () => {
  const src = '/m/config.json';
  const spec = parseQuantizationConfig({ load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: true, bnb_4bit_compute_dtype: 'torch.bfloat16' }, src);
  assert.deepEqual(spec, { method: 'bitsandbytes', format: 'nf4', doubleQuant: true, computeDtype: 'bfloat16', threshold: 6, skipModules: null });
  // BitsAndBytesConfig's defaults: fp4, no double quant, float32 compute; int8 computes in float16.
  assert.deepEqual(parseQuantizationConfig({ loadIn4bit: true }, src), { method: 'bitsandbytes', format: 'fp4', doubleQuant: false, computeDtype: 'float32', threshold: 6, skipModules: null });
  assert.deepEqual(parseQuantizationConfig({ quant_method: 'bitsandbytes', loadIn8bit: true, llmInt8Threshold: 0, llmInt8SkipModules: ['mlp'] }, src),
    { method: 'bitsandbytes', format: 'int8', doubleQuant: false, computeDtype: 'float16', threshold: 0, skipModules: ['mlp'] });
  assert.equal(parseQuantizationConfig(null, src), null);
  const refuses = (v: unknown, E: typeof ConfigError, re: RegExp, strict = false) =>
    assert.throws(() => parseQuantizationConfig(v, src, { strict }), (e: Error) => e instanceof E && e.message.startsWith(`${src}: `) && re.test(e.message), re.source);
  refuses({ quant_method: 'hqq', nbits: 4 }, UnsupportedModelError, /"quantization_config\.quant_method" "hqq" is not supported \(supported: bitsandbytes, gptq, awq\)/);
  refuses({ quant_method: 'bitsandbytes', load_in_4bit: true, load_in_8bit: true }, ConfigError, /sets both load_in_4bit and load_in_8bit/);
  refuses({ quant_method: 'bitsandbytes' }, ConfigError, /sets neither/);
  refuses({ bits: 4 }, ConfigError, /has no "quant_method"/);
  refuses([1], ConfigError, /"quantization_config" must be an object or null/);
  refuses({ load_in_4bit: 'yes' }, ConfigError, /"quantization_config\.load_in_4bit" must be true or false/);
  refuses({ load_in_4bit: true, bnb_4bit_quant_type: 'int4' }, ConfigError, /bnb_4bit_quant_type" must be "nf4" or "fp4", got "int4"/);
  refuses({ load_in_4bit: true, bnb_4bit_compute_dtype: 'float8' }, ConfigError, /bnb_4bit_compute_dtype/);
  refuses({ load_in_8bit: true, llm_int8_threshold: -1 }, ConfigError, /llm_int8_threshold" must be a number ≥ 0/);
  refuses({ load_in_8bit: true, llm_int8_skip_modules: 'lm_head' }, ConfigError, /llm_int8_skip_modules" must be a list/);
  refuses({ load_in_8bit: true, llm_int8_has_fp16_weight: true }, UnsupportedModelError, /llm_int8_has_fp16_weight" true is not supported/);
  refuses({ load_in_8bit: true, _load_in_8bit: false }, ConfigError, /_load_in_8bit" must be equal to "load_in_8bit"/);
  refuses({ loadIn8bit: true, load_in_8bit: true }, ConfigError, /gives load_in_8bit twice/);
  refuses({ loadIn8bit: true, loadIn8Bit: true }, ConfigError, /"quantization_config\.loadIn8Bit" is not a BitsAndBytesConfig field/, true);
  // From a file, a key transformers may add later is a warning, once.
  const said: string[] = [];
  const prev = setWarningHandler((m) => said.push(m), { reset: true });
  try {
    parseQuantizationConfig({ load_in_8bit: true, bnb_future_knob: 1 }, src);
    parseQuantizationConfig({ load_in_8bit: true, bnb_future_knob: 1 }, src);
    assert.throws(() => parseQuantizationConfig({ load_in_8bit: 1, other_knob: 1 }, src), /load_in_8bit" must be true or false/);
  } finally { setWarningHandler(prev, { reset: true }); }
  assert.deepEqual(said, [`${src}: "quantization_config.bnb_future_knob" is not a BitsAndBytesConfig field lowbit knows; ignored`]);
  // readConfig runs the same checks on config.json.
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-qc-'));
  try {
    const cfg = JSON.parse(JSON.stringify({ model_type: 'llama', hidden_size: 64, num_hidden_layers: 1, num_attention_heads: 4, intermediate_size: 8,
      quantization_config: { quant_method: 'hqq', nbits: 4 } }));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    assert.throws(() => readConfig(join(dir, 'config.json')),
      (e: Error) => e instanceof UnsupportedModelError && e.message.startsWith(join(dir, 'config.json')) && /quant_method" "hqq"/.test(e.message));
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('skip modules match whole dotted segments; lm_head always stays float', () => {
  const spec = parseQuantizationConfig({ load_in_8bit: true, llm_int8_skip_modules: ['mlp', 'model.layers.1.self_attn.q_proj', 'out_proj'] }, 'x')!;
  const keep = (n: string) => keepsFloat(n, spec);
  assert.ok(keep('lm_head'));
  assert.ok(keep('model.layers.0.mlp.down_proj'));
  assert.ok(keep('model.layers.1.self_attn.q_proj'));
  assert.ok(keep('model.decoder.layers.3.self_attn.out_proj'));
  assert.ok(!keep('model.layers.11.self_attn.q_proj'));
  assert.ok(!keep('model.layers.0.self_attn.k_proj'));
  assert.ok(!keep('model.layers.0.mlpx.up_proj'));
  assert.ok(keepsFloat('lm_head', { ...(spec as BitsAndBytesSpec), skipModules: [] }));
});

// ---- quantize on load ----

/** Every tensor of `ours` is in `file` under the same name with the same dtype, shape and bytes. */
function assertSameTensors(ours: Map<string, Tensor>, file: Map<string, Tensor>, what: string): void {
  for (const [name, t] of ours) {
    const theirs = file.get(name);
    assert.ok(theirs, `${what}: ${name} not in the transformers save`);
    assert.equal(t.dtype, theirs.dtype, name);
    assert.deepEqual([...t.shape], [...theirs.shape], name);
    assert.deepEqual(bytes(t), bytes(theirs), name);
  }
}
const bytes = (t: Tensor) => { const d = t.data as unknown as ArrayBufferView; return new Uint8Array(d.buffer, d.byteOffset, d.byteLength); };

test('quantize-on-load of hf_llama_bf16 gives exactly the tensors transformers saved (nf4 + double quant, int8)', async () => {
  const bf16 = join(FIX, 'hf_llama_bf16');
  const mapped = loadStateDict(bf16, { mmap: true }).tensors;
  const before = new Map([...mapped].map(([k, t]) => [k, Uint8Array.from(bytes(t))]));
  const cases = [
    ['hf_llama_nf4dq', { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: 'bfloat16' }],
    ['hf_llama_int8', { load_in_8bit: true }],                                  // snake_case keys, as in config.json
  ] as const;
  for (const [saved, quantizationConfig] of cases) {
    const q = await fromPretrained(bf16, { backend: 'ref', quantizationConfig });
    const file = await fromPretrained(join(FIX, saved), { backend: 'ref' });
    const fileTensors = loadStateDict(join(FIX, saved), { mmap: false }).tensors;
    let layers = 0;
    for (const [name, l] of q.model.linears()) {
      if (name === 'lm_head') { assert.ok(l instanceof Linear); continue; }
      const qw = qweight(l);
      const ours = qw.format === 'int8' ? int8ToStateDict(name, qw.int8) : bnb4ToStateDict(name, qw.bnb4);
      assertSameTensors(ours, fileTensors, saved);
      assert.deepEqual([...ours.keys()].sort(), [...fileTensors.keys()].filter((k) => k.startsWith(`${name}.`)).sort());
      layers++;
    }
    assert.equal(layers, 7);
    const y = q.model.forward(IDS).f32, yFile = file.model.forward(IDS).f32;
    // Same quantized weights; the int8 save also cast embeddings and norms to float16, which moves logits ~1e-9.
    if (saved === 'hf_llama_nf4dq') assert.deepEqual(y, yFile);
    else assert.ok(relErr(y, yFile) < 1e-6, `${relErr(y, yFile)}`);
  }
  // Quantization read the mapped weights and wrote new arrays: every checkpoint byte is as it was.
  for (const [k, t] of loadStateDict(bf16, { mmap: true }).tensors) assert.deepEqual(bytes(t), before.get(k), k);
});

test('every family builds through the factory: OPT, Qwen2, Mistral quantize on load, logits finite and near float', async () => {
  for (const g of ['opt_125m_like', 'opt_350m_like', 'qwen2', 'mistral_sliding']) {
    const dir = join(GOLDEN_DIR, g);
    const float = await fromPretrained(dir, { backend: 'ref' });
    const ref = float.model.forward(IDS.map((r) => r.map((i) => i % float.config.vocab_size))).f32;
    const errs: Record<string, number> = {};
    for (const [key, qc] of [['int8', { loadIn8bit: true }], ['nf4', { loadIn4bit: true, bnb4bitQuantType: 'nf4' }],
      ['fp4', { loadIn4bit: true }]] as const) {
      const m = await fromPretrained(dir, { backend: 'ref', quantizationConfig: qc });
      const lin = m.model.linears();
      // OPT-350m's project_in/out (word_embed_proj_dim 32 ≠ hidden 64) are linears too, quantized as transformers does.
      if (g === 'opt_350m_like') assert.ok(lin.has('model.decoder.project_in') && lin.has('model.decoder.project_out'));
      for (const [name, l] of lin) assert.equal(l instanceof Linear, name === 'lm_head', `${g} ${key}: ${name} is ${l.constructor.name}`);
      const y = m.model.forward(IDS.map((r) => r.map((i) => i % float.config.vocab_size))).f32;
      assert.ok(y.every(Number.isFinite), `${g} ${key}`);
      // 1-2 random-init layers: the logits move by a few times the worst weight error (measured 1.4x-4.6x).
      const wErr = worstWeightErr(lin, float.model.linears());
      errs[key] = relErr(y, ref);
      assert.ok(errs[key] < 6 * wErr && errs[key] > 0, `${g} ${key}: logits ${errs[key]}, weights ${wErr}`);
    }
    // int8 keeps the most, FP4 (default quant type) the least.
    assert.ok(errs.int8 < errs.nf4 && errs.nf4 < errs.fp4, `${g}: ${JSON.stringify(errs)}`);
  }
});

test('quantizationConfig: skip modules stay float, the forward runs without a fallback warning, bad options are typed errors', async () => {
  const dir = join(GOLDEN_DIR, 'opt_125m_like');
  const { value: m, warnings } = await withWarnings(() => fromPretrained(dir, { quantizationConfig: { loadIn8bit: true, llmInt8SkipModules: ['fc1', 'lm_head'] } }));
  for (const [name, l] of m.model.linears()) assert.equal(l instanceof Linear, /fc1$|^lm_head$/.test(name), name);
  const { warnings: fwd } = await withWarnings(async () => { m.model.forward([[1, 2, 3]]); m.model.forward([[4, 5]]); });
  // Whichever backend loaded it (cpu has a native int8 kernel, ref is the definition), int8 needs no fallback.
  assert.deepEqual(fwd, [], `on ${m.model.backend.name}`);
  assert.deepEqual(warnings, []);
  await assert.rejects(fromPretrained(dir, { quantizationConfig: { loadIn4bit: true, bnb4bitQuantTyp: 'nf4' } }),
    (e: Error) => e instanceof ConfigError && /^fromPretrained: "quantizationConfig\.bnb4bitQuantTyp" is not a BitsAndBytesConfig field/.test(e.message));
  // AWQ quantizes after the build: a shape its groups cannot hold is named before any calibration, and without data it says so.
  await assert.rejects(fromPretrained(dir, { quantizationConfig: { quantMethod: 'awq' } as never }), /q_proj: in_features 64 is not a multiple of the group size 128/);
  await assert.rejects(fromPretrained(dir, { quantizationConfig: { quantMethod: 'awq', groupSize: 32 } as never }),
    (e: Error) => e instanceof ConfigError && /AWQ needs calibration data: set dataset/.test(e.message));
  await assert.rejects(fromPretrained(join(FIX, 'hf_llama_int8'), { quantizationConfig: { loadIn8bit: true } }), /already quantized/);
});
