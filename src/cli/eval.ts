// `lowbit eval`: perplexity of a model on a text file under the GPTQ/AWQ papers' protocol (FORMATS.md §9.1): the
// file's text, as it is, tokenized once as one stream with the tokenizer's special tokens (one BOS at the very start
// for Llama, `</s>` for OPT), cut into non-overlapping windows with the remainder dropped, each window one forward.
import { readFileSync } from 'node:fs';
import { perplexity, type PerplexityProgress } from '../eval/perplexity.js';
import { probePath } from '../util/fs.js';
import { backendOpt, intOpt, parseCommand, renderProgress, UsageError } from './args.js';
import { setThreadsOption } from './common.js';
import { loadModel } from './generate.js';

export const evalHelp = `lowbit eval — perplexity of a model on a text file

Usage: lowbit eval <model folder | org/name> --ppl --dataset FILE [options]

The GPTQ/AWQ papers' protocol: the file's text, as it is (UTF-8; rows are not re-joined), is tokenized once as one
stream with the tokenizer's special tokens (a Llama stream starts with one BOS), cut into non-overlapping windows of
--seqlen tokens (the trailing remainder is dropped), and each window is an independent forward with no extra BOS;
every position but a window's last predicts the next token. ppl = exp(mean negative log-likelihood of the scored
tokens). For WikiText-2 as the papers score it, give a file holding "\\n\\n".join(rows) of the test split.

Options:
  --ppl                 compute perplexity (the only evaluation so far; required)
  --dataset FILE        the text to score (UTF-8)
  --seqlen N            tokens per window (default: the model's positions, at most 2048)
  --max-windows N       score only the first N windows
  --json                one JSON object on stdout (below) instead of the table; progress stays on stderr
  --revision REV        Hub revision (default main)
  --backend cpu|ref  --threads N
  --no-mmap             read the weights into memory instead of mapping them

Output:
  progress on stderr (windows done / total, tokens/s), then a table: model, dataset, windows × seqlen, tokens
  scored, perplexity, time. With --json:
    {"ppl", "tokens" (scored: windows × (seqlen − 1)), "windows", "seqlen", "nll" (mean per scored token, nats),
     "nllSum", "windowsAvailable", "datasetTokens", "model", "dataset",
     "timings": {"loadMs", "tokenizeMs", "evalMs", "tokPerSec" (tokens fed to the model per second)}}

Examples:
  lowbit eval models/kjv-demo --ppl --dataset models/kjv-demo/heldout.txt --seqlen 256 --max-windows 16
  lowbit eval ./eval-llama-16m --ppl --dataset wikitext2-test.txt --seqlen 256 --max-windows 200 --json
`;

/** A problem with the --dataset file (exit 1: the command was well formed, the file is not usable). */
export class DatasetError extends Error { override name = 'DatasetError'; }

const OPTIONS = {
  ppl: { type: 'boolean', default: false }, dataset: { type: 'string' }, seqlen: { type: 'string' }, 'max-windows': { type: 'string' },
  json: { type: 'boolean', default: false }, revision: { type: 'string' }, backend: { type: 'string' }, threads: { type: 'string' },
  'no-mmap': { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
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
  if (!v.ppl) throw new UsageError('say what to evaluate: --ppl (perplexity, the only evaluation so far)');
  if (v.dataset === undefined) throw new UsageError('--ppl needs --dataset FILE (the text to score)');
  const seqFlag = intOpt(v.seqlen, '--seqlen', 2);
  const maxWindows = intOpt(v['max-windows'], '--max-windows', 1);
  backendOpt(v.backend);
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
  const available = Math.floor(ids.length / seqLen);
  if (available === 0) {
    throw new DatasetError(`--dataset ${v.dataset}: ${ids.length} tokens, fewer than one window of --seqlen ${seqLen}; give more text or --seqlen ≤ ${ids.length}`);
  }
  const windows = Math.min(available, maxWindows ?? available);
  const dropped = ids.length - available * seqLen;
  process.stderr.write(`lowbit: ${v.dataset}: ${ids.length} tokens → ${available} window${available === 1 ? '' : 's'} of ${seqLen}` +
    `${dropped ? ` (last ${dropped} dropped)` : ''}${windows < available ? `, scoring the first ${windows}` : ''}\n`);

  t0 = performance.now();
  const r = perplexity(m.model, ids, { seqLen, maxWindows, onProgress: renderProgress<PerplexityProgress>({ detail: (p) => ` · ${Math.round(p.tokensPerSec).toLocaleString('en-US')} tokens/s` }) });
  const evalMs = performance.now() - t0;
  const tokPerSec = evalMs > 0 ? (r.windows * r.seqLen) / (evalMs / 1000) : 0;
  const out = {
    ppl: r.perplexity, tokens: r.tokens, windows: r.windows, seqlen: r.seqLen, nll: r.nll / r.tokens, nllSum: r.nll,
    windowsAvailable: r.windowsAvailable, datasetTokens: ids.length, model: m.dir, dataset: v.dataset,
    timings: { loadMs: round(m.loadMs), tokenizeMs: round(tokenizeMs), evalMs: round(evalMs), tokPerSec: round(tokPerSec) },
  };
  if (v.json) { process.stdout.write(JSON.stringify(out) + '\n'); return 0; }
  const rows: [string, string][] = [
    ['model', m.dir],
    ['dataset', `${v.dataset} (${ids.length.toLocaleString('en-US')} tokens)`],
    ['windows', `${r.windows} × ${r.seqLen}${r.windows < available ? ` (first ${r.windows} of ${available})` : ''}`],
    ['tokens scored', r.tokens.toLocaleString('en-US')],
    ['perplexity', r.perplexity.toFixed(2)],
    ['time', `${(evalMs / 1000).toFixed(1)} s (${Math.round(tokPerSec).toLocaleString('en-US')} tokens/s; tokenizing ${(tokenizeMs / 1000).toFixed(1)} s)`],
  ];
  process.stdout.write(rows.map(([k, x]) => `${k.padEnd(14)} ${x}`).join('\n') + '\n');
  return 0;
}

function round(x: number): number { return Math.round(x * 100) / 100; }
