// `lowbit demo`: the main job on the model shipped in the repo (models/kjv-demo), offline: size and perplexity,
// then a streamed chat answer.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { fromPretrained } from '../api.js';
import { perplexity } from '../eval/perplexity.js';
import { generateStream } from '../generate/generate.js';
import { progressBar, UsageError } from './args.js';
import { setThreadsOption } from './common.js';
import { terminators } from './generate.js';

export const demoHelp = `lowbit demo — what lowbit does, on the small model that ships with it (no network needed)

Usage: lowbit demo [--prompt TEXT] [--threads N]

Loads models/kjv-demo (a 5.4M-parameter Llama trained by scripts/demo-model/ on the public-domain King James
Bible), reports its size and perplexity on held-out verses, then streams a chat answer.

Examples:
  npx lowbit demo
  npx lowbit demo --prompt "Quote Psalms 23:1."
`;

export const DEMO_MODEL = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'models', 'kjv-demo');

export async function runDemo(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({ args: argv, options: { prompt: { type: 'string', default: 'Recite John 3:16.' }, threads: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
  if (v.help) { process.stdout.write(demoHelp); return 0; }
  if (!existsSync(DEMO_MODEL)) throw new UsageError(`the demo model is missing (${DEMO_MODEL})`);
  setThreadsOption(v.threads);
  const m = await fromPretrained(DEMO_MODEL);
  const tok = m.tokenizer!;
  let params = 0, bytes = 0;
  for (const t of m.tensors.values()) { params += t.numel; bytes += t.byteLength; }
  const out = process.stdout;
  out.write(`lowbit demo — ${m.config.model_type} model, ${(params / 1e6).toFixed(2)}M parameters, ${(bytes / 1e6).toFixed(1)} MB in ${m.config.torch_dtype} (loaded in ${m.loadMs.toFixed(0)} ms on the ${m.model.backend.name} backend)\n\n`);

  const held = readFileSync(join(DEMO_MODEL, 'heldout.txt'), 'utf8');
  const ids = tok.encode(held);
  const bar = progressBar('perplexity');
  const ppl = perplexity(m.model, ids, { seqLen: 256, maxWindows: 16, onProgress: (d, t) => bar(d, t) });
  const rows = [['weights', 'size', 'perplexity (held-out verses)'], [String(m.config.torch_dtype), `${(bytes / 1e6).toFixed(1)} MB`, ppl.perplexity.toFixed(2)]];
  for (const r of rows) out.write(`  ${r[0].padEnd(10)} ${r[1].padEnd(10)} ${r[2]}\n`);
  out.write(`  (${ppl.tokens} tokens in ${ppl.windows} windows of 256; NF4 and GPTQ rows arrive with the quantizers)\n\n`);

  out.write(`user: ${v.prompt}\nassistant: `);
  const prompt = tok.encodeChat([{ role: 'user', content: v.prompt! }], { addGenerationPrompt: true });
  const it = generateStream(m.model, [prompt], { tokenizer: tok, modelDefaults: m.generationConfig, eosTokenId: terminators(m, {}), doSample: false, maxNewTokens: 64 });
  for (;;) {
    const r = await it.next();
    if (r.done) { out.write(`\n\n(${r.value.tokens[0].length} tokens, ${r.value.finishReasons[0]}, ${(r.value.timings.decodeSteps / Math.max(1e-9, r.value.timings.decodeMs / 1000)).toFixed(0)} tokens/s)\n`); break; }
    out.write(r.value.text);
  }
  return 0;
}
