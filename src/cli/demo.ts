// `lowbit demo`: the main job on the model shipped in the repo (models/kjv-demo), offline: size and perplexity,
// then a streamed chat answer checked against the King James text.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromPretrained } from '../api.js';
import { demoModelPath } from '../demo.js';
import { perplexity } from '../eval/perplexity.js';
import type { BitsAndBytesConfig } from '../io/quantconfig.js';
import { quantizedStateDict } from '../io/save.js';
import { generateStream } from '../generate/generate.js';
import { chatTerminators } from '../generate/terminators.js';
import { parseCommand, renderProgress, UsageError } from './args.js';
import { deviceOption, setThreadsOption } from './common.js';

export const demoHelp = `lowbit demo — what lowbit does, on the small model that ships with it (no network needed)

Usage: lowbit demo [--prompt TEXT] [--threads N] [--device cpu|cuda]

Loads models/kjv-demo (a 5.4M-parameter Llama trained by scripts/demo-model/ on the public-domain King James
Bible), reports its size and perplexity on held-out verses, as it is and quantized on load (bitsandbytes LLM.int8
and NF4 with double quantization), then streams a chat answer and sets it beside the King James text. --device
cuda runs it all on an NVIDIA GPU. A model
this small cannot look up any of 31,102 verses by reference, but it knows the text: the demo asks for John 10:11
and starts the answer with its first two words; the model writes the rest, greedily.
--prompt asks your own question instead (no reference check: expect KJV-flavoured text, not the verse).

Examples:
  npx lowbit demo
  npx lowbit demo --prompt "Quote Psalms 23:1."
`;

export const DEMO_MODEL = demoModelPath();

/** The quantized rows of the demo's table: bitsandbytes LLM.int8 and NF4 with double quantization, on load. */
const DEMO_QUANT: [string, BitsAndBytesConfig][] = [
  ['int8', { loadIn8bit: true }],
  ['nf4 + dq', { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }],
];
/**
 * The demo's question. Chosen by trying famous verses in every request form the training script used, and free
 * continuation, against the KJV text (Debian bible-kjv): recall by reference alone was wrong for all of them, while
 * given "I am", greedy decoding writes John 10:11 word for word, with a clear margin over the runner-up token
 * at every step (≥ 1.2 logits), on both backends.
 */
export const DEMO_QUESTION = { prompt: 'Recite John 10:11.', start: 'I am', reference: 'John 10:11', kjv: 'I am the good shepherd: the good shepherd giveth his life for the sheep.' };

/** Words in order shared by an answer and the reference (longest common subsequence, case and punctuation ignored). */
export function wordOverlap(answer: string, reference: string): { matched: number; total: number; exact: boolean } {
  const words = (s: string) => s.toLowerCase().replace(/[^\p{L}\p{N}' ]+/gu, ' ').split(/\s+/).filter(Boolean);
  const a = words(answer), b = words(reference);
  let prev = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    const cur = [0];
    for (let j = 1; j <= b.length; j++) cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    prev = cur;
  }
  return { matched: prev[b.length], total: b.length, exact: answer.trim() === reference.trim() };
}

export async function runDemo(argv: string[]): Promise<number> {
  const { values: v } = parseCommand('demo', argv, { prompt: { type: 'string' }, threads: { type: 'string' }, device: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, false);
  if (v.help) { process.stdout.write(demoHelp); return 0; }
  if (!existsSync(DEMO_MODEL)) throw new UsageError(`the demo model is missing (${DEMO_MODEL})`);
  setThreadsOption(v.threads);
  const on = deviceOption(v.device) === 'cuda' ? { device: 'cuda' as const } : {};
  const m = await fromPretrained(DEMO_MODEL, on);
  const tok = m.tokenizer!;
  let params = 0, bytes = 0;
  for (const t of m.tensors.values()) { params += t.numel; bytes += t.byteLength; }
  const out = process.stdout;
  out.write(`lowbit demo — ${m.config.model_type} model, ${(params / 1e6).toFixed(2)}M parameters, ${(bytes / 1e6).toFixed(1)} MB in ${m.config.torch_dtype} (loaded in ${m.loadMs.toFixed(0)} ms on the ${m.model.backend.name} backend)\n\n`);

  const held = readFileSync(join(DEMO_MODEL, 'heldout.txt'), 'utf8');
  const ids = tok.encode(held);
  const ppl = perplexity(m.model, ids, { seqLen: 256, maxWindows: 16, onProgress: renderProgress({ ttyOnly: true }) });
  out.write(`  ${'weights'.padEnd(14)} ${'size'.padEnd(10)} perplexity (held-out verses)\n`);
  out.write(`  ${String(m.config.torch_dtype).padEnd(14)} ${`${(bytes / 1e6).toFixed(1)} MB`.padEnd(10)} ${ppl.perplexity.toFixed(2)}\n`);
  // The same folder quantized on load, as transformers' BitsAndBytesConfig would (lm_head stays bf16); the size is
  // what savePretrained would write.
  for (const [name, quantizationConfig] of DEMO_QUANT) {
    const q = await fromPretrained(DEMO_MODEL, { ...on, quantizationConfig });
    let qbytes = 0;
    for (const t of quantizedStateDict(q).values()) qbytes += t.byteLength;
    const qppl = perplexity(q.model, ids, { seqLen: 256, maxWindows: 16, onProgress: renderProgress({ ttyOnly: true }) });
    out.write(`  ${name.padEnd(14)} ${`${(qbytes / 1e6).toFixed(1)} MB`.padEnd(10)} ${qppl.perplexity.toFixed(2)}\n`);
  }
  out.write(`  (${ppl.tokens} tokens in ${ppl.windows} windows of 256; GPTQ and AWQ need calibration text: lowbit quantize --method gptq|awq)\n\n`);

  const own = v.prompt !== undefined;
  const question = own ? v.prompt! : DEMO_QUESTION.prompt;
  const start = own ? '' : DEMO_QUESTION.start;
  out.write(`user: ${question}\nassistant: ${start}`);
  // The answer's first words go after the template's assistant header, as if the model had written them.
  const prompt = tok.encode(tok.applyChatTemplate([{ role: 'user', content: question }], { addGenerationPrompt: true }) + start, { addSpecialTokens: false });
  const it = generateStream(m.model, [prompt], { tokenizer: tok, modelDefaults: m.generationConfig, eosTokenId: chatTerminators(m), temperature: 0, maxNewTokens: 64 });
  for (;;) {
    const r = await it.next();
    if (r.done) {
      const answer = (start + r.value.texts[0]).trim();
      out.write('\n');
      if (!own) {
        const o = wordOverlap(answer, DEMO_QUESTION.kjv);
        out.write(`KJV ${DEMO_QUESTION.reference}: ${DEMO_QUESTION.kjv}\n`);
        out.write(o.exact ? `✓ matches the King James text word for word (the demo gave "${start}", the model wrote the rest)\n`
          : `✗ ${o.matched} of ${o.total} words of the King James text, in order\n`);
      }
      const t = r.value.timings;
      out.write(`\n(${r.value.tokens[0].length} tokens, ${r.value.finishReasons[0]}, ${(t.decodeSteps / Math.max(1e-9, t.decodeMs / 1000)).toFixed(0)} tokens/s)\n`);
      break;
    }
    out.write(r.value.text);
  }
  return 0;
}
