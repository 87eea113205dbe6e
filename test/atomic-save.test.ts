// A save replaces the checkpoint in a folder as one unit. A real writer process (test/fixtures/save-writer.ts) saves
// and is killed with SIGKILL at save steps (it sends SIGKILL to itself from saveStateDict's onStep hook, so the kill
// lands exactly there) or at random moments; the folder must then load as exactly the old or the new checkpoint,
// and the next save must leave only the standard files. The folders live on /dev/shm where present: SIGKILL does
// not lose page-cache writes, so fsync is not under test and tmpfs only makes each writer faster.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Tensor } from '../src/tensor/tensor.js';
import { loadStateDict, saveStateDict } from '../src/io/checkpoint.js';
import { checkpointTensors } from './fixtures/save-writer.js';

const WRITER = fileURLToPath(new URL('./fixtures/save-writer.js', import.meta.url));
const base = fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir();
const root = fs.mkdtempSync(join(base, 'lowbit-atomic-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (): string => join(root, `d${dirCount++}`);

const ELEMS = 1000; // 4,000 bytes per tensor, 8 tensors
const SINGLE = 1e9;
const SHARDS: Record<number, number> = { 2: 16_000, 3: 12_000, 4: 8_000 }; // shard count → maxShardSize

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

function runWriter(args: (string | number)[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [WRITER, ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('error', reject);
    // 'close' comes after the process is reaped, so its pid no longer counts as a running writer.
    p.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Runs `jobs` two at a time (the CI machine has two cores). */
async function pool<T>(jobs: (() => Promise<T>)[], width = 2): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < jobs.length) { const i = next++; out[i] = await jobs[i](); }
  }));
  return out;
}

const sameBytes = (a: Tensor, b: Tensor): boolean =>
  a.dtype === b.dtype && a.shape.join() === b.shape.join()
  && Buffer.compare(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength), Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength)) === 0;

/** Which of the seeds' checkpoints `dir` holds. Fails on a mix, and when the folder does not load. */
function whichCheckpoint(dir: string, seeds: number[], what: string): number {
  let got: Map<string, Tensor>;
  try {
    got = loadStateDict(dir, { mmap: false }).tensors;
  } catch (e) {
    throw new Error(`${what}: the folder does not load: ${(e as Error).message}\n${fs.readdirSync(dir).sort().join('\n')}`);
  }
  for (const seed of seeds) {
    const want = checkpointTensors(seed, ELEMS);
    if (got.size === want.size && [...want].every(([k, t]) => got.has(k) && sameBytes(got.get(k)!, t))) return seed;
  }
  const from = [...got].map(([k, t]) => `${k}=seed ${Math.floor((t.data as Float32Array)[0] / 1000)}`);
  throw new Error(`${what}: the folder loads as a mix of checkpoints: ${from.join(', ')}`);
}

/** The standard files of a finished save, and nothing else of ours. */
function standardFiles(shards: number): string[] {
  if (shards === 1) return ['model.safetensors'];
  const n = String(shards).padStart(5, '0');
  return [...Array.from({ length: shards }, (_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${n}.safetensors`), 'model.safetensors.index.json'];
}

interface Scenario {
  name: string;
  /** Builds the starting folder (an old checkpoint, perhaps with leftovers of an interrupted save). */
  prepare: (dir: string) => Promise<void>;
  /** The checkpoint the starting folder loads as. */
  oldSeed: number;
  newSeed: number;
  newShards: number;
}

const saveIn = (dir: string, seed: number, shards: number): void => {
  saveStateDict(dir, checkpointTensors(seed, ELEMS), { maxShardSize: shards === 1 ? SINGLE : SHARDS[shards] });
};
const maxFor = (shards: number): number => (shards === 1 ? SINGLE : SHARDS[shards]);

/**
 * The kill points of a scenario, one per kind of folder state: the first `write` (a partial file), the first and
 * last `written` (one / all new files complete), the first and last of the index steps, `committed`, and the last
 * of each per-file tidy-up step (all but one file removed, linked, unlinked). The middle occurrences leave folders of
 * the same shape, and each kill costs a Node start-up.
 */
function killPoints(steps: string[]): number[] {
  const pick = new Set<number>();
  for (const k of ['write', 'written', 'index-written', 'index-renamed', 'committed']) if (steps.includes(k)) pick.add(steps.indexOf(k));
  for (const k of ['written', 'index-written', 'index-renamed', 'remove-leftover', 'remove-old', 'linked', 'unlink-staged']) {
    if (steps.includes(k)) pick.add(steps.lastIndexOf(k));
  }
  return [...pick].sort((a, b) => a - b);
}

async function sweep(s: Scenario): Promise<void> {
  const template = freshDir();
  fs.mkdirSync(template);
  await s.prepare(template);
  assert.equal(whichCheckpoint(template, [s.newSeed, s.oldSeed], `${s.name}: start`), s.oldSeed);
  // A run in this process lists the steps; the same starting folder gives the same steps in the writer process.
  const probe = freshDir();
  fs.cpSync(template, probe, { recursive: true });
  const steps: string[] = [];
  saveStateDict(probe, checkpointTensors(s.newSeed, ELEMS), { maxShardSize: maxFor(s.newShards), onStep: (step) => steps.push(step) });
  const commitAt = steps.indexOf('committed');
  assert.ok(commitAt > 0, `${s.name}: ${steps.join(' ')}`);
  assert.deepEqual(fs.readdirSync(probe).sort(), standardFiles(s.newShards));
  const points = killPoints(steps);
  const results = await pool(points.map((k) => async () => {
    const dir = freshDir();
    fs.cpSync(template, dir, { recursive: true });
    const r = await runWriter(['step', dir, s.newSeed, ELEMS, maxFor(s.newShards), k]);
    return { k, dir, r };
  }));
  for (const { k, dir, r } of results) {
    const what = `${s.name}: killed at step ${k} (${steps[k]}, after ${steps.slice(0, k).join(' ') || 'nothing'})`;
    assert.equal(r.signal, 'SIGKILL', `${what}: ${r.stderr}`);
    assert.equal(whichCheckpoint(dir, [s.newSeed, s.oldSeed], what), k >= commitAt ? s.newSeed : s.oldSeed, what);
    // The next save removes every leftover of the killed one.
    saveIn(dir, 77, 3);
    assert.deepEqual(fs.readdirSync(dir).sort(), standardFiles(3), what);
    assert.equal(whichCheckpoint(dir, [77], `${what}, then saved again`), 77);
  }
}

const scenarios: Scenario[] = [
  { name: 'sharded 4 → sharded 4 (same shard names)', prepare: async (d) => saveIn(d, 1, 4), oldSeed: 1, newSeed: 2, newShards: 4 },
  { name: 'sharded 4 → sharded 2', prepare: async (d) => saveIn(d, 1, 4), oldSeed: 1, newSeed: 2, newShards: 2 },
  { name: 'single → sharded 3', prepare: async (d) => saveIn(d, 1, 1), oldSeed: 1, newSeed: 2, newShards: 3 },
  { name: 'sharded 3 → single', prepare: async (d) => saveIn(d, 1, 3), oldSeed: 1, newSeed: 2, newShards: 1 },
  { name: 'single → single', prepare: async (d) => saveIn(d, 1, 1), oldSeed: 1, newSeed: 2, newShards: 1 },
  {
    // Leftovers of two killed saves: one killed mid-shard (a partial staged file and a temp index of a dead
    // writer), one killed after its commit while its shards still had staged names (the index names them).
    name: 'interrupted saves → sharded 4',
    prepare: async (d) => {
      saveIn(d, 1, 4);
      let r = await runWriter(['step', d, 6, ELEMS, maxFor(4), 'committed@1']);
      assert.equal(r.signal, 'SIGKILL', r.stderr);
      r = await runWriter(['step', d, 5, ELEMS, maxFor(2), 'write@2']);
      assert.equal(r.signal, 'SIGKILL', r.stderr);
      const names = fs.readdirSync(d);
      assert.ok(names.some((f) => /^model-00002-of-00002\.tmp-\d+-[0-9a-f]{12}\.safetensors$/.test(f)), names.join(' '));
      assert.equal(names.filter((f) => /^model-0000\d-of-00004\.tmp-\d+-[0-9a-f]{12}\.safetensors$/.test(f)).length, 4, names.join(' '));
      assert.match(fs.readFileSync(join(d, 'model.safetensors.index.json'), 'utf8'), /of-00004\.tmp-/);
    },
    oldSeed: 6, newSeed: 2, newShards: 4,
  },
];

for (const s of scenarios) test(`SIGKILL at every save step: ${s.name} loads as old or new`, () => sweep(s));

test('SIGKILL at random moments of a writer that alternates three layouts: never a mix, and the next save tidies up', async (t) => {
  // Large enough that a save takes a while, so the kills land inside writes as well as between steps.
  const elems = 100_000;
  const bytes = 4 * elems; // one tensor
  const specs = [[2 * bytes, 11], [SINGLE, 12], [3 * bytes, 13]]; // 4 shards, one file, 3 shards
  const seeds = specs.map(([, s]) => s);
  const bigCheckpoint = (dir: string): number => {
    const got = loadStateDict(dir, { mmap: false }).tensors;
    for (const seed of seeds) {
      const want = checkpointTensors(seed, elems);
      if (got.size === want.size && [...want].every(([k, t]) => got.has(k) && sameBytes(got.get(k)!, t))) return seed;
    }
    throw new Error(`a mix of checkpoints in ${dir}: ${fs.readdirSync(dir).join(' ')}`);
  };
  const dir = freshDir();
  saveStateDict(dir, checkpointTensors(11, elems), { maxShardSize: specs[0][0] });
  const standard = new Set([...standardFiles(1), ...standardFiles(3), ...standardFiles(4)]);
  const writers: number[] = [];
  let leftovers = 0;
  for (let round = 0; round < 4; round++) {
    const p = spawn(process.execPath, [WRITER, 'loop', dir, String(elems), ...specs.map(([m, s]) => `${m}:${s}`)], { stdio: ['ignore', 'pipe', 'inherit'] });
    writers.push(p.pid!);
    await new Promise<void>((resolve) => p.stdout.once('data', () => resolve()));
    await new Promise((r) => setTimeout(r, 15 + round * 40));
    const closed = new Promise<NodeJS.Signals | null>((resolve) => p.on('close', (_c, sig) => resolve(sig)));
    p.kill('SIGKILL');
    assert.equal(await closed, 'SIGKILL');
    bigCheckpoint(dir);
    // Whatever a kill leaves besides the standard names is a temp or staged file of one of the killed writers.
    for (const f of fs.readdirSync(dir).filter((f) => !standard.has(f))) {
      const m = /^model(?:\.safetensors(?:\.index\.json)?|-\d{5}-of-\d{5}(?:\.safetensors)?)\.tmp-(\d+)-[0-9a-f]{12}(?:\.safetensors)?$/.exec(f);
      assert.ok(m && writers.includes(Number(m[1])), `${f} is not a temp or staged file of a killed writer`);
      leftovers++;
    }
  }
  t.diagnostic(`${leftovers} leftover files over 4 kills`);
  saveStateDict(dir, checkpointTensors(11, elems), { maxShardSize: specs[0][0] });
  assert.deepEqual(fs.readdirSync(dir).sort(), standardFiles(4));
  assert.equal(bigCheckpoint(dir), 11);
});
