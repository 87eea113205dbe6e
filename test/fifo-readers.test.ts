// Every reader of a model folder's small files (config.json, generation_config.json, the tokenizer files and
// chat_template.jinja, a chat template file, a cached shard index, a Hub ref) refuses a FIFO at once with its own
// typed error naming the file: opening a FIFO blocks until a writer comes, so `lowbit info` on such a folder used to
// hang forever. Each reader runs in a child process with a time limit, so that a regression fails this test instead
// of hanging the suite.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = mkdtempSync(join(tmpdir(), 'lowbit-fifo-'));
after(() => rmSync(root, { recursive: true, force: true }));
let count = 0;

/** A fresh folder holding `files` (name → text) and a FIFO at `fifo`. */
function folder(fifo: string, files: Record<string, string> = {}): string {
  const dir = join(root, `d${count++}`);
  mkdirSync(join(dir, fifo, '..'), { recursive: true });
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const r = spawnSync('mkfifo', [join(dir, fifo)]);
  assert.equal(r.status, 0, `mkfifo: ${r.stderr}`);
  return dir;
}

/**
 * Calls `fn` (an export of the compiled module `mod`, relative to dist/src, or `Class.method`) with `args` in a child
 * process, and returns the error it threw (name and message); fails when it returns, or has not finished in 10 s.
 */
function errorOf(mod: string, fn: string, args: unknown[]): { name: string; message: string } {
  const url = new URL(`../src/${mod}`, import.meta.url).href;
  const script = `
    const m = await import(${JSON.stringify(url)});
    const [owner, name] = ${JSON.stringify(fn.includes('.') ? fn.split('.') : [null, fn])};
    const o = owner === null ? m : m[owner];
    try { await o[name](...${JSON.stringify(args)}); console.log(JSON.stringify(null)); }
    catch (e) { console.log(JSON.stringify({ name: e.name, message: e.message })); }`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(r.signal, null, `${fn} did not finish within 10 s (a FIFO was opened?)`);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  assert.ok(out, `${fn} returned instead of refusing the FIFO`);
  return out;
}

function refuses(mod: string, fn: string, args: unknown[], name: string, path: string): void {
  const e = errorOf(mod, fn, args);
  assert.equal(e.name, name, e.message);
  assert.ok(e.message.startsWith(`${path}: `), e.message);
  assert.match(e.message, /is a FIFO \(named pipe\), not a regular file/);
}

test('config.json', () => {
  const dir = folder('config.json');
  refuses('io/config.js', 'readConfig', [join(dir, 'config.json')], 'ConfigError', join(dir, 'config.json'));
});

test('generation_config.json', () => {
  const dir = folder('generation_config.json');
  refuses('generate/config.js', 'readGenerationConfig', [dir], 'GenerationConfigError', join(dir, 'generation_config.json'));
});

test('tokenizer_config.json, special_tokens_map.json, chat_template.jinja and tokenizer.json', () => {
  for (const name of ['tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja', 'tokenizer.json']) {
    const dir = folder(name, name === 'tokenizer.json' ? {} : { 'tokenizer.json': '{}' });
    refuses('tokenizer/index.js', 'Tokenizer.fromDir', [dir], 'TokenizerError', join(dir, name));
  }
});

test('a chat template file', () => {
  const dir = folder('template.jinja');
  const e = errorOf('tokenizer/template.js', 'readChatTemplateFile', [join(dir, 'template.jinja')]);
  assert.equal(e.name, 'TokenizerError');
  assert.match(e.message, /template\.jinja: cannot read the chat template: is a FIFO/);
});

test('the shard index and the ref of a cached Hub snapshot', () => {
  const commit = 'a'.repeat(40);
  const repo = 'models--org--fifo';
  const snap = join(repo, 'snapshots', commit);
  let cache = folder(join(snap, 'model.safetensors.index.json'), {});
  writeFileSync(join(cache, snap, 'config.json'), '{}');
  mkdirSync(join(cache, repo, 'refs'));
  writeFileSync(join(cache, repo, 'refs', 'main'), commit);
  const index = join(cache, snap, 'model.safetensors.index.json');
  refuses('io/hub.js', 'resolveModelDir', ['org/fifo', { cacheDir: cache, offline: true }], 'CheckpointError', index);
  cache = folder(join(repo, 'refs', 'main'));
  refuses('io/hub.js', 'resolveModelDir', ['org/fifo', { cacheDir: cache, offline: true }], 'ModelNotFoundError', join(cache, repo, 'refs', 'main'));
});
