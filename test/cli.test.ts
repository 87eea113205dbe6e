// The command line as a user meets it: help with examples, clear errors with non-zero exits, and the P2
// acceptance runs (tinystories greedy ids, a chat prompt rendered once with one BOS, the planner's worked example).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NO_DATA, ROOT, sharedData } from './helpers.js';

const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const data = sharedData();

function lowbit(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

for (const cmd of ['demo', 'generate', 'chat', 'info', 'plan', 'bench']) {
  test(`lowbit ${cmd} --help shows usage and examples`, () => {
    const r = lowbit(cmd, '--help');
    assert.equal(r.code, 0);
    assert.match(r.out, /Usage: lowbit/);
    assert.match(r.out, /Examples:/);
  });
}

test('bad input: a clear message naming the problem and a non-zero exit', () => {
  let r = lowbit('frobnicate');
  assert.notEqual(r.code, 0);
  assert.match(r.err, /unknown command "frobnicate"/);
  r = lowbit('generate', '/no/such/model', '--prompt', 'x');
  assert.equal(r.code, 1);
  assert.match(r.err, /\/no\/such\/model: no such folder/);
  r = lowbit('generate', join(ROOT, 'models', 'kjv-demo'), '--prompt', 'x', '--top-p', '2');
  assert.equal(r.code, 2);
  assert.match(r.err, /--top-p must be in \(0, 1\], got "2"/);
  r = lowbit('plan', 'llama-2-13b', '--device', 'tpu');
  assert.equal(r.code, 2);
  assert.match(r.err, /--device "tpu" is unknown/);
  r = lowbit('generate', join(ROOT, 'models', 'kjv-demo'), '--bogus');
  assert.equal(r.code, 2);
  assert.match(r.err, /--bogus/);
});

test('plan reproduces the seed example: Llama-2-13B fp16, 4096 tokens → 3.36 GB (3.125 GiB) KV per sequence, batch 4 in 40 GB', () => {
  const r = lowbit('plan', 'llama-2-13b', '--device', 'a100-40g', '--seq-len', '4096', '--dtype', 'fp16', '--json');
  assert.equal(r.code, 0, r.err);
  const p = JSON.parse(r.out);
  assert.equal(p.kvBytesPerSequence, 2 * 40 * 40 * 128 * 4096 * 2);
  assert.equal((p.kvBytesPerSequence / 2 ** 30).toFixed(3), '3.125');
  assert.ok(Math.abs(p.weightBytes / 1e9 - 26.03) < 0.01);
  assert.equal(p.maxBatch, 4);
  // GQA: Llama-3-8B stores 8 of 32 heads, so a 4x smaller cache per token than an MHA model of its width.
  const g = JSON.parse(lowbit('plan', 'llama-3-8b', '--device', 'h100', '--seq-len', '8192', '--json').out);
  assert.equal(g.kvBytesPerToken, 2 * 32 * 8 * 128 * 2);
});

test('generate --json on tinystories-656k gives the reference greedy ids', { skip: data ? false : NO_DATA }, () => {
  const ref = JSON.parse(readFileSync(join(data!, 'refs', 'tinystories656k_reference.json'), 'utf8'));
  const r = lowbit('generate', join(data!, 'models', 'tinystories-656k'), '--prompt', ref.prompt, '--max-new-tokens', '48', '--temperature', '0', '--json');
  assert.equal(r.code, 0, r.err);
  const out = JSON.parse(r.out);
  assert.deepEqual(out.tokenIds, ref.greedy_ids);
  assert.equal(out.text, ref.greedy_text);
  assert.equal(out.promptTokens, ref.prompt_ids.length);
  assert.equal(out.generatedTokens, 48);
  assert.equal(out.finishReason, 'length');
  for (const k of ['loadMs', 'prefillMs', 'decodeMs', 'decodeTokPerSec']) assert.equal(typeof out.timings[k], 'number');
});

test('generate --chat streams an answer to the eval model\'s chat prompt', { skip: data ? false : NO_DATA }, () => {
  const r = lowbit('generate', join(data!, 'models', 'eval-llama-16m'), '--chat', '--prompt', 'Who are you?', '--max-new-tokens', '12', '--json');
  assert.equal(r.code, 0, r.err);
  const out = JSON.parse(r.out);
  // <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|><|start_header_id|>assistant…
  assert.equal(out.promptTokens, 18);
  assert.ok(out.generatedTokens > 0 && out.text.length > 0);
});

test('a --prompts-file runs as one batch with a result per prompt', () => {
  const file = join(ROOT, 'dist', 'prompts-test.txt');
  writeFileSync(file, 'Recite Genesis 1:1.\nWhat does John 3:16 say?\n');
  const r = lowbit('generate', join(ROOT, 'models', 'kjv-demo'), '--prompts-file', file, '--chat', '--max-new-tokens', '8', '--temperature', '0', '--json');
  assert.equal(r.code, 0, r.err);
  const out = JSON.parse(r.out);
  assert.equal(out.results.length, 2);
  for (const row of out.results) assert.ok(['eos', 'length'].includes(row.finishReason));
});

test('demo runs offline on the bundled model: size, perplexity, a streamed answer', () => {
  const r = lowbit('demo');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /5\.40M parameters, 10\.8 MB in bfloat16/);
  assert.match(r.out, /bfloat16\s+10\.8 MB\s+\d+\.\d\d/);
  assert.match(r.out, /assistant: \S+/);
});

test('chat REPL: streams answers, /reset clears the history, /exit leaves', () => {
  const r = spawnSync(process.execPath, [CLI, 'chat', join(ROOT, 'models', 'kjv-demo'), '--max-new-tokens', '16', '--temperature', '0'], {
    encoding: 'utf8', input: 'Recite Genesis 1:1.\n/reset\nQuote Psalms 23:1.\n/exit\n',
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\(conversation cleared\)/);
  const answers = r.stdout.split('\n').filter((l) => l.trim() && !l.startsWith('lowbit chat') && !l.includes('conversation cleared'));
  assert.ok(answers.length >= 2, r.stdout);
});
