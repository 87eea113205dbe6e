// GPTQ folders as Python writes them (test/fixtures/gptq, built by scripts/fixtures/make_gptq_fixtures.py from the
// spec with numpy alone): they load by name, dequantize to numpy's weights, run as the float model with those
// weights, save back as AutoGPTQ / optimum write them, and GPTQ's output installed into a float model saves the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPretrained, type LoadedModel } from '../src/api.js';
import { refBackend } from '../src/backend/ref/index.js';
import { cpuAvailable } from '../src/backend/cpu/index.js';
import { loadStateDict } from '../src/io/checkpoint.js';
import { readConfig } from '../src/io/config.js';
import { GPTQConfig, parseGptqConfig, type GptqQuantizationSpec } from '../src/io/gptqconfig.js';
import { savePretrained, SavePretrainedError } from '../src/io/save.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { installGptq } from '../src/models/factory.js';
import { randomLlama, SHAPES } from '../src/models/random.js';
import { Weights } from '../src/models/model.js';
import { buildModel } from '../src/models/registry.js';
import { Linear } from '../src/nn/layers.js';
import { GptqLinear } from '../src/nn/quant.js';
import { GptqError, gptqToStateDict, packGptq, unpackGptq } from '../src/quant/gptq-format.js';
import type { GptqCodes } from '../src/quant/gptq-types.js';
import { dequantizeWeight } from '../src/quant/qweight.js';
import { quantStats } from '../src/quant/stats.js';
import { Tensor } from '../src/tensor/tensor.js';
import { pyJsonParse } from '../src/util/pyjson.js';
import { setWarningHandler } from '../src/util/warn.js';
import { lowbit, ROOT } from './helpers.js';

const FIX = join(ROOT, 'test', 'fixtures', 'gptq');
type Expected = Record<string, Record<string, { sha256: string; values: [number, number, number][]; zeros_before_packing?: number[][] }>>;
const EXPECTED = JSON.parse(readFileSync(join(FIX, 'expected.json'), 'utf8')) as Expected;
const FIXTURES = Object.keys(EXPECTED);
const IDS = [[1, 5, 9, 33, 2, 60, 63, 4], [3, 3, 60, 61, 62, 10, 11, 12]];
const bytes = (t: Tensor) => { const d = t.data as unknown as ArrayBufferView; return new Uint8Array(d.buffer, d.byteOffset, d.byteLength); };
const tmp = () => mkdtempSync(join(tmpdir(), 'lowbit-gptq-'));

async function withWarnings<T>(fn: () => Promise<T> | T): Promise<{ value: T; warnings: string[] }> {
  const warnings: string[] = [];
  const prev = setWarningHandler((m) => warnings.push(m), { reset: true });
  try { return { value: await fn(), warnings }; } finally { setWarningHandler(prev, { reset: true }); }
}

/** What each folder's config says, by tool (FORMATS.md §4.6). */
const LAYOUT: Record<string, [bits: number, group: number, sym: boolean, descAct: boolean, format: string, files: string[]]> = {
  autogptq_4bit_g32_actorder: [4, 32, true, true, 'gptq', ['config.json', 'gptq_model-4bit-32g.safetensors', 'quantize_config.json']],
  gptqmodel_4bit_g32_asym_v2: [4, 32, false, false, 'gptq_v2', ['config.json', 'model.safetensors', 'quantize_config.json']],
  optimum_3bit_g32_bias: [3, 32, true, false, 'gptq', ['config.json', 'model.safetensors']],
  autogptq_2bit_g64_asym_v1: [2, 64, false, false, 'gptq', ['config.json', 'gptq_model-2bit-64g.safetensors', 'quantize_config.json']],
  transformers_8bit_gm1: [8, -1, true, false, 'gptq', ['config.json', 'model.safetensors']],
};

test('Python-layout GPTQ folders load by name (v1, v2, act-order, 3-bit, 2/8-bit, AutoGPTQ file names) and dequantize to numpy\'s weights', async () => {
  assert.deepEqual(FIXTURES.sort(), Object.keys(LAYOUT).sort());
  for (const f of FIXTURES) {
    const dir = join(FIX, f);
    const [bits, group, sym, descAct, format, files] = LAYOUT[f];
    assert.deepEqual(readdirSync(dir).sort(), files, f);
    // Every tensor is read (no unused-weights warning) and every config key is known (no warning either).
    const { value: m, warnings } = await withWarnings(() => fromPretrained(dir, { backend: 'ref' }));
    assert.deepEqual(warnings, [], f);
    const spec = m.config.quantization_config as GptqQuantizationSpec;
    assert.deepEqual([spec.method, spec.bits, spec.groupSize, spec.sym, spec.descAct, spec.checkpointFormat], ['gptq', bits, group, sym, descAct, format], f);
    const lin = m.model.linears();
    assert.equal(lin.size, 8);
    for (const [name, l] of lin) {
      if (name === 'lm_head') { assert.ok(l instanceof Linear, 'lm_head stays float (tied to the embedding)'); continue; }
      assert.ok(l instanceof GptqLinear, `${f}: ${name} is ${l.constructor.name}`);
      const w = l.qweight.gptq;
      assert.equal(w.checkpointFormat, format);
      // The layer holds the file's bytes: views of the mapped tensors, no unpacked copy.
      assert.equal(w.qweight.buffer, m.tensors.get(`${name}.qweight`)!.data.buffer, `${f}: ${name} qweight is a view`);
      const W = dequantizeWeight(l.qweight), e = EXPECTED[f][name];
      assert.equal(createHash('sha256').update(Buffer.from(W.buffer, W.byteOffset, W.byteLength)).digest('hex'), e.sha256, `${f}: ${name}`);
      for (const [n, k, v] of e.values) assert.equal(W[n * l.inFeatures + k], v, `${f}: ${name}[${n}, ${k}]`);
    }
    if (descAct) {
      // act-order: g_idx is not monotone.
      const g = (lin.get('model.layers.0.mlp.down_proj') as GptqLinear).qweight.gptq.gIdx;
      assert.ok(g.some((x, i) => i > 0 && x < g[i - 1]), `${f}: shuffled g_idx`);
    }
  }
});

test('packGptq reproduces every fixture byte for byte, the v1 asymmetric zero-0 words included', async () => {
  let corrupted = 0;
  for (const f of FIXTURES) {
    const m = await fromPretrained(join(FIX, f), { backend: 'ref' });
    for (const [name, l] of m.model.linears()) {
      if (!(l instanceof GptqLinear)) continue;
      const w = l.qweight.gptq, codes: GptqCodes = unpackGptq(w);
      // A corrupted v1 word cannot be read back to its zeros; the fixture keeps the zeros it was packed from.
      const before = EXPECTED[f][name].zeros_before_packing;
      if (before) { codes.zeros.set(before.flat()); corrupted++; }
      const again = gptqToStateDict(name, packGptq(codes, { name, sym: w.sym, descAct: w.descAct, checkpointFormat: w.checkpointFormat }));
      for (const [k, t] of again) assert.deepEqual(bytes(t), bytes(m.tensors.get(k)!), `${f}: ${k}`);
    }
  }
  assert.equal(corrupted, 7, 'every layer of the 2-bit asymmetric v1 file has a zero 0');
});

/** The float model whose linears are the GPTQ layers' dequantized weights (float32), everything else as loaded. */
function dequantizedFloat(m: LoadedModel): { tensors: Map<string, Tensor>; config: LoadedModel['config'] } {
  const tensors = new Map<string, Tensor>();
  const gptq = new Map([...m.model.linears()].filter(([, l]) => l instanceof GptqLinear)) as Map<string, GptqLinear>;
  for (const [k, t] of m.tensors) {
    const p = /^(.*)\.(qweight|qzeros|scales|g_idx)$/.exec(k);
    if (!p || !gptq.has(p[1])) { tensors.set(k, t); continue; }
    if (p[2] === 'qweight') {
      const l = gptq.get(p[1])!;
      tensors.set(`${p[1]}.weight`, new Tensor('F32', [l.outFeatures, l.inFeatures], dequantizeWeight(l.qweight)));
    }
  }
  return { tensors, config: { ...m.config, quantization_config: null } };
}

test('a loaded GPTQ model\'s logits equal the float model with the dequantized weights (ref); cpu runs its native kernels, no warning', async () => {
  for (const f of FIXTURES) {
    const m = await fromPretrained(join(FIX, f), { backend: 'ref' });
    const { tensors, config } = dequantizedFloat(m);
    const float = buildModel(config, new Weights(tensors, 'dequantized'), refBackend);
    const y = m.model.forward(IDS).f32;
    assert.ok(y.every(Number.isFinite), f);
    assert.deepEqual(y, float.forward(IDS).f32, f);
    if (cpuAvailable()) {
      // 2 rows × 8 tokens = 16 rows of x: the native prefill GEMM, which multiplies the ref's weights exactly (only the
      // summation order differs). Decode shapes are checked against their twin in test/gptq-kernels.test.ts.
      const { value: yc, warnings } = await withWarnings(async () => {
        const c = await fromPretrained(join(FIX, f), { backend: 'cpu' });
        c.model.forward(IDS);
        return c.model.forward(IDS).f32;
      });
      assert.deepEqual(warnings, [], f);
      let num = 0, den = 0;
      for (let i = 0; i < y.length; i++) { num += (yc[i] - y[i]) ** 2; den += y[i] ** 2; }
      assert.ok(Math.sqrt(num / den) < 1e-5, `${f}: cpu vs ref ${Math.sqrt(num / den)}`);
    }
  }
});

test('savePretrained writes the AutoGPTQ folder: same tensors, sorted quantization_config, quantize_config.json; save → load → save is byte-identical', async () => {
  const root = tmp();
  try {
    for (const f of FIXTURES) {
      const src = join(FIX, f), m = await fromPretrained(src, { backend: 'ref' });
      const out = join(root, f);
      savePretrained(m, out);
      assert.deepEqual(readdirSync(out).sort(), ['config.json', 'model.safetensors', 'quantize_config.json'], f);
      // (a) every tensor as the source holds it: names, dtypes, shapes, bytes (biases stay float16).
      const ours = loadStateDict(out, { mmap: false }).tensors, theirs = loadStateDict(src, { mmap: false }).tensors;
      assert.deepEqual([...ours.keys()].sort(), [...theirs.keys()].sort(), f);
      for (const [k, t] of theirs) {
        const o = ours.get(k)!;
        assert.equal(o.dtype, t.dtype, k); assert.deepEqual([...o.shape], [...t.shape], k); assert.deepEqual(bytes(o), bytes(t), `${f}: ${k}`);
      }
      // Written as safetensors' Rust writer orders them, so a file with only {"format": "pt"} metadata is identical.
      if (!f.startsWith('autogptq')) assert.deepEqual(readFileSync(join(out, 'model.safetensors')), readFileSync(join(src, 'model.safetensors')), f);
      // (b) the config: AutoGPTQ's key set (+ checkpoint_format), sorted in config.json, insertion order in quantize_config.json.
      const [bits, group, sym, descAct, format] = LAYOUT[f];
      const damp = f === 'gptqmodel_4bit_g32_asym_v2' ? '0.05' : f.startsWith('autogptq') ? '0.01' : '0.1';
      const qc = `{\n  "bits": ${bits},\n  "group_size": ${group},\n  "damp_percent": ${damp},\n  "desc_act": ${descAct},\n  "static_groups": false,\n`
        + `  "sym": ${sym},\n  "true_sequential": true,\n  "model_name_or_path": null,\n  "model_file_base_name": "model",\n  "quant_method": "gptq",\n`
        + `  "checkpoint_format": "${format}"\n}`;
      assert.equal(readFileSync(join(out, 'quantize_config.json'), 'utf8'), qc, f);
      const cfgText = readFileSync(join(out, 'config.json'), 'utf8');
      const sorted = `"quantization_config": {\n    "bits": ${bits},\n    "checkpoint_format": "${format}",\n    "damp_percent": ${damp},\n    "desc_act": ${descAct},\n`
        + `    "group_size": ${group},\n    "model_file_base_name": null,\n    "model_name_or_path": null,\n    "quant_method": "gptq",\n`
        + `    "static_groups": false,\n    "sym": ${sym},\n    "true_sequential": true\n  },`;
      assert.ok(cfgText.includes(sorted), `${f}: ${cfgText}`);
      assert.ok(cfgText.endsWith('}\n'));
      // The rest of config.json is the source's, key for key.
      const a = pyJsonParse(cfgText) as Map<string, unknown>, b = pyJsonParse(readFileSync(join(src, 'config.json'), 'utf8')) as Map<string, unknown>;
      a.delete('quantization_config'); b.delete('quantization_config');
      assert.deepEqual(a, b, f);
      // (c) it loads back to the same logits, and saving that again writes the same bytes.
      const back = await fromPretrained(out, { backend: 'ref' });
      assert.deepEqual(back.model.forward(IDS).f32, m.model.forward(IDS).f32, f);
      const again = join(root, `${f}-again`);
      savePretrained(back, again);
      for (const file of readdirSync(out)) assert.deepEqual(readFileSync(join(again, file)), readFileSync(join(out, file)), `${f}: ${file}`);
    }
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('GPTQ saves are atomic as every save: a non-empty folder is refused and kept, overwrite replaces, a stale quantize_config.json goes', async () => {
  const root = tmp();
  try {
    const m = await fromPretrained(join(FIX, 'optimum_3bit_g32_bias'), { backend: 'ref' });
    const out = join(root, 'x');
    mkdirSync(out); writeFileSync(join(out, 'keep.txt'), 'mine');
    assert.throws(() => savePretrained(m, out), (e: Error) => e instanceof SavePretrainedError && /folder is not empty/.test(e.message));
    assert.deepEqual(readdirSync(out), ['keep.txt']);
    assert.throws(() => savePretrained(m, join(FIX, 'optimum_3bit_g32_bias'), { overwrite: true }), /is the folder the model was loaded from/);
    savePretrained(m, out, { overwrite: true });
    assert.deepEqual(readdirSync(out).sort(), ['config.json', 'keep.txt', 'model.safetensors', 'quantize_config.json']);
    // Over an AutoGPTQ folder's copy: model.safetensors now wins over the old gptq_model-*.safetensors.
    const ag = join(root, 'ag');
    mkdirSync(ag);
    for (const file of readdirSync(join(FIX, 'autogptq_2bit_g64_asym_v1'))) writeFileSync(join(ag, file), readFileSync(join(FIX, 'autogptq_2bit_g64_asym_v1', file)));
    savePretrained(m, ag, { overwrite: true });
    const back = await fromPretrained(ag, { backend: 'ref' });
    assert.equal((back.config.quantization_config as GptqQuantizationSpec).bits, 3);
    assert.deepEqual(back.model.forward(IDS).f32, m.model.forward(IDS).f32);
    // A float model saved over a GPTQ folder takes the stale quantize_config.json with it (else it would read as GPTQ).
    const { tensors, config } = dequantizedFloat(m);
    const floatDir = join(root, 'float-src');
    mkdirSync(floatDir);
    writeSafetensors(join(floatDir, 'model.safetensors'), tensors, { format: 'pt' });
    const cfg = JSON.parse(readFileSync(join(FIX, 'optimum_3bit_g32_bias', 'config.json'), 'utf8'));
    delete cfg.quantization_config;
    writeFileSync(join(floatDir, 'config.json'), JSON.stringify(cfg));
    const float = await fromPretrained(floatDir, { backend: 'ref' });
    assert.equal(float.config.quantization_config, null);
    assert.equal(config.quantization_config, null);
    savePretrained(float, out, { overwrite: true });
    assert.ok(!existsSync(join(out, 'quantize_config.json')));
    assert.equal((await fromPretrained(out, { backend: 'ref' })).config.quantization_config, null);
    // An empty target fills through the staging rename; nothing is left beside it.
    assert.deepEqual(readdirSync(root).sort(), ['ag', 'float-src', 'x']);
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('installGptq: GPTQ codes swapped into a float model run quantized and save as the Python folder (v1 and v2)', async () => {
  const root = tmp();
  try {
    for (const f of ['gptqmodel_4bit_g32_asym_v2', 'optimum_3bit_g32_bias', 'autogptq_4bit_g32_actorder']) {
      const q = await fromPretrained(join(FIX, f), { backend: 'ref' });
      // The float model: the dequantized weights as float32, config.json without quantization_config.
      const { tensors } = dequantizedFloat(q);
      const dir = join(root, `${f}-float`);
      mkdirSync(dir);
      writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
      const cfg = JSON.parse(readFileSync(join(FIX, f, 'config.json'), 'utf8'));
      delete cfg.quantization_config;
      writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
      const m = await fromPretrained(dir, { backend: 'ref' });
      // What the GPTQ driver hands over: codes per layer (unpacked from the fixture here) and the spec.
      const codes = new Map<string, GptqCodes>();
      for (const [name, l] of q.model.linears()) if (l instanceof GptqLinear) codes.set(name, unpackGptq(l.qweight.gptq));
      const spec = q.config.quantization_config as GptqQuantizationSpec;
      const yFloat = m.model.forward(IDS).f32;
      assert.throws(() => installGptq(m, new Map([...codes, ['lm_head', codes.values().next().value!]]), spec), /lm_head: /);
      assert.throws(() => installGptq(m, new Map([['model.layers.0.mlp.up_proj', codes.get('model.layers.0.mlp.down_proj')!]]), spec),
        (e: Error) => e instanceof GptqError && /codes are \[64,96\], the layer is \[96, 64\]/.test(e.message));
      assert.deepEqual(m.model.forward(IDS).f32, yFloat, 'a refused install leaves the model as it was');
      installGptq(m, codes, spec);
      assert.deepEqual(m.model.forward(IDS).f32, q.model.forward(IDS).f32, f);
      // Its save holds the fixture's quantized tensors (v2 zeros stay v2; biases float16).
      const out = join(root, `${f}-gptq`);
      savePretrained(m, out);
      const saved = loadStateDict(out, { mmap: false }).tensors, fixture = loadStateDict(join(FIX, f), { mmap: false }).tensors;
      for (const [k, t] of fixture) {
        if (!/\.(qweight|qzeros|scales|g_idx|bias)$/.test(k)) continue;
        assert.deepEqual(bytes(saved.get(k)!), bytes(t), `${f}: ${k}`);
      }
      assert.ok(![...saved.keys()].some((k) => /_proj\.weight$/.test(k)), 'no float weight of a quantized layer is written');
      // The same config as the fixture's own save writes.
      const direct = join(root, `${f}-direct`);
      savePretrained(q, direct);
      assert.equal(readFileSync(join(out, 'quantize_config.json'), 'utf8'), readFileSync(join(direct, 'quantize_config.json'), 'utf8'));
    }
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('loader errors name the folder, the file and the tensor', () => {
  const dir = join(FIX, 'autogptq_4bit_g32_actorder');
  const config = readConfig(join(dir, 'config.json'));
  const build = (edit: (t: Map<string, Tensor>) => void) => {
    const { tensors } = loadStateDict(dir, { mmap: false });
    edit(tensors);
    return () => buildModel(config, new Weights(tensors, dir), refBackend);
  };
  const p = 'model.layers.0.mlp.down_proj';
  assert.throws(build((t) => t.set(`${p}.qzeros`, new Tensor('I32', [2, 8], new Int32Array(16)))),
    (e: Error) => e instanceof GptqError && e.message === `${dir}: ${p}.qzeros: expected I32 [3, 8] for a 4-bit [64, 96] layer: 3 groups of 32 inputs, got I32 [2, 8]`);
  const file = loadStateDict(dir, { mmap: false }).tensors.get(`${p}.scales`)!;
  assert.throws(build((t) => t.set(`${p}.scales`, new Tensor('F32', [3, 64], new Float32Array(192), 'cpu', undefined, { origin: file.origin }))),
    (e: Error) => e instanceof GptqError && e.message.startsWith(`${dir}: ${p}.scales (in gptq_model-4bit-32g.safetensors): expected F16 [3, 64]`));
  assert.throws(build((t) => t.delete(`${p}.g_idx`)), new RegExp(`^GptqError: ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ${p}\\.g_idx: missing from the checkpoint`));
  assert.throws(build((t) => { const g = Int32Array.from(t.get(`${p}.g_idx`)!.data as Int32Array); g[7] = 3; t.set(`${p}.g_idx`, new Tensor('I32', [96], g)); }),
    /down_proj\.g_idx: entry 7 is 3, not a group in \[0, 3\)/);
  // A layer the checkpoint left float (modules_in_block_to_quantize) loads as a float Linear, by its names.
  const { tensors } = loadStateDict(dir, { mmap: false });
  const l = unpackGptq((buildModel(config, new Weights(tensors, dir), refBackend).linears().get(p) as GptqLinear).qweight.gptq);
  for (const s of ['qweight', 'qzeros', 'scales', 'g_idx']) tensors.delete(`${p}.${s}`);
  tensors.set(`${p}.weight`, new Tensor('F32', [64, 96], new Float32Array(64 * 96).fill(l.scales[0])));
  assert.ok(buildModel(config, new Weights(tensors, dir), refBackend).linears().get(p) instanceof Linear);
});

test('quantStats and lowbit info: GPTQ bits, group size, act-order and bits per weight with scales, zeros and g_idx', () => {
  const st = quantStats(loadStateDict(join(FIX, 'autogptq_4bit_g32_actorder')).tensors);
  assert.deepEqual([st.layers.length, st.formats, st.bits, st.blocksizes, st.doubleQuant], [7, ['gptq'], [4], [], null]);
  // q, o 64·64; k, v 32·64; gate, up 96·64; down 64·96: 30720 weights. Groups of 32 along K: 960 (scale F16, zero 4 bits).
  assert.equal(st.params, 30720);
  assert.equal(st.bytes, 30720 / 2 + 960 * 2 + 960 / 2 + 4 * (6 * 64 + 96));
  assert.ok(Math.abs(st.bitsPerWeight - (4 + (16 + 4) / 32 + 32 * 480 / 30720)) < 1e-12, `${st.bitsPerWeight}`);
  const r = lowbit('info', join(FIX, 'autogptq_4bit_g32_actorder'), '--json');
  assert.equal(r.code, 0, r.err);
  const info = JSON.parse(r.out);
  assert.deepEqual(info.quantization.gptq, { bits: 4, groupSize: 32, descAct: true, sym: true, checkpointFormat: 'gptq' });
  assert.equal(info.quantization.bitsPerWeight, st.bitsPerWeight);
  assert.equal(info.quantization_config.bits, 4);                      // from quantize_config.json
  assert.equal(info.fileBytes, readFileSync(join(FIX, 'autogptq_4bit_g32_actorder', 'gptq_model-4bit-32g.safetensors')).length);
  const text = lowbit('info', join(FIX, 'gptqmodel_4bit_g32_asym_v2'));
  assert.equal(text.code, 0, text.err);
  assert.match(text.out, /quantization +gptq 4-bit, group 32, no act-order, asym, format gptq_v2: 7 layers, 30,720 weights at 5\.125 bits\/weight \(scales, zeros and g_idx included\)/);
});

/** Round-to-nearest codes per §4.1 (sym or asym, groups along K): what the GPTQ driver hands over, minus the updates. */
function rtnCodes(W: Float32Array, N: number, K: number, bits: GptqCodes['bits'], groupSize: number, sym: boolean): GptqCodes {
  const maxq = (1 << bits) - 1, G = groupSize === -1 ? K : groupSize, nGroups = Math.ceil(K / G);
  const c: GptqCodes = { bits, groupSize, shape: [N, K], intWeight: new Uint8Array(N * K), scales: new Float32Array(nGroups * N), zeros: new Uint8Array(nGroups * N), gIdx: Int32Array.from({ length: K }, (_, k) => Math.floor(k / G)) };
  for (let g = 0; g < nGroups; g++) {
    for (let n = 0; n < N; n++) {
      let lo = 0, hi = 0;
      for (let k = g * G; k < Math.min(K, (g + 1) * G); k++) { lo = Math.min(lo, W[n * K + k]); hi = Math.max(hi, W[n * K + k]); }
      if (sym) { hi = Math.max(-lo, hi); if (lo < 0) lo = -hi; }
      if (lo === 0 && hi === 0) { lo = -1; hi = 1; }
      const scale = Math.fround((hi - lo) / maxq), zero = sym ? (maxq + 1) / 2 : Math.round(-lo / scale);
      c.scales[g * N + n] = scale; c.zeros[g * N + n] = zero;
      for (let k = g * G; k < Math.min(K, (g + 1) * G); k++) c.intWeight[n * K + k] = Math.min(maxq, Math.max(0, Math.round(W[n * K + k] / scale) + zero));
    }
  }
  return c;
}

test('every family: GPTQ codes installed into OPT, Qwen2 (biases), Mistral golden models save (sharded too) and load back to the same logits', async () => {
  const root = tmp();
  try {
    for (const [g, bits, sym] of [['opt_125m_like', 4, true], ['opt_350m_like', 4, false], ['qwen2', 8, false], ['mistral_sliding', 3, true]] as const) {
      const m = await fromPretrained(join(ROOT, 'test', 'fixtures', 'golden', g), { backend: 'ref' });
      const ids = IDS.map((r) => r.map((i) => i % m.config.vocab_size));
      const yFloat = m.model.forward(ids).f32;
      // The linears inside the decoder blocks, as AutoGPTQ / optimum quantize them (OPT's project_in/out stay float).
      const codes = new Map<string, GptqCodes>();
      for (const [name, l] of m.model.linears()) {
        if (!/\.layers\.\d+\./.test(name)) continue;
        const w = (l as Linear).weight;
        codes.set(name, rtnCodes(w.toF32(), l.outFeatures, l.inFeatures, bits, 32, sym));
      }
      const spec = new GPTQConfig({ bits, groupSize: 32, sym, checkpointFormat: sym ? 'gptq' : 'gptq_v2' });
      installGptq(m, codes, parseGptqConfig({ ...spec } as Record<string, unknown>, 'test', { strict: true }));
      const y = m.model.forward(ids).f32;
      let num = 0, den = 0;
      for (let i = 0; i < y.length; i++) { num += (y[i] - yFloat[i]) ** 2; den += yFloat[i] ** 2; }
      // Random-init goldens magnify weight error; measured: OPT 4-bit 0.18 / 0.085, Qwen2 8-bit 0.016, Mistral 3-bit 0.55.
      const err = Math.sqrt(num / den);
      assert.ok(err > 0 && err < ({ 3: 0.8, 4: 0.3, 8: 0.03 } as Record<number, number>)[bits], `${g}: ${bits}-bit RTN moves the logits by ${err}`);
      for (const maxShardSize of [undefined, 8000]) {
        const out = join(root, `${g}-${maxShardSize ?? 'one'}`);
        const r = savePretrained(m, out, { maxShardSize });
        assert.equal(r.sharded, maxShardSize !== undefined, g);
        if (r.sharded) assert.ok(existsSync(join(out, 'model.safetensors.index.json')) && r.files.length > 2);
        const back = await fromPretrained(out, { backend: 'ref' });
        assert.deepEqual(back.model.forward(ids).f32, y, `${g} ${maxShardSize ?? 'single file'}`);
        for (const [name, l] of back.model.linears()) assert.equal(l instanceof GptqLinear, codes.has(name), `${g}: ${name}`);
        if (g === 'qwen2') assert.equal(back.tensors.get('model.layers.0.self_attn.q_proj.bias')!.dtype, 'F16');
      }
    }
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('a folder with no model.safetensors or index loads its one other safetensors file, and refuses to guess between several', async () => {
  const root = tmp();
  try {
    const dir = join(root, 'two');
    mkdirSync(dir);
    for (const f of readdirSync(join(FIX, 'autogptq_4bit_g32_actorder'))) writeFileSync(join(dir, f), readFileSync(join(FIX, 'autogptq_4bit_g32_actorder', f)));
    writeFileSync(join(dir, 'gptq_model-4bit-128g.safetensors'), readFileSync(join(FIX, 'autogptq_4bit_g32_actorder', 'gptq_model-4bit-32g.safetensors')));
    assert.throws(() => loadStateDict(dir), /no model\.safetensors or model\.safetensors\.index\.json, and 2 other safetensors files \(gptq_model-4bit-128g\.safetensors, gptq_model-4bit-32g\.safetensors\): cannot tell which is the model/);
    rmSync(join(dir, 'gptq_model-4bit-32g.safetensors'));
    assert.equal((await fromPretrained(dir, { backend: 'ref' })).model.linears().size, 8);
  } finally { rmSync(root, { recursive: true, force: true }); }
});

/**
 * vLLM's acceptance rules for a GPTQ checkpoint (docs/p5-gptq-format.md), transcribed from its sources:
 * GPTQMarlinConfig.is_gptq_marlin_compatible (quant_method "gptq"; bits, group_size, sym, desc_act all present;
 * (bits, sym) in TYPE_MAP = {(4, true), (8, true)}; group_size in MARLIN_SUPPORTED_GROUP_SIZES [-1, 32, 64, 128]),
 * verify_marlin_supports_shape per layer (out % 64, in % 128, in % group_size), and the plain GPTQ loader's
 * create_weights shapes (qweight [in / pack, out], qzeros [groups, out / pack], scales [groups, out], g_idx [in]).
 */
function vllmProblems(dir: string): string[] {
  const problems: string[] = [];
  const qc = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).quantization_config;
  const { bits, group_size: G, sym, desc_act: descAct, quant_method: method, checkpoint_format: fmt } = qc;
  if (method !== 'gptq') problems.push(`quant_method ${method}`);
  if ([bits, G, sym, descAct].some((x) => x === undefined || x === null)) problems.push('bits/group_size/sym/desc_act missing');
  if (!(sym === true && (bits === 4 || bits === 8))) problems.push(`(bits ${bits}, sym ${sym}) not in Marlin's TYPE_MAP`);
  if (![-1, 32, 64, 128].includes(G)) problems.push(`group_size ${G} not a Marlin group size`);
  if (fmt !== 'gptq') problems.push(`checkpoint_format ${fmt}`);
  const t = loadStateDict(dir).tensors;
  for (const [k, qw] of t) {
    const p = /^(.*)\.qweight$/.exec(k)?.[1];
    if (!p) continue;
    const K = t.get(`${p}.g_idx`)!.shape[0], N = qw.shape[1], groups = G === -1 ? 1 : K / G;
    if (N % 64 !== 0 || K % 128 !== 0 || (G !== -1 && G < K && K % G !== 0)) problems.push(`${p}: [${N}, ${K}] not a Marlin shape`);
    const want: [string, string, number[]][] = [['qweight', 'I32', [K * bits / 32, N]], ['qzeros', 'I32', [groups, N * bits / 32]], ['scales', 'F16', [groups, N]], ['g_idx', 'I32', [K]]];
    for (const [s, dt, shape] of want) {
      const x = t.get(`${p}.${s}`);
      if (!x || x.dtype !== dt || x.shape.join() !== shape.join()) problems.push(`${p}.${s}: ${x?.dtype} [${x?.shape}], vLLM makes ${dt} [${shape}]`);
    }
  }
  return problems;
}

test('a symmetric 4-bit g128 desc_act=False save from lowbit passes vLLM\'s GPTQ-Marlin checks; asymmetric / 3-bit ones go to its plain GPTQ loader', async () => {
  const root = tmp();
  try {
    // A Llama with Marlin-sized layers (out multiples of 64, in multiples of 128), float16 as GPTQ models are.
    const { config, tensors } = randomLlama({ ...SHAPES['tinyllama-1.1b'], hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2,
      num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 128 }, 'F16', 3);
    const src = join(root, 'float');
    mkdirSync(src);
    writeSafetensors(join(src, 'model.safetensors'), tensors, { format: 'pt' });
    writeFileSync(join(src, 'config.json'), JSON.stringify(config.raw));
    for (const [bits, sym, ok] of [[4, true, true], [8, true, true], [4, false, false], [3, true, false]] as const) {
      const m = await fromPretrained(src, { backend: 'ref' });
      const codes = new Map<string, GptqCodes>();
      for (const [name, l] of m.model.linears()) {
        if (name !== 'lm_head') codes.set(name, rtnCodes((l as Linear).weight.toF32(), l.outFeatures, l.inFeatures, bits, 128, sym));
      }
      installGptq(m, codes, parseGptqConfig({ ...new GPTQConfig({ bits, groupSize: 128, descAct: false, sym }) } as Record<string, unknown>, 'test', { strict: true }));
      const out = join(root, `${bits}-${sym}`);
      savePretrained(m, out);
      const problems = vllmProblems(out);
      if (ok) assert.deepEqual(problems, [], `${bits}-bit sym ${sym}`);
      else assert.ok(problems.length > 0 && problems.every((p) => /TYPE_MAP/.test(p)), `${bits}-bit sym ${sym}: only Marlin's type check fails: ${problems}`);
      assert.equal(JSON.parse(readFileSync(join(out, 'quantize_config.json'), 'utf8')).model_file_base_name, 'model');
    }
  } finally { rmSync(root, { recursive: true, force: true }); }
});
