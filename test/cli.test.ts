// The command line as a user meets it: help with examples, clear errors with non-zero exits, and the P2
// acceptance runs (tinystories greedy ids, a chat prompt rendered once with one BOS, the planner's worked example).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuAvailable } from '../src/backend/cpu/index.js';
import { CLI, GOLDEN_DIR, KJV, lowbit, NO_DATA, ROOT, sharedData } from './helpers.js';

const data = sharedData();


for (const cmd of ['demo', 'generate', 'chat', 'info', 'plan', 'bench', 'quantize', 'finetune', 'merge']) {
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
  r = lowbit('bench', '--shape', 'llama-3.2-1b', '--train');
  assert.equal(r.code, 2);
  assert.match(r.err, /--train applies to --device cuda/);
});

test('usage errors are lowbit\'s own: negative numbers, unknown options, missing values, unknown backends (exit 2)', () => {
  // node's parseArgs takes "-5" for an option and words its errors for programmers; lowbit names the option.
  let r = lowbit('generate', KJV, '--prompt', 'x', '--max-new-tokens', '-5');
  assert.equal(r.code, 2);
  assert.equal(r.err, 'lowbit generate: --max-new-tokens must be an integer ≥ 1, got "-5" (see lowbit generate --help)\n');
  r = lowbit('generate', KJV, '--prompt', 'x', '--temperature', '-0.5');
  assert.equal(r.code, 2);
  assert.match(r.err, /--temperature must be a number ≥ 0, got "-0\.5"/);
  r = lowbit('generate', KJV, '--prompt', 'x', '--max-new-tokns', '5');
  assert.equal(r.code, 2);
  assert.equal(r.err, 'lowbit generate: unknown option --max-new-tokns (did you mean --max-new-tokens?) (see lowbit generate --help)\n');
  r = lowbit('chat', KJV, '-x');
  assert.equal(r.code, 2);
  assert.match(r.err, /^lowbit chat: unknown option -x \(see lowbit chat --help\)/);
  r = lowbit('generate', KJV, '--prompt');
  assert.equal(r.code, 2);
  assert.match(r.err, /--prompt needs a value \(see lowbit generate --help\)/);
  r = lowbit('generate', KJV, '--prompt', '--json');
  assert.equal(r.code, 2);
  assert.match(r.err, /--prompt needs a value, got the option --json \(write --prompt=--json if you mean the text\)/);
  r = lowbit('generate', KJV, '--prompt', 'x', '--chat=yes');
  assert.equal(r.code, 2);
  assert.match(r.err, /--chat takes no value, got "yes"/);
  for (const cmd of ['generate', 'chat']) {
    r = lowbit(cmd, KJV, ...(cmd === 'generate' ? ['--prompt', 'x'] : []), '--backend', 'gpu');
    assert.equal(r.code, 2, cmd);
    assert.match(r.err, /--backend "gpu" is unknown \(choose cpu, cuda, ref\)/);
  }
  r = lowbit('plan', 'llama-2-7b', '--seq-len', '-1');
  assert.equal(r.code, 2);
  assert.match(r.err, /--seq-len must be an integer ≥ 1, got "-1"/);
  for (const e of [r.err]) assert.doesNotMatch(e, /ERR_PARSE_ARGS|TypeError|To specify an option argument/);
});

test('lowbit --version and -v print the package version', () => {
  const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
  for (const flag of ['--version', '-v']) {
    const r = lowbit(flag);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, `lowbit ${version}\n`);
  }
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

test('plan takes the weight dtype from config.json (bf16 for the demo model), presets stay fp16, and words the compute bound plainly', () => {
  let r = lowbit('plan', KJV, '--device', 'a100-40g', '--json');
  assert.equal(r.code, 0, r.err);
  let p = JSON.parse(r.out);
  assert.equal(p.dtype, 'bf16');
  assert.equal(p.kvDtype, 'bf16');
  assert.equal(p.weightBytes, p.params * 2);
  r = lowbit('plan', KJV, '--device', 'a100-40g');
  assert.match(r.out, /weights\s+10\.80 MB \(10\.303 MiB\) at bf16 \(from config\.json\)/);
  assert.match(r.out, /model\s+\S+: 5\.40M params/);
  assert.match(r.out, /compute-bound\s+at no batch size with 512-token sequences: each one's KV-cache reads outweigh its FLOPs \(short prompts: from batch \d+\)/);
  assert.doesNotMatch(r.out, /at never|at fp16/);
  p = JSON.parse(lowbit('plan', KJV, '--dtype', 'int8', '--json').out);
  assert.equal(p.dtype, 'int8');
  assert.equal(p.weightBytes, p.params);
  const f = JSON.parse(lowbit('plan', 'llama-2-13b', '--seq-len', '128', '--json').out);
  assert.equal(f.dtype, 'fp16');
  assert.equal(f.computeBoundBatch, 1025);
  assert.match(lowbit('plan', 'llama-2-13b', '--seq-len', '128').out, /compute-bound\s+from batch 1025 with 128-token sequences \(short prompts: from batch 201\)/);
});

test('plan of a float32 checkpoint plans fp32 weights', { skip: data ? false : NO_DATA }, () => {
  const p = JSON.parse(lowbit('plan', join(data!, 'models', 'tinystories-656k'), '--json').out);
  assert.equal(p.dtype, 'fp32');
  assert.equal(p.weightBytes, p.params * 4);
});

test('info builds the model as generate does: a checkpoint whose tensors do not match config.json exits 1', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-info-'));
  try {
    cpSync(join(GOLDEN_DIR, 'llama_gqa'), dir, { recursive: true });
    let r = lowbit('info', dir, '--json');
    assert.equal(r.code, 0, r.err);
    assert.equal(JSON.parse(r.out).parameters > 0, true);
    // A valid config that the weights do not fit: config.json alone and the tensors alone both read fine.
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: cfg.intermediate_size - 4 }));
    const gen = lowbit('generate', dir, '--prompt', 'x');
    assert.equal(gen.code, 1);
    r = lowbit('info', dir);
    assert.equal(r.code, 1, r.out);
    assert.match(r.err, /mlp\.(gate|up|down)_proj\.weight/);
    // generation_config.json is checked as generate checks it.
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    const genCfg = readFileSync(join(dir, 'generation_config.json'), 'utf8');
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ ...JSON.parse(genCfg), do_sample: 'false' }));
    r = lowbit('info', dir);
    assert.equal(r.code, 1, r.out);
    assert.match(r.err, /generation_config\.json: "do_sample" must be/);
    writeFileSync(join(dir, 'generation_config.json'), genCfg);
    // --no-mmap reads the same checkpoint into memory.
    assert.deepEqual(JSON.parse(lowbit('info', dir, '--json', '--no-mmap').out), JSON.parse(lowbit('info', dir, '--json').out));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('info refuses generation settings that generate refuses (new tokens ≥ the model\'s positions), with the same message', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-info-gen-'));
  try {
    cpSync(KJV, dir, { recursive: true });
    const genCfg = JSON.parse(readFileSync(join(dir, 'generation_config.json'), 'utf8'));
    for (const [key, value, flag] of [['max_new_tokens', 512, '--max-new-tokens'], ['min_new_tokens', 600, '--min-new-tokens']] as const) {
      writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ ...genCfg, [key]: value }));
      const gen = lowbit('generate', dir, '--prompt', 'In the beginning');
      assert.equal(gen.code, 1, gen.out);
      const why = `GenerationConfigError: ${flag} ${value} leaves no room for a prompt: the model takes at most 512 positions (prompt + new tokens); ask for at most 511 new tokens`;
      assert.equal(gen.err, `lowbit generate: ${why}\n`);
      const info = lowbit('info', dir);
      assert.equal(info.code, 1, info.out);
      assert.equal(info.err, `lowbit info: ${why}\n`);
    }
    // What fits passes: the file's own 64 new tokens, and without a file the command line's default (256 here).
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify(genCfg));
    assert.equal(lowbit('info', dir).code, 0);
    rmSync(join(dir, 'generation_config.json'));
    assert.equal(lowbit('info', dir).code, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
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

test('demo --device: cpu or cuda, named in the usage error', () => {
  const r = lowbit('demo', '--device', 'tpu');
  assert.equal(r.code, 2);
  assert.match(r.err, /--device "tpu" is unknown \(choose cpu or cuda\)/);
});

test('demo runs offline on the bundled model: size, perplexity, an answer checked against the KJV text', () => {
  const r = lowbit('demo');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /5\.40M parameters, 10\.8 MB in bfloat16/);
  // Deterministic: the same held-out windows, greedy; only kernel rounding moves it (58.83 on every SIMD level).
  const ppl = Number(/bfloat16\s+10\.8 MB\s+(\d+\.\d\d)/.exec(r.out)?.[1]);
  assert.ok(Math.abs(ppl - 58.83) < 0.05, `perplexity ${ppl}`);
  // Quantized on load: int8 barely moves it (58.83), NF4 with double quant costs a few percent (62.14); sizes are
  // the saved folders' tensor bytes (lm_head and embeddings stay bf16).
  const row = (name: string) => /(\d+\.\d) MB\s+(\d+\.\d\d)/.exec(r.out.split('\n').find((l) => l.trim().startsWith(name)) ?? '');
  const int8 = row('int8'), nf4 = row('nf4 + dq');
  assert.ok(int8 && nf4, r.out);
  assert.equal(int8[1], '6.5');
  assert.equal(nf4[1], '4.4');
  assert.ok(Math.abs(Number(int8[2]) - ppl) / ppl < 0.01, `int8 ${int8[2]}`);
  assert.ok(Number(nf4[2]) > ppl && (Number(nf4[2]) - ppl) / ppl < 0.1, `nf4 ${nf4[2]}`);
  const verse = 'I am the good shepherd: the good shepherd giveth his life for the sheep.';
  assert.match(r.out, /user: Recite John 10:11\.\n/);
  assert.ok(r.out.includes(`assistant: ${verse}\nKJV John 10:11: ${verse}\n✓ matches the King James text word for word`), r.out);
  assert.match(r.out, /\(15 tokens, eos, \d+ tokens\/s\)/);
});

/** Splits a chat transcript into answers: the text between one "> " prompt and the next. */
function answers(out: string): string[] {
  return out.split('\n> ').slice(1, -1).map((a) => a.replace(/\n$/, ''));
}

test('chat REPL: real answers, /reset clears the history, /help lists the commands, /exit leaves', () => {
  const q = 'Recite John 10:11.';
  const r = spawnSync(process.execPath, [CLI, 'chat', KJV, '--max-new-tokens', '16', '--temperature', '0'], {
    encoding: 'utf8', input: `${q}\n${q}\n/reset\n${q}\n/help\n/exit\n`,
  });
  assert.equal(r.status, 0, r.stderr);
  const a = answers(r.stdout);
  assert.equal(a.length, 5, r.stdout);
  // The first answer is what generate --chat gives for the same question alone.
  const alone = lowbit('generate', KJV, '--chat', '--prompt', q, '--max-new-tokens', '16', '--temperature', '0', '--json');
  assert.equal(alone.code, 0, alone.err);
  assert.equal(a[0], JSON.parse(alone.out).text.trim());
  assert.match(a[0], /\w+ \w+ \w+/);
  assert.equal(a[2], '(conversation cleared)');
  // The second question sees the first turn; after /reset the prompt is the first one again, and so is the answer.
  const prompts = [...r.stderr.matchAll(/\[(\d+) prompt \+ (\d+) answer tokens/g)].map((m) => Number(m[1]));
  assert.equal(prompts.length, 3, r.stderr);
  assert.ok(prompts[1] > prompts[0] + 16, `history in the second prompt: ${prompts}`);
  assert.equal(prompts[2], prompts[0]);
  assert.equal(a[3], a[0]);
  assert.match(a[4], /\/help .*\n\/reset .*\n\/exit /);
});

/**
 * The bundled model with 8,192 positions instead of 512 (RoPE takes any position; what it writes past 512 does not
 * matter here), so an answer can be made too long to finish before a Ctrl-C sent after its first bytes arrives.
 */
function longKjv(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-long-'));
  cpSync(KJV, dir, { recursive: true });
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, max_position_embeddings: 8192 }));
  return dir;
}

test('chat: Ctrl-C stops the answer being written and returns to the prompt; the next question is answered; Ctrl-C at the prompt leaves', async () => {
  // Every answer is 8,000 tokens (--min-new-tokens holds eos back): far more than any machine writes between the
  // first streamed bytes and the Ctrl-C sent on seeing them, so the Ctrl-C always lands inside an answer.
  const model = longKjv();
  const child = spawn(process.execPath, [CLI, 'chat', model, '--temperature', '0', '--max-new-tokens', '8000', '--min-new-tokens', '8000'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '', err = '', exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve(exit = { code, signal })));
  const waitFor = async (pred: () => boolean, what: string) => {
    const t0 = Date.now();
    while (!pred()) {
      if (exit) throw new Error(`lowbit chat exited (${JSON.stringify(exit)}) while waiting for ${what}; stdout: ${out}\nstderr: ${err}`);
      if (/finished: (length|eos)\]/.test(err)) throw new Error(`an answer finished before the Ctrl-C (waiting for ${what}); stderr: ${err}`);
      if (Date.now() - t0 > 60_000) throw new Error(`timed out waiting for ${what}; stdout: ${out}\nstderr: ${err}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
  try {
    await waitFor(() => out.endsWith('> '), 'the prompt');
    child.stdin.write('Recite John 10:11.\n');
    const from = out.length;
    await waitFor(() => out.length > from, 'the first streamed bytes');
    child.kill('SIGINT');
    await waitFor(() => out.includes('\n(stopped)\n> '), 'the stop');
    const stoppedAt = out.length;
    assert.match(err, /\[\d+ prompt \+ (\d+) answer tokens · finished: interrupted\]/);
    const partial = Number(/\+ (\d+) answer tokens · finished: interrupted/.exec(err)![1]);
    assert.ok(partial < 8000, `stopped after ${partial} tokens`);
    child.stdin.write('/help\n');
    await waitFor(() => out.length > stoppedAt && out.endsWith('> '), 'the help');
    assert.match(out.slice(stoppedAt), /\/reset/);
    // Still alive and answering: the next answer streams words, and Ctrl-C stops it too.
    const before = out.length;
    child.stdin.write('Quote Psalms 23:1.\n');
    await waitFor(() => /^\w+ \w+ \w+ /.test(out.slice(before)), 'the second answer\'s first words');
    child.kill('SIGINT');
    await waitFor(() => (err.match(/finished: interrupted\]/g) ?? []).length === 2 && out.endsWith('(stopped)\n> '), 'the second stop');
    child.kill('SIGINT');       // idle at the prompt: leave
    const { code } = await exited;
    assert.equal(code, 130);
  } finally {
    child.kill('SIGKILL');
    rmSync(model, { recursive: true, force: true });
  }
});

test('chat --no-mmap keeps answering after the weights file is truncated under it; mapped weights would fault (SIGBUS)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-mmap-'));
  try {
    const run = async (mmap: boolean) => {
      cpSync(KJV, dir, { recursive: true });
      const child = spawn(process.execPath, [CLI, 'chat', dir, '--temperature', '0', '--max-new-tokens', '8', ...(mmap ? [] : ['--no-mmap'])], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
      child.stderr.resume();
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
      const t0 = Date.now();
      while (!out.endsWith('> ') && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 5));
      truncateSync(join(dir, 'model.safetensors'), 0);
      child.stdin.end('Recite John 10:11.\n');
      return { ...(await exited), out };
    };
    const copy = await run(false);
    assert.equal(copy.code, 0);
    assert.match(copy.out, /> \w+ \w+/);
    // Without the native addon the weights are read, never mapped, and there is nothing to fault.
    if (cpuAvailable()) {
      const mapped = await run(true);
      assert.equal(mapped.signal, 'SIGBUS');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
