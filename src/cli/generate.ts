// `lowbit generate`: one prompt (streamed, with a stats line on stderr) or a file of prompts run in micro-batches
// sized to memory, each row written as it finishes; greedy or sampled, optionally as chat.
import { readFileSync } from 'node:fs';
import { freemem } from 'node:os';
import { PeftModel } from '../peft/lora.js';
import { fromPretrained, LoadedModel } from '../api.js';
import { GenerationConfigError, type GenerationConfig } from '../generate/config.js';
import { generateStream, GenerateOptions, GenerateResult, isRowError, type FinishReason } from '../generate/generate.js';
import { chatTerminators } from '../generate/terminators.js';
import { kvBytesPerToken, modelShape } from '../plan/plan.js';
import { readChatTemplateFile, type ChatTemplateSource } from '../tokenizer/template.js';
import type { ChatMessage } from '../tokenizer/index.js';
import { backendOpt, intOpt, numOpt, parseCommand, renderProgress, UsageError } from './args.js';
import { setThreadsOption } from './common.js';
import { progressReporter } from '../util/progress.js';

/** More rows than this gain little on a CPU (the weights are read once per step either way) and delay the first results. */
export const AUTO_BATCH_CAP = 16;

export const generateHelp = `lowbit generate — generate text with a causal LM

Usage: lowbit generate <model folder | org/name> --prompt TEXT [options]
       lowbit generate <model folder | org/name> --prompts-file F [--batch-size N|auto] [options]

Options:
  --prompt TEXT               the prompt (or the user message with --chat)
  --prompts-file F            one prompt per line (blank lines skipped), run in micro-batches; each row is written
                              as soon as it finishes, with progress on stderr
  --batch-size N|auto         rows per micro-batch (default auto: as many as the KV cache of the longest prompt +
                              --max-new-tokens fits in half the free memory, at most ${AUTO_BATCH_CAP})
  --chat                      wrap the prompt in the model's chat template
  --chat-template FILE        use this chat template instead (a .jinja file, or JSON with a chat_template key)
  --system TEXT               system message (with --chat)
  --max-new-tokens N          new tokens at most (default: generation_config.json's max_new_tokens, else 256, or
                              half the model's positions if that is fewer)
  --min-new-tokens N          no end-of-sequence before N new tokens
  --temperature T             0 means greedy; any other value samples (as do --top-k, --top-p, --min-p)
  --do-sample                 sample even when no option above asks for it (with the model's defaults)
  --top-k K  --top-p P  --min-p P
  --repetition-penalty R      >1 discourages repeats (transformers semantics)
  --no-repeat-ngram-size N    never repeat an n-gram of this size
  --stop TEXT                 stop when TEXT appears (repeatable)
  --seed S                    seed for sampling (same seed, same text)
  --truncate                  cut a prompt that leaves no room for the new tokens from the left (keep its end);
                              without it, a prompt + new tokens longer than the model's positions is refused
  --revision REV              Hub revision (default main)
  --adapter DIR               a PEFT LoRA adapter folder on top of the model (adapter_config.json + adapter_model.safetensors)
  --backend cpu|cuda|ref (--device cpu|cuda)  --threads N
  --no-mmap                   read the weights into memory instead of mapping them (a mapped file that another
                              process truncates ends this one with SIGBUS)
  --json                      JSON instead of text (below)

Output:
  --prompt                    the text streams to stdout; then one line on stderr: prompt and generated tokens,
                              prefill and decode tokens/s, and why it stopped (eos, stop or length)
  --prompt --json             one JSON object: {"text", "tokenIds", "promptTokens", "generatedTokens",
                              "finishReason", "truncatedTokens", "timings": {"loadMs", "prefillMs", "decodeMs",
                              "prefillTokPerSec", "decodeTokPerSec"}}
  --prompts-file              a block per row: "--- [index] prompt", the text, "(finish reason, N tokens)"
  --prompts-file --json       JSON Lines: one object per row, in input order as rows finish:
                                {"type":"row","index":0,"prompt":"…","text":"…","tokenIds":[…],"promptTokens":9,
                                 "generatedTokens":48,"finishReason":"length","truncatedTokens":0}
                              then one summary line (batchSize: the largest micro-batch run):
                                {"type":"summary","rows":N,"batchSize":16,"batches":…,"promptTokens":…,
                                 "generatedTokens":…,"timings":{"loadMs","prefillMs","decodeMs","totalMs",
                                 "prefillTokPerSec","decodeTokPerSec"}}

Examples:
  lowbit generate models/kjv-demo --prompt $'John 10\\n11 I am' --stop $'\\n' --temperature 0
  lowbit generate ./tinystories --prompt "Once upon a time" --max-new-tokens 48 --temperature 0 --json
  lowbit generate ./tinystories --prompts-file prompts.txt --temperature 0.8 --top-p 0.9 --seed 1 --json > out.jsonl
`;

export const GENERATION_OPTIONS = {
  'max-new-tokens': { type: 'string' }, 'min-new-tokens': { type: 'string' }, temperature: { type: 'string' },
  'do-sample': { type: 'boolean' },
  'top-k': { type: 'string' }, 'top-p': { type: 'string' }, 'min-p': { type: 'string' },
  'repetition-penalty': { type: 'string' }, 'no-repeat-ngram-size': { type: 'string' }, seed: { type: 'string' },
  stop: { type: 'string', multiple: true }, system: { type: 'string' }, 'chat-template': { type: 'string' },
  truncate: { type: 'boolean' }, revision: { type: 'string' }, backend: { type: 'string' }, device: { type: 'string' }, threads: { type: 'string' },
  'no-mmap': { type: 'boolean' }, adapter: { type: 'string' }, help: { type: 'boolean', short: 'h' },
} as const;

/**
 * Generation settings from the shared flags. The library decides greedy or sampling (temperature 0 is greedy, a
 * sampling option samples, an explicit doSample wins), so the flags are passed through as given.
 */
export function generationFromFlags(v: Record<string, unknown>): GenerationConfig {
  const s = (k: string) => v[k] as string | undefined;
  const g: GenerationConfig = {
    maxNewTokens: intOpt(s('max-new-tokens'), '--max-new-tokens', 1),
    minNewTokens: intOpt(s('min-new-tokens'), '--min-new-tokens'),
    temperature: numOpt(s('temperature'), '--temperature', (x) => x >= 0, 'a number ≥ 0'),
    topK: intOpt(s('top-k'), '--top-k'),
    topP: numOpt(s('top-p'), '--top-p', (x) => x > 0 && x <= 1, 'in (0, 1]'),
    minP: numOpt(s('min-p'), '--min-p', (x) => x >= 0 && x <= 1, 'in [0, 1]'),
    repetitionPenalty: numOpt(s('repetition-penalty'), '--repetition-penalty', (x) => x > 0, 'a positive number'),
    noRepeatNgramSize: intOpt(s('no-repeat-ngram-size'), '--no-repeat-ngram-size'),
    seed: intOpt(s('seed'), '--seed'),
    stopStrings: v.stop as string[] | undefined,
  };
  if (v['do-sample']) {
    if (g.temperature === 0) throw new UsageError('--do-sample and --temperature 0 contradict each other (0 means greedy)');
    g.doSample = true;
  }
  return g;
}

/**
 * New tokens per answer: the flag, else generation_config.json's max_new_tokens. transformers' default of 20 tokens
 * in total is too short for a command line, so without either allow 256, or half the model's positions when that
 * is fewer (a 256-token answer would leave a 128-position model no room for the prompt).
 */
export function maxNewTokens(m: LoadedModel, gen: GenerationConfig): number {
  return gen.maxNewTokens ?? m.generationConfig.maxNewTokens ?? Math.min(256, Math.floor(m.model.maxPositions / 2));
}

/** Load a model as generate and chat do: --backend, --revision, --no-mmap, a download bar on a terminal. */
export async function loadModel(id: string, v: { backend?: string; device?: string; revision?: string; 'no-mmap'?: boolean; adapter?: string }): Promise<LoadedModel> {
  const backend = backendOpt(v.backend, v.device);
  const m = await fromPretrained(id, { backend, revision: v.revision, mmap: !v['no-mmap'], onProgress: renderProgress({ ttyOnly: true }) });
  // --adapter DIR: a PEFT LoRA adapter on top (PeftModel.from_pretrained).
  if (v.adapter !== undefined) PeftModel.fromPretrained(m.model, v.adapter);
  return m;
}

/** --chat-template FILE: the template source, or undefined for the model's own. */
export function chatTemplateOption(file: string | undefined): ChatTemplateSource | undefined {
  // The whole source, not just its text, so that render errors name the file.
  return file === undefined ? undefined : readChatTemplateFile(file);
}

export function chatMessages(prompt: string, system?: string): ChatMessage[] {
  return [...(system ? [{ role: 'system', content: system }] : []), { role: 'user', content: prompt }];
}

/** Prompt text → ids: through the chat template (which writes BOS itself) or plain encoding. */
export function encodePrompt(m: LoadedModel, prompt: string, chat: boolean, system?: string, chatTemplate?: ChatTemplateSource): number[] {
  if (!m.tokenizer) throw new UsageError(`${m.dir}: no tokenizer.json, so text prompts cannot be encoded`);
  if (chat) return m.tokenizer.encodeChat(chatMessages(prompt, system), { addGenerationPrompt: true, chatTemplate });
  if (system) throw new UsageError('--system needs --chat');
  if (chatTemplate !== undefined) throw new UsageError('--chat-template needs --chat');
  return m.tokenizer.encode(prompt);
}

/**
 * The library words its limits for API callers (maxNewTokens, truncation: 'left'); on the command line the same
 * limits are flags. Messages that do not mention them pass through unchanged.
 */
export function cliMessage(e: unknown): unknown {
  if (!(e instanceof GenerationConfigError)) return e;
  const msg = e.message
    .replace(/pass truncation: 'left' \(lowbit generate --truncate\)/, 'pass --truncate')
    .replace(/\bmaxNewTokens\b/g, '--max-new-tokens').replace(/\bminNewTokens\b/g, '--min-new-tokens');
  return msg === e.message ? e : withMessage(e, msg);
}

/**
 * A copy of `e` with another message: same prototype (class), every own property (a subclass's fields, `row`,
 * the stack) copied as it is, and the constructor not called (it may take other arguments or check them).
 */
export function withMessage<E extends Error>(e: E, message: string, props: Record<string, unknown> = {}): E {
  const out = Object.create(Object.getPrototypeOf(e)) as E;
  const own = Object.getOwnPropertyDescriptors(e) as Record<string, PropertyDescriptor>;
  own.message = { value: message, enumerable: false, writable: true, configurable: true };
  for (const [k, v] of Object.entries(props)) own[k] = { enumerable: false, writable: false, configurable: true, ...own[k], value: v };
  Object.defineProperties(out, own);
  return out;
}

export const GENERATE_OPTIONS = {
  ...GENERATION_OPTIONS, prompt: { type: 'string' }, 'prompts-file': { type: 'string' }, 'batch-size': { type: 'string' },
  chat: { type: 'boolean', default: false }, json: { type: 'boolean', default: false },
} as const;

/**
 * Rows per micro-batch when --batch-size is auto: as many as fit their KV cache (f32, as the CPU backend keeps it,
 * for the longest prompt plus every new token) into half the free memory, so the weights' pages, activations and
 * logits keep the other half. At least 1, at most AUTO_BATCH_CAP.
 */
export function autoBatchSize(kvBytesPerRow: number, freeBytes: number, cap = AUTO_BATCH_CAP): number {
  return Math.max(1, Math.min(cap, Math.floor((freeBytes * 0.5) / Math.max(1, kvBytesPerRow))));
}

type RunOptions = GenerateOptions & { maxNewTokens: number };

export async function runGenerate(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommand('generate', argv, GENERATE_OPTIONS);
  if (v.help) { process.stdout.write(generateHelp); return 0; }
  if (positionals.length !== 1) throw new UsageError('give exactly one model folder or Hub id (see lowbit generate --help)');
  if ((v.prompt === undefined) === (v['prompts-file'] === undefined)) throw new UsageError('give --prompt TEXT or --prompts-file F (one of them)');
  if (v['batch-size'] !== undefined && v.prompt !== undefined) throw new UsageError('--batch-size applies to --prompts-file');
  const batchFlag = v['batch-size'] === undefined || v['batch-size'] === 'auto' ? 'auto' : intOpt(v['batch-size'], '--batch-size', 1)!;
  if (v['chat-template'] !== undefined && !v.chat) throw new UsageError('--chat-template needs --chat');
  if (v.system !== undefined && !v.chat) throw new UsageError('--system needs --chat');
  const gen = generationFromFlags(v);
  backendOpt(v.backend, v.device);
  setThreadsOption(v.threads);
  let prompts: string[];
  let lines: number[] = [];
  const file = v['prompts-file'];
  if (file !== undefined) {
    let text: string;
    try { text = readFileSync(file, 'utf8'); } catch (e) { throw new UsageError(`--prompts-file ${file}: ${(e as Error).message}`); }
    const all = text.split(/\r?\n/);
    lines = all.flatMap((l, i) => (l.trim() === '' ? [] : [i + 1]));
    prompts = lines.map((n) => all[n - 1]);
    if (prompts.length === 0) throw new UsageError(`--prompts-file ${file}: no prompts in it`);
  } else prompts = [v.prompt!];
  const chatTemplate = chatTemplateOption(v['chat-template']);

  const m = await loadModel(positionals[0], v);
  const encode = (p: string) => encodePrompt(m, p, v.chat!, v.system, chatTemplate);
  const opts: RunOptions = {
    ...gen, maxNewTokens: maxNewTokens(m, gen), tokenizer: m.tokenizer!, modelDefaults: m.generationConfig,
    truncation: v.truncate ? 'left' : 'none',
  };
  if (v.chat) opts.eosTokenId = chatTerminators(m, gen, { chatTemplate });

  try {
    if (file === undefined) return await single(m, encode(prompts[0]), opts, v.json!);
    return await batches(m, prompts, encode, opts, batchFlag, v.json!, file, lines);
  } catch (e) {
    throw cliMessage(e);
  }
}

/** One prompt: stream the text (and a stats line on stderr), or print one JSON object. */
async function single(m: LoadedModel, ids: number[], opts: RunOptions, json: boolean): Promise<number> {
  const it = generateStream(m.model, [ids], opts);
  let res: GenerateResult;
  for (;;) {
    const r = await it.next();
    if (r.done) { res = r.value; break; }
    if (!json) process.stdout.write(r.value.text);
  }
  const r = row(res, 0);
  const timings = {
    loadMs: round(m.loadMs), prefillMs: round(res.timings.prefillMs), decodeMs: round(res.timings.decodeMs),
    // Each row's first token comes from the prefill; the decode steps made the rest.
    prefillTokPerSec: rate(r.promptTokens, res.timings.prefillMs), decodeTokPerSec: rate(Math.max(0, r.generatedTokens - 1), res.timings.decodeMs),
  };
  if (json) {
    process.stdout.write(JSON.stringify({ ...r, timings }) + '\n');
    return 0;
  }
  process.stdout.write('\n');
  const cut = r.truncatedTokens ? ` (${r.truncatedTokens} cut by --truncate)` : '';
  process.stderr.write(`[${r.promptTokens} prompt${cut} + ${r.generatedTokens} generated tokens · prefill ${Math.round(timings.prefillTokPerSec)} tok/s · ` +
    `decode ${Math.round(timings.decodeTokPerSec)} tok/s · finished: ${r.finishReason}]\n`);
  return 0;
}

/**
 * --prompts-file: micro-batches of --batch-size rows, or (auto) of as many rows as the KV cache of the batch's
 * longest prompt + --max-new-tokens fits in half the free memory, so the cache is only ever reserved for one
 * micro-batch. Prompts are tokenized as their batch comes, so the first rows appear at once even for a large file.
 * Rows are written in input order, each as soon as it and the rows before it have finished, with progress on stderr.
 */
async function batches(m: LoadedModel, prompts: string[], encode: (p: string) => number[], opts: RunOptions, batchFlag: number | 'auto', json: boolean, file: string, lines: number[]): Promise<number> {
  const N = prompts.length;
  const kvPerToken = kvBytesPerToken(modelShape(m.config), 4);
  process.stderr.write(`lowbit: ${N} prompt${N === 1 ? '' : 's'} in batches of ${batchFlag === 'auto' ? `up to ${Math.min(N, AUTO_BATCH_CAP)} rows (auto: sized to free memory)` : `${Math.min(N, batchFlag)} rows`}\n`);
  const progress = progressLine(N);
  const totals = { prefillMs: 0, decodeMs: 0, promptTokens: 0, generatedTokens: 0, decodeTokens: 0, batches: 0, largest: 0 };
  const t0 = performance.now();
  const write = (index: number, r: Row) => {
    totals.promptTokens += r.promptTokens; totals.generatedTokens += r.generatedTokens; totals.decodeTokens += Math.max(0, r.generatedTokens - 1);
    if (json) process.stdout.write(JSON.stringify({ type: 'row', index, prompt: prompts[index], ...r }) + '\n');
    else process.stdout.write(`--- [${index}] ${prompts[index]}\n${r.text}\n(${r.finishReason}, ${r.generatedTokens} tokens)\n`);
  };
  const ids: number[][] = [];
  const idsOf = (i: number) => (ids[i] ??= encode(prompts[i]));
  for (let start = 0; start < N;) {
    let size = Math.min(N - start, batchFlag === 'auto' ? AUTO_BATCH_CAP : batchFlag);
    if (batchFlag === 'auto') {
      let longest = 0;
      for (let i = start; i < start + size; i++) longest = Math.max(longest, idsOf(i).length);
      // A row never holds more positions than the model has (longer requests are refused, or cut by --truncate).
      size = Math.min(size, autoBatchSize(kvPerToken * Math.min(longest + opts.maxNewTokens, m.model.maxPositions), freemem()));
    }
    const rows = Array.from({ length: size }, (_, b) => idsOf(start + b));
    totals.batches++; totals.largest = Math.max(totals.largest, size);
    // Rows finish at different steps; each is written once it and every row before it are done, so the output
    // keeps the file's order and nothing waits for the slowest row of the batch unless it comes first. With
    // --truncate, how much of each prompt was cut is only in the result, so rows wait for the batch's end.
    const early = opts.truncation !== 'left';
    const streamed = rows.map(() => ({ text: '', tokenIds: [] as number[], finish: null as FinishReason | null }));
    let next = 0;
    const it = generateStream(m.model, rows, opts);
    let res: GenerateResult;
    try {
      for (;;) {
        const r = await it.next();
        if (r.done) { res = r.value; break; }
        const s = streamed[r.value.row];
        s.text += r.value.text; s.tokenIds.push(r.value.tokenId);
        if (r.value.finishReason) s.finish = r.value.finishReason;
        for (; early && next < rows.length && streamed[next].finish; next++) {
          const f = streamed[next];
          write(start + next, { text: f.text, tokenIds: f.tokenIds, promptTokens: rows[next].length, generatedTokens: f.tokenIds.length, finishReason: f.finish!, truncatedTokens: 0 });
          progress(start + next + 1);
        }
      }
    } catch (e) {
      throw inRows(e, start, file, lines);
    }
    for (; next < rows.length; next++) { write(start + next, row(res, next)); progress(start + next + 1); }
    totals.prefillMs += res.timings.prefillMs;
    totals.decodeMs += res.timings.decodeMs;
    for (let i = start; i < start + size; i++) delete ids[i];
    start += size;
  }
  const timings = {
    loadMs: round(m.loadMs), prefillMs: round(totals.prefillMs), decodeMs: round(totals.decodeMs), totalMs: round(performance.now() - t0),
    prefillTokPerSec: rate(totals.promptTokens, totals.prefillMs), decodeTokPerSec: rate(totals.decodeTokens, totals.decodeMs),
  };
  if (json) {
    process.stdout.write(JSON.stringify({ type: 'summary', rows: N, batchSize: totals.largest, batches: totals.batches, promptTokens: totals.promptTokens, generatedTokens: totals.generatedTokens, timings }) + '\n');
  }
  process.stderr.write(`[${N} rows · ${totals.promptTokens} prompt + ${totals.generatedTokens} generated tokens · prefill ${Math.round(timings.prefillTokPerSec)} tok/s · ` +
    `decode ${Math.round(timings.decodeTokPerSec)} tok/s · ${(timings.totalMs / 1000).toFixed(1)} s]\n`);
  return 0;
}

/**
 * An error about one prompt of a micro-batch carries its `row` there (isRowError); name the prompts file's line and
 * row instead, and drop the micro-batch's numbering from the message. The error keeps its class and every field
 * (TokenIdError's id and position, NonFiniteLogitsError's step): it is copied without calling its constructor,
 * with `row` renumbered to the file's row.
 */
export function inRows(e: unknown, start: number, file: string, lines: number[]): unknown {
  if (!isRowError(e)) return e;
  const row = start + e.row;
  const n = String(e.row);
  const msg = e.message
    .replace(new RegExp(`^((?:generate: )?prompt) ${n} `), '$1 ')            // GenerationConfigError: "prompt 2 has …"
    .replace(new RegExp(`^(\\w+): row ${n}, `), '$1: ')                         // TokenIdError: "prompt: row 2, position …"
    .replace(new RegExp(`, row ${n}: `), ': ');                                 // NonFiniteLogitsError: "…decode step 3, row 2: …"
  return withMessage(e, `${file} line ${lines[row]} (row ${row}): ${msg}`, { row });
}

interface Row { text: string; tokenIds: number[]; promptTokens: number; generatedTokens: number; finishReason: FinishReason; truncatedTokens: number }

/** One result row as printed: the prompt length is what the model saw (after any truncation). */
function row(res: GenerateResult, b: number): Row {
  return {
    text: res.texts[b], tokenIds: res.tokens[b], promptTokens: res.sequences[b].length - res.tokens[b].length,
    generatedTokens: res.tokens[b].length, finishReason: res.finishReasons[b], truncatedTokens: res.truncated[b],
  };
}

/** Rows written so far, as "generate 32/10000 rows" (renderProgress). */
function progressLine(total: number): (done: number) => void {
  return progressReporter('generate', 'rows', total, renderProgress());
}

function rate(tokens: number, ms: number): number { return ms > 0 ? round(tokens / (ms / 1000)) : 0; }
function round(x: number): number { return Math.round(x * 100) / 100; }
