// PEFT files both ways against Python PEFT (issue 11), with fixtures that scripts/peft_crosscheck.py wrote on the GPU
// machine (torch 2.11, transformers 5.17, PEFT 0.21.0, float32): an adapter PEFT trained on eval-llama-16m (seed
// 002's LoraConfig, 10 AdamW steps) loads in lowbit and gives PEFT's logits; PEFT's own print_trainable_parameters
// line for that config is lowbit's. (The other direction, lowbit's adapter in PEFT: 4.0e-7 relative, in the script's
// output, docs/p7-progress.md.) Needs ../shared/data for the base model.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { LoraConfig } from '../src/peft/config.js';
import { PeftModel } from '../src/peft/lora.js';
import { NO_DATA, ROOT, sharedData } from './helpers.js';

const FIX = join(ROOT, 'test', 'fixtures', 'peft');
const data = sharedData();

describe('Python PEFT adapters in lowbit', { skip: data ? false : NO_DATA }, () => {
  it('a PEFT 0.21 adapter gives PEFT\'s logits (≤ 1e-4 relative, float32); the base matches too', async () => {
    const m = await fromPretrained(join(data!, 'models', 'eval-llama-16m'));
    const ids = JSON.parse(readFileSync(join(FIX, 'ids.json'), 'utf8')) as number[][];
    const want = readSafetensors(join(FIX, 'peft_logits.safetensors'));
    const cols = (a: Float32Array) => { const o = new Float32Array(32 * 512); for (let r = 0; r < 32; r++) o.set(a.subarray(r * 4096, r * 4096 + 512), r * 512); return o; };
    const rel = (a: Float32Array, b: Float32Array) => { let d = 0, s = 0; for (let i = 0; i < a.length; i++) { d = Math.max(d, Math.abs(a[i] - b[i])); s = Math.max(s, Math.abs(b[i])); } return d / s; };
    const base = cols(m.model.forward(ids).f32);
    assert.ok(rel(base, want.get('base').toF32()) < 1e-4);
    const p = PeftModel.fromPretrained(m.model, join(FIX, 'peft-trained'));
    const got = cols(m.model.forward(ids).f32), e = rel(got, want.get('logits').toF32());
    assert.ok(e < 1e-4, `relative error ${e}`);
    assert.ok(rel(base, want.get('logits').toF32()) > 1e-2, 'the adapter moves the logits');
    const cfg = p.configs.get('default')!;
    assert.ok(cfg instanceof LoraConfig && cfg.r === 8 && cfg.loraAlpha === 32 && 'alora_invocation_tokens' in cfg.extra);
    // PEFT printed this line for the same config on the same base.
    assert.equal(p.printTrainableParameters(() => {}), 'trainable params: 163,840 || all params: 15,899,008 || trainable%: 1.0305');
  });
});
