// The cuda backend (native/cuda) against `ref` on fresh random inputs, odd sizes included, and whole models against
// HF transformers' golden logits and the cpu backend. Runs where a GPU and the built CUDA addon are present (the GPU
// machine: scripts/cuda-check.sh); elsewhere every test skips and says why.
// Tolerances (../shared/GUIDE.md): float32 paths 1e-5 relative (norm-wise); a matmul of more than 8 rows runs
// cuBLAS on bf16/f16-rounded activations for bf16/f16 weights, as PyTorch does, so 1e-2 there.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fromPretrained } from '../src/api.js';
import type { Backend } from '../src/backend/backend.js';
import type { CausalLM } from '../src/models/model.js';
import { cudaAvailable, cudaAwq, cudaBackend as cuda, cudaTrain } from '../src/backend/cuda/index.js';
import * as trainOps from '../src/train/ops.js';
import { TrainEngine, type TrainBatch } from '../src/train/engine.js';
import { CudaTrainEngine } from '../src/train/device-engine.js';
import { PeftModel } from '../src/peft/lora.js';
import type { DecoderLM } from '../src/models/model.js';
import type { CudaDecodeGraph } from '../src/backend/cuda/graph.js';
import { generate } from '../src/generate/generate.js';
import type { ResolvedGeneration } from '../src/generate/config.js';
import { historyInputs, processLogits, softmax } from '../src/generate/logits.js';
import { sample, type Rng } from '../src/generate/sampling.js';
import { refBackend as ref } from '../src/backend/ref/index.js';
import { f32ToBf16, f32ToF16, type DType } from '../src/tensor/dtype.js';
import { DeviceTensorError, Tensor } from '../src/tensor/tensor.js';
import { argmax, goldenCases, maxRelErr, Rand, randomGptqCodes, relErr, ROOT } from './helpers.js';
import { join } from 'node:path';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Trainer } from '../src/train/trainer.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { matmulQRef } from '../src/backend/ref/quant.js';
import { packGptq, unpackGptq } from '../src/quant/gptq-format.js';
import { packAwq, unpackAwq } from '../src/quant/awq-format.js';
import type { GptqBits, GptqCodes } from '../src/quant/gptq-types.js';
import { qgDecodeRef, qgPack } from '../src/quant/qg.js';
import { fromAwq, fromBnb4, fromGptq, fromInt8, type QuantizedWeight } from '../src/quant/qweight.js';
import { quantizeInt8 } from '../src/quant/int8.js';
import { quantize4bit, type Bnb4QuantType } from '../src/quant/bnb4.js';
import { bf16ToF32 } from '../src/tensor/dtype.js';
import { checkGptqOptions, GptqCholeskyError, gptqQuantizePrepared, HessianAccumulator, outputError, prepareHessian, rtnQuantize, type GptqRunOptions, type PreparedHessian } from '../src/quant/gptq.js';
import { CudaHessian, cudaWeightF32, gptqQuantizeCuda, outputErrorCuda, prepareHessianCuda, rtnQuantizeCuda, type CudaPreparedHessian } from '../src/quant/gptq-cuda.js';
import { quantizeModelGptq } from '../src/quant/gptq-driver.js';
import { quantizeModelAwq } from '../src/quant/awq-driver.js';
import { AWQ_CLIP_STEPS, AWQ_GRID, hostAwqMath, refAwqKernels } from '../src/quant/awq.js';
import { cudaAwqMath } from '../src/quant/awq-cuda.js';
import { PyRandom } from '../src/util/pyrandom.js';
import { KJV, lowbit } from './helpers.js';
import { readFileSync } from 'node:fs';

const status = cudaAvailable();
const skip = status.ok ? false : `no GPU for the cuda backend: ${status.why}`;
const SEED = Number(process.env.LOWBIT_TEST_SEED ?? (Date.now() % 2 ** 31));
const rng = new Rand(SEED);
const randn = (n: number) => Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(rng.next() + 1e-12)) * Math.cos(2 * Math.PI * rng.next()));

function host(shape: number[], dtype: DType = 'F32'): Tensor {
  const v = randn(shape.reduce((a, b) => a * b, 1));
  if (dtype === 'F32') return new Tensor('F32', shape, v);
  return new Tensor(dtype, shape, Uint16Array.from(v, (x) => (dtype === 'BF16' ? f32ToBf16(x) : f32ToF16(x))));
}
const up = <D extends DType>(t: Tensor<D>) => cuda.upload(t);
const down = (t: Tensor) => cuda.download(t).f32;
/** Poisoned output on the device, so an element a kernel forgot to write shows. */
function poisoned(shape: number[]): Tensor<'F32'> {
  return up(new Tensor('F32', shape, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(NaN)));
}
function close(what: string, got: Float32Array, want: Float32Array, tol: number): void {
  const e = relErr(got, want), m = maxRelErr(got, want);
  assert.ok(e <= tol && m <= 10 * tol, `${what}: relative error ${e.toExponential(2)} (max ${m.toExponential(2)}) > ${tol} (seed ${SEED})`);
}

/** Eager steps and a CUDA-graph decoder from the same prompt: every replayed step equals the eager one (1e-6) and the
 *  caches end at the same length. Returns the decoder, for its replay count. */
function replaysMatchEager(model: CausalLM, prompt: number[], feed: number[], what: string): CudaDecodeGraph {
  const eager = model.createCache(1, prompt.length + feed.length), graphed = model.createCache(1, prompt.length + feed.length);
  model.forward([prompt], { cache: eager, logits: 'last' });
  model.forward([prompt], { cache: graphed, logits: 'last' });
  const decoder = cuda.decoder!(model, graphed) as CudaDecodeGraph;
  for (const id of feed) {
    const want = cuda.download(model.forward([[id]], { cache: eager, logits: 'last' })).f32;
    const got = cuda.download(decoder.step([id])).f32;
    assert.ok(relErr(got, want) < 1e-6, `${what}: replayed step off by ${relErr(got, want)}`);
  }
  assert.equal(graphed.length, eager.length);
  return decoder;
}

describe('cuda backend ops vs ref', { skip }, () => {
  it('memory: upload → download is exact; copy moves a range; a device tensor has no host data', () => {
    const t = host([3, 37]);
    const d = up(t);
    assert.deepEqual(down(d), t.f32);
    assert.throws(() => d.data, DeviceTensorError);
    assert.throws(() => d.f32, DeviceTensorError);
    const dst = up(new Tensor('F32', [100], new Float32Array(100)));
    cuda.copy(dst, 10, d, 5, 20);
    const want = new Float32Array(100);
    want.set(t.f32.subarray(5, 25), 10);
    assert.deepEqual(down(dst), want);
    assert.throws(() => cuda.copy(dst, 90, d, 0, 20), /run past an end/);
    assert.throws(() => cuda.matmul(t as Tensor<'F32'>, d, null, poisoned([3, 3])), /x \[3,37\] is a cpu tensor; upload it first/);
  });

  for (const wt of ['F32', 'BF16', 'F16'] as const)
    for (const [M, N, K] of [[1, 67, 172], [3, 5, 64], [8, 129, 200], [9, 33, 172], [33, 70, 96], [1, 1000, 4096]]) {
      it(`matmul ${wt} M=${M} N=${N} K=${K} (+bias)`, () => {
        const x = host([M, K]) as Tensor<'F32'>, w = host([N, K], wt), b = host([N]) as Tensor<'F32'>;
        const want = Tensor.zeros('F32', [M, N]);
        ref.matmul(x, w, b, want);
        const out = poisoned([M, N]);
        cuda.matmul(up(x), up(w), up(b), out);
        close('matmul', down(out), want.f32, M > 8 && wt !== 'F32' ? 1e-2 : 1e-5);
      });
    }

  it('matmulMany: q/k/v-like weights in one launch (one rounding of x past 8 rows) equal separate products', () => {
    for (const [M, K] of [[1, 256], [5, 172]]) {
      const x = host([M, K]) as Tensor<'F32'>;
      const ws = [host([64, K], 'BF16'), host([13, K], 'BF16'), host([13, K], 'BF16')];
      const bs = [host([64]) as Tensor<'F32'>, null, host([13]) as Tensor<'F32'>];
      const outs = ws.map((w) => poisoned([M, w.shape[0]]));
      assert.equal(cuda.matmulMany!(up(x), ws.map(up), bs.map((b) => (b ? up(b) : null)), outs), true);
      ws.forEach((w, i) => {
        const want = Tensor.zeros('F32', [M, w.shape[0]]);
        ref.matmul(x, w, bs[i], want);
        close(`matmulMany ${i}`, down(outs[i]), want.f32, 1e-5);
      });
    }
    // Past 8 rows: x rounded once and a cuBLAS GEMM each, the same products as separate matmuls.
    for (const [M, wt] of [[9, 'BF16'], [40, 'F16'], [17, 'F32']] as const) {
      const x = up(host([M, 172]) as Tensor<'F32'>);
      const ws = [host([64, 172], wt), host([13, 172], wt), host([13, 172], wt)].map(up);
      const bs = [up(host([64]) as Tensor<'F32'>), null, up(host([13]) as Tensor<'F32'>)];
      const outs = ws.map((w) => poisoned([M, w.shape[0]]));
      assert.equal(cuda.matmulMany!(x, ws, bs, outs), true);
      ws.forEach((w, i) => {
        const want = poisoned([M, w.shape[0]]);
        cuda.matmul(x, w, bs[i], want);
        close(`matmulMany ${wt} M=${M} ${i}`, down(outs[i]), down(want), 1e-6);
      });
    }
  });

  it('matmulSiluMul: gate/up with SiLU·mul in one launch = two products and siluMul (bf16 and GPTQ, with biases)', () => {
    const K = 256, N = 96;
    for (const M of [1, 5]) {
      const x = host([M, K]) as Tensor<'F32'>, wg = host([N, K], 'BF16'), wu = host([N, K], 'BF16');
      const bg = host([N]) as Tensor<'F32'>, bu = host([N]) as Tensor<'F32'>;
      const g = Tensor.zeros('F32', [M, N]), u = Tensor.zeros('F32', [M, N]);
      ref.matmul(x, wg, bg, g);
      ref.matmul(x, wu, bu, u);
      ref.siluMul(g, u, g);
      const out = poisoned([M, N]);
      assert.equal(cuda.matmulSiluMul!(up(x), up(wg), up(wu), up(bg), up(bu), out), true);
      close(`matmulSiluMul bf16 M=${M}`, down(out), g.f32, 1e-5);
    }
    const mk = () => fromGptq(packGptq(randomCodes(4, N, K, 64, false), { sym: false, descAct: false, checkpointFormat: 'gptq_v2' }));
    const qg = mk(), qu = mk();
    for (const M of [1, 12]) {
      const x = host([M, K]) as Tensor<'F32'>, dx = up(x);
      const a = poisoned([M, N]), b = poisoned([M, N]), out = poisoned([M, N]);
      cuda.matmulQ!(dx, qg, null, a);
      cuda.matmulQ!(dx, qu, null, b);
      cuda.siluMul(a, b, a);
      assert.equal(cuda.matmulSiluMul!(dx, qg, qu, null, null, out), true);
      close(`matmulSiluMul gptq M=${M}`, down(out), down(a), 1e-5);
    }
    // Past 8 rows (bf16): two cuBLAS GEMMs from x rounded once, then siluMul.
    for (const M of [9, 70]) {
      const x = up(host([M, K]) as Tensor<'F32'>), wg = up(host([N, K], 'BF16')), wu = up(host([N, K], 'BF16')), bg = up(host([N]) as Tensor<'F32'>);
      const a = poisoned([M, N]), b = poisoned([M, N]), out = poisoned([M, N]);
      cuda.matmul(x, wg, bg, a);
      cuda.matmul(x, wu, null, b);
      cuda.siluMul(a, b, a);
      assert.equal(cuda.matmulSiluMul!(x, wg, wu, bg, null, out), true);
      close(`matmulSiluMul bf16 M=${M}`, down(out), down(a), 1e-6);
    }
  });

  it('rmsnorm, layernorm, softmax over odd rows', () => {
    for (const D of [172, 1, 4099]) {
      const x = host([5, D]) as Tensor<'F32'>, w = host([D]) as Tensor<'F32'>, b = host([D]) as Tensor<'F32'>;
      const cases: [string, (be: Backend, o: Tensor<'F32'>, X: Tensor<'F32'>, W: Tensor<'F32'>, B: Tensor<'F32'>) => void][] = [
        ['rmsnorm', (be, o, X, W) => be.rmsnorm(X, W, 1e-6, o)],
        ['layernorm', (be, o, X, W, B) => be.layernorm(X, W, B, 1e-5, o)],
        ['softmax', (be, o, X) => be.softmax(X, o)],
      ];
      for (const [name, f] of cases) {
        const want = Tensor.zeros('F32', [5, D]);
        f(ref, want, x, w, b);
        const out = poisoned([5, D]);
        f(cuda, out, up(x), up(w), up(b));
        close(`${name} D=${D}`, down(out), want.f32, 1e-5);
      }
    }
  });

  it('addRmsnorm = add, then rmsnorm', () => {
    for (const D of [4096, 172]) {
      const x = host([3, D]) as Tensor<'F32'>, y = host([3, D]) as Tensor<'F32'>, w = host([D]) as Tensor<'F32'>;
      const wx = new Tensor('F32', x.shape, x.f32.slice()), want = Tensor.zeros('F32', [3, D]);
      ref.add(wx, y, wx);
      ref.rmsnorm(wx, w, 1e-5, want);
      const dx = up(x) as Tensor<'F32'>, out = poisoned([3, D]);
      cuda.addRmsnorm!(dx, up(y) as Tensor<'F32'>, up(w) as Tensor<'F32'>, 1e-5, out);
      close(`addRmsnorm x D=${D}`, down(dx), wx.f32, 1e-6);
      close(`addRmsnorm out D=${D}`, down(out), want.f32, 1e-5);
    }
  });

  it('siluMul, relu, add, embedding (every dtype)', () => {
    for (const n of [1001, 1024]) {  // siluMul: 4 values a thread when n is a multiple of 4
      const g = host([n]) as Tensor<'F32'>, u = host([n]) as Tensor<'F32'>;
      for (const [name, f] of [
        ['siluMul', (be: Backend, o: Tensor<'F32'>, a: Tensor<'F32'>, b: Tensor<'F32'>) => be.siluMul(a, b, o)],
        ['relu', (be: Backend, o: Tensor<'F32'>, a: Tensor<'F32'>) => be.relu(a, o)],
        ['add', (be: Backend, o: Tensor<'F32'>, a: Tensor<'F32'>, b: Tensor<'F32'>) => be.add(a, b, o)],
      ] as const) {
        const want = Tensor.zeros('F32', [n]);
        f(ref, want, g, u);
        const out = poisoned([n]);
        f(cuda, out, up(g), up(u));
        close(`${name} n=${n}`, down(out), want.f32, 1e-6);
      }
    }
    for (const dt of ['F32', 'BF16', 'F16'] as const) {
      const table = host([50, 33], dt), ids = Int32Array.from([3, 0, 49, 3, 17]);
      const want = Tensor.zeros('F32', [5, 33]);
      ref.embedding(table, ids, want);
      const out = poisoned([5, 33]);
      cuda.embedding(up(table), ids, out);
      assert.deepEqual(down(out), want.f32);
    }
  });

  it('rope at odd positions', () => {
    const rows = 7, nH = 3, hd = 34;
    const x = host([rows, nH, hd]) as Tensor<'F32'>;
    const pos = Int32Array.from({ length: rows }, (_, i) => i * 37 + 1), inv = Float32Array.from({ length: hd / 2 }, (_, i) => 10000 ** (-2 * i / hd));
    const want = new Tensor('F32', x.shape, x.f32.slice());
    ref.rope(want, pos, inv);
    const d = up(x);
    cuda.rope(d, pos, inv);
    close('rope', down(d), want.f32, 1e-5);
  });

  it('ropeAppend = rope(q), rope(k), then k and v into the cache at the length', () => {
    const B = 2, T = 3, nH = 4, nKV = 2, hd = 10, cap = 9, len = 5;
    const q = host([B * T, nH, hd]) as Tensor<'F32'>, k = host([B * T, nKV, hd]) as Tensor<'F32'>, v = host([B * T, nKV * hd]) as Tensor<'F32'>;
    const kc = host([B, cap, nKV, hd]) as Tensor<'F32'>, vc = host([B, cap, nKV, hd]) as Tensor<'F32'>;
    const pos = Int32Array.from({ length: B * T }, (_, i) => 100 + 7 * i), inv = Float32Array.from({ length: hd / 2 }, (_, i) => 10000 ** (-2 * i / hd));
    const [dq, dk, dv, dkc, dvc] = [q, k, v, kc, vc].map((t) => up(t) as Tensor<'F32'>);
    cuda.ropeAppend(dq, dk, dv, pos, inv, dkc, dvc, B, T, cap, len);
    const wq = new Tensor('F32', q.shape, q.f32.slice()), wk = new Tensor('F32', k.shape, k.f32.slice());
    ref.rope(wq, pos, inv);
    ref.rope(wk, pos, inv);
    const wkc = kc.f32.slice(), wvc = vc.f32.slice(), row = nKV * hd;
    for (let b = 0; b < B; b++) {
      wkc.set(wk.f32.subarray(b * T * row, (b + 1) * T * row), (b * cap + len) * row);
      wvc.set(v.f32.subarray(b * T * row, (b + 1) * T * row), (b * cap + len) * row);
    }
    close('ropeAppend q', down(dq), wq.f32, 1e-6);
    close('ropeAppend k', down(dk), wk.f32, 1e-6);
    close('ropeAppend kCache', down(dkc), wkc, 1e-6);
    assert.deepEqual(down(dvc), wvc);
  });

  for (const c of [
    { B: 1, T: 1, H: 8, nKV: 2, hd: 64, S: 300, past: 250, mask: false, window: 0 },
    // Decode splits the cache over blocks of 32 keys (flash-decoding), more past 8192 keys; splits past the length
    // and masked or windowed-out ones must drop out of the merge.
    { B: 2, T: 1, H: 8, nKV: 2, hd: 128, S: 300, past: 200, mask: true, window: 70 },
    { B: 3, T: 1, H: 4, nKV: 4, hd: 40, S: 100, past: 0, mask: false, window: 0 },
    { B: 1, T: 1, H: 4, nKV: 1, hd: 128, S: 9000, past: 8700, mask: false, window: 0 },
    { B: 2, T: 1, H: 2, nKV: 1, hd: 256, S: 70, past: 66, mask: true, window: 0 },
    { B: 1, T: 1, H: 4, nKV: 2, hd: 32, S: 50, past: 49, mask: false, window: 9 },
    { B: 2, T: 5, H: 4, nKV: 4, hd: 24, S: 20, past: 3, mask: true, window: 0 },
    { B: 2, T: 9, H: 6, nKV: 2, hd: 128, S: 40, past: 7, mask: true, window: 5 },
    { B: 1, T: 130, H: 2, nKV: 1, hd: 96, S: 130, past: 0, mask: false, window: 0 },
    // Prefill on the tensor cores (head_dim 32, 64, 80, 96, 128; 64 queries a block, 64-key tiles): several query
    // blocks, GQA, a past, padded rows' masks, windows across tile edges, a cache longer than the keys seen.
    { B: 2, T: 200, H: 8, nKV: 2, hd: 128, S: 250, past: 30, mask: true, window: 0 },
    { B: 1, T: 150, H: 4, nKV: 1, hd: 64, S: 150, past: 0, mask: false, window: 40 },
    { B: 3, T: 77, H: 2, nKV: 2, hd: 32, S: 95, past: 13, mask: true, window: 70 },
    { B: 1, T: 65, H: 3, nKV: 1, hd: 80, S: 65, past: 0, mask: false, window: 0 },
    // head_dim 256 stays on the CUDA-core kernel.
    { B: 1, T: 40, H: 2, nKV: 1, hd: 256, S: 41, past: 1, mask: false, window: 0 },
  ]) {
    it(`attention B=${c.B} T=${c.T} H=${c.H}/${c.nKV} hd=${c.hd} past=${c.past}${c.mask ? ' masked' : ''}${c.window ? ` window ${c.window}` : ''}`, () => {
      const q = host([c.B, c.T, c.H, c.hd]) as Tensor<'F32'>, k = host([c.B, c.S, c.nKV, c.hd]) as Tensor<'F32'>, v = host([c.B, c.S, c.nKV, c.hd]) as Tensor<'F32'>;
      const kvLen = c.past + c.T;
      let keyMask: Uint8Array | null = null;
      if (c.mask) {
        keyMask = Uint8Array.from({ length: c.B * kvLen }, () => (rng.chance(0.8) ? 1 : 0));
        keyMask.fill(0, 0, kvLen);  // row 0 has no visible key until its own tokens: zeros out
        for (let t = c.past; t < kvLen; t += 2) keyMask[t] = 1;
      }
      const args = { pastLen: c.past, keyMask, scale: 1 / Math.sqrt(c.hd), window: c.window };
      const want = Tensor.zeros('F32', q.shape);
      ref.attention(q, k, v, args, want);
      const out = poisoned([...q.shape]);
      cuda.attention(up(q), up(k), up(v), args, out);
      close('attention', down(out), want.f32, 1e-5);
    });
  }

  it('argmax per row, the first of equal maxima (across the kernel\'s 4096-wide chunks too), -1 for a non-finite row', () => {
    const x = host([3, 5000]) as Tensor<'F32'>;
    x.f32[5000 + 17] = 99; x.f32[5000 + 4000] = 99;
    assert.deepEqual([...cuda.argmax(up(x))], [0, 1, 2].map((r) => argmax(x.f32, r * 5000, 5000)));
    const V = 128256, y = host([5, V]) as Tensor<'F32'>;
    y.f32[5000] = 50; y.f32[100000] = 50;                       // row 0: equal maxima in different chunks
    y.f32[V + 4095] = 60; y.f32[V + 4096] = 60;                 // row 1: at a chunk edge
    y.f32[2 * V + 70000] = -Infinity;                           // row 2: an infinity → -1 (generate() names it)
    y.f32[3 * V + V - 1] = 70;                                  // row 3: the last element
    y.f32[4 * V + 3] = NaN;                                     // row 4: a NaN → -1
    assert.deepEqual([...cuda.argmax(up(y))], [5000, 4095, -1, V - 1, -1]);
    assert.deepEqual([...cuda.greedyIds!(up(y))], [5000, 4095, -1, V - 1, -1]);
  });
});

const randomCodes = (bits: GptqBits, N: number, K: number, groupSize: number, actOrder: boolean) => randomGptqCodes(rng, bits, N, K, groupSize, actOrder);

describe('cuda GPTQ / AWQ matmul (native/cuda/qg.cu) vs the decode twin and ref', { skip }, () => {
  const cases: [string, () => QuantizedWeight, GptqCodes][] = [];
  const add = (name: string, codes: GptqCodes, make: (c: GptqCodes) => QuantizedWeight) => cases.push([name, () => make(codes), codes]);
  add('gptq 4-bit g128 [72, 256]', randomCodes(4, 72, 256, 128, false), (c) => fromGptq(packGptq(c, { sym: false, descAct: false, checkpointFormat: 'gptq_v2' })));
  add('gptq 4-bit g32 act-order [40, 192] (group edges mid-chunk)', randomCodes(4, 40, 192, 32, true), (c) => fromGptq(packGptq(c, { sym: false, descAct: true, checkpointFormat: 'gptq_v2' })));
  add('gptq 4-bit g128 [40, 4160] (a warp of the 6-16-row MMA kernel: several batches of chunks)', randomCodes(4, 40, 4160, 128, false), (c) => fromGptq(packGptq(c, { sym: false, descAct: false, checkpointFormat: 'gptq_v2' })));
  add('gptq 4-bit g32 act-order [24, 2112] (MMA kernel, group edges mid-chunk)', randomCodes(4, 24, 2112, 32, true), (c) => fromGptq(packGptq(c, { sym: false, descAct: true, checkpointFormat: 'gptq_v2' })));
  add('gptq 4-bit one group, K=200 (padded to 256)', randomCodes(4, 24, 200, -1, false), (c) => fromGptq(packGptq(c, { sym: false, descAct: false, checkpointFormat: 'gptq_v2' })));
  add('gptq 2-bit g64 [48, 320]', randomCodes(2, 48, 320, 64, false), (c) => fromGptq(packGptq(c, { sym: false, descAct: false, checkpointFormat: 'gptq_v2' })));
  add('gptq 3-bit g128 act-order [64, 256]', randomCodes(3, 64, 256, 128, true), (c) => fromGptq(packGptq(c, { sym: false, descAct: true, checkpointFormat: 'gptq_v2' })));
  add('gptq 8-bit g32 [36, 192]', randomCodes(8, 36, 192, 32, false), (c) => fromGptq(packGptq(c, { sym: false, descAct: false, checkpointFormat: 'gptq_v2' })));
  add('awq gemm g64 [64, 256]', randomCodes(4, 64, 256, 64, false), (c) => fromAwq(packAwq(c, { layout: 'gemm' })));
  add('awq gemv g128 [40, 256]', randomCodes(4, 40, 256, 128, false), (c) => fromAwq(packAwq(c, { layout: 'gemv' })));
  for (const [name, make, codes] of cases) {
    it(name, () => {
      const qw = make();
      const [N, K] = qw.shape;
      const packed = qgPack(qw.format === 'gptq' ? unpackGptq(qw.gptq) : unpackAwq((qw as Extract<QuantizedWeight, { format: 'awq' }>).awq))!;
      assert.ok(packed, name);
      assert.equal(packed.N, codes.shape[0]);
      const b = host([N]) as Tensor<'F32'>;
      for (const M of [1, 3, 8, 11, 16, 20]) {
        const x = host([M, K]) as Tensor<'F32'>;
        const out = poisoned([M, N]);
        cuda.matmulQ!(up(x), qw, up(b), out);
        if (M <= 16) {
          // The decode twin (int8 activations per 64, int16 against 8-bit codes): only the float32 sums' order differs.
          close(`${name} M=${M} vs qgDecodeRef`, down(out), qgDecodeRef(x.f32, M, packed, b.f32)!, 1e-5);
        } else {
          // Prefill: the weight dequantized to float16 and cuBLAS on float16 activations (AutoGPTQ computes in float16).
          const want = Tensor.zeros('F32', [M, N]);
          matmulQRef(x, qw, b, want);
          close(`${name} M=${M} vs ref`, down(out), want.f32, 1e-2);
        }
      }
    });
  }

  it('matmulQMany: q/k/v-like layers in one launch equal separate products; layers of other groups run apart', () => {
    const K = 256, mk = (N: number, G: number) => fromGptq(packGptq(randomCodes(4, N, K, G, false), { sym: false, descAct: false, checkpointFormat: 'gptq_v2' }));
    const qws = [mk(64, 128), mk(32, 128), mk(32, 128)];
    const bs = [host([64]) as Tensor<'F32'>, null, host([32]) as Tensor<'F32'>];
    for (const M of [1, 5, 12]) {
      const x = host([M, K]) as Tensor<'F32'>, dx = up(x);
      const outs = qws.map((q) => poisoned([M, q.shape[0]]));
      assert.equal(cuda.matmulQMany!(dx, qws, bs.map((b) => (b ? up(b) : null)), outs), true);
      qws.forEach((q, i) => {
        const one = poisoned([M, q.shape[0]]);
        cuda.matmulQ!(dx, q, bs[i] ? up(bs[i]!) : null, one);
        close(`matmulQMany ${i}`, down(outs[i]), down(one), 1e-6);
      });
    }
    assert.equal(cuda.matmulQMany!(up(host([1, K]) as Tensor<'F32'>), [qws[0], mk(32, 64)], [null, null], [poisoned([1, 64]), poisoned([1, 32])]), false);
  });

  it('a row of x that is not finite gives NaN outputs for that row only; every quantized format has a kernel', () => {
    const qw = cases[0][1](), [N, K] = qw.shape;
    const packed = qgPack(unpackGptq((qw as Extract<QuantizedWeight, { format: 'gptq' }>).gptq))!;
    for (const M of [2, 12]) {  // the GEMV and the MMA kernel
      const x = host([M, K]) as Tensor<'F32'>;
      x.f32[K + 7] = NaN;
      const out = poisoned([M, N]);
      cuda.matmulQ!(up(x), qw, null, out);
      const y = down(out);
      close(`finite row M=${M}`, y.subarray(0, N), qgDecodeRef(x.f32.subarray(0, K), 1, packed, null)!, 1e-5);
      assert.ok(y.subarray(N, 2 * N).every(Number.isNaN), `M=${M}`);
      if (M > 2) close(`finite rows after M=${M}`, y.subarray(2 * N), qgDecodeRef(x.f32.subarray(2 * K), M - 2, packed, null)!, 1e-5);
    }
    assert.equal(cuda.supports('matmulQ', ['gptq', 'awq', 'nf4', 'fp4', 'int8']), true);
  });
});

describe('cuda NF4 / FP4 matmul (native/cuda/bnb4.cu) vs ref', { skip }, () => {
  // The decode GEMV multiplies value·absmax unrounded: equal to ref up to float order for a float32 weight, within
  // the weight's bf16 rounding (2^-9 a weight) for a bf16 one. Prefill dequantizes exactly, then the float matmul.
  for (const type of ['nf4', 'fp4'] as Bnb4QuantType[])
    for (const [dtype, doubleQuant, N, K, bs] of [['float32', false, 72, 256, 64], ['bfloat16', true, 40, 192, 64], ['float32', true, 24, 320, 128], ['float32', false, 9, 100, 64]] as const) {
      it(`${type} ${dtype}${doubleQuant ? ' + double quant' : ''} [${N}, ${K}] block ${bs}`, () => {
        const v = randn(N * K).map((a) => a * 0.05);
        const vals = dtype === 'bfloat16' ? Float32Array.from(v, (a) => bf16ToF32(f32ToBf16(a))) : v;
        const qw = fromBnb4(quantize4bit(vals, [N, K], { quantType: type, blocksize: bs, doubleQuant, dtype }), dtype);
        const b = host([N]) as Tensor<'F32'>;
        for (const M of [1, 3, 8, 12]) {
          const x = host([M, K]) as Tensor<'F32'>;
          const want = Tensor.zeros('F32', [M, N]);
          matmulQRef(x, qw, b, want);
          const out = poisoned([M, N]);
          cuda.matmulQ!(up(x), qw, up(b), out);
          const tol = M > 8 ? (dtype === 'float32' ? 1e-5 : 1e-2) : dtype === 'float32' ? 1e-5 : 5e-3;
          close(`${type} M=${M}`, down(out), want.f32, tol);
        }
      });
    }
});

describe('cuda LLM.int8 matmul (native/cuda/int8.cu) vs int8MatmulRef', { skip }, () => {
  // The int8 sums are exact and the rest float64 as in the reference: only the outliers' summation order differs.
  // Up to 16 rows: the prep kernel and the GEMV; 40 rows: cuBLAS's int8 GEMM and the epilogue (the GEMV for K = 102,
  // not a multiple of 4). Threshold 3 on K = 4096 makes hundreds of outlier columns, with small values in them too.
  for (const [N, K, threshold] of [[72, 256, 6], [40, 200, 6], [24, 102, 6], [33, 512, 0], [16, 4096, 3]] as const) {
    it(`[${N}, ${K}] threshold ${threshold}`, () => {
      const w = quantizeInt8(Float32Array.from(randn(N * K), (a) => a * 0.05), [N, K]);
      const qw = fromInt8(w, threshold);
      const b = host([N]) as Tensor<'F32'>;
      for (const M of [1, 3, 8, 13, 16, 40]) {
        const x = host([M, K]) as Tensor<'F32'>;
        for (let i = 0; i < 3; i++) x.f32[Math.floor(rng.next() * M * K)] = 9 * (rng.chance(0.5) ? 1 : -1);  // outlier columns
        const want = Tensor.zeros('F32', [M, N]);
        matmulQRef(x, qw, b, want);
        const out = poisoned([M, N]);
        cuda.matmulQ!(up(x), qw, up(b), out);
        close(`int8 M=${M}`, down(out), want.f32, 1e-6);
      }
    });
  }
  it('a row holding a NaN gives NaN outputs, the other rows are unchanged (decode and prefill paths)', () => {
    const [N, K] = [24, 256];
    const qw = fromInt8(quantizeInt8(Float32Array.from(randn(N * K), (a) => a * 0.05), [N, K]), 6);
    for (const M of [2, 20]) {
      const x = host([M, K]) as Tensor<'F32'>;
      x.f32[K + 7] = NaN;
      const want = Tensor.zeros('F32', [M, N]);
      matmulQRef(x, qw, null, want);
      const out = poisoned([M, N]);
      cuda.matmulQ!(up(x), qw, null, out);
      const y = down(out);
      assert.ok(y.subarray(N, 2 * N).every(Number.isNaN) && want.f32.subarray(N, 2 * N).every(Number.isNaN), `M=${M}`);
      close(`M=${M} row 0`, y.subarray(0, N), want.f32.subarray(0, N), 1e-6);
      close(`M=${M} rows 2..`, y.subarray(2 * N), want.f32.subarray(2 * N), 1e-6);
    }
  });
  it('hf_llama_int8 (a bitsandbytes LLM.int8 checkpoint): the cpu backend\'s logits, graph replays = eager', async () => {
    // A float16 model: up to 8 rows every product is exact float32 (the int8 ones the twin's), so it matches the cpu
    // backend; at 24 rows (the int8 GEMM path) its float16 linears run on cuBLAS with x rounded to float16.
    const dir = join(ROOT, 'test', 'fixtures', 'bnb', 'hf_llama_int8');
    const { model } = await fromPretrained(dir, { device: 'cuda' });
    const { model: cpu } = await fromPretrained(dir, { backend: 'cpu' });
    const ids = [[1, 5, 9, 33, 2, 60, 63, 4], [3, 3, 60, 61, 62, 10, 11, 12], [7, 8, 9, 10, 11, 12, 13, 14]];
    close('8 rows vs cpu', cuda.download(model.forward(ids.slice(0, 1))).f32, cpu.forward(ids.slice(0, 1)).f32, 1e-5);
    close('24 rows vs cpu', cuda.download(model.forward(ids)).f32, cpu.forward(ids).f32, 2e-3);
    const eager = model.createCache(1, 12), graphed = model.createCache(1, 12);
    model.forward([ids[0]], { cache: eager, logits: 'last' });
    model.forward([ids[0]], { cache: graphed, logits: 'last' });
    const decoder = cuda.decoder!(model, graphed) as CudaDecodeGraph;
    for (const id of [3, 1, 4]) {
      const want = cuda.download(model.forward([[id]], { cache: eager, logits: 'last' })).f32;
      assert.ok(relErr(cuda.download(decoder.step([id])).f32, want) < 1e-6);
    }
    assert.equal(decoder.replays, 2, decoder.unsupported ?? '');
  });
});

describe('cuda backend: GPTQ and AWQ checkpoints (AutoGPTQ, GPTQModel, optimum, transformers, AutoAWQ fixtures)', { skip }, () => {
  it('hf_llama_nf4dq (a bitsandbytes NF4 + double-quant checkpoint): 8 rows within bf16 rounding of the cpu backend, graph replays = eager', async () => {
    const dir = join(ROOT, 'test', 'fixtures', 'bnb', 'hf_llama_nf4dq');
    const { model } = await fromPretrained(dir, { device: 'cuda' });
    const { model: cpu } = await fromPretrained(dir, { backend: 'cpu' });
    const one = [[1, 5, 9, 33, 2, 60, 63, 4]];
    close('8-token forward vs cpu', cuda.download(model.forward(one)).f32, cpu.forward(one).f32, 1e-2);
    const decoder = replaysMatchEager(model, one[0], [3, 1, 4], 'hf_llama_nf4dq');
    assert.equal(decoder.replays, 2, decoder.unsupported ?? '');
  });
  const folders = ['autogptq_2bit_g64_asym_v1', 'autogptq_4bit_g32_actorder', 'gptqmodel_4bit_g32_asym_v2', 'optimum_3bit_g32_bias', 'transformers_8bit_gm1']
    .map((f) => join(ROOT, 'test', 'fixtures', 'gptq', f)).concat(['autoawq_gemm_g64_bias', 'autoawq_gemv_g32'].map((f) => join(ROOT, 'test', 'fixtures', 'awq', f)));
  const IDS = [[1, 5, 9, 33, 2, 60, 63, 4], [3, 3, 60, 61, 62, 10, 11, 12], [7, 8, 9, 10, 11, 12, 13, 14]];
  for (const dir of folders) {
    it(`${dir.split('/').slice(-1)[0]}: 8 rows match the cpu backend (the same decode twin), 24 within float16 of it, graph replays = eager`, async () => {
      const { model } = await fromPretrained(dir, { device: 'cuda' });
      const { model: cpu } = await fromPretrained(dir, { backend: 'cpu' });
      const one = [IDS[0]];  // 8 rows of x: the decode kernels
      close('8-token forward vs cpu', cuda.download(model.forward(one)).f32, cpu.forward(one).f32, 1e-4);
      // 3×8 rows: the prefill path (float16 weights and activations, cuBLAS) against the cpu's exact product. Measured:
      // within 1e-2 but for the 2-bit fixture (2.7e-2: a 2-bit model's float16 rounding grows through its layers).
      close('3×8 forward (prefill) vs cpu', cuda.download(model.forward(IDS)).f32, cpu.forward(IDS).f32, /2bit/.test(dir) ? 5e-2 : 1e-2);
      const feed = [3, 1, 4, 1, 5];
      const decoder = replaysMatchEager(model, IDS[1], feed, dir);
      assert.equal(decoder.replays, feed.length - 1, decoder.unsupported ?? '');
    });
  }
});

describe('cuda backend: whole models', { skip }, () => {
  for (const g of goldenCases()) {
    it(`${g.name}: logits match transformers and the cpu backend; a cached decode matches the full forward`, async () => {
      const { model } = await fromPretrained(g.dir, { device: 'cuda' });
      const ids = g.ints('input_ids').rows;
      const got = cuda.download(model.forward(ids)).f32;
      const want = g.floats('logits').data;
      assert.ok(relErr(got, want) < 1e-4, `${g.name}: logits off by ${relErr(got, want)}`);
      const { model: cpu } = await fromPretrained(g.dir, { backend: 'cpu' });
      assert.ok(relErr(got, cpu.forward(ids).f32) < 1e-4);
      // Incremental: prefill all but the last token, then one step (not for dynamic RoPE: its frequencies follow the
      // length seen, so transformers' own cached decode differs from its full forward; test/models.test.ts says so).
      if (/dynamic/.test(g.name)) return;
      const row = ids[0], cache = model.createCache(1, row.length);
      model.forward([row.slice(0, -1)], { cache, logits: 'last' });
      const step = cuda.download(model.forward([row.slice(-1)], { cache, logits: 'last' })).f32;
      const V = step.length;
      assert.ok(relErr(step, got.subarray((row.length - 1) * V, row.length * V)) < 1e-4);
    });

    it(`${g.name}: decode steps replayed from a CUDA graph equal eager steps`, async () => {
      const { model } = await fromPretrained(g.dir, { device: 'cuda' });
      const feed = [3, 1, 4, 1, 5, 9, 2, 6];
      const decoder = replaysMatchEager(model, g.ints('input_ids').rows[0], feed, g.name);
      // Llama, Mistral and Qwen2 replay (the first step runs eager, the second is captured); OPT's learned positions
      // are a per-step host array, so its steps stay eager.
      if (g.name.startsWith('opt')) assert.match(decoder.unsupported ?? '', /not a step input|neither a step input/);
      else if (/dynamic/.test(g.name)) assert.match(decoder.unsupported ?? '', /dynamic RoPE/);
      else assert.equal(decoder.replays, feed.length - 1, decoder.unsupported ?? '');
    });
  }

  it('generate() on cuda gives the cpu backend\'s greedy tokens', async () => {
    const g = goldenCases().find((c) => c.name === 'llama_gqa')!;
    const { model } = await fromPretrained(g.dir, { device: 'cuda' });
    const { model: cpu } = await fromPretrained(g.dir, { backend: 'cpu' });
    const prompt = g.ints('input_ids').rows[0];
    const run = async (m: typeof model) => (await generate(m, [prompt], { maxNewTokens: 12, doSample: false })).tokens[0];
    assert.deepEqual(await run(model), await run(cpu));
  });

  it('generate() on cuda samples the cpu backend\'s tokens (same seed; penalty, n-gram bans, top-k/top-p on the device)', async () => {
    const g = goldenCases().find((c) => c.name === 'llama_gqa')!;
    const { model } = await fromPretrained(g.dir, { device: 'cuda' });
    const { model: cpu } = await fromPretrained(g.dir, { backend: 'cpu' });
    const prompts = g.ints('input_ids').rows.slice(0, 2);
    const opts = { maxNewTokens: 16, temperature: 0.9, topK: 20, topP: 0.9, repetitionPenalty: 1.2, noRepeatNgramSize: 3, minNewTokens: 4, seed: 7 };
    const got = await generate(model, prompts, opts), want = await generate(cpu, prompts, opts);
    assert.deepEqual(got.tokens, want.tokens);
  });
});

describe('cuda token choice (native/cuda/sample.cu) vs processLogits + sample', { skip }, () => {
  // The device takes the host's draws u and the history-only inputs (historyInputs) and must pick the host's token. A
  // u within 1e-9 of a cumulative boundary is redrawn: there the order of float64 sums may pick the neighbour.
  const base: ResolvedGeneration = { maxNewTokens: 8, minNewTokens: 0, doSample: true, temperature: 1, topK: 0, topP: 1, minP: null,
    repetitionPenalty: 1, noRepeatNgramSize: 0, eos: [2], padTokenId: 0, stopStrings: [], seed: 0 };
  // [name, V, settings, scores on a 0.5 grid (many ties)]
  const cases: [string, number, Partial<ResolvedGeneration>, boolean][] = [
    ['greedy + repetition penalty + n-gram bans + min_new_tokens', 32000, { doSample: false, repetitionPenalty: 1.3, noRepeatNgramSize: 2, minNewTokens: 5 }, false],
    ['plain sampling', 1003, {}, false],
    ['temperature 0.7, top-k 50, top-p 0.9', 50257, { temperature: 0.7, topK: 50, topP: 0.9 }, false],
    ['top-p 0.5, min-p 0.05, penalty 1.2', 32000, { topP: 0.5, minP: 0.05, repetitionPenalty: 1.2 }, false],
    ['ties: top-k 7, top-p 0.8', 4099, { topK: 7, topP: 0.8 }, true],
    ['ties: top-p 0.95 alone', 777, { topP: 0.95 }, true],
    ['top-k 1 (greedy by sampling)', 32000, { topK: 1, temperature: 1.5 }, false],
  ];
  for (const [name, V, over, ties] of cases) {
    it(`${name} (V = ${V})`, () => {
      const g: ResolvedGeneration = { ...base, ...over };
      const rows = 5;
      for (let trial = 0; trial < 6; trial++) {
        const x = Float32Array.from(randn(rows * V), (a) => (ties ? Math.round(a * 3) / 2 : a * 3));
        const histories = Array.from({ length: rows }, (_, r) => Array.from({ length: 12 + r }, () => (rng.chance(0.5) ? rng.int(40) : rng.int(V))));
        const generated = histories.map((_, r) => r + trial);
        const u = new Float64Array(rows), want: number[] = [];
        for (let r = 0; r < rows; r++) {
          const scores = x.slice(r * V, (r + 1) * V);
          processLogits(scores, histories[r], generated[r], g);
          if (!g.doSample) { want.push(argmax(scores)); continue; }
          const probs = softmax(scores);
          for (;;) {
            u[r] = rng.next();
            let cum = 0, near = false;
            for (let i = 0; i < V && cum <= u[r] + 1e-9; i++) { cum += probs[i]; if (Math.abs(cum - u[r]) < 1e-9) near = true; }
            if (!near) break;
          }
          want.push(sample(scores, { next: () => u[r] } as Rng));
        }
        const inputs = histories.map((h, r) => historyInputs(h, generated[r], g, V));
        const got = cuda.sampleIds!(up(new Tensor('F32', [rows, V], x)) as Tensor<'F32'>, { penalized: inputs.map((i) => i.penalized),
          banned: inputs.map((i) => i.banned), u, repetitionPenalty: g.repetitionPenalty, doSample: g.doSample, temperature: g.temperature,
          topK: g.topK, topP: g.topP, minP: g.minP ?? 0 });
        assert.deepEqual(Array.from(got), want, `trial ${trial}`);
      }
    });
  }
  it('a row holding a NaN or an infinity gives -1, the others their tokens', () => {
    const V = 1000, x = randn(3 * V);
    x[V + 17] = NaN;
    x[2 * V + 3] = Infinity;
    const got = cuda.sampleIds!(up(new Tensor('F32', [3, V], x)) as Tensor<'F32'>, { penalized: [[], [], []], banned: [[], [], []],
      u: new Float64Array(3), repetitionPenalty: 1, doSample: false, temperature: 1, topK: 0, topP: 1, minP: 0 });
    assert.deepEqual(Array.from(got), [argmax(x.subarray(0, V)), -1, -1]);
  });
});

describe('cuda training ops (native/cuda/train.cu) vs src/train/ops.ts', { skip }, () => {
  const h32 = (n: number, s = 1) => Float32Array.from(randn(n), (a) => a * s);
  const t = (shape: number[], a: Float32Array) => up(new Tensor('F32', shape, a)) as Tensor<'F32'>;
  it('rmsnorm forward (y, rstd) and backward (dx, dw accumulated)', () => {
    const [rows, D] = [7, 300], x = h32(rows * D), w = h32(D), dy = h32(rows * D), dw0 = h32(D);
    const f = trainOps.rmsnormForward(x, w, 1e-5, rows, D), b = trainOps.rmsnormBackward(dy, w, f.act, rows, D);
    const g = cudaTrain.rmsnormForward(t([rows, D], x), t([D], w), 1e-5), dw = t([D], dw0.slice());
    close('y', down(g.y), f.y as Float32Array, 1e-5);
    close('rstd', down(g.rstd), f.act.rstd as Float32Array, 1e-5);
    close('dx', down(cudaTrain.rmsnormBackward(t([rows, D], dy), t([D], w), t([rows, D], x), g.rstd, dw)), b.dx as Float32Array, 1e-5);
    close('dw', down(dw), Float32Array.from(dw0, (a, i) => a + b.dw[i]), 1e-5);
  });
  it('layernorm forward (y, x̂, rstd) and backward (dx, dw, db accumulated)', () => {
    const [rows, D] = [5, 257], x = h32(rows * D), w = h32(D), bb = h32(D), dy = h32(rows * D);
    const f = trainOps.layernormForward(x, w, bb, 1e-5, rows, D), b = trainOps.layernormBackward(dy, w, f.act, rows, D);
    const g = cudaTrain.layernormForward(t([rows, D], x), t([D], w), t([D], bb), 1e-5);
    close('y', down(g.y), f.y as Float32Array, 1e-5);
    close('xhat', down(g.xhat), f.act.xhat as Float32Array, 1e-5);
    const dw = t([D], new Float32Array(D)), db = t([D], new Float32Array(D));
    close('dx', down(cudaTrain.layernormBackward(t([rows, D], dy), t([D], w), g.xhat, g.rstd, dw, db)), b.dx as Float32Array, 1e-5);
    close('dw', down(dw), b.dw as Float32Array, 1e-5);
    close('db', down(db), b.db as Float32Array, 1e-5);
  });
  it('silu·mul and relu backward', () => {
    const n = 1000, g = h32(n, 3), u = h32(n), dy = h32(n);
    const want = trainOps.siluMulBackward(dy, g, u), got = cudaTrain.siluMulBackward(t([n], dy), t([n], g), t([n], u));
    close('dg', down(got.dg), want.dg as Float32Array, 1e-5);
    close('du', down(got.du), want.du as Float32Array, 1e-5);
    close('relu dx', down(cudaTrain.reluBackward(t([n], dy), t([n], g))), trainOps.reluBackward(dy, g) as Float32Array, 0);
  });
  it('causal-LM loss and dlogits (the shift, −100 labels, a given divisor)', () => {
    const [B, T, V] = [2, 6, 1001], logits = h32(B * T * V, 3);
    const labels = Int32Array.from({ length: B * T }, (_, i) => (i % 4 === 2 ? trainOps.IGNORE_INDEX : rng.int(V)));
    for (const divisor of [undefined, 17]) {
      const want = trainOps.causalLmLoss(logits, labels, B, T, V, divisor), got = cudaTrain.causalLmLoss(t([B * T, V], logits), labels, B, T, V, divisor);
      assert.equal(got.count, want.count);
      assert.ok(Math.abs(got.loss - want.loss) < 1e-5 * Math.abs(want.loss), `loss ${got.loss} vs ${want.loss}`);
      close('dlogits', down(got.dlogits), want.dlogits as Float32Array, 1e-5);
    }
  });
  for (const [name, sh] of [
    ['GQA, key padding, window 5', { B: 2, T: 13, H: 4, nKV: 2, hd: 32, scale: 1 / Math.sqrt(32), keyMask: Uint8Array.from({ length: 26 }, (_, i) => (i === 0 || i === 14 || i === 15 ? 0 : 1)), window: 5 }],
    ['MHA, hd 64, no mask', { B: 1, T: 40, H: 3, nKV: 3, hd: 64, scale: 0.125, keyMask: null, window: 0 }],
  ] as [string, trainOps.AttentionShape][]) {
    it(`attention forward (o, P) and backward (dq, dk, dv): ${name}`, () => {
      const { B, T, H, nKV, hd } = sh, q = h32(B * T * H * hd), k = h32(B * T * nKV * hd), v = h32(B * T * nKV * hd), dO = h32(B * T * H * hd);
      const f = trainOps.attentionForward(q, k, v, sh), b = trainOps.attentionBackward(dO, f.act, sh);
      const qd = t([B, T, H, hd], q), kd = t([B, T, nKV, hd], k), vd = t([B, T, nKV, hd], v);
      const g = cudaTrain.attentionForward(qd, kd, vd, sh);
      close('o', down(g.o), f.o as Float32Array, 1e-5);
      close('P', down(g.P), f.act.p as Float32Array, 1e-5);
      const gb = cudaTrain.attentionBackward(t([B, T, H, hd], dO), qd, kd, vd, g.P, sh);
      close('dq', down(gb.dq), b.dq as Float32Array, 1e-5);
      close('dk', down(gb.dk), b.dk as Float32Array, 1e-5);
      close('dv', down(gb.dv), b.dv as Float32Array, 1e-5);
    });
  }
  it('gemm: the four transposes, accumulate, a bf16 B', () => {
    const [M, N, K] = [9, 33, 70];
    const A = h32(M * K), Bm = h32(K * N), C0 = h32(M * N);
    const at = Float32Array.from({ length: K * M }, (_, i) => A[(i % M) * K + Math.floor(i / M)]);   // [K, M]
    const bt = Float32Array.from({ length: N * K }, (_, i) => Bm[(i % K) * N + Math.floor(i / K)]);  // [N, K]
    const want = new Float32Array(M * N);
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) { let s = 0; for (let k = 0; k < K; k++) s += A[m * K + k] * Bm[k * N + n]; want[m * N + n] = s; }
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
      const got = cudaTrain.gemm(t([ta ? K : M, ta ? M : K], ta ? at : A), t([tb ? N : K, tb ? K : N], tb ? bt : Bm), M, N, K, ta, tb);
      close(`ta ${ta} tb ${tb}`, down(got), want, 1e-5);
    }
    const C = t([M, N], C0.slice());
    cudaTrain.gemm(t([M, K], A), t([K, N], Bm), M, N, K, false, false, C, true);
    close('accumulate', down(C), Float32Array.from(want, (a, i) => a + C0[i]), 1e-5);
    const b16 = up(new Tensor('BF16', [N, K], Uint16Array.from(bt, f32ToBf16)));
    close('bf16 B', down(cudaTrain.gemm(t([M, K], A), b16, M, N, K, false, true)), want, 1e-2);
  });
});

describe('cuda training step (src/train/device-engine.ts) vs TrainEngine on the cpu backend', { skip }, () => {
  // LoRA on every linear, a padded batch: the loss and every adapter gradient as the cpu backend's engine gives them.
  const batchFor = (V: number): TrainBatch => {
    const B = 2, T = 8, ids = new Int32Array(B * T), labels = new Int32Array(B * T), mask = new Uint8Array(B * T);
    let s = 7;
    for (let i = 0; i < B * T; i++) { s = (s * 48271) % 2147483647; ids[i] = s % V; }
    for (let i = 0; i < B * T; i++) {
      const pad = i >= T && i % T >= 5;
      mask[i] = pad ? 0 : 1;
      labels[i] = pad ? -100 : ids[i];
      if (pad) ids[i] = 0;
    }
    return { ids, labels, B, T, mask };
  };
  const wrap = (model: CausalLM) => {
    const peft = PeftModel.wrap(model, { r: 2, loraAlpha: 4, targetModules: 'all-linear' }, { seed: 3 });
    let s = 11;
    for (const l of peft.loras.values()) for (const a of l.adapters.values()) for (let i = 0; i < a.B.length; i++) { s = (s * 48271) % 2147483647; a.B[i] = (s / 2147483647 - 0.5) * 0.2; }
    return peft;
  };
  const compare = async (dir: string, tol: number, what: string) => {
    const { model } = await fromPretrained(dir, { device: 'cuda' });
    const { model: cpu } = await fromPretrained(dir, { backend: 'cpu' });
    wrap(model);
    wrap(cpu);
    const b = batchFor(model.config.vocab_size);
    const dev = new CudaTrainEngine(model as DecoderLM, { training: false }), host = new TrainEngine(cpu as DecoderLM, { training: false });
    dev.zeroGrad();
    host.zeroGrad();
    const got = dev.forwardBackward(b), want = host.forwardBackward(b);
    dev.downloadGrads();
    assert.equal(got.count, want.count);
    assert.ok(Math.abs(got.loss - want.loss) <= tol * Math.abs(want.loss), `${what}: loss ${got.loss} vs ${want.loss}`);
    const hostGrads = [...host.grads.values()];
    [...dev.grads.values()].forEach((g, i) => {
      close(`${what} dA ${i}`, g.dA, hostGrads[i].dA, tol);
      close(`${what} dB ${i}`, g.dB, hostGrads[i].dB, tol);
    });
    // Gradient checkpointing recomputes each layer's forward: the same numbers.
    const ck = new CudaTrainEngine(model as DecoderLM, { training: false, gradientCheckpointing: true });
    ck.zeroGrad();
    assert.equal(ck.forwardBackward(b).loss, got.loss);
    ck.downloadGrads();
    [...ck.grads.values()].forEach((g, i) => close(`${what} checkpointed dA ${i}`, g.dA, [...dev.grads.values()][i].dA, 1e-6));
  };
  for (const fam of ['llama_gqa', 'qwen2', 'mistral_sliding', 'opt_125m_like', 'opt_350m_like']) {
    it(`${fam}: loss and adapter gradients = the cpu engine's; checkpointing equal`, async () => {
      await compare(goldenCases().find((c) => c.name === fam)!.dir, 1e-4, fam);
    });
  }
  it('QLoRA on hf_llama_nf4dq (a bitsandbytes NF4 + double-quant base): within bf16 rounding of the cpu engine', async () => {
    await compare(join(ROOT, 'test', 'fixtures', 'bnb', 'hf_llama_nf4dq'), 2e-2, 'nf4');
  });
  it('dropout on the device keeps its probability and scale; trained base tensors are refused with the cpu named', async () => {
    const x = up(new Tensor('F32', [100000], new Float32Array(100000).fill(2))) as Tensor<'F32'>;
    const { xd, drop } = cudaTrain.dropout(x, 0.25, 9);
    const d = down(drop), y = down(xd);
    const kept = d.filter((v) => v !== 0).length;
    assert.ok(Math.abs(kept / d.length - 0.75) < 0.01, `kept ${kept}`);
    assert.ok(d.every((v, i) => (v === 0 || Math.abs(v - 1 / 0.75) < 1e-6) && y[i] === 2 * v));
    const { model } = await fromPretrained(goldenCases().find((c) => c.name === 'qwen2')!.dir, { device: 'cuda' });
    const trainable = new Map([[new Float32Array(4), new Float32Array(4)]]);
    assert.throws(() => new CudaTrainEngine(model as DecoderLM, { trainable }), /cpu backend/);
  });
  it('a LoRA model\'s inference forward on cuda = on cpu (adapters uploaded, again after markChanged)', async () => {
    const g = goldenCases().find((c) => c.name === 'llama_gqa')!;
    const { model } = await fromPretrained(g.dir, { device: 'cuda' });
    const { model: cpu } = await fromPretrained(g.dir, { backend: 'cpu' });
    const [pd, pc] = [wrap(model), wrap(cpu)];
    const ids = [[1, 5, 9, 33, 2, 60, 63, 4]];
    close('lora forward', cuda.download(model.forward(ids)).f32, cpu.forward(ids).f32, 1e-5);
    for (const p of [pd, pc]) for (const l of p.loras.values()) { l.adapters.get('default')!.B.fill(0.01); l.markChanged(); }
    close('after markChanged', cuda.download(model.forward(ids)).f32, cpu.forward(ids).f32, 1e-5);
  });
});

describe('Trainer on cuda (the CudaTrainEngine it picks for a cuda model)', { skip }, () => {
  it('llama_gqa, LoRA without dropout: the cpu Trainer\'s loss curve; the adapter it writes loads back', async () => {
    const dir = goldenCases().find((c) => c.name === 'llama_gqa')!.dir;
    const out = mkdtempSync(join(tmpdir(), 'lowbit-cuda-trainer-'));
    const run = async (device: 'cuda' | 'cpu') => {
      const { model } = await fromPretrained(dir, device === 'cuda' ? { device: 'cuda' } : { backend: 'cpu' });
      const V = model.config.vocab_size;
      const peft = PeftModel.wrap(model, { r: 4, loraAlpha: 16, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'down_proj'], loraDropout: 0 }, { seed: 1 });
      const trainDataset = Array.from({ length: 8 }, (_, i) => { const ids = Array.from({ length: 12 }, (_, t) => (3 * t + i) % V); return { ids, labels: ids.slice() }; });
      const t = new Trainer({ peft, trainDataset, padId: 0, args: { outputDir: join(out, device), perDeviceTrainBatchSize: 2, maxSteps: 6, learningRate: 1e-2, loggingSteps: 1, saveSteps: 0, seed: 7 } });
      assert.equal(t.engine instanceof CudaTrainEngine, device === 'cuda');
      return t.train().logHistory.map((h) => h.loss);
    };
    const got = await run('cuda'), want = await run('cpu');
    assert.ok(got[5] < got[0], `loss ${got[0]} → ${got[5]}`);
    got.forEach((l, i) => assert.ok(Math.abs(l - want[i]) <= 1e-3 * Math.abs(want[i]), `step ${i + 1}: ${l} vs ${want[i]}`));
    // The adapter trained on the device (AdamW there, synced at the end) is the cpu's.
    const [fc, fh] = ['cuda', 'cpu'].map((d) => readSafetensors(join(out, d, 'adapter_model.safetensors')));
    for (const name of fh.names()) close(name, fc.get(name).toF32(), fh.get(name).toF32(), 1e-3);
    rmSync(out, { recursive: true, force: true });
  });
});

describe('cuda backend: quantizing on load (bitsandbytes NF4 and LLM.int8, on the host, then the codes go up)', { skip }, () => {
  for (const [what, quantizationConfig, tol] of [
    ['nf4 + double quant', { loadIn4bit: true, bnb4bitQuantType: 'nf4', bnb4bitUseDoubleQuant: true }, 2e-3],  // the cpu's decode takes int16 activations
    ['int8', { loadIn8bit: true }, 1e-5],
  ] as const) {
    it(`${what}: 8 rows = the cpu backend's model quantized the same way`, async () => {
      const dir = goldenCases().find((c) => c.name === 'llama_gqa')!.dir;
      const { model } = await fromPretrained(dir, { device: 'cuda', quantizationConfig });
      const { model: cpu } = await fromPretrained(dir, { backend: 'cpu', quantizationConfig });
      const ids = [[1, 5, 9, 33, 2, 60, 63, 4]];
      close(what, cuda.download(model.forward(ids)).f32, cpu.forward(ids).f32, tol);
    });
  }
});

describe('cuda GPTQ calibration (native/cuda/gptq.cu, src/quant/gptq-cuda.ts) vs the host path', { skip }, () => {
  const opts = (o: Partial<GptqRunOptions>) => checkGptqOptions({ ...o, linalg: 'ref' });
  /** x [T, K] with one dead column and one column much larger than the rest (act-order moves it first). */
  const activations = (T: number, K: number) => {
    const x = randn(T * K);
    for (let t = 0; t < T; t++) { x[t * K + 5] = 0; x[t * K + 7] *= 8; }
    return x;
  };
  const hessians = (K: number, chunks: Float32Array[], T: number) => {
    const h = new HessianAccumulator(K, 'ref'), d = new CudaHessian(K);
    for (const c of chunks) { h.add(c, T); d.add(up(new Tensor('F32', [T, K], c)) as Tensor<'F32'>, T); }
    return { h, d };
  };
  /** The host's factorization on the device, so both column loops see the very same U. */
  const uploaded = (p: PreparedHessian): CudaPreparedHessian => {
    const U = up(new Tensor('F32', [p.K, p.K], p.U)) as Tensor<'F32'>;
    return { K: p.K, dead: p.dead, perm: p.perm, U, dampPercent: p.dampPercent, release: () => cuda.release!(U) };
  };
  const sameCodes = (what: string, got: GptqCodes, want: GptqCodes) => {
    assert.deepEqual(got.intWeight, want.intWeight, `${what}: codes`);
    assert.deepEqual(got.scales, want.scales, `${what}: scales`);
    assert.deepEqual(got.zeros, want.zeros, `${what}: zeros`);
    assert.deepEqual(got.gIdx, want.gIdx, `${what}: g_idx`);
  };

  it('the Hessian (cuBLAS float32) and its factorization (float64) = the ref twins; dead columns and act-order as there', () => {
    const K = 70, T = 90;
    const { h, d } = hessians(K, [activations(T, K), activations(T, K), activations(T, K)], T);
    close('H', down(d.H), h.H, 1e-5);
    for (const descAct of [false, true]) {
      const o = opts({ descAct });
      const want = prepareHessian(h.H, K, o), got = prepareHessianCuda(d.H, K, o);
      assert.deepEqual(got.dead, want.dead);
      assert.equal(got.dead[5], 1);
      assert.deepEqual(got.perm, want.perm);
      if (descAct) assert.equal(got.perm![0], 7);
      close(`U (descAct ${descAct})`, down(got.U), want.U, 1e-4);
      got.release();
    }
    d.release();
  });

  it('one block: codes, grids, g_idx and values = gptqQuantizePrepared bit for bit (bits 2/3/4/8, groups, sym/asym, act-order, static groups)', () => {
    const N = 37, K = 100, T = 120;
    const { h, d } = hessians(K, [activations(T, K)], T);
    d.release();
    const w = randn(N * K), wd = up(new Tensor('F32', [N, K], w)) as Tensor<'F32'>;
    let cases = 0;
    for (const bits of [2, 3, 4, 8] as GptqBits[]) {
      for (const groupSize of [-1, 32, 48]) {
        for (const [sym, descAct, staticGroups] of [[true, false, false], [false, true, false], [false, true, true], [true, false, true]]) {
          const o = opts({ bits, groupSize, sym, descAct, staticGroups });
          const prep = prepareHessian(h.H, K, o), dp = uploaded(prep);
          const want = gptqQuantizePrepared(w, [N, K], prep, o), got = gptqQuantizeCuda(wd, [N, K], dp, o);
          const what = `${bits}-bit g${groupSize} ${sym ? 'sym' : 'asym'}${descAct ? ' act-order' : ''}${staticGroups ? ' static' : ''}`;
          sameCodes(what, got.codes, want.codes);
          assert.deepEqual(down(got.dequantized), want.dequantized, `${what}: values`);
          assert.ok(Math.abs(got.loss - want.loss) <= 1e-9 * want.loss, `${what}: loss ${got.loss} vs ${want.loss}`);
          cuda.release!(got.dequantized);
          dp.release();
          cases++;
        }
      }
    }
    assert.equal(cases, 48);
  });

  it('several blocks (the lazy update by cuBLAS in float32): ≥ 99.5% of the codes, the loss within 1e-3', () => {
    const N = 64, K = 300, T = 400;
    const { h, d } = hessians(K, [activations(T, K), activations(T, K)], T);
    const w = randn(N * K), wd = up(new Tensor('F32', [N, K], w)) as Tensor<'F32'>;
    for (const o of [opts({ bits: 4, groupSize: 128 }), opts({ bits: 3, groupSize: 64, sym: false, descAct: true, blockSize: 64 })]) {
      const want = gptqQuantizePrepared(w, [N, K], prepareHessian(h.H, K, o), o);
      const got = gptqQuantizeCuda(wd, [N, K], prepareHessianCuda(d.H, K, o), o);
      let same = 0;
      for (let i = 0; i < N * K; i++) if (got.codes.intWeight[i] === want.codes.intWeight[i]) same++;
      assert.ok(same / (N * K) >= 0.995, `${same} of ${N * K} codes equal`);
      assert.ok(Math.abs(got.loss - want.loss) <= 1e-3 * want.loss, `loss ${got.loss} vs ${want.loss}`);
      const eGot = outputErrorCuda(wd, got.dequantized, d.H, N, K), eWant = outputError(w, want.dequantized, h.H, N, K, 'ref');
      assert.ok(Math.abs(eGot - eWant) <= 2e-2 * eWant, `output error ${eGot} vs ${eWant}`);
      const rtn = rtnQuantize(w, [N, K], o);
      assert.ok(eGot < outputError(w, rtn.dequantized, h.H, N, K, 'ref'), 'GPTQ beats RTN');
    }
    d.release();
  });

  it('round to nearest = rtnQuantize bit for bit; outputError = the ref twin', () => {
    const N = 29, K = 77, T = 50;
    const { h, d } = hessians(K, [activations(T, K)], T);
    const w = randn(N * K), wd = up(new Tensor('F32', [N, K], w)) as Tensor<'F32'>;
    for (const [bits, groupSize, sym] of [[2, 16, false], [4, -1, true], [8, 32, false], [3, 100, true]] as [GptqBits, number, boolean][]) {
      const want = rtnQuantize(w, [N, K], { bits, groupSize, sym }), got = rtnQuantizeCuda(wd, [N, K], { bits, groupSize, sym });
      sameCodes(`rtn ${bits}-bit g${groupSize}`, got.codes, want.codes);
      assert.deepEqual(down(got.dequantized), want.dequantized);
      const e = outputErrorCuda(wd, got.dequantized, d.H, N, K), r = outputError(w, want.dequantized, h.H, N, K, 'ref');
      assert.ok(Math.abs(e - r) <= 1e-4 * r, `output error ${e} vs ${r}`);
    }
    d.release();
  });

  it('a Hessian that is not positive definite: the host\'s GptqCholeskyError and column; a non-finite weight is named', () => {
    const K = 40, T = 60;
    const x = activations(T, K);
    const { h, d } = hessians(K, [x], T);
    const Hbad = h.H.slice();
    Hbad[11 * K + 11] = -5;
    const dBad = up(new Tensor('F32', [K, K], Hbad)) as Tensor<'F32'>;
    const err = (f: () => unknown) => { try { f(); } catch (e) { return e as GptqCholeskyError; } assert.fail('no error'); };
    const want = err(() => prepareHessian(Hbad, K, opts({})));
    const got = err(() => prepareHessianCuda(dBad, K, opts({})));
    assert.ok(got instanceof GptqCholeskyError);
    assert.equal(got.column, want.column);
    assert.equal(got.column, 11);
    const w = randn(8 * K);
    w[3 * K + 2] = NaN;
    assert.throws(() => cudaWeightF32(up(new Tensor('F32', [8, K], w)), 'L0.q_proj'), /L0\.q_proj: weight \[3, 2\] is NaN/);
    d.release();
  });

  const windows = (V: number, n: number, T: number, seed: number) => {
    const r = new PyRandom(seed);
    return Array.from({ length: n }, () => Int32Array.from({ length: T }, () => r.randint(0, V - 1)));
  };
  for (const fam of ['llama_gqa', 'qwen2', 'mistral_sliding', 'opt_125m_like', 'opt_350m_like']) {
    it(`${fam}: quantizeModelGptq on cuda = on the cpu backend (codes, errors; the quantized logits as close to the float ones)`, async () => {
      const dir = goldenCases().find((c) => c.name === fam)!.dir;
      const { model, config } = await fromPretrained(dir, { device: 'cuda' });
      const { model: cpu } = await fromPretrained(dir, { backend: 'cpu' });
      const samples = windows(config.vocab_size, 6, 24, 1), test = windows(config.vocab_size, 1, 20, 2).map((w) => Array.from(w));
      const float = cpu.forward(test).f32.slice();
      const o = { bits: 4 as const, groupSize: 32, sym: false, descAct: true };
      const got = quantizeModelGptq(model, samples, o), want = quantizeModelGptq(cpu, samples, o);
      assert.deepEqual([...got.codes.keys()], [...want.codes.keys()]);
      let same = 0, total = 0;
      for (const [name, c] of got.codes) {
        const wc = want.codes.get(name)!;
        for (let i = 0; i < c.intWeight.length; i++) if (c.intWeight[i] === wc.intWeight[i]) same++;
        total += c.intWeight.length;
      }
      assert.ok(same / total >= 0.98, `${fam}: ${same} of ${total} codes equal`);
      got.stats.forEach((s, i) => {
        const w = want.stats[i];
        assert.ok(s.gptqError! < s.rtnError!, `${s.name}: gptq ${s.gptqError} rtn ${s.rtnError}`);
        assert.ok(Math.abs(s.rtnError! - w.rtnError!) <= 0.05 * w.rtnError! + 1e-9, `${s.name}: rtn error ${s.rtnError} vs ${w.rtnError}`);
        assert.ok(Math.abs(s.gptqError! - w.gptqError!) <= 0.1 * w.gptqError! + 1e-9, `${s.name}: gptq error ${s.gptqError} vs ${w.gptqError}`);
      });
      const eDev = relErr(cuda.download(model.forward(test)).f32, float), eHost = relErr(cpu.forward(test).f32, float);
      assert.ok(eDev <= 1.5 * eHost + 1e-4, `${fam}: quantized logits off the float ones by ${eDev} (cuda) vs ${eHost} (cpu)`);
    });
  }

  it('lowbit quantize --device cuda: an AutoGPTQ folder as the cpu run writes it (the report says cuda)', async () => {
    const out = mkdtempSync(join(tmpdir(), 'lowbit-cuda-gptq-'));
    const args = ['--method', 'gptq', '--bits', '4', '--group-size', '64', '--dataset', join(KJV, 'heldout.txt'), '--nsamples', '4', '--seqlen', '64'];
    const rc = lowbit('quantize', KJV, ...args, '--device', 'cuda', '--out', join(out, 'cuda'));
    assert.equal(rc.code, 0, rc.err);
    assert.equal(lowbit('quantize', KJV, ...args, '--out', join(out, 'cpu')).code, 0);
    const report = JSON.parse(readFileSync(join(out, 'cuda', 'quantize_report.json'), 'utf8'));
    assert.equal(report.device, 'cuda');
    const [qc, qh] = ['cuda', 'cpu'].map((d) => readSafetensors(join(out, d, 'model.safetensors')));
    assert.deepEqual(qc.names(), qh.names());
    // The model is bf16: on the GPU its calibration GEMMs take bf16 activations (as PyTorch's would), on the cpu
    // float32 ones, so the two runs see slightly different Hessians, and GPTQ's error feedback turns small
    // differences into codes one step apart (74% equal in the first run); both folders are as close to the float
    // model.
    let same = 0, total = 0;
    for (const name of qh.names().filter((n) => n.endsWith('.qweight'))) {
      const a = qc.get(name).data as Int32Array, b = qh.get(name).data as Int32Array;
      for (let i = 0; i < a.length; i++) for (let s = 0; s < 32; s += 4) { total++; if (((a[i] >>> s) & 15) === ((b[i] >>> s) & 15)) same++; }
    }
    assert.ok(same / total >= 0.6, `${same} of ${total} codes equal`);
    const ids = [[1, 5, 9, 33, 2, 60, 63, 4, 8, 12, 40, 41, 17, 3, 90, 7]];
    const float = (await fromPretrained(KJV, { backend: 'cpu' })).model.forward(ids).f32;
    const [ec, eh] = await Promise.all(['cuda', 'cpu'].map(async (d) => relErr((await fromPretrained(join(out, d), { backend: 'cpu' })).model.forward(ids).f32, float)));
    assert.ok(ec <= 1.5 * eh, `logits off the float model's by ${ec} (cuda folder) vs ${eh} (cpu folder)`);
    rmSync(out, { recursive: true, force: true });
  });
});

describe('cuda AWQ calibration (native/cuda/awq.cu, src/quant/awq-cuda.ts) vs the host path', { skip }, () => {
  const t = (shape: number[], a: Float32Array) => up(new Tensor('F32', shape, a)) as Tensor<'F32'>;
  const host = hostAwqMath('ref');
  /** Weights with a few large values, so clipping has something to do. */
  const weights = (N: number, K: number) => {
    const w = randn(N * K);
    for (let i = 0; i < w.length; i += 97) w[i] *= 6;
    return w;
  };

  it('pseudo-quantization (codes, float16 grids), the Gram matrices and the clip search = refAwqKernels bit for bit', () => {
    const N = 37, K = 256, T = 70, x = randn(T * K);
    const s = Float32Array.from({ length: K }, (_, i) => 0.5 + (i % 7) / 5);
    for (const [bits, G, zp] of [[4, 32, true], [4, 128, false], [3, 64, true], [4, 256, true]] as [number, number, boolean][]) {
      const w = weights(N, K), what = `${bits}-bit g${G} ${zp ? 'zero point' : 'sym'}`;
      const nG = K / G;
      const want = { out: new Float32Array(N * K), codes: new Uint8Array(N * K), scales: new Float32Array(nG * N), zeros: new Uint8Array(nG * N) };
      refAwqKernels.pseudoQuantize(w, N, K, null, bits, G, zp, want.out, want.codes, want.scales, want.zeros);
      const got = cudaAwq.pseudoQuantize(t([N, K], w), N, K, null, bits, G, zp, true);
      assert.deepEqual(down(got.out), want.out, `${what}: values`);
      assert.deepEqual(cuda.download(got.codes!).data, want.codes, `${what}: codes`);
      assert.deepEqual(down(got.scales!), want.scales, `${what}: scales`);
      assert.deepEqual(cuda.download(got.zeros!).data, want.zeros, `${what}: zeros`);
      const scaled = new Float32Array(N * K);
      refAwqKernels.pseudoQuantize(w, N, K, s, bits, G, zp, scaled, null, null, null);
      assert.deepEqual(down(cudaAwq.pseudoQuantize(t([N, K], w), N, K, t([K], s), bits, G, zp).out), scaled, `${what}: Q(w·s)/s`);
      const gram = new Float64Array(K * G);
      refAwqKernels.groupGram(x, T, K, G, gram);
      const gd = cudaAwq.groupGram(t([T, K], x), T, K, G), gh = down(gd);
      assert.deepEqual(new Float64Array(gh.buffer, gh.byteOffset, K * G), gram, `${what}: Gram`);
      const best = new Float32Array(N * nG);
      refAwqKernels.clipSearch(w, N, K, G, gram, T, bits, zp, AWQ_CLIP_STEPS, AWQ_GRID, best);
      assert.deepEqual(down(cudaAwq.clipSearch(t([N, K], w), N, K, G, gd, T, bits, zp, AWQ_CLIP_STEPS, AWQ_GRID)), best, `${what}: clip maxima`);
    }
  });

  it('the statistics, folding, clip tokens and quantization of cudaAwqMath = hostAwqMath bit for bit', () => {
    const N = 24, K = 128, opts = { bits: 4 as const, groupSize: 32, zeroPoint: true };
    const w = weights(N, K), s = Float32Array.from({ length: K }, (_, i) => 0.25 + (i % 5) / 3);
    // Inputs of 700 and 500 rows: 1200 rows, every 2nd taken across the boundary.
    const xs = [randn(700 * K), randn(500 * K)];
    const hx = xs.map((x) => host.keepInput(new Tensor('F32', [x.length / K, K], x), K)), dx = xs.map((x) => t([x.length / K, K], x));
    assert.deepEqual(cudaAwqMath.activationMean(dx, K), host.activationMean(hx, K));
    const hw = host.weight(new Tensor('F32', [N, K], w), [N, K], 'w'), dw = cudaAwqMath.weight(t([N, K], w), [N, K], 'w');
    assert.deepEqual(cudaAwqMath.weightMean([dw, dw], K, 32), host.weightMean([hw, hw], K, 32));
    assert.deepEqual(down(cudaAwqMath.scaleColumns(dw, N, K, s)), host.scaleColumns(hw, N, K, s).f32);
    assert.deepEqual(down(cudaAwqMath.divideLastRows(dw, N, K, s.subarray(0, 10))), host.divideLastRows(hw, N, K, s.subarray(0, 10)).f32);
    assert.deepEqual(down(cudaAwqMath.divideTail(t([K], s), s.subarray(0, 50))), host.divideTail(new Tensor('F32', [K], s), s.subarray(0, 50)).f32);
    for (const sc of [null, s]) {
      const c = cudaAwqMath.clip(dw, N, K, dx, sc, opts, 'fc'), h = host.clip(hw, N, K, hx, sc, opts, 'fc');
      assert.deepEqual(down(c.w), h.w.f32);
      assert.equal(c.ratio, h.ratio);
      assert.ok(h.ratio < 1, `ratio ${h.ratio}`);
    }
    const q = cudaAwqMath.quantize(dw, [N, K], opts, 'fc'), hq = host.quantize(hw, [N, K], opts, 'fc');
    assert.deepEqual(q.codes, hq.codes);
    assert.deepEqual(down(q.dequantized), hq.dequantized.f32);
    const bad = w.slice();
    bad[2 * K + 9] = Infinity;
    assert.throws(() => cudaAwqMath.weight(t([N, K], bad), [N, K], 'L1.mlp.up_proj'), /L1\.mlp\.up_proj: weight \[2, 9\] is Infinity; AWQ needs finite weights/);
  });

  const windows = (V: number, n: number, T: number, seed: number) => {
    const r = new PyRandom(seed);
    return Array.from({ length: n }, () => Int32Array.from({ length: T }, () => r.randint(0, V - 1)));
  };
  for (const fam of ['llama_gqa', 'qwen2', 'mistral_sliding', 'opt_125m_like', 'opt_350m_like']) {
    it(`${fam}: quantizeModelAwq on cuda = on the cpu backend (α of each group, codes; the quantized logits as close to the float ones)`, async () => {
      const dir = goldenCases().find((c) => c.name === fam)!.dir;
      const { model, config } = await fromPretrained(dir, { device: 'cuda' });
      const { model: cpu } = await fromPretrained(dir, { backend: 'cpu' });
      const samples = windows(config.vocab_size, 4, 24, 1), test = windows(config.vocab_size, 1, 20, 2).map((w) => Array.from(w));
      const float = cpu.forward(test).f32.slice();
      const o = { bits: 4 as const, groupSize: -1 };  // G = K: 64 (the Gram matrix in shared memory) and 128-172 (in global memory)
      const got = quantizeModelAwq(model, samples, o), want = quantizeModelAwq(cpu, samples, o);
      assert.deepEqual(got.groups.map((g) => g.layers), want.groups.map((g) => g.layers));
      const sameAlpha = got.groups.filter((g, i) => g.alpha === want.groups[i].alpha).length;
      assert.ok(sameAlpha >= 0.9 * want.groups.length, `${fam}: α equal in ${sameAlpha} of ${want.groups.length} groups`);
      got.groups.forEach((g, i) => assert.ok(Math.abs(g.lossAtAlpha0 - want.groups[i].lossAtAlpha0) <= 1e-3 * want.groups[i].lossAtAlpha0 + 1e-12, `${g.layers}: loss at α 0`));
      let same = 0, total = 0;
      for (const [name, c] of got.codes) {
        const wc = want.codes.get(name)!;
        for (let i = 0; i < c.intWeight.length; i++) if (c.intWeight[i] === wc.intWeight[i]) same++;
        total += c.intWeight.length;
      }
      assert.ok(same / total >= 0.97, `${fam}: ${same} of ${total} codes equal`);
      const eDev = relErr(cuda.download(model.forward(test)).f32, float), eHost = relErr(cpu.forward(test).f32, float);
      assert.ok(eDev <= 1.5 * eHost + 1e-4, `${fam}: quantized logits off the float ones by ${eDev} (cuda) vs ${eHost} (cpu)`);
    });
  }

  it('lowbit quantize --method awq --device cuda: an AutoAWQ folder as good as the cpu run\'s (the report says cuda)', async () => {
    const out = mkdtempSync(join(tmpdir(), 'lowbit-cuda-awq-'));
    const args = ['--method', 'awq', '--group-size', '16', '--dataset', join(KJV, 'heldout.txt'), '--nsamples', '8', '--seqlen', '64'];
    const rc = lowbit('quantize', KJV, ...args, '--device', 'cuda', '--out', join(out, 'cuda'));
    assert.equal(rc.code, 0, rc.err);
    assert.equal(lowbit('quantize', KJV, ...args, '--out', join(out, 'cpu')).code, 0);
    assert.equal(JSON.parse(readFileSync(join(out, 'cuda', 'quantize_report.json'), 'utf8')).device, 'cuda');
    const ids = [[1, 5, 9, 33, 2, 60, 63, 4, 8, 12, 40, 41, 17, 3, 90, 7]];
    const float = (await fromPretrained(KJV, { backend: 'cpu' })).model.forward(ids).f32;
    const [ec, eh] = await Promise.all(['cuda', 'cpu'].map(async (d) => relErr((await fromPretrained(join(out, d), { backend: 'cpu' })).model.forward(ids).f32, float)));
    assert.ok(ec <= 1.5 * eh, `logits off the float model's by ${ec} (cuda folder) vs ${eh} (cpu folder)`);
    rmSync(out, { recursive: true, force: true });
  });
});
