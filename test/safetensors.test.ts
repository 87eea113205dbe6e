import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { DTYPES, DType } from '../src/tensor/dtype.js';
import { Tensor } from '../src/tensor/tensor.js';
import {
  DuplicateTensorError, HeaderTooLargeError, InvalidHeaderError, InvalidOffsetsError, SafetensorsError,
  SafetensorsWriteError, SizeMismatchError, TensorNotFoundError, TruncatedFileError, UnknownDtypeError,
  UnsupportedDtypeError, parseSafetensors, readSafetensors, serializeSafetensors, writeSafetensors,
} from '../src/io/safetensors.js';
import { CheckpointError, loadStateDict, parseSize, saveStateDict } from '../src/io/checkpoint.js';
import { PyJsonError, pyFloat, pyJsonDumps } from '../src/util/pyjson.js';

/** A Tensor whose data does not match its shape (the constructor refuses one): own properties over the prototype's getters. */
function forged(props: Record<string, unknown>): Tensor {
  return Object.defineProperties(Object.create(Tensor.prototype), Object.fromEntries(Object.entries(props).map(([k, value]) => [k, { value }]))) as Tensor;
}

const root = fs.mkdtempSync(join(os.tmpdir(), 'lowbit-st-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (): string => { const d = join(root, `d${dirCount++}`); fs.mkdirSync(d); return d; };

let seed = 12345;
const rand = (): number => { seed = (seed + 0x6d2b79f5) | 0; let t = Math.imul(seed ^ (seed >>> 15), 1 | seed); t ^= t + Math.imul(t ^ (t >>> 7), 61 | t); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };

function randomTensor(dtype: DType, shape: number[]): Tensor {
  const t = Tensor.zeros(dtype, shape);
  const b = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  for (let i = 0; i < b.length; i++) b[i] = (rand() * 256) | 0;
  if (dtype === 'BOOL') for (let i = 0; i < b.length; i++) b[i] &= 1;
  return t;
}

const bytesOf = (t: Tensor): Uint8Array => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);

function assertSameTensor(a: Tensor, b: Tensor, what: string): void {
  assert.equal(a.dtype, b.dtype, what);
  assert.deepEqual([...a.shape], [...b.shape], what);
  assert.deepEqual(bytesOf(a), bytesOf(b), what);
}

/** length prefix + header text (+ optional space padding to 8) + data */
function craft(header: string, data: Uint8Array | number = 0, n?: bigint): Buffer {
  const h = Buffer.from(header, 'utf8');
  const d = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = Buffer.alloc(8 + h.length + d.length);
  out.writeBigUInt64LE(n ?? BigInt(h.length), 0);
  h.copy(out, 8);
  out.set(d, 8 + h.length);
  return out;
}

test('round trip of every supported dtype, scalars and zero-size shapes, with and without mmap', () => {
  const dir = freshDir();
  const tensors = new Map<string, Tensor>();
  for (const dt of DTYPES) {
    tensors.set(`${dt}.matrix`, randomTensor(dt, [3, 5]));
    tensors.set(`${dt}.scalar`, randomTensor(dt, []));
    tensors.set(`${dt}.empty`, randomTensor(dt, [2, 0, 4]));
    tensors.set(`${dt}.vec`, randomTensor(dt, [7]));
  }
  const path = join(dir, 'all.safetensors');
  writeSafetensors(path, tensors, { format: 'pt', note: 'héllo "quoted"' });
  assert.deepEqual(fs.readFileSync(path), serializeSafetensors(tensors, { format: 'pt', note: 'héllo "quoted"' }));
  for (const mmap of [true, false]) {
    const f = readSafetensors(path, { mmap });
    assert.deepEqual(f.metadata, { format: 'pt', note: 'héllo "quoted"' });
    assert.deepEqual(new Set(f.names()), new Set(tensors.keys()));
    assert.equal(f.headerLength % 8, 0);
    for (const [name, t] of tensors) {
      const got = f.get(name);
      assertSameTensor(got, t, name);
      // Zero-copy: the view lives in the file buffer.
      assert.equal(got.data.buffer, f.buffer, name);
      assert.equal(got.data.byteOffset, f.dataOffset + f.entries.get(name)!.begin, name);
    }
    assert.equal(f.get('F32.scalar').numel, 1);
    assert.equal(f.get('I64.empty').data.length, 0);
    assert.ok(f.get('F32.matrix') === f.get('F32.matrix'));
  }
});

test('byte-exact against a hand-built file (dtype-descending order, ties by name, metadata first, padding)', () => {
  const c = new Tensor('I64', [], BigInt64Array.of(-5n));
  const a = new Tensor('F32', [1], Float32Array.of(3));
  const b = new Tensor('F32', [2], Float32Array.of(1, 2));
  const e = new Tensor('BF16', [1, 2], Uint16Array.of(0x3f80, 0xc000));
  const d = new Tensor('U8', [3], Uint8Array.of(7, 8, 9));
  const z = new Tensor('BOOL', [0], new Uint8Array(0));
  const json = '{"__metadata__":{"format":"pt"},'
    + '"c":{"dtype":"I64","shape":[],"data_offsets":[0,8]},'
    + '"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},'
    + '"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]},'
    + '"e":{"dtype":"BF16","shape":[1,2],"data_offsets":[20,24]},'
    + '"d":{"dtype":"U8","shape":[3],"data_offsets":[24,27]},'
    + '"z":{"dtype":"BOOL","shape":[0],"data_offsets":[27,27]}}';
  const padded = json + ' '.repeat((8 - (json.length % 8)) % 8);
  const data = Buffer.alloc(27);
  data.writeBigInt64LE(-5n, 0);
  data.writeFloatLE(3, 8); data.writeFloatLE(1, 12); data.writeFloatLE(2, 16);
  data.writeUInt16LE(0x3f80, 20); data.writeUInt16LE(0xc000, 22);
  data.set([7, 8, 9], 24);
  const expected = craft(padded, data);
  const input = { z, d, e, b, a, c };
  assert.deepEqual(serializeSafetensors(input, { format: 'pt' }), expected);
  const path = join(freshDir(), 'x.safetensors');
  writeSafetensors(path, new Map(Object.entries(input)), { format: 'pt' });
  assert.deepEqual(fs.readFileSync(path), expected);
});

test('matches the Rust crate golden output and orders names by code point (UTF-8 byte order)', () => {
  // safetensors/src/tensor.rs test_serialization
  const golden = Buffer.from([
    64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34,
    70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95,
    111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0,
    64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
  ]);
  assert.deepEqual(serializeSafetensors({ 'attn.0': Tensor.f32([1, 2, 3], [0, 1, 2, 3, 4, 5]) }), golden);
  const astral = '\u{1F600}', bmp = '\uE000';
  const buf = serializeSafetensors({ [astral]: Tensor.f32([1]), [bmp]: Tensor.f32([1]), 'a\n"': Tensor.f32([1]) });
  const header = buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString('utf8');
  assert.ok(header.startsWith('{"a\\n\\"":'), header);
  assert.ok(header.indexOf(bmp) < header.indexOf(astral), 'U+E000 sorts before U+1F600 as in Rust');
});

test('misaligned data offsets (non-standard writers) still read correctly via an aligned copy', () => {
  const json = '{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'; // 55 bytes: data starts at 63
  const data = Buffer.alloc(8); data.writeFloatLE(1.5, 0); data.writeFloatLE(-2, 4);
  const f = parseSafetensors(craft(json, data), 'mis.safetensors');
  assert.deepEqual([...f.get('x').f32], [1.5, -2]);
});

test('header whitespace: trailing JSON whitespace accepted, empty header object accepted', () => {
  const f = parseSafetensors(craft('{}\r \t\n'), 'ws.safetensors');
  assert.deepEqual(f.names(), []);
  assert.equal(f.metadata, null);
  const g = parseSafetensors(craft('{"__metadata__":null}'), 'm.safetensors');
  assert.equal(g.metadata, null);
});

test('each validation error is typed and names the file and tensor', () => {
  const dir = freshDir();
  const path = join(dir, 'model.safetensors');
  const ok = (name: string, extra = ''): string => `"${name}":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}${extra}`;
  type Case = [string, Buffer, new (...a: never[]) => SafetensorsError, string | undefined, string?];
  const cases: Case[] = [
    ['empty file', Buffer.alloc(0), TruncatedFileError, undefined, 'shorter than the 8-byte'],
    ['header past EOF', craft('{}', 0, 100n), TruncatedFileError, undefined, 'header length 100'],
    ['data past EOF', craft(`{${ok('w')}}`, 6), TruncatedFileError, 'w', 'file has only'],
    ['header > 100MB', craft('{}', 0, 100_000_001n), HeaderTooLargeError, undefined],
    ['header 2^63', craft('{}', 0, 2n ** 63n), HeaderTooLargeError, undefined],
    ['leading space', craft(' {}'), InvalidHeaderError, undefined, "start with '{'"],
    ['bad utf8', craft('{"ab":"c"}').fill(0xff, 10, 11), InvalidHeaderError, undefined, 'UTF-8'],
    ['bad json', craft('{"a":'), InvalidHeaderError, undefined, 'invalid JSON'],
    ['trailing junk', craft('{}x'), InvalidHeaderError, undefined, 'trailing'],
    ['top-level array', craft('[1]'), InvalidHeaderError, undefined],
    ['metadata value', craft('{"__metadata__":{"k":1}}'), InvalidHeaderError, undefined, '__metadata__["k"]'],
    ['nested metadata', craft('{"__metadata__":{"k":{"a":"b"}}}'), InvalidHeaderError, undefined],
    ['missing shape', craft('{"w":{"dtype":"F32","data_offsets":[0,0]}}'), InvalidHeaderError, 'w', 'no "shape"'],
    ['extra key', craft('{"w":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"x":1}}'), InvalidHeaderError, 'w', 'unexpected key'],
    ['float dim', craft('{"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', 8), InvalidHeaderError, 'w', 'number 2.0'],
    ['negative dim', craft('{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', 8), InvalidHeaderError, 'w'],
    ['string offset', craft('{"w":{"dtype":"F32","shape":[2],"data_offsets":["0",8]}}', 8), InvalidHeaderError, 'w'],
    ['3 offsets', craft('{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}', 8), InvalidHeaderError, 'w'],
    ['dim 2^53', craft('{"w":{"dtype":"F32","shape":[9007199254740992],"data_offsets":[0,8]}}', 8), InvalidHeaderError, 'w'],
    ['lone surrogate', craft('{"\\ud800":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'), InvalidHeaderError, undefined, 'surrogate'],
    ['dup key in entry', craft('{"w":{"dtype":"F32","dtype":"F32","shape":[0],"data_offsets":[0,0]}}'), InvalidHeaderError, undefined, 'duplicate'],
    ['deep nesting', craft('{"__metadata__":' + '['.repeat(5000) + ']'.repeat(5000) + '}'), InvalidHeaderError, undefined, 'nesting'],
    ['end < begin', craft('{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}', 8), InvalidOffsetsError, 'w'],
    ['hole', craft(`{${ok('a')},"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}`, 16), InvalidOffsetsError, 'b', 'hole'],
    ['overlap', craft(`{${ok('a')},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), InvalidOffsetsError, 'b', 'overlaps'],
    ['not from 0', craft('{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8), InvalidOffsetsError, 'w', 'begin at 0'],
    ['trailing bytes', craft(`{${ok('w')}}`, 9), InvalidOffsetsError, undefined, '1 bytes after'],
    ['size mismatch', craft('{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', 8), SizeMismatchError, 'w', 'needs 12'],
    ['overflow 2^64', craft('{"w":{"dtype":"I32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}', 16), SizeMismatchError, 'w'],
    ['F4 half byte', craft('{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', 2), SizeMismatchError, 'w', 'whole number of bytes'],
    ['duplicate', craft(`{${ok('a')},${ok('a')}}`, 8), DuplicateTensorError, 'a', 'more than once'],
    ['unknown dtype', craft('{"w":{"dtype":"F128","shape":[0],"data_offsets":[0,0]}}'), UnknownDtypeError, 'w', '"F128"'],
    ['dtype not string', craft('{"w":{"dtype":5,"shape":[0],"data_offsets":[0,0]}}'), InvalidHeaderError, 'w'],
  ];
  for (const [label, bytes, Cls, tensor, needle] of cases) {
    fs.writeFileSync(path, bytes);
    assert.throws(() => readSafetensors(path), (e: unknown) => {
      assert.ok(e instanceof Cls, `${label}: got ${(e as Error)?.name}: ${(e as Error)?.message}`);
      assert.ok(e instanceof SafetensorsError, label);
      assert.equal(e.file, path, label);
      assert.equal(e.tensor, tensor, label);
      assert.ok(e.message.startsWith(`${path}: `), `${label}: ${e.message}`);
      if (tensor !== undefined) assert.ok(e.message.includes(`tensor ${JSON.stringify(tensor)}`), `${label}: ${e.message}`);
      if (needle) assert.ok(e.message.includes(needle), `${label}: ${e.message}`);
      return true;
    }, label);
  }
  fs.writeFileSync(path, craft('{"model.layers.3.mlp.up_proj.weight":{"dtype":"F32","shape":[3,2],"data_offsets":[0,10]}}', 10));
  assert.throws(() => readSafetensors(path), {
    name: 'SizeMismatchError',
    message: `${path}: tensor "model.layers.3.mlp.up_proj.weight": data_offsets [0, 10] give 10 bytes but shape [3, 2] of F32 needs 24`,
  });
});

test('valid but unsupported dtypes parse; get() throws UnsupportedDtypeError, bytes() works', () => {
  const path = join(freshDir(), 'exotic.safetensors');
  const json = '{"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"u":{"dtype":"U32","shape":[1],"data_offsets":[8,12]},'
    + '"f8":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[12,14]},"f4":{"dtype":"F4","shape":[2,2],"data_offsets":[14,16]},'
    + '"f6":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[16,19]},"c":{"dtype":"C64","shape":[],"data_offsets":[19,27]}}';
  fs.writeFileSync(path, craft(json, Uint8Array.from({ length: 27 }, (_, i) => i)));
  const f = readSafetensors(path, { mmap: false });
  assert.deepEqual(f.names(), ['d', 'u', 'f8', 'f4', 'f6', 'c']);
  for (const [name, dtype] of [['d', 'F64'], ['u', 'U32'], ['f8', 'F8_E4M3'], ['f4', 'F4'], ['f6', 'F6_E2M3'], ['c', 'C64']]) {
    assert.throws(() => f.get(name), (e: unknown) => e instanceof UnsupportedDtypeError && e.tensor === name
      && e.message.includes(path) && e.message.includes(`"${name}"`) && e.message.includes(dtype));
  }
  assert.deepEqual([...f.bytes('f4')], [14, 15]);
  assert.throws(() => f.get('nope'), TensorNotFoundError);
});

test('atomic write: a failing write leaves the target intact and no temp files behind', () => {
  const dir = freshDir();
  const path = join(dir, 'model.safetensors');
  writeSafetensors(path, { w: Tensor.f32([2], [1, 2]) });
  const before = fs.readFileSync(path);
  // A tensor whose data does not match its shape (bypassing the Tensor constructor's own check).
  const bad = forged({ dtype: 'F32', shape: [4], data: new Float32Array(3), device: 'cpu' });
  assert.throws(() => writeSafetensors(path, { ok: Tensor.f32([1]), bad }),
    (e: unknown) => e instanceof SafetensorsWriteError && e.tensor === 'bad' && e.message.includes('needs 16'));
  assert.deepEqual(fs.readFileSync(path), before);
  assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
  // Failure after all bytes are written: renaming over a directory fails; the temp file must still go.
  const asDir = join(dir, 'occupied.safetensors');
  fs.mkdirSync(asDir);
  fs.writeFileSync(join(asDir, 'keep'), 'x');
  assert.throws(() => writeSafetensors(asDir, { w: Tensor.f32([2]) }), (e: unknown) => (e as NodeJS.ErrnoException).code !== undefined);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['model.safetensors', 'occupied.safetensors']);
  assert.deepEqual(fs.readdirSync(asDir), ['keep']);
  // Other refusals happen before any file is touched.
  assert.throws(() => writeSafetensors(path, { __metadata__: Tensor.f32([1]) }), SafetensorsWriteError);
  assert.throws(() => writeSafetensors(path, { ['\ud800']: Tensor.f32([1]) }), SafetensorsWriteError);
  assert.throws(() => writeSafetensors(path, { w: Tensor.f32([1]) }, { k: 5 as unknown as string }), SafetensorsWriteError);
  assert.deepEqual(fs.readFileSync(path), before);
  // Overwriting while the old file is open keeps the old views valid (rename, not truncate).
  const old = readSafetensors(path, { mmap: false });
  writeSafetensors(path, { w: Tensor.f32([2], [5, 6]) });
  assert.deepEqual([...old.get('w').f32], [1, 2]);
  assert.deepEqual([...readSafetensors(path).get('w').f32], [5, 6]);
});

test('sharded save/load: greedy split, exact index text, stale shard cleanup', () => {
  const dir = freshDir();
  const sd = new Map<string, Tensor>([
    ['model.embed.weight', randomTensor('F32', [10])], // 40
    ['model.a.weight', randomTensor('BF16', [20])], // 40 → 80 > 64: new shard
    ['model.big.weight', randomTensor('F32', [30])], // 120 > 64: own shard, emitted before the open one
    ['model.b.bias', randomTensor('I8', [8])], // 8 → 48
    ['lm_head.weight', randomTensor('F16', [16])], // 32 → 80: new shard
  ]);
  const res = saveStateDict(dir, sd, { maxShardSize: 64 });
  assert.equal(res.sharded, true);
  assert.equal(res.totalSize, 240);
  const shard = (i: number): string => `model-0000${i}-of-00004.safetensors`;
  const index = fs.readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8');
  assert.equal(index, `{
  "metadata": {
    "total_size": 240
  },
  "weight_map": {
    "lm_head.weight": "${shard(4)}",
    "model.a.weight": "${shard(3)}",
    "model.b.bias": "${shard(3)}",
    "model.big.weight": "${shard(2)}",
    "model.embed.weight": "${shard(1)}"
  }
}
`);
  assert.deepEqual(fs.readdirSync(dir).sort(), [shard(1), shard(2), shard(3), shard(4), 'model.safetensors.index.json']);
  for (let i = 1; i <= 4; i++) assert.deepEqual(readSafetensors(join(dir, shard(i))).metadata, { format: 'pt' });
  const loaded = loadStateDict(dir);
  assert.equal(loaded.files.length, 4);
  assert.deepEqual([...loaded.tensors.keys()].sort(), [...sd.keys()].sort());
  for (const [k, t] of sd) assertSameTensor(loaded.tensors.get(k)!, t, k);

  // Fewer shards: the old 4-shard files go, but only after the new ones exist.
  saveStateDict(dir, sd, { maxShardSize: '0.2KB' });
  assert.deepEqual(fs.readdirSync(dir).sort(),
    ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
  // A bad tensor in the last shard of a same-named re-save: nothing in the folder may change.
  const snapshot = (): Map<string, Buffer> => new Map(fs.readdirSync(dir).sort().map((f) => [f, fs.readFileSync(join(dir, f))]));
  const before = snapshot();
  const bad = forged({ dtype: 'F16', shape: [16], data: new Uint16Array(15), device: 'cpu' });
  assert.throws(() => saveStateDict(dir, new Map([...sd, ['lm_head.weight', bad]]), { maxShardSize: '0.2KB' }),
    (e: unknown) => e instanceof SafetensorsWriteError && e.tensor === 'lm_head.weight');
  assert.deepEqual(snapshot(), before);
  // Fits in one file: single model.safetensors, no index, metadata format=pt plus extras.
  const single = saveStateDict(dir, sd, { metadata: { extra: 'yes' } });
  assert.equal(single.sharded, false);
  assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
  const f = readSafetensors(join(dir, 'model.safetensors'));
  assert.deepEqual(f.metadata, { format: 'pt', extra: 'yes' });
  for (const [k, t] of sd) assertSameTensor(loadStateDict(dir).tensors.get(k)!, t, k);
});

test('checkpoint loading errors name the folder, file and tensor', () => {
  const dir = freshDir();
  assert.throws(() => loadStateDict(dir), (e: unknown) => e instanceof CheckpointError && e.message.includes(dir)
    && e.message.includes('model.safetensors.index.json'));
  fs.writeFileSync(join(dir, 'pytorch_model.bin'), 'pickle');
  assert.throws(() => loadStateDict(dir), /pytorch_model\.bin: PyTorch pickle checkpoints are not supported/);
  assert.throws(() => loadStateDict(join(dir, 'missing')), /does not exist/);

  saveStateDict(dir, { a: Tensor.f32([4]), b: Tensor.f32([4]) }, { maxShardSize: 16 });
  const indexPath = join(dir, 'model.safetensors.index.json');
  const index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  index.weight_map.ghost = 'model-00001-of-00002.safetensors';
  fs.writeFileSync(indexPath, JSON.stringify(index));
  assert.throws(() => loadStateDict(dir), (e: unknown) => e instanceof CheckpointError && e.tensor === 'ghost'
    && e.message.includes('model-00001-of-00002.safetensors') && e.message.includes(indexPath));
  index.weight_map.ghost = 'model-00009-of-00009.safetensors';
  fs.writeFileSync(indexPath, JSON.stringify(index));
  assert.throws(() => loadStateDict(dir), /tensor "ghost": weight_map points to model-00009-of-00009\.safetensors, which is missing/);
  index.weight_map.ghost = '../outside.safetensors';
  fs.writeFileSync(indexPath, JSON.stringify(index));
  assert.throws(() => loadStateDict(dir), /same folder/);
  fs.writeFileSync(indexPath, '{"weight_map": [');
  assert.throws(() => loadStateDict(dir), CheckpointError);
});

test('parseSize uses decimal units like huggingface_hub', () => {
  assert.equal(parseSize('5GB'), 5e9);
  assert.equal(parseSize(' 1.5mb '), 1_500_000);
  assert.equal(parseSize('10KB'), 10_000);
  assert.equal(parseSize('2TB'), 2e12);
  assert.equal(parseSize(1234), 1234);
  for (const bad of ['5GiB', 'GB', '5', '-1GB', 'xGB']) assert.throws(() => parseSize(bad), RangeError, bad);
});

test('pyJsonDumps reproduces Python json.dumps', () => {
  assert.equal(pyJsonDumps({ a: 1, b: [1, 2.5, pyFloat(6)], c: null, d: true }), '{"a": 1, "b": [1, 2.5, 6.0], "c": null, "d": true}');
  const floats = [1e-5, 1e-6, 1e16, 1e15, 0.0001, 1 / 3, 1e22, 1.5e-7, 123456789012345678, -0, NaN, Infinity, -Infinity,
    10000, 5e-324, 1.7976931348623157e308, 0.1 + 0.2].map(pyFloat);
  assert.equal(pyJsonDumps(floats), '[1e-05, 1e-06, 1e+16, 1000000000000000.0, 0.0001, 0.3333333333333333, 1e+22, '
    + '1.5e-07, 1.2345678901234568e+17, -0.0, NaN, Infinity, -Infinity, 10000.0, 5e-324, 1.7976931348623157e+308, '
    + '0.30000000000000004]');
  assert.equal(pyJsonDumps([1e21, 2n ** 64n, -5]), '[1000000000000000000000, 18446744073709551616, -5]');
  assert.equal(pyJsonDumps(['é', '😀', '\x7f', '\x01', '\n\t"\\/', '\u2028']),
    '["\\u00e9", "\\ud83d\\ude00", "\\u007f", "\\u0001", "\\n\\t\\"\\\\/", "\\u2028"]');
  assert.equal(pyJsonDumps(['é😀\x7f\x01'], { ensureAscii: false }), '["é😀\x7f\\u0001"]');
  assert.equal(pyJsonDumps({ b: {}, a: [], c: [1, { x: 1 }] }, { indent: 2, sortKeys: true }),
    '{\n  "a": [],\n  "b": {},\n  "c": [\n    1,\n    {\n      "x": 1\n    }\n  ]\n}');
  assert.equal(pyJsonDumps({ a: 1, b: [2] }, { indent: 0 }), '{\n"a": 1,\n"b": [\n2\n]\n}');
  assert.equal(pyJsonDumps({ '\u{1F600}': 1, '\uE000': 2, z: 3 }, { sortKeys: true }), '{"z": 3, "\\ue000": 2, "\\ud83d\\ude00": 1}');
  assert.equal(pyJsonDumps(new Map([['2', 1], ['1', 2]])), '{"2": 1, "1": 2}');
  assert.equal(pyJsonDumps({ a: undefined, b: 1 }), '{"b": 1}');
  const cyc: unknown[] = []; cyc.push(cyc);
  assert.throws(() => pyJsonDumps(cyc), PyJsonError);
  assert.throws(() => pyJsonDumps(new Date()), PyJsonError);
});
