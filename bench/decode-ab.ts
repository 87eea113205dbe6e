// Decode speed of a quantized model against its float model, A/B in one process: both are built from the same random
// weights of a real shape (the float one as is, the other quantized on build as fromPretrained's quantizationConfig
// does), prefilled, then decode in alternating rounds of a few tokens each (the order flips every round), so both
// see the same load on a machine shared with other work. `lowbit bench` runs one model per process, minutes apart;
// on a busy machine the two runs can differ by 2x for reasons that have nothing to do with the kernels. Prints a row
// per round and the median speed-up; writes JSON.
// Run: npx tsc -p . && node dist/bench/decode-ab.js [--shape tinyllama-1.1b] [--format int8|nf4|fp4|gptq2|3|4|8] [--rounds 8]
//      [--step 8] [--out FILE]   (default bench/out/decode-ab.json; env LOWBIT_THREADS)
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getBackend } from '../src/backend/index.js';
import { getThreads, measureRoofline } from '../src/backend/cpu/index.js';
import { parseQuantizationConfig, type BitsAndBytesConfig } from '../src/io/quantconfig.js';
import { Weights, type CausalLM } from '../src/models/model.js';
import { randomLlama } from '../src/models/random.js';
import { buildModel } from '../src/models/registry.js';
import { parseGptqConfig } from '../src/io/gptqconfig.js';
import { quantizeLoadedGptq } from '../src/quant/gptq-run.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values: opts } = parseArgs({
  options: {
    shape: { type: 'string', default: 'tinyllama-1.1b' }, format: { type: 'string', default: 'int8' },
    rounds: { type: 'string', default: '8' }, step: { type: 'string', default: '8' }, out: { type: 'string' },
  },
});
const outPath = resolve(opts.out ?? join(here, '..', '..', 'bench', 'out', 'decode-ab.json'));
const rounds = Number(opts.rounds), step = Number(opts.step);
const fmt = opts.format!;
const configs: Record<string, BitsAndBytesConfig> = {
  int8: { loadIn8bit: true }, nf4: { loadIn4bit: true, bnb4bitQuantType: 'nf4' }, fp4: { loadIn4bit: true, bnb4bitQuantType: 'fp4' },
};
const gptqBits = /^gptq[2348]$/.test(fmt) ? Number(fmt.slice(4)) : null;
if ((!configs[fmt] && !gptqBits) || !(rounds >= 1) || !(step >= 1)) {
  console.error('usage: node dist/bench/decode-ab.js [--shape NAME] [--format int8|nf4|fp4|gptq2|gptq3|gptq4|gptq8] [--rounds N] [--step N] [--out FILE]');
  process.exit(2);
}

const backend = getBackend('cpu');
const { config, tensors } = randomLlama(opts.shape!, 'BF16');
const float = buildModel(config, new Weights(tensors, opts.shape!), backend, {});
const t0 = performance.now();
// GPTQ formats as lowbit bench makes them: round-to-nearest on GPTQ's grid (symmetric, group 128), AutoGPTQ's packing.
const quantize = gptqBits ? undefined : parseQuantizationConfig(configs[fmt], 'decode-ab', { where: '--format', strict: true });
const quant = buildModel(config, new Weights(tensors, opts.shape!), backend, { quantize });
if (gptqBits) {
  const spec = parseGptqConfig({ quant_method: 'gptq', bits: gptqBits, group_size: 128, sym: true, desc_act: false }, 'decode-ab', { strict: true });
  quantizeLoadedGptq({ tokenizer: null, dir: 'decode-ab', quantizationConfig: null, model: quant }, spec!, { method: 'rtn' });
}
console.error(`quantized ${opts.shape} to ${fmt} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

const argmax = (a: Float32Array): number => { let b = 0; for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i; return b; };
const prompt = Array.from({ length: 16 }, (_, i) => (i * 7919 + 13) % config.vocab_size);
const runs = new Map<string, { model: CausalLM; cache: ReturnType<CausalLM['createCache']>; next: number }>();
for (const [name, model] of [['bf16', float], [fmt, quant]] as const) {
  const cache = model.createCache(1, prompt.length + rounds * step + 1);
  cache.reserve(prompt.length + rounds * step + 1);
  runs.set(name, { model, cache, next: argmax(model.forward([prompt], { cache, logits: 'last' }).f32) });
}

const rows: { round: number; bf16: number; quant: number; ratio: number }[] = [];
for (let k = 0; k < rounds; k++) {
  const tps: Record<string, number> = {};
  for (const name of k % 2 ? [fmt, 'bf16'] : ['bf16', fmt]) {
    const r = runs.get(name)!;
    const t = performance.now();
    for (let i = 0; i < step; i++) r.next = argmax(r.model.forward([[r.next]], { cache: r.cache, logits: 'last' }).f32);
    tps[name] = step / ((performance.now() - t) / 1000);
  }
  rows.push({ round: k, bf16: tps.bf16, quant: tps[fmt], ratio: tps[fmt] / tps.bf16 });
  console.log(`round ${k}: bf16 ${tps.bf16.toFixed(2)} tok/s, ${fmt} ${tps[fmt].toFixed(2)} tok/s, ${fmt}/bf16 ${(tps[fmt] / tps.bf16).toFixed(2)}`);
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const bandwidthGBs = measureRoofline({ bandwidthBytes: 512 << 20, iters: 3 }).bandwidthGBs;
const summary = { shape: opts.shape, format: fmt, threads: getThreads(), step, medianBf16: median(rows.map((r) => r.bf16)),
  medianQuant: median(rows.map((r) => r.quant)), medianRatio: median(rows.map((r) => r.ratio)), bandwidthGBs };
console.log(`median: bf16 ${summary.medianBf16.toFixed(2)} tok/s, ${fmt} ${summary.medianQuant.toFixed(2)} tok/s, ` +
  `${fmt}/bf16 ${summary.medianRatio.toFixed(2)} (${summary.threads} threads; bandwidth afterwards ${bandwidthGBs.toFixed(1)} GB/s)`);
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, JSON.stringify({ date: new Date().toISOString(), ...summary, rows }, null, 2) + '\n');
console.log(`wrote ${outPath}`);
