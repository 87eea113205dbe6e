// lowbit generate as a user meets it: the stats line, --prompts-file in micro-batches with rows written as they
// finish (JSON Lines), limits on prompt + new tokens (--truncate), --chat-template and --no-mmap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { autoBatchSize, cliMessage, inRows } from '../src/cli/generate.js';
import { GenerationConfigError } from '../src/generate/config.js';
import { NonFiniteLogitsError } from '../src/generate/logits.js';
import { TokenIdError } from '../src/models/model.js';
import { kvBytesPerToken, modelShape } from '../src/plan/plan.js';
import { parseConfig } from '../src/io/config.js';
import { Tokenizer } from '../src/tokenizer/index.js';
import { CLI, KJV, lowbit, NO_DATA, sharedData } from './helpers.js';

const data = sharedData();
const TS = data ? join(data, 'models', 'tinystories-656k') : '';
const skip = data ? false : NO_DATA;


const tmp = mkdtempSync(join(tmpdir(), 'lowbit-cli-gen-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

test('a streamed generate ends with a stats line on stderr: tokens, prefill and decode tok/s, finish reason', { skip }, () => {
  const r = lowbit('generate', TS, '--prompt', 'Once upon a time', '--max-new-tokens', '8', '--temperature', '0');
  assert.equal(r.code, 0, r.err);
  const json = JSON.parse(lowbit('generate', TS, '--prompt', 'Once upon a time', '--max-new-tokens', '8', '--temperature', '0', '--json').out);
  assert.equal(r.out, json.text + '\n');
  assert.match(r.err, new RegExp(`^\\[${json.promptTokens} prompt \\+ 8 generated tokens · prefill \\d+ tok/s · decode \\d+ tok/s · finished: length\\]\\n$`));
  for (const k of ['prefillTokPerSec', 'decodeTokPerSec']) assert.ok(json.timings[k] > 0, k);
});

test('--prompts-file --json writes JSON Lines: a row per prompt in input order, then a summary; rows equal single runs', () => {
  const file = join(tmp, 'prompts.txt');
  const prompts = ['Recite Genesis 1:1.', 'What does John 3:16 say?', 'Quote Psalms 23:1.', 'Say Exodus 20:3.', 'Read me Ruth 1:16.'];
  writeFileSync(file, prompts.join('\n') + '\n\n');
  const rows = (batch: string) => {
    const r = lowbit('generate', KJV, '--prompts-file', file, '--chat', '--max-new-tokens', '6', '--temperature', '0', '--json', '--batch-size', batch);
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, prompts.length + 1);
    const summary = lines.pop();
    assert.equal(summary.type, 'summary');
    assert.equal(summary.rows, prompts.length);
    assert.match(r.err, new RegExp(`generate ${prompts.length}/${prompts.length} rows\\n`));
    return { lines, summary };
  };
  const two = rows('2');
  assert.equal(two.summary.batchSize, 2);
  assert.equal(two.summary.batches, 3);
  two.lines.forEach((l, i) => {
    assert.equal(l.type, 'row');
    assert.equal(l.index, i);
    assert.equal(l.prompt, prompts[i]);
    assert.equal(l.generatedTokens, l.tokenIds.length);
  });
  assert.equal(two.summary.generatedTokens, two.lines.reduce((n, l) => n + l.generatedTokens, 0));
  // Batch composition does not change a row (left padding is masked): the same rows from batches of 5 and of 1.
  assert.deepEqual(rows('auto').lines, two.lines);
  const alone = JSON.parse(lowbit('generate', KJV, '--chat', '--prompt', prompts[3], '--max-new-tokens', '6', '--temperature', '0', '--json').out);
  assert.deepEqual(two.lines[3].tokenIds, alone.tokenIds);
  assert.equal(two.lines[3].text, alone.text);
  assert.equal(two.lines[3].promptTokens, alone.promptTokens);
  // Text mode: a block per row.
  const t = lowbit('generate', KJV, '--prompts-file', file, '--chat', '--max-new-tokens', '6', '--temperature', '0', '--batch-size', '2');
  assert.equal(t.code, 0, t.err);
  assert.ok(t.out.startsWith(`--- [0] ${prompts[0]}\n${two.lines[0].text}\n(${two.lines[0].finishReason}, ${two.lines[0].generatedTokens} tokens)\n--- [1] `), t.out);
  assert.equal(lowbit('generate', KJV, '--prompts-file', file, '--batch-size', '0').code, 2);
  assert.equal(lowbit('generate', KJV, '--prompt', 'x', '--batch-size', '4').code, 2);
});

test('the automatic batch size is bounded by memory and a cap, never the whole file', () => {
  // 10,000 prompts of up to 100 tokens with --max-new-tokens 2000 on a TinyLlama-1.1B shape: 44 KB of f32 KV per
  // token per row, so one batch of every row would need 924 GB.
  const shape = modelShape(parseConfig({ model_type: 'llama', hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 22, num_attention_heads: 32, num_key_value_heads: 4, vocab_size: 32000, max_position_embeddings: 4096 }, 'test'));
  const perRow = kvBytesPerToken(shape, 4) * 2100;
  assert.equal(autoBatchSize(perRow, 24e9), 16);
  assert.equal(autoBatchSize(perRow, 2e9), 10);          // half of 2 GB over 94.6 MB per row
  assert.equal(autoBatchSize(perRow, 50e6), 1);          // never 0: one row at a time still runs
  assert.equal(autoBatchSize(1, 1e12), 16);
});

test('a 10,000-prompt file with --max-new-tokens 2000 starts writing rows at once, in small batches, without reserving the whole run', { skip }, async () => {
  // tinystories with 4096 positions (the weights do not care), so 2000 new tokens are allowed: one batch of all
  // 10,000 rows would be 10,000 × 2,010 positions × 1 KB = 20 GB of KV cache.
  const model = join(tmp, 'ts4k');
  spawnSync('mkdir', [model]);
  for (const f of ['model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json']) symlinkSync(join(TS, f), join(model, f));
  writeFileSync(join(model, 'config.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(TS, 'config.json'), 'utf8')), max_position_embeddings: 4096 }));
  const words = 'Once upon a time there was a little girl dog cat who liked to play in the park with her friend'.split(' ');
  const lines = Array.from({ length: 10_000 }, (_, i) => Array.from({ length: 3 + (i % 7) }, (_, j) => words[(i * 7 + j * 3) % words.length]).join(' '));
  const file = join(tmp, 'big.txt');
  writeFileSync(file, lines.join('\n') + '\n');
  const child = spawn(process.execPath, [CLI, 'generate', model, '--prompts-file', file, '--max-new-tokens', '2000', '--temperature', '0', '--json']);
  let out = '', err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const t0 = Date.now();
  try {
    while (!out.includes('\n') && child.exitCode === null && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 10));
    // Peak memory so far, read while the run goes on (Linux).
    const status = readFileSync(`/proc/${child.pid}/status`, 'utf8');
    const peakKb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
    assert.equal(child.exitCode, null, `the run ended: ${err}`);
    const first = JSON.parse(out.slice(0, out.indexOf('\n')));
    assert.equal(first.type, 'row');
    assert.equal(first.index, 0);
    assert.equal(first.prompt, lines[0]);
    assert.match(err, /^lowbit: 10000 prompts in batches of up to 16 rows \(auto: sized to free memory\)\n/);
    assert.ok(peakKb < 1_000_000, `peak RSS ${peakKb} kB`);
  } finally {
    child.kill('SIGKILL');
  }
});

/** A prompt of more than 1,200 tokens for tinystories (512 positions), and its token count. */
let long: { text: string; tokens: number } | undefined;
function longPrompt(): { text: string; tokens: number } {
  if (long) return long;
  const tok = Tokenizer.fromDir(TS);
  const sentence = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park. ';
  const text = sentence.repeat(Math.ceil(1202 / (tok.encode(sentence).length - 1)));
  return (long = { text, tokens: tok.encode(text).length });
}

test('a prompt + new tokens past the model\'s positions is refused with the numbers; --truncate keeps the prompt\'s end', { skip }, () => {
  const { text, tokens } = longPrompt();
  let r = lowbit('generate', TS, '--prompt', text, '--max-new-tokens', '8', '--temperature', '0');
  assert.equal(r.code, 1);
  assert.equal(r.out, '');
  assert.match(r.err, new RegExp(`prompt 0 has ${tokens} tokens; with --max-new-tokens 8 that is ${tokens + 8} positions, but the model takes at most 512\\..*pass --truncate to keep the prompt's last 504 tokens`));
  r = lowbit('generate', TS, '--prompt', text, '--max-new-tokens', '8', '--temperature', '0', '--truncate', '--json');
  assert.equal(r.code, 0, r.err);
  const out = JSON.parse(r.out);
  assert.equal(out.promptTokens, 504);
  assert.equal(out.truncatedTokens, tokens - 504);
  assert.equal(out.generatedTokens, 8);
  r = lowbit('generate', TS, '--prompt', text, '--max-new-tokens', '8', '--temperature', '0', '--truncate');
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, new RegExp(`^\\[504 prompt \\(${tokens - 504} cut by --truncate\\) \\+ 8 generated tokens`));
  // --min-new-tokens counts too: a short prompt + 510 forced tokens does not fit 512 positions.
  r = lowbit('generate', TS, '--prompt', 'Once upon a time', '--min-new-tokens', '510');
  assert.equal(r.code, 1);
  assert.match(r.err, /prompt 0 has \d+ tokens; with --min-new-tokens 510 that is \d+ positions, but the model takes at most 512/);
  r = lowbit('generate', TS, '--prompt', 'Once upon a time', '--min-new-tokens', '600');
  assert.equal(r.code, 1);
  assert.match(r.err, /--min-new-tokens 600 leaves no room for a prompt: the model takes at most 512 positions/);
});

test('in a prompts file, an over-long prompt is named by its line; --truncate runs the file', { skip }, () => {
  const { text, tokens } = longPrompt();
  const file = join(tmp, 'long.txt');
  writeFileSync(file, `Once upon a time\n\nThe little dog\n${text}\n`);
  let r = lowbit('generate', TS, '--prompts-file', file, '--max-new-tokens', '4', '--temperature', '0', '--json', '--batch-size', '1');
  assert.equal(r.code, 1);
  assert.match(r.err, new RegExp(`long\\.txt line 4 \\(row 2\\): prompt has ${tokens} tokens`));
  r = lowbit('generate', TS, '--prompts-file', file, '--max-new-tokens', '4', '--temperature', '0', '--json', '--truncate');
  assert.equal(r.code, 0, r.err);
  const rows = r.out.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(rows.slice(0, 3).map((x) => x.truncatedTokens), [0, 0, tokens - 508]);
  assert.equal(rows[2].promptTokens, 508);
});

test('in a prompts file, an over-long prompt in a later micro-batch is named by its line (blank lines counted)', () => {
  const file = join(tmp, 'lines.txt');
  const long = 'And God said, Let there be light: and there was light. '.repeat(60);      // over 512 tokens
  writeFileSync(file, `In the beginning\n\n${long}\nAmen\n`);
  const r = lowbit('generate', KJV, '--prompts-file', file, '--batch-size', '1', '--max-new-tokens', '4', '--temperature', '0', '--json');
  assert.equal(r.code, 1);
  assert.match(r.err, /^lowbit generate: GenerationConfigError: \S*lines\.txt line 3 \(row 1\): prompt has \d+ tokens; with --max-new-tokens 4 that is \d+ positions, but the model takes at most 512\. .*pass --truncate/m);
  // The first micro-batch ran and was written before the second was refused.
  assert.equal(JSON.parse(r.out.trim().split('\n')[0]).index, 0);
});

test('errors about one prompt carry its row; the CLI renumbers them to the file\'s line and keeps their class and fields', () => {
  const lines = [1, 2, 4, 5, 9];                                   // file lines of rows 0…4 (blank lines skipped)
  // An id outside the vocabulary cannot come from text; the error as prepareInput/generate throw it for row 1.
  const tokenId = new TokenIdError('prompt: row 1, position 7 is token id 99999, outside the vocabulary (vocab_size 4096: ids 0…4095)', 1, 7, 99999, 4096);
  const t = inRows(tokenId, 3, 'p.txt', lines) as TokenIdError;
  assert.ok(t instanceof TokenIdError && t.name === 'TokenIdError');
  assert.equal(t.message, 'p.txt line 9 (row 4): prompt: position 7 is token id 99999, outside the vocabulary (vocab_size 4096: ids 0…4095)');
  assert.deepEqual([t.row, t.position, t.id, t.vocabSize], [4, 7, 99999, 4096]);
  assert.equal(tokenId.row, 1);                                    // the original is left as it was
  const nonFinite = new NonFiniteLogitsError('non-finite logits at decode step 3, row 0: logit of token 5 is NaN; the weights hold NaN/Inf', 3, 0);
  const n = inRows(nonFinite, 2, 'p.txt', lines) as NonFiniteLogitsError;
  assert.ok(n instanceof NonFiniteLogitsError);
  assert.equal(n.message, 'p.txt line 4 (row 2): non-finite logits at decode step 3: logit of token 5 is NaN; the weights hold NaN/Inf');
  assert.deepEqual([n.step, n.row], [3, 2]);
  // Errors without a row pass through untouched; the CLI's rewording of a GenerationConfigError keeps its row.
  const plain = new GenerationConfigError('maxNewTokens 600 leaves no room for a prompt');
  assert.equal(inRows(plain, 3, 'p.txt', lines), plain);
  const withRow = Object.defineProperty(new GenerationConfigError('prompt 0 has 600 tokens; with maxNewTokens 4 that is 604 positions'), 'row', { value: 0 });
  const c = cliMessage(inRows(withRow, 1, 'p.txt', lines)) as GenerationConfigError & { row: number };
  assert.ok(c instanceof GenerationConfigError);
  assert.equal(c.message, 'p.txt line 2 (row 1): prompt has 600 tokens; with --max-new-tokens 4 that is 604 positions');
  assert.equal(c.row, 1);
});

test('--chat-template FILE renders the prompt with that template (.jinja or JSON); errors name the file', () => {
  const q = 'Recite John 10:11.';
  const plain = JSON.parse(lowbit('generate', KJV, '--prompt', q, '--max-new-tokens', '1', '--json').out);
  const chat = JSON.parse(lowbit('generate', KJV, '--chat', '--prompt', q, '--max-new-tokens', '1', '--json').out);
  // BOS then the bare message: what plain encoding gives (the tokenizer adds BOS).
  const jinja = join(tmp, 'bare.jinja');
  writeFileSync(jinja, "{{ bos_token }}{{ messages[-1]['content'] }}");
  let r = lowbit('generate', KJV, '--chat', '--chat-template', jinja, '--prompt', q, '--max-new-tokens', '1', '--json');
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).promptTokens, plain.promptTokens);
  assert.notEqual(plain.promptTokens, chat.promptTokens);
  const json = join(tmp, 'tpl.json');
  writeFileSync(json, JSON.stringify({ chat_template: "{{ bos_token }}{{ messages[-1]['content'] }}" }));
  r = lowbit('generate', KJV, '--chat', '--chat-template', json, '--prompt', q, '--max-new-tokens', '1', '--json');
  assert.equal(JSON.parse(r.out).promptTokens, plain.promptTokens);
  r = lowbit('generate', KJV, '--chat', '--chat-template', join(tmp, 'missing.jinja'), '--prompt', q);
  assert.equal(r.code, 1);
  assert.match(r.err, /missing\.jinja/);
  r = lowbit('generate', KJV, '--chat-template', jinja, '--prompt', q);
  assert.equal(r.code, 2);
  assert.match(r.err, /--chat-template needs --chat/);
  // The chat REPL takes it too.
  const c = spawnSync(process.execPath, [CLI, 'chat', KJV, '--chat-template', jinja, '--max-new-tokens', '2', '--temperature', '0'], { encoding: 'utf8', input: `${q}\n` });
  assert.equal(c.status, 0, c.stderr);
  assert.match(c.stderr, new RegExp(`^\\[${plain.promptTokens} prompt \\+ \\d answer tokens`));
});

test('generate --no-mmap reads the weights into memory and gives the same tokens', () => {
  const args = ['generate', KJV, '--chat', '--prompt', 'Recite John 10:11.', '--max-new-tokens', '8', '--temperature', '0', '--json'];
  const a = JSON.parse(lowbit(...args).out), b = JSON.parse(lowbit(...args, '--no-mmap').out);
  assert.deepEqual(b.tokenIds, a.tokenIds);
});

test('without --max-new-tokens, a model with few positions gets half of them for the answer instead of a refusal', { skip }, () => {
  const model = join(tmp, 'ts128');
  spawnSync('mkdir', [model]);
  for (const f of ['model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json']) symlinkSync(join(TS, f), join(model, f));
  writeFileSync(join(model, 'config.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(TS, 'config.json'), 'utf8')), max_position_embeddings: 128 }));
  const r = lowbit('generate', model, '--prompt', 'Once upon a time', '--min-new-tokens', '64', '--temperature', '0', '--json');
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).generatedTokens, 64);
});
