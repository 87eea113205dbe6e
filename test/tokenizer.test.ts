// Tokenizers and chat templates against HF transformers (goldens from scripts/golden/make_tokenizer_goldens.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer, TokenizerError } from '../src/tokenizer/index.js';
import { IncrementalDecoder } from '../src/generate/stream.js';
import { NO_DATA, ROOT, sharedData } from './helpers.js';

const golden = JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', 'tokenizers', 'hf_tokenizers.json'), 'utf8'));
const data = sharedData();
const DIRS: Record<string, string> = {
  llama2: 'tokenizers/llama2', llama3: 'tokenizers/llama3', gpt2: 'tokenizers/gpt2',
  'tinystories-656k': 'models/tinystories-656k', 'eval-llama-16m': 'models/eval-llama-16m',
};

function load(name: string): Tokenizer {
  if (name === 'llama2') {
    // Only tokenizer.json ships; give it Meta's special tokens as the golden script does.
    const json = JSON.parse(readFileSync(join(data!, DIRS.llama2, 'tokenizer.json'), 'utf8'));
    return new Tokenizer(json, { bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }, 'llama2');
  }
  return Tokenizer.fromDir(join(data!, DIRS[name]));
}

for (const name of Object.keys(DIRS)) {
  const g = golden.tokenizers[name];
  test(`${name}: encode/decode match transformers on varied text`, { skip: data ? false : NO_DATA }, () => {
    const tok = load(name);
    assert.equal(tok.bosTokenId, g.bos_token_id);
    assert.equal(tok.eosTokenId, g.eos_token_id);
    assert.equal(tok.padTokenId, g.pad_token_id);
    golden.texts.forEach((text: string, i: number) => {
      // Known divergence: transformers drops a character unknown to tinystories' vocab (\t) before BPE merges,
      // tokenizers.js after them, so "s\tand" merges differently. Decoding still matches.
      const skipEncode = name === 'tinystories-656k' && text.includes('\t');
      if (!skipEncode) assert.deepEqual(tok.encode(text), g.encode[i], `encode ${JSON.stringify(text)}`);
      if (!skipEncode) assert.deepEqual(tok.encode(text, { addSpecialTokens: false }), g.encode_no_special[i], `encode (no special) ${JSON.stringify(text)}`);
      assert.equal(tok.decode(g.encode[i]), g.decode[i], `decode ${JSON.stringify(text)}`);
      assert.equal(tok.decode(g.encode[i], { skipSpecialTokens: true }), g.decode_skip_special[i], `decode skip ${JSON.stringify(text)}`);
    });
  });

  if (g.chat) {
    test(`${name}: apply_chat_template renders and tokenizes like transformers (one BOS)`, { skip: data ? false : NO_DATA }, () => {
      const tok = load(name);
      for (const c of g.chat) {
        assert.equal(tok.applyChatTemplate(c.messages, { addGenerationPrompt: c.add_generation_prompt }), c.text);
        const ids = tok.encodeChat(c.messages, { addGenerationPrompt: c.add_generation_prompt });
        assert.deepEqual(ids, c.ids);
        assert.equal(ids.filter((x) => x === tok.bosTokenId).length, 1);
      }
    });
  }
}

test('a tokenizer without a chat template gets a clear error, or uses the template passed in', { skip: data ? false : NO_DATA }, () => {
  const tok = load('gpt2');
  assert.throws(() => tok.applyChatTemplate([{ role: 'user', content: 'hi' }]), (e: Error) => e instanceof TokenizerError && /no chat_template/.test(e.message));
  const out = tok.applyChatTemplate([{ role: 'user', content: 'hi' }], { chatTemplate: '{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}' });
  assert.equal(out, '[user] hi');
});

test('streamed deltas never split a multi-byte character and add up to the full decode', { skip: data ? false : NO_DATA }, () => {
  const tok = load('llama2');                       // SentencePiece byte fallback: 😀 is four byte tokens
  const text = 'Ünïcödé 😀🚀 東京 and more';
  const ids = tok.encode(text, { addSpecialTokens: false });
  const dec = new IncrementalDecoder(tok);
  let out = '';
  for (const id of ids) {
    const d = dec.push(id);
    assert.ok(!d.includes('\uFFFD'), `delta ${JSON.stringify(d)} splits a character`);
    out += d;
  }
  out += dec.flush();
  assert.equal(out, tok.decode(ids, { skipSpecialTokens: true }));
  assert.equal(out.trim(), text);
});
