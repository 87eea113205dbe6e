// Issue P4's perplexity targets on eval-llama-16m (WikiText-2 test, windows of 256, the GPTQ protocol), quantizing
// on load with fromPretrained's quantizationConfig. The reference column is the weight-only PyTorch
// simulation (fp32 compute, 200 windows): bf16 223.29, int8 (per-row absmax) 223.38, NF4 223.51, FP4 226.37.
// Measured here (200 windows, 2026-12-02): bf16 223.2928, int8 (LLM.int8, threshold 6) 223.3638, NF4 223.4977,
// NF4 + double quant 223.5074, FP4 226.5027.
// The short run (8 windows, always on when the shared data is present) guards against a quantizer or kernel that
// breaks a model; LOWBIT_FULL_EVAL=1 runs the 200 windows and checks its targets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromPretrained, type LoadOptions } from '../src/api.js';
import { perplexity } from '../src/eval/perplexity.js';
import { NO_DATA, sharedData } from './helpers.js';

const data = sharedData();
const FULL = process.env.LOWBIT_FULL_EVAL === '1';

const VARIANTS: Record<string, LoadOptions['quantizationConfig']> = {
  bf16: undefined,
  int8: { loadIn8bit: true },
  nf4: { loadIn4bit: true, bnb4bitQuantType: 'nf4' },
  nf4dq: { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true },
  fp4: { loadIn4bit: true, bnb4bitQuantType: 'fp4' },
};

async function ppls(windows: number): Promise<Record<string, number>> {
  const dir = join(data!, 'models', 'eval-llama-16m');
  const text = readFileSync(join(data!, 'text', 'wikitext2-raw-test.txt'), 'utf8');
  const out: Record<string, number> = {};
  let ids: number[] | null = null;
  for (const [name, quantizationConfig] of Object.entries(VARIANTS)) {
    const m = await fromPretrained(dir, { quantizationConfig });
    ids ??= m.tokenizer!.encode(text);
    out[name] = perplexity(m.model, ids, { seqLen: 256, maxWindows: windows }).perplexity;
  }
  return out;
}

const rel = (a: number, b: number) => (a - b) / b;

test('eval-llama-16m, 8 windows: every bitsandbytes format stays close to bf16, in the expected order', { skip: data ? false : NO_DATA }, async () => {
  const p = await ppls(8);
  assert.ok(Math.abs(rel(p.int8, p.bf16)) < 0.01, `int8 ${p.int8} vs bf16 ${p.bf16}`);
  assert.ok(Math.abs(rel(p.nf4, p.bf16)) < 0.02, `nf4 ${p.nf4} vs bf16 ${p.bf16}`);
  assert.ok(Math.abs(rel(p.nf4dq, p.nf4)) < 0.005, `nf4+dq ${p.nf4dq} vs nf4 ${p.nf4}`);
  assert.ok(p.fp4 > p.nf4 && rel(p.fp4, p.bf16) < 0.05, `fp4 ${p.fp4} vs nf4 ${p.nf4}, bf16 ${p.bf16}`);
});

test('eval-llama-16m, 200 windows: the issue\'s targets (LOWBIT_FULL_EVAL=1; about 3 min on 2 cores)',
  { skip: !data ? NO_DATA : FULL ? false : 'set LOWBIT_FULL_EVAL=1 to run the 200-window quantized evaluations (about 3 min on 2 cores)' }, async () => {
    const p = await ppls(200);
    assert.ok(Math.abs(rel(p.bf16, 223.29)) < 0.001, `bf16 ${p.bf16}`);
    assert.ok(Math.abs(rel(p.int8, p.bf16)) < 0.01, `int8 ${p.int8} vs bf16 ${p.bf16}`);
    assert.ok(p.fp4 > p.nf4, `fp4 ${p.fp4} vs nf4 ${p.nf4}`);
    assert.ok(Math.abs(rel(p.nf4dq, p.nf4)) < 0.005, `nf4+dq ${p.nf4dq} vs nf4 ${p.nf4}`);
    assert.ok(Math.abs(rel(p.nf4, 223.51)) < 0.005, `nf4 ${p.nf4} vs the table's 223.51`);
  });
