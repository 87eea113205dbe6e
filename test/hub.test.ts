// Hub ids resolve through the standard HF cache layout; missing files download through @huggingface/hub. No test
// touches the network: the cache is built here, and downloads go to a fake Hub served by an injected fetch.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { fromPretrained } from '../src/api.js';
import { CheckpointError } from '../src/io/checkpoint.js';
import { HubError, ModelNotFoundError, resolveModelDir } from '../src/io/hub.js';
import { setWarningHandler } from '../src/util/warn.js';
import { GOLDEN_DIR } from './helpers.js';

const SRC = join(GOLDEN_DIR, 'llama_gqa');
const COMMIT = 'a'.repeat(40);
const FILES = ['config.json', 'generation_config.json', 'model.safetensors'];

function makeCache(): string {
  const cache = mkdtempSync(join(tmpdir(), 'lowbit-hub-'));
  const repo = join(cache, 'models--tiny-org--tiny-llama');
  mkdirSync(join(repo, 'refs'), { recursive: true });
  mkdirSync(join(repo, 'blobs'));
  mkdirSync(join(repo, 'snapshots', COMMIT), { recursive: true });
  writeFileSync(join(repo, 'refs', 'main'), COMMIT);
  for (const f of FILES) {
    // Like huggingface_hub: content in blobs/<hash>, a relative symlink in snapshots/<commit>/.
    const bytes = readFileSync(join(SRC, f));
    const hash = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(join(repo, 'blobs', hash), bytes);
    symlinkSync(join('..', '..', 'blobs', hash), join(repo, 'snapshots', COMMIT, f));
  }
  return cache;
}

test('a Hub id resolves to its cached snapshot through refs/main, offline, and loads', async () => {
  const cache = makeCache();
  try {
    const dir = await resolveModelDir('tiny-org/tiny-llama', { cacheDir: cache, offline: true });
    assert.equal(dir, join(cache, 'models--tiny-org--tiny-llama', 'snapshots', COMMIT));
    const byCommit = await resolveModelDir('tiny-org/tiny-llama', { cacheDir: cache, offline: true, revision: COMMIT });
    assert.equal(byCommit, dir);
    const { model, config } = await fromPretrained('tiny-org/tiny-llama', { cacheDir: cache, offline: true, backend: 'ref' });
    assert.equal(config.model_type, 'llama');
    assert.equal(model.forward([[5, 6, 7]]).shape.join(','), `1,3,${config.vocab_size}`);
  } finally { rmSync(cache, { recursive: true, force: true }); }
});

test('HF_HUB_OFFLINE=1 and HF_HUB_CACHE are honoured; a missing model names the id, revision and cache', async () => {
  const cache = makeCache();
  const saved = { ...process.env };
  try {
    process.env.HF_HUB_CACHE = cache;
    process.env.HF_HUB_OFFLINE = '1';
    assert.ok((await resolveModelDir('tiny-org/tiny-llama')).endsWith(COMMIT));
    await assert.rejects(resolveModelDir('tiny-org/absent'), (e: Error) => e instanceof ModelNotFoundError && /tiny-org\/absent@main/.test(e.message) && e.message.includes(cache) && /HF_HUB_OFFLINE/.test(e.message));
    await assert.rejects(resolveModelDir('tiny-org/tiny-llama', { revision: 'dev' }), /tiny-llama@dev/);
    rmSync(join(cache, 'models--tiny-org--tiny-llama', 'snapshots', COMMIT, 'model.safetensors'));
    await assert.rejects(resolveModelDir('tiny-org/tiny-llama'), /missing model\.safetensors/);
    await assert.rejects(resolveModelDir('not a path or id'), /not a Hub id/);
  } finally {
    process.env = saved;
    rmSync(cache, { recursive: true, force: true });
  }
});

/**
 * A fake Hub: the revision, tree, paths-info and resolve endpoints that @huggingface/hub calls, over a local folder,
 * at revision main (= COMMIT) or COMMIT itself. Each file reports a different lastCommit, as on the real Hub where
 * the last commit that changed a file is rarely the head of the branch.
 */
function fakeHub(srcDir: string, files: string[], seen: string[]): typeof fetch {
  const oid = (f: string) => createHash('sha1').update(readFileSync(join(srcDir, f))).digest('hex');
  const entry = (f: string) => ({ type: 'file', path: f, size: statSync(join(srcDir, f)).size, oid: oid(f), lastCommit: { id: createHash('sha1').update(`commit of ${f}`).digest('hex'), date: '2026-01-01T00:00:00Z', title: 'init' } });
  const rev = `(?:main|${COMMIT})`;
  return (async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
    seen.push(`${init?.method ?? 'GET'} ${url.pathname}`);
    const auth = new Headers(init?.headers).get('authorization');
    if (auth !== 'Bearer hf_test') return new Response('unauthorized', { status: 401 });
    if (new RegExp(`^/api/models/org/remote/revision/${rev}$`).test(url.pathname)) return Response.json({ _id: 'x', id: 'org/remote', sha: COMMIT });
    if (new RegExp(`^/api/models/org/remote/tree/${rev}$`).test(url.pathname)) return Response.json(files.map(entry));
    if (new RegExp(`^/api/models/org/remote/paths-info/${rev}$`).test(url.pathname)) {
      const body = JSON.parse(String(init?.body));
      return Response.json((body.paths as string[]).map(entry));
    }
    const m = url.pathname.match(new RegExp(`^/org/remote/resolve/${rev}/(.+)$`));
    if (m && files.includes(m[1])) {
      const bytes = readFileSync(join(srcDir, m[1]));
      const range = new Headers(init?.headers).get('range')?.match(/bytes=(\d+)-(\d*)/);
      const start = range ? Number(range[1]) : 0, end = range && range[2] ? Number(range[2]) + 1 : bytes.length;
      return new Response(bytes.subarray(start, end), {
        status: range ? 206 : 200,
        headers: { etag: `"${oid(m[1])}"`, 'content-range': `bytes ${start}-${end - 1}/${bytes.length}`, 'content-length': String(end - start) },
      });
    }
    return new Response('not found', { status: 404, headers: { 'X-Error-Code': 'EntryNotFound' } });
  }) as typeof fetch;
}

test('missing files download into one snapshot folder of the pinned commit (blobs + snapshot links + refs), with progress and HF_TOKEN', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'lowbit-hub-'));
  const saved = { ...process.env };
  try {
    process.env.HF_TOKEN = 'hf_test';
    delete process.env.HF_HUB_OFFLINE;
    const seen: string[] = [];
    const progress: number[] = [];
    const remote = join(cache, 'remote-repo');
    mkdirSync(remote);
    for (const f of FILES) cpSync(join(SRC, f), join(remote, f));
    writeFileSync(join(remote, 'README.md'), '# a model card the loader does not need\n');
    const dir = await resolveModelDir('org/remote', {
      cacheDir: cache, fetch: fakeHub(remote, [...FILES, 'README.md'], seen),
      onProgress: (p) => { assert.equal(p.task, 'download'); assert.equal(p.unit, 'bytes'); assert.ok(p.item && FILES.includes(p.item), p.item); progress.push(p.done); },
    });
    assert.equal(dir, join(cache, 'models--org--remote', 'snapshots', COMMIT));
    for (const f of FILES) {
      assert.deepEqual(readFileSync(join(dir, f)), readFileSync(join(SRC, f)), f);
      assert.ok(readlinkSync(join(dir, f)).includes('blobs'), `${f} is a link into blobs/`);
    }
    assert.ok(!existsSync(join(dir, 'README.md')), 'only the files a model needs are fetched');
    assert.equal(readFileSync(join(cache, 'models--org--remote', 'refs', 'main'), 'utf8'), COMMIT);
    assert.ok(!readdirSync(join(cache, 'models--org--remote', 'blobs')).some((b) => b.endsWith('.incomplete')));
    assert.ok(progress.length > 0 && progress.at(-1)! > 0, 'download progress was reported');
    // Offline afterwards: the cache alone serves it.
    assert.equal(await resolveModelDir('org/remote', { cacheDir: cache, offline: true }), dir);
  } finally {
    process.env = saved;
    rmSync(cache, { recursive: true, force: true });
  }
});

test('configOnly fetches config.json alone (what plan needs), not the weights', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'lowbit-hub-'));
  try {
    const remote = join(cache, 'remote-repo');
    mkdirSync(remote);
    for (const f of FILES) cpSync(join(SRC, f), join(remote, f));
    const seen: string[] = [];
    const saved = process.env.HF_TOKEN;
    process.env.HF_TOKEN = 'hf_test';
    try {
      const dir = await resolveModelDir('org/remote', { cacheDir: cache, offline: false, configOnly: true, fetch: fakeHub(remote, FILES, seen) });
      assert.deepEqual(readdirSync(dir), ['config.json']);
      assert.ok(!seen.some((s) => s.includes('model.safetensors')), seen.join('\n'));
    } finally {
      if (saved === undefined) delete process.env.HF_TOKEN; else process.env.HF_TOKEN = saved;
    }
  } finally { rmSync(cache, { recursive: true, force: true }); }
});

test('a relative path on disk wins over the same Hub id, and a broken link there is a local error, never a Hub id', async () => {
  const cache = makeCache();
  const work = mkdtempSync(join(tmpdir(), 'lowbit-cwd-'));
  const cwd = process.cwd();
  try {
    process.chdir(work);
    mkdirSync(join('tiny-org', 'tiny-llama'), { recursive: true });
    for (const f of FILES) cpSync(join(SRC, f), join('tiny-org', 'tiny-llama', f));
    const seen: string[] = [];
    const noHub = (async (input: Parameters<typeof fetch>[0]) => { seen.push(String(input)); throw new TypeError('fetch failed'); }) as typeof fetch;
    assert.equal(await resolveModelDir('tiny-org/tiny-llama', { cacheDir: cache, offline: false, fetch: noHub }), 'tiny-org/tiny-llama');
    // A dangling symlink (a moved model folder) was taken for a Hub id and sent to the network.
    symlinkSync(join(work, 'moved-away'), join('tiny-org', 'gone'));
    await assert.rejects(resolveModelDir('tiny-org/gone', { cacheDir: cache, offline: false, fetch: noHub }),
      (e: Error) => e instanceof ModelNotFoundError && /tiny-org\/gone: is a dangling symlink/.test(e.message));
    assert.deepEqual(seen, []);
    await assert.rejects(resolveModelDir('models/no such dir', { cacheDir: cache }),
      (e: Error) => e instanceof ModelNotFoundError && e.message.includes(`resolved against the current directory, ${work}`));
  } finally {
    process.chdir(cwd);
    rmSync(work, { recursive: true, force: true });
    rmSync(cache, { recursive: true, force: true });
  }
});

test('Hub failures (network down, 404, 401) are HubErrors that name the id and say what to try', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'lowbit-hub-'));
  const saved = { ...process.env };
  try {
    delete process.env.HF_HUB_OFFLINE;
    delete process.env.HF_TOKEN;
    const advice = (e: Error): boolean => e instanceof HubError && e instanceof ModelNotFoundError
      && e.message.includes(`a relative path is resolved against ${process.cwd()}`) && e.message.includes('HF_HUB_OFFLINE=1')
      && e.message.includes(cache) && /network connection and HF_TOKEN/.test(e.message);
    const down = (async () => { throw new TypeError('fetch failed', { cause: Object.assign(new Error('getaddrinfo ENOTFOUND huggingface.co'), { code: 'ENOTFOUND' }) }); }) as typeof fetch;
    await assert.rejects(resolveModelDir('org/remote', { cacheDir: cache, fetch: down }), (e: Error) => {
      assert.ok(advice(e), e.message);
      assert.match(e.message, /^org\/remote@main: the Hugging Face Hub could not be reached \(fetch failed: ENOTFOUND\)/);
      assert.equal((e as HubError).status, undefined);
      assert.equal((e as HubError).id, 'org/remote');
      return true;
    });
    const remote = join(cache, 'remote-repo');
    mkdirSync(remote);
    for (const f of FILES) cpSync(join(SRC, f), join(remote, f));
    const hub = fakeHub(remote, FILES, []);
    // No token: the fake Hub answers 401, as the real one does for private, gated and missing repositories.
    await assert.rejects(resolveModelDir('org/remote', { cacheDir: cache, fetch: hub }), (e: Error) => {
      assert.ok(advice(e), e.message);
      assert.equal((e as HubError).status, 401);
      assert.match(e.message, /refused access \(HTTP 401[^)]*\)\. A private or gated model needs HF_TOKEN/);
      return true;
    });
    await assert.rejects(resolveModelDir('org/absent', { cacheDir: cache, fetch: hub, token: 'hf_test' }), (e: Error) => {
      assert.ok(advice(e), e.message);
      assert.equal((e as HubError).status, 404);
      assert.match(e.message, /^org\/absent@main: the Hugging Face Hub has no repository org\/absent with a revision main \(HTTP 404/);
      return true;
    });
  } finally {
    process.env = saved;
    rmSync(cache, { recursive: true, force: true });
  }
});

test('online, a cached snapshot without tokenizer.json gets the tokenizer files the repository has, at the same commit', async () => {
  const cache = makeCache();
  const saved = { ...process.env };
  try {
    delete process.env.HF_HUB_OFFLINE;
    // The remote repository is published under the cached id's name in the fake Hub, which serves org/remote.
    const repo = join(cache, 'models--tiny-org--tiny-llama');
    cpSync(repo, join(cache, 'models--org--remote'), { recursive: true, verbatimSymlinks: true });
    const remote = join(cache, 'remote-repo');
    mkdirSync(remote);
    for (const f of FILES) cpSync(join(SRC, f), join(remote, f));
    writeFileSync(join(remote, 'tokenizer.json'), '{"version": "1.0"}\n');
    writeFileSync(join(remote, 'tokenizer_config.json'), '{}\n');
    const seen: string[] = [];
    const files = [...FILES, 'tokenizer.json', 'tokenizer_config.json'];
    const dir = await resolveModelDir('org/remote', { cacheDir: cache, fetch: fakeHub(remote, files, seen), token: 'hf_test' });
    assert.equal(dir, join(cache, 'models--org--remote', 'snapshots', COMMIT));
    assert.equal(readFileSync(join(dir, 'tokenizer.json'), 'utf8'), '{"version": "1.0"}\n');
    assert.ok(existsSync(join(dir, 'tokenizer_config.json')));
    assert.ok(seen.every((s) => !s.includes('/main')), `pinned to the cached commit: ${seen.join(', ')}`);
    assert.ok(!seen.some((s) => s.includes('model.safetensors')), 'cached weights are not fetched again');
    // Complete now: no Hub call at all.
    seen.length = 0;
    assert.equal(await resolveModelDir('org/remote', { cacheDir: cache, fetch: fakeHub(remote, files, seen), token: 'hf_test' }), dir);
    assert.deepEqual(seen, []);
    // With the Hub unreachable, a snapshot without a tokenizer still loads from the cache, with a warning.
    rmSync(join(dir, 'tokenizer.json'));
    const warnings: string[] = [];
    const prev = setWarningHandler((m) => warnings.push(m), { reset: true });
    try {
      const down = (async () => { throw new TypeError('fetch failed'); }) as typeof fetch;
      assert.equal(await resolveModelDir('org/remote', { cacheDir: cache, fetch: down }), dir);
    } finally { setWarningHandler(prev); }
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /no tokenizer\.json and the Hub could not be asked for one \(fetch failed\); using the cached copy/);
  } finally {
    process.env = saved;
    rmSync(cache, { recursive: true, force: true });
  }
});

/** A cached org/remote snapshot (the fake Hub's name) with config and weights but no tokenizer files. */
function cacheWithoutTokenizer(): { cache: string; snap: string; marker: string } {
  const cache = makeCache();
  cpSync(join(cache, 'models--tiny-org--tiny-llama'), join(cache, 'models--org--remote'), { recursive: true, verbatimSymlinks: true });
  const repo = join(cache, 'models--org--remote');
  return { cache, snap: join(repo, 'snapshots', COMMIT), marker: join(repo, '.no_exist', COMMIT, 'tokenizer.json') };
}

test('a repository without tokenizer.json is asked once: a .no_exist marker (huggingface_hub\'s layout) answers later loads', async () => {
  const { cache, snap, marker } = cacheWithoutTokenizer();
  const saved = { ...process.env };
  const warnings: string[] = [];
  const prev = setWarningHandler((m) => warnings.push(m), { reset: true });
  try {
    delete process.env.HF_HUB_OFFLINE;
    const remote = join(cache, 'remote-repo');
    mkdirSync(remote);
    for (const f of FILES) cpSync(join(SRC, f), join(remote, f));
    const seen: string[] = [];
    assert.equal(await resolveModelDir('org/remote', { cacheDir: cache, fetch: fakeHub(remote, FILES, seen), token: 'hf_test' }), snap);
    assert.ok(seen.length > 0, 'the Hub was asked');
    assert.equal(readFileSync(marker, 'utf8'), '');
    seen.length = 0;
    assert.equal(await resolveModelDir('org/remote', { cacheDir: cache, fetch: fakeHub(remote, FILES, seen), token: 'hf_test' }), snap);
    assert.deepEqual(seen, []);
    assert.deepEqual(warnings, [], 'a repository that has no tokenizer.json is no failure');
  } finally {
    setWarningHandler(prev);
    process.env = saved;
    rmSync(cache, { recursive: true, force: true });
  }
});

test('a Hub that never answers: completing a cached snapshot gives up after completionTimeoutMs, warns once, and is not retried', async () => {
  const { cache, snap, marker } = cacheWithoutTokenizer();
  const saved = { ...process.env };
  const warnings: string[] = [];
  const prev = setWarningHandler((m) => warnings.push(m), { reset: true });
  try {
    delete process.env.HF_HUB_OFFLINE;
    let calls = 0;
    // Ignores the abort signal too: the load must not depend on the fetch giving up.
    const silent = (() => { calls++; return new Promise<Response>(() => {}); }) as typeof fetch;
    const t0 = performance.now();
    assert.equal(await resolveModelDir('org/remote', { cacheDir: cache, fetch: silent, completionTimeoutMs: 150 }), snap);
    const ms = performance.now() - t0;
    assert.ok(ms >= 140 && ms < 5000, `gave up after ${ms.toFixed(0)} ms`);
    assert.equal(calls, 1);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /no tokenizer\.json and the Hub could not be asked for one \(the Hub did not answer within 150 ms\); using the cached copy/);
    assert.ok(warnings[0].includes(`remove ${marker} to retry`), warnings[0]);
    assert.ok(existsSync(marker));
    assert.equal(await resolveModelDir('org/remote', { cacheDir: cache, fetch: silent, completionTimeoutMs: 150 }), snap);
    assert.equal(calls, 1, 'no request after the marker');
    rmSync(marker);
    await assert.rejects(resolveModelDir('org/remote', { cacheDir: cache, fetch: silent, completionTimeoutMs: 0 }),
      (e: Error) => e instanceof TypeError && /completionTimeoutMs must be a number > 0, got 0/.test(e.message));
    assert.equal(calls, 1);
  } finally {
    setWarningHandler(prev);
    process.env = saved;
    rmSync(cache, { recursive: true, force: true });
  }
});

test('a cached index whose weight_map names something other than a file beside it is a CheckpointError naming the index', async () => {
  const cache = makeCache();
  try {
    const snap = join(cache, 'models--tiny-org--tiny-llama', 'snapshots', COMMIT);
    rmSync(join(snap, 'model.safetensors'));
    const index = join(snap, 'model.safetensors.index.json');
    for (const shard of [5, null, '../../elsewhere.safetensors']) {
      writeFileSync(index, JSON.stringify({ weight_map: { 'model.embed_tokens.weight': shard } }));
      await assert.rejects(resolveModelDir('tiny-org/tiny-llama', { cacheDir: cache, offline: true }),
        (e: Error) => e instanceof CheckpointError && e.message.startsWith(`${index}: `) && /weight_map entry must be a file name/.test(e.message));
    }
  } finally { rmSync(cache, { recursive: true, force: true }); }
});

test('an AutoGPTQ repository (gptq_model-4bit-32g.safetensors, quantize_config.json, no model.safetensors) downloads and loads', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'lowbit-hub-'));
  const saved = { ...process.env };
  try {
    process.env.HF_TOKEN = 'hf_test';
    delete process.env.HF_HUB_OFFLINE;
    const src = join(GOLDEN_DIR, '..', 'gptq', 'autogptq_4bit_g32_actorder');
    const files = readdirSync(src);
    assert.deepEqual(files.sort(), ['config.json', 'gptq_model-4bit-32g.safetensors', 'quantize_config.json']);
    const seen: string[] = [];
    const dir = await resolveModelDir('org/remote', { cacheDir: cache, fetch: fakeHub(src, files, seen) });
    assert.deepEqual(readdirSync(dir).sort(), files);
    assert.equal((await fromPretrained(dir, { backend: 'ref' })).model.linears().size, 8);
    // Offline afterwards, the snapshot counts as complete.
    assert.equal(await resolveModelDir('org/remote', { cacheDir: cache, offline: true }), dir);
  } finally {
    process.env = saved;
    rmSync(cache, { recursive: true, force: true });
  }
});
