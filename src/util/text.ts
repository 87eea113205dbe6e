// Text for error messages: values shown short (a hostile file can hold megabytes in one key, or nesting that
// overflows JSON.stringify), and the nearest known name for a misspelt option or key.

/**
 * A value as JSON for a message, cut to `max` characters. Numbers print as themselves (JSON.stringify would write
 * NaN and Infinity as null); undefined is "nothing"; a value JSON.stringify cannot write (deep nesting overflows it,
 * and String(), which joins recursively; a bigint) is described by its type instead.
 */
export function show(v: unknown, max = 80): string {
  if (typeof v === 'number') return String(v);
  let s: string;
  try { s = v === undefined ? 'nothing' : JSON.stringify(v) ?? typeof v; } catch { s = Array.isArray(v) ? 'a deeply nested list' : typeof v; }
  return s.length > max ? `${s.slice(0, max - 3)}...` : s;
}

/** A value's type, with the value for scalars, for "must be X, got …" messages: "null", "an array", "a number (5)". */
export function describe(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  return `a ${typeof v} (${show(v, 40)})`;
}

/** Levenshtein distance (insertions, deletions and substitutions cost 1). */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

/**
 * The candidate a misspelt `name` most likely meant, or null. Case, `_` and `-` are ignored first, so
 * `max_new_tokens`, `maxNewTokens` and `max-new-tokens` find each other; then a candidate that starts with the name
 * (3 characters or more) counts as distance 1; otherwise the edit distance must be at most 2, or a third of the
 * name's length for long names. Names over 64 characters get no suggestion (the distance is quadratic in length).
 */
export function nearest(name: string, candidates: Iterable<string>): string | null {
  const flat = (s: string) => s.toLowerCase().replace(/[_-]/g, '');
  const f = flat(name);
  const all = [...candidates];
  const same = all.find((c) => flat(c) === f);
  if (same !== undefined) return same;
  if (name.length > 64) return null;
  let best: string | null = null, bestD = Infinity;
  for (const c of all) {
    const fc = flat(c);
    const d = f.length >= 3 && fc.startsWith(f) ? 1 : editDistance(f, fc);
    if (d < bestD) { best = c; bestD = d; }
  }
  return bestD <= Math.max(2, Math.floor(name.length / 3)) ? best : null;
}
