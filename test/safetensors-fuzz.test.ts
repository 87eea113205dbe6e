// Mutation fuzzing of the safetensors reader: every input must either parse into a self-consistent file whose
// tensors all lie inside the buffer, or throw a SafetensorsError. Anything else (RangeError, TypeError, a hang) is a
// bug. Deterministic: a fixed seed per run; a failure prints the case index and mutation to reproduce it.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { DTYPES, DType } from '../src/tensor/dtype.js';
import { Tensor } from '../src/tensor/tensor.js';
import {
  DTYPE_BITS, SAFETENSORS_DTYPES, SafetensorsError, SafetensorsFile, UnsupportedDtypeError, parseSafetensors,
  readSafetensors, serializeSafetensors,
} from '../src/io/safetensors.js';

const CASES = 20000;
const ON_DISK_EVERY = 50; // every 50th case also goes through readSafetensors on a real file (mmap and read)
const SEED = 0x5eed1234;

function mulberry32(a: number): () => number {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = mulberry32(SEED);
const int = (n: number): number => Math.floor(rnd() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];

const root = fs.mkdtempSync(join(os.tmpdir(), 'lowbit-fuzz-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

function frame(header: string, data: Uint8Array, pad: boolean): Uint8Array {
  let h = Buffer.from(header, 'utf8');
  if (pad && h.length % 8) h = Buffer.concat([h, Buffer.alloc(8 - (h.length % 8), 0x20)]);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** A valid file from our writer, or a hand-laid one with exotic dtypes and an unpadded (misaligned) header. */
function baseFile(): { bytes: Uint8Array; header: Record<string, unknown>; data: Uint8Array } {
  const header: Record<string, unknown> = {};
  const exotic = rnd() < 0.3;
  const count = int(6);
  if (!exotic) {
    const tensors = new Map<string, Tensor>();
    for (let i = 0; i < count; i++) {
      const dt = pick(DTYPES) as DType;
      const shape = Array.from({ length: int(4) }, () => int(4));
      const t = Tensor.zeros(dt, shape);
      const b = new Uint8Array(t.data.buffer);
      for (let j = 0; j < b.length; j++) b[j] = int(256);
      tensors.set(pick(['w', 'bias', 'model.layers.0.q_proj.weight', 'é', '😀', 'x"y', '']) + i, t);
    }
    const bytes = new Uint8Array(serializeSafetensors(tensors, rnd() < 0.5 ? { format: 'pt' } : undefined));
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const json = JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8'));
    return { bytes, header: json, data: bytes.slice(8 + n) };
  }
  let off = 0;
  for (let i = 0; i < count; i++) {
    const dt = pick(SAFETENSORS_DTYPES);
    const shape = Array.from({ length: int(3) }, () => int(5));
    let numel = shape.reduce((a, b) => a * b, 1);
    if ((numel * DTYPE_BITS[dt]) % 8) { shape.push(2); numel *= 2; }
    if ((numel * DTYPE_BITS[dt]) % 8) { shape.push(4); numel *= 4; }
    const size = (numel * DTYPE_BITS[dt]) / 8;
    header[`t${i}`] = { dtype: dt, shape, data_offsets: [off, off + size] };
    off += size;
  }
  if (rnd() < 0.5) header.__metadata__ = { format: 'pt', k: 'v' };
  const data = Uint8Array.from({ length: off }, () => int(256));
  return { bytes: frame(JSON.stringify(header), data, rnd() < 0.5), header, data };
}

const HUGE = [2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 2 ** 64, 1e308];
const WEIRD: unknown[] = [-1, -0.0, 1.5, 1.0, 1e3, 'str', null, true, [], {}, [1, 2], { a: 'b' }, 2 ** 60, -(2 ** 63)];

type Mutator = (b: ReturnType<typeof baseFile>) => Uint8Array;

const jsonEdits: ((h: Record<string, unknown>, names: string[]) => string | void)[] = [
  (h, names) => { // swap offsets of two tensors
    if (names.length < 2) return;
    const a = h[pick(names)] as { data_offsets: unknown }, b = h[pick(names)] as { data_offsets: unknown };
    [a.data_offsets, b.data_offsets] = [b.data_offsets, a.data_offsets];
  },
  (h, names) => { if (names.length) (h[pick(names)] as { data_offsets: unknown[] }).data_offsets[int(2)] = pick(WEIRD); },
  (h, names) => { if (names.length) (h[pick(names)] as { shape: unknown[] }).shape.push(pick(WEIRD)); },
  (h, names) => { if (names.length) (h[pick(names)] as { shape: unknown[] }).shape = [pick(HUGE), pick(HUGE), int(3)]; },
  (h, names) => { if (names.length) (h[pick(names)] as { shape: unknown[] }).shape.reverse(); },
  (h, names) => { if (names.length) (h[pick(names)] as { dtype: unknown }).dtype = pick([...SAFETENSORS_DTYPES, 'F128', 'f32', '', 7]); },
  (h, names) => { if (names.length) delete (h[pick(names)] as Record<string, unknown>)[pick(['dtype', 'shape', 'data_offsets'])]; },
  (h, names) => { if (names.length) (h[pick(names)] as Record<string, unknown>).extra = 1; },
  (h, names) => { if (names.length) delete h[pick(names)]; },
  (h, names) => { if (names.length) h[pick(names)] = pick(WEIRD); },
  (h) => { h.__metadata__ = pick([{ a: { b: 'c' } }, { a: 1 }, 'x', [], null, { '': '' }, { a: 'b', c: 'd' }]); },
  (h, names) => { if (names.length) (h[pick(names)] as { data_offsets: unknown }).data_offsets = [pick(HUGE), pick(HUGE)]; },
  (h, names) => { // duplicate a key textually; JSON.parse would hide this
    if (!names.length) return;
    const name = pick(names);
    const text = JSON.stringify(h);
    const entry = `${JSON.stringify(name)}:${JSON.stringify(h[name])}`;
    return text.replace(entry, `${entry},${entry}`);
  },
  (h) => { // duplicate key inside an entry
    const text = JSON.stringify(h);
    return text.replace('"dtype":', '"dtype":"F32","dtype":');
  },
  (h) => '{"__metadata__":' + '['.repeat(1 + int(3000)) + ']'.repeat(int(3000)) + '}' + (rnd() < 0.5 ? '' : JSON.stringify(h)),
  (h) => { const t = JSON.stringify(h); const at = int(t.length + 1); return t.slice(0, at) + pick(['\\ud800', '\\u', '"', ',', '}', '{', ']', '-', '01', '1e999', '\u0000', ' ', 'null']) + t.slice(at); },
  (h) => { const t = JSON.stringify(h); return t.slice(0, int(t.length + 1)); },
  (h) => ' ' + JSON.stringify(h),
  (h) => JSON.stringify(h) + pick(['\n', ' \t', 'x', ',{}']),
];

const mutators: [string, Mutator][] = [
  ['valid', (b) => b.bytes],
  ['byte flips', (b) => {
    const out = b.bytes.slice();
    const n = Number(new DataView(out.buffer).getBigUint64(0, true));
    const span = Math.max(1, Math.min(n, out.length - 8));
    for (let k = 1 + int(8); k > 0; k--) out[8 + int(span)] = rnd() < 0.5 ? int(256) : pick([0x22, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x5c, 0x30, 0x39, 0x2d, 0x80, 0xff]);
    return out;
  }],
  ['length field', (b) => {
    const out = b.bytes.slice();
    const dv = new DataView(out.buffer);
    const n = dv.getBigUint64(0, true);
    const v = pick([0n, 1n, 2n, n - 1n, n + 1n, n - 8n, n + 8n, BigInt(out.length - 8), BigInt(out.length - 7), 100_000_000n,
      100_000_001n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 32n, BigInt(int(2 ** 32))]);
    dv.setBigUint64(0, v < 0n ? 0n : v, true);
    return out;
  }],
  ['truncate', (b) => b.bytes.slice(0, int(b.bytes.length + 1))],
  ['extend', (b) => { const out = new Uint8Array(b.bytes.length + 1 + int(16)); out.set(b.bytes); return out; }],
  ['json edit', (b) => {
    const h = structuredClone(b.header);
    const names = Object.keys(h).filter((k) => k !== '__metadata__');
    const edit = pick(jsonEdits);
    const text = edit(h, names) ?? JSON.stringify(h);
    let data = b.data;
    if (rnd() < 0.2) data = data.slice(0, int(data.length + 1));
    return frame(text, data, rnd() < 0.5);
  }],
];

/** Checks a successful parse independently of the parser's own bookkeeping. */
function checkConsistent(f: SafetensorsFile, bytes: Uint8Array): number {
  let expected = 0;
  let sum = 0;
  for (const [name, e] of f.entries) {
    assert.equal(e.begin, expected, `${name} contiguous`);
    assert.ok(e.end >= e.begin);
    let numel = 1n;
    for (const d of e.shape) { assert.ok(Number.isSafeInteger(d) && d >= 0); numel *= BigInt(d); }
    assert.equal(numel * BigInt(DTYPE_BITS[e.dtype]), BigInt(e.end - e.begin) * 8n);
    expected = e.end;
    const raw = f.bytes(name);
    assert.ok(raw.byteOffset >= f.dataOffset && raw.byteOffset + raw.length <= bytes.byteLength, `${name} inside buffer`);
    for (let i = 0; i < raw.length; i++) sum += raw[i];
    if ((DTYPES as readonly string[]).includes(e.dtype)) {
      const t = f.get(name);
      assert.equal(t.data.byteLength, e.end - e.begin);
      if (t.data.buffer === f.buffer) {
        assert.equal(t.data.byteOffset, f.dataOffset + e.begin);
        assert.ok(t.data.byteOffset + t.data.byteLength <= f.buffer.byteLength);
      }
      const tb = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      assert.deepEqual(tb, raw);
    } else {
      assert.throws(() => f.get(name), UnsupportedDtypeError);
    }
  }
  assert.equal(f.dataOffset + expected, bytes.byteLength, 'file fully covered');
  return sum;
}

function attempt(bytes: Uint8Array, label: string, parse: () => SafetensorsFile): 'ok' | string {
  let f: SafetensorsFile;
  try {
    f = parse();
  } catch (e) {
    if (!(e instanceof SafetensorsError)) {
      assert.fail(`${label}: threw ${(e as Error)?.name ?? typeof e} instead of a SafetensorsError: ${(e as Error)?.message}`);
    }
    assert.ok(e.message.length > 0 && e.file !== undefined, label);
    return e.name;
  }
  checkConsistent(f, bytes);
  return 'ok';
}

test(`fuzz: ${CASES} mutated files parse consistently or throw SafetensorsError`, (t) => {
  const t0 = performance.now();
  const outcomes = new Map<string, number>();
  let slowest = 0;
  for (let i = 0; i < CASES; i++) {
    const base = baseFile();
    const [kind, mutate] = pick(mutators);
    const bytes = mutate(base);
    const label = `case ${i} (${kind}, seed ${SEED})`;
    const c0 = performance.now();
    const name = `fuzz-${i}.safetensors`;
    const r = attempt(bytes, label, () => parseSafetensors(bytes, name));
    if (kind === 'valid') assert.equal(r, 'ok', `${label}: an unmutated file must parse`);
    slowest = Math.max(slowest, performance.now() - c0);
    outcomes.set(`${kind}: ${r}`, (outcomes.get(`${kind}: ${r}`) ?? 0) + 1);
    if (i % ON_DISK_EVERY === 0) {
      const path = join(root, name);
      fs.writeFileSync(path, bytes);
      for (const mmap of [true, false]) {
        const r2 = attempt(bytes, `${label} on disk mmap=${mmap}`, () => readSafetensors(path, { mmap }));
        assert.equal(r2, r, `${label}: file and buffer parses disagree`);
      }
      fs.rmSync(path);
    }
  }
  const ms = performance.now() - t0;
  const summary = [...outcomes].sort().map(([k, v]) => `  ${k}: ${v}`).join('\n');
  t.diagnostic(`${CASES} fuzz cases in ${ms.toFixed(0)} ms (slowest case ${slowest.toFixed(1)} ms)`);
  for (const line of summary.split('\n')) t.diagnostic(line);
  assert.ok(ms < 20_000, `fuzzing took ${ms} ms`);
  // The mutators must actually reach both outcomes, or the fuzzer is testing nothing.
  assert.ok([...outcomes.keys()].some((k) => k.endsWith(': ok') && !k.startsWith('valid')));
  assert.ok([...outcomes.keys()].filter((k) => !k.endsWith(': ok')).length >= 8);
});
