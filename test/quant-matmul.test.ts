// The quantized matmul op and its dispatcher: ref matmulQ against dequantize → float matmul at odd sizes, and the
// one-time fallback warning when a backend has no kernel for a format.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { refBackend } from '../src/backend/ref/index.js';
import { cpuBackend } from '../src/backend/cpu/index.js';
import { matmulQ } from '../src/backend/dispatch.js';
import { quantize4bit } from '../src/quant/bnb4.js';
import { int8MatmulRef, quantizeInt8 } from '../src/quant/int8.js';
import { dequantizeWeight, fromBnb4, fromInt8, type QuantizedWeight } from '../src/quant/qweight.js';
import { ShapeError, Tensor } from '../src/tensor/tensor.js';
import { setWarningHandler } from '../src/util/warn.js';
import { Linear4bit, Linear8bitLt, quantLinear } from '../src/nn/quant.js';
import type { Linear } from '../src/nn/layers.js';
import { fromPretrained } from '../src/api.js';
import { join } from 'node:path';
import { GOLDEN_DIR, maxRelErr, Rand, relErr } from './helpers.js';

function randn(r: Rand, n: number, std = 1): Float32Array {
  return Float32Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(r.next() + 1e-12)) * Math.cos(2 * Math.PI * r.next()));
}

// out 172, in 65: 11180 = 174·64 + 44 elements, so blocks straddle rows and the last block is partial.
const N = 172, K = 65, M = 3;
const r = new Rand(8);
const W = randn(r, N * K, 0.05);
const X = Tensor.f32([M, K], randn(r, M * K));
const BIAS = Tensor.f32([N], randn(r, N, 0.1));

function floatMatmul(q: QuantizedWeight, bias: Tensor<'F32'> | null): Float32Array {
  const out = Tensor.zeros('F32', [M, N]);
  refBackend.matmul(X, new Tensor('F32', [N, K], dequantizeWeight(q)), bias, out);
  return out.f32;
}

function qMatmul(q: QuantizedWeight, bias: Tensor<'F32'> | null, x = X): Float32Array {
  const out = Tensor.zeros('F32', [x.numel / K, N]);
  refBackend.matmulQ!(x, q, bias, out);
  return out.f32;
}

test('ref matmulQ (4-bit) equals dequantize → float32 matmul at out 172, in 65, every type and block size', () => {
  for (const quantType of ['nf4', 'fp4'] as const) {
    for (const blocksize of [32, 64, 128, 4096]) {
      for (const doubleQuant of [false, true]) {
        for (const dtype of ['float32', 'bfloat16'] as const) {
          const q = fromBnb4(quantize4bit(W, [N, K], { quantType, blocksize, doubleQuant, dtype }), 'bfloat16');
          assert.equal(q.format, quantType);
          const what = `${quantType} b${blocksize} dq=${doubleQuant} ${dtype}`;
          for (const bias of [null, BIAS]) {
            const got = qMatmul(q, bias), want = floatMatmul(q, bias);
            assert.ok(maxRelErr(got, want) <= 1e-5, `${what}: ${maxRelErr(got, want)}`);
          }
        }
      }
    }
  }
});

test('ref matmulQ (int8) is int8MatmulRef with the layer threshold, close to the dequantized product', () => {
  const xs = X.f32.slice();
  xs[5] = 9.5; xs[K + 17] = -7.25;                 // two outlier columns
  const x = Tensor.f32([M, K], xs);
  for (const threshold of [6, 0]) {
    const w = quantizeInt8(W, [N, K]);
    const q = fromInt8(w, threshold);
    const got = qMatmul(q, BIAS, x);
    assert.deepEqual(got, int8MatmulRef(xs, M, w, { threshold, bias: BIAS.f32 }));
    const out = Tensor.zeros('F32', [M, N]);
    refBackend.matmul(x, new Tensor('F32', [N, K], dequantizeWeight(q)), BIAS, out);
    // Only the activation rounding to int8 separates the two (the outliers, with threshold 6, are exact).
    assert.ok(relErr(got, out.f32) < 0.02, `threshold ${threshold}: ${relErr(got, out.f32)}`);
  }
});

test('matmulQ shapes are checked like matmul', () => {
  const q = fromBnb4(quantize4bit(W, [N, K], { quantType: 'nf4' }));
  assert.throws(() => refBackend.matmulQ!(Tensor.zeros('F32', [2, 64]), q, null, Tensor.zeros('F32', [2, N])), ShapeError);
  assert.throws(() => refBackend.matmulQ!(X, q, Tensor.zeros('F32', [5]), Tensor.zeros('F32', [M, N])), ShapeError);
  assert.throws(() => refBackend.matmulQ!(X, q, null, Tensor.zeros('F32', [M, N + 1])), ShapeError);
});

test('the dispatcher falls back to ref once per backend and format, with a warning naming them', () => {
  assert.equal(refBackend.supports('matmulQ', ['nf4', 'int8']), true);
  // cpu has native NF4/FP4 and int8 kernels (test/quant-kernels.test.ts, quant-int8-kernel.test.ts) when the addon
  // is built, so the fallback is checked on a backend that has none.
  assert.equal(cpuBackend.supports('matmulQ', ['nf4', 'fp4', 'int8']), cpuBackend.supports('matmul', ['F32']));
  const noKernel: typeof cpuBackend = { ...cpuBackend, name: 'nokernel', supports: () => false };
  const said: string[] = [];
  const prev = setWarningHandler((m) => said.push(m), { reset: true });
  try {
    const nf4 = fromBnb4(quantize4bit(W, [N, K], { quantType: 'nf4', doubleQuant: true }));
    const int8 = fromInt8(quantizeInt8(W, [N, K]), 6);
    for (const q of [nf4, nf4, int8, nf4, int8]) {
      const out = Tensor.zeros('F32', [M, N]);
      matmulQ(noKernel, X, q, BIAS, out);
      assert.deepEqual(out.f32, qMatmul(q, BIAS));
    }
    matmulQ(refBackend, X, nf4, null, Tensor.zeros('F32', [M, N]));   // ref has the op: no warning
    assert.equal(said.length, 2, said.join('\n'));
    assert.match(said[0], /backend "nokernel" has no matmulQ kernel for nf4 weights; using the reference backend/);
    assert.match(said[1], /for int8 weights/);
  } finally {
    setWarningHandler(prev, { reset: true });
  }
});

test('Linear4bit / Linear8bitLt are LinearLikes: forward over [..., in] through the dispatcher', () => {
  const nf4 = fromBnb4(quantize4bit(W, [N, K], { quantType: 'nf4', doubleQuant: true }));
  const int8 = fromInt8(quantizeInt8(W, [N, K]), 6);
  const x3 = X.reshape([1, M, K]);
  for (const layer of [new Linear4bit(refBackend, 'm.q', nf4, BIAS), quantLinear(refBackend, 'm.i', int8, null)]) {
    assert.equal(layer.inFeatures, K);
    assert.equal(layer.outFeatures, N);
    const y = layer.forward(x3);
    assert.deepEqual([...y.shape], [1, M, N]);
    assert.deepEqual(y.f32, qMatmul(layer.qweight, layer.bias));
    assert.throws(() => layer.forward(Tensor.zeros('F32', [2, 64])), /m\.[qi]: input \[2,64\] does not end in 65/);
  }
  assert.ok(quantLinear(refBackend, 'm.i', int8, null) instanceof Linear8bitLt);
  assert.throws(() => new Linear4bit(refBackend, 'm.q', nf4, Tensor.zeros('F32', [3])), /m\.q\.bias: 3 values for 172 outputs/);
});

test('replaceLinear swaps a Linear for a Linear4bit and the model still runs, close to float', async () => {
  const { model } = await fromPretrained(join(GOLDEN_DIR, 'llama_gqa'), { backend: 'ref' });
  const ids = [[1, 5, 9, 3, 7]];
  const before = model.forward(ids).f32.slice();
  for (const [name, lin] of model.linears()) {
    if (name === 'lm_head') continue;
    const w = (lin as Linear).weight;
    model.replaceLinear(name, new Linear4bit(refBackend, name, fromBnb4(quantize4bit(w.toF32(), w.shape, { quantType: 'nf4' })), (lin as Linear).bias));
  }
  assert.ok([...model.linears().values()].filter((l) => l instanceof Linear4bit).length > 0);
  const after = model.forward(ids).f32;
  assert.ok(after.every(Number.isFinite));
  // Every projection of a random-init model in NF4 (half a level is up to ~10% of a block's absmax): measured 0.227.
  assert.ok(relErr(after, before) < 0.35, `${relErr(after, before)}`);
});
