#!/usr/bin/env node
// The lowbit command line. Each command lives in its own file and has --help with examples.
import { readFileSync } from 'node:fs';
import { UsageError } from './args.js';
import { benchHelp, runBench } from './bench.js';
import { chatHelp, runChat } from './chat.js';
import { demoHelp, runDemo } from './demo.js';
import { evalHelp, runEval } from './eval.js';
import { finetuneHelp, mergeHelp, runFinetune, runMerge } from './finetune.js';
import { generateHelp, runGenerate } from './generate.js';
import { infoHelp, runInfo } from './info.js';
import { planHelp, runPlan } from './plan.js';
import { quantizeHelp, runQuantize } from './quantize.js';

const HELP = `lowbit — run, quantize and fine-tune Hugging Face LLMs natively in Node.js

Usage: lowbit <command> [options]

Commands:
  demo      the main job on the bundled model: size, perplexity, a streamed chat answer
  generate  generate text (streamed, batched, greedy or sampled, chat templates)
  chat      interactive chat in the terminal
  quantize  write a bitsandbytes int8/NF4/FP4 copy of a model that transformers loads
  eval      perplexity on a text file (GPTQ papers' windows or HF's sliding windows), LAMBADA accuracy
  info      describe a model: architecture, parameters, dtypes, KV bytes per token, quantization
  plan      KV-cache memory and batch-size planner for a device
  bench     measure prefill/decode speed against this machine's roofline
  finetune  train a LoRA / QLoRA adapter (PEFT's files) with a Trainer
  merge     fold a LoRA adapter into its base and save the merged checkpoint

Run "lowbit <command> --help" for a command's options and examples; "lowbit --version" prints the version.
`;

/** The version in the package.json two folders above dist/src/cli. */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<number>; help: string }> = {
  demo: { run: runDemo, help: demoHelp },
  generate: { run: runGenerate, help: generateHelp },
  chat: { run: runChat, help: chatHelp },
  eval: { run: runEval, help: evalHelp },
  quantize: { run: runQuantize, help: quantizeHelp },
  info: { run: runInfo, help: infoHelp },
  plan: { run: runPlan, help: planHelp },
  bench: { run: runBench, help: benchHelp },
  finetune: { run: runFinetune, help: finetuneHelp },
  merge: { run: runMerge, help: mergeHelp },
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') { process.stdout.write(HELP); return cmd ? 0 : 1; }
  if (cmd === '--version' || cmd === '-v') { process.stdout.write(`lowbit ${version()}\n`); return 0; }
  const c = COMMANDS[cmd];
  if (!c) {
    const what = cmd.startsWith('-') ? `unknown option ${cmd}` : `unknown command "${cmd}"`;
    process.stderr.write(`lowbit: ${what}\n\n${HELP}`);
    return 2;
  }
  try {
    return await c.run(rest);
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    // Usage errors (exit 2) point to the command's help; anything else (exit 1) is labelled with its error type.
    // node:util parseArgs errors (ERR_PARSE_ARGS_*) are usage errors too, in case one gets past parseCommand.
    const usage = err instanceof UsageError || /^ERR_PARSE_ARGS_/.test((err as { code?: string }).code ?? '');
    const label = !usage && err.name && err.name !== 'Error' ? `${err.name}: ` : '';
    const hint = usage && !/--help/.test(err.message) ? ` (see lowbit ${cmd} --help)` : '';
    process.stderr.write(`lowbit ${cmd}: ${label}${err.message}${hint}\n`);
    return usage ? 2 : 1;
  }
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
