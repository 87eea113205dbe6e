// Checkpoint folders: clear errors for things at a weights path that are not files, reading without mmap, and the
// parts of the atomic save that need no killed process (leftover clean-up rules, the fallback without hard links).
// Killed writers are in test/atomic-save.test.ts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { Tensor } from '../src/tensor/tensor.js';
import { FileAccessError, SafetensorsError, readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { CheckpointError, loadStateDict, saveStateDict } from '../src/io/checkpoint.js';
import { setWarningHandler } from '../src/util/warn.js';

const root = fs.mkdtempSync(join(os.tmpdir(), 'lowbit-ckpt-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (): string => { const d = join(root, `d${dirCount++}`); fs.mkdirSync(d); return d; };

const tensors = (seed: number): Map<string, Tensor> => new Map(Array.from({ length: 4 }, (_, i) =>
  [`w${i}`, Tensor.f32([16], Array.from({ length: 16 }, (_, j) => seed * 100 + i * 16 + j))]));
const valuesOf = (m: Map<string, Tensor>): Record<string, number[]> =>
  Object.fromEntries([...m].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, t]) => [k, [...(t.data as Float32Array)]]));

/** Asserts `fn` throws `cls` whose message names `path` and matches `re`. */
function throwsNaming(fn: () => unknown, cls: new (...a: never[]) => Error, path: string, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
    assert.ok(e.message.includes(path), `"${e.message}" should name ${path}`);
    assert.match(e.message, re);
    return true;
  });
}

test('model.safetensors that is a folder, a symlink loop, a dangling symlink or a FIFO: typed errors naming it', () => {
  const dir = freshDir();
  const single = join(dir, 'model.safetensors');
  // A folder: was a raw EISDIR from readSync.
  fs.mkdirSync(single);
  throwsNaming(() => loadStateDict(dir), CheckpointError, single, /is a folder, not a safetensors file/);
  throwsNaming(() => readSafetensors(single), FileAccessError, single, /is a folder/);
  fs.rmdirSync(single);
  // A symlink loop: was "no model.safetensors … in this folder".
  fs.symlinkSync('model.safetensors', single);
  throwsNaming(() => loadStateDict(dir), CheckpointError, single, /symlink loop/);
  throwsNaming(() => readSafetensors(single), FileAccessError, single, /symlink loop/);
  fs.unlinkSync(single);
  // A dangling symlink (a Hub cache whose blob was deleted): was "no model.safetensors …".
  fs.symlinkSync(join('..', 'blobs', 'gone'), single);
  throwsNaming(() => loadStateDict(dir), CheckpointError, single, /dangling symlink: its target \.\.\/blobs\/gone does not exist/);
  // With an index beside it, the error says how to reach the sharded checkpoint instead of silently loading it.
  const other = freshDir();
  saveStateDict(other, tensors(1), { maxShardSize: 128 });
  for (const f of fs.readdirSync(other)) fs.copyFileSync(join(other, f), join(dir, f));
  throwsNaming(() => loadStateDict(dir), CheckpointError, single, /remove it to load the sharded checkpoint that model\.safetensors\.index\.json lists/);
  fs.unlinkSync(single);
  assert.deepEqual(valuesOf(loadStateDict(dir).tensors), valuesOf(tensors(1)));
  // A FIFO: was TruncatedFileError ("0 bytes"); opening it would block, so it must be refused before any open.
  const fifo = join(freshDir(), 'model.safetensors');
  const mk = spawnSync('mkfifo', [fifo]);
  if (mk.status === 0) {
    throwsNaming(() => readSafetensors(fifo), FileAccessError, fifo, /is a FIFO \(named pipe\), not a regular file/);
    throwsNaming(() => loadStateDict(join(fifo, '..')), CheckpointError, fifo, /FIFO/);
  }
});

test('a device file, an index that is a folder, a shard that is a folder, a folder that is a loop or a file', () => {
  // /dev/null was TruncatedFileError "file is 0 bytes".
  if (fs.existsSync('/dev/null')) throwsNaming(() => readSafetensors('/dev/null'), FileAccessError, '/dev/null', /character device/);
  const dir = freshDir();
  fs.mkdirSync(join(dir, 'model.safetensors.index.json'));
  // Was CheckpointError "not valid JSON: EISDIR …".
  throwsNaming(() => loadStateDict(dir), CheckpointError, join(dir, 'model.safetensors.index.json'), /is a folder, not an index file/);
  const sharded = freshDir();
  saveStateDict(sharded, tensors(1), { maxShardSize: 128 });
  const shard = join(sharded, 'model-00002-of-00002.safetensors');
  fs.unlinkSync(shard);
  fs.mkdirSync(shard);
  throwsNaming(() => loadStateDict(sharded), FileAccessError, shard, /is a folder/);
  const loop = join(root, `loop${dirCount++}`);
  fs.symlinkSync(loop, loop);
  // Was "folder does not exist".
  throwsNaming(() => loadStateDict(loop), CheckpointError, loop, /symlink loop/);
  throwsNaming(() => loadStateDict(join(dir, 'nothing-here')), CheckpointError, 'nothing-here', /folder does not exist/);
  const file = join(freshDir(), 'model.safetensors');
  writeSafetensors(file, tensors(1));
  throwsNaming(() => loadStateDict(file), CheckpointError, file, /is a file, not a checkpoint folder/);
  throwsNaming(() => saveStateDict(file, tensors(2)), CheckpointError, file, /is a file/);
  // Saving over a folder at model.safetensors is refused before anything is written.
  const blocked = freshDir();
  fs.mkdirSync(join(blocked, 'model.safetensors'));
  throwsNaming(() => saveStateDict(blocked, tensors(2)), CheckpointError, join(blocked, 'model.safetensors'), /is a folder; cannot save/);
  assert.deepEqual(fs.readdirSync(blocked), ['model.safetensors']);
});

test('an unreadable weights file, or one in an unreadable folder, is a FileAccessError', () => {
  const dir = freshDir();
  const path = join(dir, 'model.safetensors');
  writeSafetensors(path, tensors(1));
  fs.chmodSync(path, 0o000);
  const locked = join(freshDir(), 'locked');
  fs.mkdirSync(locked);
  writeSafetensors(join(locked, 'model.safetensors'), tensors(1));
  fs.chmodSync(locked, 0o000);
  // Root reads any file whatever its mode, so as root the reads run in a child process as the user "nobody".
  const asRoot = process.getuid?.() === 0;
  const attempt = (p: string, mmap: boolean): { name: string; message: string } => {
    if (!asRoot) {
      try { readSafetensors(p, { mmap }); return { name: 'none', message: '' }; } catch (e) { return { name: (e as Error).name, message: (e as Error).message }; }
    }
    fs.chmodSync(root, 0o755);
    fs.chmodSync(dir, 0o755);
    const mod = new URL('../src/io/safetensors.js', import.meta.url).href;
    const code = `import(${JSON.stringify(mod)}).then((m) => { try { m.readSafetensors(${JSON.stringify(p)}, { mmap: ${mmap} }); `
      + `console.log(JSON.stringify({ name: 'none', message: '' })); } catch (e) { console.log(JSON.stringify({ name: e.name, message: e.message })); } })`;
    const r = spawnSync(process.execPath, ['-e', code], { uid: 65534, gid: 65534, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  for (const mmap of [true, false]) {
    const e = attempt(path, mmap);
    assert.equal(e.name, 'FileAccessError', e.message);
    assert.ok(e.message.includes(path) && /cannot be opened: permission denied/.test(e.message), e.message);
  }
  const e = attempt(join(locked, 'model.safetensors'), false);
  assert.equal(e.name, 'FileAccessError', e.message);
  assert.match(e.message, /permission denied on a folder in its path/);
  fs.chmodSync(locked, 0o755);
});

test('mmap: false reads every byte at load: truncating the files afterwards changes nothing', () => {
  const dir = freshDir();
  const want = tensors(3);
  saveStateDict(dir, want, { maxShardSize: 128 });
  const sd = loadStateDict(dir, { mmap: false });
  assert.equal(sd.files.length, 2);
  for (const f of sd.files) {
    assert.equal(f.mapped, false, f.path);
    fs.truncateSync(f.path, 0); // with a mapping, touching these tensors now would raise SIGBUS
  }
  assert.deepEqual(valuesOf(sd.tensors), valuesOf(want));
  const single = join(freshDir(), 'w.safetensors');
  writeSafetensors(single, want);
  const f = readSafetensors(single, { mmap: false });
  fs.truncateSync(single, 8);
  assert.deepEqual(valuesOf(new Map(f.names().map((n) => [n, f.get(n)]))), valuesOf(want));
});

test('the next save removes temp and staged files of dead writers only, and nothing that is not ours', async () => {
  const dir = freshDir();
  saveStateDict(dir, tensors(1), { maxShardSize: 128 });
  const live = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  try {
    const tag = (pid: number) => `.tmp-${pid}-0123456789ab`;
    const files = {
      deadTemp: `model.safetensors${tag(dead)}`,
      deadIndexTemp: `model.safetensors.index.json${tag(dead)}`,
      deadStaged: `model-00001-of-00003${tag(dead)}.safetensors`,
      liveTemp: `model-00002-of-00002.safetensors${tag(live.pid!)}`,
      liveStaged: `model-00001-of-00002${tag(live.pid!)}.safetensors`,
      // A worker thread of this process tags its files with its thread id; it may be writing them now.
      ownWorkerTemp: `model.safetensors.tmp-${process.pid}-t7-0123456789ab`,
      orphanShard: 'model-00003-of-00005.safetensors',
      notOurs: ['config.json', 'model-00001-of-00002.safetensors.bak', 'model.tmp-1-0123456789ab', 'notes.tmp-1-0123456789ab.safetensors'],
    };
    for (const f of Object.values(files).flat()) fs.writeFileSync(join(dir, f), 'x');
    saveStateDict(dir, tensors(2), { maxShardSize: 128 });
    const now = new Set(fs.readdirSync(dir));
    for (const f of [files.deadTemp, files.deadIndexTemp, files.deadStaged, files.orphanShard]) assert.ok(!now.has(f), `${f} removed`);
    for (const f of [files.liveTemp, files.liveStaged, files.ownWorkerTemp, ...files.notOurs]) assert.ok(now.has(f), `${f} kept`);
    assert.deepEqual(valuesOf(loadStateDict(dir).tensors), valuesOf(tensors(2)));
    live.kill('SIGKILL');
    await new Promise((r) => live.on('close', r));
    saveStateDict(dir, tensors(3));
    assert.deepEqual(fs.readdirSync(dir).sort(), [files.ownWorkerTemp, ...files.notOurs, 'model.safetensors'].sort());
  } finally {
    live.kill('SIGKILL');
  }
});

test('temp and staged files tagged with our own pid that no save of ours holds are leftovers (pids repeat), and removed', () => {
  // An earlier process with this pid (a container restarted, pids reused) was killed mid-save.
  const dir = freshDir();
  saveStateDict(dir, tensors(1));
  const leftovers = [
    `model.safetensors.tmp-${process.pid}-0123456789ab`,
    `model.safetensors.index.json.tmp-${process.pid}-0123456789ab`,
    `model-00001-of-00002.tmp-${process.pid}-0123456789ab.safetensors`,
    `model-00002-of-00002.tmp-${process.pid}-0123456789ab.safetensors`,
  ];
  for (const f of leftovers) fs.writeFileSync(join(dir, f), 'x');
  const removed: string[] = [];
  saveStateDict(dir, tensors(2), { maxShardSize: 128, onStep: (step, f) => { if (step === 'remove-leftover') removed.push(f!); } });
  assert.deepEqual(removed.sort(), [...leftovers].sort());
  assert.deepEqual(fs.readdirSync(dir).sort(),
    ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
  assert.deepEqual(valuesOf(loadStateDict(dir).tensors), valuesOf(tensors(2)));
});

test('a save leaves alone the temp and staged files that a save in progress in this process holds', () => {
  // Concurrent saves to one folder are not supported, but one started from another's onStep must not take that
  // save's staged shards and temp index (our pid, held) for leftovers: the outer save then commits intact.
  const dir = freshDir();
  saveStateDict(dir, tensors(1));
  let held: string[] = [];
  saveStateDict(dir, tensors(2), {
    maxShardSize: 128,
    onStep: (step) => {
      if (step !== 'index-written' || held.length) return;
      held = fs.readdirSync(dir).filter((f) => f.includes(`.tmp-${process.pid}-`));
      saveStateDict(dir, tensors(3));
      assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.tmp-')).sort(), held.sort());
    },
  });
  assert.equal(held.length, 3, held.join(' '));   // two staged shards and the temp index
  assert.deepEqual(valuesOf(loadStateDict(dir).tensors), valuesOf(tensors(2)));
  assert.deepEqual(fs.readdirSync(dir).sort(),
    ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
});

test('when model.safetensors cannot be removed to commit a sharded save, the new index and staged shards are removed', () => {
  const dir = freshDir();
  saveStateDict(dir, tensors(1));
  const single = join(dir, 'model.safetensors');
  const bytes = fs.readFileSync(single);
  assert.throws(() => saveStateDict(dir, tensors(2), {
    maxShardSize: 128,
    onStep: (step) => {
      // A folder in its place cannot be unlinked (EISDIR), as a file on a read-only mount or an immutable file cannot.
      if (step === 'index-renamed') { fs.rmSync(single); fs.mkdirSync(single); fs.writeFileSync(join(single, 'keep'), 'x'); }
    },
  }), (e: unknown) => e instanceof CheckpointError && e.message.startsWith(`${single}: could not remove it`));
  assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
  // The folder is as before (with the original file put back).
  fs.rmSync(single, { recursive: true });
  fs.writeFileSync(single, bytes);
  assert.deepEqual(valuesOf(loadStateDict(dir).tensors), valuesOf(tensors(1)));
});

test('without a free standard name the shards keep their staged names, with a warning, and the folder loads', () => {
  const dir = freshDir();
  saveStateDict(dir, tensors(1));
  // A folder squatting on a shard's standard name stands in for a filesystem without hard links.
  fs.mkdirSync(join(dir, 'model-00002-of-00002.safetensors'));
  const warnings: string[] = [];
  const prev = setWarningHandler((m) => warnings.push(m), { reset: true });
  try {
    const res = saveStateDict(dir, tensors(2), { maxShardSize: 128 });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /could not be given their standard names/);
    assert.ok(res.files.every((f) => /model-0000\d-of-00002\.tmp-\d+-[0-9a-f]{12}\.safetensors$/.test(f)), res.files.join());
    const index = JSON.parse(fs.readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
    assert.deepEqual(new Set(Object.values(index.weight_map)), new Set(res.files.map((f) => f.split('/').pop())));
    assert.ok(!fs.existsSync(join(dir, 'model.safetensors')));
    assert.deepEqual(valuesOf(loadStateDict(dir).tensors), valuesOf(tensors(2)));
    // Once the name is free, the next save, even from this same process, ends with standard names only.
    fs.rmdirSync(join(dir, 'model-00002-of-00002.safetensors'));
    saveStateDict(dir, tensors(3), { maxShardSize: 128 });
    assert.deepEqual(fs.readdirSync(dir).sort(),
      ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
    assert.deepEqual(valuesOf(loadStateDict(dir).tensors), valuesOf(tensors(3)));
  } finally {
    setWarningHandler(prev);
  }
});

test('FileAccessError and CheckpointError are SafetensorsErrors', () => {
  assert.ok(new FileAccessError('f', 'x', 'EISDIR') instanceof SafetensorsError);
  assert.equal(new FileAccessError('f', 'x', 'EISDIR').code, 'EISDIR');
});
