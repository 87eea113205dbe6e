// The optimizer, schedules, data loading and the Trainer (src/train): AdamW against torch's update written out by
// hand, transformers' lr_lambda values, clipping; text / JSONL / CSV data and the collator; a LoRA run that lowers
// the loss and writes PEFT files, trainer_state.json, loss.csv and loss.svg; a run killed after a checkpoint and
// resumed gives the same loss curve as one never stopped.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { PeftModel } from '../src/peft/lora.js';
import { collate, loadTrainingData, parseCsvTexts, type DataTokenizer, type TrainExample } from '../src/train/data.js';
import { AdamW, clipGradNorm, lrLambda } from '../src/train/optim.js';
import { latestCheckpoint, Trainer, trainingArguments } from '../src/train/trainer.js';
import { GOLDEN_DIR } from './helpers.js';
import { readSafetensors } from '../src/io/safetensors.js';

const tmp = mkdtempSync(join(tmpdir(), 'lowbit-train-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('optimizer and schedules', () => {
  it('AdamW: torch\'s update (decoupled decay, bias correction) for two steps', () => {
    const p = Float32Array.from([1, -2]), g = Float32Array.from([0.5, 0.1]);
    const opt = new AdamW([{ name: 'w', p, g, decay: true }], { weightDecay: 0.1 });
    const want = [1, -2], m = [0, 0], v = [0, 0];
    for (let t = 1; t <= 2; t++) {
      const lr = 0.01 * t;
      opt.step(lr);
      for (let j = 0; j < 2; j++) {
        want[j] *= 1 - lr * 0.1;
        m[j] = 0.9 * m[j] + 0.1 * g[j];
        v[j] = 0.999 * v[j] + 0.001 * g[j] * g[j];
        want[j] -= (lr / (1 - 0.9 ** t)) * m[j] / (Math.sqrt(v[j]) / Math.sqrt(1 - 0.999 ** t) + 1e-8);
      }
      for (let j = 0; j < 2; j++) assert.ok(Math.abs(p[j] - want[j]) < 1e-6, `step ${t}: ${p[j]} vs ${want[j]}`);
    }
  });

  it('lr_lambda as transformers: linear, cosine, constant_with_warmup; clip_grad_norm', () => {
    assert.deepEqual([0, 1, 2, 3, 6, 10].map((s) => lrLambda('linear', s, 2, 10)), [0, 0.5, 1, 7 / 8, 4 / 8, 0]);
    assert.ok(Math.abs(lrLambda('cosine', 6, 2, 10) - 0.5) < 1e-12);
    assert.deepEqual([0, 1, 5].map((s) => lrLambda('constant_with_warmup', s, 2, 10)), [0, 0.5, 1]);
    const g = Float32Array.from([3, 4]);
    assert.equal(clipGradNorm([{ name: 'g', p: g, g, decay: false }], 1), 5);
    assert.ok(Math.abs(Math.hypot(g[0], g[1]) - 1) < 1e-5);
  });

  it('TrainingArguments: snake_case keys, defaults, errors that name the option', () => {
    const a = trainingArguments({ output_dir: 'x', per_device_train_batch_size: 1, gradient_accumulation_steps: 4, warmup_steps: 2, max_steps: 20, learning_rate: 2e-4, logging_steps: 1 });
    assert.equal(a.perDeviceTrainBatchSize, 1);
    assert.equal(a.lrSchedulerType, 'linear');
    assert.equal(a.maxGradNorm, 1);
    assert.throws(() => trainingArguments({ outputDir: 'x', lr: 1 }), /unknown option "lr"/);
    assert.throws(() => trainingArguments({ outputDir: 'x', lrSchedulerType: 'step' as never }), /lrSchedulerType must be one of/);
  });
});

/** A character-level tokenizer with a plain chat format, for data tests that must run anywhere. */
const charTok: DataTokenizer = {
  encode: (t) => Array.from(t, (c) => c.charCodeAt(0) % 64),
  encodeChat(messages, opts = {}) {
    let s = messages.map((m) => `<${m.role[0]}>${m.content};`).join('');
    if (opts.addGenerationPrompt) s += '<a>';
    return this.encode(s);
  },
  eosTokenId: 1,
};

describe('training data', () => {
  it('text blocks (a character range), JSONL text / prompt+completion / chat with assistant-only labels, CSV, collate', () => {
    const txt = join(tmp, 'a.txt');
    writeFileSync(txt, 'abcdefghij'.repeat(10));
    const blocks = loadTrainingData(txt, charTok, { seqlen: 8, range: [0, 0.9] });
    assert.equal(blocks.length, Math.floor(90 / 8));
    assert.deepEqual(blocks[0].labels, blocks[0].ids);
    const jl = join(tmp, 'a.jsonl');
    writeFileSync(jl, [
      JSON.stringify({ text: 'hello' }),
      JSON.stringify({ type: 'row', index: 0, prompt: 'Q:', text: 'yes' }),
      JSON.stringify({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'yo' }] }),
      JSON.stringify({ type: 'summary', rows: 1 }),
    ].join('\n'));
    const ex = loadTrainingData(jl, charTok, { seqlen: 64, assistantOnly: true });
    assert.equal(ex.length, 3);
    assert.deepEqual(ex[1].labels.slice(0, 2), [-100, -100]);
    assert.deepEqual(ex[1].labels.slice(2), charTok.encode('yes'));
    const chat = ex[2], before = charTok.encodeChat([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }).length;
    assert.ok(chat.labels.slice(0, before).every((l) => l === -100));
    assert.deepEqual(chat.labels.slice(before), chat.ids.slice(before));
    assert.deepEqual(parseCsvTexts('id,text\n1,"a, ""b"""\n2,c\n', 'x.csv'), ['a, "b"', 'c']);
    assert.throws(() => parseCsvTexts('id,body\n1,a\n', 'x.csv'), /x\.csv: the header has no "text" column/);
    const b = collate([{ ids: [5, 6, 7], labels: [5, 6, 7] }, { ids: [8], labels: [8] }], 0);
    assert.deepEqual(Array.from(b.ids), [5, 6, 7, 8, 0, 0]);
    assert.deepEqual(Array.from(b.labels), [5, 6, 7, 8, -100, -100]);
    assert.deepEqual(Array.from(b.mask!), [1, 1, 1, 1, 0, 0]);
  });
});

describe('Trainer', () => {
  const dir = join(GOLDEN_DIR, 'llama_gqa');
  const data = (V: number): TrainExample[] => Array.from({ length: 12 }, (_, i) => {
    const ids = Array.from({ length: 12 }, (_, t) => (3 * t + i) % V);               // a learnable pattern
    return { ids, labels: ids.slice() };
  });
  const make = async (out: string, extra: Record<string, unknown> = {}, onStep?: (s: number) => void) => {
    const { model } = await fromPretrained(dir);
    const peft = PeftModel.wrap(model, { r: 4, loraAlpha: 16, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], loraDropout: 0.05 }, { seed: 1 });
    return new Trainer({
      peft, trainDataset: data(model.config.vocab_size), padId: 0, onStep,
      args: { outputDir: out, perDeviceTrainBatchSize: 2, gradientAccumulationSteps: 2, warmupSteps: 2, maxSteps: 8, learningRate: 1e-2, loggingSteps: 1, saveSteps: 4, seed: 7, ...extra },
    });
  };

  it('lowers the loss; writes the adapter, trainer_state.json, loss.csv, loss.svg', async () => {
    const out = join(tmp, 'run');
    const r = (await make(out, { maxSteps: 16, saveSteps: 0 })).train();
    const h = r.logHistory;
    assert.equal(h.length, 16);
    assert.equal(h[0].learningRate, 0);                                              // warmup starts at 0
    const first = (h[0].loss + h[1].loss) / 2, last = (h[14].loss + h[15].loss) / 2;
    assert.ok(last < 0.9 * first, `loss ${first} → ${last}`);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'trainer_state.json', 'loss.csv', 'loss.svg']) assert.ok(existsSync(join(out, f)), f);
    assert.equal(JSON.parse(readFileSync(join(out, 'trainer_state.json'), 'utf8')).global_step, 16);
    assert.equal(readFileSync(join(out, 'loss.csv'), 'utf8').trim().split('\n').length, 17);
    assert.match(readFileSync(join(out, 'loss.svg'), 'utf8'), /<polyline/);
  });

  it('full fine-tuning: the loss goes down; killed and resumed, the same curve; model.safetensors holds every weight', async () => {
    const mk = async (out: string, onStep?: (s: number) => void) => {
      const { model } = await fromPretrained(dir);
      return new Trainer({ model, trainDataset: data(model.config.vocab_size), padId: 0, onStep,
        args: { outputDir: out, perDeviceTrainBatchSize: 2, gradientAccumulationSteps: 1, maxSteps: 8, learningRate: 3e-3, loggingSteps: 1, saveSteps: 4, seed: 7 } });
    };
    const whole = (await mk(join(tmp, 'full-whole'))).train().logHistory;
    assert.ok(whole[7].loss < whole[0].loss, `${whole[0].loss} → ${whole[7].loss}`);
    const cut = join(tmp, 'full-cut');
    const k = await mk(cut, (s) => { if (s === 6) throw new Error('killed'); });
    assert.throws(() => k.train(), /killed/);
    const resumed = (await mk(cut)).train({ resume: true });
    assert.deepEqual(resumed.logHistory.map((e) => e.loss), whole.map((e) => e.loss));
    const f = readSafetensors(join(cut, 'model.safetensors'));
    assert.ok(f.has('model.embed_tokens.weight') && f.has('model.layers.0.self_attn.q_proj.weight') && f.has('model.norm.weight'));
    assert.deepEqual(f.entries.get('model.layers.0.self_attn.q_proj.weight')!.shape.length, 2);
  });

  it('killed after a checkpoint, resumed: the same loss curve as an uninterrupted run', async () => {
    const whole = (await make(join(tmp, 'whole'))).train().logHistory;
    const cut = join(tmp, 'cut');
    const killed = await make(cut, {}, (s) => { if (s === 6) throw new Error('killed'); });
    assert.throws(() => killed.train(), /killed/);
    assert.equal(latestCheckpoint(cut), join(cut, 'checkpoint-4'));
    const resumed = (await make(cut)).train({ resume: true });
    assert.equal(resumed.resumedFrom, 4);
    assert.deepEqual(resumed.logHistory.map((e) => e.loss), whole.map((e) => e.loss));
    assert.deepEqual(resumed.logHistory.map((e) => e.learningRate), whole.map((e) => e.learningRate));
  });
});
