#!/usr/bin/env node
// The lowbit command line. Each command lives in its own file and has --help with examples.
import { UsageError } from './args.js';
import { benchHelp, runBench } from './bench.js';
import { chatHelp, runChat } from './chat.js';
import { demoHelp, runDemo } from './demo.js';
import { generateHelp, runGenerate } from './generate.js';
import { infoHelp, runInfo } from './info.js';
import { planHelp, runPlan } from './plan.js';

const HELP = `lowbit — run, quantize and fine-tune Hugging Face LLMs natively in Node.js

Usage: lowbit <command> [options]

Commands:
  demo      the main job on the bundled model: size, perplexity, a streamed chat answer
  generate  generate text (streamed, batched, greedy or sampled, chat templates)
  chat      interactive chat in the terminal
  info      describe a model: architecture, parameters, dtypes, KV bytes per token
  plan      KV-cache memory and batch-size planner for a device
  bench     measure prefill/decode speed against this machine's roofline

Run "lowbit <command> --help" for a command's options and examples.
`;

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; help: string }> = {
  demo: { run: runDemo, help: demoHelp },
  generate: { run: runGenerate, help: generateHelp },
  chat: { run: runChat, help: chatHelp },
  info: { run: runInfo, help: infoHelp },
  plan: { run: runPlan, help: planHelp },
  bench: { run: runBench, help: benchHelp },
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') { process.stdout.write(HELP); return cmd ? 0 : 1; }
  const c = COMMANDS[cmd];
  if (!c) { process.stderr.write(`lowbit: unknown command "${cmd}"\n\n${HELP}`); return 2; }
  return c.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    const err = e as Error;
    // node:util parseArgs reports bad flags as TypeErrors with ERR_PARSE_ARGS_* codes: those are usage errors too.
    const usage = err instanceof UsageError || /^ERR_PARSE_ARGS_/.test((err as { code?: string }).code ?? '');
    const label = usage ? 'usage' : err.name && err.name !== 'Error' ? err.name : '';
    process.stderr.write(`lowbit: ${label ? label + ': ' : ''}${err.message}\n`);
    process.exitCode = usage ? 2 : 1;
  },
);
