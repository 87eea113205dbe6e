// `lowbit finetune`, `lowbit merge` and `--adapter` on generate / eval, end to end on the bundled kjv-demo model: a
// short QLoRA run writes PEFT's files and lowers the perplexity of the text it trained on; generate and eval take the adapter; the merged
// checkpoint gives the adapter's perplexity; bad input exits non-zero naming the problem.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KJV, lowbit } from './helpers.js';
import { cudaAvailable } from '../src/backend/cuda/index.js';

const tmp = mkdtempSync(join(tmpdir(), 'lowbit-ftcli-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const held = join(KJV, 'heldout.txt');

describe('lowbit finetune / merge / --adapter', () => {
  it('QLoRA (nf4) for 12 steps: PEFT files; a lower perplexity on its text with --adapter in eval and generate with --adapter; merge gives the same perplexity', () => {
    const out = join(tmp, 'lora');
    const r = lowbit('finetune', KJV, '--quantize', 'nf4', '--data', held, '--seqlen', '64', '--max-steps', '12', '--grad-accum', '2',
      '--lr', '1e-3', '--lora-r', '4', '--lora-alpha', '8', '--logging-steps', '1', '--out', out, '--json');
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}/);
    const s = JSON.parse(r.out);
    assert.equal(s.steps, 12);
    assert.ok(Number.isFinite(s.firstLoss) && Number.isFinite(s.lastLoss));
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'trainer_state.json', 'loss.csv', 'loss.svg']) assert.ok(existsSync(join(out, f)), f);

    const ppl = (...extra: string[]) => {
      const e = lowbit('eval', ...extra, '--ppl', '--dataset', held, '--seqlen', '64', '--max-windows', '8', '--json');
      assert.equal(e.code, 0, e.err);
      return JSON.parse(e.out).ppl as number;
    };
    const base = ppl(KJV), tuned = ppl(KJV, '--adapter', out);
    assert.ok(tuned < base, `perplexity on the training text: base ${base}, with the adapter ${tuned}`);
    const g = lowbit('generate', KJV, '--adapter', out, '--prompt', 'In the beginning', '--max-new-tokens', '8', '--temperature', '0', '--json');
    assert.equal(g.code, 0, g.err);
    assert.equal(JSON.parse(g.out).generatedTokens, 8);

    const merged = join(tmp, 'merged');
    const m = lowbit('merge', KJV, '--adapter', out, '--out', merged);
    assert.equal(m.code, 0, m.err);
    const mp = ppl(merged);
    assert.ok(Math.abs(mp - tuned) / tuned < 0.01, `merged ${mp} vs adapter ${tuned}`);   // bf16 rounding of the merged weights
  });

  it('--full: every weight trains; the folder loads and scores its text better than the base', () => {
    const out = join(tmp, 'full');
    const r = lowbit('finetune', KJV, '--full', '--data', held, '--seqlen', '64', '--max-steps', '8', '--grad-accum', '1', '--lr', '1e-4', '--out', out, '--json');
    assert.equal(r.code, 0, r.err);
    for (const f of ['model.safetensors', 'config.json', 'tokenizer.json', 'trainer_state.json', 'loss.csv']) assert.ok(existsSync(join(out, f)), f);
    const ppl = (dir: string) => {
      const e = lowbit('eval', dir, '--ppl', '--dataset', held, '--seqlen', '64', '--max-windows', '8', '--json');
      assert.equal(e.code, 0, e.err);
      return JSON.parse(e.out).ppl as number;
    };
    const base = ppl(KJV), tuned = ppl(out);
    assert.ok(tuned < base, `base ${base}, fully tuned ${tuned}`);
    const q = lowbit('finetune', KJV, '--full', '--quantize', 'nf4', '--data', held, '--out', join(tmp, 'nope'));
    assert.notEqual(q.code, 0);
    assert.match(q.err, /--full trains every weight of a float model: leave out --quantize/);
  });

  it('refuses bad input with a message and a non-zero exit', () => {
    let r = lowbit('finetune', KJV, '--out', join(tmp, 'x'));
    assert.notEqual(r.code, 0);
    assert.match(r.err, /--data FILE is required/);
    r = lowbit('finetune', KJV, '--data', held, '--quantize', 'nf3', '--out', join(tmp, 'x'));
    assert.notEqual(r.code, 0);
    assert.match(r.err, /--quantize "nf3" is unknown/);
    const bad = join(tmp, 'bad.jsonl');
    writeFileSync(bad, '{"body": "x"}\n');
    r = lowbit('finetune', KJV, '--data', bad, '--out', join(tmp, 'x'));
    assert.notEqual(r.code, 0);
    assert.match(r.err, /bad\.jsonl, line 1: no "text", "messages" or "prompt"\/"completion" field/);
    r = lowbit('generate', KJV, '--adapter', join(tmp, 'nowhere'), '--prompt', 'x');
    assert.notEqual(r.code, 0);
    assert.match(r.err, /nowhere: no adapter_config\.json/);
    // --device: cuda trains LoRA adapters; what trains on the cpu only is named; without a GPU, why it cannot run.
    r = lowbit('finetune', KJV, '--data', held, '--device', 'tpu', '--out', join(tmp, 'x'));
    assert.notEqual(r.code, 0);
    assert.match(r.err, /--device "tpu" is unknown/);
    r = lowbit('finetune', KJV, '--data', held, '--device', 'cuda', '--full', '--out', join(tmp, 'x'));
    assert.notEqual(r.code, 0);
    assert.match(r.err, /--full trains on the cpu backend/);
    if (!cudaAvailable().ok) {
      r = lowbit('finetune', KJV, '--data', held, '--device', 'cuda', '--quantize', 'nf4', '--out', join(tmp, 'x'));
      assert.notEqual(r.code, 0);
      assert.match(r.err, /--device cuda: /);
    }
  });
});
