// The one progress interface (src/util/progress.ts): quantize on load reports by decoder layer through
// fromPretrained's onProgress (onQuantize keeps the per-linear detail), and the CLI renderer turns any report into
// throttled lines off a terminal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fromPretrained } from '../src/api.js';
import { renderProgress } from '../src/cli/args.js';
import type { Progress } from '../src/util/progress.js';
import { ROOT } from './helpers.js';

const BF16 = join(ROOT, 'test', 'fixtures', 'bnb', 'hf_llama_bf16');

test('fromPretrained reports quantize-on-load progress by decoder layer, and onQuantize per linear', async () => {
  const seen: Progress[] = [];
  const linears: string[] = [];
  await fromPretrained(BF16, {
    backend: 'ref', quantizationConfig: { loadIn4bit: true, bnb4bitQuantType: 'nf4' },
    onProgress: (p) => seen.push(p), onQuantize: (e) => linears.push(e.name),
  });
  assert.deepEqual(seen.map((p) => [p.task, p.unit, p.done, p.total, p.item]),
    [['quantize', 'layers', 0, 1, 'model.layers.0'], ['quantize', 'layers', 1, 1, undefined]]);
  assert.ok(seen.every((p, i) => p.elapsedMs >= 0 && (i === 0 || p.elapsedMs >= seen[i - 1].elapsedMs)));
  assert.equal(linears.length, 7);
  assert.ok(linears.every((n) => n.startsWith('model.layers.0.')));
  // A float load reports nothing; a callback that is not a function is refused by name.
  seen.length = 0;
  await fromPretrained(BF16, { backend: 'ref', onProgress: (p) => seen.push(p) });
  assert.equal(seen.length, 0);
  await assert.rejects(fromPretrained(BF16, { onProgress: 5 as never }), /fromPretrained: onProgress must be a function, got number/);
  // Checked before any download could call it (a Hub id that is not in the cache, offline: the check comes first).
  await assert.rejects(fromPretrained('org/not-cached', { onProgress: 'x' as never, fetch: () => { throw new Error('no network in tests'); } }),
    /fromPretrained: onProgress must be a function, got string/);
});

test('renderProgress off a terminal: a line at most every everyMs, always the last; bytes in MiB; ttyOnly is silent', () => {
  const lines: string[] = [];
  const write = process.stderr.write;
  const tty = process.stderr.isTTY;
  (process.stderr as { isTTY: boolean }).isTTY = false;
  process.stderr.write = ((s: string) => { lines.push(s); return true; }) as typeof process.stderr.write;
  try {
    const p = (done: number, total: number, unit = 'layers', item?: string): Progress => ({ task: 'quantize', done, total, unit, item, elapsedMs: 0 });
    const r = renderProgress({ everyMs: 60_000 });
    for (let i = 0; i < 5; i++) r(p(i, 5, 'layers', `model.layers.${i}`));
    r(p(5, 5));
    assert.deepEqual(lines, ['quantize 5/5 layers\n']);
    lines.length = 0;
    const every = renderProgress({ everyMs: 0, detail: () => ' · 12 tokens/s', label: 'eval' });
    every(p(1, 2, 'windows', 'w1'));
    every({ ...p(3 * 2 ** 20, 0, 'bytes', 'model.safetensors'), task: 'download' });
    assert.deepEqual(lines, ['eval 1/2 windows · w1 · 12 tokens/s\n', 'eval 3.0 MiB · model.safetensors · 12 tokens/s\n']);
    lines.length = 0;
    renderProgress({ ttyOnly: true })(p(5, 5));
    assert.deepEqual(lines, []);
  } finally {
    process.stderr.write = write;
    (process.stderr as { isTTY: boolean }).isTTY = tty;
  }
});
