// AWQ end to end on the demo model (models/kjv-demo, in the repo): `lowbit quantize --method awq` writes an AutoAWQ
// folder (GEMM or GEMV) with quantize_report.json and prints the α of every group; the folder loads and gives the
// logits of the model quantized in memory by fromPretrained's AwqConfig, scaled norms included (quantize on load =
// load of the saved file); `lowbit info` describes it; usage errors exit 2.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { AwqConfig } from '../src/io/awqconfig.js';
import { quantizedStateDict } from '../src/io/save.js';
import { AwqLinear } from '../src/nn/quant.js';
import { GOLDEN_DIR, KJV, lowbit, NO_DATA, relErr, sharedData } from './helpers.js';
import { parseAwqConfig } from '../src/io/awqconfig.js';
import { savePretrained } from '../src/io/save.js';
import { quantizeLoadedAwq } from '../src/quant/awq-run.js';

const tmp = mkdtempSync(join(tmpdir(), 'lowbit-awq-cli-'));
const DATA = join(KJV, 'heldout.txt');
const ids = [[1, 12, 40, 7, 99, 3, 250, 17, 8, 61]];

describe('lowbit quantize --method awq', () => {
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('an AutoAWQ GEMM folder, the report, a line per group with its α; it loads to the in-memory AWQ model\'s logits', async () => {
    const out = join(tmp, 'awq');
    // kjv-demo's MLP is 688 wide: group 16 divides every input size.
    const r = lowbit('quantize', KJV, '--method', 'awq', '--group-size', '16', '--dataset', DATA, '--nsamples', '16', '--seqlen', '64', '--out', out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /method {11}awq, 4-bit, group 16, zero point, GEMM layout/);
    assert.match(r.out, /calibration {6}\d+ blocks × 64 tokens from /);
    // 6 layers: q/k/v, gate/up and down scaled in each; v → o skipped (kjv-demo has grouped KV heads).
    assert.match(r.out, /42 linear layers quantized \(lm_head kept float\); 18 groups scaled, 6 skipped/);
    assert.match(r.out, /^q_proj,k_proj,v_proj +6 +\d\.\d\d /m);
    assert.match(r.err, /awq L0 input_layernorm → q_proj,k_proj,v_proj: α \d\.\d\d, loss /);
    const report = JSON.parse(readFileSync(join(out, 'quantize_report.json'), 'utf8'));
    assert.equal(report.layers.length, 42);
    assert.equal(report.groups.length, 18);
    assert.equal(report.skipped_groups.length, 6);
    for (const g of report.groups) {
      assert.equal(g.losses.length, 20);
      assert.equal(g.loss, Math.min(...g.losses), 'the chosen α has the smallest loss of the grid');
      assert.equal(g.loss_at_alpha0, g.losses[0]);
    }
    assert.equal(report.scaled_norms.length, 12, 'both norms of every layer absorbed scales');
    const qc = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).quantization_config;
    assert.deepEqual(qc, { quant_method: 'awq', zero_point: true, group_size: 16, bits: 4, version: 'gemm', modules_to_not_convert: null });

    const mem = await fromPretrained(KJV, { quantizationConfig: new AwqConfig({ groupSize: 16, dataset: DATA, nsamples: 16, seqlen: 64 }) });
    const disk = await fromPretrained(out);
    assert.equal([...disk.model.linears().values()].filter((l) => l instanceof AwqLinear).length, 42);
    const memTensors = quantizedStateDict(mem);
    for (const [name, t] of disk.tensors) {
      const m = memTensors.get(name);
      assert.ok(m, `${name} is in the saved folder and the in-memory model`);
      assert.deepEqual(new Uint8Array(m.data.buffer, m.data.byteOffset, m.byteLength), new Uint8Array(t.data.buffer, t.data.byteOffset, t.byteLength), name);
    }
    // The norms were saved as the model runs them (float32, scales folded in), so the logits agree exactly.
    assert.equal(disk.tensors.get('model.layers.0.input_layernorm.weight')?.dtype, 'F32');
    assert.deepEqual(disk.model.forward(ids).f32, mem.model.forward(ids).f32);

    const info = lowbit('info', out);
    assert.equal(info.code, 0, info.err);
    assert.match(info.out, /awq 4-bit, group 16, zero point, version gemm \(GEMM layout\): 42 layers/);
  });

  it('--version gemv writes AutoAWQ\'s GEMV layout, which loads and runs (eval-llama-16m: its sizes take group 128)', async (t) => {
    const data = sharedData();
    if (!data) { t.skip(NO_DATA); return; }
    const model = join(data, 'models', 'eval-llama-16m'), out = join(tmp, 'gemv');
    const r = lowbit('quantize', model, '--method', 'awq', '--version', 'gemv', '--dataset', join(data, 'text', 'tinyshakespeare.txt'),
      '--nsamples', '32', '--seqlen', '64', '--out', out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /method {11}awq, 4-bit, group 128, zero point, GEMV layout/);
    const disk = await fromPretrained(out);
    assert.equal(disk.quantizationConfig?.get('version'), 'gemv');
    const K = 384, N = 384;   // q_proj of eval-llama-16m: GEMV qweight is [N, K/8]
    assert.deepEqual(disk.tensors.get('model.layers.0.self_attn.q_proj.qweight')?.shape, [N, K / 8]);
    const float = await fromPretrained(model);
    const a = disk.model.forward(ids).f32, b = float.model.forward(ids).f32;
    assert.ok(relErr(a, b) < 0.25, `4-bit logits near the float model's (measured 0.11): ${relErr(a, b)}`);
  });

  it('usage errors exit 2 and name the option; a shape the layout cannot hold names the layer', () => {
    const o = join(tmp, 'bad');
    for (const [args, msg] of [
      [['--method', 'awq', '--out', o], /--method awq needs --dataset FILE/],
      [['--method', 'awq', '--bits', '3', '--dataset', DATA, '--out', o], /AWQ checkpoints pack 4-bit codes only/],
      [['--method', 'awq', '--desc-act', '--dataset', DATA, '--out', o], /--desc-act applies to --method gptq or rtn, not awq/],
      [['--method', 'awq', '--version', 'marlin', '--dataset', DATA, '--out', o], /--version "marlin" is unknown/],
      [['--method', 'nf4', '--version', 'gemm', '--out', o], /--version applies to --method awq, not nf4/],
    ] as const) {
      const r = lowbit('quantize', KJV, ...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, msg);
    }
    const r = lowbit('quantize', KJV, '--method', 'awq', '--dataset', DATA, '--out', o);
    assert.notEqual(r.code, 0);
    assert.match(r.err, /model\.layers\.0\.mlp\.down_proj: in_features 688 is not a multiple of the group size 128/);
  });

  it('OPT (biases, LayerNorm biases, v_proj → out_proj and fc1 → fc2 scaled): the saved folder reloads to the same logits', async () => {
    // The tiny OPT of the golden fixtures (hidden 64, ffn 128, 4 heads): every group applies, so the folded scales
    // reach LayerNorm weights and biases and the biases of v_proj and fc1, which the save must take from the model.
    const m = await fromPretrained(join(GOLDEN_DIR, 'opt_125m_like'));
    m.tokenizer = { encode: (t: string) => [2, ...Array.from(t, (ch) => 4 + (ch.charCodeAt(0) % 250))] } as never;
    // Texts of at most 46 characters: 47 tokens with the BOS, under the block length of 48.
    const texts = Array.from({ length: 24 }, (_, i) => `t${i} ${'the quick brown fox jumps over the lazy dog'.slice(i % 9)}`);
    const spec = parseAwqConfig({ quant_method: 'awq', bits: 4, group_size: 32, zero_point: true, version: 'gemm', dataset: texts, nsamples: 24, seqlen: 48 }, 'test', { strict: true });
    const run = quantizeLoadedAwq(m, spec);
    assert.equal(run.skipped.length, 0, JSON.stringify(run.skipped));
    assert.equal(run.groups.length, 4 * 2, 'four groups in each of the two layers');
    assert.ok(run.scaledNorms.some((n) => n.endsWith('final_layer_norm')));
    const out = join(tmp, 'opt');
    savePretrained(m, out);
    const disk = await fromPretrained(out);
    assert.equal(disk.tensors.get('model.decoder.layers.0.self_attn_layer_norm.bias')?.dtype, 'F32');
    const opt = [[2, 17, 40, 7, 99, 3, 250, 17]];
    assert.deepEqual(disk.model.forward(opt).f32, m.model.forward(opt).f32);
  });
});
