// GPTQ calibration data (src/quant/calib.ts) and Python's random (src/util/pyrandom.ts): MT19937 and randint against
// values printed by CPython 3, windows that start where the reference scripts' random.seed(s) puts them, the c4-style
// document sampling, lists of texts as optimum takes them, and typed errors.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '../src/tokenizer/index.js';
import { awqCalibrationSamples, CalibrationError, calibrationSamples } from '../src/quant/calib.js';
import { PyRandom } from '../src/util/pyrandom.js';
import { NO_DATA, sharedData } from './helpers.js';

/** Text "a b c …" of integers → those integers (a tokenizer whose ids show where a window came from). */
const numbers = { encode: (t: string) => t.split(/\s+/).filter(Boolean).map(Number) };
const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

describe('PyRandom = CPython random', () => {
  it('random.seed(s); randint / getrandbits', () => {
    const r0 = new PyRandom(0);
    assert.deepEqual(range(0, 5).map(() => r0.randint(0, 1000)), [864, 394, 776, 911, 430]);
    const r1 = new PyRandom(12345);
    assert.deepEqual(range(0, 5).map(() => r1.randint(0, 10 ** 6)), [436857, 768276, 10663, 860015, 865291]);
    const r2 = new PyRandom(7);                                    // 41-bit range: two 32-bit words per draw
    assert.deepEqual(range(0, 3).map(() => r2.randint(0, 2 ** 40)), [868231286071, 105874957392, 208460025899]);
    const r3 = new PyRandom(2n ** 40n + 3n);                       // a seed of two 32-bit words
    assert.deepEqual(range(0, 3).map(() => r3.randint(5, 300000)), [115236, 31898, 288084]);
    const r4 = new PyRandom(0);
    assert.deepEqual(range(0, 3).map(() => r4.getrandbits(32)), [3626764237, 1654615998, 3255389356]);
    assert.throws(() => new PyRandom(0).randint(3, 2), /empty range/);
  });
});

describe('calibration samples', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-calib-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

  it('a text file is one stream: window i = randint(0, len − seqlen − 1), as the reference scripts draw them', () => {
    const path = join(dir, 'stream.txt');
    writeFileSync(path, range(0, 1100).join(' '));
    const a = calibrationSamples(path, numbers, { nsamples: 5, seqlen: 99, seed: 0 });
    assert.equal(a.kind, 'stream');
    assert.deepEqual(a.samples.map((s) => s[0]), [864, 394, 776, 911, 430]);   // random.seed(0); randint(0, 1000) × 5
    a.samples.forEach((s) => assert.deepEqual(Array.from(s), range(s[0], s[0] + 99)));
    const b = calibrationSamples(path, numbers, { nsamples: 4, seqlen: 99, seed: 3 });
    assert.deepEqual(b.samples.map((s) => s[0]), [243, 606, 557, 133]);
  });

  it('a JSONL file is documents, sampled as get_c4: a document longer than seqlen, then a window of it', () => {
    const lens = [3, 50, 10, 80, 20];
    const path = join(dir, 'docs.jsonl');
    writeFileSync(path, lens.map((n, d) => JSON.stringify({ text: range(1000 * d, 1000 * d + n).join(' '), url: 'x' })).join('\n') + '\n\n');
    const r = calibrationSamples(path, numbers, { nsamples: 6, seqlen: 15, seed: 0 });
    assert.equal(r.kind, 'documents');
    // CPython: [(3, 53), (4, 3), (3, 38), (3, 45), (4, 1), (4, 1)] as (document, start).
    assert.deepEqual(r.samples.map((s) => [Math.floor(s[0] / 1000), s[0] % 1000]), [[3, 53], [4, 3], [3, 38], [3, 45], [4, 1], [4, 1]]);
    r.samples.forEach((s) => assert.equal(s.length, 15));
    // No document longer than seqlen: they are joined into one stream (the reference would loop forever).
    const j = calibrationSamples(path, numbers, { nsamples: 2, seqlen: 100, seed: 0 });
    assert.equal(j.kind, 'joined');
    j.samples.forEach((s) => assert.equal(s.length, 100));
  });

  it('a list of texts: one sample each, cut to seqlen; nsamples does not apply (optimum)', () => {
    const r = calibrationSamples(['1 2 3', range(0, 40).join(' ')], numbers, { seqlen: 16, nsamples: 1 });
    assert.equal(r.kind, 'texts');
    assert.deepEqual(r.samples.map((s) => Array.from(s)), [[1, 2, 3], range(0, 16)]);
  });

  it('seqlen defaults to 2048 capped by the model, and typed errors name the problem', () => {
    const path = join(dir, 'short.txt');
    writeFileSync(path, range(0, 50).join(' '));
    assert.equal(calibrationSamples(path, numbers, { maxPositions: 32, nsamples: 1 }).seqlen, 32);
    assert.throws(() => calibrationSamples(path, numbers, { seqlen: 64, maxPositions: 32 }), /seqlen 64 is longer than the model's 32 positions/);
    assert.throws(() => calibrationSamples(path, numbers, { seqlen: 50 }), (e: unknown) => e instanceof CalibrationError && /has 50 tokens; windows of 50 need at least 51/.test((e as Error).message));
    assert.throws(() => calibrationSamples(join(dir, 'nope.txt'), numbers), /nope\.txt: no such file/);
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"text": "1 2"}\n{"txt": "3"}\n');
    assert.throws(() => calibrationSamples(bad, numbers, { seqlen: 1 }), /bad\.jsonl, line 2: no "text" string field/);
    writeFileSync(bad, '{"text": "1 2"}\nnot json\n');
    assert.throws(() => calibrationSamples(bad, numbers, { seqlen: 1 }), /bad\.jsonl, line 2: not JSON/);
    assert.throws(() => calibrationSamples([], numbers), /empty list/);
    assert.throws(() => calibrationSamples(path, numbers, { nsamples: 0 }), /nsamples must be a positive integer/);
  });

  const data = sharedData();
  it('c4-sample.txt with eval-llama-16m\'s tokenizer: windows are slices of the token stream', { skip: data ? false : NO_DATA }, () => {
    const tok = Tokenizer.fromDir(join(data!, 'models', 'eval-llama-16m'));
    const path = join(data!, 'text', 'c4-sample.txt');
    const r = calibrationSamples(path, tok, { nsamples: 4, seqlen: 256, seed: 0 });
    const ids = tok.encode(readFileSync(path, 'utf8'));
    const rng = new PyRandom(0);
    r.samples.forEach((s) => {
      const i = rng.randint(0, ids.length - 257);
      assert.deepEqual(Array.from(s), ids.slice(i, i + 256));
    });
  });
});

describe("AWQ calibration blocks (AutoAWQ get_calib_dataset)", () => {
  // "numbers" with a BOS of 0 in front, as a Llama tokenizer adds one: an empty line still gives one token.
  const withBos = { encode: (t: string) => [0, ...numbers.encode(t)] };
  it('texts in order, long ones skipped, nsamples kept, joined and cut into blocks of seqlen', () => {
    const texts = ['1 2 3', ' 4 5 ', '6 7 8 9 10 11', '12', '13 14 15', '16 17'];
    // seqlen 4: "6 … 11" (7 tokens with BOS) is skipped; kept: [0 1 2 3] [0 4 5] [0 12] [0 13 14 15] [0 16 17] → 14 tokens.
    const s = awqCalibrationSamples(texts, withBos, { seqlen: 4 });
    assert.equal(s.kind, 'blocks');
    assert.deepEqual(s.samples.map((x) => [...x]), [[0, 1, 2, 3], [0, 4, 5, 0], [12, 0, 13, 14], [15, 0, 16, 17]]);
    // nsamples 2: the first two kept texts only (7 tokens → one block of 4).
    assert.deepEqual(awqCalibrationSamples(texts, withBos, { seqlen: 4, nsamples: 2 }).samples.map((x) => [...x]), [[0, 1, 2, 3]]);
  });
  it('a text file gives one row per line (empty lines included, as the datasets text loader does); JSONL its text fields', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-awq-calib-'));
    try {
      writeFileSync(join(dir, 'a.txt'), '1 2\n\n3 4 5\n');
      assert.deepEqual(awqCalibrationSamples(join(dir, 'a.txt'), withBos, { seqlen: 4 }).samples.map((x) => [...x]), [[0, 1, 2, 0], [0, 3, 4, 5]]);
      writeFileSync(join(dir, 'b.jsonl'), '{"text": "7 8"}\n{"text": "9"}\n');
      assert.deepEqual(awqCalibrationSamples(join(dir, 'b.jsonl'), withBos, { seqlen: 5 }).samples.map((x) => [...x]), [[0, 7, 8, 0, 9]]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('typed errors: too few tokens for one block, seqlen past the model, bad options', () => {
    assert.throws(() => awqCalibrationSamples(['1 2'], withBos, { seqlen: 8 }), (e: Error) => e instanceof CalibrationError && /hold 3 tokens, fewer than one block of 8/.test(e.message));
    assert.throws(() => awqCalibrationSamples(['1'], withBos, { seqlen: 600, maxPositions: 512 }), /seqlen 600 is longer than the model's 512 positions/);
    assert.throws(() => awqCalibrationSamples(['1'], withBos, { nsamples: 0 }), /nsamples must be a positive integer/);
    assert.throws(() => awqCalibrationSamples([1 as unknown as string], withBos), /dataset\[0\] is not a string/);
  });
});
