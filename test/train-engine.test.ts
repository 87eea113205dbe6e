// The training step (src/train/engine.ts) on the tiny models of every family, LoRA on every linear (all-linear):
// its loss is the loss of the inference forward's logits; its gradients agree with central differences of that
// inference loss along the gradient and along a random direction (two independent code paths: the engine's own
// forward/backward, and LoraLinear.forward in the model); gradient checkpointing gives the same gradients; dropout masks
// are reproducible. Right padding with labels −100 is part of every batch.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import type { DecoderLM } from '../src/models/model.js';
import { PeftModel } from '../src/peft/lora.js';
import type { LoraConfigOptions } from '../src/peft/config.js';
import { TrainEngine, type TrainBatch } from '../src/train/engine.js';
import { causalLmLoss } from '../src/train/ops.js';
import { makeFullyTrainable } from '../src/train/full.js';
import { GOLDEN_DIR } from './helpers.js';

const FAMILIES = ['llama_gqa', 'qwen2', 'mistral_sliding', 'opt_125m_like', 'opt_350m_like'];

function batchFor(V: number): TrainBatch {
  const B = 2, T = 8, ids = new Int32Array(B * T), labels = new Int32Array(B * T), mask = new Uint8Array(B * T);
  let s = 7;
  for (let i = 0; i < B * T; i++) { s = (s * 48271) % 2147483647; ids[i] = s % V; }
  for (let i = 0; i < B * T; i++) {
    const pad = i >= T && i % T >= 5;                       // row 1: 5 real tokens, then 3 of padding
    mask[i] = pad ? 0 : 1;
    labels[i] = pad ? -100 : ids[i];
    if (pad) ids[i] = 0;
  }
  return { ids, labels, B, T, mask };
}

async function setup(fam: string, opts: { dropout?: number } = {}) {
  const { model } = await fromPretrained(join(GOLDEN_DIR, fam));
  const peft = PeftModel.wrap(model, { r: 2, loraAlpha: 4, targetModules: 'all-linear', loraDropout: opts.dropout ?? 0 }, { seed: 3 });
  let s = 11;
  for (const l of peft.loras.values()) for (const a of l.adapters.values()) for (let i = 0; i < a.B.length; i++) { s = (s * 48271) % 2147483647; a.B[i] = (s / 2147483647 - 0.5) * 0.2; }
  return { model: model as DecoderLM, peft };
}

/** The loss from the inference forward (LoraLinear.forward), in float64 over float32 logits. */
function inferenceLoss(model: DecoderLM, b: TrainBatch): number {
  const logits = model.forward({ ids: b.ids, batch: b.B }, { attentionMask: b.mask! });
  return causalLmLoss(Float64Array.from(logits.f32), b.labels, b.B, b.T, model.config.vocab_size).loss;
}

/**
 * The analytic directional derivative Σ g·d of the inference loss over parameters [values, gradient] along d, and
 * its central difference with a step of 1e-2 / |d| (the parameters are restored exactly afterwards).
 */
function directional(model: DecoderLM, b: TrainBatch, params: (readonly [Float32Array, Float32Array])[], d: Float32Array[]): { num: number; want: number } {
  const want = params.reduce((acc, [, g], i) => acc + g.reduce((t, v, j) => t + v * d[i][j], 0), 0);
  const h = 1e-2 / Math.sqrt(d.reduce((acc, v) => acc + v.reduce((t, x) => t + x * x, 0), 0));
  const saved = params.map(([p]) => p.slice());
  const shift = (sign: number) => params.forEach(([p], i) => { for (let j = 0; j < p.length; j++) p[j] += sign * h * d[i][j]; });
  shift(1); const up = inferenceLoss(model, b);
  shift(-2); const down = inferenceLoss(model, b);
  params.forEach(([p], i) => p.set(saved[i]));
  return { num: (up - down) / (2 * h), want };
}

describe('training step on every family (LoRA on all linears)', () => {
  for (const fam of FAMILIES) {
    it(`${fam}: loss = inference loss; gradients = central differences along two directions; checkpointing equal`, async () => {
      const { model } = await setup(fam);
      const b = batchFor(model.config.vocab_size);
      const eng = new TrainEngine(model, { training: false });
      eng.zeroGrad();
      const { loss, count } = eng.forwardBackward(b);
      assert.equal(count, 7 + 4);
      const ref = inferenceLoss(model, b);
      assert.ok(Math.abs(loss - ref) <= 1e-5 * Math.abs(ref), `${loss} vs ${ref}`);

      const params = [...eng.grads].flatMap(([l, g]) => { const a = l.adapters.get('default')!; return [[a.A, g.dA], [a.B, g.dB]] as const; });
      const gn2 = params.reduce((s, [, g]) => s + g.reduce((t, v) => t + v * v, 0), 0);
      assert.ok(gn2 > 0);
      let s = 5;
      // Along the gradient, and along sign(g) on a random half of the parameters (every component counts by its size,
      // and a wrong subset would show).
      const dirs = [params.map(([, g]) => Float32Array.from(g)), params.map(([, g]) => Float32Array.from(g, (v) => { s = (s * 48271) % 2147483647; return s % 2 ? Math.sign(v) : 0; }))];
      for (const [k, d] of dirs.entries()) {
        const { num, want } = directional(model, b, params, d);
        assert.ok(Math.abs(num - want) <= 0.02 * Math.abs(want) + 1e-4, `${fam} direction ${k}: numeric ${num}, analytic ${want}`);
      }

      const ck = new TrainEngine(model, { training: false, gradientCheckpointing: true });
      ck.zeroGrad();
      assert.equal(ck.forwardBackward(b).loss, loss);
      for (const [l, g] of eng.grads) { assert.deepEqual(ck.grads.get(l)!.dA, g.dA); assert.deepEqual(ck.grads.get(l)!.dB, g.dB); }
    });
  }

  for (const [fam, cfg] of [
    ['qwen2', { bias: 'all' }], ['opt_125m_like', { bias: 'all' }], ['opt_350m_like', { bias: 'lora_only' }], ['llama_gqa', { modulesToSave: ['lm_head'] }],
  ] as const) {
    it(`${fam}, ${JSON.stringify(cfg)}: the trained base tensors' gradients = central differences of the inference loss`, async () => {
      const { model } = await fromPretrained(join(GOLDEN_DIR, fam));
      const peft = PeftModel.wrap(model, { r: 2, loraAlpha: 4, targetModules: ['q_proj', 'v_proj'], ...(cfg as LoraConfigOptions) }, { seed: 3 });
      assert.ok(peft.trainableBase.size > 0);
      const trainable = new Map([...peft.trainableBase.values()].map((t) => [t.values, new Float32Array(t.values.length)]));
      const b = batchFor(model.config.vocab_size);
      const eng = new TrainEngine(model as DecoderLM, { training: false, trainable });
      eng.zeroGrad();
      eng.forwardBackward(b);
      const params = [...trainable];
      const { num, want } = directional(model as DecoderLM, b, params, params.map(([, g]) => g.slice()));   // along the gradient
      assert.ok(want > 0, 'the base tensors get gradients');
      assert.ok(Math.abs(num - want) <= 0.02 * want, `numeric ${num}, analytic ${want}`);
    });
  }

  for (const fam of ['llama_tied', 'qwen2', 'opt_350m_like']) {
    it(`${fam}, full fine-tuning: every weight's gradient (embeddings, norms, linears, tied head) = central differences`, async () => {
      const { model } = await fromPretrained(join(GOLDEN_DIR, fam));
      const full = makeFullyTrainable(model as DecoderLM);
      const b = batchFor(model.config.vocab_size);
      const before = inferenceLoss(model as DecoderLM, b);
      const trainable = new Map([...full.values()].map((t) => [t.values, new Float32Array(t.values.length)]));
      const eng = new TrainEngine(model as DecoderLM, { training: false, trainable });
      eng.zeroGrad();
      assert.ok(Math.abs(eng.forwardBackward(b).loss - before) <= 1e-5 * before);
      for (const [name, t] of full) assert.ok(trainable.get(t.values)!.some((v) => v !== 0) || /embed_positions/.test(name), `${name} gets a gradient`);
      const params = [...trainable];
      const { num, want } = directional(model as DecoderLM, b, params, params.map(([, g]) => g.slice()));
      assert.ok(Math.abs(num - want) <= 0.02 * want, `numeric ${num}, analytic ${want}`);
    });
  }

  it('dropout: the loss moves, the masks repeat for the same seed, and checkpointing redraws the same ones', async () => {
    const { model } = await setup('llama_gqa', { dropout: 0.3 });
    const b = batchFor(model.config.vocab_size);
    const run = (ckpt: boolean, training: boolean) => {
      const e = new TrainEngine(model, { training, gradientCheckpointing: ckpt, seed: 9 });
      e.zeroGrad();
      const r = e.forwardBackward(b);
      return { loss: r.loss, g: [...e.grads.values()].map((g) => Array.from(g.dA.slice(0, 8))) };
    };
    const off = run(false, false), a = run(false, true), c = run(true, true);
    assert.notEqual(a.loss, off.loss);
    assert.equal(c.loss, a.loss);
    assert.deepEqual(c.g, a.g);
    assert.deepEqual(run(false, true), a);
  });
});
