// Time and peak memory to quantize a random model of a real shape (bf16 weights built in memory) with the
// layer-by-layer GPTQ or AWQ driver, on the cpu backend or on the GPU (--device cuda), calibration = nsamples windows
// of seqlen random token ids (the cost does not depend on the values). GPTQ's protocol (issue 9) is 128 × 2048
// tokens; on a 2-vCPU machine that is hours, so --layers stops after the first N decoder layers and the report
// extrapolates to all of them (every layer has the same shapes and the same work). Run the cpu and the cuda device in
// one call on the GPU machine to get their ratio.
// Run: npx tsc -p . && node dist/bench/quantize-speed.js [--method gptq|awq] [--device cpu|cuda] [--shape tinyllama-1.1b]
//      [--nsamples 128] [--seqlen 2048] [--layers N] [--out FILE]   (default bench/out/quantize-<method>-<shape>-<device>.json)
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getBackend } from '../src/backend/index.js';
import { getThreads } from '../src/backend/cpu/index.js';
import { Weights } from '../src/models/model.js';
import { randomLlama, SHAPES } from '../src/models/random.js';
import { buildModel } from '../src/models/registry.js';
import { quantizeModelGptq } from '../src/quant/gptq-driver.js';
import { quantizeModelAwq } from '../src/quant/awq-driver.js';
import type { Progress } from '../src/util/progress.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values: opts } = parseArgs({ options: {
  method: { type: 'string', default: 'gptq' }, device: { type: 'string', default: 'cpu' }, shape: { type: 'string', default: 'tinyllama-1.1b' },
  nsamples: { type: 'string', default: '128' }, seqlen: { type: 'string', default: '2048' }, layers: { type: 'string' }, out: { type: 'string' },
} });
const { method, device, shape } = opts as { method: string; device: string; shape: string };
if (method !== 'gptq' && method !== 'awq') throw new Error(`--method must be gptq or awq, got ${method}`);
if (device !== 'cpu' && device !== 'cuda') throw new Error(`--device must be cpu or cuda, got ${device}`);
if (!SHAPES[shape]) throw new Error(`--shape must be one of ${Object.keys(SHAPES).join(', ')}`);
const nLayers = Number(SHAPES[shape].num_hidden_layers);
const nsamples = Number(opts.nsamples), seqlen = Number(opts.seqlen), layers = Number(opts.layers ?? nLayers);
const outPath = resolve(opts.out ?? join(here, '..', '..', 'bench', 'out', `quantize-${method}-${shape}-${device}.json`));
const hwm = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) * 1024;

const t0 = performance.now();
const r = randomLlama(shape, 'BF16');
const model = buildModel(r.config, new Weights(r.tensors, shape), getBackend(device));
let s = 12345;
const next = () => { s = (s * 1103515245 + 12345) % 2 ** 31; return s; };
const V = Number(SHAPES[shape].vocab_size);
const samples = Array.from({ length: nsamples }, () => Int32Array.from({ length: seqlen }, () => 3 + (next() % (V - 10))));
model.backend.synchronize?.();
const tBuild = performance.now();
console.error(`built in ${((tBuild - t0) / 1000).toFixed(1)} s; ${method} 4-bit g128 on ${nsamples} × ${seqlen} tokens on ${device}${device === 'cpu' ? ` (${getThreads()} threads)` : ''}, first ${layers} of ${nLayers} layers…`);
const ctl = new AbortController();
const perLayer: { layer: number; s: number; hwmGB: number }[] = [];
let layerStart = performance.now(), current = 0, linears = 0;
const onProgress = (p: Progress & { stats?: unknown }) => {
  if (!p.stats) return;  // AWQ also reports each group's search
  console.error(`  ${p.done}/${p.total} ${p.item} ${((performance.now() - tBuild) / 1000).toFixed(0)} s, peak RSS ${(hwm() / 1e9).toFixed(2)} GB`);
  if (++linears % 7 === 0) {  // the 7th linear of a layer: the layer is done
    model.backend.synchronize?.();
    const now = performance.now();
    perLayer.push({ layer: current, s: (now - layerStart) / 1000, hwmGB: hwm() / 1e9 });
    layerStart = now;
    current++;
    if (current >= layers) ctl.abort(new Error(`stopped after ${layers} layers`));
  }
};
let stopped = false;
try {
  if (method === 'gptq') quantizeModelGptq(model, samples, { bits: 4, groupSize: 128, sym: true, signal: ctl.signal, errors: false }, onProgress);
  else quantizeModelAwq(model, samples, { bits: 4, groupSize: 128, signal: ctl.signal }, onProgress);
} catch (e) {
  if (!ctl.signal.aborted) throw e;
  stopped = true;
}
model.backend.synchronize?.();
const tEnd = performance.now();
const quantS = (tEnd - tBuild) / 1000, perLayerS = perLayer.length ? perLayer.reduce((a, b) => a + b.s, 0) / perLayer.length : NaN;
const result = {
  method, device, shape, bits: 4, groupSize: 128, nsamples, seqlen, tokens: nsamples * seqlen, threads: device === 'cpu' ? getThreads() : null,
  layersRun: perLayer.length, stopped, buildSeconds: (tBuild - t0) / 1000, quantizeSeconds: quantS, perLayer,
  perLayerSeconds: perLayerS, extrapolatedAllLayersSeconds: stopped ? perLayerS * nLayers : quantS, peakRssGB: hwm() / 1e9,
};
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, JSON.stringify(result, null, 2) + '\n');
console.log(JSON.stringify(result, null, 2));
