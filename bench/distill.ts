// Issue 11's distillation check: a smaller student made from eval-llama-16m (every other decoder layer kept: 4 of 8,
// same tokenizer), trained with LoRA (all linears) on the first 90% of tinyshakespeare.txt for the same steps twice:
// on the text alone, and with eval-llama-16m as the teacher (loss (1 − α)·CE + α·τ²·KL). Perplexity on the last 10%
// (GPTQ windows of --seqlen) for the untrained student, both runs and the teacher. Writes JSON.
// Run: npx tsc -p . && node dist/bench/distill.js [--steps 60] [--seqlen 128] [--alpha 0.5] [--temperature 2]
//      [--full] [--lr LR] [--out FILE]   (--full: the student trains whole instead of LoRA; default bench/out/distill.json;
//      data: LOWBIT_TEST_DATA or ../shared/data)
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { fromPretrained, type LoadedModel } from '../src/api.js';
import { perplexity } from '../src/eval/perplexity.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { PeftModel } from '../src/peft/lora.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { loadTrainingData } from '../src/train/data.js';
import { Trainer } from '../src/train/trainer.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');
const { values: o } = parseArgs({ options: {
  steps: { type: 'string', default: '60' }, seqlen: { type: 'string', default: '128' }, alpha: { type: 'string', default: '0.5' },
  temperature: { type: 'string', default: '2' }, out: { type: 'string' }, full: { type: 'boolean', default: false },
  lr: { type: 'string' },
} });
const data = process.env.LOWBIT_TEST_DATA ?? resolve(root, '..', 'shared', 'data');
const teacherDir = join(data, 'models', 'eval-llama-16m'), textPath = join(data, 'text', 'tinyshakespeare.txt');
if (!existsSync(teacherDir)) { console.error(`no ${teacherDir}: set LOWBIT_TEST_DATA`); process.exit(2); }
const steps = Number(o.steps), seqlen = Number(o.seqlen);

// The student: layers 0, 2, 4, 6 of the teacher, renumbered 0-3.
const studentDir = mkdtempSync(join(tmpdir(), 'lowbit-student-'));
process.on('exit', () => rmSync(studentDir, { recursive: true, force: true }));
const cfg = JSON.parse(readFileSync(join(teacherDir, 'config.json'), 'utf8'));
const keep = Array.from({ length: cfg.num_hidden_layers }, (_, i) => i).filter((i) => i % 2 === 0);
const src = readSafetensors(join(teacherDir, 'model.safetensors'));
const tensors = new Map<string, Tensor>();
for (const name of src.names()) {
  const m = /^model\.layers\.(\d+)\.(.*)$/.exec(name);
  if (!m) { tensors.set(name, src.get(name)); continue; }
  const j = keep.indexOf(Number(m[1]));
  if (j >= 0) tensors.set(`model.layers.${j}.${m[2]}`, src.get(name));
}
writeSafetensors(join(studentDir, 'model.safetensors'), tensors, { format: 'pt' });
writeFileSync(join(studentDir, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: keep.length }, null, 2));
for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) if (existsSync(join(teacherDir, f))) copyFileSync(join(teacherDir, f), join(studentDir, f));

const text = readFileSync(textPath, 'utf8');
const heldTokens = (m: LoadedModel) => m.tokenizer!.encode(text.slice(Math.floor(0.9 * text.length)));
const ppl = (m: LoadedModel) => perplexity(m.model, heldTokens(m), { seqLen: seqlen, maxWindows: 100 }).perplexity;

const teacher = await fromPretrained(teacherDir);
const results: Record<string, unknown> = { mode: o.full ? 'full' : 'lora', steps, seqlen, alpha: Number(o.alpha), temperature: Number(o.temperature), studentLayers: keep.length, teacherLayers: cfg.num_hidden_layers };
results.teacherPpl = ppl(teacher);
const fresh = await fromPretrained(studentDir);
results.studentPpl = ppl(fresh);
console.log(`teacher ppl ${(results.teacherPpl as number).toFixed(2)}, untrained student ppl ${(results.studentPpl as number).toFixed(2)}`);

for (const mode of ['text', 'distill'] as const) {
  const m = await fromPretrained(studentDir);
  const peft = o.full ? null : PeftModel.wrap(m.model, { r: 16, loraAlpha: 32, targetModules: 'all-linear', loraDropout: 0.05 }, { seed: 1 });
  const train = loadTrainingData(textPath, m.tokenizer!, { seqlen, range: [0, 0.9] });
  const outDir = mkdtempSync(join(tmpdir(), `lowbit-distill-${mode}-`));
  const t0 = performance.now();
  const r = new Trainer({
    ...(peft ? { peft } : { model: m.model }), trainDataset: train, padId: 0,
    teacher: mode === 'distill' ? { model: teacher.model, alpha: Number(o.alpha), temperature: Number(o.temperature) } : undefined,
    args: { outputDir: outDir, perDeviceTrainBatchSize: 1, gradientAccumulationSteps: 4, learningRate: Number(o.lr ?? (o.full ? 1e-4 : 1e-3)), warmupSteps: 4, maxSteps: steps, loggingSteps: 10, saveSteps: 0, seed: 3 },
  }).train();
  rmSync(outDir, { recursive: true, force: true });
  const p = ppl(m);
  results[`${mode}Ppl`] = p;
  results[`${mode}Seconds`] = (performance.now() - t0) / 1000;
  console.log(`${mode}: ppl ${p.toFixed(2)} after ${steps} steps (${r.trainSeconds.toFixed(0)} s; logged loss ${r.logHistory[0].loss.toFixed(3)} → ${r.logHistory.at(-1)!.loss.toFixed(3)})`);
}
const outPath = resolve(o.out ?? join(root, 'bench', 'out', 'distill.json'));
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, JSON.stringify(results, null, 2) + '\n');
console.log(`wrote ${outPath}`);
