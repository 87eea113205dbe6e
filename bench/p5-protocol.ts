// P5's perplexity protocol, shared by bench/gptq-ppl.ts and bench/awq-ppl.ts (docs/p5-progress.md): eval-llama-16m
// from ../shared/data (or LOWBIT_TEST_DATA); calibration = nsamples windows of 256 tokens from c4-sample.txt (one
// token stream, Python's random.seed(0) windows); measure = WikiText-2 test perplexity over `windows` windows of 256.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fromPretrained, type LoadedModel } from '../src/api.js';
import { perplexity } from '../src/eval/perplexity.js';
import { calibrationSamples, type CalibrationSet } from '../src/quant/calib.js';

export interface P5Protocol {
  modelDir: string;
  /** The float model, loaded once (quantizers get fresh copies from modelDir). */
  base: LoadedModel;
  calib: CalibrationSet;
  /** WikiText-2 perplexity of a model under the protocol. */
  ppl: (m: LoadedModel) => number;
}

/** Loads the model, the calibration windows and the evaluation tokens; exits 2 with a message when the data is absent. */
export async function p5Protocol(root: string, nsamples: number, windows: number): Promise<P5Protocol> {
  const data = process.env.LOWBIT_TEST_DATA ?? resolve(root, '..', 'shared', 'data');
  const modelDir = join(data, 'models', 'eval-llama-16m');
  if (!existsSync(modelDir)) { console.error(`no ${modelDir}: set LOWBIT_TEST_DATA`); process.exit(2); }
  const base = await fromPretrained(modelDir);
  const tok = base.tokenizer!;
  const wiki = tok.encode(readFileSync(join(data, 'text', 'wikitext2-raw-test.txt'), 'utf8'));
  const calib = calibrationSamples(join(data, 'text', 'c4-sample.txt'), tok, { nsamples, seqlen: 256, seed: 0 });
  return { modelDir, base, calib, ppl: (m) => perplexity(m.model, wiki, { seqLen: 256, maxWindows: windows }).perplexity };
}
