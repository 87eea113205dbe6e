// HF's sliding-window perplexity (FORMATS.md §9.2, `perplexity(..., { stride })`, `lowbit eval --ppl --stride N`):
// the windows and their counts by hand, the perplexity of a tiny random model against an independent float64
// computation of HF's loop (labels −100, the model's internal shift, loss × num_loss_tokens), stride = seqLen against
// the GPTQ protocol, and on eval-llama-16m stride = 256 over 20 × 256 tokens against transformers' value of the
// GPTQ windows (test/eval.test.ts's WT_20).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { refBackend } from '../src/backend/ref/index.js';
import { perplexity, slidingWindows, type PerplexityProgress } from '../src/eval/perplexity.js';
import type { CausalLM } from '../src/models/model.js';
import { Weights } from '../src/models/model.js';
import { randomLlama } from '../src/models/random.js';
import { buildModel } from '../src/models/registry.js';
import { KJV, lowbit, NO_DATA, sharedData } from './helpers.js';

const data = sharedData();
const relDiff = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

function tinyModel(): CausalLM {
  const { config, tensors } = randomLlama({
    model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 64, max_position_embeddings: 32, rms_norm_eps: 1e-6,
  }, 'F32', 11);
  return buildModel(config, new Weights(tensors, 'tiny'), refBackend);
}

const stream = (n: number) => Array.from({ length: n }, (_, i) => (i * 37 + 11) % 64);

test('slidingWindows: begin/end, trg_len, targets scored and HF\'s num_loss_tokens, by hand', () => {
  const rows = (n: number, m: number, s: number) => slidingWindows(n, m, s).map((w) => [w.begin, w.end, w.trgLen, w.scored, w.lossTokens]);
  // Overlapping (L = 10, max_length 4, stride 2): the first window scores 3 targets; each later one scores its trg_len
  // = 2 new tokens (its first label is already −100, so the shift drops nothing real) but HF weights it 2 − 1 = 1.
  assert.deepEqual(rows(10, 4, 2), [[0, 4, 4, 3, 3], [2, 6, 2, 2, 1], [4, 8, 2, 2, 1], [6, 10, 2, 2, 1]]);
  // L not a multiple of the stride (11, 4, 3): the last window [9, 11) has trg_len 1 and weight 0, so HF's number
  // leaves out token 10 altogether (it is still scored: `scored` counts it).
  assert.deepEqual(rows(11, 4, 3), [[0, 4, 4, 3, 3], [3, 7, 3, 3, 2], [6, 10, 3, 3, 2], [9, 11, 1, 1, 0]]);
  // stride = max_length: the GPTQ windows, and the remainder [8, 10) as a window of its own (1 target).
  assert.deepEqual(rows(10, 4, 4), [[0, 4, 4, 3, 3], [4, 8, 4, 3, 3], [8, 10, 2, 1, 1]]);
  // ... a remainder of one token has no target at all (HF's code would add 0 × NaN).
  assert.deepEqual(rows(9, 4, 4), [[0, 4, 4, 3, 3], [4, 8, 4, 3, 3], [8, 9, 1, 0, 0]]);
  // A multiple of max_length: exactly the GPTQ windows.
  assert.deepEqual(rows(12, 4, 4), [[0, 4, 4, 3, 3], [4, 8, 4, 3, 3], [8, 12, 4, 3, 3]]);
  // stride > L: one window; if max_length < L the loop (range(0, L, stride)) ends before reaching L.
  assert.deepEqual(rows(6, 4, 10), [[0, 4, 4, 3, 3]]);
  assert.deepEqual(rows(3, 4, 10), [[0, 3, 3, 2, 2]]);
  // max_length ≥ L: one window whatever the stride.
  assert.deepEqual(rows(7, 8, 2), [[0, 7, 7, 6, 6]]);
  // stride > max_length: the tokens between windows are skipped (trg_len exceeds the window; all its labels count).
  assert.deepEqual(rows(12, 3, 5), [[0, 3, 3, 2, 2], [5, 8, 5, 2, 2], [10, 12, 4, 1, 1]]);
  // With stride < max_length every token after the first is a target exactly once; with stride = max_length the
  // first token of every window is not one (as in the GPTQ protocol).
  const targets = (n: number, m: number, s: number) => {
    const seen = new Array<number>(n).fill(0);
    for (const w of slidingWindows(n, m, s)) for (let p = w.end - w.scored; p < w.end; p++) seen[p]++;
    return seen;
  };
  for (const [n, m, s] of [[10, 4, 2], [11, 4, 3], [37, 8, 3], [37, 8, 7], [37, 8, 1], [64, 16, 5]]) {
    assert.deepEqual(targets(n, m, s), [0, ...new Array<number>(n - 1).fill(1)], `L ${n}, max_length ${m}, stride ${s}`);
  }
  assert.deepEqual(targets(37, 8, 8), Array.from({ length: 37 }, (_, p) => (p % 8 === 0 ? 0 : 1)));
});

/**
 * HF's loop written out as the doc's Python does it, in float64 from the model's logits: labels = the window with
 * all but its last trg_len set to −100; the model's loss = mean over t of −log_softmax(logits[t])[labels[t + 1]]
 * where labels[t + 1] ≠ −100; nll_sum += loss × ((labels ≠ −100).sum() − 1); ppl = exp(nll_sum / n_tokens).
 */
function hfSlidingPpl(model: CausalLM, ids: number[], maxLength: number, stride: number): { ppl: number; nTokens: number } {
  const V = model.config.vocab_size;
  let nllSum = 0, nTokens = 0, prevEnd = 0;
  for (let begin = 0; begin < ids.length; begin += stride) {
    const end = Math.min(begin + maxLength, ids.length), trgLen = end - prevEnd;
    const input = ids.slice(begin, end);
    const labels = input.map((id, i) => (i < input.length - trgLen ? -100 : id));
    const logits = model.forward([input]).f32;
    let sum = 0, count = 0;
    for (let t = 0; t + 1 < input.length; t++) {
      if (labels[t + 1] === -100) continue;
      const row = Array.from(logits.subarray(t * V, (t + 1) * V), Number);
      const max = Math.max(...row);
      const logZ = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
      sum += logZ - row[labels[t + 1]];
      count++;
    }
    const numLossTokens = labels.filter((l) => l !== -100).length - 1;
    if (numLossTokens > 0) { nllSum += (sum / count) * numLossTokens; nTokens += numLossTokens; }
    prevEnd = end;
    if (end === ids.length) break;
  }
  return { ppl: Math.exp(nllSum / nTokens), nTokens };
}

test('perplexity({ stride }) equals HF\'s loop computed independently (tiny random model, float64 log-softmax)', () => {
  const model = tinyModel();
  for (const [n, m, s] of [[29, 8, 4], [29, 8, 3], [30, 8, 8], [29, 8, 8], [25, 8, 1], [20, 32, 7], [40, 8, 100], [31, 6, 9]]) {
    const ids = stream(n);
    const r = perplexity(model, ids, { seqLen: m, stride: s });
    const want = hfSlidingPpl(model, ids, m, s);
    const plan = slidingWindows(n, m, s);
    assert.equal(r.tokens, want.nTokens, `L ${n}, max_length ${m}, stride ${s}`);
    assert.ok(relDiff(r.perplexity, want.ppl) < 1e-12, `L ${n}, max_length ${m}, stride ${s}: ${r.perplexity} vs ${want.ppl}`);
    assert.deepEqual([r.windows, r.windowsAvailable, r.stride, r.seqLen], [plan.length, plan.length, s, Math.min(m, n)]);
    assert.equal(r.scored, plan.reduce((a, w) => a + w.scored, 0));
    assert.ok(Math.abs(Math.log(r.perplexity) - r.nll / r.tokens) < 1e-12);
  }
});

test('stride = seqLen is the GPTQ protocol plus the trailing remainder as one short window', () => {
  const model = tinyModel();
  // A multiple of seqLen: the same windows, the same targets, the same number.
  const ids = stream(32);
  const gptq = perplexity(model, ids, { seqLen: 8 }), hf = perplexity(model, ids, { seqLen: 8, stride: 8 });
  assert.deepEqual([hf.tokens, hf.scored, hf.windows], [gptq.tokens, gptq.scored, gptq.windows]);
  assert.ok(relDiff(hf.perplexity, gptq.perplexity) < 1e-12, `${hf.perplexity} vs ${gptq.perplexity}`);
  // 29 = 3 × 8 + 5: GPTQ drops the last 5 tokens; HF scores them as a window of 5 (4 targets, no context before it).
  const ids29 = stream(29);
  const g = perplexity(model, ids29, { seqLen: 8 }), h = perplexity(model, ids29, { seqLen: 8, stride: 8 });
  const tail = perplexity(model, ids29.slice(24), { seqLen: 5 });
  assert.deepEqual([g.tokens, h.tokens, h.windows, tail.tokens], [21, 25, 4, 4]);
  assert.ok(relDiff(h.nll, g.nll + tail.nll) < 1e-12);
  // GPTQ's own formula (each window's mean × seqLen, over n·seqLen) gives its number: the first token of every
  // window is never a target in either convention.
  const means = [0, 1, 2].map((w) => { const p = perplexity(model, ids29.slice(8 * w, 8 * w + 8), { seqLen: 8 }); return p.nll / p.tokens; });
  assert.ok(relDiff(g.perplexity, Math.exp(means.reduce((a, x) => a + x * 8, 0) / (3 * 8))) < 1e-12);
});

test('perplexity({ stride }): maxWindows, progress, option errors', () => {
  const model = tinyModel();
  const ids = stream(29);
  const all = perplexity(model, ids, { seqLen: 8, stride: 3 });
  const seen: PerplexityProgress[] = [];
  const two = perplexity(model, ids, { seqLen: 8, stride: 3, maxWindows: 2, onProgress: (p) => seen.push(p) });
  assert.deepEqual([two.windows, two.windowsAvailable, two.tokens, two.scored], [2, all.windows, 7 + 2, 7 + 3]);
  assert.deepEqual(seen.map((p) => [p.task, p.unit, p.done, p.total, p.tokens]), [['perplexity', 'windows', 1, 2, 8], ['perplexity', 'windows', 2, 2, 16]]);
  // The first window alone is the GPTQ number of the first 8 tokens.
  const one = perplexity(model, ids, { seqLen: 8, stride: 3, maxWindows: 1 });
  assert.ok(relDiff(one.perplexity, perplexity(model, ids.slice(0, 8), { seqLen: 8 }).perplexity) < 1e-12);
  // The exact per-token figure over the same scores: Σ −log p over `scored` targets.
  assert.ok(all.scored > all.tokens && Number.isFinite(all.scoredNll));
  assert.throws(() => perplexity(model, ids, { seqLen: 8, stride: 0 }), /stride must be an integer ≥ 1, got 0/);
  assert.throws(() => perplexity(model, ids, { seqLen: 8, stride: 2.5 }), /stride must be an integer ≥ 1, got 2.5/);
  assert.throws(() => perplexity(model, stream(40), { seqLen: 33, stride: 8 }), /windows of 33 tokens are longer than the model's 32 positions/);
  // A stream shorter than seqLen is one window of its own length (as HF's loop does), fine with or without a stride.
  assert.deepEqual((({ windows, seqLen, tokens }) => [windows, seqLen, tokens])(perplexity(model, ids.slice(0, 6), { seqLen: 8, stride: 4 })), [1, 6, 5]);
});

test('lowbit eval --ppl --stride: JSON gains the stride, the table says the windows; usage errors exit 2', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-stride-'));
  try {
    const file = join(dir, 'kjv.txt');
    writeFileSync(file, readFileSync(join(KJV, 'heldout.txt'), 'utf8').slice(0, 6000));
    const base = ['eval', KJV, '--ppl', '--dataset', file, '--seqlen', '128'];
    const s = lowbit(...base, '--stride', '64', '--json');
    assert.equal(s.code, 0, s.err);
    const j = JSON.parse(s.out) as Record<string, number | null>;
    assert.equal(j.stride, 64);
    assert.equal(j.seqlen, 128);
    const plan = slidingWindows(j.datasetTokens as number, 128, 64);
    assert.deepEqual([j.windows, j.windowsAvailable, j.tokens, j.scored], [plan.length, plan.length, plan.reduce((a, w) => a + w.lossTokens, 0), (j.datasetTokens as number) - 1]);
    assert.ok(Math.abs((j.nll as number) - Math.log(j.ppl as number)) < 1e-12);
    assert.match(s.err, new RegExp(`tokens → ${plan.length} sliding windows of up to 128, stride 64\\n`));
    assert.match(s.err, new RegExp(`perplexity ${plan.length}/${plan.length} windows`));
    // Without --stride the GPTQ windows, and "stride": null.
    const g = JSON.parse(lowbit(...base, '--json').out) as Record<string, number | null>;
    assert.equal(g.stride, null);
    assert.equal(g.pplScored, g.ppl);
    // More context per scored token than non-overlapping windows: a trained model's perplexity goes down.
    assert.ok((j.ppl as number) < (g.ppl as number), `stride 64: ${j.ppl}, non-overlapping: ${g.ppl}`);
    const t = lowbit(...base, '--stride', '64');
    assert.equal(t.code, 0, t.err);
    assert.match(t.out, new RegExp(`\\nwindows +${plan.length} of up to 128, stride 64\\ntokens scored +[\\d,]+ \\(HF's count: [\\d,]+\\)\\nperplexity +\\d+\\.\\d\\d\\n`));
    // A text shorter than one window is one window with --stride (the GPTQ protocol refuses it).
    const short = join(dir, 'short.txt');
    writeFileSync(short, 'In the beginning God created the heaven and the earth.');
    const sh = lowbit('eval', KJV, '--ppl', '--dataset', short, '--stride', '64', '--json');
    assert.equal(sh.code, 0, sh.err);
    assert.equal((JSON.parse(sh.out) as { windows: number }).windows, 1);
    const cases: [string[], RegExp][] = [
      [['--stride', '0'], /--stride must be an integer ≥ 1, got "0"/],
      [['--stride', 'x'], /--stride must be an integer ≥ 1, got "x"/],
      [['--max-examples', '3'], /--max-examples is for --lambada, not --ppl/],
      [['--lambada', file], /give --ppl or --lambada, one evaluation per run/],
    ];
    for (const [extra, want] of cases) {
      const r = lowbit(...base, ...extra);
      assert.equal(r.code, 2, `${extra.join(' ')}: ${r.err}`);
      assert.match(r.err, want);
      assert.equal(r.out, '');
    }
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('the README\'s --stride example on the demo model: 56.88 over the first 32 windows (stride 128, seqlen 256)', () => {
  const r = lowbit('eval', KJV, '--ppl', '--dataset', join(KJV, 'heldout.txt'), '--seqlen', '256', '--stride', '128', '--max-windows', '32', '--json');
  assert.equal(r.code, 0, r.err);
  const j = JSON.parse(r.out) as Record<string, number>;
  assert.deepEqual([j.windows, j.scored, j.tokens], [32, 31 * 128 + 255, 255 + 31 * 127]);
  assert.equal(j.ppl.toFixed(2), '56.88');
});

// eval-llama-16m, WikiText-2 as test/eval.test.ts reads it. With stride = seqLen = 256 over the first 20 × 256 tokens
// the windows are GPTQ's 20: transformers' 228.76057724909387 (test/eval.test.ts, WT_20). With stride 128 the same
// tokens, each scored with at least 128 tokens of context: lowbit's fp32 run gives 222.44 (222.51 counting each
// target once); there is no transformers value for it here.
test('eval-llama-16m: stride 256 over 20 × 256 tokens is transformers\' GPTQ value; stride 128 is lower', { skip: data ? false : NO_DATA }, async () => {
  const m = await fromPretrained(join(data!, 'models', 'eval-llama-16m'));
  const ids = m.tokenizer!.encode(readFileSync(join(data!, 'text', 'wikitext2-raw-test.txt'), 'utf8').slice(0, 40_000)).slice(0, 20 * 256);
  assert.equal(ids.length, 20 * 256);
  const hf256 = perplexity(m.model, ids, { seqLen: 256, stride: 256 });
  assert.deepEqual([hf256.windows, hf256.tokens], [20, 20 * 255]);
  assert.ok(relDiff(hf256.perplexity, 228.76057724909387) < 1e-5, `${hf256.perplexity}`);
  const hf128 = perplexity(m.model, ids, { seqLen: 256, stride: 128 });
  assert.deepEqual([hf128.windows, hf128.scored, hf128.tokens], [39, 20 * 256 - 1, 255 + 38 * 127]);
  assert.ok(hf128.perplexity < hf256.perplexity, `${hf128.perplexity}`);
  assert.ok(relDiff(hf128.perplexity, 222.44046716955296) < 1e-5, `${hf128.perplexity}`);
  assert.ok(relDiff(Math.exp(hf128.scoredNll / hf128.scored), 222.50650719870492) < 1e-5);
});
