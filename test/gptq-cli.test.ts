// GPTQ end to end on the demo model (models/kjv-demo, in the repo): `lowbit quantize --method gptq|rtn` writes an
// AutoGPTQ folder with quantize_report.json and quantize_report.svg and prints the summary table; the folder loads
// and gives the logits of the model quantized in memory by fromPretrained's GPTQConfig (quantize on load = load of
// the saved file); usage errors exit 2.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { GPTQConfig } from '../src/io/gptqconfig.js';
import { GptqLinear } from '../src/nn/quant.js';
import { quantizedStateDict } from '../src/io/save.js';
import { KJV, lowbit } from './helpers.js';
import { cudaAvailable } from '../src/backend/cuda/index.js';

const tmp = mkdtempSync(join(tmpdir(), 'lowbit-gptq-cli-'));
const DATA = join(KJV, 'heldout.txt');
const ids = [[0, 12, 40, 7, 99, 3, 250, 17, 8, 61]];

describe('lowbit quantize --method gptq|rtn', () => {
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('gptq: an AutoGPTQ folder, the report and chart, a summary table; it loads to the in-memory GPTQ model\'s logits', async () => {
    const out = join(tmp, 'gptq');
    const r = lowbit('quantize', KJV, '--method', 'gptq', '--bits', '4', '--group-size', '64', '--asym', '--desc-act', '--dataset', DATA,
      '--nsamples', '4', '--seqlen', '64', '--out', out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /method {11}gptq, 4-bit, group 64, asym, act-order, damp 0\.01, gptq/);
    assert.match(r.out, /calibration {6}4 × 64 tokens from /);
    assert.match(r.out, /42 linear layers quantized \(lm_head kept float\)/);
    const all = /^all +42 +(\S+) +(\S+) +(\S+)$/m.exec(r.out);
    assert.ok(all, r.out);
    assert.ok(Number(all[3]) < 1, `GPTQ's mean error is below RTN's: ${all[0]}`);
    assert.match(r.err, /gptq 42\/42 layers/);
    const report = JSON.parse(readFileSync(join(out, 'quantize_report.json'), 'utf8'));
    assert.equal(report.layers.length, 42);
    assert.deepEqual(report.calibration, { source: DATA, kind: 'stream', samples: 4, seqlen: 64, tokens: 256, seed: 0 });
    for (const l of report.layers) assert.ok(l.gptqError > 0 && l.rtnError > 0 && l.gptqLoss >= 0, JSON.stringify(l));
    const svg = readFileSync(join(out, 'quantize_report.svg'), 'utf8');
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.equal(svg.match(/<polyline /g)?.length, 2);
    const qc = JSON.parse(readFileSync(join(out, 'quantize_config.json'), 'utf8'));
    assert.deepEqual([qc.bits, qc.group_size, qc.desc_act, qc.sym, qc.quant_method], [4, 64, true, false, 'gptq']);

    // Quantize on load with the same request (and backend: the calibration forwards' float sums decide the Hessians)
    // gives the tensors of the saved folder byte for byte, and the same logits.
    const mem = await fromPretrained(KJV, { quantizationConfig: new GPTQConfig({ bits: 4, groupSize: 64, sym: false, descAct: true, dataset: DATA, nsamples: 4, modelSeqlen: 64 }) });
    const disk = await fromPretrained(out);
    const lin = [...disk.model.linears().values()];
    assert.equal(lin.filter((l) => l instanceof GptqLinear).length, 42);
    const memTensors = quantizedStateDict(mem);
    for (const [name, t] of disk.tensors) {
      const m = memTensors.get(name);
      assert.ok(m, `${name} is in the saved folder and the in-memory model`);
      assert.deepEqual(new Uint8Array(m.data.buffer, m.data.byteOffset, m.byteLength), new Uint8Array(t.data.buffer, t.data.byteOffset, t.byteLength), name);
    }
    assert.deepEqual(disk.model.forward(ids).f32, mem.model.forward(ids).f32);
  });

  it('rtn without a dataset: no calibration, no errors, the chart says so; with one, the errors are measured', () => {
    const out = join(tmp, 'rtn');
    const r = lowbit('quantize', KJV, '--method', 'rtn', '--bits', '2', '--group-size', '128', '--out', out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /calibration {6}none/);
    const report = JSON.parse(readFileSync(join(out, 'quantize_report.json'), 'utf8'));
    assert.equal(report.calibration, null);
    assert.ok(report.layers.every((l: { rtnError: unknown; gptqError: unknown }) => l.rtnError === null && l.gptqError === null));
    assert.match(readFileSync(join(out, 'quantize_report.svg'), 'utf8'), /no errors measured/);
    const out2 = join(tmp, 'rtn2');
    const r2 = lowbit('quantize', KJV, '--method', 'rtn', '--bits', '4', '--dataset', DATA, '--nsamples', '2', '--seqlen', '32', '--out', out2);
    assert.equal(r2.code, 0, r2.err);
    const rep2 = JSON.parse(readFileSync(join(out2, 'quantize_report.json'), 'utf8'));
    assert.ok(rep2.layers.every((l: { rtnError: number; gptqError: unknown }) => l.rtnError > 0 && l.gptqError === null));
  });

  it('usage errors exit 2 and name the option', () => {
    const o = join(tmp, 'never');
    const cases: [string[], RegExp][] = [
      [['--method', 'gptq', '--out', o], /--method gptq needs --dataset FILE/],
      [['--method', 'nf4', '--bits', '4', '--out', o], /--bits applies to --method gptq, rtn or awq, not nf4/],
      [['--method', 'gptq', '--double-quant', '--dataset', DATA, '--out', o], /--double-quant applies to --method int8, nf4 or fp4, not gptq/],
      [['--method', 'rtn', '--sym', '--asym', '--out', o], /--sym and --asym are exclusive/],
      [['--method', 'rtn', '--group-size', 'x', '--out', o], /--group-size must be -1 or a positive integer/],
      [['--method', 'rtn', '--damp', '2', '--out', o], /--damp/],
      [['--method', 'rtn', '--device', 'tpu', '--out', o], /--device "tpu" is unknown \(choose cpu or cuda\)/],
      [['--method', 'nf4', '--device', 'cuda', '--out', o], /--device applies to --method gptq, rtn or awq, not nf4/],
    ];
    for (const [args, re] of cases) {
      const r = lowbit('quantize', KJV, ...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, re);
    }
    if (!cudaAvailable().ok) {  // where the GPU is missing, --device cuda says why before loading anything
      const r = lowbit('quantize', KJV, '--method', 'awq', '--dataset', DATA, '--device', 'cuda', '--out', o);
      assert.equal(r.code, 2, r.err);
      assert.match(r.err, /--device cuda: /);
    }
    const bad = lowbit('quantize', KJV, '--method', 'rtn', '--bits', '5', '--out', o);
    assert.notEqual(bad.code, 0);
    assert.match(bad.err, /bits/);
    // 3-bit qzeros pack 32 outputs per 3 words: the demo's 688-wide MLP cannot be written, said before any work.
    const t0 = performance.now();
    const b3 = lowbit('quantize', KJV, '--method', 'rtn', '--bits', '3', '--out', o);
    assert.equal(b3.code, 1);
    assert.match(b3.err, /model\.layers\.0\.mlp\.(gate|up)_proj: out_features 688 is not a multiple of 32/);
    assert.doesNotMatch(b3.err, /rtn \d+\/42 layers/);
    assert.ok(performance.now() - t0 < 20_000);
  });
});
