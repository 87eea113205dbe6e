// AWQ folders as AutoAWQ writes them (test/fixtures/awq, built by scripts/fixtures/make_awq_fixtures.py from the spec
// with numpy alone): they load by name, dequantize to numpy's weights, give numpy's logits, run natively on cpu, save
// back as AutoAWQ writes them; codes installed into a float model (installAwq) save in GEMM or GEMV and load back to
// the same logits; a lowbit-written folder meets every requirement of vLLM's AWQ loader (docs/p6-awq-format.md);
// `lowbit bench --format awq4` runs a tiny folder on the native kernels.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPretrained, type LoadedModel } from '../src/api.js';
import { cpuAvailable } from '../src/backend/cpu/index.js';
import { loadStateDict } from '../src/io/checkpoint.js';
import { parseAwqConfig, type AwqQuantizationSpec } from '../src/io/awqconfig.js';
import { savePretrained, SavePretrainedError } from '../src/io/save.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { installAwq } from '../src/models/factory.js';
import { randomLlama } from '../src/models/random.js';
import { Linear } from '../src/nn/layers.js';
import { AwqLinear } from '../src/nn/quant.js';
import { AwqError, awqRtnCodes, unpackAwq } from '../src/quant/awq-format.js';
import type { GptqCodes } from '../src/quant/gptq-types.js';
import { dequantizeWeight } from '../src/quant/qweight.js';
import { Tensor } from '../src/tensor/tensor.js';
import { setWarningHandler } from '../src/util/warn.js';
import { lowbit, maxRelErr, relErr, ROOT } from './helpers.js';

const FIX = join(ROOT, 'test', 'fixtures', 'awq');
type Expected = Record<string, { layers: Record<string, { sha256: string; values: [number, number, number][] }>; ids: number[][]; logits: number[] }>;
const EXPECTED = JSON.parse(readFileSync(join(FIX, 'expected.json'), 'utf8')) as Expected;
/** What each folder is: layout, group size, files. */
const LAYOUT: Record<string, ['gemm' | 'gemv', number, string[]]> = {
  autoawq_gemm_g64_bias: ['gemm', 64, ['config.json', 'model.safetensors']],
  autoawq_gemv_g32: ['gemv', 32, ['config.json', 'model.safetensors', 'quant_config.json']],
};
const FIXTURES = Object.keys(LAYOUT);
const bytes = (t: Tensor) => { const d = t.data as unknown as ArrayBufferView; return new Uint8Array(d.buffer, d.byteOffset, d.byteLength); };
const tmp = () => mkdtempSync(join(tmpdir(), 'lowbit-awq-'));

async function withWarnings<T>(fn: () => Promise<T> | T): Promise<{ value: T; warnings: string[] }> {
  const warnings: string[] = [];
  const prev = setWarningHandler((m) => warnings.push(m), { reset: true });
  try { return { value: await fn(), warnings }; } finally { setWarningHandler(prev, { reset: true }); }
}

test('AutoAWQ folders (GEMM g64 with biases; old quant_config.json GEMV g32) load by name, dequantize to numpy\'s weights and give numpy\'s logits', async () => {
  assert.deepEqual(Object.keys(EXPECTED).sort(), FIXTURES.sort());
  for (const f of FIXTURES) {
    const dir = join(FIX, f), [layout, group, files] = LAYOUT[f];
    assert.deepEqual(readdirSync(dir).sort(), files, f);
    const { value: m, warnings } = await withWarnings(() => fromPretrained(dir, { backend: 'ref' }));
    assert.deepEqual(warnings, [], `${f}: every tensor read, every config key known`);
    const spec = m.config.quantization_config as AwqQuantizationSpec;
    assert.deepEqual([spec.method, spec.bits, spec.groupSize, spec.zeroPoint, spec.layout], ['awq', 4, group, true, layout], f);
    const lin = m.model.linears();
    assert.equal(lin.size, 8);
    for (const [name, l] of lin) {
      if (name === 'lm_head') { assert.ok(l instanceof Linear, 'lm_head stays float (tied)'); continue; }
      assert.ok(l instanceof AwqLinear, `${f}: ${name} is ${l.constructor.name}`);
      assert.equal(l.qweight.awq.layout, layout);
      assert.equal(l.qweight.awq.qweight.buffer, m.tensors.get(`${name}.qweight`)!.data.buffer, `${f}: ${name} qweight is a view of the file`);
      const W = dequantizeWeight(l.qweight), e = EXPECTED[f].layers[name];
      assert.equal(createHash('sha256').update(Buffer.from(W.buffer, W.byteOffset, W.byteLength)).digest('hex'), e.sha256, `${f}: ${name}`);
      for (const [n, k, v] of e.values) assert.equal(W[n * l.inFeatures + k], v, `${f}: ${name}[${n}, ${k}]`);
    }
    const y = m.model.forward(EXPECTED[f].ids).f32;
    const err = relErr(y, EXPECTED[f].logits);
    assert.ok(err < 1e-4, `${f}: logits vs numpy ${err}`);
    if (cpuAvailable()) {
      // 16 rows: the native GEMM (exact weights, another summation order); 1 row: the int8-activation GEMV.
      const { value: c, warnings: w2 } = await withWarnings(async () => {
        const cm = await fromPretrained(dir, { backend: 'cpu' });
        return { prefill: cm.model.forward(EXPECTED[f].ids).f32, decode: cm.model.forward([EXPECTED[f].ids[0].slice(0, 1)]).f32 };
      });
      assert.deepEqual(w2, [], `${f}: the cpu backend has a kernel for awq`);
      assert.ok(relErr(c.prefill, y) < 1e-5, `${f}: cpu prefill vs ref ${relErr(c.prefill, y)}`);
      const yd = m.model.forward([EXPECTED[f].ids[0].slice(0, 1)]).f32;
      assert.ok(relErr(c.decode, yd) < 2e-2, `${f}: cpu decode vs ref ${relErr(c.decode, yd)}`);
    }
  }
});

test('savePretrained writes the AutoAWQ folder: the same tensors, to_transformers_dict sorted, torch_dtype float16; save → load → save is byte-identical', async () => {
  const root = tmp();
  try {
    for (const f of FIXTURES) {
      const src = join(FIX, f), m = await fromPretrained(src, { backend: 'ref' });
      const out = join(root, f);
      savePretrained(m, out);
      assert.deepEqual(readdirSync(out).sort(), ['config.json', 'model.safetensors'], `${f}: no quant_config.json (config.json carries it)`);
      const ours = loadStateDict(out, { mmap: false }).tensors, theirs = loadStateDict(src, { mmap: false }).tensors;
      assert.deepEqual([...ours.keys()].sort(), [...theirs.keys()].sort(), f);
      for (const [k, t] of theirs) {
        const o = ours.get(k)!;
        assert.equal(o.dtype, t.dtype, k); assert.deepEqual([...o.shape], [...t.shape], k); assert.deepEqual(bytes(o), bytes(t), `${f}: ${k}`);
      }
      assert.deepEqual(readFileSync(join(out, 'model.safetensors')), readFileSync(join(src, 'model.safetensors')), f);
      const [layout, group] = LAYOUT[f];
      const cfgText = readFileSync(join(out, 'config.json'), 'utf8');
      assert.ok(cfgText.includes(`"quantization_config": {\n    "bits": 4,\n    "group_size": ${group},\n    "modules_to_not_convert": null,\n`
        + `    "quant_method": "awq",\n    "version": "${layout}",\n    "zero_point": true\n  },`), `${f}: ${cfgText}`);
      assert.equal(JSON.parse(cfgText).torch_dtype, 'float16');
      const back = await fromPretrained(out, { backend: 'ref' });
      assert.deepEqual(back.model.forward(EXPECTED[f].ids).f32, m.model.forward(EXPECTED[f].ids).f32, f);
      const again = join(root, `${f}-again`);
      savePretrained(back, again);
      for (const file of readdirSync(out)) assert.deepEqual(readFileSync(join(again, file)), readFileSync(join(out, file)), `${f}: ${file}`);
    }
  } finally { rmSync(root, { recursive: true, force: true }); }
});

/** A float copy of a loaded AWQ fixture: its linears' dequantized weights as float32, no quantization_config. */
function floatFolder(q: LoadedModel, src: string, dir: string): void {
  const tensors = new Map<string, Tensor>();
  const awq = new Map([...q.model.linears()].filter(([, l]) => l instanceof AwqLinear)) as Map<string, AwqLinear>;
  for (const [k, t] of q.tensors) {
    const p = /^(.*)\.(qweight|qzeros|scales)$/.exec(k);
    if (!p || !awq.has(p[1])) { tensors.set(k, t); continue; }
    const l = awq.get(p[1])!;
    if (p[2] === 'qweight') tensors.set(`${p[1]}.weight`, new Tensor('F32', [l.outFeatures, l.inFeatures], dequantizeWeight(l.qweight)));
  }
  mkdirSync(dir);
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  const cfg = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
  delete cfg.quantization_config;
  cfg.torch_dtype = 'float32';
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
}

test('installAwq: codes → GEMM and → GEMV layers run as the fixture, save, and load back to identical logits; modules_to_not_convert stays float', async () => {
  const root = tmp();
  try {
    for (const f of FIXTURES) {
      const q = await fromPretrained(join(FIX, f), { backend: 'ref' }), ids = EXPECTED[f].ids, yq = q.model.forward(ids).f32;
      floatFolder(q, join(FIX, f), join(root, `${f}-float`));
      const codes = new Map<string, GptqCodes>();
      for (const [name, l] of q.model.linears()) if (l instanceof AwqLinear) codes.set(name, unpackAwq(l.qweight.awq));
      const fixtureSpec = q.config.quantization_config as AwqQuantizationSpec;
      for (const layout of ['gemm', 'gemv'] as const) {
        const m = await fromPretrained(join(root, `${f}-float`), { backend: 'ref' });
        const spec = parseAwqConfig({ quant_method: 'awq', bits: 4, group_size: fixtureSpec.groupSize, zero_point: true, version: layout }, 'test', { strict: true });
        const yFloat = m.model.forward(ids).f32;
        assert.throws(() => installAwq(m, new Map([...codes, ['lm_head', codes.values().next().value!]]), spec), /lm_head: lm_head stays float/);
        assert.throws(() => installAwq(m, new Map([['model.layers.0.mlp.up_proj', codes.get('model.layers.0.mlp.down_proj')!]]), spec),
          (e: Error) => e instanceof AwqError && /codes are \[64,128\], the layer is \[128, 64\]/.test(e.message));
        assert.deepEqual(m.model.forward(ids).f32, yFloat, 'a refused install leaves the model as it was');
        installAwq(m, codes, spec);
        assert.deepEqual(m.model.forward(ids).f32, yq, `${f} as ${layout}: the installed layers compute the fixture's function`);
        const out = join(root, `${f}-${layout}`);
        savePretrained(m, out);
        const saved = loadStateDict(out, { mmap: false }).tensors;
        if (layout === LAYOUT[f][0]) {
          // The layout the fixture was written in: every quantized tensor byte for byte (biases float16).
          for (const [k, t] of loadStateDict(join(FIX, f), { mmap: false }).tensors) {
            if (/\.(qweight|qzeros|scales|bias)$/.test(k)) assert.deepEqual(bytes(saved.get(k)!), bytes(t), `${f}: ${k}`);
          }
        }
        assert.ok(![...saved.keys()].some((k) => /_proj\.weight$/.test(k)), 'no float weight of a quantized layer is written');
        const back = await fromPretrained(out, { backend: 'ref' });
        assert.deepEqual(back.model.forward(ids).f32, yq, `${f} → ${layout} → load`);
        for (const [name, l] of back.model.linears()) {
          if (!(l instanceof AwqLinear)) continue;
          assert.equal(l.qweight.awq.layout, layout);
          const c = unpackAwq(l.qweight.awq), want = codes.get(name)!;
          assert.deepEqual([c.intWeight, c.zeros, c.scales], [want.intWeight, want.zeros, want.scales], `${f} ${layout}: ${name} codes come back`);
        }
      }
      // modules_to_not_convert: the listed layer keeps its float weight, in the file and after loading.
      const m = await fromPretrained(join(root, `${f}-float`), { backend: 'ref' });
      const skip = parseAwqConfig({ quant_method: 'awq', group_size: fixtureSpec.groupSize, version: 'gemm', modules_to_not_convert: ['down_proj'] }, 'test', { strict: true });
      assert.throws(() => installAwq(m, codes, skip), /down_proj: is listed in modules_to_not_convert/);
      installAwq(m, new Map([...codes].filter(([n]) => !n.includes('down_proj'))), skip);
      const out = join(root, `${f}-skip`);
      savePretrained(m, out);
      assert.deepEqual(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).quantization_config.modules_to_not_convert, ['down_proj']);
      const back = await fromPretrained(out, { backend: 'ref' });
      assert.ok(back.model.linears().get('model.layers.0.mlp.down_proj') instanceof Linear);
      assert.ok(back.model.linears().get('model.layers.0.mlp.up_proj') instanceof AwqLinear);
      assert.deepEqual(back.model.forward(ids).f32, m.model.forward(ids).f32);
    }
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('AWQ saves are atomic as every save: a non-empty folder is refused and kept; overwrite replaces it and takes a stale quant_config.json away', async () => {
  const root = tmp();
  try {
    const m = await fromPretrained(join(FIX, 'autoawq_gemm_g64_bias'), { backend: 'ref' });
    const out = join(root, 'x');
    mkdirSync(out);
    writeFileSync(join(out, 'keep.txt'), 'mine');
    assert.throws(() => savePretrained(m, out), (e: Error) => e instanceof SavePretrainedError && /folder is not empty/.test(e.message));
    assert.deepEqual(readdirSync(out), ['keep.txt']);
    // Over a copy of the old GEMV folder: its quant_config.json would contradict config.json, so it goes.
    const old = join(root, 'old');
    mkdirSync(old);
    for (const file of readdirSync(join(FIX, 'autoawq_gemv_g32'))) writeFileSync(join(old, file), readFileSync(join(FIX, 'autoawq_gemv_g32', file)));
    savePretrained(m, old, { overwrite: true });
    assert.deepEqual(readdirSync(old).sort(), ['config.json', 'model.safetensors']);
    const back = await fromPretrained(old, { backend: 'ref' });
    assert.equal((back.config.quantization_config as AwqQuantizationSpec).layout, 'gemm');
    assert.deepEqual(back.model.forward(EXPECTED.autoawq_gemm_g64_bias.ids).f32, m.model.forward(EXPECTED.autoawq_gemm_g64_bias.ids).f32);
    assert.ok(!readdirSync(root).some((n) => n.includes('.tmp-')), 'no staging folder left');
  } finally { rmSync(root, { recursive: true, force: true }); }
});

/**
 * vLLM's AWQ loader (vllm/model_executor/layers/quantization/awq.py, AWQConfig + AWQLinearMethod.create_weights, and
 * AWQMarlinConfig in the same file / awq_marlin.py), restated as checks on a folder: what from_config reads, which
 * parameters create_weights registers (names, dtypes, shapes, packed dim and factor), and how
 * _convert_awq_to_standard_format reads the nibbles. Returns the codes it decoded per layer.
 */
function checkVllmAwq(dir: string, linears: Map<string, [number, number]>): Map<string, { codes: Int32Array; zeros: Int32Array }> {
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const qc = cfg.quantization_config;
  // get_quant_config: quant_method names the method; AWQConfig.from_config: get_from_keys raises on a missing key.
  assert.equal(qc.quant_method, 'awq');
  const bits = qc.w_bit ?? qc.bits, G0 = qc.q_group_size ?? qc.group_size;
  assert.equal(bits, 4, 'AWQConfig: "only 4-bit weight quantization is supported"');
  assert.equal(typeof G0, 'number');
  assert.equal(typeof qc.zero_point, 'boolean', 'zero_point is read with get_from_keys (required)');
  // AWQMarlinConfig.from_config reads exactly "bits", "group_size", "zero_point" (no w_bit synonyms).
  for (const k of ['bits', 'group_size', 'zero_point']) assert.ok(k in qc, `AWQMarlinConfig needs "${k}"`);
  assert.ok(qc.modules_to_not_convert === null || Array.isArray(qc.modules_to_not_convert));
  // AWQConfig.get_supported_act_dtypes() is [torch.half]; vLLM's dtype "auto" takes config.json's torch_dtype.
  assert.equal(cfg.torch_dtype, 'float16');
  const t = loadStateDict(dir, { mmap: false }).tensors;
  const skip: string[] = qc.modules_to_not_convert ?? [];
  const out = new Map<string, { codes: Int32Array; zeros: Int32Array }>();
  const packFactor = 32 / bits;
  for (const [name, [N, K]] of linears) {
    if (name === 'lm_head') { assert.ok(!t.has('lm_head.qweight')); continue; }
    if (skip.some((s) => name.includes(s))) { assert.ok(t.has(`${name}.weight`) && !t.has(`${name}.qweight`), `${name} skipped: float weight`); continue; }
    const G = G0 === -1 ? K : G0;
    // create_weights: "The input size is not aligned" / "The output size is not aligned" errors.
    assert.equal(K % G, 0, `${name}: input_size_per_partition % group_size`);
    assert.equal(N % packFactor, 0, `${name}: output_size_per_partition % pack_factor`);
    const want: Record<string, [string, number[]]> = {
      qweight: ['I32', [K, N / packFactor]],   // PackedvLLMParameter input_dim 0, output_dim 1, packed_dim 1, packed_factor 8
      qzeros: ['I32', [K / G, N / packFactor]],
      scales: ['F16', [K / G, N]],              // GroupQuantScaleParameter in params_dtype (float16)
    };
    for (const [s, [dtype, shape]] of Object.entries(want)) {
      const x = t.get(`${name}.${s}`);
      assert.ok(x, `${name}.${s} present`);
      assert.equal(x.dtype, dtype, `${name}.${s} dtype`);
      assert.deepEqual([...x.shape], shape, `${name}.${s} shape (weight_loader asserts equal sizes)`);
    }
    assert.ok(!t.has(`${name}.weight`), `${name}: no float weight beside the quantized one`);
    const b = t.get(`${name}.bias`);
    if (b) assert.deepEqual([b.dtype, [...b.shape]], ['F16', [N]]);
    // _convert_awq_to_standard_format: (qw >> [0, 4, …, 28]) & 0xF, then [..., _REVERSE_AWQ_PACK_ORDER].
    const REV = [0, 4, 1, 5, 2, 6, 3, 7];
    const unpack = (words: Int32Array, rows: number) => {
      const v = new Int32Array(rows * N);
      for (let r = 0; r < rows; r++) for (let c = 0; c < N / 8; c++) for (let j = 0; j < 8; j++) v[r * N + 8 * c + j] = (words[r * (N / 8) + c] >>> (4 * REV[j])) & 0xf;
      return v;
    };
    out.set(name, { codes: unpack(t.get(`${name}.qweight`)!.data as Int32Array, K), zeros: unpack(t.get(`${name}.qzeros`)!.data as Int32Array, K / G) });
  }
  return out;
}

test('a lowbit-written AWQ folder meets vLLM\'s AWQ loader: config keys, names, dtypes, shapes, pack factor 8 along the output, nibble order', async () => {
  const root = tmp();
  try {
    // A random Llama (GQA, every size a multiple of 128, as real checkpoints) quantized by RTN on AWQ's grid, installed, saved.
    const raw = { model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 128, intermediate_size: 256, num_hidden_layers: 2,
      num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 96, max_position_embeddings: 64, rms_norm_eps: 1e-5, rope_theta: 10000.0,
      tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, hidden_act: 'silu' };
    const dir = join(root, 'float');
    const { tensors } = randomLlama(raw, 'BF16', 7);
    mkdirSync(dir);
    writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...raw, torch_dtype: 'bfloat16' }));
    const m = await fromPretrained(dir, { backend: 'ref' });
    const shapes = new Map([...m.model.linears()].map(([n, l]) => [n, [l.outFeatures, l.inFeatures] as [number, number]]));
    const codes = new Map<string, GptqCodes>();
    for (const [name, l] of m.model.linears()) {
      if (name === 'lm_head' || name.endsWith('o_proj')) continue;
      codes.set(name, awqRtnCodes((l as Linear).weight.toF32(), [l.outFeatures, l.inFeatures], 128));
    }
    installAwq(m, codes, parseAwqConfig({ quant_method: 'awq', modules_to_not_convert: ['o_proj'] }, 'test', { strict: true }));
    const out = join(root, 'awq');
    savePretrained(m, out);
    const read = checkVllmAwq(out, shapes);
    assert.equal(read.size, codes.size);
    for (const [name, c] of codes) {
      const v = read.get(name)!, [N, K] = c.shape;
      // vLLM's reading of the nibbles gives lowbit's codes: [K, N] against GptqCodes' [N, K].
      for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) assert.equal(v.codes[k * N + n], c.intWeight[n * K + k], `${name}[${n}, ${k}]`);
      assert.deepEqual(Uint8Array.from(v.zeros), c.zeros, `${name} zeros`);
    }
    // The AWQ-Marlin path (vLLM's default on CUDA when compatible) wants group_size in {-1, 32, 64, 128} with zero
    // points, N % 64 == 0 and K % 128 == 0 per layer (else it falls back to the AWQ kernel with a warning).
    const qc = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).quantization_config;
    assert.ok([-1, 32, 64, 128].includes(qc.group_size) && qc.zero_point === true);
    for (const [name] of codes) { const [N, K] = shapes.get(name)!; assert.ok(N % 64 === 0 && K % 128 === 0, name); }
    // The same check passes on AutoAWQ's own layout (the numpy fixture, torch_dtype float16 as AutoAWQ saves it).
    const fixtureShapes = new Map([...(await fromPretrained(join(FIX, 'autoawq_gemm_g64_bias'), { backend: 'ref' })).model.linears()]
      .map(([n, l]) => [n, [l.outFeatures, l.inFeatures] as [number, number]]));
    assert.equal(checkVllmAwq(join(FIX, 'autoawq_gemm_g64_bias'), fixtureShapes).size, 7);
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('lowbit bench --format awq4 on a tiny folder: AWQ GEMM layers on the native kernels, their bytes per token', { skip: cpuAvailable() ? false : 'the native cpu backend is not built' }, () => {
  const root = tmp();
  try {
    const raw = { model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 128, intermediate_size: 384, num_hidden_layers: 2,
      num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 256, max_position_embeddings: 64, rms_norm_eps: 1e-5, rope_theta: 10000.0,
      tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, hidden_act: 'silu' };
    const { tensors } = randomLlama(raw, 'BF16', 3);
    writeSafetensors(join(root, 'model.safetensors'), tensors, { format: 'pt' });
    writeFileSync(join(root, 'config.json'), JSON.stringify({ ...raw, torch_dtype: 'bfloat16' }));
    const r = lowbit('bench', root, '--prompt-len', '4', '--decode-len', '4', '--json', '--no-competitor', '--roofline-bytes', String(16 << 20), '--format', 'awq4');
    assert.equal(r.code, 0, r.err);
    const res = JSON.parse(r.out);
    assert.equal(res.format, 'awq');
    assert.equal(res.quantBackend, 'cpu');
    assert.doesNotMatch(r.err, /no matmulQ kernel|no native layout|stay float/);
    assert.match(r.err, /round-to-nearest on AWQ's zero-point grid, group 128/);
    // Per layer: codes N·K/2 + zeros N·K/128/2 + float16 scales N·K/128·2; lm_head (256 × 128) and one embedding row bf16.
    const H = 128, I = 384, q = 128, kv = 64;
    const n = [[q, H], [kv, H], [kv, H], [H, q], [I, H], [I, H], [H, I]].reduce((s, [o, i]) => s + o * i, 0);
    assert.equal(res.bytesPerToken, 2 * (n / 2 + n / 256 + n / 64) + 256 * H * 2 + H * 2);
    const text = lowbit('bench', root, '--prompt-len', '4', '--decode-len', '4', '--no-competitor', '--roofline-bytes', String(16 << 20), '--format', 'awq4');
    assert.equal(text.code, 0, text.err);
    assert.match(text.out, /quantized: 14 linear layers awq \(lm_head float\)[^\n]*; matmul on cpu \(native kernel\)/);
    // A shape AWQ cannot hold at group 128 (in_features 688 of kjv-demo's down_proj) stays float, and says so.
    const kjv = lowbit('bench', join(ROOT, 'models', 'kjv-demo'), '--prompt-len', '4', '--decode-len', '2', '--json', '--no-competitor', '--roofline-bytes', String(16 << 20), '--format', 'awq4');
    if (existsSync(join(ROOT, 'models', 'kjv-demo'))) {
      assert.equal(kjv.code, 0, kjv.err);
      assert.match(kjv.err, /6 linear layer\(s\) stay float: AWQ needs in_features a multiple of the group size 128/);
      assert.equal(JSON.parse(kjv.out).format, 'awq');
    }
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('maxRelErr sanity for the fixtures\' logits (one bad element would hide in the norm)', async () => {
  for (const f of FIXTURES) {
    const m = await fromPretrained(join(FIX, f), { backend: 'ref' });
    assert.ok(maxRelErr(m.model.forward(EXPECTED[f].ids).f32, EXPECTED[f].logits) < 1e-4, f);
  }
});
