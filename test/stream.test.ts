// Streaming text: IncrementalDecoder decodes a window of recent ids per token (O(n) ids for n tokens), and its deltas
// add up to the full decode on real tokenizers, for long outputs, random ids, special tokens and clean-up;
// StopStringMatcher finds a stop string at the step a check of the whole text would.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { IncrementalDecoder, StopStringMatcher } from '../src/generate/stream.js';
import { Tokenizer } from '../src/tokenizer/index.js';
import { NO_DATA, Rand, ROOT, sharedData } from './helpers.js';

const KJV = join(ROOT, 'models', 'kjv-demo');
const data = sharedData();

/** Push every id, then flush: the concatenated deltas, the decoder's final text, and any delta holding U+FFFD. */
function stream(tok: Tokenizer, ids: number[], context: number[] = []): { streamed: string; text: string; splitChars: string[] } {
  const dec = new IncrementalDecoder(tok, { context });
  let streamed = '';
  const splitChars: string[] = [];
  for (const id of ids) {
    const d = dec.push(id);
    if (d.includes('\uFFFD')) splitChars.push(d);
    streamed += d;
  }
  streamed += dec.flush();
  return { streamed, text: dec.text, splitChars };
}

/**
 * The output's text as generate defines it: the full decode with the text of the prompt's last 8 tokens cut off
 * (where the output changed that text, completing a character or by clean-up, from the first difference).
 */
function expected(tok: Tokenizer, ids: number[], context: number[]): string {
  const ctx = context.slice(-8);
  const all = tok.decode([...ctx, ...ids], { skipSpecialTokens: true });
  const pre = ctx.length ? tok.decode(ctx, { skipSpecialTokens: true }) : '';
  let i = 0;
  while (i < pre.length && pre[i] === all[i]) i++;
  return all.slice(i);
}

const MIXED = 'Ünïcödé 😀🚀 東京 and more. Ça va? — «ok» 🇫🇷 naïve café, he said: "don\'t".\n\n';

test('2,000 pushes on the KJV tokenizer pass O(n) ids to decode (a window per token), and the deltas add up to the full decode', () => {
  const tok = Tokenizer.fromDir(KJV);
  const ids = tok.encode(readFileSync(join(KJV, 'heldout.txt'), 'utf8'));
  assert.ok(ids.length > 2008);
  const real = tok.decode.bind(tok);
  let decoded = 0;
  tok.decode = (x, o) => { decoded += x.length; return real(x, o); };
  const perPush = (n: number) => {
    decoded = 0;
    const dec = new IncrementalDecoder(tok, { context: ids.slice(0, 8) });
    let streamed = '';
    for (const id of ids.slice(8, 8 + n)) streamed += dec.push(id);
    const inPushes = decoded;
    streamed += dec.flush();
    assert.equal(streamed, dec.text);
    assert.equal(dec.text, expected(tok, ids.slice(8, 8 + n), ids.slice(0, 8)));
    return inPushes / n;
  };
  const short = perPush(200), long = perPush(2000);
  // Re-decoding the whole output each push would pass ~n/2 ids per push (1,000 here; 2 million in all).
  assert.ok(long < 8, `${long} ids decoded per push`);
  assert.ok(long <= short * 1.2, `ids per push grow with the length: ${short} at 200 pushes, ${long} at 2,000`);
});

test('KJV tokenizer (byte-level BPE): long text, multi-byte characters and random ids stream exactly the full decode', () => {
  const tok = Tokenizer.fromDir(KJV);
  const texts = [readFileSync(join(KJV, 'heldout.txt'), 'utf8').slice(0, 12_000), MIXED.repeat(30)];
  for (const text of texts) {
    const ids = tok.encode(text);
    for (const k of [0, 1, 8]) {
      const out = ids.slice(k, k + 2500);
      const r = stream(tok, out, ids.slice(0, k));
      assert.deepEqual(r.splitChars, []);
      assert.equal(r.streamed, r.text);
      assert.equal(r.text, expected(tok, out, ids.slice(0, k)));
    }
  }
  const R = new Rand(1);
  for (let trial = 0; trial < 20; trial++) {
    const ids = Array.from({ length: 300 }, () => R.int(tok.vocabSize));
    const r = stream(tok, ids.slice(8), ids.slice(0, 8));
    assert.equal(r.streamed, r.text, `random ids, trial ${trial}`);
  }
});

const SHARED: Record<string, (d: string) => Tokenizer> = {
  gpt2: (d) => Tokenizer.fromDir(join(d, 'tokenizers', 'gpt2')),
  // SentencePiece with byte fallback; only tokenizer.json ships (special tokens as Meta's).
  llama2: (d) => new Tokenizer(JSON.parse(readFileSync(join(d, 'tokenizers', 'llama2', 'tokenizer.json'), 'utf8')), { bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }, 'llama2'),
  llama3: (d) => Tokenizer.fromDir(join(d, 'tokenizers', 'llama3')),
  'tinystories-656k': (d) => Tokenizer.fromDir(join(d, 'models', 'tinystories-656k')),
  'eval-llama-16m': (d) => Tokenizer.fromDir(join(d, 'models', 'eval-llama-16m')),
};

for (const [name, load] of Object.entries(SHARED)) {
  test(`${name}: 2,500-token outputs (prose, code-free wiki text, emoji and CJK) and random ids stream exactly the full decode`, { skip: data ? false : NO_DATA }, () => {
    const tok = load(data!);
    const texts = [
      readFileSync(join(data!, 'text', 'wikitext2-raw-test.txt'), 'utf8').slice(5000, 17_000),
      readFileSync(join(data!, 'text', 'tinyshakespeare.txt'), 'utf8').slice(0, 10_000),
      MIXED.repeat(40),
    ];
    for (const text of texts) {
      const ids = tok.encode(text);
      for (const k of [0, 1, 8]) {
        const out = ids.slice(k, k + 2500);
        const r = stream(tok, out, ids.slice(0, k));
        assert.deepEqual(r.splitChars, [], 'a delta splits a character');
        assert.equal(r.streamed, r.text);
        assert.equal(r.text, expected(tok, out, ids.slice(0, k)));
      }
    }
    // Whatever a model emits: byte tokens out of order, special tokens (skipped) anywhere.
    const R = new Rand(2);
    for (let trial = 0; trial < 10; trial++) {
      const ids = Array.from({ length: 300 }, () => R.int(tok.vocabSize));
      const r = stream(tok, ids.slice(8), ids.slice(0, 8));
      assert.equal(r.streamed, r.text, `random ids, trial ${trial}`);
    }
  });
}

test('llama2: a special token inside the output (skipped) keeps the next word\'s leading space', { skip: data ? false : NO_DATA }, () => {
  const tok = SHARED.llama2(data!);
  const a = tok.encode('The little dog', { addSpecialTokens: false });
  const b = tok.encode('and his dog ran', { addSpecialTokens: false });
  const eos = tok.eosTokenId!;
  const out = [...a.slice(1), eos, eos, ...b, eos, ...b];
  const r = stream(tok, out, a.slice(0, 1));
  assert.equal(r.streamed, r.text);
  assert.equal(r.text, ' little dog and his dog ran and his dog ran');
});

/** Whitespace-split words, no decoder (decode joins tokens with spaces), so clean-up has something to do everywhere. */
function wordLevel(cleanUp: boolean): Tokenizer {
  const words = ['[UNK]', '.', ',', '!', '?', "'", "'m", "'re", "'s", "'t", "'ve", 'n', "n't", 'I', 'do', 'it', 'x', 'don'];
  return new Tokenizer({
    version: '1.0', added_tokens: [], normalizer: null, pre_tokenizer: { type: 'WhitespaceSplit' }, post_processor: null, decoder: null,
    model: { type: 'WordLevel', vocab: Object.fromEntries(words.map((w, i) => [w, i])), unk_token: '[UNK]' },
  }, { unk_token: '[UNK]', clean_up_tokenization_spaces: cleanUp }, 'word-level');
}

test('clean-up (" ." → ".", " n\'t" → "n\'t", " \' " → "\'"): streamed pieces, cut where no pattern reaches across, add up to the cleaned decode', () => {
  const tok = wordLevel(true);
  assert.ok(tok.cleansUpSpaces);
  const R = new Rand(3);
  for (let trial = 0; trial < 500; trial++) {
    const ids = Array.from({ length: 60 }, () => 1 + R.int(17));
    const k = R.int(6);
    const r = stream(tok, ids.slice(k), ids.slice(0, k));
    assert.equal(r.streamed, r.text, `trial ${trial}: ${tok.decode(ids)}`);
    assert.equal(r.text, expected(tok, ids.slice(k), ids.slice(0, k)));
  }
  // Pieces are emitted as soon as they are safe: "I do" is held (" n't" may follow), then it comes out cleaned.
  const dec = new IncrementalDecoder(tok);
  const id = (w: string) => tok.tokenId(w)!;
  assert.equal(dec.push(id('I')), 'I');
  assert.equal(dec.push(id('do')), '');
  assert.equal(dec.pendingText, ' do');
  assert.equal(dec.push(id("n't")) + dec.push(id('do')), " don't");
  assert.equal(dec.flush(), ' do');
});

test('clean-up forced on a byte-level BPE (gpt2): random punctuation-heavy text and random ids stream exactly the cleaned decode', { skip: data ? false : NO_DATA }, () => {
  const json = JSON.parse(readFileSync(join(data!, 'tokenizers', 'gpt2', 'tokenizer.json'), 'utf8'));
  const tok = new Tokenizer(json, { clean_up_tokenization_spaces: true, clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output: true }, 'gpt2-clean');
  const pieces = [' ', '  ', "'", ' n', "n't", ' .', '.', ',', ' ,', 's', 've', 're', 'm', 'a', 'dog', '\n', ' ?', '!', "' ", " ' ", 'don', 'n', 't', '😀'];
  const R = new Rand(4);
  for (let trial = 0; trial < 300; trial++) {
    let text = '';
    for (let i = 0; i < 60; i++) text += R.pick(pieces);
    const ids = tok.encode(text);
    const k = R.int(6);
    const r = stream(tok, ids.slice(k), ids.slice(0, k));
    assert.equal(r.streamed, r.text, `trial ${trial}: ${JSON.stringify(text)}`);
  }
  for (let trial = 0; trial < 10; trial++) {
    const ids = Array.from({ length: 300 }, () => R.int(tok.vocabSize));
    const r = stream(tok, ids.slice(8), ids.slice(0, 8));
    assert.equal(r.streamed, r.text, `random ids, trial ${trial}`);
  }
});

test('StopStringMatcher, which sees only the recent text, stops at the same step as a search of the whole text', () => {
  const R = new Rand(5);
  const alphabet = ['a', 'b', ' ', '\n', 'ab', 'ba'];
  for (let trial = 0; trial < 2000; trial++) {
    let final = '';
    for (let i = 0; i < 40; i++) final += R.pick(alphabet);
    const stops = Array.from({ length: 1 + R.int(3) }, () => {
      const at = R.int(final.length - 1);
      return final.slice(at, at + 1 + R.int(5));
    });
    // Steps: the text grows; a random part of it is emitted (only ever more), the rest is pending.
    const m = new StopStringMatcher(stops);
    let emitted = 0, shown = 0, naiveStep = -1, matcherStep = -1;
    for (let step = 0, len = 0; len < final.length; step++) {
      len = Math.min(final.length, len + 1 + R.int(3));
      emitted = Math.min(len, emitted + R.int(4));
      const delta = final.slice(shown, emitted);
      shown = emitted;
      if (naiveStep < 0 && stops.some((s) => final.slice(0, len).includes(s))) naiveStep = step;
      if (matcherStep < 0 && m.check(delta, final.slice(emitted, len))) matcherStep = step;
    }
    assert.equal(matcherStep, naiveStep, `${JSON.stringify(final)} stops ${JSON.stringify(stops)}`);
  }
});
