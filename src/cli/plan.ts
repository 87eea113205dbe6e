// `lowbit plan`: weights + KV cache against a device's memory; largest batch; where decode turns compute-bound.
import { cudaStatus } from '../native/cuda-addon.js';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { cpuAvailable, measureRoofline } from '../backend/cpu/index.js';
import { parseConfig, readConfig, type ModelConfig } from '../io/config.js';
import { resolveModelDir } from '../io/hub.js';
import { BYTES_PER_ELEMENT, DeviceSpec, DEVICES, kvBytesPerToken, MODEL_PRESETS, modelShape, plan, plannerDtype } from '../plan/plan.js';
import { intOpt, numOpt, parseCommand, UsageError } from './args.js';

export const planHelp = `lowbit plan — KV-cache and batch-size planner

Usage: lowbit plan <model folder | org/name | preset> [--device NAME] [--memory-gb G] [--seq-len N]
                   [--dtype fp16|bf16|fp32|int8|int4] [--kv-dtype fp16|bf16|fp32|int8] [--reserve-gb G] [--json]

KV bytes = 2 (K and V) × layers × KV heads × head_dim × sequence length × batch × bytes per element (GQA-aware).
--dtype defaults to the model's config.json (torch_dtype / dtype: bfloat16 → bf16, float16 → fp16, float32 → fp32),
and to fp16 for presets. --kv-dtype defaults to fp32 on --device cpu (lowbit's CPU cache) or for fp32 weights, else to
the weight dtype (fp16 for int8/int4 weights).
Devices: ${Object.keys(DEVICES).join(', ')}, cpu (this machine, measured). Presets: ${Object.keys(MODEL_PRESETS).join(', ')}.

Examples:
  lowbit plan llama-2-13b --device a100-40g --seq-len 4096 --dtype fp16
  lowbit plan llama-3-8b --device h100 --seq-len 8192 --dtype int4
  lowbit plan ./my-model --device cpu --seq-len 2048
  lowbit plan llama-3-8b --device cuda --seq-len 8192 --dtype bf16   (this machine's GPU: free memory, measured)
`;

async function loadConfigFor(what: string): Promise<{ config: ModelConfig; label: string }> {
  if (MODEL_PRESETS[what]) return { config: parseConfig(MODEL_PRESETS[what], `preset ${what}`), label: what };
  const dir = await resolveModelDir(what, { configOnly: true });
  return { config: readConfig(join(dir, 'config.json')), label: dir };
}

function cpuDevice(): DeviceSpec {
  if (!cpuAvailable()) throw new UsageError('--device cpu measures this machine with the native addon, which is not built (run npm install)');
  const r = measureRoofline({ bandwidthBytes: 1 << 28, iters: 3, peakMs: 300 });
  return { name: `this CPU (${r.threads} threads)`, memoryBytes: totalmem(), bandwidth: r.bandwidthGBs * 1e9, flops: r.peakGflops * 1e9, note: 'measured: read bandwidth, fp32 FMA peak' };
}

/** --device cuda: this machine's GPU, its free memory and the bandwidth / bf16 peak measured now (the bench's probes). */
function cudaDevice(): DeviceSpec {
  const { addon, probe } = cudaStatus();
  if (!addon) throw new UsageError(`--device cuda: ${probe.why}`);
  const bw = addon.copyBandwidth(2 ** 30, 10) * 1e9 / 2;  // the copy counts bytes read and written; decode reads
  const tflops = probe.cublas ? addon.gemmPeak(4096, 5) : NaN;
  return { name: `${probe.name} (free now)`, memoryBytes: addon.memInfo().freeBytes, bandwidth: bw, flops: Number.isFinite(tflops) ? tflops * 1e12 : 0,
    note: `measured: device copy bandwidth / 2${Number.isFinite(tflops) ? ', bf16 cuBLAS GEMM' : ', no cuBLAS for the GEMM peak'}` };
}

export async function runPlan(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommand('plan', argv, {
    device: { type: 'string', default: 'a100-40g' }, 'memory-gb': { type: 'string' }, 'seq-len': { type: 'string' },
    dtype: { type: 'string' }, 'kv-dtype': { type: 'string' }, 'reserve-gb': { type: 'string', default: '0' },
    json: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' },
  });
  if (v.help) { process.stdout.write(planHelp); return 0; }
  if (positionals.length !== 1) throw new UsageError('give one model folder, Hub id or preset (see lowbit plan --help)');
  const { config, label } = await loadConfigFor(positionals[0]);
  const devName = v.device!.toLowerCase();
  const base = devName === 'cpu' ? cpuDevice() : devName === 'cuda' ? cudaDevice() : DEVICES[devName];
  if (!base) throw new UsageError(`--device "${v.device}" is unknown (choose ${Object.keys(DEVICES).join(', ')}, cpu, cuda)`);
  const memGb = numOpt(v['memory-gb'], '--memory-gb', (x) => x > 0, 'a positive number');
  const device = { ...base, memoryBytes: memGb !== undefined ? memGb * 1e9 : base.memoryBytes };
  // A checkpoint is planned in the dtype it is stored in unless --dtype says otherwise; presets have no dtype.
  const fromConfig = MODEL_PRESETS[positionals[0]] ? null : plannerDtype(config.torch_dtype);
  const dtype = v.dtype ?? fromConfig ?? 'fp16';
  const dtypeSource = v.dtype ? '' : fromConfig ? ' (from config.json)' : MODEL_PRESETS[positionals[0]] ? '' : ' (config.json names no dtype)';
  const wb = BYTES_PER_ELEMENT[dtype];
  if (wb === undefined) throw new UsageError(`--dtype must be one of ${Object.keys(BYTES_PER_ELEMENT).join(', ')}, got "${dtype}"`);
  // lowbit's CPU KV cache is f32; GPUs keep it in the compute dtype (fp16 beside integer weights).
  const kvDtype = v['kv-dtype'] ?? (dtype === 'fp32' || devName === 'cpu' ? 'fp32' : dtype === 'bf16' ? 'bf16' : 'fp16');
  const kb = BYTES_PER_ELEMENT[kvDtype];
  if (kb === undefined || kvDtype === 'int4') throw new UsageError(`--kv-dtype must be fp16, bf16, fp32 or int8, got "${kvDtype}"`);
  const seqLen = intOpt(v['seq-len'], '--seq-len', 1) ?? config.max_position_embeddings;
  const shape = modelShape(config);
  const reserve = (numOpt(v['reserve-gb'], '--reserve-gb', (x) => x >= 0, 'a number ≥ 0') ?? 0) * 1e9;
  const p = plan({ shape, device, seqLen, weightBytesPerParam: wb, kvBytesPerElement: kb, reserveBytes: reserve });
  // Short prompts: only the weights are read each step, so the crossover is FLOP/s ÷ bandwidth × bytes/param ÷ 2.
  const weightsOnly = Math.ceil((device.flops / device.bandwidth) * wb / 2);
  if (v.json) {
    process.stdout.write(JSON.stringify({ model: label, device: device.name, seqLen, dtype, kvDtype, ...p, computeBoundBatchShortContext: weightsOnly }) + '\n');
    return 0;
  }
  const size = (b: number) => b >= 1e9 ? `${(b / 1e9).toFixed(2)} GB (${(b / 2 ** 30).toFixed(3)} GiB)` : `${(b / 1e6).toFixed(2)} MB (${(b / 2 ** 20).toFixed(3)} MiB)`;
  const params = shape.params >= 1e9 ? `${(shape.params / 1e9).toFixed(2)}B` : `${(shape.params / 1e6).toFixed(2)}M`;
  const shortPrompts = `short prompts: from batch ${weightsOnly}`;
  const lines = [
    `model            ${label}: ${params} params, ${shape.layers} layers, ${shape.heads} heads / ${shape.kvHeads} KV heads × ${shape.headDim}`,
    `device           ${device.name}: ${(device.memoryBytes / 1e9).toFixed(1)} GB, ${(device.bandwidth / 1e9).toFixed(0)} GB/s, ${device.flops >= 1e12 ? `${(device.flops / 1e12).toFixed(1)} TFLOP/s` : `${(device.flops / 1e9).toFixed(0)} GFLOP/s`} (${device.note})`,
    `weights          ${size(p.weightBytes)} at ${dtype}${dtypeSource}`,
    `KV cache         ${(kvBytesPerToken(shape, kb) / 1024).toFixed(1)} KiB per token; ${size(p.kvBytesPerSequence)} per ${seqLen}-token sequence at ${kvDtype}`,
    `free for KV      ${size(Math.max(0, p.freeBytes))}`,
    `largest batch    ${p.maxBatch}${p.maxBatch === 0 ? ' (the weights alone do not fit)' : ''}`,
    `compute-bound    ${p.computeBoundBatch === null
      ? `at no batch size with ${seqLen}-token sequences: each one's KV-cache reads outweigh its FLOPs (${shortPrompts})`
      : `from batch ${p.computeBoundBatch} with ${seqLen}-token sequences (${shortPrompts})`}`,
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
