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
import { maxRelErr, Rand, relErr } from './helpers.js';

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
  assert.equal(cpuBackend.supports('matmulQ', ['nf4']), false);
  const said: string[] = [];
  const prev = setWarningHandler((m) => said.push(m), { reset: true });
  try {
    const nf4 = fromBnb4(quantize4bit(W, [N, K], { quantType: 'nf4', doubleQuant: true }));
    const int8 = fromInt8(quantizeInt8(W, [N, K]), 6);
    for (const q of [nf4, nf4, int8, nf4, int8]) {
      const out = Tensor.zeros('F32', [M, N]);
      matmulQ(cpuBackend, X, q, BIAS, out);
      assert.deepEqual(out.f32, qMatmul(q, BIAS));
    }
    matmulQ(refBackend, X, nf4, null, Tensor.zeros('F32', [M, N]));   // ref has the op: no warning
    assert.equal(said.length, 2, said.join('\n'));
    assert.match(said[0], /backend "cpu" has no matmulQ kernel for nf4 weights; using the reference backend/);
    assert.match(said[1], /for int8 weights/);
  } finally {
    setWarningHandler(prev, { reset: true });
  }
});
