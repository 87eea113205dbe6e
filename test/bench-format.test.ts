// `lowbit bench --format`: quantize on load, count the quantized layers' real bytes per token, and name the backend
// that ran the quantized matmul. No speed assertions (speed lives in lowbit bench itself).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpuAvailable } from '../src/backend/cpu/index.js';
import { KJV, lowbit } from './helpers.js';

const skip = cpuAvailable() ? false : 'the native cpu backend is not built';
const SMALL = ['--prompt-len', '4', '--decode-len', '4', '--json', '--no-competitor', '--roofline-bytes', String(16 << 20)];

function bench(...args: string[]): Record<string, unknown> {
  const r = lowbit('bench', KJV, ...SMALL, ...args);
  assert.equal(r.code, 0, r.err);
  return JSON.parse(r.out) as Record<string, unknown>;
}

test('lowbit bench --format nf4/int8 on a folder: format, quantized bytes per token, which backend ran the matmul', { skip }, () => {
  const bf16 = bench();
  assert.equal(bf16.format, null);
  assert.equal(bf16.quantBackend, null);
  assert.equal(bf16.quantizeMs, null);
  // Fields kept from before --format existed.
  for (const k of ['model', 'dtype', 'threads', 'decodeTokPerSec', 'decodeRoofline', 'bandwidthGBs', 'prefillFlops', 'contendedSlowdown']) assert.ok(k in bf16, k);

  // kjv-demo: 6 layers of hidden 256, intermediate 688, 8 heads (4 kv) of 32; tied lm_head (4096 × 256) stays bf16.
  const H = 256, I = 688, q = 8 * 32, kv = 4 * 32, L = 6;
  const perLayer = [[q, H], [kv, H], [kv, H], [H, q], [I, H], [I, H], [H, I]];
  const floatRest = 4096 * H * 2 + H * 2;                       // lm_head + one embedding row, bf16
  const n = perLayer.reduce((s, [o, i]) => s + o * i, 0);
  assert.equal(bf16.bytesPerToken, L * n * 2 + floatRest);

  const nf4 = bench('--format', 'nf4');
  assert.equal(nf4.format, 'nf4');
  assert.equal(nf4.doubleQuant, false);
  assert.equal(nf4.quantBackend, 'cpu');                        // the native NF4/FP4 GEMV
  assert.ok(typeof nf4.quantizeMs === 'number' && nf4.quantizeMs > 0);
  // Every layer's size is a multiple of 64: packed codes n/2 + one float32 absmax per 64 weights.
  assert.equal(nf4.bytesPerToken, L * (n / 2 + (n / 64) * 4) + floatRest);
  assert.ok((nf4.bytesPerToken as number) < (bf16.bytesPerToken as number));

  // --compare: the bf16 model measured first in the same process; the ratios are of this run's own numbers.
  const cmp = bench('--format', 'nf4', '--compare');
  const base = cmp.baseline as Record<string, number>;
  assert.equal(base.bytesPerToken, bf16.bytesPerToken);
  assert.equal(cmp.bytesPerToken, nf4.bytesPerToken);
  assert.equal(cmp.decodeSpeedup, (cmp.decodeTokPerSec as number) / base.decodeTokPerSec);
  assert.equal(cmp.prefillSpeedup, (cmp.prefillTokPerSec as number) / base.prefillTokPerSec);
  assert.equal(bf16.baseline, null);
  assert.equal(bf16.decodeSpeedup, null);

  const dq = bench('--format', 'nf4', '--double-quant');
  assert.equal(dq.doubleQuant, true);
  assert.ok((dq.bytesPerToken as number) < (nf4.bytesPerToken as number));   // 8-bit absmax codes + nested scales

  const r = lowbit('bench', KJV, ...SMALL, '--format', 'int8');
  assert.equal(r.code, 0, r.err);
  const int8 = JSON.parse(r.out) as Record<string, unknown>;
  assert.equal(int8.format, 'int8');
  // int8 codes + one float32 SCB per output row.
  assert.equal(int8.bytesPerToken, L * perLayer.reduce((s, [o, i]) => s + o * i + o * 4, 0) + floatRest);
  // The native LLM.int8 kernel (test/quant-int8-kernel.test.ts): no fallback to ref, so no warning.
  assert.equal(int8.quantBackend, 'cpu');
  assert.doesNotMatch(r.err, /no matmulQ kernel/);
});

test('lowbit bench --format: the table names the format and the backend; progress per decoder layer on stderr', { skip }, () => {
  const r = lowbit('bench', KJV, '--prompt-len', '4', '--decode-len', '4', '--no-competitor', '--roofline-bytes', String(16 << 20), '--format', 'fp4', '--double-quant');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /quantized: 42 linear layers fp4 \+ double quant \(lm_head float\), quantized on load in [\d.]+ s; matmul on cpu \(native kernel\)/);
  assert.match(r.out, /^decode +[\d.]+ tok\/s/m);
  assert.equal(r.err.match(/^quantized model\.layers\.\d+: 7 linears in \d+ ms$/gm)?.length, 6);

  const c = lowbit('bench', KJV, '--prompt-len', '4', '--decode-len', '4', '--no-competitor', '--roofline-bytes', String(16 << 20), '--format', 'nf4', '--compare');
  assert.equal(c.code, 0, c.err);
  assert.match(c.out, /^bfloat16 +decode +[\d.]+ tok\/s/m);
  assert.match(c.out, /^nf4 +prefill +[\d.]+ tok\/s/m);
  assert.match(c.out, /^nf4 \/ bfloat16, same run: decode [\d.]+×, prefill [\d.]+×$/m);
});

test('lowbit bench --format usage errors exit 2', () => {
  for (const [args, msg] of [
    [['--format', 'q4'], /--format "q4" is unknown \(choose int8, nf4, fp4, gptq2, gptq3, gptq4, gptq8, awq4\)/],
    [['--format', 'int8', '--double-quant'], /--double-quant applies to --format nf4 or fp4/],
    [['--double-quant'], /--double-quant applies to --format nf4 or fp4/],
    [['--compare'], /--compare measures the float model beside a --format/],
    [['--shape', 'tinyllama-1.1b', '--format', 'nf4', '--write-model', '/tmp/x'], /--write-model saves the float model/],
  ] as const) {
    const r = lowbit('bench', ...(args[0] === '--shape' ? [] : [KJV]), ...args);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, msg);
  }
});
