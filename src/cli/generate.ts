// `lowbit generate`: one prompt (streamed) or a batch from a file, greedy or sampled, optionally as chat.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fromPretrained, LoadedModel } from '../api.js';
import type { GenerationConfig } from '../generate/config.js';
import { generateStream, GenerateResult } from '../generate/generate.js';
import type { ChatMessage } from '../tokenizer/index.js';
import { intOpt, numOpt, progressBar, UsageError } from './args.js';
import { setThreadsOption } from './common.js';

export const generateHelp = `lowbit generate — generate text with a causal LM

Usage: lowbit generate <model folder | org/name> --prompt TEXT [options]

Options:
  --prompt TEXT               the prompt (or the user message with --chat)
  --prompts-file F            one prompt per line, generated together as one left-padded batch
  --chat                      wrap the prompt in the model's chat template
  --system TEXT               system message (with --chat)
  --max-new-tokens N          new tokens at most (default: generation_config.json's max_new_tokens, else 256)
  --min-new-tokens N          no end-of-sequence before N new tokens
  --temperature T             sampling temperature; 0 means greedy
  --top-k K  --top-p P  --min-p P
  --repetition-penalty R      >1 discourages repeats (transformers semantics)
  --no-repeat-ngram-size N    never repeat an n-gram of this size
  --stop TEXT                 stop when TEXT appears (repeatable)
  --seed S                    seed for sampling (same seed, same text)
  --revision REV              Hub revision (default main)
  --backend cpu|ref  --threads N
  --json                      print one JSON object instead of streaming

Examples:
  lowbit generate models/kjv-demo --chat --prompt "Recite John 3:16."
  lowbit generate ./tinystories --prompt "Once upon a time" --max-new-tokens 48 --temperature 0 --json
  lowbit generate ./tinystories --prompts-file prompts.txt --temperature 0.8 --top-p 0.9 --seed 1
`;

export const GENERATION_OPTIONS = {
  'max-new-tokens': { type: 'string' }, 'min-new-tokens': { type: 'string' }, temperature: { type: 'string' },
  'top-k': { type: 'string' }, 'top-p': { type: 'string' }, 'min-p': { type: 'string' },
  'repetition-penalty': { type: 'string' }, 'no-repeat-ngram-size': { type: 'string' }, seed: { type: 'string' },
  stop: { type: 'string', multiple: true }, system: { type: 'string' }, revision: { type: 'string' },
  backend: { type: 'string' }, threads: { type: 'string' }, help: { type: 'boolean', short: 'h' },
} as const;

/** Generation settings from the shared flags. Temperature 0 means greedy; any other temperature samples. */
export function generationFromFlags(v: Record<string, unknown>): GenerationConfig {
  const s = (k: string) => v[k] as string | undefined;
  const temperature = numOpt(s('temperature'), '--temperature', (x) => x >= 0, 'a number ≥ 0');
  const g: GenerationConfig = {
    maxNewTokens: intOpt(s('max-new-tokens'), '--max-new-tokens', 1),
    minNewTokens: intOpt(s('min-new-tokens'), '--min-new-tokens'),
    topK: intOpt(s('top-k'), '--top-k'),
    topP: numOpt(s('top-p'), '--top-p', (x) => x > 0 && x <= 1, 'in (0, 1]'),
    minP: numOpt(s('min-p'), '--min-p', (x) => x >= 0 && x <= 1, 'in [0, 1]'),
    repetitionPenalty: numOpt(s('repetition-penalty'), '--repetition-penalty', (x) => x > 0, 'a positive number'),
    noRepeatNgramSize: intOpt(s('no-repeat-ngram-size'), '--no-repeat-ngram-size'),
    seed: intOpt(s('seed'), '--seed'),
    stopStrings: v.stop as string[] | undefined,
  };
  if (temperature === 0) g.doSample = false;
  else if (temperature !== undefined) { g.doSample = true; g.temperature = temperature; }
  return g;
}

export function chatMessages(prompt: string, system?: string): ChatMessage[] {
  return [...(system ? [{ role: 'system', content: system }] : []), { role: 'user', content: prompt }];
}

/** Prompt text → ids: through the chat template (which writes BOS itself) or plain encoding. */
export function encodePrompt(m: LoadedModel, prompt: string, chat: boolean, system?: string): number[] {
  if (!m.tokenizer) throw new UsageError(`${m.dir}: no tokenizer.json, so text prompts cannot be encoded`);
  if (chat) return m.tokenizer.encodeChat(chatMessages(prompt, system), { addGenerationPrompt: true });
  if (system) throw new UsageError('--system needs --chat');
  return m.tokenizer.encode(prompt);
}

/** Chat models stop at their end-of-turn token too (the seeds' `terminators`). */
export function terminators(m: LoadedModel, base: GenerationConfig): number[] | undefined {
  const eos = base.eosTokenId ?? m.generationConfig.eosTokenId ?? m.config.eos_token_id;
  const list = eos == null ? [] : Array.isArray(eos) ? [...eos] : [eos];
  for (const t of ['<|eot_id|>', '<|im_end|>', '<|end|>']) {
    const id = m.tokenizer?.tokenId(t);
    if (id != null && !list.includes(id)) list.push(id);
  }
  const tokEos = m.tokenizer?.eosTokenId;
  if (tokEos != null && !list.includes(tokEos)) list.push(tokEos);
  return list;
}

export async function runGenerate(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({
    args: argv, allowPositionals: true,
    options: { ...GENERATION_OPTIONS, prompt: { type: 'string' }, 'prompts-file': { type: 'string' }, chat: { type: 'boolean', default: false }, json: { type: 'boolean', default: false } },
  });
  if (v.help) { process.stdout.write(generateHelp); return 0; }
  if (positionals.length !== 1) throw new UsageError('give exactly one model folder or Hub id (see lowbit generate --help)');
  if ((v.prompt === undefined) === (v['prompts-file'] === undefined)) throw new UsageError('give --prompt TEXT or --prompts-file F (one of them)');
  const gen = generationFromFlags(v);
  setThreadsOption(v.threads);
  let prompts: string[];
  if (v['prompts-file']) {
    let text: string;
    try { text = readFileSync(v['prompts-file'], 'utf8'); } catch (e) { throw new UsageError(`--prompts-file ${v['prompts-file']}: ${(e as Error).message}`); }
    prompts = text.split(/\r?\n/).filter((l) => l.trim() !== '');
    if (prompts.length === 0) throw new UsageError(`--prompts-file ${v['prompts-file']}: no prompts in it`);
  } else prompts = [v.prompt!];

  const m = await fromPretrained(positionals[0], {
    backend: v.backend as 'cpu' | 'ref' | undefined, revision: v.revision,
    onProgress: (f, d, t) => progressBar(`downloading ${f}`)(d, t),
  });
  const ids = prompts.map((p) => encodePrompt(m, p, v.chat!, v.system));
  // transformers' default of 20 tokens in total is too short for a command line; without a limit from the flag or
  // generation_config.json's max_new_tokens, allow 256 new tokens.
  const opts = { ...gen, maxNewTokens: gen.maxNewTokens ?? m.generationConfig.maxNewTokens ?? 256, tokenizer: m.tokenizer!, modelDefaults: m.generationConfig };
  if (v.chat) opts.eosTokenId = terminators(m, gen);

  const single = prompts.length === 1 && !v.json;
  const it = generateStream(m.model, ids, opts);
  let res: GenerateResult;
  for (;;) {
    const r = await it.next();
    if (r.done) { res = r.value; break; }
    if (single) process.stdout.write(r.value.text);
  }
  if (single) process.stdout.write('\n');
  const perRow = (b: number) => ({
    text: res.texts[b], tokenIds: res.tokens[b], promptTokens: ids[b].length, generatedTokens: res.tokens[b].length,
    finishReason: res.finishReasons[b],
  });
  // Tokens produced by decode steps (each row's first token comes from the prefill); finished rows fed padding
  // do not count.
  const decodeTokens = res.tokens.reduce((n, t) => n + Math.max(0, t.length - 1), 0);
  const timings = {
    loadMs: round(m.loadMs), prefillMs: round(res.timings.prefillMs), decodeMs: round(res.timings.decodeMs),
    decodeTokPerSec: round(res.timings.decodeMs > 0 ? decodeTokens / (res.timings.decodeMs / 1000) : 0),
  };
  if (v.json) {
    const out = prompts.length === 1 ? { ...perRow(0), timings } : { results: prompts.map((_, b) => perRow(b)), timings };
    process.stdout.write(JSON.stringify(out) + '\n');
  } else if (!single) {
    prompts.forEach((p, b) => process.stdout.write(`--- [${b}] ${p}\n${res.texts[b]}\n(${res.finishReasons[b]}, ${res.tokens[b].length} tokens)\n`));
  }
  return 0;
}

function round(x: number): number { return Math.round(x * 100) / 100; }
