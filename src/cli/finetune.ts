// `lowbit finetune`: LoRA / QLoRA on a (quantized-on-load) base with the Trainer (src/train/trainer.ts), writing a
// PEFT adapter folder; `lowbit merge`: a base plus an adapter → a plain checkpoint folder.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromPretrained, type LoadedModel } from '../api.js';
import { writeFileAtomic } from '../util/fs.js';
import { GPTQConfig } from '../io/gptqconfig.js';
import { savePretrained } from '../io/save.js';
import { Linear } from '../nn/layers.js';
import { PeftModel } from '../peft/lora.js';
import { fromF32Array } from '../tensor/dtype.js';
import { Tensor } from '../tensor/tensor.js';
import { loadTrainingData } from '../train/data.js';
import { Trainer, type LogEntry } from '../train/trainer.js';
import { SCHEDULERS, type SchedulerType } from '../train/optim.js';
import { intOpt, numOpt, parseCommand, renderProgress, UsageError } from './args.js';
import { setThreadsOption } from './common.js';
import { cudaAvailable } from '../backend/cuda/index.js';

export const finetuneHelp = `lowbit finetune — train a LoRA adapter (QLoRA on a quantized base) and save it in PEFT's format

Usage: lowbit finetune <model folder | org/name> --data FILE --out DIR [options]

The base is frozen (quantized on load with --quantize, or already quantized: GPTQ, AWQ, bitsandbytes folders load as
they are); LoRA adapters go on --target-modules; AdamW trains them with transformers' Trainer semantics. DIR receives
adapter_config.json + adapter_model.safetensors (PEFT's files: PeftModel.from_pretrained loads them), trainer_state.json,
loss.csv and loss.svg; with --save-steps, checkpoint-N folders (each written whole, then renamed) that --resume
continues from with the same loss curve.

Data (--data): a text file (one token stream cut into blocks of --seqlen; --data-range 0,0.9 takes the first 90% of its
characters), JSONL ({"text"}, chat {"messages"} through the chat template, {"prompt","completion"}, or the rows of
"lowbit generate --prompts-file --json"), or CSV with a "text" column.

Options:
  --quantize Q            nf4, fp4 or int8 (bitsandbytes, on load), or gptq4 (GPTQ on load, calibrated on --data)
  --double-quant          nf4/fp4: quantize the block scales too
  --lora-r R              rank (default 8)
  --lora-alpha A          scaling numerator (default 32; scaling = alpha / r)
  --lora-dropout P        dropout on the adapters' input (default 0.05)
  --target-modules LIST   comma-separated names, or all-linear (default q_proj,k_proj,v_proj,o_proj)
  --bias B                none (default), all (every bias and LayerNorm bias trains too) or lora_only
  --modules-to-save LIST  float linear layers trained whole and saved with the adapter (e.g. lm_head)
  --batch-size N          per_device_train_batch_size (default 1)
  --grad-accum N          gradient_accumulation_steps (default 4)
  --lr LR                 learning_rate (default 2e-4)
  --warmup-steps N        (default 2)
  --max-steps N           optimizer steps (default 20); or --epochs E
  --scheduler S           linear (default), cosine, constant_with_warmup, constant
  --weight-decay W        (default 0)
  --max-grad-norm G       (default 1.0; 0 = no clipping)
  --seqlen N              tokens per example (default 256, at most the model's positions)
  --data-range A,B        text files: the fraction of characters to train on (default 0,1)
  --packing               JSONL/CSV: join records and cut full blocks
  --assistant-only        chat records: the loss on the assistant turns only
  --full                  full fine-tuning instead of LoRA: every weight of a float model trains; DIR receives
                          model.safetensors (float32) with the model's config and tokenizer files
  --gradient-checkpointing  keep one layer's activations at a time (recompute in the backward)
  --logging-steps N       (default 1)
  --save-steps N          checkpoint every N steps (default 0: none)
  --resume                continue from the newest checkpoint-N in DIR
  --seed S                (default 42)
  --threads N             CPU threads
  --device cpu|cuda       where the model loads and trains (default cpu). cuda: an NVIDIA GPU (the base quantized on
                          the host with --quantize nf4/fp4/int8, then trained on the device); LoRA adapters only
                          (--full, --teacher, --bias all/lora_only and --modules-to-save train on the cpu)
  --teacher MODEL         knowledge distillation from a larger model with the same tokenizer: the loss becomes
                          (1 − A)·CE + A·T²·KL(teacher ‖ student) on logits softened by T
  --distill-alpha A       weight of the KL term (default 0.5)
  --distill-temperature T softening temperature (default 2.0)

Examples:
  lowbit finetune ./eval-llama-16m --quantize nf4 --data tinyshakespeare.txt --data-range 0,0.9 --seqlen 128 --out ./lora
  lowbit finetune ./TinyLlama-1.1B --quantize nf4 --data chats.jsonl --assistant-only --max-steps 200 --out ./tl-lora
`;

const OPTIONS = {
  data: { type: 'string' }, out: { type: 'string' }, quantize: { type: 'string' }, 'double-quant': { type: 'boolean', default: false },
  'lora-r': { type: 'string' }, 'lora-alpha': { type: 'string' }, 'lora-dropout': { type: 'string' }, 'target-modules': { type: 'string' },
  'batch-size': { type: 'string' }, 'grad-accum': { type: 'string' }, lr: { type: 'string' }, 'warmup-steps': { type: 'string' },
  'max-steps': { type: 'string' }, epochs: { type: 'string' }, scheduler: { type: 'string' }, 'weight-decay': { type: 'string' },
  'max-grad-norm': { type: 'string' }, seqlen: { type: 'string' }, 'data-range': { type: 'string' }, packing: { type: 'boolean', default: false },
  'assistant-only': { type: 'boolean', default: false }, 'gradient-checkpointing': { type: 'boolean', default: false },
  'logging-steps': { type: 'string' }, 'save-steps': { type: 'string' }, resume: { type: 'boolean', default: false }, seed: { type: 'string' },
  threads: { type: 'string' }, device: { type: 'string' }, revision: { type: 'string' }, json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' },
  teacher: { type: 'string' }, 'distill-alpha': { type: 'string' }, 'distill-temperature': { type: 'string' },
  bias: { type: 'string' }, 'modules-to-save': { type: 'string' }, full: { type: 'boolean', default: false },
} as const;

function biasOpt(b: string | undefined): 'none' | 'all' | 'lora_only' {
  if (b === undefined) return 'none';
  if (b === 'none' || b === 'all' || b === 'lora_only') return b;
  throw new UsageError(`--bias "${b}" is unknown (choose none, all or lora_only)`);
}

async function loadBase(id: string, q: string | undefined, dq: boolean, data: string, seqlen: number, revision: string | undefined, device: 'cpu' | 'cuda'): Promise<LoadedModel> {
  const progress = renderProgress({ ttyOnly: true });
  if (q === undefined) return fromPretrained(id, { revision, onProgress: progress, device });
  if (q === 'nf4' || q === 'fp4') return fromPretrained(id, { revision, onProgress: progress, device, quantizationConfig: { loadIn4bit: true, bnb4bitQuantType: q, bnb4bitUseDoubleQuant: dq } });
  if (q === 'int8') return fromPretrained(id, { revision, onProgress: progress, device, quantizationConfig: { loadIn8bit: true } });
  if (q === 'gptq4') return fromPretrained(id, { revision, onProgress: progress, device, quantizationConfig: new GPTQConfig({ bits: 4, groupSize: 128, dataset: data, nsamples: 32, seqlen }) });
  throw new UsageError(`--quantize "${q}" is unknown (choose nf4, fp4, int8 or gptq4)`);
}

export async function runFinetune(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommand('finetune', argv, OPTIONS);
  if (v.help) { process.stdout.write(finetuneHelp); return 0; }
  if (positionals.length !== 1) throw new UsageError('give one model folder or Hub id');
  if (!v.data) throw new UsageError('--data FILE is required (a text, JSONL or CSV file)');
  if (!v.out) throw new UsageError('--out DIR is required');
  setThreadsOption(v.threads);
  const seqlenFlag = intOpt(v.seqlen, '--seqlen', 2);
  const range = v['data-range'] === undefined ? undefined : v['data-range'].split(',').map(Number) as [number, number];
  if (range && (range.length !== 2 || range.some((x) => !Number.isFinite(x)))) throw new UsageError(`--data-range must be two fractions "A,B", got "${v['data-range']}"`);
  const scheduler = (v.scheduler ?? 'linear') as SchedulerType;
  if (!SCHEDULERS.includes(scheduler)) throw new UsageError(`--scheduler "${v.scheduler}" is unknown (choose ${SCHEDULERS.join(', ')})`);
  const targets = (v['target-modules'] ?? 'q_proj,k_proj,v_proj,o_proj').split(',').map((s) => s.trim()).filter(Boolean);

  const device = v.device ?? 'cpu';
  if (device !== 'cpu' && device !== 'cuda') throw new UsageError(`--device "${device}" is unknown (choose cpu or cuda)`);
  if (device === 'cuda') {
    const cpuOnly = [['--full', v.full], ['--teacher', v.teacher !== undefined], ['--bias', v.bias !== undefined && v.bias !== 'none'],
      ['--modules-to-save', v['modules-to-save'] !== undefined], ['--quantize gptq4', v.quantize === 'gptq4']] as const;
    for (const [flag, on] of cpuOnly) if (on) throw new UsageError(`${flag} trains on the cpu backend for now; leave out --device cuda (the GPU trains LoRA adapters)`);
    const st = cudaAvailable();
    if (!st.ok) throw new UsageError(`--device cuda: ${st.why}`);
  }
  const m = await loadBase(positionals[0], v.quantize, v['double-quant']!, v.data, seqlenFlag ?? 256, v.revision, device);
  if (!m.tokenizer) throw new UsageError(`${m.dir}: no tokenizer.json, so the training text cannot be tokenized`);
  const seqlen = Math.min(seqlenFlag ?? 256, m.model.maxPositions);
  const data = loadTrainingData(v.data, m.tokenizer, { seqlen, range, packing: v.packing, assistantOnly: v['assistant-only'] });
  if (v.full && v.quantize !== undefined) throw new UsageError('--full trains every weight of a float model: leave out --quantize (QLoRA trains adapters on a quantized base)');
  const peft = v.full ? null : PeftModel.wrap(m.model, {
    r: intOpt(v['lora-r'], '--lora-r', 1) ?? 8, loraAlpha: numOpt(v['lora-alpha'], '--lora-alpha') ?? 32,
    loraDropout: numOpt(v['lora-dropout'], '--lora-dropout', (x) => x >= 0 && x < 1, 'a fraction in [0, 1)') ?? 0.05,
    targetModules: targets.length === 1 && targets[0] === 'all-linear' ? 'all-linear' : targets, taskType: 'CAUSAL_LM',
    bias: biasOpt(v.bias), modulesToSave: v['modules-to-save'] ? v['modules-to-save'].split(',').map((x) => x.trim()).filter(Boolean) : null,
    baseModelNameOrPath: positionals[0],
  }, { seed: intOpt(v.seed, '--seed') ?? 42 });
  peft?.printTrainableParameters((s) => process.stderr.write(s + '\n'));
  const padId = m.tokenizer.padTokenId ?? m.tokenizer.eosTokenId ?? 0;
  let teacher: { model: LoadedModel['model']; alpha: number; temperature: number } | undefined;
  if (v.teacher !== undefined) {
    const t = await fromPretrained(v.teacher, { onProgress: renderProgress({ ttyOnly: true }) });
    const sample = 'The quick brown fox: 0123456789, «ünïcödé».';
    if (!t.tokenizer || t.config.vocab_size !== m.config.vocab_size || t.tokenizer.encode(sample).join() !== m.tokenizer.encode(sample).join()) {
      throw new UsageError(`--teacher ${v.teacher}: its tokenizer (vocab_size ${t.config.vocab_size}) is not the student's (vocab_size ${m.config.vocab_size}); distillation needs a shared vocabulary`);
    }
    teacher = {
      model: t.model, alpha: numOpt(v['distill-alpha'], '--distill-alpha', (x) => x >= 0 && x <= 1, 'a number in [0, 1]') ?? 0.5,
      temperature: numOpt(v['distill-temperature'], '--distill-temperature', (x) => x > 0, 'a positive number') ?? 2,
    };
  } else if (v['distill-alpha'] !== undefined || v['distill-temperature'] !== undefined) throw new UsageError('--distill-alpha and --distill-temperature need --teacher');
  const epochs = numOpt(v.epochs, '--epochs', (x) => x > 0, 'a positive number');
  const bar = renderProgress({ label: 'train', ttyOnly: true });
  const t0 = performance.now();
  const trainer = new Trainer({
    ...(peft ? { peft } : { model: m.model }), trainDataset: data, padId, teacher,
    args: {
      outputDir: v.out, perDeviceTrainBatchSize: intOpt(v['batch-size'], '--batch-size', 1) ?? 1, gradientAccumulationSteps: intOpt(v['grad-accum'], '--grad-accum', 1) ?? 4,
      learningRate: numOpt(v.lr, '--lr', (x) => x > 0, 'a positive number') ?? 2e-4, warmupSteps: intOpt(v['warmup-steps'], '--warmup-steps') ?? 2,
      maxSteps: epochs !== undefined && v['max-steps'] === undefined ? -1 : intOpt(v['max-steps'], '--max-steps', 1) ?? 20, numTrainEpochs: epochs ?? 3,
      lrSchedulerType: scheduler, weightDecay: numOpt(v['weight-decay'], '--weight-decay', (x) => x >= 0, 'a non-negative number') ?? 0,
      maxGradNorm: numOpt(v['max-grad-norm'], '--max-grad-norm', (x) => x >= 0, 'a non-negative number') ?? 1,
      loggingSteps: intOpt(v['logging-steps'], '--logging-steps', 1) ?? 1, saveSteps: intOpt(v['save-steps'], '--save-steps') ?? 0,
      seed: intOpt(v.seed, '--seed') ?? 42, gradientCheckpointing: v['gradient-checkpointing'],
    },
    onStep: (s, total) => bar({ task: 'train', unit: 'steps', done: s, total, elapsedMs: performance.now() - t0 }),
    onLog: (e: LogEntry, total) => process.stderr.write(`step ${e.step}/${total}  loss ${e.loss.toFixed(4)}  lr ${e.learningRate.toExponential(3)}  grad_norm ${e.gradNorm.toFixed(4)}  ${e.tokensPerSec.toFixed(1)} tok/s\n`),
  });
  process.stderr.write(`${data.length} examples of up to ${seqlen} tokens; ${trainer.maxSteps} steps of ${trainer.args.perDeviceTrainBatchSize}×${trainer.args.gradientAccumulationSteps} examples\n`);
  const r = trainer.train({ resume: v.resume });
  if (v.full) {
    // A loadable folder: the trained weights beside the source's config, generation config and tokenizer files.
    for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
      if (existsSync(join(m.dir, f))) writeFileAtomic(join(v.out, f), readFileSync(join(m.dir, f)));
    }
  }
  const first = r.logHistory[0], last = r.logHistory[r.logHistory.length - 1];
  const summary = { out: v.out, steps: r.globalStep, resumedFrom: r.resumedFrom, firstLoss: first?.loss ?? null, lastLoss: last?.loss ?? null, trainSeconds: r.trainSeconds, tokens: r.tokens, tokensPerSec: r.tokens / r.trainSeconds };
  if (v.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else process.stdout.write(`trained ${r.globalStep} steps${r.resumedFrom !== null ? ` (resumed at ${r.resumedFrom})` : ''} in ${r.trainSeconds.toFixed(1)} s, ${summary.tokensPerSec.toFixed(1)} tok/s; loss ${first?.loss.toFixed(4)} → ${last?.loss.toFixed(4)}\n${v.full ? 'model' : 'adapter'}: ${v.out}\n`);
  return 0;
}

export const mergeHelp = `lowbit merge — fold a LoRA adapter into its base and save a plain checkpoint

Usage: lowbit merge <model folder | org/name> --adapter DIR --out DIR [--force]

The adapter (PEFT's adapter_config.json + adapter_model.safetensors) is added to the base weights (W + scaling·B·A)
and the result written as a transformers folder (config, weights, tokenizer files). A bitsandbytes base is
dequantized, merged and quantized again (lossy, with a warning); GPTQ and AWQ bases are refused, as in PEFT.

Examples:
  lowbit merge models/kjv-demo --adapter /tmp/kjv-lora --out /tmp/kjv-merged
  lowbit merge ./TinyLlama-1.1B --adapter ./tl-lora --out ./tl-merged --force
`;

const MERGE_OPTIONS = { adapter: { type: 'string' }, out: { type: 'string' }, force: { type: 'boolean', default: false }, revision: { type: 'string' }, help: { type: 'boolean', short: 'h' } } as const;

export async function runMerge(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommand('merge', argv, MERGE_OPTIONS);
  if (v.help) { process.stdout.write(mergeHelp); return 0; }
  if (positionals.length !== 1) throw new UsageError('give one model folder or Hub id');
  if (!v.adapter) throw new UsageError('--adapter DIR is required');
  if (!v.out) throw new UsageError('--out DIR is required');
  const m = await fromPretrained(positionals[0], { revision: v.revision, onProgress: renderProgress({ ttyOnly: true }) });
  const peft = PeftModel.fromPretrained(m.model, v.adapter);
  const merged = new Set(peft.loras.keys());
  peft.mergeAndUnload();
  // savePretrained writes float layers from the loaded tensors: put the merged weights there, in the checkpoint's
  // dtype (PEFT's merge leaves the base dtype).
  for (const [name, l] of m.model.linears()) {
    if (!merged.has(name) || !(l instanceof Linear)) continue;
    const key = `${name}.weight`, old = m.tensors.get(key);
    const dtype = old?.dtype ?? 'F32';
    m.tensors.set(key, new Tensor(dtype, l.weight.shape, fromF32Array(dtype, l.weight.toF32())));
    if (l.bias && m.tensors.has(`${name}.bias`)) m.tensors.set(`${name}.bias`, l.bias);
  }
  const saved = savePretrained(m, v.out, { overwrite: v.force });
  process.stdout.write(`merged ${v.adapter} into ${positionals[0]}: ${saved.dir}\n`);
  return 0;
}
