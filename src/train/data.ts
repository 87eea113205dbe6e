// Training data (issue 11): examples of token ids with labels (−100 where nothing is scored), from
//   - a text file: one token stream (the tokenizer's special tokens once at the start), optionally a character range
//     of it (`range: [0, 0.9]` = the first 90%), cut into blocks of seqlen;
//   - JSONL: {"text"} records; {"messages": [...]} rendered by the chat template (loss on the assistant turns only
//     with assistantOnly); {"prompt", "completion"} or the rows of `lowbit generate --prompts-file --json`
//     ({"type": "row", "prompt", "text"}), scored on the completion: a teacher's outputs as a dataset;
//   - CSV with a header and a `text` column (quoted fields with "" escapes).
// Records longer than seqlen are cut; with packing, records are joined (EOS between them) and cut into full blocks.
// collate() pads a batch on the right with labels −100 and mask 0 there: DataCollatorForLanguageModeling(mlm=False).
import { extname } from 'node:path';
import type { ChatMessage } from '../tokenizer/index.js';
import { readTextFile } from '../util/fs.js';
import type { TrainBatch } from './engine.js';
import { IGNORE_INDEX } from './ops.js';

export class TrainingDataError extends Error { override name = 'TrainingDataError'; }

export interface TrainExample { ids: number[]; labels: number[] }

/** What data loading needs of a tokenizer (src/tokenizer's Tokenizer has it). */
export interface DataTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  encodeChat(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): number[];
  readonly eosTokenId: number | null;
}

export interface DataOptions {
  /** Tokens per example (block length for text files and packing). */
  seqlen: number;
  /** Join records (EOS between them) and cut full blocks of seqlen. */
  packing?: boolean;
  /** Chat records: score the assistant turns only. */
  assistantOnly?: boolean;
  /** Text files: the character range to use, as fractions [from, to) of the file (default [0, 1]). */
  range?: [number, number];
}

export function loadTrainingData(path: string, tok: DataTokenizer, opts: DataOptions): TrainExample[] {
  const { seqlen } = opts;
  if (!(Number.isInteger(seqlen) && seqlen >= 2)) throw new TrainingDataError(`training data: seqlen must be an integer ≥ 2, got ${seqlen}`);
  const text = readTextFile(path, (m) => new TrainingDataError(`training data: ${m}`));
  const ext = extname(path).toLowerCase();
  let records: TrainExample[];
  if (ext === '.jsonl') records = jsonlRecords(text, path, tok, opts);
  else if (ext === '.csv') records = parseCsvTexts(text, path).map((t) => scored(tok.encode(t)));
  else {
    const [a, b] = opts.range ?? [0, 1];
    if (!(a >= 0 && b <= 1 && a < b)) throw new TrainingDataError(`training data: range must be 0 ≤ from < to ≤ 1, got [${a}, ${b}]`);
    const ids = tok.encode(text.slice(Math.floor(a * text.length), Math.floor(b * text.length)));
    return blocks(ids, seqlen, path);
  }
  if (!records.length) throw new TrainingDataError(`training data: ${path} holds no records`);
  if (opts.packing) {
    const eos = tok.eosTokenId;
    const ids: number[] = [], lab: number[] = [];
    for (const r of records) {
      ids.push(...r.ids);
      lab.push(...r.labels);
      if (eos !== null) { ids.push(eos); lab.push(eos); }
    }
    return blocks(ids, seqlen, path, lab);
  }
  return records.map((r) => ({ ids: r.ids.slice(0, seqlen), labels: r.labels.slice(0, seqlen) })).filter((r) => r.labels.some((l) => l !== IGNORE_INDEX));
}

const scored = (ids: number[]): TrainExample => ({ ids, labels: ids.slice() });

/** Full blocks of seqlen (a text stream's tail shorter than a block is dropped, as run_clm's group_texts does). */
function blocks(ids: number[], seqlen: number, path: string, labels?: number[]): TrainExample[] {
  const n = Math.floor(ids.length / seqlen);
  if (n === 0) throw new TrainingDataError(`training data: ${path} gives ${ids.length} tokens, less than one block of ${seqlen}`);
  const out: TrainExample[] = [];
  for (let i = 0; i < n; i++) {
    const s = ids.slice(i * seqlen, (i + 1) * seqlen);
    out.push({ ids: s, labels: labels ? labels.slice(i * seqlen, (i + 1) * seqlen) : s.slice() });
  }
  return out;
}

function jsonlRecords(text: string, path: string, tok: DataTokenizer, opts: DataOptions): TrainExample[] {
  const out: TrainExample[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let v: Record<string, unknown>;
    try { v = JSON.parse(line); } catch (e) { throw new TrainingDataError(`training data: ${path}, line ${i + 1}: not JSON (${(e as Error).message})`); }
    const where = `${path}, line ${i + 1}`;
    if (v === null || typeof v !== 'object') throw new TrainingDataError(`training data: ${where}: not a JSON object`);
    if (v.type === 'summary') return;                                   // lowbit generate --json's last line
    if (typeof v.text === 'string' && typeof v.prompt === 'string') out.push(promptCompletion(tok, v.prompt, v.text));
    else if (typeof v.prompt === 'string' && typeof v.completion === 'string') out.push(promptCompletion(tok, v.prompt, v.completion));
    else if (typeof v.text === 'string') out.push(scored(tok.encode(v.text)));
    else if (Array.isArray(v.messages)) out.push(chatExample(tok, v.messages as ChatMessage[], opts.assistantOnly ?? false, where));
    else throw new TrainingDataError(`training data: ${where}: no "text", "messages" or "prompt"/"completion" field`);
  });
  return out;
}

function promptCompletion(tok: DataTokenizer, prompt: string, completion: string): TrainExample {
  const p = tok.encode(prompt), full = tok.encode(prompt + completion);
  // The completion's tokens: where the joint encoding leaves the prompt's.
  let k = 0;
  while (k < p.length && k < full.length && p[k] === full[k]) k++;
  return { ids: full, labels: full.map((t, i) => (i < k ? IGNORE_INDEX : t)) };
}

function chatExample(tok: DataTokenizer, messages: ChatMessage[], assistantOnly: boolean, where: string): TrainExample {
  for (const [j, m] of messages.entries()) {
    if (!m || typeof m.role !== 'string' || typeof m.content !== 'string') throw new TrainingDataError(`training data: ${where}: messages[${j}] needs a "role" and a "content" string`);
  }
  const ids = tok.encodeChat(messages);
  if (!assistantOnly) return scored(ids);
  const labels = ids.map(() => IGNORE_INDEX);
  // Each assistant turn: the tokens between the rendering up to its generation prompt and the rendering through it.
  messages.forEach((m, j) => {
    if (m.role !== 'assistant') return;
    const before = tok.encodeChat(messages.slice(0, j), { addGenerationPrompt: true });
    const through = tok.encodeChat(messages.slice(0, j + 1));
    for (let i = before.length; i < through.length && i < ids.length; i++) labels[i] = ids[i];
  });
  if (!labels.some((l) => l !== IGNORE_INDEX)) throw new TrainingDataError(`training data: ${where}: no assistant turn to learn from`);
  return { ids, labels };
}

/** The `text` column of a CSV file with a header row (RFC 4180 quoting). */
export function parseCsvTexts(text: string, path: string): string[] {
  const rows: string[][] = [];
  let row: string[] = [], field = '', q = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (q) {
      if (ch === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (ch === '"') q = false; else field += ch;
    } else if (ch === '"') q = true;
    else if (ch === ',') { row.push(field); field = ''; }
    else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(field); field = '';
      if (row.some((f) => f !== '')) rows.push(row);
      row = [];
    } else field += ch;
  }
  if (field !== '' || row.length) { row.push(field); if (row.some((f) => f !== '')) rows.push(row); }
  if (q) throw new TrainingDataError(`training data: ${path}: a quoted field is not closed`);
  const col = rows[0]?.indexOf('text') ?? -1;
  if (col < 0) throw new TrainingDataError(`training data: ${path}: the header has no "text" column (got ${JSON.stringify(rows[0] ?? [])})`);
  return rows.slice(1).map((r) => r[col] ?? '').filter((t) => t !== '');
}

/** DataCollatorForLanguageModeling(mlm=False): right padding with padId, labels −100 and mask 0 on padding. */
export function collate(examples: TrainExample[], padId: number): TrainBatch {
  const B = examples.length, T = Math.max(...examples.map((e) => e.ids.length));
  const ids = new Int32Array(B * T).fill(padId), labels = new Int32Array(B * T).fill(IGNORE_INDEX), mask = new Uint8Array(B * T);
  examples.forEach((e, b) => {
    ids.set(e.ids, b * T);
    labels.set(e.labels, b * T);
    mask.fill(1, b * T, b * T + e.ids.length);
  });
  return { ids, labels, B, T, mask: examples.every((e) => e.ids.length === T) ? null : mask };
}
