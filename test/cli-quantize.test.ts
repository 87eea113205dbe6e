// lowbit quantize: the folder it writes is transformers' own (byte for byte on the committed fixture), loads back in
// lowbit, and every option error names the option (exit 2).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { loadStateDict } from '../src/io/checkpoint.js';
import { Linear } from '../src/nn/layers.js';
import { Linear4bit, Linear8bitLt } from '../src/nn/quant.js';
import { quantStats } from '../src/quant/stats.js';
import { KJV, lowbit, ROOT } from './helpers.js';

const FIX = join(ROOT, 'test', 'fixtures', 'bnb');
const BF16 = join(FIX, 'hf_llama_bf16');


test('lowbit quantize --method nf4 --double-quant --compute-dtype bf16 writes transformers\' file byte for byte', () => {
  const root = mkdtempSync(join(tmpdir(), 'lowbit-q-'));
  try {
    const out = join(root, 'nf4');
    const r = lowbit('quantize', BF16, '--method', 'nf4', '--double-quant', '--compute-dtype', 'bf16', '--out', out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /^quantize 1\/1 layers\n$/);  // renderProgress off a terminal: the last line
    assert.match(r.out, /7 linear layers quantized \(lm_head kept float\)/);
    assert.match(r.out, /45,312 weights, 16\.000 → 4\.130 bits\/weight/);
    for (const f of ['model.safetensors', 'config.json', 'generation_config.json']) {
      assert.deepEqual(readFileSync(join(out, f)), readFileSync(join(FIX, 'hf_llama_nf4dq', f)), f);
    }
    // A non-empty --out is refused (exit 2, nothing touched) unless --force.
    const again = lowbit('quantize', BF16, '--method', 'int8', '--out', out);
    assert.equal(again.code, 2);
    assert.match(again.err, /--out .* is a folder that is not empty \(pass --force to replace its files\)/);
    assert.deepEqual(readFileSync(join(out, 'config.json')), readFileSync(join(FIX, 'hf_llama_nf4dq', 'config.json')));
    assert.equal(lowbit('quantize', BF16, '--method', 'int8', '--out', out, '--force').code, 0);
    assert.match(readFileSync(join(out, 'config.json'), 'utf8'), /"load_in_8bit": true/);
    // A checkpoint that is already quantized: exit 1, the loader's ConfigError.
    const q = lowbit('quantize', join(FIX, 'hf_llama_nf4dq'), '--method', 'nf4', '--out', join(root, 'twice'));
    assert.equal(q.code, 1);
    assert.match(q.err, /ConfigError: .*already quantized/);
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('lowbit quantize: int8 with --skip-modules and --threshold, fp4 with --blocksize, load back in lowbit', async () => {
  const root = mkdtempSync(join(tmpdir(), 'lowbit-q-'));
  try {
    const i8 = join(root, 'int8');
    assert.equal(lowbit('quantize', BF16, '--method', 'int8', '--threshold', '4.5', '--skip-modules', 'mlp,o_proj', '--out', i8).code, 0);
    const m = await fromPretrained(i8, { backend: 'ref' });
    for (const [name, l] of m.model.linears()) {
      const float = name === 'lm_head' || /\.mlp\.|o_proj/.test(name);
      assert.ok(float ? l instanceof Linear : l instanceof Linear8bitLt, name);
    }
    const cfg = JSON.parse(readFileSync(join(i8, 'config.json'), 'utf8')).quantization_config;
    assert.equal(cfg.llm_int8_threshold, 4.5);
    assert.deepEqual(cfg.llm_int8_skip_modules, ['mlp', 'o_proj']);
    const fp4 = join(root, 'fp4');
    const r = lowbit('quantize', BF16, '--method', 'fp4', '--blocksize', '128', '--out', fp4);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /fp4, block 128, compute float32/);
    const st = quantStats(loadStateDict(fp4).tensors);
    assert.deepEqual([st.formats, st.blocksizes, st.doubleQuant], [['fp4'], [128], false]);
    const f = await fromPretrained(fp4, { backend: 'ref' });
    assert.ok([...f.model.linears().values()].filter((l) => l instanceof Linear4bit).length === 7);
    assert.ok(f.model.forward([[1, 2, 3]]).f32.every(Number.isFinite));
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('lowbit quantize: option errors name the option and exit 2', () => {
  const root = mkdtempSync(join(tmpdir(), 'lowbit-q-'));
  try {
    const out = join(root, 'o');
    const cases: [string[], RegExp][] = [
      [[BF16, '--out', out], /--method is required/],
      [[BF16, '--method', 'nf3', '--out', out], /--method "nf3" is unknown \(choose int8, nf4, fp4, gptq, rtn or awq\)/],
      [[BF16, '--method', 'nf4'], /--out DIR is required/],
      [[BF16, '--method', 'nf4', '--threshold', '5', '--out', out], /--threshold applies to --method int8, not nf4/],
      [[BF16, '--method', 'int8', '--double-quant', '--out', out], /--double-quant applies to --method nf4 or fp4/],
      [[BF16, '--method', 'int8', '--blocksize', '64', '--out', out], /--blocksize applies to --method nf4 or fp4/],
      [[BF16, '--method', 'nf4', '--blocksize', '100', '--out', out], /--blocksize must be one of 32, 64, 128, 256, 512, 1024, 2048, 4096, got 100/],
      [[BF16, '--method', 'nf4', '--compute-dtype', 'fp8', '--out', out], /--compute-dtype "fp8" is unknown \(choose bf16, f16 or f32\)/],
      [[BF16, '--method', 'int8', '--threshold', '-1', '--out', out], /--threshold must be a number ≥ 0, got "-1"/],
      [[BF16, '--method', 'int8', '--skip-modules', 'mlp,', '--out', out], /--skip-modules "mlp," has an empty name/],
      [[BF16, '--method', 'nf4', '--out', join(FIX, 'bnb_golden.json')], /--out .* is a file, not a folder/],
      [[BF16, '--method', 'nf4', '--outt', out], /unknown option --outt \(did you mean --out\?\)/],
      [['--method', 'nf4', '--out', out], /give one model folder or Hub id/],
    ];
    for (const [args, re] of cases) {
      const r = lowbit('quantize', ...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, re);
      assert.match(r.err, /^lowbit quantize: /);
    }
    assert.equal(lowbit('quantize', '/no/such/model', '--method', 'nf4', '--out', join(root, 'p')).code, 1);
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('fromPretrained blocksize: 4-bit only, one of bitsandbytes\' sizes', async () => {
  await assert.rejects(fromPretrained(BF16, { quantizationConfig: { loadIn8bit: true }, blocksize: 64 }), /blocksize applies to 4-bit quantizationConfig only/);
  await assert.rejects(fromPretrained(BF16, { blocksize: 64 }), /blocksize applies to 4-bit quantizationConfig only/);
  await assert.rejects(fromPretrained(BF16, { quantizationConfig: { loadIn4bit: true }, blocksize: 48 }), /blocksize must be one of 32, 64, .*got 48/);
});

test('lowbit info shows the quantization: format, block size, double quant, bits per weight with scales, file bytes', () => {
  const info = (dir: string) => {
    const r = lowbit('info', dir, '--json');
    assert.equal(r.code, 0, r.err);
    return JSON.parse(r.out) as { quantization: Record<string, unknown> | null; fileBytes: number };
  };
  const nf4 = info(join(FIX, 'hf_llama_nf4dq'));
  // 45312 weights: packed 22656 B + 708 U8 absmax + 7 nested float32 = 23392 B → 4.1299 bits (small layers).
  assert.deepEqual(nf4.quantization, { formats: ['nf4'], blocksizes: [64], doubleQuant: true, computeDtype: 'bfloat16', layers: 7,
    params: 45312, bytes: 23392, bitsPerWeight: (23392 * 8) / 45312 });
  assert.equal(nf4.fileBytes, 70436);
  const i8 = info(join(FIX, 'hf_llama_int8'));
  assert.deepEqual([i8.quantization!.formats, i8.quantization!.bytes, i8.fileBytes], [['int8'], 45312 + 4 * 600, 83415]);
  assert.equal(info(BF16).quantization, null);
  const text = lowbit('info', join(FIX, 'hf_llama_nf4dq')).out;
  assert.match(text, /^quantization     nf4, block 64, double quant, compute bfloat16: 7 layers, 45,312 weights at 4\.130 bits\/weight \(scales included\)$/m);
  assert.match(text, /^checkpoint       70,436 bytes in safetensors files \(0\.07 MB\)$/m);
  assert.match(lowbit('info', BF16).out, /^quantization     none$/m);
  // The GPU line: this machine's GPU against the model, or why the cuda backend cannot run here.
  const gpu = (JSON.parse(lowbit('info', BF16, '--json').out) as { gpu: { ok: boolean; why?: string; weightsFit?: boolean } }).gpu;
  if (gpu.ok) assert.equal(gpu.weightsFit, true);
  else assert.ok(gpu.why && gpu.why.length > 0);
  assert.match(lowbit('info', BF16).out, gpu.ok ? /^GPU              .*: .* free of .*; the weights fit, with room for [\d,]+ tokens/m : /^GPU              none usable here \(.+\)$/m);

  // On layers of real width the figure is bitsandbytes' 4 + 8/64 + 32/(64·256) ≈ 4.127: the demo model, quantized.
  const root = mkdtempSync(join(tmpdir(), 'lowbit-q-'));
  try {
    const out = join(root, 'kjv');
    const q = lowbit('quantize', KJV, '--method', 'nf4', '--double-quant', '--out', out);
    assert.equal(q.code, 0, q.err);
    assert.match(q.out, /16\.000 → 4\.127 bits\/weight/);
    const k = info(out).quantization!;
    assert.equal(k.layers, 42);
    assert.ok(Math.abs((k.bitsPerWeight as number) - (4 + 8 / 64 + 32 / (64 * 256))) < 5e-4, `${k.bitsPerWeight}`);
    assert.match(lowbit('info', out).out, /42 layers, 4,349,952 weights at 4\.127 bits\/weight/);
  } finally { rmSync(root, { recursive: true, force: true }); }
});
