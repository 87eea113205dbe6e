// The layer-by-layer AWQ driver (src/quant/awq-driver.ts) on the tiny models of every family (test/fixtures/golden:
// Llama with GQA and with MHA, Qwen2 with qkv bias, Mistral with a sliding window, OPT pre-LN and post-LN): the block
// hooks it inspects (DecoderLM.attentionBlock / mlpBlock) against the full layer, folding that keeps the float function,
// the groups that do not apply (GQA, post-LN), the codes it hands over, RTN on AWQ's grid, AWQ beating RTN where
// activations have outlier channels, progress and errors; on eval-llama-16m (when ../shared/data is present) AWQ's
// logits closer to bf16 than RTN's.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { Linear, type LayerNorm, type RMSNorm } from '../src/nn/layers.js';
import type { CausalLM, DecoderLM } from '../src/models/model.js';
import { AwqError, awqQuantize } from '../src/quant/awq.js';
import { AWQ_LAYERS, foldScales, groupSkipReason, quantizeModelAwq, type AwqProgress } from '../src/quant/awq-driver.js';
import { calibrationSamples } from '../src/quant/calib.js';
import { PyRandom } from '../src/util/pyrandom.js';
import { GOLDEN_DIR, NO_DATA, relErr, sharedData, checksum, dequantizeCodes as dequantize } from './helpers.js';

const FAMILIES = ['llama_gqa', 'llama_tied', 'qwen2', 'mistral_sliding', 'opt_125m_like', 'opt_350m_like'];

function windows(V: number, n: number, T: number, seed: number): Int32Array[] {
  const r = new PyRandom(seed);
  return Array.from({ length: n }, () => Int32Array.from({ length: T }, () => r.randint(0, V - 1)));
}

/** Positive scales spread over two decades, as AWQ's are. */
function randomScales(r: PyRandom, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => Math.fround(10 ** ((r.getrandbits(16) / 65536) * 2 - 1)));
}


/**
 * The group size every decoder linear of the tiny models can take (K is 32, 64, 128 or 172 = 4·43): one group per
 * row. (Groups as small as 4 hit AutoAWQ's grid quirk: a group whose values all share a sign has a zero point past the
 * code range, clamped, and loses its values; with real group sizes every group straddles 0.)
 */
const G = -1;

describe('AWQ hooks and folding on every family', () => {
  for (const g of FAMILIES) {
    it(`${g}: attentionBlock and mlpBlock recompose forwardLayer`, async () => {
      const { model, config } = await fromPretrained(join(GOLDEN_DIR, g));
      const m = model as DecoderLM;
      const [x0] = windows(config.vocab_size, 1, 11, 3);
      let x = m.layerInput(x0, 1, 11);
      const be = m.backend;
      for (let l = 0; l < m.layers.length; l++) {
        const want = m.forwardLayer(l, x, 1, 11);
        const norms = Object.values(m.layerNorms(l)) as (RMSNorm | LayerNorm)[];
        const y = x.clone();
        if (m.preNorm) {
          be.add(y, m.attentionBlock(l, norms[0].forward(y), 1, 11), y);
          be.add(y, m.mlpBlock(l, norms[1].forward(y)), y);
          assert.deepEqual(y.f32, want.f32);
        } else {                                                        // OPT post-LN: the norms follow the residual adds
          be.add(y, m.attentionBlock(l, y, 1, 11), y);
          const z = norms[0].forward(y);
          be.add(z, m.mlpBlock(l, z), z);
          assert.deepEqual(norms[1].forward(z).f32, want.f32);
        }
        x = want;
      }
    });

    it(`${g}: folding random scales into every group that applies keeps the logits (1e-5); GQA and post-LN groups are skipped`, async () => {
      const { model, config } = await fromPretrained(join(GOLDEN_DIR, g));
      const m = model as DecoderLM;
      const test = windows(config.vocab_size, 2, 13, 4).map((w) => Array.from(w));
      const ref = model.forward(test).f32.slice();
      const before = model.linears();
      const r = new PyRandom(5);
      const applied: string[] = [], skipped: string[] = [];
      for (let l = 0; l < m.layers.length; l++) {
        for (const spec of AWQ_LAYERS[config.model_type].groups) {
          const why = groupSkipReason(m, l, spec);
          if (why) { skipped.push(`${spec.prev}→${spec.layers[0]}: ${why}`); continue; }
          const K = (model.linears().get(`${AWQ_LAYERS[config.model_type].prefix}.${l}.${spec.layers[0]}`) as Linear).inFeatures;
          foldScales(m, l, spec, randomScales(r, K));
          applied.push(spec.prev);
        }
      }
      const e = relErr(model.forward(test).f32, ref);
      assert.ok(e < 1e-5, `logits moved by ${e}`);
      assert.ok([...model.linears()].some(([n, lin]) => lin !== before.get(n)), 'layers were replaced');
      const gqa = config.model_type !== 'opt' && config.num_key_value_heads !== config.num_attention_heads;
      const postLN = g === 'opt_350m_like';
      assert.equal(applied.length, m.layers.length * (4 - (gqa ? 1 : 0) - (postLN ? 2 : 0)));
      if (gqa) assert.ok(skipped.every((s) => /v_proj→self_attn.o_proj: .*differ in shape \(GQA\)/.test(s)), skipped.join('; '));
      if (postLN) assert.ok(skipped.every((s) => /layer_norm→.*post-LN/.test(s)), skipped.join('; '));
      if (!gqa && !postLN) assert.deepEqual(skipped, []);
    });
  }
});

describe('AWQ driver on every family', () => {
  for (const g of FAMILIES) {
    it(`${g}: every decoder linear quantized to codes that give its new weight; stats, groups, float layers untouched`, async () => {
      const { model, config } = await fromPretrained(join(GOLDEN_DIR, g));
      const samples = windows(config.vocab_size, 4, 24, 1);
      const test = windows(config.vocab_size, 1, 20, 2).map((w) => Array.from(w));
      const ref = model.forward(test).f32.slice();
      const before = model.linears();
      const lmHead = before.get('lm_head') as Linear;
      const headSum = checksum(lmHead.weight);
      const first = before.get([...before.keys()].find((n) => /layers\.0\./.test(n))!) as Linear;
      const firstSum = checksum(first.weight);
      const events: AwqProgress[] = [];
      const r = quantizeModelAwq(model, samples, { bits: 8, groupSize: G }, (p) => events.push(p));
      const names = [...before.keys()].filter((n) => /\.layers\.\d+\./.test(n));
      assert.deepEqual([...r.codes.keys()].sort(), names.sort());
      assert.deepEqual(r.float, [...before.keys()].filter((n) => !names.includes(n)));
      const after = model.linears();
      for (const n of r.float) assert.equal(after.get(n), before.get(n), `${n} untouched`);
      for (const [n, c] of r.codes) {
        const lin = after.get(n) as Linear;
        assert.ok(lin instanceof Linear && lin.weight.dtype === 'F32');
        assert.deepEqual(lin.weight.f32, dequantize(c), `${n}: the weight is its codes' dequantization`);
        assert.equal(c.bits, 8);
        assert.equal(c.groupSize, G);
      }
      // Groups: AutoAWQ's per layer, minus GQA / post-LN; α on the grid; the chosen loss is the least.
      const L = (model as DecoderLM).layers.length;
      assert.equal(r.groups.length + r.skipped.length, 4 * L);
      for (const gr of r.groups) {
        assert.ok(Number.isInteger(gr.alpha * 20) && gr.alpha >= 0 && gr.alpha < 1);
        assert.equal(gr.loss, Math.min(...gr.losses));
        assert.equal(gr.lossAtAlpha0, gr.losses[0]);
        assert.equal(gr.losses.length, 20);
      }
      // Clip ratios on all but q/k; α on the scaled linears.
      for (const s of r.stats) {
        if (/\.(q_proj|k_proj)$/.test(s.name)) assert.equal(s.clipRatio, undefined);
        else assert.ok(s.clipRatio! > 0.5 && s.clipRatio! <= 1, `${s.name} ${s.clipRatio}`);
      }
      assert.equal(r.scaledNorms.length, r.groups.filter((x) => /norm$/.test(x.prev)).length);
      // Progress: every linear once, in order, done counting up; a group event per search.
      const lin = events.filter((e) => e.stats);
      assert.deepEqual(lin.map((e) => e.done), names.map((_, i) => i + 1));
      assert.equal(events.filter((e) => e.group).length, r.groups.length);
      assert.ok(events.every((e) => e.total === names.length && e.unit === 'layers' && e.task === 'quantize'));
      // 8 bits keeps the model close; the checkpoint's (read-only) weights were read, never written.
      const e = relErr(model.forward(test).f32, ref);
      assert.ok(e < 0.02, `8-bit logits error ${e}`);
      assert.equal(checksum(lmHead.weight), headSum);
      assert.equal(checksum(first.weight), firstSum);
    });
  }

  it('RTN on AWQ\'s grid = awqQuantize of each original weight, with no samples; same codes native and ref', async () => {
    const dir = join(GOLDEN_DIR, 'qwen2');
    const orig = (await fromPretrained(dir)).model.linears();
    const { model } = await fromPretrained(dir);
    const r = quantizeModelAwq(model, [], { method: 'rtn', bits: 3, groupSize: G, zeroPoint: false });
    assert.equal(r.codes.size, 14);
    for (const [n, c] of r.codes) {
      const lin = orig.get(n) as Linear;
      const want = awqQuantize(lin.weight.toF32(), [lin.outFeatures, lin.inFeatures], { bits: 3, groupSize: G, zeroPoint: false, kernels: 'ref' });
      assert.deepEqual(c, want.codes);
    }
    assert.deepEqual(r.groups, []);
  });

  it('beats RTN on the same grid where activations have outlier channels (both at 3 bits, group 32)', async () => {
    // llama_tied (MHA, K = 64 / 128): make a few channels of every norm's output 30× larger and the weights reading
    // them 30× smaller. The float function is the same, but RTN now loses those small columns; AWQ scales them back.
    const dir = join(GOLDEN_DIR, 'llama_tied');
    const spoil = async () => {
      const { model, config } = await fromPretrained(dir);
      const m = model as DecoderLM;
      for (let l = 0; l < m.layers.length; l++) {
        for (const spec of AWQ_LAYERS.llama.groups.filter((s) => s.prev.endsWith('layernorm'))) {
          const s = new Float32Array(config.hidden_size).fill(1);
          for (const c of [3, 17, 40, 41]) s[c] = 1 / 30;
          foldScales(m, l, spec, s);
        }
      }
      return { model, config };
    };
    const { model: float, config } = await spoil();
    const samples = windows(config.vocab_size, 8, 32, 6);
    const test = windows(config.vocab_size, 2, 24, 7).map((w) => Array.from(w));
    const ref = float.forward(test).f32.slice();
    const err = async (method: 'awq' | 'rtn') => {
      const { model } = await spoil();
      quantizeModelAwq(model, samples, { method, bits: 3, groupSize: 32 });
      return relErr(model.forward(test).f32, ref);
    };
    const rtn = await err('rtn'), awq = await err('awq');
    assert.ok(awq < 0.7 * rtn, `AWQ ${awq} vs RTN ${rtn}`);
  });

  it("searchLoss 'linears' scores the scaled linears' own outputs: q/k/v and gate/up losses change, single-linear groups' do not", async () => {
    const dir = join(GOLDEN_DIR, 'llama_tied');
    const samples = windows(256, 2, 16, 3);
    const run = async (searchLoss: 'module' | 'linears') => {
      const { model } = await fromPretrained(dir);
      return quantizeModelAwq(model, samples, { bits: 3, groupSize: G, applyClip: false, searchLoss }).groups.filter((g) => g.layer === 0);
    };
    const mod = await run('module'), lin = await run('linears');
    assert.equal(lin.length, mod.length);
    for (let i = 0; i < lin.length; i++) {
      assert.equal(lin[i].prev, mod[i].prev);
      // Layer 0 reads the same embeddings either way, and every search runs on the original weights.
      if (mod[i].inspect === 'layer') assert.deepEqual(lin[i].losses, mod[i].losses, lin[i].prev);
      else assert.notDeepEqual(lin[i].losses, mod[i].losses, lin[i].prev);
    }
    assert.throws(() => quantizeModelAwq({} as CausalLM, samples, { searchLoss: 'block' } as never), /searchLoss must be "module" or "linears"/);
  });

  it('refuses bad input: no samples, a group size that does not divide a layer, unknown options, an aborted signal', async () => {
    const dir = join(GOLDEN_DIR, 'llama_gqa');
    const { model } = await fromPretrained(dir);
    assert.throws(() => quantizeModelAwq(model, []), (e: Error) => e instanceof AwqError && /no calibration samples/.test(e.message));
    assert.throws(() => quantizeModelAwq(model, windows(256, 1, 8, 1), { groupSize: 32 }), /down_proj: group size 32 does not divide its 172 inputs/);
    assert.throws(() => quantizeModelAwq(model, windows(256, 1, 8, 1), { method: 'gptq' } as never), /method must be/);
    assert.throws(() => quantizeModelAwq(model, windows(256, 1, 8, 1), { bits: 4, damp: 1 } as never), /unknown option "damp"/);
    assert.throws(() => quantizeModelAwq(model, [new Int32Array(0)]), /sample 0 must be a non-empty/);
    const ac = new AbortController();
    ac.abort(new Error('stop here'));
    assert.throws(() => quantizeModelAwq(model, windows(256, 1, 8, 1), { groupSize: G, signal: ac.signal }), /stop here/);
  });
});

describe('AWQ driver on eval-llama-16m', () => {
  const data = sharedData();
  it('4-bit g128: logits closer to bf16 than RTN on the same grid', { skip: data ? false : NO_DATA }, async () => {
    const dir = join(data!, 'models', 'eval-llama-16m');
    const base = await fromPretrained(dir);
    const tok = base.tokenizer!;
    const calib = calibrationSamples(join(data!, 'text', 'c4-sample.txt'), tok, { nsamples: 4, seqlen: 128, seed: 0 });
    const text = tok.encode(readFileSync(join(data!, 'text', 'wikitext2-raw-test.txt'), 'utf8')).slice(0, 2 * 128);
    const test = [text.slice(0, 128), text.slice(128)];
    const ref = base.model.forward(test).f32.slice();
    const err = async (method: 'awq' | 'rtn') => {
      const { model } = await fromPretrained(dir);
      const r = quantizeModelAwq(model as CausalLM, calib.samples, { method, bits: 4, groupSize: 128 });
      if (method === 'awq') assert.ok(r.skipped.every((s) => /GQA/.test(s.reason)) && r.skipped.length === 8);
      return relErr(model.forward(test).f32, ref);
    };
    const rtn = await err('rtn'), awq = await err('awq');
    assert.ok(awq < rtn, `AWQ ${awq} vs RTN ${rtn}`);
  });
});
