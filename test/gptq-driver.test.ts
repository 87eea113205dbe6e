// The layer-by-layer GPTQ driver (src/quant/gptq-driver.ts) on the tiny random models of every family
// (test/fixtures/golden: Llama with GQA, Qwen2 with qkv bias, Mistral with a sliding window, OPT pre-LN and post-LN
// with project_in/out), the per-layer hooks it runs on (DecoderLM.layerInput / forwardLayer), RTN through the same
// path, progress, errors, and on eval-llama-16m (when ../shared/data is present) GPTQ beating RTN in perplexity.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { perplexity } from '../src/eval/perplexity.js';
import { Linear, type LinearLike } from '../src/nn/layers.js';
import type { CausalLM } from '../src/models/model.js';
import { LlamaForCausalLM } from '../src/models/llama.js';
import { OPTForCausalLM } from '../src/models/opt.js';
import { calibrationSamples } from '../src/quant/calib.js';
import { GptqError, rtnQuantize } from '../src/quant/gptq.js';
import { quantizeModelGptq, type GptqProgress } from '../src/quant/gptq-driver.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { PyRandom } from '../src/util/pyrandom.js';
import { GOLDEN_DIR, NO_DATA, relErr, sharedData, checksum, dequantizeCodes as dequantize } from './helpers.js';

const FAMILIES = ['llama_gqa', 'qwen2', 'mistral_sliding', 'opt_125m_like', 'opt_350m_like'];

function windows(V: number, n: number, T: number, seed: number): Int32Array[] {
  const r = new PyRandom(seed);
  return Array.from({ length: n }, () => Int32Array.from({ length: T }, () => r.randint(0, V - 1)));
}

/** The model's head on the last layer's hidden states [B·T, H] (each family's own final norm / projection). */
function head(model: CausalLM, x: Tensor<'F32'>): Float32Array {
  if (model instanceof OPTForCausalLM) {
    let y = model.finalNorm ? model.finalNorm.forward(x) : x;
    if (model.outer.project_out) y = model.outer.project_out.forward(y);
    return model.lmHead.forward(y).f32;
  }
  const m = model as LlamaForCausalLM;
  return m.lmHead.forward(m.norm.forward(x)).f32;
}


describe('GPTQ driver on every family', () => {
  for (const g of FAMILIES) {
    it(`${g}: layerInput then forwardLayer over every layer gives forward's logits`, async () => {
      const { model, config } = await fromPretrained(join(GOLDEN_DIR, g));
      const ids = windows(config.vocab_size, 2, 9, 5);
      const flat = new Int32Array(18);
      ids.forEach((w, b) => flat.set(w, b * 9));
      const m = model as LlamaForCausalLM | OPTForCausalLM;
      let x = m.layerInput(flat, 2, 9);
      const x0 = x.f32.slice();
      for (let l = 0; l < m.layers.length; l++) {
        const before = x.f32.slice();
        x = m.forwardLayer(l, x, 2, 9);
        if (l === 0) assert.deepEqual(m.layerInput(flat, 2, 9).f32, x0);
        assert.notDeepEqual(x.f32, before);
      }
      const want = model.forward(ids.map((w) => Array.from(w))).f32;
      assert.ok(relErr(head(model, x), want) < 1e-6, `${relErr(head(model, x), want)}`);
    });

    it(`${g}: every decoder linear quantized (lm_head and project_in/out float), codes give the new weights, GPTQ's errors below RTN's, logits close at 8 bits`, async () => {
      const { model, config } = await fromPretrained(join(GOLDEN_DIR, g));
      const V = config.vocab_size;
      const samples = windows(V, 6, 24, 1);
      const test = windows(V, 1, 20, 2).map((w) => Array.from(w));
      const ref = model.forward(test).f32.slice();
      const lmHead = model.linears().get('lm_head') as Linear;
      const headSum = checksum(lmHead.weight);
      const firstName = [...model.linears().keys()][0];
      const firstSum = checksum((model.linears().get(firstName) as Linear).weight);
      const before = model.linears();
      const r = quantizeModelGptq(model, samples, { bits: 8, groupSize: 32, sym: false });
      const names = [...before.keys()].filter((n) => /\.layers\.\d+\./.test(n));
      assert.deepEqual([...r.codes.keys()].sort(), names.sort());
      assert.deepEqual(r.float, [...before.keys()].filter((n) => !names.includes(n)));
      assert.ok(r.float.includes('lm_head'));
      if (g === 'opt_350m_like') assert.deepEqual(r.float, ['model.decoder.project_in', 'model.decoder.project_out', 'lm_head']);
      const after = model.linears();
      for (const n of r.float) assert.equal(after.get(n), before.get(n), `${n} untouched`);
      for (const [n, c] of r.codes) {
        const lin = after.get(n) as Linear;
        assert.ok(lin instanceof Linear && lin.weight.dtype === 'F32' && lin !== before.get(n));
        assert.deepEqual(lin.weight.f32, dequantize(c), `${n}: the weight is its codes' dequantization`);
        assert.equal(lin.bias, (before.get(n) as Linear).bias);
      }
      for (const s of r.stats) assert.ok(s.gptqError! < s.rtnError!, `${s.name}: GPTQ ${s.gptqError} vs RTN ${s.rtnError}`);
      const e = relErr(model.forward(test).f32, ref);
      assert.ok(e < 0.02, `8-bit logits error ${e}`);
      // The checkpoint's (read-only) weights were read, never written.
      assert.equal(checksum(lmHead.weight), headSum);
      assert.equal(checksum((before.get(firstName) as Linear).weight), firstSum);
    });
  }
});

describe('GPTQ driver: modes, progress and errors', () => {
  const dir = join(GOLDEN_DIR, 'llama_gqa');

  it('RTN through the driver = rtnQuantize of each original weight, with or without calibration', async () => {
    const orig = (await fromPretrained(dir)).model.linears();
    for (const samples of [[], windows(256, 3, 16, 4)]) {
      const { model } = await fromPretrained(dir);
      const r = quantizeModelGptq(model, samples, { method: 'rtn', bits: 3, groupSize: 32, sym: true });
      assert.equal(r.codes.size, 14);
      for (const [n, c] of r.codes) {
        const w = orig.get(n) as Linear;
        const want = rtnQuantize(w.weight.toF32(), [w.outFeatures, w.inFeatures], { bits: 3, groupSize: 32, sym: true });
        assert.deepEqual(c, want.codes);
        assert.deepEqual((model.linears().get(n) as Linear).weight.f32, want.dequantized);
      }
      for (const s of r.stats) {
        assert.equal(s.method, 'rtn');
        assert.equal(s.gptqError, undefined);
        assert.equal(s.rtnError === undefined, samples.length === 0);
      }
    }
  });

  it('trueSequential: later sub-lists see the quantized ones before them; off, the whole layer is calibrated on the float layer', async () => {
    const samples = windows(256, 4, 16, 6);
    const run = async (trueSequential: boolean) => {
      const { model } = await fromPretrained(dir);
      return quantizeModelGptq(model, samples, { bits: 3, groupSize: 16, sym: false, trueSequential, descAct: true, staticGroups: true });
    };
    const a = await run(true), b = await run(false);
    const same = (n: string) => JSON.stringify(Array.from(a.codes.get(n)!.intWeight)) === JSON.stringify(Array.from(b.codes.get(n)!.intWeight));
    assert.ok(same('model.layers.0.self_attn.q_proj'), 'q/k/v read the same inputs in both modes');
    assert.ok(!same('model.layers.0.self_attn.o_proj'), 'o_proj sees quantized q/k/v only with trueSequential');
    const order = ['self_attn.k_proj', 'self_attn.v_proj', 'self_attn.q_proj', 'self_attn.o_proj', 'mlp.up_proj', 'mlp.gate_proj', 'mlp.down_proj'];
    assert.deepEqual(a.stats.map((s) => s.name).slice(0, 7), order.map((s) => `model.layers.0.${s}`));
  });

  it('progress: one report per linear with its stats; the options come back', async () => {
    const { model } = await fromPretrained(dir);
    const seen: GptqProgress[] = [];
    const r = quantizeModelGptq(model, windows(256, 2, 12, 7), { bits: 4, groupSize: -1, sym: true, errors: false }, (p) => seen.push(p));
    assert.equal(seen.length, 14);
    seen.forEach((p, i) => {
      assert.equal(p.task, 'quantize'); assert.equal(p.unit, 'layers'); assert.equal(p.done, i + 1); assert.equal(p.total, 14);
      assert.equal(p.item, r.stats[i].name);
      assert.equal(p.stats, r.stats[i]);
      assert.ok(p.stats!.gptqLoss! > 0 && p.stats!.gptqError === undefined && p.stats!.ms >= 0);
    });
    assert.deepEqual(r.options, { bits: 4, groupSize: -1, sym: true, descAct: false, staticGroups: false, dampPercent: 0.01, blockSize: 128 });
  });

  it('typed errors: no samples for gptq, a sample past the positions, bad options, a model already quantized', async () => {
    const { model } = await fromPretrained(dir);
    assert.throws(() => quantizeModelGptq(model, []), /GPTQ: no calibration samples/);
    assert.throws(() => quantizeModelGptq(model, [new Int32Array(129)]), /sample 0 has 129 tokens, more than the model's 128 positions/);
    assert.throws(() => quantizeModelGptq(model, [new Int32Array(4)], { method: 'awq' as 'rtn' }), GptqError);
    assert.throws(() => quantizeModelGptq(model, [new Int32Array(4)], { bits: 5 as 4 }), /bits must be one of/);
    assert.throws(() => quantizeModelGptq(model, [Int32Array.from([1, 99999])]), /outside the vocabulary/);
    const q = await fromPretrained(dir, { quantizationConfig: { loadIn8bit: true } });
    assert.throws(() => quantizeModelGptq(q.model, [new Int32Array(4)]), /is a Linear8bitLt, not a float Linear/);
    // A linear swapped for something else (a LoRA wrapper, say) is refused by name too.
    const other: LinearLike = { name: 'model.layers.1.mlp.up_proj', inFeatures: 64, outFeatures: 172, forward: (x) => x };
    model.replaceLinear(other.name, other);
    assert.throws(() => quantizeModelGptq(model, [new Int32Array(4)]), /model\.layers\.1\.mlp\.up_proj is a Object, not a float Linear/);
  });
});

const data = sharedData();
describe('eval-llama-16m', () => {
  it('GPTQ (3-bit, g128, asym; 16 windows of c4-sample) beats RTN in WikiText-2 perplexity on 8 windows', { skip: data ? false : NO_DATA }, async () => {
    const dir = join(data!, 'models', 'eval-llama-16m');
    const base = await fromPretrained(dir);
    const tok = base.tokenizer!;
    const wiki = tok.encode(readFileSync(join(data!, 'text', 'wikitext2-raw-test.txt'), 'utf8'));
    const calib = calibrationSamples(join(data!, 'text', 'c4-sample.txt'), tok, { nsamples: 16, seqlen: 256, seed: 0 });
    const ppl = (m: CausalLM) => perplexity(m, wiki, { seqLen: 256, maxWindows: 8 }).perplexity;
    const f = ppl(base.model);
    const opts = { bits: 3 as const, groupSize: 128, sym: false, errors: false, trueSequential: false };
    const rtn = await fromPretrained(dir);
    quantizeModelGptq(rtn.model, [], { ...opts, method: 'rtn' });
    const gptq = await fromPretrained(dir);
    quantizeModelGptq(gptq.model, calib.samples, opts);
    const [pr, pg] = [ppl(rtn.model), ppl(gptq.model)];
    console.log(`# eval-llama-16m 3-bit g128, 8 WikiText-2 windows: float ${f.toFixed(2)}, RTN ${pr.toFixed(2)}, GPTQ ${pg.toFixed(2)}`);
    assert.ok(pg < pr, `GPTQ ${pg} vs RTN ${pr}`);
    assert.ok(pg - f < 0.8 * (pr - f), `GPTQ's increase ${pg - f} vs RTN's ${pr - f}`);
  });
});
