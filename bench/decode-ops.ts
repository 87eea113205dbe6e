// Where a decode step's time goes: every backend op of a random-weight model of a real shape is timed (wall clock
// around each call, so the thread pool's wake-ups count against the op that waited), summed per op and weight shape
// over a number of decode steps, and set against the step's total; "other" is the JavaScript between ops. Pair it
// with a kernel bench (bench/kernels.ts) to tell a slow kernel from time spent outside kernels.
// Run: npx tsc -p . && node dist/bench/decode-ops.js [--shape tinyllama-1.1b] [--format bf16|int8|nf4|nf4-dq|fp4|gptq2|3|4|8]
//      [--steps 16] [--cpu-prof FILE]   (env LOWBIT_THREADS; --cpu-prof writes a V8 CPU profile of the timed steps only,
//      for Chrome DevTools or a script, to see where the JavaScript between ops goes)
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { timeCpuOps } from './op-timer.js';
import { parseArgs } from 'node:util';
import { cpuInfo, getThreads } from '../src/backend/cpu/index.js';
import { loadAddon } from '../src/native/addon.js';
import { parseGptqConfig } from '../src/io/gptqconfig.js';
import { parseQuantizationConfig, type BitsAndBytesConfig } from '../src/io/quantconfig.js';
import { Weights } from '../src/models/model.js';
import { randomLlama } from '../src/models/random.js';
import { buildModel } from '../src/models/registry.js';
import { quantizeLoadedGptq } from '../src/quant/gptq-run.js';
import type { QuantizedWeight } from '../src/quant/qweight.js';
import type { Tensor } from '../src/tensor/tensor.js';

const { values: opts } = parseArgs({
  options: { shape: { type: 'string', default: 'tinyllama-1.1b' }, format: { type: 'string', default: 'bf16' }, steps: { type: 'string', default: '16' }, 'cpu-prof': { type: 'string' } },
});
const fmt = opts.format!, steps = Number(opts.steps);
const bnb: Record<string, BitsAndBytesConfig> = { int8: { loadIn8bit: true }, nf4: { loadIn4bit: true, bnb4bitQuantType: 'nf4' }, fp4: { loadIn4bit: true, bnb4bitQuantType: 'fp4' },
  'nf4-dq': { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true } };
const gptqBits = /^gptq[2348]$/.test(fmt) ? Number(fmt.slice(4)) : null;
if ((fmt !== 'bf16' && !bnb[fmt] && !gptqBits) || !(steps >= 1)) {
  console.error('usage: node dist/bench/decode-ops.js [--shape NAME] [--format bf16|int8|nf4|nf4-dq|fp4|gptq2|gptq3|gptq4|gptq8] [--steps N]');
  process.exit(2);
}

// Time every op of the backend the model calls, matmuls by weight shape.
const timer = timeCpuOps((k, a) => {
  const w = a[1] as Tensor | QuantizedWeight | undefined;
  return k.startsWith('matmul') && w ? `${k} ${'shape' in w && Array.isArray(w.shape) ? w.shape.join('x') : ''}` : k;
});
const { backend, times } = timer;

const { config, tensors } = randomLlama(opts.shape!, 'BF16');
const quantize = bnb[fmt] ? parseQuantizationConfig(bnb[fmt], 'decode-ops', { where: '--format', strict: true }) : undefined;
const model = buildModel(config, new Weights(tensors, opts.shape!), backend, { quantize });
if (gptqBits) {
  const spec = parseGptqConfig({ quant_method: 'gptq', bits: gptqBits, group_size: 128, sym: true, desc_act: false }, 'decode-ops', { strict: true });
  quantizeLoadedGptq({ tokenizer: null, dir: 'decode-ops', quantizationConfig: null, model }, spec!, { method: 'rtn' });
}
const cache = model.createCache(1, 8 + 3 + steps + 1);
cache.reserve(8 + 3 + steps + 1);
model.forward([Array.from({ length: 8 }, (_, i) => i * 13 + 5)], { cache, logits: 'last' });
for (let i = 0; i < 3; i++) model.forward([[7 + i]], { cache, logits: 'last' });   // warm-up (GPTQ packs its weights at first use)
const inspector = opts['cpu-prof'] ? new Session() : null;
const post = (method: string, params?: object): Promise<unknown> =>
  new Promise((resolve, reject) => inspector!.post(method, params ?? {}, (err, res) => (err ? reject(err) : resolve(res))));
if (inspector) { inspector.connect(); await post('Profiler.enable'); await post('Profiler.setSamplingInterval', { interval: 100 }); await post('Profiler.start'); }
const stats0 = loadAddon()?.poolStats();
timer.on = true;
const t0 = performance.now();
for (let i = 0; i < steps; i++) model.forward([[11 + i]], { cache, logits: 'last' });
const step = (performance.now() - t0) / steps;
timer.on = false;
if (inspector) {
  const { profile } = await post('Profiler.stop') as { profile: unknown };
  writeFileSync(opts['cpu-prof']!, JSON.stringify(profile));
  inspector.disconnect();
}
let ops = 0;
console.log(`${opts.shape} ${fmt}, ${getThreads()} thread(s), ${steps} decode steps: ms per step`);
for (const [k, v] of [...times].sort((x, y) => y[1] - x[1])) {
  ops += v / steps;
  console.log(`  ${k.padEnd(24)} ${(v / steps).toFixed(2).padStart(7)}`);
}
const stats1 = loadAddon()?.poolStats();
const getCpuWidth = (): number => cpuInfo().activeThreads;
if (stats0 && stats1) {
  console.log(`thread pool over the timed steps: ${stats1.jobs - stats0.jobs} split jobs, ${stats1.stalls - stats0.stalls} stalls ` +
    `(a worker off its core ≥ 250 µs; each halves the split width for a while), split width now ${getCpuWidth()}`);
}
console.log(`  ${'(JavaScript between ops)'.padEnd(24)} ${(step - ops).toFixed(2).padStart(7)}\n  ${'step'.padEnd(24)} ${step.toFixed(2).padStart(7)}`);
