// `lowbit eval`: perplexity of a model on a text file, or LAMBADA last-word accuracy on a JSONL file.
// Perplexity: the file's text, as it is, tokenized once as one stream with the tokenizer's special tokens (one BOS at
// the very start for Llama, `</s>` for OPT), then either the GPTQ/AWQ papers' non-overlapping windows (FORMATS.md
// §9.1) or, with --stride, HF's sliding windows (§9.2); each window one forward. LAMBADA: src/eval/lambada.ts.
import { readFileSync } from 'node:fs';
import { lambada, readLambada, type LambadaProgress } from '../eval/lambada.js';
import { perplexity, slidingWindows, type PerplexityProgress } from '../eval/perplexity.js';
import { probePath } from '../util/fs.js';
import { backendOpt, intOpt, parseCommand, renderProgress, UsageError } from './args.js';
import { setThreadsOption } from './common.js';
import { loadModel } from './generate.js';

export const evalHelp = `lowbit eval — perplexity of a model on a text file, or LAMBADA last-word accuracy

Usage: lowbit eval <model folder | org/name> --ppl --dataset FILE [--stride N] [options]
       lowbit eval <model folder | org/name> --lambada FILE.jsonl [options]

Perplexity (--ppl). The file's text, as it is (UTF-8; rows are not re-joined), is tokenized once as one stream with
the tokenizer's special tokens (a Llama stream starts with one BOS); each window is an independent forward with no
extra BOS. ppl = exp(negative log-likelihood per scored token).
  Without --stride, the GPTQ/AWQ papers' protocol: non-overlapping windows of --seqlen tokens, the trailing remainder
  dropped; every position but a window's last predicts the next token (a window's first token is never a target).
  With --stride N, HF's sliding window ("Perplexity of fixed-length models"): a window of up to --seqlen tokens
  starts every N tokens and scores only the tokens the previous window did not reach, so each is predicted with at least
  seqlen − N tokens of context; each window's mean loss counts num_loss_tokens = (labels kept) − 1 times, as the
  HF doc's code does (one fewer than it scores when windows overlap; "pplScored" counts each target once). The last
  window ends at the end of the stream. --stride equal to --seqlen is the papers' windows plus the trailing remainder
  scored as one short window (the same number when the stream is a multiple of --seqlen).
  For WikiText-2 as the papers score it, give a file holding "\\n\\n".join(rows) of the test split.

LAMBADA (--lambada). One JSON object per line with a "text" field (OpenAI's lambada_test.jsonl, EleutherAI's
lambada_openai). As lm-eval-harness does: context = text up to its last space, target = " " + the last word;
context and context + target are tokenized with the special tokens (BOS once), the target's tokens are those of
context + target past the context's count, and one forward over context + target scores them. An example is correct
iff the argmax at every target position is the target token (greedy decoding reproduces the word). ppl is
lm-eval's: exp(mean over examples of the word's −log p). A tokenizer whose merges cross the space (no
pre-tokenizer) has no token boundary at the space: there the target starts at the token holding the word's first
character ("boundaryMerges" counts such examples).

Options:
  --ppl                 compute perplexity
  --dataset FILE        the text to score (UTF-8)
  --seqlen N            tokens per window (default: the model's positions, at most 2048)
  --stride N            HF's sliding windows, a window starting every N tokens (default: non-overlapping windows)
  --max-windows N       score only the first N windows
  --lambada FILE        LAMBADA last-word accuracy on a JSONL file
  --max-examples N      score only the first N examples
  --batch-size N        LAMBADA examples per forward, left-padded (default 1: on a CPU batching only adds padding)
  --json                one JSON object on stdout (below) instead of the table; progress stays on stderr
  --revision REV        Hub revision (default main)
  --adapter DIR         a PEFT LoRA adapter folder on top of the model
  --backend cpu|cuda|ref (--device cpu|cuda)  --threads N
  --no-mmap             read the weights into memory instead of mapping them

Output:
  progress on stderr, then a table. With --json, for --ppl:
    {"ppl", "tokens" (the count ppl divides by: windows × (seqlen − 1), or Σ num_loss_tokens with --stride),
     "windows", "seqlen", "stride" (null without --stride), "nll" (mean per token, nats), "nllSum",
     "scored" (targets scored, each once), "pplScored" (exp of their mean −log p; = ppl without --stride),
     "windowsAvailable", "datasetTokens", "model", "dataset",
     "timings": {"loadMs", "tokenizeMs", "evalMs", "tokPerSec" (tokens fed to the model per second)}}
  for --lambada:
    {"accuracy", "correct", "total", "ppl" (lm-eval's, per word), "tokenPpl" (per target token), "targetTokens",
     "truncated" (examples whose context was cut from the front to fit the model), "boundaryMerges" (examples
     whose context's tokens are not a prefix of context + target's), "examplesAvailable", "batchSize",
     "model", "dataset", "timings": {"loadMs", "readMs", "evalMs", "examplesPerSec"}}

Examples:
  lowbit eval models/kjv-demo --ppl --dataset models/kjv-demo/heldout.txt --seqlen 256 --max-windows 16
  lowbit eval ./eval-llama-16m --ppl --dataset wikitext2-test.txt --seqlen 256 --max-windows 200 --json
  lowbit eval ./eval-llama-16m --ppl --dataset wikitext2-test.txt --seqlen 256 --stride 128
  lowbit eval ./tinystories-656k --lambada lambada_test.jsonl --max-examples 500 --json
`;

/** A problem with the --dataset file (exit 1: the command was well formed, the file is not usable). */
export class DatasetError extends Error { override name = 'DatasetError'; }

const OPTIONS = {
  ppl: { type: 'boolean', default: false }, dataset: { type: 'string' }, seqlen: { type: 'string' }, 'max-windows': { type: 'string' },
  stride: { type: 'string' }, lambada: { type: 'string' }, 'max-examples': { type: 'string' }, 'batch-size': { type: 'string' },
  json: { type: 'boolean', default: false }, revision: { type: 'string' }, backend: { type: 'string' }, device: { type: 'string' }, threads: { type: 'string' },
  'no-mmap': { type: 'boolean' }, adapter: { type: 'string' }, help: { type: 'boolean', short: 'h' },
} as const;

/** The dataset as text: a regular file of valid UTF-8 (decoded as it is, a byte-order mark included), not empty. */
export function readDataset(file: string): string {
  const fail = (detail: string) => new DatasetError(`--dataset ${file}: ${detail}`);
  const p = probePath(file);
  if (p.kind === 'missing') throw fail('no such file');
  if (p.kind === 'dir') throw fail('is a folder, not a file');
  if (p.kind === 'bad') throw fail(p.problem);
  let bytes: Buffer;
  try { bytes = readFileSync(file); } catch (e) { throw fail(`cannot be read: ${(e as Error).message}`); }
  if (bytes.length === 0) throw fail('is empty');
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw fail(`is not valid UTF-8 (${firstBadUtf8(bytes)})`);
  }
}

/** Where a file fails to decode as UTF-8: the offset of the first bad byte, or the end for a cut-off character. */
function firstBadUtf8(b: Uint8Array): string {
  let lo = 0, hi = b.length;                                      // the longest prefix with no bad byte, by bisection
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    // Streaming, so a prefix that stops inside a character is not counted as bad.
    try { new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(0, mid), { stream: true }); lo = mid; } catch { hi = mid - 1; }
  }
  if (lo === b.length) return 'it ends inside a character';
  // The prefix may end inside the sequence that went wrong (a lead byte without its continuation bytes): name its start.
  let at = lo;
  try { new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(0, lo)); } catch { at = lo - 1; while (at > 0 && (b[at] & 0xc0) === 0x80) at--; }
  return `first bad byte at offset ${at}`;
}

export async function runEval(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommand('eval', argv, OPTIONS);
  if (v.help) { process.stdout.write(evalHelp); return 0; }
  if (positionals.length !== 1) throw new UsageError('give exactly one model folder or Hub id (see lowbit eval --help)');
  if (v.ppl && v.lambada !== undefined) throw new UsageError('give --ppl or --lambada, one evaluation per run');
  if (!v.ppl && v.lambada === undefined) throw new UsageError('say what to evaluate: --ppl (perplexity) or --lambada FILE (last-word accuracy)');
  const pplOnly = (['dataset', 'seqlen', 'stride', 'max-windows'] as const).find((k) => v[k] !== undefined);
  const lambadaOnly = (['max-examples', 'batch-size'] as const).find((k) => v[k] !== undefined);
  if (v.lambada !== undefined) {
    if (pplOnly) throw new UsageError(`--${pplOnly} is for --ppl, not --lambada`);
    return runLambada(positionals[0], v.lambada, v);
  }
  if (lambadaOnly) throw new UsageError(`--${lambadaOnly} is for --lambada, not --ppl`);
  if (v.dataset === undefined) throw new UsageError('--ppl needs --dataset FILE (the text to score)');
  const seqFlag = intOpt(v.seqlen, '--seqlen', 2);
  const stride = intOpt(v.stride, '--stride', 1);
  const maxWindows = intOpt(v['max-windows'], '--max-windows', 1);
  backendOpt(v.backend, v.device);
  setThreadsOption(v.threads);
  const text = readDataset(v.dataset);

  const m = await loadModel(positionals[0], v);
  const positions = m.model.maxPositions;
  if (seqFlag !== undefined && seqFlag > positions) {
    throw new UsageError(`--seqlen ${seqFlag} is longer than the model's ${positions} positions; use --seqlen ≤ ${positions}`);
  }
  const seqLen = seqFlag ?? Math.min(2048, positions);
  if (!m.tokenizer) throw new DatasetError(`${m.dir}: no tokenizer.json, so --dataset text cannot be tokenized`);
  let t0 = performance.now();
  const ids = m.tokenizer.encode(text);                           // once, with BOS / </s> as transformers adds them
  const tokenizeMs = performance.now() - t0;
  let available: number, windows: number, fed: number;
  if (stride === undefined) {
    available = Math.floor(ids.length / seqLen);
    if (available === 0) {
      throw new DatasetError(`--dataset ${v.dataset}: ${ids.length} tokens, fewer than one window of --seqlen ${seqLen}; give more text or --seqlen ≤ ${ids.length}`);
    }
    windows = Math.min(available, maxWindows ?? available);
    fed = windows * seqLen;
    const dropped = ids.length - available * seqLen;
    process.stderr.write(`lowbit: ${v.dataset}: ${ids.length} tokens → ${available} window${available === 1 ? '' : 's'} of ${seqLen}` +
      `${dropped ? ` (last ${dropped} dropped)` : ''}${windows < available ? `, scoring the first ${windows}` : ''}\n`);
  } else {
    if (ids.length < 2) throw new DatasetError(`--dataset ${v.dataset}: ${ids.length} token, nothing to predict`);
    const plan = slidingWindows(ids.length, seqLen, stride);
    available = plan.length;
    windows = Math.min(available, maxWindows ?? available);
    fed = plan.slice(0, windows).reduce((s, w) => s + w.end - w.begin, 0);
    process.stderr.write(`lowbit: ${v.dataset}: ${ids.length} tokens → ${available} sliding window${available === 1 ? '' : 's'} of up to ${seqLen}, stride ${stride}` +
      `${stride > seqLen ? ` (${stride - seqLen} tokens skipped between windows)` : ''}${windows < available ? `, scoring the first ${windows}` : ''}\n`);
  }

  t0 = performance.now();
  const r = perplexity(m.model, ids, { seqLen, stride, maxWindows, onProgress: renderProgress<PerplexityProgress>({ detail: (p) => ` · ${Math.round(p.tokensPerSec).toLocaleString('en-US')} tokens/s` }) });
  const evalMs = performance.now() - t0;
  const tokPerSec = evalMs > 0 ? fed / (evalMs / 1000) : 0;
  const out = {
    ppl: r.perplexity, tokens: r.tokens, windows: r.windows, seqlen: r.seqLen, stride: r.stride ?? null, nll: r.nll / r.tokens, nllSum: r.nll,
    scored: r.scored, pplScored: Math.exp(r.scoredNll / r.scored),
    windowsAvailable: r.windowsAvailable, datasetTokens: ids.length, model: m.dir, dataset: v.dataset,
    timings: { loadMs: round(m.loadMs), tokenizeMs: round(tokenizeMs), evalMs: round(evalMs), tokPerSec: round(tokPerSec) },
  };
  if (v.json) { process.stdout.write(JSON.stringify(out) + '\n'); return 0; }
  const first = r.windows < available ? ` (first ${r.windows} of ${available})` : '';
  const rows: [string, string][] = [
    ['model', m.dir],
    ['dataset', `${v.dataset} (${ids.length.toLocaleString('en-US')} tokens)`],
    ['windows', stride === undefined ? `${r.windows} × ${r.seqLen}${first}` : `${r.windows} of up to ${r.seqLen}, stride ${stride}${first}`],
    ['tokens scored', stride === undefined || r.scored === r.tokens ? r.tokens.toLocaleString('en-US')
      : `${r.scored.toLocaleString('en-US')} (HF's count: ${r.tokens.toLocaleString('en-US')})`],
    ['perplexity', r.perplexity.toFixed(2)],
    ['time', `${(evalMs / 1000).toFixed(1)} s (${Math.round(tokPerSec).toLocaleString('en-US')} tokens/s; tokenizing ${(tokenizeMs / 1000).toFixed(1)} s)`],
  ];
  process.stdout.write(rows.map(([k, x]) => `${k.padEnd(14)} ${x}`).join('\n') + '\n');
  return 0;
}

type Values = ReturnType<typeof parseCommand<typeof OPTIONS>>['values'];

async function runLambada(model: string, file: string, v: Values): Promise<number> {
  const maxExamples = intOpt(v['max-examples'], '--max-examples', 1);
  const batchSize = intOpt(v['batch-size'], '--batch-size', 1) ?? 1;
  backendOpt(v.backend, v.device);
  setThreadsOption(v.threads);
  let t0 = performance.now();
  const examples = readLambada(file);                             // every line checked, even past --max-examples
  const readMs = performance.now() - t0;
  const m = await loadModel(model, v);
  if (!m.tokenizer) throw new DatasetError(`${m.dir}: no tokenizer.json, so --lambada text cannot be tokenized`);
  const total = Math.min(examples.length, maxExamples ?? examples.length);
  process.stderr.write(`lowbit: ${file}: ${examples.length} example${examples.length === 1 ? '' : 's'}${total < examples.length ? `, scoring the first ${total}` : ''}\n`);
  t0 = performance.now();
  const r = lambada(m.model, m.tokenizer, examples, {
    batchSize, maxExamples,
    onProgress: renderProgress<LambadaProgress>({ detail: (p) => ` · ${p.correct}/${p.done} correct (${(100 * p.correct / Math.max(1, p.done)).toFixed(1)}%)` }),
  });
  const evalMs = performance.now() - t0;
  const out = {
    accuracy: r.accuracy, correct: r.correct, total: r.total, ppl: r.ppl, tokenPpl: r.tokenPpl, targetTokens: r.targetTokens,
    truncated: r.truncatedExamples, boundaryMerges: r.boundaryMerges, examplesAvailable: examples.length, batchSize, model: m.dir, dataset: file,
    timings: { loadMs: round(m.loadMs), readMs: round(readMs), evalMs: round(evalMs), examplesPerSec: round(evalMs > 0 ? r.total / (evalMs / 1000) : 0) },
  };
  if (v.json) { process.stdout.write(JSON.stringify(out) + '\n'); return 0; }
  const rows: [string, string][] = [
    ['model', m.dir],
    ['dataset', `${file} (${examples.length.toLocaleString('en-US')} examples)`],
    ['examples', `${r.total}${r.total < examples.length ? ` (first ${r.total} of ${examples.length})` : ''}${r.truncatedExamples ? `, ${r.truncatedExamples} with the context cut to fit` : ''}`],
    ['accuracy', `${(100 * r.accuracy).toFixed(2)}% (${r.correct}/${r.total})`],
    ['perplexity', `${r.ppl.toFixed(2)} per word (${r.tokenPpl.toFixed(2)} per token, ${r.targetTokens.toLocaleString('en-US')} target tokens)`],
    ['time', `${(evalMs / 1000).toFixed(1)} s (${(evalMs > 0 ? r.total / (evalMs / 1000) : 0).toFixed(1)} examples/s)`],
  ];
  process.stdout.write(rows.map(([k, x]) => `${k.padEnd(14)} ${x}`).join('\n') + '\n');
  return 0;
}

function round(x: number): number { return Math.round(x * 100) / 100; }
