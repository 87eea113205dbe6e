// savePretrained: quantize on load → save gives the folder transformers + bitsandbytes wrote (tensors byte for byte,
// config.json's quantization_config), and the saved folder loads back to the same logits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { loadStateDict } from '../src/io/checkpoint.js';
import { savePretrained, SavePretrainedError } from '../src/io/save.js';
import { quantStats } from '../src/quant/stats.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { pyJsonDumps, pyJsonParse } from '../src/util/pyjson.js';
import { GOLDEN_DIR, ROOT } from './helpers.js';

const FIX = join(ROOT, 'test', 'fixtures', 'bnb');
const IDS = [[1, 5, 9, 33, 2, 70, 127, 4], [3, 3, 60, 61, 62, 10, 11, 12]];
const bytes = (t: Tensor) => { const d = t.data as unknown as ArrayBufferView; return new Uint8Array(d.buffer, d.byteOffset, d.byteLength); };
const tmp = () => mkdtempSync(join(tmpdir(), 'lowbit-save-'));

const NF4DQ = { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true, bnb4bitComputeDtype: 'bfloat16' } as const;

test('quantize on load → savePretrained gives transformers\' nf4 + double-quant folder: tensors and config.json', async () => {
  const root = tmp();
  try {
    const q = await fromPretrained(join(FIX, 'hf_llama_bf16'), { backend: 'ref', quantizationConfig: NF4DQ });
    const out = join(root, 'nf4');
    const r = savePretrained(q, out);
    assert.deepEqual(r.copied, ['generation_config.json']);
    assert.deepEqual(readdirSync(out).sort(), ['config.json', 'generation_config.json', 'model.safetensors']);
    // (a) every tensor, both ways: names, dtypes, shapes, bytes.
    const ours = loadStateDict(out, { mmap: false }).tensors, theirs = loadStateDict(join(FIX, 'hf_llama_nf4dq'), { mmap: false }).tensors;
    assert.deepEqual([...ours.keys()].sort(), [...theirs.keys()].sort());
    for (const [k, t] of theirs) {
      const o = ours.get(k)!;
      assert.equal(o.dtype, t.dtype, k); assert.deepEqual([...o.shape], [...t.shape], k); assert.deepEqual(bytes(o), bytes(t), k);
    }
    // (b) config.json: equal as data, and as text (transformers' indent=2, sort_keys, floats as Python writes them).
    const text = readFileSync(join(out, 'config.json'), 'utf8'), fixture = readFileSync(join(FIX, 'hf_llama_nf4dq', 'config.json'), 'utf8');
    assert.deepEqual(JSON.parse(text).quantization_config, JSON.parse(fixture).quantization_config);
    assert.equal(text, fixture);
    assert.deepEqual(readFileSync(join(out, 'generation_config.json')), readFileSync(join(FIX, 'hf_llama_bf16', 'generation_config.json')));
    // (c) the saved folder loads (as a pre-quantized checkpoint) to the very same logits.
    const back = await fromPretrained(out, { backend: 'ref' });
    assert.deepEqual(back.model.forward(IDS).f32, q.model.forward(IDS).f32);
    // Saving what was loaded pre-quantized writes the same tensors and config again.
    const again = join(root, 'again');
    savePretrained(back, again);
    assert.equal(readFileSync(join(again, 'config.json'), 'utf8'), fixture);
    assert.deepEqual(readFileSync(join(again, 'model.safetensors')), readFileSync(join(out, 'model.safetensors')));
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('int8: quantized tensors and config.json as transformers wrote them, float tensors kept in their dtype', async () => {
  const root = tmp();
  try {
    const q = await fromPretrained(join(FIX, 'hf_llama_bf16'), { backend: 'ref', quantizationConfig: { load_in_8bit: true } });
    const out = join(root, 'int8');
    savePretrained(q, out);
    const ours = loadStateDict(out, { mmap: false }).tensors, theirs = loadStateDict(join(FIX, 'hf_llama_int8'), { mmap: false }).tensors;
    assert.deepEqual([...ours.keys()].sort(), [...theirs.keys()].sort());
    let same = 0;
    for (const [k, t] of theirs) {
      const o = ours.get(k)!;
      assert.deepEqual([...o.shape], [...t.shape], k);
      // transformers' int8 load also cast the unquantized tensors (embeddings, norms, lm_head) to float16; lowbit
      // keeps the checkpoint's bf16, so only the quantized layers' tensors are compared byte for byte.
      if (/\.(SCB|weight_format)$/.test(k) || t.dtype === 'I8') { assert.equal(o.dtype, t.dtype, k); assert.deepEqual(bytes(o), bytes(t), k); same++; }
      else assert.equal(o.dtype, 'BF16', k);
    }
    assert.equal(same, 21);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')), fx = JSON.parse(readFileSync(join(FIX, 'hf_llama_int8', 'config.json'), 'utf8'));
    assert.deepEqual(cfg.quantization_config, fx.quantization_config);
    assert.match(readFileSync(join(out, 'config.json'), 'utf8'), /"llm_int8_threshold": 6\.0,/);
    const back = await fromPretrained(out, { backend: 'ref' });
    assert.deepEqual(back.model.forward(IDS).f32, q.model.forward(IDS).f32);
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('OPT golden quantized on load (nf4, int8) saves and loads back to the same logits', async () => {
  const root = tmp();
  try {
    for (const g of ['opt_125m_like', 'opt_350m_like']) {
      for (const [key, qc] of [['nf4', { loadIn4bit: true, bnb4bitQuantType: 'nf4' }], ['int8', { loadIn8bit: true, llmInt8SkipModules: ['fc1'] }]] as const) {
        const src = join(GOLDEN_DIR, g);
        const q = await fromPretrained(src, { backend: 'ref', quantizationConfig: qc });
        const ids = IDS.map((r) => r.map((i) => i % q.config.vocab_size));
        const out = join(root, `${g}-${key}`);
        savePretrained(q, out);
        const back = await fromPretrained(out, { backend: 'ref' });
        assert.deepEqual(back.model.forward(ids).f32, q.model.forward(ids).f32, `${g} ${key}`);
        const names = [...back.model.linears().keys()];
        if (g === 'opt_350m_like') assert.ok(names.includes('model.decoder.project_in') && loadStateDict(out).tensors.has('model.decoder.project_in.weight.absmax') === (key === 'nf4'));
        const st = quantStats(loadStateDict(out).tensors);
        const fc1 = names.filter((n) => n.endsWith('.fc1'));
        assert.equal(st.layers.length, names.length - 1 - (key === 'int8' ? fc1.length : 0), `${g} ${key}: all but lm_head${key === 'int8' ? ' and fc1' : ''}`);
      }
    }
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('savePretrained refuses a non-empty folder, the source folder, and a file; overwrite replaces every file', async () => {
  const root = tmp();
  try {
    const q = await fromPretrained(join(FIX, 'hf_llama_bf16'), { backend: 'ref', quantizationConfig: NF4DQ });
    const out = join(root, 'x');
    mkdirSync(out); writeFileSync(join(out, 'keep.txt'), 'mine');
    assert.throws(() => savePretrained(q, out), (e: Error) => e instanceof SavePretrainedError && /folder is not empty/.test(e.message));
    assert.deepEqual(readdirSync(out), ['keep.txt']);
    assert.throws(() => savePretrained(q, join(FIX, 'hf_llama_bf16'), { overwrite: true }), /is the folder the model was loaded from/);
    assert.throws(() => savePretrained(q, join(out, 'keep.txt')), /is a file/);
    savePretrained(q, out, { overwrite: true });
    assert.deepEqual(readdirSync(out).sort(), ['config.json', 'generation_config.json', 'keep.txt', 'model.safetensors']);
    assert.equal(readFileSync(join(out, 'config.json'), 'utf8'), readFileSync(join(FIX, 'hf_llama_nf4dq', 'config.json'), 'utf8'));
    // An empty folder is filled through the staging rename; no staging folder stays behind.
    const empty = join(root, 'empty'); mkdirSync(empty);
    savePretrained(q, empty);
    assert.ok(existsSync(join(empty, 'model.safetensors')));
    assert.deepEqual(readdirSync(root).sort(), ['empty', 'x']);
    // A float model saves without quantization_config.
    const f = await fromPretrained(join(FIX, 'hf_llama_bf16'), { backend: 'ref' });
    savePretrained(f, join(root, 'float'));
    assert.equal(readFileSync(join(root, 'float', 'config.json'), 'utf8'), readFileSync(join(FIX, 'hf_llama_bf16', 'config.json'), 'utf8'));
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('pyJsonParse keeps floats as floats and key order, so a config round-trips byte for byte', () => {
  for (const f of ['hf_llama_bf16', 'hf_llama_nf4dq', 'hf_llama_int8']) {
    const text = readFileSync(join(FIX, f, 'config.json'), 'utf8');
    assert.equal(pyJsonDumps(pyJsonParse(text), { indent: 2 }) + '\n', text);
  }
  assert.equal(pyJsonDumps(pyJsonParse('{"b": [1, 2.0, -1e-06, 1E+20], "a": {"10": null, "2": "\\u00e9"}}')), '{"b": [1, 2.0, -1e-06, 1e+20], "a": {"10": null, "2": "\\u00e9"}}');
  assert.throws(() => pyJsonParse('{"a": 1,}'), /JSON: expected a key/);
  assert.throws(() => pyJsonParse('[1] x'), /trailing text/);
});

test('quantStats: bits per weight in the quantized layers of transformers\' saves', () => {
  const nf4 = quantStats(loadStateDict(join(FIX, 'hf_llama_nf4dq')).tensors);
  assert.deepEqual([nf4.layers.length, nf4.formats, nf4.blocksizes, nf4.doubleQuant], [7, ['nf4'], [64], true]);
  // q, o 64·64; k, v 32·64; gate, up, down 172·64: 45312 weights in 708 blocks (U8 absmax), one nested float per
  // layer (each has ≤ 256 blocks). Small layers pay more for the nested scale than 4 + 8/64 + 32/(64·256) ≈ 4.127.
  assert.equal(nf4.params, 45312);
  assert.equal(nf4.bytes, 45312 / 2 + 708 + 7 * 4);
  assert.ok(Math.abs(nf4.bitsPerWeight - 4.12994) < 1e-4, `${nf4.bitsPerWeight}`);
  const i8 = quantStats(loadStateDict(join(FIX, 'hf_llama_int8')).tensors);
  assert.deepEqual([i8.layers.length, i8.formats, i8.doubleQuant], [7, ['int8'], null]);
  assert.equal(i8.bytes, 45312 + 4 * (64 + 32 + 32 + 64 + 172 * 2 + 64));
});
