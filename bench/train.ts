// LoRA / QLoRA training speed (issue 11): a random-weight model of a real shape (bf16, or NF4 quantized on build),
// LoRA r=8 on q/k/v/o (seed 002's config), one batch of --batch × --seqlen tokens. Measured in the same run: the
// inference forward of that batch (all logits, as the loss needs), a training step (forward + backward, with and
// without gradient checkpointing), and their ratio; training tokens/s. Also where a step's time goes (backend ops
// timed; the rest is the TypeScript ops of src/train/ops.ts and glue).
// Run: npx tsc -p . && node dist/bench/train.js [--shape tinyllama-1.1b] [--format nf4|bf16] [--seqlen 256] [--batch 1]
//      [--steps 2] [--out FILE]   (default bench/out/train.json; env LOWBIT_THREADS)
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { timeCpuOps } from './op-timer.js';
import { getThreads } from '../src/backend/cpu/index.js';
import { parseQuantizationConfig } from '../src/io/quantconfig.js';
import type { DecoderLM } from '../src/models/model.js';
import { Weights } from '../src/models/model.js';
import { randomLlama } from '../src/models/random.js';
import { buildModel } from '../src/models/registry.js';
import { PeftModel } from '../src/peft/lora.js';
import { TrainEngine } from '../src/train/engine.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values: o } = parseArgs({ options: {
  shape: { type: 'string', default: 'tinyllama-1.1b' }, format: { type: 'string', default: 'nf4' }, seqlen: { type: 'string', default: '256' },
  batch: { type: 'string', default: '1' }, steps: { type: 'string', default: '2' }, out: { type: 'string' },
} });
const T = Number(o.seqlen), B = Number(o.batch), steps = Number(o.steps);
if (o.format !== 'nf4' && o.format !== 'bf16') { console.error('--format must be nf4 or bf16'); process.exit(2); }

const timer = timeCpuOps();
const { backend, times } = timer;

const { config, tensors } = randomLlama(o.shape!, 'BF16');
const quantize = o.format === 'nf4' ? parseQuantizationConfig({ loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }, 'bench', { where: '--format', strict: true }) : undefined;
const model = buildModel(config, new Weights(tensors, o.shape!), backend, { quantize }) as DecoderLM;
const peft = PeftModel.wrap(model, { r: 8, loraAlpha: 32, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], loraDropout: 0.05 });
const V = config.vocab_size;
const ids = Int32Array.from({ length: B * T }, (_, i) => (i * 7919 + 13) % V);
const batch = { ids, labels: ids, B, T, mask: null };

const time = (fn: () => void): number => { const t = performance.now(); fn(); return performance.now() - t; };
model.forward({ ids, batch: B });                                              // warm-up (packs, caches)
const results: Record<string, unknown> = { shape: o.shape, format: o.format, seqlen: T, batch: B, threads: getThreads(), loraParams: peft.trainableParameters().trainable };
const fwd: number[] = [], step: number[] = [], ckpt: number[] = [];
for (let i = 0; i < steps; i++) {
  fwd.push(time(() => model.forward({ ids, batch: B })));
  const e = new TrainEngine(model, { training: true });
  e.zeroGrad();
  times.clear();
  timer.on = true;
  step.push(time(() => e.forwardBackward(batch)));
  timer.on = false;
  if (i === 0) results.stepBackendMs = Object.fromEntries([...times].map(([k, v]) => [k, Math.round(v)]));
  const c = new TrainEngine(model, { training: true, gradientCheckpointing: true });
  c.zeroGrad();
  ckpt.push(time(() => c.forwardBackward(batch)));
}
const best = (a: number[]) => Math.min(...a);
Object.assign(results, {
  forwardMs: best(fwd), stepMs: best(step), stepCheckpointedMs: best(ckpt),
  stepOverForward: best(step) / best(fwd), checkpointedOverForward: best(ckpt) / best(fwd),
  trainTokensPerSec: (B * T) / (best(step) / 1000), trainTokensPerSecCheckpointed: (B * T) / (best(ckpt) / 1000),
});
const backendMs = Object.values(results.stepBackendMs as Record<string, number>).reduce((a, b) => a + b, 0);
results.stepOutsideBackendMs = Math.round(best(step) - backendMs);
console.log(JSON.stringify(results, null, 2));
const outPath = resolve(o.out ?? join(here, '..', '..', 'bench', 'out', 'train.json'));
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, JSON.stringify(results, null, 2) + '\n');
