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
import { cudaAvailable, cudaBackend as cuda } from '../src/backend/cuda/index.js';
import type { CudaDecodeGraph } from '../src/backend/cuda/graph.js';
import { generate } from '../src/generate/generate.js';
import { refBackend as ref } from '../src/backend/ref/index.js';
import { f32ToBf16, f32ToF16, type DType } from '../src/tensor/dtype.js';
import { DeviceTensorError, Tensor } from '../src/tensor/tensor.js';
import { argmax, goldenCases, maxRelErr, Rand, randomGptqCodes, relErr, ROOT } from './helpers.js';
import { join } from 'node:path';
import { matmulQRef } from '../src/backend/ref/quant.js';
import { packGptq, unpackGptq } from '../src/quant/gptq-format.js';
import { packAwq, unpackAwq } from '../src/quant/awq-format.js';
import type { GptqBits, GptqCodes } from '../src/quant/gptq-types.js';
import { qgDecodeRef, qgPack } from '../src/quant/qg.js';
import { fromAwq, fromBnb4, fromGptq, fromInt8, type QuantizedWeight } from '../src/quant/qweight.js';
import { quantizeInt8 } from '../src/quant/int8.js';
import { quantize4bit, type Bnb4QuantType } from '../src/quant/bnb4.js';
import { bf16ToF32 } from '../src/tensor/dtype.js';

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

  it('matmulMany: q/k/v-like weights in one launch equal separate products', () => {
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
    assert.equal(cuda.matmulMany!(up(host([9, 64]) as Tensor<'F32'>), [up(host([8, 64], 'BF16'))], [null], [poisoned([9, 8])]), false);
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
    assert.equal(cuda.matmulSiluMul!(up(host([9, K]) as Tensor<'F32'>), up(host([N, K], 'BF16')), up(host([N, K], 'BF16')), null, null, poisoned([9, N])), false);
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
    const n = 1001;
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
      close(name, down(out), want.f32, 1e-6);
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
    for (const M of [1, 5]) {
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
    const x = host([2, K]) as Tensor<'F32'>;
    x.f32[K + 7] = NaN;
    const out = poisoned([2, N]);
    cuda.matmulQ!(up(x), qw, null, out);
    const y = down(out);
    const packed = qgPack(unpackGptq((qw as Extract<QuantizedWeight, { format: 'gptq' }>).gptq))!;
    close('finite row', y.subarray(0, N), qgDecodeRef(x.f32.subarray(0, K), 1, packed, null)!, 1e-5);
    assert.ok(y.subarray(N).every(Number.isNaN));
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
  for (const [N, K, threshold] of [[72, 256, 6], [40, 200, 6], [33, 512, 0], [16, 4096, 3]] as const) {
    it(`[${N}, ${K}] threshold ${threshold}`, () => {
      const w = quantizeInt8(Float32Array.from(randn(N * K), (a) => a * 0.05), [N, K]);
      const qw = fromInt8(w, threshold);
      const b = host([N]) as Tensor<'F32'>;
      for (const M of [1, 3, 8, 13]) {
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
  it('hf_llama_int8 (a bitsandbytes LLM.int8 checkpoint): the cpu backend\'s logits, graph replays = eager', async () => {
    const dir = join(ROOT, 'test', 'fixtures', 'bnb', 'hf_llama_int8');
    const { model } = await fromPretrained(dir, { device: 'cuda' });
    const { model: cpu } = await fromPretrained(dir, { backend: 'cpu' });
    const ids = [[1, 5, 9, 33, 2, 60, 63, 4], [3, 3, 60, 61, 62, 10, 11, 12]];
    close('forward vs cpu', cuda.download(model.forward(ids)).f32, cpu.forward(ids).f32, 1e-5);
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
});
