// `lowbit bench --device cuda`: decode and prefill speed of a random-weight model of a real shape on the GPU, against
// the roofline measured in the same run (a device-to-device copy for bandwidth, a bf16 cuBLAS GEMM for the matrix
// peak). The weights are made on the device (nothing crosses PCIe but ids and chosen tokens). Decode is greedy with
// the argmax on the device, so each step sends B ids up and B ids down. scripts/bench_torch.py runs PyTorch eager on
// the same shapes for the comparison (scripts/cuda-check.sh runs both in one call).
import { randomFillSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { cudaBackend as cuda, cudaB4Layout, cudaInt8Layout, cudaQgLayout } from '../backend/cuda/index.js';
import { cudaStatus } from '../native/cuda-addon.js';
import { Weights } from '../models/model.js';
import { randomLlama, SHAPES } from '../models/random.js';
import { buildModel } from '../models/registry.js';
import { Tensor } from '../tensor/tensor.js';
import type { LlamaConfig } from '../io/config.js';
import { Linear } from '../nn/layers.js';
import { quantLinear } from '../nn/quant.js';
import { fromAwq, fromBnb4, fromGptq, fromInt8, type QuantizedWeight } from '../quant/qweight.js';
import { f32ToF16 } from '../tensor/dtype.js';
import type { CausalLM, DecoderLM } from '../models/model.js';
import { PeftModel } from '../peft/lora.js';
import { CudaTrainEngine, trainProfile } from '../train/device-engine.js';
import { AdamW, type Param } from '../train/optim.js';

/** Formats `lowbit bench --device cuda` runs: the float model, GPTQ and AWQ 4-bit (group 128), NF4 (block 64), LLM.int8. */
export const CUDA_BENCH_FORMATS = ['bf16', 'gptq4', 'awq4', 'nf4', 'int8'] as const;

/**
 * A random 4-bit layer [N, K] as AutoGPTQ (v1, symmetric, zero 8) or AutoAWQ's GEMM layout (zero 8) writes it, group
 * 128, or as bitsandbytes packs NF4 (block 64, a bf16 model): random codes (the kernels' speed does not depend on
 * them), scales that keep the float model's magnitudes. Made on the host; its device layout is built right after.
 */
function randomQuantized(format: 'gptq4' | 'awq4' | 'nf4' | 'int8', N: number, K: number, seed: number): QuantizedWeight {
  if (format === 'int8') {
    // LLM.int8 at transformers' default threshold 6: random codes, SCB near 0.08 (weights near 0.02).
    const CB = new Int8Array(N * K);
    for (let o = 0; o < CB.length; o += 1 << 26) randomFillSync(CB.subarray(o, Math.min(CB.length, o + (1 << 26))));
    const SCB = Float32Array.from({ length: N }, (_, i) => 0.06 + 0.04 * (((i * 2654435761 + seed) >>> 0) / 2 ** 32));
    return fromInt8({ shape: [N, K], CB, SCB }, 6);
  }
  if (format === 'nf4') {
    // bitsandbytes' defaults: NF4, block 64, a bf16 model; random codes, absmax near 0.05 (weights near 0.02).
    const packed = new Uint8Array((N * K) / 2);
    for (let o = 0; o < packed.length; o += 1 << 26) randomFillSync(packed.subarray(o, Math.min(packed.length, o + (1 << 26))));
    const absmax = Float32Array.from({ length: (N * K) / 64 }, (_, i) => 0.04 + 0.02 * (((i * 2654435761 + seed) >>> 0) / 2 ** 32));
    return fromBnb4({ quantType: 'nf4', blocksize: 64, dtype: 'bfloat16', shape: [N, K], packed, absmax, nested: null }, 'bfloat16');
  }
  const G = 128, nG = K / G;
  const qweight = new Int32Array((K * N) / 8);
  for (let o = 0; o < qweight.length; o += 1 << 24) randomFillSync(qweight.subarray(o, Math.min(qweight.length, o + (1 << 24))));
  const scales = Uint16Array.from({ length: nG * N }, (_, i) => f32ToF16(0.0025 * (0.75 + 0.5 * (((i * 2654435761 + seed) >>> 0) / 2 ** 32))));
  if (format === 'gptq4') {
    return fromGptq({
      bits: 4, groupSize: G, sym: true, descAct: false, checkpointFormat: 'gptq', shape: [N, K], nGroups: nG, qweight,
      qzeros: new Int32Array((nG * N) / 8).fill(0x77777777), scales, gIdx: Int32Array.from({ length: K }, (_, k) => Math.floor(k / G)),
    });
  }
  return fromAwq({ layout: 'gemm', bits: 4, groupSize: G, shape: [N, K], nGroups: nG, qweight, qzeros: new Int32Array((nG * N) / 8).fill(-0x77777778), scales });
}

export interface CudaBenchOptions {
  shape: string;
  format: string;
  batches: number[];
  prompt: number;
  decode: number;
  prefill: number;
  json?: string;
  /** Every decode step as model.forward calls (no CUDA graph): the launch overhead a replay removes. */
  eager?: boolean;
  /**
   * LoRA training instead of decode/prefill (QLoRA with --format nf4): rank-16 adapters on every decoder linear, one
   * sequence of `prefill` tokens a step; reports tokens/s of a step (forward, backward, AdamW) and step/forward.
   */
  train?: boolean;
  log: (s: string) => void;
}

export interface CudaBenchRow {
  phase: 'decode' | 'prefill';
  batch: number;
  tokensPerSecond: number;
  /** Decode: bytes one step must read (weights once, the KV cache of every row) over the measured bandwidth. */
  rooflineTokensPerSecond: number;
  share: number;
}

export async function runCudaBench(o: CudaBenchOptions): Promise<number> {
  const { addon, probe } = cudaStatus();
  if (!addon) {
    console.error(`lowbit bench: the cuda backend cannot run here: ${probe.why}`);
    return 1;
  }
  if (!(CUDA_BENCH_FORMATS as readonly string[]).includes(o.format)) {
    console.error(`lowbit bench: --format ${o.format} on cuda: choose ${CUDA_BENCH_FORMATS.join(", ")}`);
    return 2;
  }
  if (!SHAPES[o.shape]) {
    console.error(`lowbit bench: unknown shape "${o.shape}" (known: ${Object.keys(SHAPES).join(', ')})`);
    return 2;
  }
  o.log(`${probe.name}: ${(probe.totalBytes! / 2 ** 30).toFixed(1)} GiB, ${probe.multiprocessors} multiprocessors, compute ${probe.computeCapability}`);
  o.log('measuring device copy bandwidth and bf16 GEMM peak…');
  const bandwidth = addon.copyBandwidth(2 ** 31, 20);  // GB/s
  const peak = probe.cublas ? addon.gemmPeak(8192, 10) : NaN;  // TFLOP/s
  o.log(`building a random ${o.shape} (bf16${o.format === 'bf16' ? '' : `, then ${o.format}`}) on the device…`);
  const { config, tensors } = randomLlama(o.shape, 'BF16', 1, {
    matrix: (dtype, shape, seed, std) => cuda.randomTensor(dtype, shape, seed, std),
    ones: (len) => cuda.upload(new Tensor('F32', [len], new Float32Array(len).fill(1))),
  });
  const model = buildModel(config, new Weights(tensors, o.shape), cuda);
  const c = config as LlamaConfig;
  let weightBytes = 0;
  // Every matrix is read once a step; the embedding only one row a token, unless it is also the (tied) LM head.
  for (const [name, t] of tensors) if ((name !== 'model.embed_tokens.weight' || c.tie_word_embeddings) && t.shape.length === 2) weightBytes += t.byteLength;
  if (!c.tie_word_embeddings) weightBytes += c.hidden_size * 2;
  const linearParams = (weightBytes - (c.tie_word_embeddings ? 0 : c.hidden_size * 2)) / 2;
  if (o.format !== 'bf16') {
    // Every decoder linear becomes a random 4-bit layer (lm_head stays bf16, as AutoGPTQ and AutoAWQ keep it); its
    // device layout is built now, so that the roofline counts the bytes the kernels read.
    o.log(`replacing the decoder's linear layers with random ${o.format} ones (${o.format === 'nf4' ? 'block 64' : o.format === 'int8' ? 'threshold 6' : 'group 128'}; lm_head stays bf16)…`);
    let seed = 11;
    for (const [name, lin] of model.linears()) {
      if (!/\.layers\.\d+\./.test(name) || !(lin instanceof Linear)) continue;
      const q = randomQuantized(o.format as 'gptq4' | 'awq4' | 'nf4' | 'int8', lin.outFeatures, lin.inFeatures, seed++);
      model.replaceLinear(name, quantLinear(cuda, name, q, lin.bias));
      const layout = q.format === 'nf4' ? cudaB4Layout(q) : q.format === 'int8' ? cudaInt8Layout(q) : cudaQgLayout(q as Parameters<typeof cudaQgLayout>[0]);
      weightBytes += layout.bytes - lin.weight.byteLength;
      cuda.release!(lin.weight);
    }
    cuda.synchronize();
  }
  if (o.train) return benchTrain(o, model, c, probe.name ?? 'the GPU', peak, linearParams);
  const kvRowBytes = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4;  // f32 K and V, per position

  const rows: CudaBenchRow[] = [];
  const ids = (B: number, T: number, seed: number) => Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, t) => (seed * 7919 + b * 104729 + t * 31) % c.vocab_size));
  for (const B of o.batches) {
    const P = o.prompt, D = o.decode;
    const cache = model.createCache(B, P + D + 1);
    cache.reserve(P + D + 1);
    let next = Array.from(cuda.argmax(model.forward(ids(B, P, B), { cache, logits: 'last' })));
    // Warm-up steps (kernel loads, the graph's eager step and its capture), then the timed ones: graph replays
    // unless --eager.
    const decoder = o.eager ? null : cuda.decoder!(model, cache);
    const step = () => { next = Array.from(cuda.argmax(decoder ? decoder.step(next) : model.forward(next.map((id) => [id]), { cache, logits: 'last' }))); };
    for (let i = 0; i < 3; i++) step();
    const t0 = performance.now();
    for (let i = 0; i < D - 3; i++) step();
    const ms = performance.now() - t0;
    const steps = D - 3, tps = (B * steps) / (ms / 1e3);
    const avgPos = P + 3 + steps / 2;
    const stepBytes = weightBytes + B * avgPos * kvRowBytes;
    const roof = (B * bandwidth * 1e9) / stepBytes;
    rows.push({ phase: 'decode', batch: B, tokensPerSecond: tps, rooflineTokensPerSecond: roof, share: tps / roof });
    o.log(`decode batch ${B}${o.eager ? ' (eager)' : ''}: ${tps.toFixed(1)} tok/s (${(ms / steps).toFixed(2)} ms a step)`);
  }
  if (o.prefill > 0) {
    const T = o.prefill;
    // Each run: the host's time to queue the whole forward, then the wait for the device to finish it.
    let queued = 0;
    const run = () => {
      const t = performance.now();
      const cache = model.createCache(1, T);
      model.forward(ids(1, T, 5), { cache, logits: 'last' });
      queued += performance.now() - t;
      cuda.synchronize();
    };
    run();
    queued = 0;
    const t0 = performance.now();
    const reps = 3;
    for (let i = 0; i < reps; i++) run();
    const s = (performance.now() - t0) / 1e3 / reps;
    o.log(`prefill ${T} tokens: the host queued each forward in ${(queued / reps).toFixed(1)} ms of ${(s * 1e3).toFixed(1)} ms`);
    // The work this prefill does: every decoder linear on T rows, lm_head on the last row only (logits 'last'), and
    // the causal attention's two products.
    const headParams = c.vocab_size * c.hidden_size;
    const flops = 2 * (linearParams - headParams) * T + 2 * headParams + 2 * 2 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * (T * (T + 1)) / 2;
    const tflops = flops / s / 1e12;
    rows.push({ phase: 'prefill', batch: 1, tokensPerSecond: T / s, rooflineTokensPerSecond: (peak * 1e12) / (flops / T), share: tflops / peak });
    o.log(`prefill ${T} tokens: ${(T / s).toFixed(0)} tok/s = ${tflops.toFixed(1)} TFLOP/s`);
  }
  console.log(`${o.shape} ${o.format} on ${probe.name}: copy bandwidth ${bandwidth.toFixed(0)} GB/s, bf16 GEMM peak ${peak.toFixed(0)} TFLOP/s (measured now)`);
  console.log('phase    batch  measured tok/s  roofline tok/s  share');
  for (const r of rows) {
    console.log(`${r.phase.padEnd(8)} ${String(r.batch).padStart(5)}  ${r.tokensPerSecond.toFixed(1).padStart(14)}  ${r.rooflineTokensPerSecond.toFixed(1).padStart(14)}  ${(100 * r.share).toFixed(1).padStart(5)}%`);
  }
  if (o.json) writeFileSync(o.json, JSON.stringify({ shape: o.shape, format: o.format, device: probe.name, bandwidthGBs: bandwidth, peakTflops: peak, rows }, null, 2));
  return 0;
}

/**
 * QLoRA (LoRA on a quantized base) training speed: rank-16 adapters (alpha 32, PEFT's 'all-linear': every decoder
 * linear, not lm_head), a batch of one sequence of o.prefill tokens, CudaTrainEngine's step (forward with the records,
 * backward, gradient clipping and AdamW, all on the device), against an inference forward over
 * the same tokens with every position's logits (what the training forward computes). One warm-up step, then 3 timed.
 */
function benchTrain(o: CudaBenchOptions, model: CausalLM, c: LlamaConfig, device: string, peak: number, linearParams: number): number {
  const T = o.prefill;
  if (T < 2) { console.error('lowbit bench --train: --prefill-len is the sequence length of a step (at least 2)'); return 2; }
  PeftModel.wrap(model, { r: 16, loraAlpha: 32, targetModules: 'all-linear', loraDropout: 0.05 }, { seed: 1 });
  const engine = new CudaTrainEngine(model as DecoderLM, { training: true, seed: 1 });
  engine.zeroGrad();
  const params: Param[] = [];
  let adapterParams = 0;
  for (const [l, g] of engine.grads) {
    const a = l.adapters.get('default')!;
    params.push({ name: `${l.name}.lora_A`, p: a.A, g: g.dA, decay: true }, { name: `${l.name}.lora_B`, p: a.B, g: g.dB, decay: true });
    adapterParams += a.A.length + a.B.length;
  }
  const opt = new AdamW(params, { weightDecay: 0 });
  engine.attachOptimizer(opt);
  const ids = Int32Array.from({ length: T }, (_, t) => (t * 7919 + 13) % c.vocab_size);
  const batch = { ids, labels: ids, B: 1, T, mask: null };
  o.log(`QLoRA bench: ${o.shape} ${o.format} base, LoRA r 16 on ${engine.grads.size} linears (${(adapterParams / 1e6).toFixed(1)}M parameters), ${T} tokens a step`);
  let fbMs = 0, optMs = 0, loss = 0;
  const step = () => {
    engine.zeroGrad();
    const t0 = performance.now();
    loss = engine.forwardBackward(batch).loss;
    cuda.synchronize();
    const t1 = performance.now();
    engine.clipGradNorm(1);
    engine.adamwStep(1e-4);
    cuda.synchronize();
    fbMs += t1 - t0;
    optMs += performance.now() - t1;
  };
  step();
  fbMs = optMs = 0;
  trainProfile.clear();
  const reps = 3;
  for (let i = 0; i < reps; i++) step();
  const forward = () => { cuda.release!(model.forward([Array.from(ids)])); cuda.synchronize(); };
  forward();
  const f0 = performance.now();
  for (let i = 0; i < reps; i++) forward();
  const fwdMs = (performance.now() - f0) / reps, stepMs = (fbMs + optMs) / reps;
  const flops = 6 * linearParams * T;  // forward 2, backward 4 per weight (the frozen base's weight gradient is not taken: an upper count)
  console.log(`${o.shape} ${o.format} QLoRA training on ${device} (bf16 GEMM peak ${peak.toFixed(0)} TFLOP/s measured now), ${T} tokens a step, loss ${loss.toFixed(3)}`);
  console.log(`step ${stepMs.toFixed(1)} ms (forward + backward ${(fbMs / reps).toFixed(1)}, clipping + AdamW on the device ${(optMs / reps).toFixed(1)}): ${(T / (stepMs / 1e3)).toFixed(0)} tokens/s`);
  console.log(`inference forward of the same tokens (all logits): ${fwdMs.toFixed(1)} ms; step/forward ${(stepMs / fwdMs).toFixed(2)}, forward+backward/forward ${(fbMs / reps / fwdMs).toFixed(2)}`);
  console.log(`model FLOPs at 6·params·tokens: ${(flops / (stepMs / 1e3) / 1e12).toFixed(1)} TFLOP/s (${(100 * flops / (stepMs / 1e3) / 1e12 / peak).toFixed(1)}% of peak)`);
  if (trainProfile.size) {
    // LOWBIT_TRAIN_PROFILE=1: each part synchronized on its own, so the step above is slower than without it.
    let sum = 0;
    for (const [part, ms] of [...trainProfile].sort((a, b) => b[1] - a[1])) { console.log(`  ${part.padEnd(22)} ${(ms / reps).toFixed(1).padStart(8)} ms a step`); sum += ms; }
    console.log(`  ${'the rest'.padEnd(22)} ${((fbMs - sum) / reps).toFixed(1).padStart(8)} ms a step (norms, RoPE, SiLU·mul, adds, allocation)`);
  }
  if (o.json) {
    writeFileSync(o.json, JSON.stringify({ shape: o.shape, format: o.format, device, train: { tokens: T, stepMs, forwardBackwardMs: fbMs / reps, adamwMs: optMs / reps, forwardMs: fwdMs, tokensPerSecond: T / (stepMs / 1e3), stepOverForward: stepMs / fwdMs, adapterParams, loss } }, null, 2));
  }
  return 0;
}
