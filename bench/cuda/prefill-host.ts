// Where the host's time goes while it queues a prefill on the GPU: every cuda backend op is wrapped (wall clock around
// each call), a random bf16 model of a real shape prefills T tokens a few times, and the ops are listed by their total
// host time, with each op's slowest single call, then the collector's pauses in the timed window. A call that waits
// (for the device, or for a collection that V8 starts because the addon reports device bytes as external memory)
// shows as one slow call; the device then idles while the host catches up. The last line sets the host's queueing
// time against the wall time of the whole prefill (device work included).
// Run on the GPU machine: node dist/bench/cuda/prefill-host.js [--shape llama-3-8b] [--tokens 512] [--reps 3]
//   (LOWBIT_CUDA_V8_EXTERNAL=0 for the A/B without the external-memory report; docs/cuda.md, session 12)
import { PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { cudaBackend as cuda } from '../../src/backend/cuda/index.js';
import { cudaStatus } from '../../src/native/cuda-addon.js';
import { Weights } from '../../src/models/model.js';
import { randomLlama } from '../../src/models/random.js';
import { buildModel } from '../../src/models/registry.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { wrapOps } from '../op-timer.js';

const { values } = parseArgs({ options: { shape: { type: 'string', default: 'llama-3-8b' }, tokens: { type: 'string', default: '512' }, reps: { type: 'string', default: '3' } } });
const T = Number(values.tokens), reps = Number(values.reps);

const { config, tensors } = randomLlama(values.shape!, 'BF16', 1, {
  matrix: (dtype, shape, seed, std) => cuda.randomTensor(dtype, shape, seed, std),
  ones: (len) => cuda.upload(new Tensor('F32', [len], new Float32Array(len).fill(1))),
});
const model = buildModel(config, new Weights(tensors, values.shape!), cuda);

const stats = new Map<string, { total: number; max: number; calls: number }>();
let on = false;
const record = (prefix: string) => (k: string, _a: unknown[], ms: number) => {
  if (!on) return;
  const s = stats.get(prefix + k) ?? { total: 0, max: 0, calls: 0 };
  s.total += ms; s.max = Math.max(s.max, ms); s.calls++;
  stats.set(prefix + k, s);
};
wrapOps(cuda, record(''));
// The addon's own calls under `empty` and `release` (device allocation and free), and the garbage collector's pauses.
wrapOps(cudaStatus().addon!, record('addon.'), ['alloc', 'free']);
// Entries arrive after the fact: keep them all and count those that started inside the timed window.
const gcEntries: { start: number; ms: number }[] = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) gcEntries.push({ start: e.startTime, ms: e.duration }); }).observe({ entryTypes: ['gc'] });

const ids = [Array.from({ length: T }, (_, t) => (t * 31 + 5) % config.vocab_size)];
const prefill = (): { queued: number; wall: number } => {
  const t0 = performance.now();
  const cache = model.createCache(1, T);
  model.forward(ids, { cache, logits: 'last' });
  const t1 = performance.now();
  cuda.synchronize();
  return { queued: t1 - t0, wall: performance.now() - t0 };
};
prefill();
cuda.synchronize();
on = true;
let queued = 0, wall = 0;
const w0 = performance.now();
for (let i = 0; i < reps; i++) { const r = prefill(); queued += r.queued; wall += r.wall; }
const w1 = performance.now();
on = false;
console.log(`${values.shape} bf16, ${T}-token prefill, ${reps} runs: host time per op a prefill (ms), slowest call (ms), calls a prefill`);
for (const [k, s] of [...stats].sort((a, b) => b[1].total - a[1].total)) {
  console.log(`${k.padEnd(16)} ${(s.total / reps).toFixed(2).padStart(9)} ${s.max.toFixed(3).padStart(9)} ${String(s.calls / reps).padStart(6)}`);
}
await new Promise((r) => setTimeout(r, 50));  // the gc observer's entries arrive asynchronously
const gcs = gcEntries.filter((e) => e.start >= w0 && e.start < w1), gcMs = gcs.reduce((a, e) => a + e.ms, 0);
console.log(`garbage collection: ${(gcMs / reps).toFixed(2)} ms in ${(gcs.length / reps).toFixed(1)} pauses a prefill`);
console.log(`queued in ${(queued / reps).toFixed(1)} ms a prefill; wall ${(wall / reps).toFixed(1)} ms (the device's work included)`);
