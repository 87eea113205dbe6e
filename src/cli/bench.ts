// `lowbit bench`: prefill and decode speed of a real or random model, each set against this machine's measured
// roofline (decode: weight bytes per token over memory bandwidth; prefill: FLOPs over fp32 FMA peak). Decode is
// measured twice: on its own, and beside one busy process that the bench starts and stops itself, since a machine
// with every core free is the exception (see the thread pool notes in native/cpu/pool.h).
import { runCudaBench } from './bench-cuda.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { fromPretrained } from '../api.js';
import { getThreads, measureRoofline } from '../backend/cpu/index.js';
import { getBackend } from '../backend/index.js';
import { saveStateDict } from '../io/checkpoint.js';
import type { ModelConfig } from '../io/config.js';
import { modelShape } from '../plan/plan.js';
import { pyFloat, pyJsonDumps } from '../util/pyjson.js';
import { writeFileAtomic } from '../util/fs.js';
import type { CausalLM } from '../models/model.js';
import type { KVCache } from '../nn/kvcache.js';
import { Weights } from '../models/model.js';
import type { QuantizedLayerEvent } from '../models/factory.js';
import { parseQuantizationConfig, type BitsAndBytesConfig } from '../io/quantconfig.js';
import { AwqLinear, GptqLinear, Linear4bit, Linear8bitLt, QuantLinear } from '../nn/quant.js';
import { Linear } from '../nn/layers.js';
import { parseAwqConfig } from '../io/awqconfig.js';
import { installAwq } from '../models/factory.js';
import { awqRtnCodes, awqShapeProblem } from '../quant/awq-format.js';
import type { GptqCodes } from '../quant/gptq-types.js';
import type { QuantizedWeight } from '../quant/qweight.js';
import type { Backend } from '../backend/backend.js';
import { randomLlama, SHAPES } from '../models/random.js';
import { buildModel } from '../models/registry.js';
import { Tensor } from '../tensor/tensor.js';
import { join } from 'node:path';
import { intOpt, parseCommand, renderProgress, UsageError } from './args.js';
import { setThreadsOption } from './common.js';
import { mkdirSync } from 'node:fs';
import { progressReporter } from '../util/progress.js';
import { parseGptqConfig } from '../io/gptqconfig.js';
import { quantizeLoadedGptq } from '../quant/gptq-run.js';
import type { GptqBits } from '../quant/gptq-types.js';

export const benchHelp = `lowbit bench — measure prefill and decode speed against this machine's roofline

Usage: lowbit bench --shape NAME [--dtype bf16|f32|f16] [--format FORMAT [--double-quant] [--compare]]
       lowbit bench --device cuda --shape NAME [--format bf16|gptq4|awq4|nf4|int8] [--batch 1,16] [--prompt-len 128] [--decode-len 128]
                    [--prefill-len 512] [--eager] [--train] [--json]   (an NVIDIA GPU: random weights made on the device; decode share of
                    the copy-bandwidth roofline and prefill share of the bf16 GEMM peak, both measured in the run; gptq4/awq4/nf4/int8: random
                    4-bit codes (group 128; nf4 block 64, bf16), every decoder linear; the roofline counts the bytes the kernels read;
                    --train: a LoRA training step instead (QLoRA with nf4; r 16 on every decoder linear, --prefill-len tokens a step):
                    tokens/s and the step/forward ratio)
                    [--threads N] [--prompt-len 128] [--decode-len 128] [--no-competitor] [--roofline-bytes N] [--json]
       lowbit bench --shape NAME --dtype bf16 --write-model DIR   (save the random model as an HF folder)
       lowbit bench <model dir> [--format FORMAT [--double-quant] [--compare]] [--threads N] [--no-mmap]
                    [--roofline-bytes N] [--json]

Shapes: ${Object.keys(SHAPES).join(', ')} (random weights, built in memory).
--format quantizes every linear layer but lm_head as it is built, exactly as fromPretrained's quantizationConfig
does (bitsandbytes NF4/FP4 at block 64, --double-quant for the scales; or LLM.int8), with the reference quantizers
in plain TypeScript: a tinyllama-1.1b shape takes about 40 s for nf4 and 20-35 s for int8 on 2 cores; a line per
decoder layer goes to stderr. FORMAT is int8, nf4, fp4, or gptq2 / gptq3 / gptq4 / gptq8: GPTQ's grid and AutoGPTQ's
packing (symmetric, group 128) by round-to-nearest, since the kernels' speed does not depend on the values and GPTQ
proper needs calibration data (lowbit quantize --method gptq writes a real one, which benches as a folder); or awq4:
AWQ's zero-point grid (4-bit, group 128) by round-to-nearest, packed as AutoAWQ's GEMM layers (layers whose
in_features is not a multiple of 128 stay float, as AWQ cannot hold them; stderr says how many). A model folder
saved quantized (lowbit quantize) benches as it is, without --format.
--compare measures the float model beside the quantized one, in the same process against the same roofline, and
prints quantized / float speed-ups (JSON: baseline, decodeSpeedup, prefillSpeedup): a ratio from one run, which a
noisy machine distorts far less than two runs' absolute numbers. Each model prefills in turn; then their decode
steps alternate in rounds of 4 tokens (which model goes first flips every round), so a slow minute on a shared
machine falls on both; each model's decode time is the sum of its rounds.
The report names the backend that ran the quantized matmul: cpu's native kernels for nf4/fp4, int8, gptq and awq; a format a
backend has no kernel for falls back to ref with a warning (plain TypeScript, slow: use a short --decode-len).
Decode is reported as a fraction of the bandwidth roofline (weight bytes read per token / measured bandwidth; for a
quantized layer its packed codes and scales: 4-bit codes + absmax or its 8-bit codes + nested absmax, int8 codes +
SCB, GPTQ qweight + qzeros + scales + g_idx, AWQ qweight + qzeros + scales); prefill as a fraction of the measured fp32 FMA peak. Decode runs a second time beside one busy process (a child
that spins on one core and is stopped afterwards) to show how the speed holds up when a core is taken;
--no-competitor skips that row. The bandwidth probe reads a buffer of --roofline-bytes (default 1 GiB, at least
1 MiB; a buffer that fits in the caches overstates the bandwidth). Progress goes to stderr, with --json too. The
default thread count is LOWBIT_THREADS when set, else the physical cores (at most 16).

Examples:
  lowbit bench --shape tinyllama-1.1b --dtype bf16
  lowbit bench --shape tinyllama-1.1b --dtype f32 --threads 2 --json
  lowbit bench --shape tinyllama-1.1b --format nf4 --double-quant --compare
  lowbit bench --shape tinyllama-1.1b --format gptq4 --compare
  lowbit bench --shape tinyllama-1.1b --format awq4 --compare
  lowbit bench models/kjv-demo --format int8 --decode-len 16
  lowbit bench --shape tinyllama-1.1b --dtype bf16 --write-model /tmp/tl && lowbit bench /tmp/tl
`;

export interface BenchResult {
  model: string; dtype: string; threads: number; promptLen: number; decodeLen: number;
  loadMs: number | null; prefillTokPerSec: number; decodeTokPerSec: number;
  bandwidthGBs: number; peakGflops: number; decodeRoofline: number; prefillOfPeak: number;
  bytesPerToken: number; prefillFlops: number;
  /** Quantization of the linear layers (nf4, fp4, int8; "nf4+fp4" if mixed), or null for a float model. */
  format: string | null;
  /** Whether the 4-bit layers' scales are double-quantized (null: no 4-bit layer). */
  doubleQuant: boolean | null;
  /** Who ran the quantized matmul: "cpu" (native kernel) or "ref" (fallback); null for a float model. */
  quantBackend: string | null;
  /** Milliseconds spent quantizing on load (--format), else null. */
  quantizeMs: number | null;
  /** Decode beside one busy process (null with --no-competitor), its roofline fraction, and idle / contended. */
  decodeContendedTokPerSec: number | null; decodeContendedRoofline: number | null; contendedSlowdown: number | null;
  /** --compare: the float model measured first in the same run (null without --compare). */
  baseline: {
    prefillTokPerSec: number; decodeTokPerSec: number; decodeRoofline: number; prefillOfPeak: number; bytesPerToken: number;
    decodeContendedTokPerSec: number | null; decodeContendedRoofline: number | null;
  } | null;
  /** --compare: quantized tok/s over float tok/s, decode and prefill (null without --compare). */
  decodeSpeedup: number | null;
  prefillSpeedup: number | null;
}

/**
 * Bytes a quantized layer's matmul reads per token: the codes and the scales (4-bit: packed codes + float32 absmax,
 * or with double quant its 8-bit codes + nested absmax; int8: codes + SCB; GPTQ: qweight, qzeros, scales, g_idx; AWQ:
 * qweight, qzeros, scales), as
 * quantStats counts them in a file. The
 * fixed per-layer tables (16 code values, the 256-entry nested map) are left out, as there.
 */
export function quantizedBytes(q: QuantizedWeight): number {
  if (q.format === 'int8') return q.int8.CB.byteLength + q.int8.SCB.byteLength;
  if (q.format === 'gptq') { const g = q.gptq; return g.qweight.byteLength + g.qzeros.byteLength + g.scales.byteLength + g.gIdx.byteLength; }
  if (q.format === 'awq') { const a = q.awq; return a.qweight.byteLength + a.qzeros.byteLength + a.scales.byteLength; }
  const w = q.bnb4;
  return w.packed.byteLength + (w.absmax?.byteLength ?? 0) + (w.nested ? w.nested.qabsmax.byteLength + w.nested.nestedAbsmax.byteLength : 0);
}

/** Weight bytes a decode step must read (every linear + one embedding row) and the matmul FLOPs of a prefill. */
function costs(model: CausalLM, cfg: ModelConfig, T: number): { bytesPerToken: number; prefillFlops: number } {
  let bytes = 0, flops = 0;
  for (const [name, lin] of model.linears()) {
    const w = (lin as { weight?: Tensor }).weight;
    const b = lin instanceof QuantLinear ? quantizedBytes(lin.qweight)
      : w ? w.byteLength : lin.inFeatures * lin.outFeatures * 2;
    bytes += b;
    // Prefill computes logits for the last position only.
    flops += 2 * lin.inFeatures * lin.outFeatures * (name === 'lm_head' ? 1 : T);
  }
  const { layers, heads, headDim } = modelShape(cfg);
  flops += layers * heads * headDim * 2 * T * (T + 1);  // q·kᵀ and p·v over the causal triangle
  bytes += cfg.hidden_size * 2;
  return { bytesPerToken: bytes, prefillFlops: flops };
}

const FORMATS = ['int8', 'nf4', 'fp4', 'gptq2', 'gptq3', 'gptq4', 'gptq8', 'awq4'];

export async function runBench(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand('bench', argv, {
      shape: { type: 'string' }, dtype: { type: 'string', default: 'bf16' }, threads: { type: 'string' },
      'prompt-len': { type: 'string', default: '128' }, 'decode-len': { type: 'string', default: '128' },
      json: { type: 'boolean', default: false }, 'write-model': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      'no-competitor': { type: 'boolean', default: false }, 'no-mmap': { type: 'boolean', default: false },
      'roofline-bytes': { type: 'string' }, format: { type: 'string' }, 'double-quant': { type: 'boolean', default: false },
      compare: { type: 'boolean', default: false }, device: { type: 'string', default: 'cpu' }, batch: { type: 'string' },
      'prefill-len': { type: 'string', default: '512' }, eager: { type: 'boolean', default: false }, train: { type: 'boolean', default: false },
  });
  if (values.help) { process.stdout.write(benchHelp); return 0; }
  if (values.device !== 'cpu' && values.device !== 'cuda') throw new UsageError(`--device "${values.device}" is unknown (choose cpu or cuda)`);
  if (values.device === 'cuda') {
    if (!values.shape || positionals.length) throw new UsageError('--device cuda benches a --shape (random weights made on the GPU)');
    const batches = (values.batch ?? '1').split(',').map((b) => intOpt(b, '--batch', 1)!);
    return runCudaBench({
      shape: values.shape, format: values.format ?? values.dtype!, batches, prompt: intOpt(values['prompt-len'], '--prompt-len', 1)!,
      decode: Math.max(8, intOpt(values['decode-len'], '--decode-len', 1)!), prefill: intOpt(values['prefill-len'], '--prefill-len', 0)!,
      eager: values.eager, train: values.train, json: values.json ? `bench-cuda-${values.shape}-${values.format ?? values.dtype}${values.train ? '-train' : ''}.json` : undefined, log: (s) => { process.stderr.write(s + '\n'); },
    });
  }
  if (values.batch !== undefined) throw new UsageError('--batch applies to --device cuda (the cpu bench decodes one sequence)');
  if (values.train) throw new UsageError('--train applies to --device cuda (lowbit finetune trains on the cpu)');
  const backend = getBackend('cpu');
  setThreadsOption(values.threads);
  const T = intOpt(values['prompt-len'], '--prompt-len', 1)!;
  const D = intOpt(values['decode-len'], '--decode-len', 1)!;
  const rooflineBytes = intOpt(values['roofline-bytes'], '--roofline-bytes', 1 << 20);
  // Progress always goes to stderr, so that --json (on stdout) stays parseable and a long run still shows life.
  const log = (s: string) => { process.stderr.write(s + '\n'); };
  const fmt = values.format;
  if (fmt !== undefined && !FORMATS.includes(fmt)) throw new UsageError(`--format "${fmt}" is unknown (choose ${FORMATS.join(', ')})`);
  if (values['double-quant'] && fmt !== 'nf4' && fmt !== 'fp4') throw new UsageError('--double-quant applies to --format nf4 or fp4');
  if (values.compare && fmt === undefined) throw new UsageError(`--compare measures the float model beside a --format; give --format ${FORMATS.join(', ')}`);
  if (fmt !== undefined && values['write-model']) throw new UsageError('--write-model saves the float model; quantize a folder with lowbit quantize');
  // The same BitsAndBytesConfig fromPretrained takes, so the shape and the folder quantize through one path.
  // GPTQ formats: round-to-nearest on GPTQ's grid (symmetric, group 128), packed as AutoGPTQ packs it: the kernels'
  // speed does not depend on the values, and RTN needs no calibration data.
  const gptqBits = fmt?.startsWith('gptq') ? Number(fmt.slice(4)) as GptqBits : null;
  const gptqSpec = gptqBits ? parseGptqConfig({ quant_method: 'gptq', bits: gptqBits, group_size: 128, sym: true, desc_act: false }, 'lowbit bench', { strict: true }) : null;
  // awq4: round-to-nearest on AWQ's zero-point grid (group 128), packed as AutoAWQ's GEMM layers.
  const awqSpec = fmt === 'awq4' ? parseAwqConfig({ quant_method: 'awq', bits: 4, group_size: 128, zero_point: true, version: 'gemm' }, 'lowbit bench', { strict: true }) : null;
  const quantizationConfig: BitsAndBytesConfig | undefined = fmt === undefined || gptqSpec || awqSpec ? undefined : fmt === 'int8' ? { loadIn8bit: true }
    : { loadIn4bit: true, bnb4bitQuantType: fmt as 'nf4' | 'fp4', bnb4bitUseDoubleQuant: values['double-quant'] };
  const rtn = (m: { model: CausalLM; quantizationConfig?: Map<string, unknown> | null }): void => {
    log(`quantizing its linear layers to ${fmt} (round-to-nearest, group 128, symmetric; AutoGPTQ's packing)…`);
    quantizeLoadedGptq({ tokenizer: null, dir: label ?? 'bench', quantizationConfig: null, ...m }, gptqSpec!, { method: 'rtn', onProgress: renderProgress({ ttyOnly: true }) });
  };
  const awqRtn = (m: { model: CausalLM; quantizationConfig?: Map<string, unknown> | null }): void => {
    log('quantizing its linear layers to awq4 (round-to-nearest on AWQ\'s zero-point grid, group 128; AutoAWQ\'s GEMM packing)…');
    const codes = new Map<string, GptqCodes>(), kept: string[] = [];
    for (const [name, lin] of m.model.linears()) {
      if (!/\.layers\.\d+\./.test(name) || !(lin instanceof Linear)) continue;
      const shape = [lin.outFeatures, lin.inFeatures] as const;
      if (awqShapeProblem(shape, awqSpec!.groupSize, 'gemm')) { kept.push(name); continue; }
      codes.set(name, awqRtnCodes(lin.weight.toF32(), shape, awqSpec!.groupSize));
    }
    if (kept.length) log(`${kept.length} linear layer(s) stay float: AWQ needs in_features a multiple of the group size 128 and out_features a multiple of 8 (${kept[0]}${kept.length > 1 ? ', …' : ''})`);
    installAwq(m, codes, awqSpec!);
  };
  const quantProgress = layerProgress(log);

  let model: CausalLM, config: ModelConfig, label: string, loadMs: number | null = null, dtypeLabel: string;
  let floatModel: CausalLM | null = null;
  if (positionals.length > 0) {
    if (values.compare) {
      log(`loading ${positionals[0]} as it is (--compare)…`);
      floatModel = (await fromPretrained(positionals[0], { backend, mmap: !values['no-mmap'] })).model;
    }
    if (fmt && !gptqSpec && !awqSpec) log(`loading ${positionals[0]} and quantizing its linear layers to ${fmt}${values['double-quant'] ? ' + double quant' : ''}…`);
    const loaded = await fromPretrained(positionals[0], { backend, mmap: !values['no-mmap'], quantizationConfig, onQuantize: quantProgress.event });
    quantProgress.done();
    label = positionals[0];
    if (gptqSpec) rtn(loaded);
    if (awqSpec) awqRtn(loaded);
    ({ model, config } = loaded);
    loadMs = loaded.loadMs;
    dtypeLabel = String(config.torch_dtype ?? '?');
    log(`loaded ${label} in ${loadMs.toFixed(0)} ms`);
  } else {
    if (!values.shape) throw new UsageError('give a model folder or --shape NAME (see lowbit bench --help)');
    const dt = ({ bf16: 'BF16', f32: 'F32', f16: 'F16' } as const)[values.dtype as 'bf16'];
    if (!dt) throw new UsageError(`--dtype must be bf16, f16 or f32, got "${values.dtype}"`);
    log(`building random ${values.shape} (${values.dtype}) in memory…`);
    const r = randomLlama(values.shape, dt);
    config = r.config;
    if (values['write-model']) {
      const dir = values['write-model'];
      mkdirSync(dir, { recursive: true });
      // Python floats stay floats in config.json (rope_theta 10000.0, as transformers writes it).
      const shape = SHAPES[values.shape];
      const raw = { ...shape, rope_theta: pyFloat(Number(shape.rope_theta)), torch_dtype: config.torch_dtype, architectures: ['LlamaForCausalLM'] };
      saveStateDict(dir, r.tensors, { maxShardSize: '5GB' });
      writeFileAtomic(join(dir, 'config.json'), pyJsonDumps(raw, { indent: 2, sortKeys: true }) + '\n');
      log(`wrote ${dir}`);
      return 0;
    }
    // fromPretrained's path for quantizationConfig: the spec it parses, the factory quantizing each float weight.
    const quantize = parseQuantizationConfig(quantizationConfig, 'lowbit bench', { where: '--format', strict: true });
    if (values.compare) floatModel = buildModel(config, new Weights(r.tensors, values.shape), backend);
    if (quantize) log(`quantizing its linear layers to ${fmt}${values['double-quant'] ? ' + double quant' : ''} (reference quantizers)…`);
    model = buildModel(config, new Weights(r.tensors, values.shape), backend, { quantize, onQuantize: quantProgress.event });
    quantProgress.done();
    label = values.shape;
    if (gptqSpec) rtn({ model });
    if (awqSpec) awqRtn({ model });
    dtypeLabel = values.dtype!;
  }

  const quant = quantInfo(model, backend);
  if (quant) log(`quantized matmul (${quant.format}) runs on ${quant.backend === 'ref' ? `ref: the ${backend.name} backend has no ${quant.format} kernel (plain TypeScript fallback, slow)` : `${quant.backend} (native kernel)`}`);
  const threads = getThreads();
  log(`measuring memory bandwidth and fp32 peak on ${threads} thread(s)…`);
  const { bandwidthGBs, peakGflops } = measureRoofline({ bandwidthBytes: rooflineBytes });
  const competitor = !values['no-competitor'];

  // --compare: the float model beside the quantized one, in this process and against the same roofline, their
  // decode rounds interleaved, so the speed-up is one run's and drift on a shared machine falls on both.
  let baseline: Measured | null = null, run: Measured;
  if (floatModel) {
    [baseline, run] = await measurePair(floatModel, model, `${dtypeLabel} model`, `${fmt} model`, config, T, D, competitor, log);
    floatModel = null;
  } else {
    run = await measure(model, config, T, D, competitor, log);
  }

  const roofline = (tokPerSec: number, bytes: number) => (tokPerSec * bytes) / (bandwidthGBs * 1e9);
  const rates = (m: Measured) => {
    const decodeTokPerSec = D / (m.decodeMs / 1000), prefillTokPerSec = T / (m.prefillMs / 1000);
    const contended = m.contendedMs === null ? null : D / (m.contendedMs / 1000);
    return {
      prefillTokPerSec, decodeTokPerSec, decodeRoofline: roofline(decodeTokPerSec, m.bytesPerToken),
      prefillOfPeak: m.prefillFlops / (m.prefillMs / 1000) / (peakGflops * 1e9), bytesPerToken: m.bytesPerToken,
      decodeContendedTokPerSec: contended, decodeContendedRoofline: contended === null ? null : roofline(contended, m.bytesPerToken),
    };
  };
  const main = rates(run), base = baseline ? rates(baseline) : null;
  const res: BenchResult = {
    model: label, dtype: dtypeLabel, threads, promptLen: T, decodeLen: D, loadMs,
    prefillTokPerSec: main.prefillTokPerSec, decodeTokPerSec: main.decodeTokPerSec, bandwidthGBs, peakGflops,
    decodeRoofline: main.decodeRoofline, prefillOfPeak: main.prefillOfPeak,
    bytesPerToken: run.bytesPerToken, prefillFlops: run.prefillFlops,
    decodeContendedTokPerSec: main.decodeContendedTokPerSec, decodeContendedRoofline: main.decodeContendedRoofline,
    contendedSlowdown: main.decodeContendedTokPerSec === null ? null : main.decodeTokPerSec / main.decodeContendedTokPerSec,
    format: quant?.format ?? null, doubleQuant: quant?.doubleQuant ?? null, quantBackend: quant?.backend ?? null,
    quantizeMs: quantProgress.totalMs(),
    baseline: base,
    decodeSpeedup: base ? main.decodeTokPerSec / base.decodeTokPerSec : null,
    prefillSpeedup: base ? main.prefillTokPerSec / base.prefillTokPerSec : null,
  };
  if (values.json) {
    process.stdout.write(JSON.stringify(res) + '\n');
  } else {
    const name = quant ? `${quant.format}${quant.doubleQuant ? '+dq' : ''}` : dtypeLabel;
    const rowsOf = (r: typeof main, who: string) => {
      const decodeRoof = `${(bandwidthGBs * 1e9 / r.bytesPerToken).toFixed(2)} tok/s (${(r.bytesPerToken / 1e9).toFixed(3)} GB/token @ ${bandwidthGBs.toFixed(1)} GB/s)`;
      const prefillGflops = (r.prefillTokPerSec / T) * run.prefillFlops / 1e9;
      const tag = base ? [who] : [];
      return [
        [...tag, 'decode', `${r.decodeTokPerSec.toFixed(2)} tok/s`, decodeRoof, `${(r.decodeRoofline * 100).toFixed(1)}%`],
        ...(r.decodeContendedTokPerSec === null ? [] : [[...tag,
          'decode, 1 busy process', `${r.decodeContendedTokPerSec.toFixed(2)} tok/s (${((r.decodeContendedTokPerSec / r.decodeTokPerSec) * 100).toFixed(0)}% of idle)`, decodeRoof,
          `${(r.decodeContendedRoofline! * 100).toFixed(1)}%`]]),
        [...tag, 'prefill', `${r.prefillTokPerSec.toFixed(1)} tok/s = ${prefillGflops.toFixed(1)} GFLOP/s`, `${peakGflops.toFixed(1)} GFLOP/s fp32 peak`, `${(r.prefillOfPeak * 100).toFixed(1)}%`],
      ];
    };
    const rows = [[...(base ? ['model'] : []), 'phase', 'measured', 'roofline', 'ratio'], ...(base ? rowsOf(base, dtypeLabel) : []), ...rowsOf(main, name)];
    const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    process.stdout.write(`${label} ${dtypeLabel}${quant ? ` → ${name}` : ''}, ${threads} thread(s), prompt ${T}, decode ${D}${loadMs !== null ? `, load ${loadMs.toFixed(0)} ms` : ''}\n`);
    if (quant) {
      const qms = res.quantizeMs;
      process.stdout.write(`quantized: ${quant.layers} linear layers ${quant.format}${quant.doubleQuant ? ' + double quant' : ''} (lm_head float)` +
        `${qms !== null ? `, quantized on load in ${(qms / 1000).toFixed(1)} s` : ''}; matmul on ` +
        (quant.backend === 'ref' ? `ref (fallback: ${backend.name} has no ${quant.format} kernel)` : `${quant.backend} (native kernel)`) + '\n');
    }
    for (const r of rows) process.stdout.write(r.map((c, i) => c.padEnd(w[i])).join('  ') + '\n');
    if (base) {
      process.stdout.write(`${name} / ${dtypeLabel}, same run: decode ${res.decodeSpeedup!.toFixed(2)}×, prefill ${res.prefillSpeedup!.toFixed(2)}×` +
        (main.decodeContendedTokPerSec !== null && base.decodeContendedTokPerSec !== null ? `, decode beside 1 busy process ${(main.decodeContendedTokPerSec / base.decodeContendedTokPerSec).toFixed(2)}×` : '') + '\n');
    }
  }
  return 0;
}

interface Measured { prefillMs: number; decodeMs: number; contendedMs: number | null; bytesPerToken: number; prefillFlops: number }

/** A model prefilled and ready to decode: its cache, the next token, and the time its steps took so far. */
interface Session { model: CausalLM; cache: KVCache; prompt: number[]; first: number; next: number; prefillMs: number; decodeMs: number }

/** Warm up once (page faults of a freshly mapped checkpoint, first-touch of buffers), then time a T-token prefill. */
function prefill(model: CausalLM, config: ModelConfig, T: number, D: number, log: (s: string) => void): Session {
  const prompt = Array.from({ length: T }, (_, i) => (i * 7919 + 13) % config.vocab_size);
  const cache = model.createCache(1, T + D + 1);
  cache.reserve(T + D + 1);   // the cache grows in chunks: allocate it now, not inside a timed step
  model.forward([prompt.slice(0, 8)], { cache, logits: 'last' });
  cache.reset();
  log(`prefill: ${T} tokens…`);
  const t0 = performance.now();
  const logits = model.forward([prompt], { cache, logits: 'last' });
  const prefillMs = performance.now() - t0;
  const first = argmax(logits.f32);
  return { model, cache, prompt, first, next: first, prefillMs, decodeMs: 0 };
}

/** Greedy decode of n more tokens; adds their time to s.decodeMs. */
function decodeSteps(s: Session, n: number, tick: () => void): void {
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    s.next = argmax(s.model.forward([[s.next]], { cache: s.cache, logits: 'last' }).f32);
    tick();
  }
  s.decodeMs += performance.now() - t0;
}

/** The same D positions as the idle decode (prefill again, untimed), decoded beside one busy process. */
async function decodeContended(s: Session, D: number, idleMs: number, log: (s: string) => void): Promise<number> {
  s.cache.reset();
  s.model.forward([s.prompt], { cache: s.cache, logits: 'last' });
  log(`decode: ${D} tokens beside one busy process…`);
  // Bounded even if this process dies without stopping it: the idle run's time, several times over, plus slack.
  const child = await startCompetitor(Math.ceil(idleMs * 10 + 30_000));
  try {
    const c: Session = { ...s, next: s.first, decodeMs: 0 };
    const progress = progressReporter('decode, 1 busy process', 'tokens', D, renderProgress({ ttyOnly: true, label: 'decode, 1 busy process' }));
    let done = 0;
    decodeSteps(c, D, () => progress(++done));
    return c.decodeMs;
  } finally {
    await stopCompetitor(child);
  }
}

function measured(s: Session, contendedMs: number | null, config: ModelConfig, T: number): Measured {
  return { prefillMs: s.prefillMs, decodeMs: s.decodeMs, contendedMs, ...costs(s.model, config, T) };
}

/** Prefill T tokens, then decode D greedily (and again beside one busy process when `competitor`). */
async function measure(model: CausalLM, config: ModelConfig, T: number, D: number, competitor: boolean, log: (s: string) => void): Promise<Measured> {
  const s = prefill(model, config, T, D, log);
  log(`decode: ${D} tokens…`);
  const progress = progressReporter('decode', 'tokens', D, renderProgress({ ttyOnly: true }));
  let done = 0;
  decodeSteps(s, D, () => progress(++done));
  return measured(s, competitor ? await decodeContended(s, D, s.decodeMs, log) : null, config, T);
}

/** Decode tokens per round of --compare's interleaved decode. */
const COMPARE_ROUND = 4;

/**
 * --compare: both models prefill in turn, then decode D tokens each in alternating rounds of COMPARE_ROUND tokens
 * (the first model of a round flips every round), so load that comes and goes on a shared machine falls on both.
 * The busy-process rows stay one model after the other (each is a single decode beside the competitor).
 */
async function measurePair(a: CausalLM, b: CausalLM, nameA: string, nameB: string, config: ModelConfig, T: number, D: number,
  competitor: boolean, log: (s: string) => void): Promise<[Measured, Measured]> {
  log(`${nameA}:`);
  const sa = prefill(a, config, T, D, log);
  log(`${nameB}:`);
  const sb = prefill(b, config, T, D, log);
  log(`decode: ${D} tokens each, the two models alternating every ${COMPARE_ROUND}…`);
  const progress = progressReporter('decode', 'tokens', 2 * D, renderProgress({ ttyOnly: true }));
  let done = 0;
  for (let r = 0, left = D; left > 0; r++, left -= COMPARE_ROUND) {
    const n = Math.min(COMPARE_ROUND, left);
    for (const s of r % 2 ? [sb, sa] : [sa, sb]) decodeSteps(s, n, () => progress(++done));
  }
  let ca: number | null = null, cb: number | null = null;
  if (competitor) {
    log(`${nameA}:`);
    ca = await decodeContended(sa, D, sa.decodeMs, log);
    log(`${nameB}:`);
    cb = await decodeContended(sb, D, sb.decodeMs, log);
  }
  return [measured(sa, ca, config, T), measured(sb, cb, config, T)];
}

/**
 * A child Node process that spins on one core until `limitMs` has passed or it is stopped; resolves once it is
 * spinning. Its own deadline bounds it even if this process is killed before stopCompetitor runs.
 */
function startCompetitor(limitMs: number): Promise<ChildProcess> {
  const code = `process.stdout.write('spinning\\n'); const end = Date.now() + ${limitMs}; let x = 0; while (Date.now() < end) x++;`;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (c, sig) => reject(new Error(`bench: the busy competitor process exited early (code ${c}, signal ${sig})`)));
    child.stdout!.once('data', () => resolve(child));
  });
}

async function stopCompetitor(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await exited;
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/** The quantized layers' format(s), double quant, count, and which backend runs their matmul; null when none. */
function quantInfo(model: CausalLM, backend: Backend): { format: string; doubleQuant: boolean | null; backend: string; layers: number } | null {
  const formats = new Set<string>(), dq = new Set<boolean>();
  let layers = 0;
  for (const [, lin] of model.linears()) {
    if (lin instanceof Linear4bit) { formats.add(lin.qweight.format); dq.add(lin.qweight.bnb4.nested !== null); layers++; }
    else if (lin instanceof Linear8bitLt) { formats.add('int8'); layers++; }
    else if (lin instanceof GptqLinear) { formats.add('gptq'); layers++; }
    else if (lin instanceof AwqLinear) { formats.add('awq'); layers++; }
  }
  if (!layers) return null;
  // backend/dispatch.ts's rule: the backend's own kernel when it says it supports every format here, else ref.
  const native = backend.matmulQ !== undefined && backend.supports('matmulQ', [...formats] as QuantizedWeight['format'][]);
  return { format: [...formats].sort().join('+'), doubleQuant: dq.size === 1 ? [...dq][0] : null, backend: native ? backend.name : 'ref', layers };
}

/** Quantize-on-load progress: one stderr line per decoder layer (layers arrive in build order), and the total time. */
function layerProgress(log: (s: string) => void): { event: (e: QuantizedLayerEvent) => void; done: () => void; totalMs: () => number | null } {
  let current: string | null = null, linears = 0, ms = 0, total = 0, any = false;
  const finish = () => { if (current !== null) log(`quantized ${current}: ${linears} linears in ${ms.toFixed(0)} ms`); current = null; };
  return {
    event: (e) => {
      any = true; total += e.ms;
      const layer = /^(.*\.layers\.\d+)\./.exec(e.name)?.[1] ?? e.name;
      if (layer !== current) { finish(); current = layer; linears = 0; ms = 0; }
      linears++; ms += e.ms;
    },
    done: finish,
    totalMs: () => (any ? total : null),
  };
}
