// GPTQ checkpoints both ways (../shared/spec/FORMATS.md §4.5-4.6): pack/unpack bit for bit at 2/3/4/8 bits with the
// spec's test vectors, v1 ⇄ v2, and the config of every GPTQ writer. The Python-layout fixtures are in
// gptq-checkpoint.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  convertGptqFormat, dequantizeGptq, GptqError, gptqFromStateDict, gptqGroups, gptqToStateDict, packGptq, unpackGptq,
  type GptqCheckpointFormat, type GptqWeight,
} from '../src/quant/gptq-format.js';
import { GPTQ_BITS, type GptqBits, type GptqCodes } from '../src/quant/gptq-types.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { ConfigError, readConfig, UnsupportedModelError } from '../src/io/config.js';
import { GPTQConfig, gptqConfigDict, type GptqQuantizationSpec } from '../src/io/gptqconfig.js';
import { parseQuantizationConfig } from '../src/io/quantconfig.js';
import { f16ToF32 } from '../src/tensor/dtype.js';
import { pyJsonDumps } from '../src/util/pyjson.js';
import { setWarningHandler } from '../src/util/warn.js';
import { Rand, ROOT } from './helpers.js';

/** Random codes [N, K] whose scales are float16 values (so pack → unpack is exact), act-order g_idx if asked. */
function randomCodes(rng: Rand, bits: GptqBits, N: number, K: number, groupSize: number, actOrder = false): GptqCodes {
  const maxq = (1 << bits) - 1, G = gptqGroups(K, groupSize), Gs = groupSize === -1 ? K : groupSize;
  const intWeight = Uint8Array.from({ length: N * K }, () => Math.floor(rng.next() * (maxq + 1)));
  const zeros = Uint8Array.from({ length: G * N }, () => Math.floor(rng.next() * (maxq + 1)));
  const scales = Float32Array.from({ length: G * N }, () => f16ToF32(0x1000 + Math.floor(rng.next() * 0x2000)));
  const perm = Array.from({ length: K }, (_, i) => i);
  if (actOrder) for (let i = K - 1; i > 0; i--) { const j = Math.floor(rng.next() * (i + 1)); [perm[i], perm[j]] = [perm[j], perm[i]]; }
  // g_idx[c] = (position of c in the permutation) // G, as AutoGPTQ derives it (§4.3 step 9).
  const gIdx = new Int32Array(K);
  perm.forEach((c, p) => { gIdx[c] = Math.floor(p / Gs); });
  return { bits, groupSize, shape: [N, K], intWeight, scales, zeros, gIdx };
}

const u32 = (x: number) => x >>> 0;

test('pack → unpack is bit-exact at 2/3/4/8 bits: odd sizes, partial last group, group -1, act-order g_idx, v1 and v2', () => {
  const rng = new Rand(7);
  // N and K: the smallest multiples the packing allows times an odd number (3-bit: 32).
  const cases: [GptqBits, number, number, number][] = [
    [2, 48, 80, 32], [2, 16, 16, -1], [3, 96, 160, 64], [3, 32, 32, 128], [4, 40, 72, 16], [4, 8, 8, -1], [4, 24, 136, 128],
    [8, 12, 20, 8], [8, 4, 4, -1], [8, 36, 44, 32],
  ];
  for (const [bits, N, K, G] of cases) {
    for (const actOrder of [false, true]) {
      for (const fmt of ['gptq', 'gptq_v2'] as GptqCheckpointFormat[]) {
        const c = randomCodes(rng, bits, N, K, G, actOrder);
        if (fmt === 'gptq') c.zeros.forEach((z, i) => { if (z === 0) c.zeros[i] = 1; });   // v1 cannot hold zero 0 (below)
        const w = packGptq(c, { sym: false, descAct: actOrder, checkpointFormat: fmt });
        assert.equal(w.qweight.length, (K * bits / 32) * N);
        assert.equal(w.qzeros.length, gptqGroups(K, G) * (N * bits / 32));
        assert.deepEqual(unpackGptq(w), c, `${bits}-bit [${N}, ${K}] g${G} ${actOrder ? 'act-order ' : ''}${fmt}`);
        // Dequantize is scale·(q − z) through g_idx, in float32.
        const W = dequantizeGptq(w);
        for (const [n, k] of [[0, 0], [N - 1, K - 1], [N >> 1, K >> 1]]) {
          const g = c.gIdx[k];
          assert.equal(W[n * K + k], Math.fround(c.scales[g * N + n] * (c.intWeight[n * K + k] - c.zeros[g * N + n])));
        }
      }
    }
  }
});

test('the spec\'s test vectors: 4-bit qweight words along K, sym qzeros 0x77777777 (v1) / 0x88888888 (v2), 3-bit words', () => {
  // 4-bit, one output, K = 8: word = k0 | k1<<4 | … | k7<<28.
  const ks = [1, 2, 3, 4, 5, 6, 7, 15];
  const c: GptqCodes = { bits: 4, groupSize: -1, shape: [8, 8], intWeight: new Uint8Array(64), scales: new Float32Array(8).fill(1), zeros: new Uint8Array(8).fill(8), gIdx: new Int32Array(8) };
  ks.forEach((v, k) => { c.intWeight[3 * 8 + k] = v; });                   // output n = 3
  const v1 = packGptq(c, { sym: true, descAct: false });
  assert.equal(u32(v1.qweight[3]), u32(ks.reduce((a, v, k) => a | (v << (4 * k)), 0)));
  assert.equal(u32(v1.qweight[3]), 0xf7654321);
  assert.deepEqual([...v1.qzeros], [2004318071]);                          // 0x77777777
  const v2 = packGptq(c, { sym: true, descAct: false, checkpointFormat: 'gptq_v2' });
  assert.deepEqual([...v2.qzeros], [-2004318072]);                         // 0x88888888 as int32
  assert.deepEqual([...convertGptqFormat(v1, 'gptq_v2').qzeros], [...v2.qzeros]);
  assert.deepEqual([...convertGptqFormat(v2, 'gptq').qzeros], [...v1.qzeros]);
  // 2-bit sym zero 2 → v1 field 1 (0x55555555), 8-bit zero 128 → 127 per byte (0x7f7f7f7f).
  const sym = (bits: GptqBits) => packGptq({ ...c, bits, shape: [32, 32], intWeight: new Uint8Array(1024), scales: new Float32Array(32), zeros: new Uint8Array(32).fill(1 << (bits - 1)), gIdx: new Int32Array(32) }, { sym: true, descAct: false });
  assert.deepEqual([...sym(2).qzeros].map(u32), [0x55555555, 0x55555555]);
  assert.deepEqual([...sym(8).qzeros].map(u32), Array(8).fill(0x7f7f7f7f));

  // 3-bit: 32 values in 3 words (§4.5): word0 = v0..v9 | low 2 bits of v10 << 30; word1 = bit 2 of v10 | v11..v20 << 1
  // | low bit of v21 << 31; word2 = bits 1..2 of v21 | v22..v31 << 2. Checked field by field from that text.
  const words3 = (vals: number[]) => {
    const w = [0, 0, 0];
    for (let j = 0; j < 10; j++) w[0] |= vals[j] << (3 * j);
    w[0] |= (vals[10] & 3) << 30; w[1] |= vals[10] >> 2;
    for (let j = 0; j < 10; j++) w[1] |= vals[11 + j] << (3 * j + 1);
    w[1] |= (vals[21] & 1) << 31; w[2] |= vals[21] >> 1;
    for (let j = 0; j < 10; j++) w[2] |= vals[22 + j] << (3 * j + 2);
    return w.map(u32);
  };
  const rng = new Rand(3);
  for (let t = 0; t < 20; t++) {
    const vals = Array.from({ length: 32 }, () => Math.floor(rng.next() * 8));
    if (t === 0) vals.fill(7);
    const c3: GptqCodes = { bits: 3, groupSize: -1, shape: [32, 32], intWeight: new Uint8Array(1024), scales: new Float32Array(32), zeros: Uint8Array.from(vals.map((v) => v || 1)), gIdx: new Int32Array(32) };
    vals.forEach((v, k) => { c3.intWeight[5 * 32 + k] = v; });              // output 5, inputs 0..31
    const w = packGptq(c3, { sym: false, descAct: false, checkpointFormat: 'gptq_v2' });
    assert.deepEqual([w.qweight[5], w.qweight[32 + 5], w.qweight[64 + 5]].map(u32), words3(vals));
    assert.deepEqual([...w.qzeros].map(u32), words3(vals.map((v) => v || 1)));
    // v1 stores zero − 1 in the same fields.
    assert.deepEqual([...convertGptqFormat(w, 'gptq').qzeros].map(u32), words3(vals.map((v) => (v || 1) - 1)));
  }
});

test('v1 asymmetric zero 0 is stored as AutoGPTQ\'s pack stores it (uint32 −1 OR-ed in) and reads back as its loaders read it', () => {
  // 4-bit, 8 outputs in one word: zeros [5, 0, 3, 9, 0, 2, 1, 15].
  const zeros = [5, 0, 3, 9, 0, 2, 1, 15];
  const c: GptqCodes = { bits: 4, groupSize: -1, shape: [8, 8], intWeight: new Uint8Array(64), scales: new Float32Array(8).fill(1), zeros: Uint8Array.from(zeros), gIdx: new Int32Array(8) };
  const w = packGptq(c, { sym: false, descAct: false });
  // numpy: (4) | (0xFFFFFFFF << 4) | … — every field from the first zero 0 up is 0xF.
  assert.equal(u32(w.qzeros[0]), 0xfffffff4);
  // AutoGPTQ's loaders add one back and mask: (0xF + 1) & 0xF = 0, so outputs 1..7 read zero 0.
  assert.deepEqual([...unpackGptq(w).zeros], [5, 0, 0, 0, 0, 0, 0, 0]);
  // v2 holds them as they are; converting it to v1 per field is lossless (no corruption), and back.
  const v2 = packGptq(c, { sym: false, descAct: false, checkpointFormat: 'gptq_v2' });
  assert.deepEqual([...unpackGptq(v2).zeros], zeros);
  const v1 = convertGptqFormat(v2, 'gptq');
  assert.deepEqual([...unpackGptq(v1).zeros], zeros);
  assert.deepEqual([...convertGptqFormat(v1, 'gptq_v2').qzeros], [...v2.qzeros]);
  // 3-bit: a zero 0 at v10 (straddling) sets bits 30-31 of word 0 and, masked, bit 0 of word 1 only.
  const z3 = new Uint8Array(32).fill(1); z3[10] = 0;
  const w3 = packGptq({ bits: 3, groupSize: -1, shape: [32, 32], intWeight: new Uint8Array(1024), scales: new Float32Array(32), zeros: z3, gIdx: new Int32Array(32) }, { sym: false, descAct: false });
  assert.deepEqual([...w3.qzeros].map(u32), [0xc0000000, 1, 0]);
});

test('shapes the packing cannot hold, codes past the bit width and bad g_idx are GptqErrors naming the layer', () => {
  const rng = new Rand(1);
  const ok = randomCodes(rng, 4, 16, 16, 8);
  const refuses = (c: GptqCodes, re: RegExp) => assert.throws(() => packGptq(c, { name: 'model.layers.0.mlp.down_proj', sym: true, descAct: false }),
    (e: Error) => e instanceof GptqError && e.message.startsWith('model.layers.0.mlp.down_proj: ') && re.test(e.message), re.source);
  refuses(randomCodes(rng, 4, 172, 16, 8), /out_features 172 is not a multiple of 8/);
  refuses(randomCodes(rng, 4, 16, 172, -1), /in_features 172 is not a multiple of 8/);
  refuses(randomCodes(rng, 3, 32, 48, -1), /in_features 48 is not a multiple of 32/);
  refuses(randomCodes(rng, 3, 16, 32, -1), /out_features 16 is not a multiple of 32/);
  refuses({ ...ok, bits: 5 as GptqBits }, /bits must be one of 2, 3, 4, 8, got 5/);
  refuses({ ...ok, groupSize: 0 }, /group size must be -1 or a positive integer, got 0/);
  refuses({ ...ok, intWeight: ok.intWeight.map((v, i) => (i === 17 ? 16 : v)) }, /code 16 at \[1, 1\] does not fit 4 bits/);
  refuses({ ...ok, gIdx: ok.gIdx.map((g, i) => (i === 3 ? 2 : g)) }, /g_idx\[3\] = 2 is not a group in \[0, 2\)/);
  refuses({ ...ok, scales: ok.scales.subarray(1) }, /scales hold 31 values, \[2, 16\] needs 32/);
});

test('state dict: AutoGPTQ names, dtypes and shapes; read back by name with shapes checked against the config', () => {
  const rng = new Rand(5);
  for (const bits of GPTQ_BITS) {
    const N = 64, K = 96, c = randomCodes(rng, bits, N, K, 32, true);
    c.zeros.fill(1 << (bits - 1));                                          // sym: 2^(bits-1)
    const w = packGptq(c, { sym: true, descAct: true });
    const sd = gptqToStateDict('p', w);
    assert.deepEqual([...sd].map(([k, t]) => [k, t.dtype, [...t.shape]]), [
      ['p.qweight', 'I32', [K * bits / 32, N]], ['p.qzeros', 'I32', [3, N * bits / 32]], ['p.scales', 'F16', [3, N]], ['p.g_idx', 'I32', [K]],
    ]);
    const layout = { bits, groupSize: 32, sym: true, descAct: true, checkpointFormat: 'gptq' as const };
    const back: GptqWeight = gptqFromStateDict('p', (n) => sd.get(n), layout, [N, K]);
    assert.deepEqual(unpackGptq(back), c);
    assert.equal(back.qweight, w.qweight, 'views, not copies');
    assert.throws(() => gptqFromStateDict('p', (n) => sd.get(n), { ...layout, groupSize: 64 }, [N, K]),
      /^GptqError: p\.qzeros: expected I32 \[2, \d+\] for a \d-bit \[64, 96\] layer: 2 groups of 64 inputs, got I32 \[3, \d+\]/);
    assert.throws(() => gptqFromStateDict('p', (n) => (n === 'p.g_idx' ? undefined : sd.get(n)), layout, [N, K]), /p\.g_idx: missing from the checkpoint/);
    assert.throws(() => gptqFromStateDict('p', (n) => sd.get(n), layout, [N, 101]), /p: in_features 101 is not a multiple/);
  }
});

// ---- config (FORMATS.md §4.6) ----

const SRC = '/m/config.json';
const AUTOGPTQ = { bits: 4, group_size: 128, damp_percent: 0.01, desc_act: true, static_groups: false, sym: true, true_sequential: true, model_name_or_path: null, model_file_base_name: null, quant_method: 'gptq', checkpoint_format: 'gptq' };
const gptq = (v: unknown, strict = false) => parseQuantizationConfig(v, SRC, { strict }) as GptqQuantizationSpec;
const pick = (s: GptqQuantizationSpec) => [s.bits, s.groupSize, s.dampPercent, s.descAct, s.staticGroups, s.sym, s.trueSequential, s.checkpointFormat];

test('quantization_config of every GPTQ writer reads to one spec: AutoGPTQ, optimum/transformers, GPTQModel (meta, v2), synonyms, quantize_config.json alone', () => {
  const said: string[] = [];
  const prev = setWarningHandler((m) => said.push(m), { reset: true });
  try {
    assert.deepEqual(pick(gptq(AUTOGPTQ)), [4, 128, 0.01, true, false, true, true, 'gptq']);
    const fixtureQc = (f: string) => JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'gptq', f, 'config.json'), 'utf8')).quantization_config;
    // optimum / transformers GPTQConfig.to_dict (calibration and kernel keys read past).
    const opt = gptq(fixtureQc('optimum_3bit_g32_bias'));
    assert.deepEqual(pick(opt), [3, 32, 0.1, false, false, true, true, 'gptq']);
    assert.equal(opt.dataset, 'c4');
    assert.deepEqual(gptq(fixtureQc('transformers_8bit_gm1')).dataset, ['a calibration text', 'another one']);
    // GPTQModel: format and checkpoint_format, damp_percent and static_groups in meta, pack_dtype, dynamic null.
    assert.deepEqual(pick(gptq(fixtureQc('gptqmodel_4bit_g32_asym_v2'))), [4, 32, 0.05, false, false, false, true, 'gptq_v2']);
    // Newest optimum: `format` instead of checkpoint_format, meta naming the quantizers.
    assert.equal(gptq({ quant_method: 'gptq', bits: 4, format: 'gptq_v2', meta: { quantizer: ['optimum:1.25.0', 'gptqmodel:2.2.0'] }, dynamic: {} }).checkpointFormat, 'gptq_v2');
    // AWQ-style synonyms; transformers' defaults (group 128, no act-order, sym) and AutoGPTQ's damp 0.01.
    assert.deepEqual(pick(gptq({ quant_method: 'gptq', w_bit: 2, q_group_size: 64 })), [2, 64, 0.01, false, false, true, true, 'gptq']);
    // An old AutoGPTQ folder: config.json without quantization_config, quantize_config.json without quant_method.
    const old = readConfig(join(ROOT, 'test', 'fixtures', 'gptq', 'autogptq_4bit_g32_actorder', 'config.json'));
    assert.equal(old.raw.quantization_config, undefined);
    assert.deepEqual(pick(old.quantization_config as GptqQuantizationSpec), [4, 32, 0.01, true, false, true, true, 'gptq']);
    // A key no GPTQ writer is known for is warned about once, from a file.
    gptq({ ...AUTOGPTQ, future_knob: 1 }); gptq({ ...AUTOGPTQ, future_knob: 1 });
  } finally { setWarningHandler(prev, { reset: true }); }
  assert.deepEqual(said, [`${SRC}: "quantization_config.future_knob" is not a GPTQ config field lowbit knows; ignored`]);
  // The dict lowbit writes: AutoGPTQ's key set and order.
  assert.deepEqual([...gptqConfigDict(gptq({ ...AUTOGPTQ, format: 'gptq' })).keys()], Object.keys(AUTOGPTQ));
});

test('bad GPTQ configs are typed errors naming the file and key: bits, group size, damp, dynamic, marlin, formats, pack_dtype, lm_head', () => {
  const refuses = (v: Record<string, unknown>, E: typeof ConfigError, re: RegExp) =>
    assert.throws(() => gptq({ quant_method: 'gptq', bits: 4, ...v }), (e: Error) => e instanceof E && e.message.startsWith(`${SRC}: `) && re.test(e.message), re.source);
  refuses({ bits: 5 }, ConfigError, /"quantization_config\.bits" must be one of 2, 3, 4, 8, got 5/);
  refuses({ bits: '4' }, ConfigError, /"quantization_config\.bits" must be one of 2, 3, 4, 8, got "4"/);
  refuses({ bits: null }, ConfigError, /"quantization_config" has no "bits"/);
  refuses({ group_size: 0 }, ConfigError, /"quantization_config\.group_size" must be -1 or a positive integer, got 0/);
  refuses({ group_size: 1.5 }, ConfigError, /group_size" must be -1 or a positive integer/);
  refuses({ damp_percent: 1 }, ConfigError, /"quantization_config\.damp_percent" must be a number between 0 and 1/);
  refuses({ meta: { damp_percent: -0.1 } }, ConfigError, /damp_percent" must be a number between 0 and 1 \(exclusive\), got -0\.1/);
  refuses({ desc_act: 'yes' }, ConfigError, /desc_act" must be true or false/);
  refuses({ dynamic: { '-:.*down_proj.*': {}, '+:.*q_proj.*': { bits: 8 } } }, UnsupportedModelError, /"quantization_config\.dynamic" .* is not supported: per-module overrides \("-:\.\*down_proj\.\*", "\+:\.\*q_proj\.\*"\)/);
  refuses({ dynamic: [] }, ConfigError, /dynamic" must be an object of per-module overrides or null/);
  refuses({ is_marlin_format: true }, UnsupportedModelError, /"quantization_config\.is_marlin_format" true is not supported: AutoGPTQ's Marlin-repacked/);
  refuses({ checkpoint_format: 'marlin' }, UnsupportedModelError, /"quantization_config\.checkpoint_format" "marlin" is not supported: a marlin-repacked layout/);
  refuses({ format: 'bitblas' }, UnsupportedModelError, /"quantization_config\.format" "bitblas" is not supported/);
  refuses({ checkpoint_format: 'gptq_v3' }, ConfigError, /checkpoint_format" must be "gptq" or "gptq_v2", got "gptq_v3"/);
  refuses({ checkpoint_format: 'gptq', format: 'gptq_v2' }, ConfigError, /"quantization_config\.checkpoint_format" "gptq" and "quantization_config\.format" "gptq_v2" disagree/);
  refuses({ pack_dtype: 'int16' }, UnsupportedModelError, /pack_dtype" "int16" is not supported: qweight and qzeros are read as int32 words/);
  refuses({ lm_head: true }, UnsupportedModelError, /"quantization_config\.lm_head" true is not supported: a quantized lm_head/);
  refuses({ method: 'awq' }, UnsupportedModelError, /"quantization_config\.method" "awq" is not supported/);
  refuses({ meta: 5 }, ConfigError, /meta" must be an object or null/);
  refuses({ w_bit: 4 }, ConfigError, /gives bits twice/);
  refuses({ dataset: 7 }, ConfigError, /dataset" must be a dataset name or file, a list of texts, or null/);
  refuses({ modules_in_block_to_quantize: ['q_proj'] }, ConfigError, /modules_in_block_to_quantize" must be a list of lists of module names/);
  // From a call, unknown keys and GAR are refused.
  assert.throws(() => gptq({ quant_method: 'gptq', bits: 4, grup_size: 128 }, true), /"quantization_config\.grup_size" is not a GPTQConfig field \(did you mean groupSize\?\)/);
  assert.throws(() => gptq({ quant_method: 'gptq', bits: 4, act_group_aware: true }, true), UnsupportedModelError);
});

test('GPTQConfig: camelCase or snake_case, checked as built, defaults filled; fromPretrained checks the shapes and the data before calibrating', async () => {
  const c = new GPTQConfig({ bits: 4, groupSize: 128, descAct: false, dataset: ['some text', 'more text'], nsamples: 16 });
  assert.deepEqual({ ...c }, {
    quantMethod: 'gptq', bits: 4, groupSize: 128, dampPercent: 0.01, descAct: false, staticGroups: false, sym: true, trueSequential: true,
    checkpointFormat: 'gptq', dataset: ['some text', 'more text'], nsamples: 16, modelSeqlen: null, seed: 0, modulesInBlockToQuantize: null,
  });
  const s = new GPTQConfig({ bits: 3, group_size: 64, desc_act: true, damp_percent: 0.1, checkpoint_format: 'gptq_v2', model_seqlen: 512 });
  assert.deepEqual([s.bits, s.groupSize, s.descAct, s.dampPercent, s.checkpointFormat, s.modelSeqlen], [3, 64, true, 0.1, 'gptq_v2', 512]);
  assert.equal(pyJsonDumps(s.toDict(), { indent: 2 }), '{\n  "bits": 3,\n  "group_size": 64,\n  "damp_percent": 0.1,\n  "desc_act": true,\n'
    + '  "static_groups": false,\n  "sym": true,\n  "true_sequential": true,\n  "model_name_or_path": null,\n  "model_file_base_name": null,\n'
    + '  "quant_method": "gptq",\n  "checkpoint_format": "gptq_v2"\n}');
  assert.throws(() => new GPTQConfig({ bits: 4, groupsize: 128 }), (e: Error) => e instanceof ConfigError && /^GPTQConfig: "groupsize" is not a GPTQConfig field \(did you mean groupSize\?\)/.test(e.message));
  assert.throws(() => new GPTQConfig({ bits: 6 as GptqBits }), /^ConfigError: GPTQConfig: "bits" must be one of 2, 3, 4, 8, got 6/);
  assert.throws(() => new GPTQConfig({ bits: 4, nsamples: 0 }), /"nsamples" must be a positive integer, got 0/);
  assert.throws(() => new GPTQConfig(null as never), /GPTQConfig: expected an options object/);
  // A GPTQConfig passes fromPretrained's strict check and quantizes after the model is built (test/gptq-cli.test.ts);
  // a model whose layers 4-bit qzeros cannot pack (172 outputs) is refused before any calibration, naming the layer,
  // and a packable one without calibration data says what to give.
  assert.deepEqual(pick(parseQuantizationConfig(c, 'fromPretrained', { strict: true, where: 'quantizationConfig' }) as GptqQuantizationSpec), [4, 128, 0.01, false, false, true, true, 'gptq']);
  await assert.rejects(fromPretrained(join(ROOT, 'test', 'fixtures', 'bnb', 'hf_llama_bf16'), { backend: 'ref', quantizationConfig: c }),
    /GptqError: model\.layers\.0\.mlp\.(gate|up)_proj: out_features 172 is not a multiple of 8/);
  await assert.rejects(fromPretrained(join(ROOT, 'models', 'kjv-demo'), { backend: 'ref', quantizationConfig: new GPTQConfig({ bits: 4 }) }),
    (e: Error) => e instanceof ConfigError && /GPTQ needs calibration data: set dataset/.test(e.message));
  await assert.rejects(fromPretrained(join(ROOT, 'test', 'fixtures', 'gptq', 'optimum_3bit_g32_bias'), { backend: 'ref', quantizationConfig: c }), /already quantized/);
});
