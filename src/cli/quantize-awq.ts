// `lowbit quantize --method awq`: a float checkpoint → an AutoAWQ folder (FORMATS.md §5.4-5.5: GEMM by default, or
// GEMV) that transformers and vLLM load. AWQ runs layer by layer over calibration blocks (src/quant/awq-run.ts);
// progress by linear layer, and a line per group of layers with the α its scale search chose; a summary table of the
// groups; quantize_report.json (every group's α, loss and loss at α = 0, every linear's clip ratio) in the folder.
import { fromPretrained } from '../api.js';
import { parseAwqConfig, type AwqQuantizationSpec } from '../io/awqconfig.js';
import { savePretrained } from '../io/save.js';
import type { AwqGroupStats, AwqProgress } from '../quant/awq-driver.js';
import { quantizeLoadedAwq } from '../quant/awq-run.js';
import { writeFileAtomic } from '../util/fs.js';
import { pyJsonDumps } from '../util/pyjson.js';
import { intOpt, renderProgress, UsageError } from './args.js';
import { deviceOption, quantizedBytes, shortLayerName } from './common.js';
import { join } from 'node:path';

export interface AwqCliValues {
  bits?: string; 'group-size'?: string; dataset?: string; nsamples?: string; seqlen?: string; version?: string;
  'no-zero-point'?: boolean; out: string; force?: boolean; revision?: string; 'no-mmap'?: boolean; device?: string;
}

export async function runQuantizeAwq(model: string, v: AwqCliValues): Promise<number> {
  const bits = intOpt(v.bits, '--bits', 1) ?? 4;
  if (bits !== 4) throw new UsageError(`--bits ${bits}: AWQ checkpoints pack 4-bit codes only (AutoAWQ's w_bit); use --method gptq for 2, 3 or 8 bits`);
  const groupSize = v['group-size'] === undefined ? 128 : Number(v['group-size']);
  if (!(Number.isInteger(groupSize) && (groupSize === -1 || groupSize >= 1))) throw new UsageError(`--group-size must be -1 or a positive integer, got "${v['group-size']}"`);
  if (v.dataset === undefined) throw new UsageError('--method awq needs --dataset FILE (a text file, one text per line, or a JSONL file with a "text" field) for calibration');
  const version = (v.version ?? 'gemm').toLowerCase();
  if (version !== 'gemm' && version !== 'gemv') throw new UsageError(`--version "${v.version}" is unknown (choose gemm or gemv)`);
  const spec: AwqQuantizationSpec = parseAwqConfig({
    quant_method: 'awq', bits, group_size: groupSize, zero_point: !v['no-zero-point'], version, dataset: v.dataset,
    nsamples: intOpt(v.nsamples, '--nsamples', 1) ?? 128, seqlen: intOpt(v.seqlen, '--seqlen', 1) ?? 512,
  }, 'lowbit quantize', { strict: true });

  const device = deviceOption(v.device);

  const t0 = performance.now();
  const m = await fromPretrained(model, { revision: v.revision, mmap: !v['no-mmap'], onProgress: renderProgress(), ...(device === 'cuda' ? { device } : {}) });
  const tLoad = performance.now();
  const groupLines: string[] = [];
  const bar = renderProgress<AwqProgress>({
    label: 'awq',
    detail: (p) => {
      if (p.group) groupLines.push(groupLine(p.group));
      return p.stats ? `  ${shortLayerName(p.stats.name)}${p.stats.alpha !== undefined ? ` α ${p.stats.alpha.toFixed(2)}` : ''}${p.stats.clipRatio !== undefined ? ` clip ${p.stats.clipRatio.toFixed(3)}` : ''}` : '';
    },
  });
  // The chosen α of each group as its search ends (stderr, beside the progress bar).
  const onProgress = (p: AwqProgress) => { bar(p); while (groupLines.length) process.stderr.write(groupLines.shift()! + '\n'); };
  const run = quantizeLoadedAwq(m, spec, { onProgress });
  const tQuant = performance.now();
  const saved = savePretrained(m, v.out, { overwrite: v.force });
  const tSave = performance.now();

  const { after, before } = quantizedBytes(m);
  const cal = run.calibration!;
  const report = {
    model, out: saved.dir, method: 'awq', device,
    config: { bits: spec.bits, group_size: spec.groupSize, zero_point: spec.zeroPoint, version: spec.layout },
    calibration: { source: cal.source, samples: cal.samples.length, seqlen: cal.seqlen, tokens: cal.samples.reduce((s, x) => s + x.length, 0), nsamples: spec.nsamples },
    seconds: { load: (tLoad - t0) / 1000, quantize: (tQuant - tLoad) / 1000, save: (tSave - tQuant) / 1000 },
    bytes: { before, after: after.bytes, bitsPerWeight: after.bitsPerWeight, checkpoint: saved.totalSize },
    float: run.float, scaled_norms: run.scaledNorms,
    groups: run.groups.map((g) => ({ layer: g.layer, prev: g.prev, layers: g.layers, inspect: g.inspect, alpha: g.alpha, loss: g.loss, loss_at_alpha0: g.lossAtAlpha0, losses: g.losses, ms: g.ms })),
    skipped_groups: run.skipped,
    layers: run.stats.map((s) => ({ name: s.name, shape: s.shape, alpha: s.alpha ?? null, clip_ratio: s.clipRatio ?? null, ms: s.ms })),
  };
  writeFileAtomic(join(saved.dir, 'quantize_report.json'), pyJsonDumps(report, { indent: 2 }) + '\n');

  const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
  process.stdout.write([
    `${saved.dir}`,
    `method           awq, ${spec.bits}-bit, group ${spec.groupSize}, ${spec.zeroPoint ? 'zero point' : 'symmetric'}, ${spec.layout.toUpperCase()} layout`,
    `calibration      ${cal.samples.length} blocks × ${cal.seqlen} tokens from ${cal.source}`,
    `layers           ${run.stats.length} linear layers quantized (${run.float.join(', ') || 'none'} kept float); ${run.groups.length} groups scaled, ${run.skipped.length} skipped`,
    `quantized layers ${mb(before)} → ${mb(after.bytes)} (${after.bitsPerWeight.toFixed(3)} bits/weight, scales and zeros included)`,
    `time             ${((tLoad - t0) / 1000).toFixed(2)} s load, ${((tQuant - tLoad) / 1000).toFixed(2)} s quantize, ${((tSave - tQuant) / 1000).toFixed(2)} s save`,
    `report           ${join(saved.dir, 'quantize_report.json')}`,
    '',
    ...groupTable(run.groups),
  ].join('\n') + '\n');
  return 0;
}

function groupLine(g: AwqGroupStats): string {
  const gain = g.lossAtAlpha0 > 0 ? ` (${((1 - g.loss / g.lossAtAlpha0) * 100).toFixed(1)}% below α 0)` : '';
  return `awq L${g.layer} ${g.prev.split('.').pop()} → ${g.layers.map((n) => n.split('.').pop()).join(',')}: α ${g.alpha.toFixed(2)}, loss ${g.loss.toExponential(3)}${gain}`;
}

/** Mean α and loss reduction per kind of group (the scaled linears' names), over the layers. */
function groupTable(groups: AwqGroupStats[]): string[] {
  const kinds = new Map<string, AwqGroupStats[]>();
  for (const g of groups) {
    const k = g.layers.map((n) => n.split('.').pop()).join(',');
    kinds.set(k, [...(kinds.get(k) ?? []), g]);
  }
  const rows = [['scaled linears', 'groups', 'mean α', 'α range', 'loss vs α 0']];
  for (const [k, gs] of kinds) {
    const a = gs.map((g) => g.alpha), r = gs.filter((g) => g.lossAtAlpha0 > 0).map((g) => g.loss / g.lossAtAlpha0);
    rows.push([k, String(gs.length), (a.reduce((s, x) => s + x, 0) / a.length).toFixed(2), `${Math.min(...a).toFixed(2)}-${Math.max(...a).toFixed(2)}`,
      r.length ? (r.reduce((s, x) => s + x, 0) / r.length).toFixed(3) : '—']);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return ['scale search by group (loss: mean squared error of the inspected block\'s output):', ...rows.map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd())];
}
