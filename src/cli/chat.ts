// `lowbit chat`: an interactive REPL with streaming, a system prompt, history trimmed to the context length, and
// Ctrl-C that stops the answer being written.
import { createInterface } from 'node:readline';
import type { LoadedModel } from '../api.js';
import { GenerationConfigError } from '../generate/config.js';
import { checkGenerationFits, generateStream, type GenerateResult } from '../generate/generate.js';
import { chatTerminators } from '../generate/terminators.js';
import type { ChatMessage } from '../tokenizer/index.js';
import type { ChatTemplateSource } from '../tokenizer/template.js';
import { parseCommand, UsageError } from './args.js';
import { setThreadsOption } from './common.js';
import { chatTemplateOption, cliMessage, GENERATION_OPTIONS, generationFromFlags, loadModel, maxNewTokens } from './generate.js';

export const chatHelp = `lowbit chat — talk to a chat model in the terminal

Usage: lowbit chat <model folder | org/name> [--system TEXT] [--chat-template FILE] [generation options of lowbit generate]

Commands inside the chat:
  /help     list these commands
  /reset    forget the conversation (the --system message stays)
  /exit     leave (also /quit, or Ctrl-D)
Ctrl-C while an answer is being written stops it and returns to the prompt; Ctrl-C at the prompt leaves.
After each answer, one line on stderr gives the prompt and answer tokens, decode tokens/s and why it stopped.
The history is trimmed, oldest turns first, so that the prompt plus --max-new-tokens fits the context.

Examples:
  lowbit chat models/kjv-demo
  lowbit chat ./my-model --system "You are terse." --temperature 0.7 --top-p 0.9 --max-new-tokens 200
  lowbit chat ./my-model --chat-template chatml.jinja
`;

const COMMANDS_HELP = `/help     list these commands
/reset    forget the conversation (the system message stays)
/exit     leave (also /quit, or Ctrl-D)
Ctrl-C while an answer is being written stops it; Ctrl-C at the prompt leaves.
`;

/** Drop the oldest user/assistant turns until the rendered prompt leaves room for the answer. */
export function trimHistory(m: LoadedModel, system: ChatMessage[], history: ChatMessage[], room: number, chatTemplate?: ChatTemplateSource): { ids: number[]; kept: ChatMessage[] } {
  let kept = history;
  for (;;) {
    const ids = m.tokenizer!.encodeChat([...system, ...kept], { addGenerationPrompt: true, chatTemplate });
    if (ids.length + room <= m.model.maxPositions || kept.length <= 1) return { ids, kept };
    kept = kept.slice(2);
  }
}

/** Lets the event loop run (and a SIGINT handler with it): the generation loop's awaits are only microtasks. */
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

export async function runChat(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommand('chat', argv, GENERATION_OPTIONS);
  if (v.help) { process.stdout.write(chatHelp); return 0; }
  if (positionals.length !== 1) throw new UsageError('give one model folder or Hub id (see lowbit chat --help)');
  const gen = generationFromFlags(v);
  setThreadsOption(v.threads);
  const chatTemplate = chatTemplateOption(v['chat-template']);
  const m = await loadModel(positionals[0], v);
  if (!m.tokenizer) throw new UsageError(`${m.dir}: no tokenizer.json`);
  m.tokenizer.applyChatTemplate([{ role: 'user', content: 'x' }], { chatTemplate });   // fail now, not after the first question
  const maxNew = maxNewTokens(m, gen);
  const system: ChatMessage[] = v.system ? [{ role: 'system', content: v.system }] : [];
  const eos = chatTerminators(m, gen, { chatTemplate });
  // Settings that no question could satisfy (new tokens ≥ the model's positions) fail now, as generate fails.
  try {
    checkGenerationFits(m, m.generationConfig, { ...gen, maxNewTokens: maxNew, eosTokenId: eos });
  } catch (e) {
    throw cliMessage(e);
  }
  let history: ChatMessage[] = [];
  const rl = createInterface({ input: process.stdin, terminal: false });
  const out = process.stdout;

  // Ctrl-C: while an answer streams, stop it (checked between tokens); at the prompt, leave.
  let answering = false, stop = false, code = 0;
  const onSigint = () => {
    if (answering) { stop = true; return; }
    out.write('\n');
    code = 130;
    rl.close();
  };
  process.on('SIGINT', onSigint);
  out.write(`lowbit chat — ${m.dir} (/help for commands)\n`);
  try {
    out.write('> ');
    // The line iterator buffers input, so piped lines are not lost while an answer is streaming; Ctrl-D ends it.
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === '/exit' || line === '/quit') break;
      if (line === '/help') { out.write(`${COMMANDS_HELP}> `); continue; }
      if (line === '/reset') { history = []; out.write('(conversation cleared)\n> '); continue; }
      if (/^\/\w+$/.test(line)) { out.write(`unknown command ${line}; /help lists the commands\n> `); continue; }
      if (!line) { out.write('> '); continue; }
      history.push({ role: 'user', content: line });
      const { ids, kept } = trimHistory(m, system, history, maxNew, chatTemplate);
      history = kept;
      const it = generateStream(m.model, [ids], { ...gen, maxNewTokens: maxNew, tokenizer: m.tokenizer, modelDefaults: m.generationConfig, eosTokenId: eos });
      let res: GenerateResult | null = null;
      const tokenIds: number[] = [];
      answering = true; stop = false;
      try {
        for (;;) {
          const r = await it.next();
          if (r.done) { res = r.value; break; }
          out.write(r.value.text);
          tokenIds.push(r.value.tokenId);
          await tick();
          if (stop) { await it.return(undefined as never); break; }
        }
      } catch (e) {
        // A question the model cannot take (too long for its positions even alone) ends the turn, not the chat.
        if (!(e instanceof GenerationConfigError)) throw e;
        process.stderr.write(`lowbit chat: ${(cliMessage(e) as Error).message}\n`);
        history.pop();
        out.write('> ');
        continue;
      } finally {
        answering = false;
      }
      // An interrupted answer stays in the history as far as it went: it is what the user saw.
      const answer = res ? res.texts[0] : m.tokenizer.decode(tokenIds, { skipSpecialTokens: true });
      out.write(res ? '\n' : '\n(stopped)\n');
      const finished = res ? res.finishReasons[0] : 'interrupted';
      const rate = res && res.timings.decodeMs > 0 ? Math.round(Math.max(0, tokenIds.length - 1) / (res.timings.decodeMs / 1000)) : null;
      process.stderr.write(`[${ids.length} prompt + ${tokenIds.length} answer tokens${rate !== null ? ` · decode ${rate} tok/s` : ''} · finished: ${finished}]\n`);
      out.write('> ');
      history.push({ role: 'assistant', content: answer });
    }
  } finally {
    process.off('SIGINT', onSigint);
    rl.close();
  }
  return code;
}
