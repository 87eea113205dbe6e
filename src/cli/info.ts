// `lowbit info`: what a checkpoint is, without running it. The model is built as generate builds it (config,
// every tensor's name and shape, tokenizer and generation_config.json), so info accepts exactly what generate accepts.
import { fromPretrained } from '../api.js';
import { checkGenerationFits } from '../generate/generate.js';
import { kvBytesPerToken, modelShape } from '../plan/plan.js';
import { statSync } from 'node:fs';
import { checkpointFiles } from '../io/checkpoint.js';
import type { QuantizationSpec } from '../io/quantconfig.js';
import { quantStats } from '../quant/stats.js';
import { PyFloat } from '../util/pyjson.js';
import type { Tensor } from '../tensor/tensor.js';
import { parseCommand, UsageError } from './args.js';
import { cliMessage, maxNewTokens } from './generate.js';
import { cudaStatus } from '../native/cuda-addon.js';

export const infoHelp = `lowbit info — describe a model folder or Hub id

Usage: lowbit info <model folder | org/name> [--json] [--revision REV] [--no-mmap]

Prints the architecture, parameter count (from the tensors), bytes per dtype, KV-cache bytes per token, the
checkpoint files' total bytes, and for a bitsandbytes checkpoint the quantization: format, block size, double
quantization, compute dtype, and bits per weight in the quantized layers with their scales counted (codes + absmax
+ nested absmax, or int8 codes + SCB: NF4 + double quant at block 64 is 4 + 8/64 + 32/(64·256) ≈ 4.127 on large
layers); for a GPTQ checkpoint bits, group size, act-order, symmetry, the zero-point format (gptq = v1, gptq_v2)
and bits per weight with qzeros, scales and g_idx counted (4-bit g128: 4 + 20/128 + 32/out ≈ 4.16); for an AWQ
checkpoint group size, zero point, version and layout, and bits per weight with qzeros and scales counted. The model is checked as lowbit generate checks it (config values, every tensor's
name and shape, tokenizer files, generation_config.json and its settings against the model's positions, with
generate's default answer length) without running it: a model info accepts, generate runs. Where the cuda backend
can run, the GPU line gives its free memory now and whether the weights fit with how many tokens of lowbit's f32 KV
cache beside them; elsewhere it says why not.

Examples:
  lowbit info models/kjv-demo
  lowbit info TinyLlama/TinyLlama-1.1B-Chat-v1.0 --json
`;

/** What `lowbit info --json` says about a quantized checkpoint (null for a float one). */
function quantization(tensors: Map<string, Tensor>, spec: QuantizationSpec | null) {
  const st = quantStats(tensors);
  if (!st.layers.length) return null;
  const gptq = spec?.method === 'gptq'
    ? { bits: spec.bits, groupSize: spec.groupSize, descAct: spec.descAct, sym: spec.sym, checkpointFormat: spec.checkpointFormat } : null;
  const awq = spec?.method === 'awq' ? { bits: spec.bits, groupSize: spec.groupSize, zeroPoint: spec.zeroPoint, version: spec.version, layout: spec.layout } : null;
  return {
    formats: st.formats, blocksizes: st.blocksizes, doubleQuant: st.doubleQuant, computeDtype: spec?.computeDtype ?? null,
    ...(gptq ? { gptq } : {}), ...(awq ? { awq } : {}), layers: st.layers.length, params: st.params, bytes: st.bytes, bitsPerWeight: st.bitsPerWeight,
  };
}

function describe(q: ReturnType<typeof quantization>): string {
  if (!q) return 'none';
  if (q.gptq) {
    const g = q.gptq;
    return `gptq ${g.bits}-bit, group ${g.groupSize}, ${g.descAct ? 'act-order' : 'no act-order'}, ${g.sym ? 'sym' : 'asym'}, format ${g.checkpointFormat}: `
      + `${q.layers} layers, ${q.params.toLocaleString('en-US')} weights at ${q.bitsPerWeight.toFixed(3)} bits/weight (scales, zeros and g_idx included)`;
  }
  if (q.awq) {
    const a = q.awq;
    return `awq ${a.bits}-bit, group ${a.groupSize}, ${a.zeroPoint ? 'zero point' : 'symmetric'}, version ${a.version} (${a.layout.toUpperCase()} layout): `
      + `${q.layers} layers, ${q.params.toLocaleString('en-US')} weights at ${q.bitsPerWeight.toFixed(3)} bits/weight (scales and zeros included)`;
  }
  const four = q.formats.some((f) => f !== 'int8');
  const how = [q.formats.join('+'), ...(four ? [`block ${q.blocksizes.join('/')}`, q.doubleQuant ? 'double quant' : q.doubleQuant === false ? 'no double quant' : 'mixed double quant'] : []),
    `compute ${q.computeDtype}`].join(', ');
  return `${how}: ${q.layers} layers, ${q.params.toLocaleString('en-US')} weights at ${q.bitsPerWeight.toFixed(3)} bits/weight (scales included)`;
}

function describeGpu(g: ReturnType<typeof gpuInfo>): string {
  if (!g.ok) return `none usable here (${g.why})`;
  const gb = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  return `${g.name}, compute ${g.computeCapability}: ${gb(g.freeBytes!)} free of ${gb(g.totalBytes!)}; ` +
    (g.weightsFit ? `the weights fit, with room for ${g.kvTokensThatFit!.toLocaleString('en-US')} tokens of f32 KV cache (--device cuda)` : 'the weights do not fit');
}

/** The bytes of the safetensors files the checkpoint loads from (model.safetensors, or the index and its shards). */
function checkpointBytes(dir: string): number {
  return checkpointFiles(dir).reduce((a, f) => a + statSync(f).size, 0);
}

const TORCH_BYTES: Record<string, number> = { float32: 4, float16: 2, bfloat16: 2 };

/**
 * This machine's GPU against the model (`--device cuda`): its name, memory now, and whether the weights fit (lowbit
 * keeps a float checkpoint's weights in their dtype on the device, a GPTQ/AWQ/NF4 one about as the file holds them;
 * its KV cache there is float32). Null fields and `why` when the cuda backend cannot run here.
 */
function gpuInfo(weightBytes: number, kvBytesPerToken: number): { ok: boolean; why?: string; name?: string; totalBytes?: number; freeBytes?: number;
  computeCapability?: string; cublas?: boolean; weightsFit?: boolean; kvTokensThatFit?: number } {
  const { addon, probe } = cudaStatus();
  if (!addon) return { ok: false, why: probe.why };
  const { freeBytes, totalBytes } = addon.memInfo();
  const left = freeBytes - weightBytes;
  return {
    ok: true, name: probe.name, totalBytes, freeBytes, computeCapability: probe.computeCapability, cublas: probe.cublas,
    weightsFit: left > 0, kvTokensThatFit: left > 0 ? Math.floor(left / kvBytesPerToken) : 0,
  };
}

export async function runInfo(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseCommand('info', argv, {
    json: { type: 'boolean', default: false }, revision: { type: 'string' }, 'no-mmap': { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
  });
  if (v.help) { process.stdout.write(infoHelp); return 0; }
  if (positionals.length !== 1) throw new UsageError('give one model folder or Hub id (see lowbit info --help)');
  const m = await fromPretrained(positionals[0], { revision: v.revision, mmap: !v['no-mmap'] });
  const { dir, config, tensors } = m;
  // generate's own pre-flight check, with the answer length lowbit generate uses when no flag is given.
  try {
    checkGenerationFits(m, m.generationConfig, { maxNewTokens: maxNewTokens(m, {}) });
  } catch (e) {
    throw cliMessage(e);
  }
  const byDtype: Record<string, { tensors: number; params: number; bytes: number }> = {};
  let params = 0;
  for (const t of tensors.values()) {
    const e = (byDtype[t.dtype] ??= { tensors: 0, params: 0, bytes: 0 });
    e.tensors++; e.params += t.numel; e.bytes += t.byteLength; params += t.numel;
  }
  const shape = modelShape(config);
  const dtypeBytes = TORCH_BYTES[config.torch_dtype ?? ''] ?? 2;
  const info = {
    dir, model_type: config.model_type, architectures: config.raw.architectures ?? null, torch_dtype: config.torch_dtype,
    parameters: params, layers: shape.layers, hidden_size: shape.hidden, heads: shape.heads, kv_heads: shape.kvHeads, head_dim: shape.headDim,
    vocab_size: config.vocab_size, max_position_embeddings: config.max_position_embeddings, dtypes: byDtype,
    kvBytesPerToken: kvBytesPerToken(shape, dtypeBytes), kvBytesPerTokenLowbitCpu: kvBytesPerToken(shape, 4),
    // An AutoGPTQ folder may have it in quantize_config.json only: then the normalised one.
    quantization_config: config.raw.quantization_config
      ?? (m.quantizationConfig ? Object.fromEntries([...m.quantizationConfig].map(([k, x]) => [k, x instanceof PyFloat ? x.value : x])) : null),
    quantization: quantization(m.tensors, config.quantization_config),
    fileBytes: checkpointBytes(dir),
    gpu: gpuInfo([...tensors.values()].reduce((a, t) => a + t.byteLength, 0), kvBytesPerToken(shape, 4)),
  };
  if (v.json) { process.stdout.write(JSON.stringify(info) + '\n'); return 0; }
  const mb = (b: number) => `${(b / 1e6).toFixed(2)} MB`;
  const out = [
    `${dir}`,
    `architecture     ${config.model_type} (${(info.architectures as string[] | null)?.join(', ') ?? '?'}), ${config.torch_dtype ?? 'dtype unset'}`,
    `parameters       ${params.toLocaleString('en-US')} (${(params / 1e6).toFixed(2)}M)`,
    `shape            ${shape.layers} layers, hidden ${shape.hidden}, ${shape.heads} heads / ${shape.kvHeads} KV heads × ${shape.headDim}, vocab ${config.vocab_size}, context ${config.max_position_embeddings}`,
    ...Object.entries(byDtype).map(([d, e]) => `  ${d.padEnd(14)} ${String(e.tensors).padStart(5)} tensors ${e.params.toLocaleString('en-US').padStart(16)} params ${mb(e.bytes).padStart(12)}`),
    `KV cache         ${info.kvBytesPerToken.toLocaleString('en-US')} bytes/token at ${config.torch_dtype ?? 'fp16'} (${info.kvBytesPerTokenLowbitCpu.toLocaleString('en-US')} in lowbit's f32 CPU cache)`,
    `checkpoint       ${info.fileBytes.toLocaleString('en-US')} bytes in safetensors files (${mb(info.fileBytes)})`,
    `quantization     ${describe(info.quantization)}`,
    `GPU              ${describeGpu(info.gpu)}`,
  ];
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}
