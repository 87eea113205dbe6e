// Calibration samples for GPTQ (../shared/spec/FORMATS.md §4.4; AWQ's blocks are at the end of this file): token windows drawn with Python's own random
// (src/util/pyrandom.ts), so a seed picks the windows the reference scripts pick from the same token stream.
//  - a text file: one stream (the whole file, tokenized once with the tokenizer's special tokens); per sample
//    i = randint(0, len − seqlen − 1) and the window ids[i, i + seqlen) (IST gptq datautils, wikitext2 / ptb);
//  - a JSONL file with a "text" field per line: documents, sampled as the reference's get_c4 does: per sample pick
//    document randint(0, docs − 1) until one has more than seqlen tokens, then a window of it as above. When no
//    document is that long (the reference would loop forever) the documents are joined with "\n\n" into one stream;
//  - an array of strings (GPTQConfig(dataset=[...]) in optimum): each string is one sample of its own length,
//    tokenized alone and cut to its first seqlen tokens; every string is used and nsamples does not apply, as in
//    optimum's GPTQQuantizer.
import { extname } from 'node:path';
import { PyRandom } from '../util/pyrandom.js';
import { readTextFile } from '../util/fs.js';

/** A calibration source that cannot give the samples asked for (file missing, too short, bad JSONL line). */
export class CalibrationError extends Error { override name = 'CalibrationError'; }

/** What calibration needs from a tokenizer (src/tokenizer's Tokenizer fits). */
export interface CalibrationTokenizer { encode(text: string): number[] }

export interface CalibrationOptions {
  /** Windows to draw (default 128); not used for an array of strings. */
  nsamples?: number;
  /** Tokens per window (default 2048, or the model's maxPositions when smaller). */
  seqlen?: number;
  /** random.seed (default 0). */
  seed?: number;
  /** The model's position limit: the default seqlen is capped by it and a larger seqlen is refused. */
  maxPositions?: number;
}

export interface CalibrationSet {
  /** One Int32Array of token ids per sample. */
  samples: Int32Array[];
  /**
   * 'stream' (text file), 'documents' (JSONL), 'joined' (JSONL with no document long enough), 'texts' (array);
   * 'blocks': AWQ's texts joined and cut into equal blocks (awqCalibrationSamples).
   */
  kind: 'stream' | 'documents' | 'joined' | 'texts' | 'blocks';
  seqlen: number;
  /** Where the data came from, for messages. */
  source: string;
}

/** Calibration samples from a text file, a JSONL file with a "text" field, or an array of strings. */
export function calibrationSamples(dataset: string | readonly string[], tokenizer: CalibrationTokenizer, opts: CalibrationOptions = {}): CalibrationSet {
  const nsamples = opts.nsamples ?? 128, seed = opts.seed ?? 0;
  const maxPos = opts.maxPositions ?? Infinity;
  if (!(Number.isInteger(nsamples) && nsamples >= 1)) throw new CalibrationError(`calibration: nsamples must be a positive integer, got ${JSON.stringify(opts.nsamples)}`);
  if (!Number.isSafeInteger(seed)) throw new CalibrationError(`calibration: seed must be an integer, got ${JSON.stringify(opts.seed)}`);
  const seqlen = opts.seqlen ?? Math.min(2048, maxPos);
  if (!(Number.isInteger(seqlen) && seqlen >= 1)) throw new CalibrationError(`calibration: seqlen must be a positive integer, got ${JSON.stringify(opts.seqlen)}`);
  if (seqlen > maxPos) throw new CalibrationError(`calibration: seqlen ${seqlen} is longer than the model's ${maxPos} positions`);

  if (Array.isArray(dataset)) {
    if (!dataset.length) throw new CalibrationError('calibration: the dataset is an empty list of texts');
    const samples = dataset.map((t, i) => {
      if (typeof t !== 'string') throw new CalibrationError(`calibration: dataset[${i}] is not a string`);
      const ids = tokenizer.encode(t).slice(0, seqlen);
      if (!ids.length) throw new CalibrationError(`calibration: dataset[${i}] gives no tokens`);
      return Int32Array.from(ids);
    });
    return { samples, kind: 'texts', seqlen, source: `${dataset.length} text${dataset.length === 1 ? '' : 's'}` };
  }
  if (typeof dataset !== 'string') throw new CalibrationError(`calibration: dataset must be a file path or an array of strings, got ${typeof dataset}`);
  const path = dataset;
  const text = readTextFile(path, (m) => new CalibrationError(`calibration: ${m}`));
  const rng = new PyRandom(seed);
  if (extname(path).toLowerCase() !== '.jsonl') return { samples: streamWindows(tokenizer.encode(text), nsamples, seqlen, rng, path), kind: 'stream', seqlen, source: path };

  const docs = readJsonlTexts(text, path);
  const lengths = new Map<number, number[]>();
  const tokens = (i: number) => { let t = lengths.get(i); if (!t) { t = tokenizer.encode(docs[i]); lengths.set(i, t); } return t; };
  // The reference loops until it finds a long enough document; with none, it would never stop.
  if (!docs.some((_, i) => tokens(i).length > seqlen)) {
    return { samples: streamWindows(tokenizer.encode(docs.join('\n\n')), nsamples, seqlen, rng, path), kind: 'joined', seqlen, source: path };
  }
  const samples: Int32Array[] = [];
  for (let s = 0; s < nsamples; s++) {
    let ids: number[];
    do ids = tokens(rng.randint(0, docs.length - 1)); while (ids.length <= seqlen);
    const i = rng.randint(0, ids.length - seqlen - 1);
    samples.push(Int32Array.from(ids.slice(i, i + seqlen)));
  }
  return { samples, kind: 'documents', seqlen, source: path };
}

function streamWindows(ids: number[], nsamples: number, seqlen: number, rng: PyRandom, source: string): Int32Array[] {
  if (ids.length < seqlen + 1) {
    throw new CalibrationError(`calibration: ${source} has ${ids.length} tokens; windows of ${seqlen} need at least ${seqlen + 1} (use a smaller seqlen or more text)`);
  }
  const out: Int32Array[] = [];
  for (let s = 0; s < nsamples; s++) {
    const i = rng.randint(0, ids.length - seqlen - 1);
    out.push(Int32Array.from(ids.slice(i, i + seqlen)));
  }
  return out;
}

function readJsonlTexts(text: string, path: string): string[] {
  const docs: string[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let v: unknown;
    try { v = JSON.parse(line); } catch (e) {
      throw new CalibrationError(`calibration: ${path}, line ${i + 1}: not JSON (${(e as Error).message})`);
    }
    const t = (v as { text?: unknown } | null)?.text;
    if (typeof t !== 'string') throw new CalibrationError(`calibration: ${path}, line ${i + 1}: no "text" string field`);
    docs.push(t);
  });
  if (!docs.length) throw new CalibrationError(`calibration: ${path} holds no JSONL records`);
  return docs;
}

export interface AwqCalibrationOptions {
  /** Texts to take (AutoAWQ max_calib_samples, default 128). */
  nsamples?: number;
  /** Block length, and the longest text kept (AutoAWQ max_calib_seq_len, default 512, capped by the model). */
  seqlen?: number;
  /** The model's position limit. */
  maxPositions?: number;
}

/**
 * AWQ's calibration blocks (../shared/spec/FORMATS.md §5.1, AutoAWQ get_calib_dataset): the texts in order — an
 * array's strings, a JSONL file's "text" fields, or a text file's lines (as the datasets "text" loader gives rows) —
 * each stripped and tokenized with the tokenizer's default special tokens; a text longer than seqlen tokens is skipped;
 * the first nsamples kept are joined into one stream and cut into floor(total / seqlen) blocks of seqlen.
 */
export function awqCalibrationSamples(dataset: string | readonly string[], tokenizer: CalibrationTokenizer, opts: AwqCalibrationOptions = {}): CalibrationSet {
  const nsamples = opts.nsamples ?? 128, maxPos = opts.maxPositions ?? Infinity;
  const seqlen = opts.seqlen ?? Math.min(512, maxPos);
  if (!(Number.isInteger(nsamples) && nsamples >= 1)) throw new CalibrationError(`calibration: nsamples must be a positive integer, got ${JSON.stringify(opts.nsamples)}`);
  if (!(Number.isInteger(seqlen) && seqlen >= 1)) throw new CalibrationError(`calibration: seqlen must be a positive integer, got ${JSON.stringify(opts.seqlen)}`);
  if (seqlen > maxPos) throw new CalibrationError(`calibration: seqlen ${seqlen} is longer than the model's ${maxPos} positions`);
  let rows: readonly string[], source: string;
  if (Array.isArray(dataset)) {
    dataset.forEach((t, i) => { if (typeof t !== 'string') throw new CalibrationError(`calibration: dataset[${i}] is not a string`); });
    rows = dataset;
    source = `${dataset.length} text${dataset.length === 1 ? '' : 's'}`;
  } else if (typeof dataset === 'string') {
    const text = readTextFile(dataset, (m) => new CalibrationError(`calibration: ${m}`));
    rows = extname(dataset).toLowerCase() === '.jsonl' ? readJsonlTexts(text, dataset) : text.replace(/\r?\n$/, '').split(/\r?\n/);
    source = dataset;
  } else {
    throw new CalibrationError(`calibration: dataset must be a file path or an array of strings, got ${typeof dataset}`);
  }
  const stream: number[] = [];
  let kept = 0;
  for (const row of rows) {
    const ids = tokenizer.encode(row.trim());
    if (ids.length > seqlen || ids.length === 0) continue;
    for (const id of ids) stream.push(id);
    if (++kept === nsamples) break;
  }
  const blocks = Math.floor(stream.length / seqlen);
  if (blocks === 0) {
    throw new CalibrationError(`calibration: ${source}: the ${kept} text${kept === 1 ? '' : 's'} of at most ${seqlen} tokens hold ${stream.length} tokens, fewer than one block of ${seqlen} (give more text, a larger nsamples or a smaller seqlen)`);
  }
  const samples = Array.from({ length: blocks }, (_, b) => Int32Array.from(stream.slice(b * seqlen, (b + 1) * seqlen)));
  return { samples, kind: 'blocks', seqlen, source };
}
