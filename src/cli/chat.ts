// `lowbit chat`: an interactive REPL with streaming, a system prompt, and history trimmed to the context length.
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { fromPretrained, LoadedModel } from '../api.js';
import { generateStream } from '../generate/generate.js';
import type { ChatMessage } from '../tokenizer/index.js';
import { UsageError } from './args.js';
import { setThreadsOption } from './common.js';
import { GENERATION_OPTIONS, generationFromFlags, terminators } from './generate.js';

export const chatHelp = `lowbit chat — talk to a chat model in the terminal

Usage: lowbit chat <model folder | org/name> [--system TEXT] [generation options of lowbit generate]

Commands inside the chat: /reset (forget the conversation), /exit (or Ctrl-D).
The history is trimmed, oldest turns first, so that the prompt plus --max-new-tokens fits the context.

Examples:
  lowbit chat models/kjv-demo
  lowbit chat ./my-model --system "You are terse." --temperature 0.7 --top-p 0.9 --max-new-tokens 200
`;

/** Drop the oldest user/assistant turns until the rendered prompt leaves room for the answer. */
export function trimHistory(m: LoadedModel, system: ChatMessage[], history: ChatMessage[], room: number): { ids: number[]; kept: ChatMessage[] } {
  let kept = history;
  for (;;) {
    const ids = m.tokenizer!.encodeChat([...system, ...kept], { addGenerationPrompt: true });
    if (ids.length + room <= m.config.max_position_embeddings || kept.length <= 1) return { ids, kept };
    kept = kept.slice(2);
  }
}

export async function runChat(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { ...GENERATION_OPTIONS } });
  if (v.help) { process.stdout.write(chatHelp); return 0; }
  if (positionals.length !== 1) throw new UsageError('give one model folder or Hub id (see lowbit chat --help)');
  setThreadsOption(v.threads);
  const gen = generationFromFlags(v);
  const m = await fromPretrained(positionals[0], { backend: v.backend as 'cpu' | 'ref' | undefined, revision: v.revision });
  if (!m.tokenizer) throw new UsageError(`${m.dir}: no tokenizer.json`);
  m.tokenizer.applyChatTemplate([{ role: 'user', content: 'x' }]);   // fail now, not after the first question
  const maxNew = gen.maxNewTokens ?? m.generationConfig.maxNewTokens ?? 256;
  const system: ChatMessage[] = v.system ? [{ role: 'system', content: v.system }] : [];
  let history: ChatMessage[] = [];
  const rl = createInterface({ input: process.stdin, terminal: false });
  process.stdout.write(`lowbit chat — ${m.dir} (/reset, /exit)\n`);
  try {
    process.stdout.write('> ');
    // The line iterator buffers input, so piped lines are not lost while an answer is streaming; Ctrl-D ends it.
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === '/exit' || line === '/quit') break;
      if (line === '/reset') { history = []; process.stdout.write('(conversation cleared)\n> '); continue; }
      if (!line) { process.stdout.write('> '); continue; }
      history.push({ role: 'user', content: line });
      const { ids, kept } = trimHistory(m, system, history, maxNew);
      history = kept;
      const it = generateStream(m.model, [ids], { ...gen, maxNewTokens: maxNew, tokenizer: m.tokenizer, modelDefaults: m.generationConfig, eosTokenId: terminators(m, gen) });
      let answer = '';
      for (;;) {
        const r = await it.next();
        if (r.done) { answer = r.value.texts[0]; break; }
        process.stdout.write(r.value.text);
      }
      process.stdout.write('\n> ');
      history.push({ role: 'assistant', content: answer });
    }
  } finally {
    rl.close();
  }
  return 0;
}
