// Issue 10's AWQ protocol on eval-llama-16m, P5's setup (bench/gptq-ppl.ts): calibration = 128 windows of 256 tokens
// from c4-sample.txt (one token stream, Python's random.seed(0) windows); measure = WikiText-2 test perplexity over 200
// windows of 256. Per bit width: RTN as P5 measured it (GPTQ's asymmetric grid, whose range holds 0), RTN on AWQ's
// grid (min/max, no scaling or clipping), and AWQ (scale search + clipping, or --no-clip). The ratio is
// (ppl − bf16) / (RTN − bf16) against P5's RTN, the issue's reference. Writes JSON.
// Run: npx tsc -p . && node dist/bench/awq-ppl.js [--bits 4,3] [--group-size 128] [--nsamples 128] [--windows 200]
//      [--no-clip] [--no-duo] [--search-loss module|linears] [--out FILE]   (default bench/out/awq-ppl.json; data: LOWBIT_TEST_DATA or ../shared/data)
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { p5Protocol } from './p5-protocol.js';
import { parseArgs } from 'node:util';
import { fromPretrained } from '../src/api.js';
import { quantizeModelAwq } from '../src/quant/awq-driver.js';
import { quantizeModelGptq } from '../src/quant/gptq-driver.js';
import type { GptqBits } from '../src/quant/gptq-types.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const { values: opts } = parseArgs({
  options: {
    bits: { type: 'string', default: '4,3' }, 'group-size': { type: 'string', default: '128' },
    nsamples: { type: 'string', default: '128' }, windows: { type: 'string', default: '200' },
    'no-clip': { type: 'boolean', default: false }, 'no-duo': { type: 'boolean', default: false }, out: { type: 'string' },
    'search-loss': { type: 'string', default: 'module' },
  },
});
const outPath = resolve(opts.out ?? join(root, 'bench', 'out', 'awq-ppl.json'));
const windows = Number(opts.windows), groupSize = Number(opts['group-size']);

const { modelDir, base, calib, ppl } = await p5Protocol(root, Number(opts.nsamples), windows);

const t0 = performance.now();
const bf16 = ppl(base);
console.log(`bf16 ${bf16.toFixed(2)}  (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
const rows: Record<string, unknown>[] = [{ bits: 16, method: 'bf16', ppl: bf16 }];
for (const bits of opts.bits!.split(',').map(Number) as GptqBits[]) {
  let rtnPpl = NaN, awqRtnPpl = NaN;
  for (const method of ['rtn', 'awq-rtn', 'awq']) {
    const m = await fromPretrained(modelDir);
    const t = performance.now();
    let extra: Record<string, unknown> = {};
    if (method === 'rtn') {
      quantizeModelGptq(m.model, [], { method: 'rtn', bits, groupSize, sym: false });
    } else {
      const r = quantizeModelAwq(m.model, calib.samples, {
        method: method === 'awq' ? 'awq' : 'rtn', bits, groupSize, applyClip: !opts['no-clip'], duoScaling: !opts['no-duo'],
        searchLoss: opts['search-loss'] as 'module' | 'linears',
      });
      if (method === 'awq') {
        const clips = r.stats.filter((s) => s.clipRatio !== undefined).map((s) => s.clipRatio!);
        extra = {
          alphas: r.groups.map((g) => `${g.prev.replace(/^model\.layers\./, '')}:${g.alpha}`),
          meanClipRatio: clips.reduce((a, b) => a + b, 0) / clips.length,
          lossOverAlpha0: r.groups.reduce((a, g) => a + g.loss / g.lossAtAlpha0, 0) / r.groups.length,
        };
      }
    }
    const qMs = performance.now() - t;
    const p = ppl(m);
    if (method === 'rtn') rtnPpl = p;
    if (method === 'awq-rtn') awqRtnPpl = p;
    const ratio = (p - bf16) / (rtnPpl - bf16), ratioAwqGrid = (p - bf16) / (awqRtnPpl - bf16);
    rows.push({ bits, method, ppl: p, ratio, ratioVsAwqGridRtn: method === 'rtn' ? undefined : ratioAwqGrid, quantizeSeconds: qMs / 1000, ...extra });
    console.log(`${bits}-bit ${method.padEnd(8)} ppl ${p.toFixed(2)}  ratio ${ratio.toFixed(2)}` +
      (method === 'rtn' ? '' : ` (vs AWQ-grid RTN ${ratioAwqGrid.toFixed(2)})`) + `  quantize ${(qMs / 1000).toFixed(1)} s` +
      (extra.meanClipRatio !== undefined ? `  mean clip ${(extra.meanClipRatio as number).toFixed(3)}  loss/loss(α=0) ${(extra.lossOverAlpha0 as number).toFixed(3)}` : ''));
    if (extra.alphas) console.log(`  α: ${(extra.alphas as string[]).join(' ')}`);
  }
}
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, JSON.stringify({
  model: 'eval-llama-16m', calibration: { source: 'c4-sample.txt', nsamples: calib.samples.length, seqlen: 256, seed: 0 }, windows, groupSize,
  applyClip: !opts['no-clip'], duoScaling: !opts['no-duo'],
        searchLoss: opts['search-loss'] as 'module' | 'linears', rows,
}, null, 2));
console.log(`wrote ${outPath}`);
