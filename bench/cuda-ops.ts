// Where a cuda decode step's time goes: the host cost of one op call (wall time per call over many calls, the device
// kept busy or not), against the device time of the same ops (events), and a whole decode step's wall time against
// its device time. Run on the GPU machine: node dist/bench/cuda-ops.js [--shape llama-3-8b]
import { parseArgs } from 'node:util';
import { cudaBackend as cuda } from '../src/backend/cuda/index.js';
import { cudaStatus } from '../src/native/cuda-addon.js';
import { Weights } from '../src/models/model.js';
import { randomLlama } from '../src/models/random.js';
import { buildModel } from '../src/models/registry.js';
import { Tensor } from '../src/tensor/tensor.js';

const { values: opts } = parseArgs({ options: { shape: { type: 'string', default: 'llama-3-8b' } } });
const { addon, probe } = cudaStatus();
if (!addon) { console.error(`cuda-ops: ${probe.why}`); process.exit(1); }

function perCall(name: string, n: number, f: () => void): void {
  for (let i = 0; i < 50; i++) f();
  cuda.synchronize();
  const e0 = cuda.mark(), t0 = performance.now();
  for (let i = 0; i < n; i++) f();
  const host = (performance.now() - t0) / n;
  const e1 = cuda.mark();
  const gpu = cuda.elapsed(e0, e1) / n;
  console.log(`${name.padEnd(34)} host ${(host * 1000).toFixed(2).padStart(7)} µs/call   device ${(gpu * 1000).toFixed(2).padStart(7)} µs/call`);
}

const x = cuda.upload(new Tensor('F32', [1, 4096], new Float32Array(4096).fill(0.5)));
const w = cuda.randomTensor('BF16', [4096, 4096], 3, 0.02);
const nw = cuda.upload(new Tensor('F32', [4096], new Float32Array(4096).fill(1)));
const out = cuda.empty('F32', [1, 4096]);
perCall('backend.add + empty', 5000, () => cuda.add(x, x, cuda.empty('F32', [1, 4096])));
perCall('rmsnorm + empty', 5000, () => cuda.rmsnorm(x, nw, 1e-5, cuda.empty('F32', [1, 4096])));
perCall('matmul 4096x4096 bf16 M=1', 2000, () => cuda.matmul(x, w, null, out));

const { config, tensors } = randomLlama(opts.shape!, 'BF16', 1, {
  matrix: (dtype, shape, seed, std) => cuda.randomTensor(dtype, shape, seed, std),
  ones: (len) => cuda.upload(new Tensor('F32', [len], new Float32Array(len).fill(1))),
});
const model = buildModel(config, new Weights(tensors, opts.shape!), cuda);
const cache = model.createCache(1, 200);
cache.reserve(200);
let id = [5];
model.forward([id], { cache, logits: 'last' });
for (let s = 0; s < 5; s++) id = [cuda.argmax(model.forward([id], { cache, logits: 'last' }))[0]];
const steps = 40;
let hostMs = 0, devMs = 0, issueMs = 0;
for (let s = 0; s < steps; s++) {
  const t0 = performance.now(), e0 = cuda.mark();
  const logits = model.forward([id], { cache, logits: 'last' });
  const t1 = performance.now(), e1 = cuda.mark();
  id = [cuda.argmax(logits)[0]];
  hostMs += performance.now() - t0;
  issueMs += t1 - t0;
  devMs += cuda.elapsed(e0, e1);
}
// Per op, device time: an event pair around every backend op of one eager decode step and of one prefill, the
// launches queued behind a spin so the host never starves the device; summed per op and weight shape.
function breakdown(what: string, run: () => void): void {
  const be = cuda as unknown as Record<string, (...a: unknown[]) => unknown>;
  const saved = new Map<string, (...a: unknown[]) => unknown>();
  const marks: [string, object, object][] = [];
  for (const k of ['matmul', 'matmulMany', 'rmsnorm', 'rope', 'attention', 'siluMul', 'add', 'embedding', 'cacheWrite', 'copy']) {
    const f = be[k];
    saved.set(k, f);
    be[k] = (...a: unknown[]) => {
      const w = a[1] as Tensor | undefined;
      const key = k === 'matmul' && w ? `matmul ${w.shape.join('x')}` : k === 'matmulMany' ? `matmulMany ${(a[1] as Tensor[]).map((t) => t.shape[0]).join('+')}x${(a[1] as Tensor[])[0].shape[1]}` : k;
      const e0 = cuda.mark();
      const r = f.apply(cuda, a);
      marks.push([key, e0, cuda.mark()]);
      return r;
    };
  }
  try {
    addon!.spin(50e6);
    const t0 = cuda.mark();
    run();
    const t1 = cuda.mark();
    const total = cuda.elapsed(t0, t1);
    const sums = new Map<string, [number, number]>();
    for (const [k, a, b] of marks) { const v = sums.get(k) ?? [0, 0]; v[0] += cuda.elapsed(a, b); v[1]++; sums.set(k, v); }
    console.log(`${what}: ${total.toFixed(2)} ms on the device`);
    for (const [k, [ms, n]] of [...sums].sort((x, y) => y[1][0] - x[1][0])) console.log(`  ${k.padEnd(26)} ${ms.toFixed(3).padStart(8)} ms  ${String(n).padStart(4)} calls  ${(1000 * ms / n).toFixed(1).padStart(7)} µs each`);
  } finally {
    for (const [k, f] of saved) be[k] = f;
  }
}
breakdown('decode step, batch 1, eager', () => { id = [cuda.argmax(model.forward([id], { cache, logits: 'last' }))[0]]; });
breakdown('prefill 512 tokens', () => { const c2 = model.createCache(1, 512); model.forward([Array.from({ length: 512 }, (_, i) => (i * 31) % 1000)], { cache: c2, logits: 'last' }); cuda.synchronize(); });

// The device alone: the step's launches queued behind a 30 ms spin, timed from the spin's end.
let pureMs = 0;
for (let s = 0; s < 10; s++) {
  addon.spin(30e6);
  const e0 = cuda.mark();
  const logits = model.forward([id], { cache, logits: 'last' });
  const e1 = cuda.mark();
  id = [cuda.argmax(logits)[0]];
  pureMs += cuda.elapsed(e0, e1);
}
console.log(`decode step, device alone (launches queued behind a spin): ${(pureMs / 10).toFixed(2)} ms`);
console.log(`decode step (${opts.shape}, batch 1): wall ${(hostMs / steps).toFixed(2)} ms, host issue ${(issueMs / steps).toFixed(2)} ms, device span ${(devMs / steps).toFixed(2)} ms`);
