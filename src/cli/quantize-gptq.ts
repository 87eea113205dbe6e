// `lowbit quantize --method gptq|rtn`: a float checkpoint → an AutoGPTQ folder (FORMATS.md §4.5-4.6) that
// transformers, optimum, vLLM and TGI load. GPTQ runs layer by layer over calibration windows (src/quant/gptq-run.ts);
// progress by linear layer with its output error; a summary table by kind of linear; quantize_report.json and
// quantize_report.svg (per-layer relative output error, GPTQ against round-to-nearest) written into the output folder.
import { fromPretrained } from '../api.js';
import { parseGptqConfig, type GptqQuantizationSpec } from '../io/gptqconfig.js';
import { savePretrained } from '../io/save.js';
import type { GptqLayerStats, GptqProgress } from '../quant/gptq-driver.js';
import { quantizeLoadedGptq } from '../quant/gptq-run.js';
import { writeFileAtomic } from '../util/fs.js';
import { pyJsonDumps } from '../util/pyjson.js';
import { intOpt, numOpt, renderProgress, UsageError } from './args.js';
import { deviceOption, quantizedBytes, shortLayerName } from './common.js';
import { join } from 'node:path';

export interface GptqCliValues {
  method: 'gptq' | 'rtn';
  bits?: string; 'group-size'?: string; sym?: boolean; asym?: boolean; 'desc-act'?: boolean; 'static-groups'?: boolean;
  damp?: string; dataset?: string; nsamples?: string; seqlen?: string; seed?: string; 'checkpoint-format'?: string;
  'no-true-sequential'?: boolean; out: string; force?: boolean; revision?: string; 'no-mmap'?: boolean; device?: string;
}

const fmtErr = (e: number | undefined) => (e === undefined ? '—' : e.toExponential(3));

export async function runQuantizeGptq(model: string, v: GptqCliValues): Promise<number> {
  if (v.sym && v.asym) throw new UsageError('--sym and --asym are exclusive');
  const bits = intOpt(v.bits, '--bits', 2) ?? 4;
  const groupSize = v['group-size'] === undefined ? 128 : Number(v['group-size']);
  if (!(Number.isInteger(groupSize) && (groupSize === -1 || groupSize >= 1))) throw new UsageError(`--group-size must be -1 or a positive integer, got "${v['group-size']}"`);
  const damp = numOpt(v.damp, '--damp', (x) => x > 0 && x < 1, 'a fraction in (0, 1)');
  if (v.method === 'gptq' && v.dataset === undefined) throw new UsageError('--method gptq needs --dataset FILE (a text file, or a JSONL file with a "text" field) for calibration');
  const spec: GptqQuantizationSpec = parseGptqConfig({
    quant_method: 'gptq', bits, group_size: groupSize, sym: !v.asym, desc_act: !!v['desc-act'], static_groups: !!v['static-groups'],
    damp_percent: damp ?? 0.01, true_sequential: !v['no-true-sequential'], checkpoint_format: v['checkpoint-format'] ?? 'gptq',
    dataset: v.dataset ?? null, nsamples: intOpt(v.nsamples, '--nsamples', 1) ?? 128, model_seqlen: intOpt(v.seqlen, '--seqlen', 1) ?? null,
    seed: intOpt(v.seed, '--seed', 0) ?? 0,
  }, 'lowbit quantize', { strict: true });

  const device = deviceOption(v.device);

  const t0 = performance.now();
  const m = await fromPretrained(model, { revision: v.revision, mmap: !v['no-mmap'], onProgress: renderProgress(), ...(device === 'cuda' ? { device } : {}) });
  const tLoad = performance.now();
  const bar = renderProgress<GptqProgress>({
    label: v.method,
    detail: (p) => (p.stats ? `  ${shortLayerName(p.stats.name)}: ${v.method === 'gptq' ? `gptq ${fmtErr(p.stats.gptqError)} · ` : ''}rtn ${fmtErr(p.stats.rtnError)}` : ''),
  });
  const run = quantizeLoadedGptq(m, spec, { method: v.method, onProgress: bar });
  const tQuant = performance.now();
  const saved = savePretrained(m, v.out, { overwrite: v.force });
  const tSave = performance.now();

  const { after, before } = quantizedBytes(m);
  const report = {
    model, out: saved.dir, method: v.method, device,
    config: { bits: spec.bits, group_size: spec.groupSize, sym: spec.sym, desc_act: spec.descAct, static_groups: spec.staticGroups,
      damp_percent: spec.dampPercent, true_sequential: spec.trueSequential, checkpoint_format: spec.checkpointFormat },
    calibration: run.calibration ? { source: run.calibration.source, kind: run.calibration.kind, samples: run.calibration.samples.length,
      seqlen: run.calibration.seqlen, tokens: run.calibration.samples.reduce((s, x) => s + x.length, 0), seed: spec.seed } : null,
    seconds: { load: (tLoad - t0) / 1000, quantize: (tQuant - tLoad) / 1000, save: (tSave - tQuant) / 1000 },
    bytes: { before, after: after.bytes, bitsPerWeight: after.bitsPerWeight, checkpoint: saved.totalSize },
    float: run.float,
    layers: run.stats.map((s) => ({ name: s.name, shape: s.shape, gptqError: s.gptqError ?? null, rtnError: s.rtnError ?? null,
      gptqLoss: s.gptqLoss ?? null, dampPercent: s.dampPercent ?? null, ms: s.ms })),
  };
  writeFileAtomic(join(saved.dir, 'quantize_report.json'), pyJsonDumps(report, { indent: 2 }) + '\n');
  writeFileAtomic(join(saved.dir, 'quantize_report.svg'), errorChart(run.stats, `${model} · ${v.method} ${spec.bits}-bit g${spec.groupSize}${spec.descAct ? ' act-order' : ''}`));

  const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
  process.stdout.write([
    `${saved.dir}`,
    `method           ${v.method}, ${spec.bits}-bit, group ${spec.groupSize}, ${spec.sym ? 'sym' : 'asym'}${spec.descAct ? ', act-order' : ''}, damp ${spec.dampPercent}, ${spec.checkpointFormat}`,
    `calibration      ${run.calibration ? `${run.calibration.samples.length} × ${run.calibration.seqlen} tokens from ${run.calibration.source}` : 'none (round-to-nearest needs none; no errors measured)'}`,
    `layers           ${run.stats.length} linear layers quantized (${run.float.join(', ') || 'none'} kept float)`,
    `quantized layers ${mb(before)} → ${mb(after.bytes)} (${after.bitsPerWeight.toFixed(3)} bits/weight, scales and zeros included)`,
    `time             ${((tLoad - t0) / 1000).toFixed(2)} s load, ${((tQuant - tLoad) / 1000).toFixed(2)} s quantize, ${((tSave - tQuant) / 1000).toFixed(2)} s save`,
    `report           ${join(saved.dir, 'quantize_report.json')}, quantize_report.svg`,
    '',
    ...summaryTable(run.stats),
  ].join('\n') + '\n');
  return 0;
}

/** Mean relative output error per kind of linear (q_proj, down_proj, fc1 …), GPTQ against RTN. */
function summaryTable(stats: GptqLayerStats[]): string[] {
  const kinds = new Map<string, GptqLayerStats[]>();
  for (const s of stats) {
    const k = s.name.split('.').pop()!;
    kinds.set(k, [...(kinds.get(k) ?? []), s]);
  }
  const mean = (xs: (number | undefined)[]) => { const v = xs.filter((x): x is number => x !== undefined); return v.length ? v.reduce((a, b) => a + b, 0) / v.length : undefined; };
  const rows = [['linear', 'layers', 'gptq error', 'rtn error', 'gptq / rtn']];
  for (const [k, ss] of [...kinds, ['all', stats] as [string, GptqLayerStats[]]]) {
    const g = mean(ss.map((s) => s.gptqError)), r = mean(ss.map((s) => s.rtnError));
    rows.push([k, String(ss.length), fmtErr(g), fmtErr(r), g !== undefined && r ? (g / r).toFixed(3) : '—']);
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return ['mean relative output error on the calibration inputs, ‖XWᵀ − XŴᵀ‖² / ‖XWᵀ‖²:', ...rows.map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd())];
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Per-layer relative output error on a log axis, GPTQ and RTN as two lines, in quantization order. */
export function errorChart(stats: GptqLayerStats[], title: string): string {
  const W = 900, H = 420, L = 70, R = 20, T = 40, B = 60;
  const series = [['GPTQ', '#1f77b4', stats.map((s) => s.gptqError)], ['RTN', '#ff7f0e', stats.map((s) => s.rtnError)]] as const;
  const vals = series.flatMap(([, , v]) => v).filter((x): x is number => x !== undefined && x > 0);
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`, `<text x="${W / 2}" y="22" text-anchor="middle" font-size="14">${esc(title)}</text>`];
  if (!vals.length) {
    out.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no errors measured (round-to-nearest without calibration data)</text>`, '</svg>');
    return out.join('\n') + '\n';
  }
  const lo = Math.floor(Math.log10(Math.min(...vals))), hi = Math.ceil(Math.log10(Math.max(...vals))) + (vals.length === 1 ? 1 : 0);
  const span = Math.max(1, hi - lo), n = stats.length;
  const x = (i: number) => L + (n > 1 ? (i / (n - 1)) * (W - L - R) : (W - L - R) / 2);
  const y = (v: number) => T + ((hi - Math.log10(v)) / span) * (H - T - B);
  out.push(`<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`, `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`);
  for (let e = lo; e <= lo + span; e++) {
    out.push(`<line x1="${L}" y1="${y(10 ** e).toFixed(1)}" x2="${W - R}" y2="${y(10 ** e).toFixed(1)}" stroke="#ddd"/>`,
      `<text x="${L - 6}" y="${(y(10 ** e) + 4).toFixed(1)}" text-anchor="end">1e${e}</text>`);
  }
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 20}" text-anchor="middle">linear layer, in quantization order (${n})</text>`,
    `<text x="18" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 18 ${(T + H - B) / 2})">relative output error</text>`);
  series.forEach(([name, color, v], si) => {
    const pts = v.map((e, i) => (e !== undefined && e > 0 ? `${x(i).toFixed(1)},${y(e).toFixed(1)}` : null)).filter((p): p is string => p !== null);
    if (!pts.length) return;
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts.join(' ')}"/>`,
      `<rect x="${W - R - 110}" y="${T + 6 + si * 18}" width="12" height="3" fill="${color}"/>`,
      `<text x="${W - R - 92}" y="${T + 11 + si * 18}">${name}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
