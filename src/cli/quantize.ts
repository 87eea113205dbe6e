// `lowbit quantize`: a float checkpoint → a bitsandbytes model folder that transformers loads (FORMATS.md §2.4-2.5,
// §3), a GPTQ folder (§4.5-4.6; --method gptq|rtn, in quantize-gptq.ts) or an AutoAWQ folder (§5.4-5.5; --method awq,
// in quantize-awq.ts). bitsandbytes quantizes while the model is
// built (fromPretrained's quantizationConfig), so progress is reported per layer from there; savePretrained writes
// the folder atomically.
import { fromPretrained } from '../api.js';
import { savePretrained } from '../io/save.js';
import { BNB4_BLOCKSIZES } from '../quant/bnb4.js';
import { probePath } from '../util/fs.js';
import { intOpt, numOpt, parseCommand, renderProgress, UsageError } from './args.js';
import { quantizedBytes } from './common.js';
import { readdirSync } from 'node:fs';
import { runQuantizeGptq } from './quantize-gptq.js';
import { runQuantizeAwq } from './quantize-awq.js';

export const quantizeHelp = `lowbit quantize — write a quantized copy of a model folder (bitsandbytes, GPTQ or AWQ)

Usage: lowbit quantize <model folder | org/name> --method int8|nf4|fp4 --out DIR [options]
       lowbit quantize <model folder | org/name> --method gptq|rtn --bits B --group-size G [--sym|--asym] [--desc-act]
                       [--damp P] [--dataset FILE] [--nsamples N] [--seqlen L] [--seed S] --out DIR
       lowbit quantize <model folder | org/name> --method awq --dataset FILE [--bits 4] [--group-size 128]
                       [--nsamples 128] [--seqlen 512] [--version gemm|gemv] [--no-zero-point] --out DIR

int8/nf4/fp4 quantize every linear layer but lm_head as transformers + bitsandbytes do on load (BitsAndBytesConfig),
and write a folder transformers loads as it is: model.safetensors with the bitsandbytes tensors, config.json with
quantization_config, generation_config.json and tokenizer files copied. lowbit loads it back by name.

gptq quantizes the linear layers of every decoder block with GPTQ (AutoGPTQ's algorithm: Hessians from calibration
windows run through the already-quantized blocks, true-sequential, block 128 lazy updates) and writes what AutoGPTQ /
optimum write: qweight / qzeros / scales / g_idx, quantize_config.json, and quantization_config in config.json (vLLM's
GPTQ and Marlin loaders take a symmetric 4-bit file). rtn is round-to-nearest on the same grid and packing: the
baseline GPTQ must beat. Progress by linear layer with its relative output error; a summary table at the end; the
folder also gets quantize_report.json (every layer's error, GPTQ and RTN) and quantize_report.svg (the chart).

awq runs AutoAWQ's activation-aware search on every decoder block: per group of linears that share an input (q/k/v
after the input norm, o after v when the shapes match, gate/up after the post-attention norm, down after up; OPT's
likewise), a grid of 20 scale exponents α on the block's output, the best scales folded into the op before, then the
clipping search, then 4-bit zero-point groups; each block sees the float outputs of the blocks before it, as in
AutoAWQ. It writes AutoAWQ's GEMM layout (or GEMV) with quantization_config {quant_method: "awq", …}: what
transformers and vLLM load. Calibration follows AutoAWQ: the texts (lines of a text file, or JSONL "text" fields) in
order, those longer than --seqlen skipped, the first --nsamples joined and cut into blocks of --seqlen. A line per
group gives the α it chose; quantize_report.json keeps every group's losses and every linear's clip ratio.

Options:
  --method M            int8 (LLM.int8, per-row absmax), nf4 or fp4 (4-bit blocks; bitsandbytes' default is fp4),
                        gptq or rtn, or awq
  --out DIR             the folder to write; a new or empty one appears whole or not at all
  --force               replace the files of a non-empty --out (each one atomically); without it, refused
  --double-quant        4-bit: quantize the block scales too (bnb_4bit_use_double_quant)
  --compute-dtype D     4-bit: bf16, f16 or f32 (bnb_4bit_compute_dtype; default f32, as transformers)
  --blocksize N         4-bit: 32, 64, 128, 256, 512, 1024, 2048 or 4096 (default 64; recorded per layer in the file)
  --threshold T         int8: outlier threshold (llm_int8_threshold, default 6.0)
  --skip-modules a,b    keep these modules float too (llm_int8_skip_modules; whole dotted name segments)
  --bits B              gptq/rtn: 2, 3, 4 or 8 (default 4); awq: 4 (the only width AWQ files pack)
  --group-size G        gptq/rtn/awq: -1 (one group per row) or the group size (default 128)
  --sym | --asym        gptq/rtn: symmetric (default, zero = 2^(bits-1)) or asymmetric grid
  --desc-act            gptq: act-order (columns by decreasing Hessian diagonal; writes g_idx)
  --static-groups       gptq: every group's grid from the original weight, before any update
  --damp P              gptq: dampening, a fraction of the mean Hessian diagonal (default 0.01)
  --dataset FILE        calibration text (a text file, or JSONL with a "text" field); required for gptq and awq,
                        optional for rtn (then the errors are measured on it)
  --nsamples N          calibration windows (gptq, default 128) or texts (awq, default 128)
  --seqlen L            tokens per window (gptq, default 2048) or block (awq, default 512); at most the model's positions
  --seed S              seed of the windows' random offsets (default 0, Python's random)
  --checkpoint-format F gptq (v1, default: what AutoGPTQ writes) or gptq_v2 (GPTQModel: true zeros)
  --no-true-sequential  gptq: calibrate all linears of a block at once
  --version V           awq: gemm (default: AutoAWQ's and vLLM's layout) or gemv
  --no-zero-point       awq: symmetric groups instead of AutoAWQ's zero points
  --device cpu|cuda     gptq/rtn/awq: where the model loads and calibrates (default cpu); cuda keeps activations,
                        Hessians, candidates and weights on an NVIDIA GPU
  --revision REV        Hub revision (default main)
  --no-mmap             read the weights into memory instead of mapping them

Output: progress by decoder layer on stderr, then a summary on stdout: layers quantized, their bytes before and after,
bits per weight in the quantized layers (codes and scales: NF4 + double quant at block 64 is ≈ 4.127), the
checkpoint's total bytes before and after, and the time.

Examples:
  lowbit quantize ./TinyLlama-1.1B --method nf4 --double-quant --compute-dtype bf16 --out ./TinyLlama-1.1B-nf4
  lowbit quantize models/kjv-demo --method int8 --out /tmp/kjv-int8
  lowbit quantize ./TinyLlama-1.1B --method gptq --bits 4 --group-size 128 --dataset c4.txt --nsamples 128 --out ./tl-gptq
  lowbit quantize models/kjv-demo --method rtn --bits 4 --group-size 32 --out /tmp/kjv-rtn
  lowbit quantize ./Llama-3-8B --method gptq --dataset c4.txt --device cuda --out ./llama3-gptq
  lowbit quantize ./TinyLlama-1.1B --method awq --dataset pile-sample.txt --out ./tl-awq
`;

const OPTIONS = {
  method: { type: 'string' }, out: { type: 'string' }, force: { type: 'boolean', default: false },
  'double-quant': { type: 'boolean', default: false }, 'compute-dtype': { type: 'string' }, blocksize: { type: 'string' },
  threshold: { type: 'string' }, 'skip-modules': { type: 'string' }, revision: { type: 'string' }, 'no-mmap': { type: 'boolean' },
  bits: { type: 'string' }, 'group-size': { type: 'string' }, sym: { type: 'boolean' }, asym: { type: 'boolean' },
  'desc-act': { type: 'boolean' }, 'static-groups': { type: 'boolean' }, damp: { type: 'string' }, dataset: { type: 'string' },
  nsamples: { type: 'string' }, seqlen: { type: 'string' }, seed: { type: 'string' }, 'checkpoint-format': { type: 'string' },
  'no-true-sequential': { type: 'boolean' }, version: { type: 'string' }, 'no-zero-point': { type: 'boolean' },
  device: { type: 'string' }, help: { type: 'boolean', short: 'h' },
} as const;

const COMPUTE: Record<string, string> = { bf16: 'bfloat16', f16: 'float16', f32: 'float32' };
const METHODS = ['int8', 'nf4', 'fp4', 'gptq', 'rtn', 'awq'];
const GPTQ_FLAGS = ['bits', 'group-size', 'sym', 'asym', 'desc-act', 'static-groups', 'damp', 'dataset', 'nsamples', 'seqlen', 'seed',
  'checkpoint-format', 'no-true-sequential', 'device'] as const;
const BNB_FLAGS = ['double-quant', 'compute-dtype', 'blocksize', 'threshold', 'skip-modules'] as const;
const AWQ_FLAGS = ['bits', 'group-size', 'dataset', 'nsamples', 'seqlen', 'version', 'no-zero-point', 'device'] as const;
const ALL_FLAGS = [...new Set<string>([...GPTQ_FLAGS, ...BNB_FLAGS, ...AWQ_FLAGS])];
const FLAGS_OF: Record<string, readonly string[]> = { gptq: GPTQ_FLAGS, rtn: GPTQ_FLAGS, awq: AWQ_FLAGS, int8: BNB_FLAGS, nf4: BNB_FLAGS, fp4: BNB_FLAGS };
/** "gptq, rtn or awq": the methods a flag applies to. */
const METHODS_OF = (flag: string) => Object.keys(FLAGS_OF).filter((m) => FLAGS_OF[m].includes(flag)).join(', ').replace(/, ([^,]+)$/, ' or $1');

/** --out must be a new or empty folder, or --force given. */
function checkOut(dir: string, force: boolean): void {
  const out = probePath(dir);
  if (out.kind === 'file') throw new UsageError(`--out ${dir} is a file, not a folder`);
  if (out.kind === 'bad') throw new UsageError(`--out ${dir} ${out.problem}`);
  if (out.kind === 'dir' && readdirSync(dir).length > 0 && !force) {
    throw new UsageError(`--out ${dir} is a folder that is not empty (pass --force to replace its files)`);
  }
}

export async function runQuantize(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommand('quantize', argv, OPTIONS);
  if (v.help) { process.stdout.write(quantizeHelp); return 0; }
  if (positionals.length !== 1) throw new UsageError('give one model folder or Hub id');
  if (v.method === undefined) throw new UsageError('--method is required (int8, nf4, fp4, gptq, rtn or awq)');
  if (!METHODS.includes(v.method)) throw new UsageError(`--method "${v.method}" is unknown (choose int8, nf4, fp4, gptq, rtn or awq)`);
  if (v.out === undefined) throw new UsageError('--out DIR is required');
  const gptq = v.method === 'gptq' || v.method === 'rtn';
  for (const f of ALL_FLAGS) {
    const set = v[f as keyof typeof v] !== undefined && v[f as keyof typeof v] !== false;
    if (set && !FLAGS_OF[v.method].includes(f)) throw new UsageError(`--${f} applies to --method ${METHODS_OF(f)}, not ${v.method}`);
  }
  if (v.method === 'awq') {
    checkOut(v.out, !!v.force);
    return runQuantizeAwq(positionals[0], { ...v, out: v.out });
  }
  if (gptq) {
    checkOut(v.out, !!v.force);
    return runQuantizeGptq(positionals[0], { ...v, method: v.method as 'gptq' | 'rtn', out: v.out });
  }
  const int8 = v.method === 'int8';
  for (const [flag, set] of [['--double-quant', v['double-quant']], ['--compute-dtype', v['compute-dtype'] !== undefined], ['--blocksize', v.blocksize !== undefined]] as const) {
    if (int8 && set) throw new UsageError(`${flag} applies to --method nf4 or fp4, not int8`);
  }
  if (!int8 && v.threshold !== undefined) throw new UsageError(`--threshold applies to --method int8, not ${v.method}`);
  let computeDtype: string | undefined;
  if (v['compute-dtype'] !== undefined) {
    computeDtype = COMPUTE[v['compute-dtype']];
    if (!computeDtype) throw new UsageError(`--compute-dtype "${v['compute-dtype']}" is unknown (choose bf16, f16 or f32)`);
  }
  const blocksize = intOpt(v.blocksize, '--blocksize', 1);
  if (blocksize !== undefined && !BNB4_BLOCKSIZES.includes(blocksize)) throw new UsageError(`--blocksize must be one of ${BNB4_BLOCKSIZES.join(', ')}, got ${blocksize}`);
  const threshold = numOpt(v.threshold, '--threshold', (x) => x >= 0, 'a number ≥ 0');
  let skip: string[] | undefined;
  if (v['skip-modules'] !== undefined) {
    skip = v['skip-modules'].split(',').map((s) => s.trim());
    if (skip.some((s) => s === '')) throw new UsageError(`--skip-modules "${v['skip-modules']}" has an empty name (give names separated by commas)`);
  }
  checkOut(v.out, v.force);

  const quantizationConfig = int8
    ? { loadIn8bit: true, llmInt8Threshold: threshold, llmInt8SkipModules: skip }
    : { loadIn4bit: true, bnb4bitQuantType: v.method, bnb4bitUseDoubleQuant: v['double-quant'], bnb4bitComputeDtype: computeDtype, llmInt8SkipModules: skip };
  const t0 = performance.now();
  const m = await fromPretrained(positionals[0], {
    revision: v.revision, mmap: !v['no-mmap'], backend: 'ref', blocksize, onProgress: renderProgress(),
    quantizationConfig: Object.fromEntries(Object.entries(quantizationConfig).filter(([, x]) => x !== undefined)),
  });
  const tQuant = performance.now();
  const saved = savePretrained(m, v.out, { overwrite: v.force });
  const tSave = performance.now();

  const { after, before, totalBefore } = quantizedBytes(m);
  const srcBits = after.params ? (8 * before) / after.params : 0;
  const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
  process.stdout.write([
    `${saved.dir}`,
    `method           ${v.method}${v['double-quant'] ? ' + double quant' : ''}${int8 ? `, threshold ${threshold ?? 6}` : `, block ${blocksize ?? 64}, compute ${computeDtype ?? 'float32'}`}`,
    `layers           ${after.layers.length} linear layers quantized (lm_head${skip ? ` and ${skip.join(', ')}` : ''} kept float)`,
    `quantized layers ${mb(before)} → ${mb(after.bytes)} (${after.params.toLocaleString('en-US')} weights, ${srcBits.toFixed(3)} → ${after.bitsPerWeight.toFixed(3)} bits/weight, scales included)`,
    `checkpoint       ${mb(totalBefore)} → ${mb(saved.totalSize)} (tensor bytes)`,
    `time             ${((tQuant - t0) / 1000).toFixed(2)} s load + quantize, ${((tSave - tQuant) / 1000).toFixed(2)} s save`,
  ].join('\n') + '\n');
  return 0;
}
