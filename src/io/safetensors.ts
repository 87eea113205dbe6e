// safetensors reader/writer (../shared/spec/FORMATS.md §1). Reading validates as strictly as the Rust reference
// (safetensors/src/tensor.rs) and hands out zero-copy views over one buffer (an mmap, or a single read of the
// whole file). Writing reproduces the Rust/Python writer byte for byte and replaces the target atomically.
import * as fs from 'node:fs';
import { DTYPES, DType, DTYPE_BYTES, viewAs } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { loadAddon } from '../native/addon.js';
import { compareCodePoints } from '../util/pyjson.js';
import { commitTemp, MAX_IO_CHUNK, probePath, writeFileTemp } from '../util/fs.js';

/**
 * Every dtype of the Rust `enum Dtype`, in declaration order. The writer orders tensors by this rank (descending),
 * so the order is part of the byte format.
 */
export const SAFETENSORS_DTYPES = [
  'BOOL', 'F4', 'F6_E2M3', 'F6_E3M2', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'F8_E4M3FNUZ', 'F8_E5M2FNUZ',
  'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'C64', 'F64', 'I64', 'U64',
] as const;
export type SafetensorsDtype = (typeof SAFETENSORS_DTYPES)[number];

export const DTYPE_BITS: Record<SafetensorsDtype, number> = {
  BOOL: 8, F4: 4, F6_E2M3: 6, F6_E3M2: 6, U8: 8, I8: 8, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8, F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8, I16: 16, U16: 16, F16: 16, BF16: 16, I32: 32, U32: 32, F32: 32, C64: 64, F64: 64, I64: 64, U64: 64,
};

const DTYPE_RANK = new Map<string, number>(SAFETENSORS_DTYPES.map((d, i) => [d, i]));
const SUPPORTED = new Set<string>(DTYPES);
const MAX_HEADER_SIZE = 100_000_000;
// serde_json's recursion limit; also keeps a hostile `[[[[…` header from overflowing our stack.
const MAX_DEPTH = 128;

// ---- errors ----

function quoteName(name: string): string {
  const q = JSON.stringify(name);
  return q.length > 300 ? q.slice(0, 280) + '…"' : q;
}

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
  constructor(readonly file: string, detail: string, readonly tensor?: string) {
    super(`${file}: ${tensor !== undefined ? `tensor ${quoteName(tensor)}: ` : ''}${detail}`);
  }
}
export class TruncatedFileError extends SafetensorsError { override name = 'TruncatedFileError'; }
export class HeaderTooLargeError extends SafetensorsError { override name = 'HeaderTooLargeError'; }
export class InvalidHeaderError extends SafetensorsError { override name = 'InvalidHeaderError'; }
export class InvalidOffsetsError extends SafetensorsError { override name = 'InvalidOffsetsError'; }
export class SizeMismatchError extends SafetensorsError { override name = 'SizeMismatchError'; }
export class DuplicateTensorError extends SafetensorsError { override name = 'DuplicateTensorError'; }
export class UnknownDtypeError extends SafetensorsError { override name = 'UnknownDtypeError'; }
/** A valid safetensors dtype that lowbit has no Tensor type for (F64, U32, F8_*, …). */
export class UnsupportedDtypeError extends SafetensorsError { override name = 'UnsupportedDtypeError'; }
export class TensorNotFoundError extends SafetensorsError { override name = 'TensorNotFoundError'; }
/**
 * The path cannot be opened as a file: missing, a folder, a FIFO or device, a dangling symlink, a symlink loop, or
 * no permission. `code` is the errno name behind it (ENOENT, EISDIR, ELOOP, EACCES, …).
 */
export class FileAccessError extends SafetensorsError {
  override name = 'FileAccessError';
  constructor(file: string, detail: string, readonly code?: string) { super(file, detail); }
}
/** Refusing to write: bad input tensors/metadata. Thrown before any file is created. */
export class SafetensorsWriteError extends SafetensorsError { override name = 'SafetensorsWriteError'; }

// ---- a strict JSON parser for the header ----
// JSON.parse cannot be used: it keeps the last of duplicate keys silently, turns `1.0`/`1e3` into integers that
// serde would reject for usize fields, rounds integers above 2^53, and accepts lone-surrogate escapes that serde
// rejects (and that could not be written back as UTF-8).

const SIMPLE_ESCAPES: Record<string, string> = {
  '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t',
};

class JNum { constructor(readonly raw: string) {} }
type JVal = null | boolean | string | JNum | JVal[] | Map<string, JVal>;

class HeaderParser {
  private i = 0;
  constructor(private readonly s: string, private readonly file: string) {}

  private fail(msg: string): never {
    throw new InvalidHeaderError(this.file, `invalid JSON in header at character ${this.i}: ${msg}`);
  }

  private ws(): void {
    const s = this.s;
    let i = this.i;
    for (; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    }
    this.i = i;
  }

  parseDocument(): Map<string, JVal> {
    const top = this.value(0);
    this.ws();
    if (this.i !== this.s.length) this.fail('trailing characters after the JSON object');
    return top as Map<string, JVal>;
  }

  private value(depth: number): JVal {
    if (depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH}`);
    this.ws();
    const c = this.s.charCodeAt(this.i);
    if (c === 0x7b) return this.object(depth);
    if (c === 0x5b) return this.array(depth);
    if (c === 0x22) return this.string();
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (this.s.startsWith(word, this.i)) { this.i += word.length; return v; }
    }
    this.fail(Number.isNaN(c) ? 'unexpected end of header' : `unexpected character ${JSON.stringify(this.s[this.i])}`);
  }

  private object(depth: number): Map<string, JVal> {
    const m = new Map<string, JVal>();
    this.i++;
    this.ws();
    if (this.s.charCodeAt(this.i) === 0x7d) { this.i++; return m; }
    for (;;) {
      this.ws();
      if (this.s.charCodeAt(this.i) !== 0x22) this.fail('expected a string key');
      const keyAt = this.i;
      const key = this.string();
      if (m.has(key)) {
        if (depth === 0) {
          throw new DuplicateTensorError(this.file, `appears more than once in the header (again at character ${keyAt})`, key);
        }
        this.i = keyAt;
        this.fail(`duplicate key ${quoteName(key)}`);
      }
      this.ws();
      if (this.s.charCodeAt(this.i) !== 0x3a) this.fail("expected ':'");
      this.i++;
      m.set(key, this.value(depth + 1));
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 0x7d) return m;
      if (c !== 0x2c) { this.i--; this.fail("expected ',' or '}'"); }
    }
  }

  private array(depth: number): JVal[] {
    const a: JVal[] = [];
    this.i++;
    this.ws();
    if (this.s.charCodeAt(this.i) === 0x5d) { this.i++; return a; }
    for (;;) {
      a.push(this.value(depth + 1));
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 0x5d) return a;
      if (c !== 0x2c) { this.i--; this.fail("expected ',' or ']'"); }
    }
  }

  private hex4(at: number): number {
    const h = this.s.slice(at, at + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) { this.i = at; this.fail('bad \\u escape'); }
    return parseInt(h, 16);
  }

  private string(): string {
    const s = this.s;
    let i = this.i + 1;
    let out = '';
    let run = i;
    for (;;) {
      if (i >= s.length) { this.i = i; this.fail('unterminated string'); }
      const c = s.charCodeAt(i);
      if (c === 0x22) break;
      if (c < 0x20) { this.i = i; this.fail('control character in string'); }
      if (c !== 0x5c) { i++; continue; }
      out += s.slice(run, i);
      const e = s[i + 1];
      const simple = e === undefined ? undefined : SIMPLE_ESCAPES[e];
      if (simple !== undefined) { out += simple; i += 2; }
      else if (e === 'u') {
        const u = this.hex4(i + 2);
        i += 6;
        if (u >= 0xdc00 && u <= 0xdfff) { this.i = i - 6; this.fail('lone surrogate in \\u escape'); }
        if (u >= 0xd800 && u <= 0xdbff) {
          if (s[i] !== '\\' || s[i + 1] !== 'u') { this.i = i - 6; this.fail('lone surrogate in \\u escape'); }
          const lo = this.hex4(i + 2);
          if (lo < 0xdc00 || lo > 0xdfff) { this.i = i - 6; this.fail('lone surrogate in \\u escape'); }
          out += String.fromCharCode(u, lo);
          i += 6;
        } else {
          out += String.fromCharCode(u);
        }
      } else { this.i = i; this.fail('bad escape in string'); }
      run = i;
    }
    out += s.slice(run, i);
    this.i = i + 1;
    return out;
  }

  private number(): JNum {
    const m = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
    m.lastIndex = this.i;
    const r = m.exec(this.s);
    if (!r) this.fail('malformed number');
    this.i += r[0].length;
    return new JNum(r[0]);
  }
}

// ---- reading ----

export interface TensorEntry {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte offsets relative to the start of the data section (`dataOffset` in the file). */
  begin: number;
  end: number;
}

export interface SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string> | null;
  /** In data order (ascending offsets). */
  readonly entries: Map<string, TensorEntry>;
  /** N from the length prefix; the data section starts at 8 + N. */
  readonly headerLength: number;
  readonly dataOffset: number;
  /** The whole file. When `mapped`, it is a read-only mapping: never write through views of it. */
  readonly buffer: ArrayBuffer;
  readonly mapped: boolean;
  names(): string[];
  has(name: string): boolean;
  get(name: string): Tensor;
  /** The raw bytes of a tensor, for any dtype (zero-copy). */
  bytes(name: string): Uint8Array;
}

const UINT_RE = /^(?:0|[1-9][0-9]*)$/;

function describe(v: JVal): string {
  if (v === null) return 'null';
  if (v instanceof JNum) return `number ${v.raw}`;
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Map) return 'an object';
  return typeof v === 'string' ? `string ${quoteName(v)}` : `boolean ${v}`;
}

function uintOf(v: JVal): number | undefined {
  if (!(v instanceof JNum) || !UINT_RE.test(v.raw)) return undefined;
  const n = Number(v.raw);
  return Number.isSafeInteger(n) ? n : undefined;
}

function parseEntry(file: string, name: string, v: JVal): TensorEntry {
  const bad = (msg: string): never => { throw new InvalidHeaderError(file, msg, name); };
  if (!(v instanceof Map)) bad(`entry must be an object, got ${describe(v)}`);
  const m = v as Map<string, JVal>;
  for (const k of m.keys()) {
    if (k !== 'dtype' && k !== 'shape' && k !== 'data_offsets') bad(`unexpected key ${quoteName(k)} in entry`);
  }
  for (const k of ['dtype', 'shape', 'data_offsets']) if (!m.has(k)) bad(`entry has no "${k}"`);
  const dt = m.get('dtype')!;
  if (typeof dt !== 'string') bad(`dtype must be a string, got ${describe(dt)}`);
  if (!DTYPE_RANK.has(dt as string)) {
    throw new UnknownDtypeError(file, `unknown dtype ${quoteName(dt as string)}`, name);
  }
  const dtype = dt as SafetensorsDtype;
  const sh = m.get('shape')!;
  if (!Array.isArray(sh)) bad(`shape must be an array, got ${describe(sh)}`);
  const shape = (sh as JVal[]).map((d) => {
    const n = uintOf(d);
    return n === undefined ? bad(`shape entries must be integers in [0, 2^53), got ${describe(d)}`) : n;
  });
  const off = m.get('data_offsets')!;
  if (!Array.isArray(off) || off.length !== 2) bad(`data_offsets must be an array of two integers, got ${describe(off)}`);
  const [begin, end] = (off as JVal[]).map((d) => {
    const n = uintOf(d);
    return n === undefined ? bad(`data_offsets must be integers in [0, 2^53), got ${describe(d)}`) : n;
  });
  if (end < begin) throw new InvalidOffsetsError(file, `data_offsets [${begin}, ${end}] end before they begin`, name);
  // BigInt: the product of safe-integer dims can exceed 2^53 (and 2^64) long before JS notices.
  let numel = 1n;
  for (const d of shape) numel *= BigInt(d);
  const bits = numel * BigInt(DTYPE_BITS[dtype]);
  const have = end - begin;
  if (bits % 8n !== 0n) {
    throw new SizeMismatchError(file, `shape [${shape.join(', ')}] of ${dtype} is ${bits} bits, not a whole number of bytes`, name);
  }
  if (bits / 8n !== BigInt(have)) {
    throw new SizeMismatchError(file,
      `data_offsets [${begin}, ${end}] give ${have} bytes but shape [${shape.join(', ')}] of ${dtype} needs ${bits / 8n}`, name);
  }
  return { dtype, shape, begin, end };
}

/** Validates and indexes a whole safetensors file held in memory. `file` only labels errors. */
export function parseSafetensors(bytes: Uint8Array, file = '<buffer>', mapped = false): SafetensorsFile {
  const fileLen = bytes.byteLength;
  if (fileLen < 8) throw new TruncatedFileError(file, `file is ${fileLen} bytes, shorter than the 8-byte header length`);
  const n64 = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_SIZE)) {
    throw new HeaderTooLargeError(file, `header length ${n64} exceeds the limit of ${MAX_HEADER_SIZE} bytes`);
  }
  const n = Number(n64);
  if (8 + n > fileLen) {
    throw new TruncatedFileError(file, `header length ${n} needs ${8 + n} bytes but the file has ${fileLen}`);
  }
  const headerBytes = bytes.subarray(8, 8 + n);
  if (n === 0 || headerBytes[0] !== 0x7b) throw new InvalidHeaderError(file, "header does not start with '{'");
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    throw new InvalidHeaderError(file, 'header is not valid UTF-8');
  }
  const top = new HeaderParser(text, file).parseDocument();

  let metadata: Record<string, string> | null = null;
  const list: [string, TensorEntry][] = [];
  for (const [name, v] of top) {
    if (name === '__metadata__') {
      if (v === null) continue;
      if (!(v instanceof Map)) throw new InvalidHeaderError(file, `__metadata__ must be an object of strings, got ${describe(v)}`);
      for (const [k, x] of v) {
        if (typeof x !== 'string') {
          throw new InvalidHeaderError(file, `__metadata__[${quoteName(k)}] must be a string, got ${describe(x)}`);
        }
      }
      // fromEntries defines own properties, so a "__proto__" key stays data instead of changing the prototype.
      metadata = Object.fromEntries(v as Map<string, string>);
      continue;
    }
    list.push([name, parseEntry(file, name, v)]);
  }

  // Array.prototype.sort is stable, so empty tensors sharing an offset keep header order.
  list.sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let expected = 0;
  let prev: string | undefined;
  for (const [name, e] of list) {
    if (e.begin !== expected) {
      const where = prev === undefined ? 'the first tensor must begin at 0'
        : `the previous tensor ${quoteName(prev)} ends at ${expected}`;
      const what = e.begin < expected ? 'overlaps other data' : 'leaves a hole';
      throw new InvalidOffsetsError(file, `data_offsets [${e.begin}, ${e.end}] ${what}: ${where}`, name);
    }
    expected = e.end;
    prev = name;
  }
  const dataOffset = 8 + n;
  const total = dataOffset + expected;
  if (total > fileLen) {
    throw new TruncatedFileError(file,
      `data ends at byte ${total} (8 + header ${n} + ${expected}) but the file has only ${fileLen} bytes`, prev);
  }
  if (total < fileLen) {
    throw new InvalidOffsetsError(file,
      `${fileLen - total} bytes after the end of the last tensor's data (byte ${total}) are not covered by any tensor`);
  }

  const entries = new Map(list);
  const buffer = bytes.buffer as ArrayBuffer;
  const base = bytes.byteOffset + dataOffset;
  const cache = new Map<string, Tensor>();
  const entryOf = (name: string): TensorEntry => {
    const e = entries.get(name);
    if (!e) throw new TensorNotFoundError(file, 'no such tensor in this file', name);
    return e;
  };
  return {
    path: file, metadata, entries, headerLength: n, dataOffset, buffer, mapped,
    names: () => [...entries.keys()],
    has: (name) => entries.has(name),
    bytes: (name) => { const e = entryOf(name); return new Uint8Array(buffer, base + e.begin, e.end - e.begin); },
    get(name: string): Tensor {
      const hit = cache.get(name);
      if (hit) return hit;
      const e = entryOf(name);
      if (!SUPPORTED.has(e.dtype)) {
        throw new UnsupportedDtypeError(file, `dtype ${e.dtype} is valid safetensors but not supported by lowbit`, name);
      }
      const dtype = e.dtype as DType;
      // Read-only whether mapped (a write would fault: the mapping is PROT_READ) or read: the file's bytes are shared
      // by every model built from this state dict.
      const t = new Tensor(dtype, e.shape, viewAs(dtype, buffer, base + e.begin, (e.end - e.begin) / DTYPE_BYTES[dtype]), 'cpu', undefined,
        { readOnly: true, origin: `${file}: ${name}` });
      cache.set(name, t);
      return t;
    },
  };
}

/** Throws FileAccessError unless `path` is (or links to) a regular file; checked before any open, so a FIFO never blocks. */
function requireRegularFile(path: string): number {
  const p = probePath(path);
  if (p.kind === 'file') return p.stats.size;
  if (p.kind === 'missing') throw new FileAccessError(path, 'does not exist', 'ENOENT');
  if (p.kind === 'dir') throw new FileAccessError(path, 'is a folder, not a safetensors file', 'EISDIR');
  throw new FileAccessError(path, p.problem, p.code);
}

function openForRead(path: string): number {
  try {
    return fs.openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'EACCES' || code === 'EPERM' ? 'cannot be opened: permission denied' : `cannot be opened: ${(e as Error).message}`;
    throw new FileAccessError(path, why, code);
  }
}

function readWholeFile(path: string, size: number): Uint8Array {
  // A fresh ArrayBuffer (not Buffer.allocUnsafe, which may hand out a slice of a shared pool) so views start at a
  // known alignment, and so files over Buffer's 4 GiB limit still fit.
  const out = new Uint8Array(new ArrayBuffer(size));
  const fd = openForRead(path);
  try {
    let off = 0;
    while (off < size) {
      const got = fs.readSync(fd, out, off, Math.min(MAX_IO_CHUNK, size - off), off);
      if (got === 0) throw new TruncatedFileError(path, `file shrank to ${off} bytes while being read (expected ${size})`);
      off += got;
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/**
 * Opens and validates a safetensors file. With `mmap` (the default) and the native addon present, the file is
 * memory-mapped; otherwise it is read whole into one buffer. Either way tensors are views, not copies.
 *
 * A mapping reads the file lazily: if another process truncates the file while it is mapped, touching a tensor
 * past the new end raises SIGBUS and kills the process, which no JavaScript code can catch. `mmap: false` reads
 * every byte up front, so later changes to the file cannot affect the tensors.
 */
export function readSafetensors(path: string, opts: { mmap?: boolean } = {}): SafetensorsFile {
  const size = requireRegularFile(path);
  if (size < 8) throw new TruncatedFileError(path, `file is ${size} bytes, shorter than the 8-byte header length`);
  if (opts.mmap ?? true) {
    const addon = loadAddon();
    let mapped: ArrayBuffer | undefined;
    try {
      mapped = addon?.mmap(path);
    } catch {
      // Fall through to a plain read; mmap can fail on unusual filesystems (and a plain read then names the cause).
    }
    if (mapped) return parseSafetensors(new Uint8Array(mapped), path, true);
  }
  return parseSafetensors(readWholeFile(path, size), path, false);
}

// ---- writing ----

export type TensorDict = Map<string, Tensor> | Record<string, Tensor>;

function dictEntries(tensors: TensorDict): [string, Tensor][] {
  return tensors instanceof Map ? [...tensors] : Object.entries(tensors);
}

function isWellFormed(s: string): boolean {
  // Lone surrogates cannot be encoded as UTF-8 (Buffer.from would silently substitute U+FFFD).
  return !/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);
}

interface Prepared {
  /** 8-byte length prefix + padded header. */
  head: Buffer;
  order: { name: string; bytes: () => Uint8Array }[];
  total: number;
}

function prepare(file: string, tensors: TensorDict, metadata: Record<string, string> | undefined): Prepared {
  const list = dictEntries(tensors).map(([name, t]) => {
    const fail = (msg: string): never => { throw new SafetensorsWriteError(file, msg, name); };
    if (!(t instanceof Object) || !DTYPE_RANK.has(t.dtype) || !SUPPORTED.has(t.dtype)) fail(`unsupported dtype ${String(t?.dtype)}`);
    if (name === '__metadata__') fail('"__metadata__" is reserved and cannot name a tensor');
    if (!isWellFormed(name)) fail('name contains a lone UTF-16 surrogate');
    if (t.device !== 'cpu' || !t.data) fail(`tensor is on ${t.device}; copy it to the CPU before saving`);
    let numel = 1;
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || d < 0) fail(`shape [${t.shape.join(', ')}] has an invalid dimension`);
      numel *= d;
    }
    const nbytes = numel * DTYPE_BYTES[t.dtype];
    if (!Number.isSafeInteger(nbytes)) fail(`shape [${t.shape.join(', ')}] is too large`);
    const data = t.data;
    if (data.byteLength !== nbytes) {
      fail(`data holds ${data.byteLength} bytes but shape [${t.shape.join(', ')}] of ${t.dtype} needs ${nbytes}`);
    }
    return { name, t, nbytes };
  });
  list.sort((a, b) => DTYPE_RANK.get(b.t.dtype)! - DTYPE_RANK.get(a.t.dtype)! || compareCodePoints(a.name, b.name));

  const parts: string[] = [];
  if (metadata !== undefined) {
    const kv: string[] = [];
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsWriteError(file, `metadata[${quoteName(k)}] must be a string, got ${typeof v}`);
      if (!isWellFormed(k) || !isWellFormed(v)) throw new SafetensorsWriteError(file, `metadata[${quoteName(k)}] contains a lone UTF-16 surrogate`);
      kv.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
    }
    parts.push(`"__metadata__":{${kv.join(',')}}`);
  }
  let offset = 0;
  for (const { name, t, nbytes } of list) {
    // JSON.stringify escapes strings exactly like serde_json (short escapes, \u00xx lowercase, UTF-8 passthrough).
    parts.push(`${JSON.stringify(name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${offset + nbytes}]}`);
    offset += nbytes;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded > MAX_HEADER_SIZE) throw new SafetensorsWriteError(file, `header would be ${padded} bytes, over the ${MAX_HEADER_SIZE}-byte limit`);
  const head = Buffer.alloc(8 + padded, 0x20);
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);
  return {
    head,
    total: head.length + offset,
    // Tensor bytes are little-endian views of the typed arrays: lowbit only supports little-endian hosts.
    order: list.map(({ name, t }) => ({ name, bytes: () => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) })),
  };
}

/** The whole file in memory; for small tensors and tests. */
export function serializeSafetensors(tensors: TensorDict, metadata?: Record<string, string>): Buffer {
  const p = prepare('<buffer>', tensors, metadata);
  const out = Buffer.allocUnsafe(p.total);
  p.head.copy(out, 0);
  let at = p.head.length;
  for (const { bytes } of p.order) { const b = bytes(); out.set(b, at); at += b.length; }
  return out;
}

function writeAll(fd: number, b: Uint8Array): void {
  let off = 0;
  while (off < b.length) off += fs.writeSync(fd, b, off, Math.min(MAX_IO_CHUNK, b.length - off));
}

/**
 * Validates `tensors` and `metadata` (throwing SafetensorsWriteError before any file is touched) and returns a
 * function that writes the file's bytes to an open fd. `afterHeader` runs between the header and the tensor data:
 * a progress hook, which the kill tests use to stop a writer with a partial file on disk.
 */
export function safetensorsWriter(
  file: string, tensors: TensorDict, metadata?: Record<string, string>, afterHeader?: () => void,
): (fd: number) => void {
  const p = prepare(file, tensors, metadata);
  return (fd) => {
    writeAll(fd, p.head);
    afterHeader?.();
    for (const { bytes } of p.order) writeAll(fd, bytes());
  };
}

/** Validates and writes a safetensors file next to `path` under a temp name; see `commitTemp`. */
export function writeSafetensorsTemp(path: string, tensors: TensorDict, metadata?: Record<string, string>): string {
  return writeFileTemp(path, safetensorsWriter(path, tensors, metadata));
}

/** Writes a safetensors file byte-identical to the Rust/Python writer, atomically. */
export function writeSafetensors(path: string, tensors: TensorDict, metadata?: Record<string, string>): void {
  commitTemp(writeSafetensorsTemp(path, tensors, metadata), path);
}
