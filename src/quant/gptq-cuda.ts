// GPTQ (and its round-to-nearest baseline) with the model on the GPU: the twins of src/quant/gptq.ts's
// HessianAccumulator, prepareHessian, gptqQuantizePrepared, rtnQuantize and outputError over device tensors, so
// `lowbit quantize --device cuda` keeps activations, Hessians and weights on the device and brings down only each
// layer's codes and grids. The steps and their order are gptq.ts's (see there for the reference's quirks); the
// kernels are native/cuda/gptq.cu. Differences from the host path, all rounding: the Hessian's product and the lazy
// block update are cuBLAS float32 sums, the factorization runs in float64 throughout (the host rounds to float32
// between its three steps); the column loop is the same arithmetic as refLinalg.quantizeBlock.
import { cudaBackend, cudaGptq, cudaTrain, cudaUntracked } from '../backend/cuda/index.js';
import { Tensor } from '../tensor/tensor.js';
import { checkGptqOptions, checkWeight, choleskyFailure, GptqError, hessianPlan, newCodes, type GptqRunOptions } from './gptq.js';
import type { GptqCodes } from './gptq-types.js';

/** The column loop keeps a block's rows in shared memory: at most this many columns a block (native/cuda kGptqMaxBlock). */
export const CUDA_GPTQ_MAX_BLOCK = 1024;

/** HessianAccumulator on the device: H = 2/n·Σ xxᵀ as a running mean, x a cuda F32 tensor [tokens, K]. */
export class CudaHessian {
  readonly H: Tensor<'F32'>;
  nsamples = 0;
  constructor(readonly K: number) {
    if (!(Number.isInteger(K) && K >= 1)) throw new GptqError(`CudaHessian: K must be a positive integer, got ${K}`);
    // Opened while a scoped calibration forward runs (the first linear of its group records): kept past it.
    this.H = cudaUntracked(() => cudaTrain.zeros([K, K]));
  }
  add(x: Tensor<'F32'>, tokens: number, nSequences = 1): void {
    if (x.numel !== tokens * this.K) throw new GptqError(`CudaHessian.add: x has ${x.numel} values, ${tokens} tokens × K ${this.K} expected`);
    const n = this.nsamples, b = nSequences;
    this.nsamples = n + b;
    cudaGptq.xtx(this.H, x, tokens, this.K, n / (n + b), 2 / (n + b));
  }
  release(): void { cudaBackend.release!(this.H); }
}

/** prepareHessian's output on the device. */
export interface CudaPreparedHessian {
  K: number;
  dead: Uint8Array;
  perm: Int32Array | null;
  /** [K, K] upper, H⁻¹ = UᵀU (damped, permuted), on the device. */
  U: Tensor<'F32'>;
  dampPercent: number;
  release(): void;
}

/** prepareHessian on the device: H's diagonal comes down for the plan (dead columns, act-order, mean), U stays up. */
export function prepareHessianCuda(H: Tensor<'F32'>, K: number, opts: GptqRunOptions): CudaPreparedHessian {
  const name = opts.name ?? 'gptq';
  if (H.numel !== K * K) throw new GptqError(`${name}: H has ${H.numel} values, K×K = ${K * K} expected`);
  const { dead, diag, perm, mean } = hessianPlan(cudaGptq.diag(H, K), opts.descAct);
  const permDev = perm ? cudaBackend.upload(new Tensor('I32', [K], perm)) : null;
  const U = cudaBackend.empty('F32', [K, K]);
  const diagP = new Float32Array(K);
  let damp = opts.dampPercent;
  try {
    for (;;) {
      const d = Math.fround(damp * mean);
      for (let i = 0; i < K; i++) diagP[i] = Math.fround(diag[perm ? perm[i] : i] + d);
      const [f0, f1] = cudaGptq.prepare(U, H, permDev, diagP, K);
      const fail = f0 >= 0 ? f0 : f1;
      if (fail < 0) break;
      const inc = opts.dampAutoIncrement ?? 0;
      if (inc > 0 && damp + inc < 1) { damp += inc; continue; }
      throw choleskyFailure(name, damp, fail);
    }
  } catch (e) {
    cudaBackend.release!(U);
    throw e;
  } finally {
    if (permDev) cudaBackend.release!(permDev);
  }
  return { K, dead, perm, U, dampPercent: damp, release: () => cudaBackend.release!(U) };
}

/** A float32 copy of a float weight [N, K] on the device, checked finite as gptq.ts checks it. */
export function cudaWeightF32(w: Tensor, name: string): Tensor<'F32'> {
  const W = cudaGptq.toF32(w);
  if (!Number.isFinite(cudaGptq.dot(W, W))) {
    // Rare: bring it down to name the first bad element in the host's words.
    checkWeight(cudaBackend.download(W).f32, [w.shape[0], w.shape[1]], name);
  }
  return W;
}

/** The grid slot of every column position: the group of the original column (act-order), of the position, or 0. */
function columnGroups(K: number, G: number, grouped: boolean, staticGroups: boolean, perm: Int32Array | null): Tensor {
  const cg = new Int32Array(K);
  if (grouped) for (let p = 0; p < K; p++) cg[p] = Math.floor((staticGroups && perm ? perm[p] : p) / G);
  return cudaBackend.upload(new Tensor('I32', [K], cg));
}

/** Codes, grids (downloaded) of a quantized layer, and gIdx as the host path sets it. */
function finishCodes(codes: GptqCodes, intWeight: Tensor, scales: Tensor<'F32'>, zeros: Tensor<'F32'>): void {
  codes.intWeight.set(cudaBackend.download(intWeight).data as Uint8Array);
  codes.scales.set(cudaBackend.download(scales).f32);
  const z = cudaBackend.download(zeros).f32;
  for (let i = 0; i < z.length; i++) codes.zeros[i] = z[i];
}

export interface CudaGptqResult {
  codes: GptqCodes;
  /** [N, K] scale·(q − zero) on the device, original column order. */
  dequantized: Tensor<'F32'>;
  loss: number;
  dampPercent: number;
}

/** gptqQuantizePrepared on the device: w is a cuda F32 [N, K] (not changed). */
export function gptqQuantizeCuda(w: Tensor<'F32'>, shape: readonly [number, number], prep: CudaPreparedHessian, opts: GptqRunOptions): CudaGptqResult {
  const name = opts.name ?? 'gptq';
  const [N, K] = shape;
  if (w.numel !== N * K) throw new GptqError(`${name}: weight has ${w.numel} elements, shape [${N}, ${K}] needs ${N * K}`);
  if (prep.K !== K) throw new GptqError(`${name}: the Hessian is for K = ${prep.K} inputs, the weight has ${K}`);
  const B0 = Math.min(opts.blockSize, K);
  if (B0 > CUDA_GPTQ_MAX_BLOCK) throw new GptqError(`${name}: blockSize ${opts.blockSize} is above ${CUDA_GPTQ_MAX_BLOCK}, the most the cuda column loop takes (AutoGPTQ's default is 128)`);
  const { bits, sym } = opts, grouped = opts.groupSize !== -1, G = grouped ? opts.groupSize : K;
  const staticGroups = grouped && opts.staticGroups, { perm } = prep;
  const codes = newCodes(bits, opts.groupSize, N, K);
  const nG = codes.scales.length / N;
  const be = cudaBackend, tmp: Tensor[] = [];
  const keep = <T extends Tensor>(t: T): T => { tmp.push(t); return t; };
  try {
    const scales = keep(be.empty('F32', [nG, N])), zeros = keep(be.empty('F32', [nG, N]));
    const W = keep(be.empty('F32', [N, K]));
    be.copy(W, 0, w, 0, N * K);
    // 1. Without groups: one grid per row from the whole weight, before dead columns are zeroed.
    if (!grouped) cudaGptq.findParams(scales, zeros, 0, W, N, K, 0, K, bits, sym);
    // 2. Dead columns.
    if (prep.dead.some((d) => d)) {
      const dead = keep(be.upload(new Tensor('U8', [K], prep.dead)));
      cudaGptq.columns(W, W, null, dead, N, K);
    }
    // 3. Static groups, from the original columns.
    if (staticGroups) for (let g = 0, c0 = 0; c0 < K; g++, c0 += G) cudaGptq.findParams(scales, zeros, g, W, N, K, c0, Math.min(K, c0 + G), bits, sym);
    // 4. act-order.
    const permDev = perm ? keep(be.upload(new Tensor('I32', [K], perm))) : null;
    let Wp = W;
    if (permDev) {
      Wp = keep(be.empty('F32', [N, K]));
      cudaGptq.columns(Wp, W, permDev, null, N, K);
    }
    const colGroup = keep(columnGroups(K, G, grouped, staticGroups, perm));
    // 7. Blocks with lazy updates.
    const q = keep(be.empty('U8', [N, K])), deq = be.empty('F32', [N, K]);
    const err = keep(be.empty('F32', [N, B0])), rowLoss = keep(cudaTrain.zeros([2 * N]));  // float64 [N]
    for (let i1 = 0; i1 < K; i1 += B0) {
      const i2 = Math.min(K, i1 + B0), B = i2 - i1;
      if (grouped && !staticGroups) {
        for (let p = Math.ceil(i1 / G) * G; p < i2; p += G) cudaGptq.findParams(scales, zeros, p / G, Wp, N, K, p, Math.min(K, p + G), bits, sym);
      }
      cudaGptq.quantBlock(Wp, N, K, i1, B, prep.U, scales, zeros, colGroup, permDev, bits, q, deq, err, rowLoss);
      if (i2 < K) cudaGptq.blockUpdate(Wp, N, K, err, B, prep.U, i1);
    }
    finishCodes(codes, q, scales, zeros);
    const rl = be.download(rowLoss).f32;
    let loss = 0;
    for (const v of new Float64Array(rl.buffer, rl.byteOffset, N)) loss += v;
    // 9. g_idx.
    for (let c = 0; c < K; c++) codes.gIdx[c] = grouped ? Math.floor(c / G) : 0;
    if (perm && !staticGroups && grouped) for (let p = 0; p < K; p++) codes.gIdx[perm[p]] = Math.floor(p / G);
    return { codes, dequantized: deq, loss, dampPercent: prep.dampPercent };
  } finally {
    be.release!(...tmp);
  }
}

/** rtnQuantize on the device: w is a cuda F32 [N, K] (not changed). */
export function rtnQuantizeCuda(w: Tensor<'F32'>, shape: readonly [number, number], opts: { bits: GptqRunOptions['bits']; groupSize: number; sym: boolean }, name = 'rtn'): { codes: GptqCodes; dequantized: Tensor<'F32'> } {
  const o = checkGptqOptions({ bits: opts.bits, groupSize: opts.groupSize, sym: opts.sym }, name);
  const [N, K] = shape;
  if (w.numel !== N * K) throw new GptqError(`${name}: weight has ${w.numel} elements, shape [${N}, ${K}] needs ${N * K}`);
  const G = o.groupSize === -1 ? K : o.groupSize;
  const codes = newCodes(o.bits, o.groupSize, N, K), nG = codes.scales.length / N;
  const be = cudaBackend;
  const scales = be.empty('F32', [nG, N]), zeros = be.empty('F32', [nG, N]), q = be.empty('U8', [N, K]);
  const colGroup = columnGroups(K, G, true, false, null);
  try {
    for (let g = 0, c0 = 0; c0 < K; g++, c0 += G) cudaGptq.findParams(scales, zeros, g, w, N, K, c0, Math.min(K, c0 + G), o.bits, o.sym);
    const deq = be.empty('F32', [N, K]);
    cudaGptq.rtn(q, deq, w, scales, zeros, colGroup, N, K, o.bits);
    finishCodes(codes, q, scales, zeros);
    for (let c = 0; c < K; c++) codes.gIdx[c] = Math.floor(c / G);
    return { codes, dequantized: deq };
  } finally {
    be.release!(scales, zeros, q, colGroup);
  }
}

/** outputError on the device: ‖X·Wᵀ − X·Ŵᵀ‖² / ‖X·Wᵀ‖² from H ∝ XᵀX (0 when ‖X·Wᵀ‖ is 0). */
export function outputErrorCuda(w: Tensor<'F32'>, wq: Tensor<'F32'>, H: Tensor<'F32'>, N: number, K: number): number {
  const den = cudaGptq.quadForm(w, null, H, N, K);
  return den > 0 ? cudaGptq.quadForm(w, wq, H, N, K) / den : 0;
}
