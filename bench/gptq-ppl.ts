// Issue 9's GPTQ protocol on eval-llama-16m: calibration = 128 windows of 256 tokens from c4-sample.txt (one token
// stream, Python's random.seed(0) windows), asymmetric, group 128, block 128, damp 0.01, no true-sequential (the
// reference table's setting); measure = WikiText-2 test perplexity over 200 windows of 256. Prints one row per
// (bits, method) with the ratio (ppl − bf16) / (RTN − bf16), and writes JSON.
// Run: npx tsc -p . && node dist/bench/gptq-ppl.js [--bits 4,3] [--methods rtn,gptq,gptq-act] [--nsamples 128]
//      [--windows 200] [--true-sequential] [--out FILE]   (default bench/out/gptq-ppl.json; data: LOWBIT_TEST_DATA
//      or ../shared/data)
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { p5Protocol } from './p5-protocol.js';
import { parseArgs } from 'node:util';
import { fromPretrained } from '../src/api.js';
import { quantizeModelGptq } from '../src/quant/gptq-driver.js';
import type { GptqBits } from '../src/quant/gptq-types.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const { values: opts } = parseArgs({
  options: {
    bits: { type: 'string', default: '4,3' }, methods: { type: 'string', default: 'rtn,gptq,gptq-act' },
    nsamples: { type: 'string', default: '128' }, windows: { type: 'string', default: '200' },
    'true-sequential': { type: 'boolean', default: false }, out: { type: 'string' },
  },
});
const outPath = resolve(opts.out ?? join(root, 'bench', 'out', 'gptq-ppl.json'));
const windows = Number(opts.windows);

const { modelDir, base, calib, ppl } = await p5Protocol(root, Number(opts.nsamples), windows);

const t0 = performance.now();
const bf16 = ppl(base);
console.log(`bf16 ${bf16.toFixed(2)}  (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
const rows: Record<string, unknown>[] = [{ bits: 16, method: 'bf16', ppl: bf16 }];
for (const bits of opts.bits!.split(',').map(Number) as GptqBits[]) {
  let rtnPpl = NaN;
  for (const method of opts.methods!.split(',')) {
    const m = await fromPretrained(modelDir);
    const t = performance.now();
    const r = quantizeModelGptq(m.model, calib.samples, {
      method: method === 'rtn' ? 'rtn' : 'gptq', bits, groupSize: 128, sym: false, descAct: method === 'gptq-act',
      dampPercent: 0.01, blockSize: 128, trueSequential: opts['true-sequential'],
    });
    const qMs = performance.now() - t;
    const p = ppl(m);
    if (method === 'rtn') rtnPpl = p;
    const ratio = (p - bf16) / (rtnPpl - bf16);
    const meanErr = (k: 'gptqError' | 'rtnError') => r.stats.reduce((s, x) => s + (x[k] ?? 0), 0) / r.stats.length;
    rows.push({ bits, method, ppl: p, ratio: method === 'rtn' ? 1 : ratio, quantizeSeconds: qMs / 1000, meanGptqError: meanErr('gptqError'), meanRtnError: meanErr('rtnError') });
    console.log(`${bits}-bit ${method.padEnd(8)} ppl ${p.toFixed(2)}  ratio ${(method === 'rtn' ? 1 : ratio).toFixed(2)}  quantize ${(qMs / 1000).toFixed(1)} s  ` +
      `mean rel. output error gptq ${meanErr('gptqError').toExponential(2)} rtn ${meanErr('rtnError').toExponential(2)}`);
  }
}
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, JSON.stringify({ model: 'eval-llama-16m', calibration: { source: 'c4-sample.txt', nsamples: calib.samples.length, seqlen: 256, seed: 0 }, windows, trueSequential: opts['true-sequential'], rows }, null, 2));
console.log(`wrote ${outPath}`);
