// Options several commands share.
import { cpuAvailable, setThreads } from '../backend/cpu/index.js';
import { cudaAvailable } from '../backend/cuda/index.js';
import type { LoadedModel } from '../api.js';
import { quantizedStateDict } from '../io/save.js';
import { quantStats, type QuantStats } from '../quant/stats.js';
import { intOpt, UsageError } from './args.js';

/** --threads N through the library's public thread API (see setThreads in src/backend/cpu/index.ts). */
export function setThreadsOption(v: string | undefined): void {
  const n = intOpt(v, '--threads', 1);
  if (n === undefined) return;
  if (!cpuAvailable()) throw new UsageError('--threads needs the native CPU backend, which is not built (run npm install)');
  if (n > 1024) throw new UsageError(`--threads must be at most 1024, got ${n}`);
  setThreads(n);
}

/**
 * What `lowbit quantize` reports of a quantized model: the stats of the state dict it saves (`after`), the bytes the
 * same layers took in the source checkpoint (`before`), and the source's total tensor bytes.
 */
export function quantizedBytes(m: LoadedModel): { after: QuantStats; before: number; totalBefore: number } {
  const after = quantStats(quantizedStateDict(m));
  const quantized = new Set(after.layers.map((l) => `${l}.weight`));
  let before = 0, totalBefore = 0;
  for (const [k, t] of m.tensors) { totalBefore += t.byteLength; if (quantized.has(k)) before += t.byteLength; }
  return { after, before, totalBefore };
}

/** "model.layers.3.mlp.up_proj" → "L3.mlp.up_proj" (OPT's model.decoder.layers too), for progress lines. */
export const shortLayerName = (name: string): string => name.replace(/^model\.(decoder\.)?layers\./, 'L');

/** --device cpu|cuda (default cpu); cuda must be able to run here (a usage error says why not). */
export function deviceOption(flag: string | undefined): 'cpu' | 'cuda' {
  const device = flag ?? 'cpu';
  if (device !== 'cpu' && device !== 'cuda') throw new UsageError(`--device "${device}" is unknown (choose cpu or cuda)`);
  if (device === 'cuda') {
    const st = cudaAvailable();
    if (!st.ok) throw new UsageError(`--device cuda: ${st.why}`);
  }
  return device;
}
