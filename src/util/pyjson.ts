// Python's json.dumps, byte for byte (../shared/spec/FORMATS.md §0), so config.json / index / adapter_config.json files we write
// diff clean against the ones transformers and peft write.

/** Marks a JS number as a Python float, so `pyFloat(6)` prints `6.0` while a plain `6` prints `6`. */
export class PyFloat {
  constructor(readonly value: number) {}
}

export function pyFloat(x: number): PyFloat {
  return new PyFloat(x);
}

export interface PyJsonOptions {
  /** As Python's `indent`: undefined = one line; 0 = newlines without indentation. */
  indent?: number;
  sortKeys?: boolean;
  /** Python's default is true: everything outside printable ASCII becomes `\uXXXX`. */
  ensureAscii?: boolean;
  /** Python's `separators=(item, key)`; the default depends on `indent` exactly as in Python. */
  separators?: [string, string];
}

/**
 * Compares strings by Unicode code point, which is also UTF-8 byte order. Python sorts str this way and Rust sorts
 * String this way; JS `<` compares UTF-16 units and puts U+E000..U+FFFF after astral characters.
 */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates (D800..DFFF) encode code points above FFFF, so they must sort after E000..FFFF.
    if (x >= 0xd800) x += x <= 0xdfff ? 0x2000 : -0x800;
    if (y >= 0xd800) y += y <= 0xdfff ? 0x2000 : -0x800;
    return x - y;
  }
  return a.length - b.length;
}

/** Python `float.__repr__` as json.dumps prints it (non-finite values use json's spellings). */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  // toExponential() with no argument yields the shortest round-trip digits, the same digits Python's repr picks.
  const s = Math.abs(x).toExponential();
  const ePos = s.indexOf('e');
  const digits = s.slice(0, ePos).replace('.', '');
  const exp = Number(s.slice(ePos + 1));
  const sign = x < 0 ? '-' : '';
  if (exp < -4 || exp >= 16) {
    const mant = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const ex = Math.abs(exp).toString().padStart(2, '0');
    return `${sign}${mant}e${exp < 0 ? '-' : '+'}${ex}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const intLen = exp + 1;
  if (digits.length <= intLen) return `${sign}${digits}${'0'.repeat(intLen - digits.length)}.0`;
  return `${sign}${digits.slice(0, intLen)}.${digits.slice(intLen)}`;
}

function pyIntRepr(x: number | bigint): string {
  // String(1e21) is '1e+21'; Python prints every digit of an int.
  return typeof x === 'bigint' ? x.toString() : BigInt(x).toString();
}

const SHORT_ESCAPES: Record<number, string> = {
  0x22: '\\"', 0x5c: '\\\\', 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t', 0x08: '\\b', 0x0c: '\\f',
};

function hex4(c: number): string {
  return '\\u' + c.toString(16).padStart(4, '0');
}

/** Python's `encode_basestring_ascii` / `encode_basestring`. JS strings are UTF-16, so astral characters come out
 *  as the surrogate pair Python also emits. */
export function pyJsonString(s: string, ensureAscii = true): string {
  let out = '"';
  let runStart = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const plain = ensureAscii ? c >= 0x20 && c <= 0x7e && c !== 0x22 && c !== 0x5c : c >= 0x20 && c !== 0x22 && c !== 0x5c;
    if (plain) continue;
    out += s.slice(runStart, i) + (SHORT_ESCAPES[c] ?? hex4(c));
    runStart = i + 1;
  }
  return out + s.slice(runStart) + '"';
}

export class PyJsonError extends TypeError { override name = 'PyJsonError'; }

/**
 * Python `json.dumps(value, indent=…, sort_keys=…, ensure_ascii=…)`.
 * Values: null, boolean, string, number (integral → int, else float), bigint (int), PyFloat, arrays, plain objects
 * and Map<string, …> (keeps insertion order even for integer-like keys, unlike objects). Object properties whose
 * value is `undefined` are skipped, which lets writers build configs with optional fields.
 */
export function pyJsonDumps(value: unknown, opts: PyJsonOptions = {}): string {
  const indent = opts.indent;
  const ensureAscii = opts.ensureAscii ?? true;
  const sortKeys = opts.sortKeys ?? false;
  const [itemSep, keySep] = opts.separators ?? (indent === undefined ? [', ', ': '] : [',', ': ']);
  if (indent !== undefined && (!Number.isInteger(indent) || indent < 0)) {
    throw new PyJsonError(`indent must be a non-negative integer, got ${indent}`);
  }
  const unit = indent === undefined ? '' : ' '.repeat(indent);
  const stack = new Set<object>();

  const enc = (v: unknown, level: number): string => {
    if (v === null) return 'null';
    if (v === true) return 'true';
    if (v === false) return 'false';
    if (typeof v === 'string') return pyJsonString(v, ensureAscii);
    if (typeof v === 'number') {
      return Number.isInteger(v) ? pyIntRepr(v) : pyFloatRepr(v);
    }
    if (typeof v === 'bigint') return pyIntRepr(v);
    if (v instanceof PyFloat) return pyFloatRepr(v.value);
    if (typeof v !== 'object') throw new PyJsonError(`Object of type ${typeof v} is not JSON serializable`);
    if (stack.has(v)) throw new PyJsonError('Circular reference detected');
    stack.add(v);
    try {
      const open = indent === undefined ? '' : '\n' + unit.repeat(level + 1);
      const close = indent === undefined ? '' : '\n' + unit.repeat(level);
      if (Array.isArray(v)) {
        if (v.length === 0) return '[]';
        const parts = v.map((x) => {
          if (x === undefined) throw new PyJsonError('undefined in an array is not JSON serializable');
          return enc(x, level + 1);
        });
        return '[' + open + parts.join(itemSep + open) + close + ']';
      }
      let entries: [string, unknown][];
      if (v instanceof Map) {
        entries = [];
        for (const [k, x] of v) {
          if (typeof k !== 'string') throw new PyJsonError(`Map keys must be strings, got ${typeof k}`);
          entries.push([k, x]);
        }
      } else {
        const proto = Object.getPrototypeOf(v);
        if (proto !== Object.prototype && proto !== null) {
          throw new PyJsonError(`Object of type ${proto?.constructor?.name ?? 'unknown'} is not JSON serializable`);
        }
        entries = Object.entries(v as Record<string, unknown>);
      }
      entries = entries.filter(([, x]) => x !== undefined);
      if (entries.length === 0) return '{}';
      if (sortKeys) entries.sort((a, b) => compareCodePoints(a[0], b[0]));
      const parts = entries.map(([k, x]) => pyJsonString(k, ensureAscii) + keySep + enc(x, level + 1));
      return '{' + open + parts.join(itemSep + open) + close + '}';
    } finally {
      stack.delete(v);
    }
  };
  return enc(value, 0);
}

/**
 * JSON text → values that `pyJsonDumps` writes back as Python wrote them: objects become Maps (key order kept, even
 * for integer-like keys), and a number written with a '.' or an exponent becomes a PyFloat, so `0.0`, `6.0` and
 * `1e-06` survive a read–modify–write of a transformers config.json. Python's NaN/Infinity are read as floats too.
 */
export function pyJsonParse(text: string): unknown {
  let i = 0;
  const fail = (what: string): never => { throw new PyJsonError(`JSON: ${what} at offset ${i}`); };
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
  const value = (): unknown => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++; const m = new Map<string, unknown>(); ws();
      if (text[i] === '}') { i++; return m; }
      for (;;) {
        ws(); if (text[i] !== '"') fail('expected a key');
        const k = value() as string; ws();
        if (text[i++] !== ':') fail("expected ':'");
        m.set(k, value()); ws();
        const d = text[i++];
        if (d === '}') return m;
        if (d !== ',') fail("expected ',' or '}'");
      }
    }
    if (c === '[') {
      i++; const a: unknown[] = []; ws();
      if (text[i] === ']') { i++; return a; }
      for (;;) {
        a.push(value()); ws();
        const d = text[i++];
        if (d === ']') return a;
        if (d !== ',') fail("expected ',' or ']'");
      }
    }
    if (c === '"') {
      const m = /^"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/.exec(text.slice(i));
      if (!m) return fail('bad string');
      i += m[0].length;
      return JSON.parse(m[0]) as string;
    }
    for (const [word, v] of [['true', true], ['false', false], ['null', null], ['NaN', pyFloat(NaN)],
      ['Infinity', pyFloat(Infinity)], ['-Infinity', pyFloat(-Infinity)]] as const) {
      if (text.startsWith(word, i)) { i += word.length; return v; }
    }
    const m = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m) return fail('unexpected character');
    i += m[0].length;
    const n = Number(m[0]);
    return m[1] || m[2] ? pyFloat(n) : Number.isSafeInteger(n) ? n : BigInt(m[0]);
  };
  const v = value();
  ws();
  if (i !== text.length) fail('trailing text');
  return v;
}
