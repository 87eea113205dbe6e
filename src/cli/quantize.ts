// `lowbit quantize`: a float checkpoint → a bitsandbytes model folder that transformers loads (FORMATS.md §2.4-2.5,
// §3). The quantization happens while the model is built (fromPretrained's quantizationConfig), so progress is
// reported per layer from there; savePretrained writes the folder atomically.
import { fromPretrained } from '../api.js';
import { savePretrained } from '../io/save.js';
import { BNB4_BLOCKSIZES } from '../quant/bnb4.js';
import { quantStats } from '../quant/stats.js';
import { quantizedStateDict } from '../io/save.js';
import { probePath } from '../util/fs.js';
import { intOpt, numOpt, parseCommand, renderProgress, UsageError } from './args.js';
import { readdirSync } from 'node:fs';

export const quantizeHelp = `lowbit quantize — write a bitsandbytes-quantized copy of a model folder

Usage: lowbit quantize <model folder | org/name> --method int8|nf4|fp4 --out DIR [options]

Quantizes every linear layer but lm_head as transformers + bitsandbytes do on load (BitsAndBytesConfig), and
writes a folder transformers loads as it is: model.safetensors with the bitsandbytes tensors, config.json with
quantization_config, generation_config.json and tokenizer files copied. lowbit loads it back by name.

Options:
  --method M            int8 (LLM.int8, per-row absmax), nf4 or fp4 (4-bit blocks; bitsandbytes' default is fp4)
  --out DIR             the folder to write; a new or empty one appears whole or not at all
  --force               replace the files of a non-empty --out (each one atomically); without it, refused
  --double-quant        4-bit: quantize the block scales too (bnb_4bit_use_double_quant)
  --compute-dtype D     4-bit: bf16, f16 or f32 (bnb_4bit_compute_dtype; default f32, as transformers)
  --blocksize N         4-bit: 32, 64, 128, 256, 512, 1024, 2048 or 4096 (default 64; recorded per layer in the file)
  --threshold T         int8: outlier threshold (llm_int8_threshold, default 6.0)
  --skip-modules a,b    keep these modules float too (llm_int8_skip_modules; whole dotted name segments)
  --revision REV        Hub revision (default main)
  --no-mmap             read the weights into memory instead of mapping them

Output: progress by decoder layer on stderr, then a summary on stdout: layers quantized, their bytes before and after,
bits per weight in the quantized layers (codes and scales: NF4 + double quant at block 64 is ≈ 4.127), the
checkpoint's total bytes before and after, and the time.

Examples:
  lowbit quantize ./TinyLlama-1.1B --method nf4 --double-quant --compute-dtype bf16 --out ./TinyLlama-1.1B-nf4
  lowbit quantize models/kjv-demo --method int8 --out /tmp/kjv-int8
`;

const OPTIONS = {
  method: { type: 'string' }, out: { type: 'string' }, force: { type: 'boolean', default: false },
  'double-quant': { type: 'boolean', default: false }, 'compute-dtype': { type: 'string' }, blocksize: { type: 'string' },
  threshold: { type: 'string' }, 'skip-modules': { type: 'string' }, revision: { type: 'string' }, 'no-mmap': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const COMPUTE: Record<string, string> = { bf16: 'bfloat16', f16: 'float16', f32: 'float32' };
const METHODS = ['int8', 'nf4', 'fp4'];

export async function runQuantize(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommand('quantize', argv, OPTIONS);
  if (v.help) { process.stdout.write(quantizeHelp); return 0; }
  if (positionals.length !== 1) throw new UsageError('give one model folder or Hub id');
  if (v.method === undefined) throw new UsageError('--method is required (int8, nf4 or fp4)');
  if (!METHODS.includes(v.method)) throw new UsageError(`--method "${v.method}" is unknown (choose int8, nf4 or fp4)`);
  if (v.out === undefined) throw new UsageError('--out DIR is required');
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
  const out = probePath(v.out);
  if (out.kind === 'file') throw new UsageError(`--out ${v.out} is a file, not a folder`);
  if (out.kind === 'bad') throw new UsageError(`--out ${v.out} ${out.problem}`);
  if (out.kind === 'dir' && readdirSync(v.out).length > 0 && !v.force) {
    throw new UsageError(`--out ${v.out} is a folder that is not empty (pass --force to replace its files)`);
  }

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

  const after = quantStats(quantizedStateDict(m));
  let before = 0, totalBefore = 0;
  const quantized = new Set(after.layers.map((l) => `${l}.weight`));
  for (const [k, t] of m.tensors) { totalBefore += t.byteLength; if (quantized.has(k)) before += t.byteLength; }
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
