// The native NF4/FP4 kernels (native/cpu) against their TypeScript twins at every SIMD level this CPU offers: up to
// kQ4GemvMaxM = 8 rows with K and the block size multiples of 64, the int16-activation GEMV (twin q4DecodeRef, which
// is itself checked against the exact product within q4DecodeBound); other decode shapes, the exact dequantize-GEMV,
// and above 8 rows the tiled dequantize GEMM (twin: the ref matmulQ). Both code books, plain and double-quantized
// scales, block sizes 32/64/128/4096, float32/bf16/f16 QuantState dtypes, blocks that straddle rows (out 172 × in
// 65; in 4160 with blocks of 4096), M = 1, 2, 3, 5 (GEMV) and 17, 65, 130 (GEMM), bias on and off; rows with
// non-finite scales. Then a golden Llama quantized on load (nf4) gives the ref backend's logits on the cpu backend,
// with no fallback.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { refBackend } from '../src/backend/ref/index.js';
import { cpuBackend } from '../src/backend/cpu/index.js';
import { matmulQ } from '../src/backend/dispatch.js';
import { addonLoadError, loadAddon } from '../src/native/addon.js';
import { quantize4bit, type TorchFloatDtype } from '../src/quant/bnb4.js';
import { dequantizeWeight, fromBnb4, fromInt8, type QuantizedWeight } from '../src/quant/qweight.js';
import { quantizeInt8 } from '../src/quant/int8.js';
import { Tensor } from '../src/tensor/tensor.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/tensor/dtype.js';
import { setWarningHandler } from '../src/util/warn.js';
import { q4DecodeApplies, q4DecodeBound, q4DecodeRef } from '../src/backend/ref/quant.js';
import { quantizedCpuVsRef, Rand, relErr, simdLevels } from './helpers.js';

const SEED = Number(process.env.LOWBIT_TEST_SEED ?? (Date.now() % 2 ** 31));
const rng = new Rand(SEED);
function randn(n: number, std = 1): Float32Array {
  return Float32Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(rng.next() + 1e-12)) * Math.cos(2 * Math.PI * rng.next()));
}
const TOL = 1e-5;  // ../shared/GUIDE.md's fp32 bound: the weights are the same floats, only the summation differs

const addon = loadAddon();
const skip = addon ? false : `native addon not built: ${addonLoadError}`;

const levels = simdLevels;

/** Weights exact in `dtype` (quantize4bit expects values already in it). */
function weights(n: number, dtype: TorchFloatDtype): Float32Array {
  const w = randn(n, 0.05);
  if (dtype === 'bfloat16') return w.map((v) => bf16ToF32(f32ToBf16(v)));
  if (dtype === 'float16') return w.map((v) => f16ToF32(f32ToF16(v)));
  return w;
}

function run(backend: typeof cpuBackend, x: Tensor<'F32'>, q: QuantizedWeight, bias: Tensor<'F32'> | null, M: number): Float32Array {
  const out = Tensor.f32([M, q.shape[0]], new Float32Array(M * q.shape[0]).fill(NaN));
  backend.matmulQ!(x, q, bias, out);
  return out.f32;
}

// [out, in, blocksize]. Generic walk: straddling blocks with an odd row length (rows start at a low nibble), a
// partial last block, in = 4096 + 64 with blocks of 4096 (one block per row plus a piece of the next), in = 33.
// Aligned: in = 65 blocks of 64 (the AVX2 scales 8 at a time cross a nested group inside a row), 2 blocks of 128
// per row (one scale for two 64-chunks), one 4096 block per row with N odd, blocks of 32 (the exact vpermps walk).
const SHAPES: [number, number, number][] = [[172, 65, 64], [9, 4160, 64], [9, 4160, 4096], [7, 33, 4096], [40, 256, 128],
  [5, 4096, 4096], [23, 96, 32]];
const MS = [1, 2, 3, 5, 17, 65, 130];
const DTYPES: TorchFloatDtype[] = ['float32', 'bfloat16', 'float16'];

describe('native NF4/FP4 matmulQ vs the ref twin', { skip }, () => {
  after(() => { addon?.setLevel('best'); });

  it(`${levels().join(', ')}: nf4/fp4 × double quant on/off × f32/bf16/f16 × blocks 32/64/128/4096 × M = ${MS.join(', ')}`, () => {
    for (const [N, K, blocksize] of SHAPES) {
      for (const quantType of ['nf4', 'fp4'] as const) {
        for (const doubleQuant of [false, true]) {
          for (const dtype of DTYPES) {
            const q = fromBnb4(quantize4bit(weights(N * K, dtype), [N, K], { quantType, blocksize, doubleQuant, dtype }));
            const W = dequantizeWeight(q);
            for (const M of MS) {
              const x = Tensor.f32([M, K], randn(M * K));
              const bias = [1, 3, 17, 130].includes(M) ? Tensor.f32([N], randn(N, 0.1)) : null;
              // The twin once; every level against it. Decode shapes (q4DecodeApplies) take the int16-activation
              // GEMV, whose twin is q4DecodeRef; that twin is within q4DecodeBound of the exact product.
              const exact = run(refBackend, x, q, bias, M);
              const decode = q4DecodeApplies(M, K, blocksize);
              const want = decode ? q4DecodeRef(x.f32, M, q.bnb4, bias ? bias.f32 : null) : exact;
              if (decode) {
                for (let i = 0; i < M * N; i++) {
                  const b = q4DecodeBound(x.f32, Math.floor(i / N), i % N, q.bnb4);
                  if (!(Math.abs(want[i] - exact[i]) <= b)) assert.fail(`q4DecodeRef ${quantType} dq=${doubleQuant} ${dtype} out ${N} in ${K} block ${blocksize} M=${M}: output ${i} is ${want[i]}, exact ${exact[i]}, bound ${b}`);
                }
              }
              // Per output, the scale of a float32 summation's error: Σ_k |x·w| (+ |bias|). Checked element by
              // element as well as over the whole output, so one wrong row or tail element cannot hide in a norm.
              const mag = new Float64Array(M * N);
              for (let m = 0; m < M; m++)
                for (let n = 0; n < N; n++) {
                  let t = bias ? Math.abs(bias.f32[n]) : 0;
                  for (let k = 0; k < K; k++) t += Math.abs(x.f32[m * K + k] * W[n * K + k]);
                  mag[m * N + n] = t;
                }
              for (const level of levels()) {
                assert.equal(addon!.setLevel(level), level);
                const got = run(cpuBackend, x, q, bias, M);
                const what = `${level} ${quantType} dq=${doubleQuant} ${dtype} out ${N} in ${K} block ${blocksize} M=${M} bias=${!!bias} (seed ${SEED})`;
                assert.equal(got.findIndex((v) => Number.isNaN(v)), -1, `${what}: NaN`);
                const e = relErr(got, want);
                assert.ok(e <= TOL, `${what}: relative error ${e.toExponential(2)}`);
                for (let i = 0; i < M * N; i++) {
                  if (!(Math.abs(got[i] - want[i]) <= TOL * mag[i])) assert.fail(`${what}: output ${i} (row ${Math.floor(i / N)}) is ${got[i]}, ref ${want[i]}`);
                }
              }
            }
          }
        }
      }
    }
  });

  it('rows with an infinite or NaN block scale are not finite where the ref twin\'s are not; the other rows agree', () => {
    // Plain absmax with Inf, -Inf, NaN and 1e5 (code·s overflows f16, not bf16/f32) planted in chosen blocks, one
    // per row; row 5 keeps finite scales. The int16 decode GEMV sends rows with a non-finite scale to the exact
    // walk. Where the ref's output is not finite the kernel's must not be either (the sign of an overflow may differ:
    // the ref sums in float64, the kernels in float32); finite outputs agree as everywhere else.
    const N = 6, K = 1024, bs = 64;
    for (const dtype of DTYPES) {
      const w = quantize4bit(weights(N * K, dtype), [N, K], { quantType: 'nf4', blocksize: bs, dtype });
      const perRow = K / bs;
      w.absmax![0 * perRow + 3] = Infinity;
      w.absmax![1 * perRow + 8] = NaN;
      w.absmax![2 * perRow + 15] = -Infinity;
      w.absmax![3 * perRow + 9] = 1e5;
      w.absmax![4 * perRow + 0] = NaN;
      const q = fromBnb4(w), W = dequantizeWeight(q);
      for (const M of [1, 17]) {
        const x = Tensor.f32([M, K], randn(M * K));
        const want = q4DecodeApplies(M, K, bs) ? q4DecodeRef(x.f32, M, q.bnb4, null) : run(refBackend, x, q, null, M);
        // Σ|x·w| per output: the scale of the float32 summation's error (the 1e5 block makes rows cancel).
        const mag = (m: number, n: number) => { let t = 0; for (let k = 0; k < K; k++) t += Math.abs(x.f32[m * K + k] * W[n * K + k]); return t; };
        for (const level of levels()) {
          addon!.setLevel(level);
          const got = run(cpuBackend, x, q, null, M);
          for (let m = 0; m < M; m++) {
            const row = (a: Float32Array) => a.subarray(m * N, (m + 1) * N);
            const g = row(got), h = row(want);
            for (let n = 0; n < N; n++) {
              const what = `${level} ${dtype} M=${M} m=${m} n=${n}: got ${g[n]}, ref ${h[n]}`;
              if (!Number.isFinite(h[n])) assert.ok(!Number.isFinite(g[n]), what);
              else assert.ok(Math.abs(g[n] - h[n]) <= TOL * mag(m, n), what);
            }
          }
        }
      }
    }
  });

  it('an x row holding a NaN or an infinity sends the decode call to the exact GEMV: NaN rows stay NaN, the others exact', () => {
    const N = 24, K = 256;
    const q = fromBnb4(quantize4bit(weights(N * K, 'bfloat16'), [N, K], { quantType: 'nf4', dtype: 'bfloat16' }));
    for (const bad of [NaN, Infinity]) {
      const x = Tensor.f32([3, K], randn(3 * K));
      x.f32[K + 77] = bad;                                                 // row 1
      const want = run(refBackend, x, q, null, 3);
      const twin = q4DecodeRef(x.f32, 3, q.bnb4, null);
      for (const level of levels()) {
        addon!.setLevel(level);
        const got = run(cpuBackend, x, q, null, 3);
        for (let i = 0; i < 3 * N; i++) {
          const what = `${level} x[1][77]=${bad} output ${i}: got ${got[i]}, exact ${want[i]}, twin ${twin[i]}`;
          if (!Number.isFinite(want[i])) assert.ok(!Number.isFinite(got[i]) && !Number.isFinite(twin[i]), what);
          else assert.ok(Math.abs(got[i] - want[i]) <= 1e-5 * Math.max(1, Math.abs(want[i])) && twin[i] === want[i], what);
        }
      }
    }
  });

  it('double quantization with a non-finite nested absmax: the affected rows are not finite where the ref\'s are not', () => {
    // 40 rows of 16 blocks = 640 blocks = nested groups 0, 1, 2; group 1 (blocks 256-511, rows 16-31) gets an
    // infinite nested absmax, so its scales are ±Inf or NaN (map value 0 · Inf) and the AVX2 paths must send those
    // rows to the generic walk, which agrees with the ref; the other rows go on as usual.
    const N = 40, K = 1024;
    for (const dtype of DTYPES) {
      const w = quantize4bit(weights(N * K, dtype), [N, K], { quantType: 'nf4', blocksize: 64, doubleQuant: true, dtype });
      w.nested!.nestedAbsmax[1] = Infinity;
      const q = fromBnb4(w);
      for (const M of [1, 17]) {
        const x = Tensor.f32([M, K], randn(M * K));
        const want = q4DecodeApplies(M, K, 64) ? q4DecodeRef(x.f32, M, q.bnb4, null) : run(refBackend, x, q, null, M);
        for (const level of levels()) {
          addon!.setLevel(level);
          const got = run(cpuBackend, x, q, null, M);
          for (let i = 0; i < M * N; i++) {
            const n = i % N, what = `${level} ${dtype} M=${M} output ${i} (weight row ${n}): got ${got[i]}, ref ${want[i]}`;
            if (!Number.isFinite(want[i])) assert.ok(!Number.isFinite(got[i]), what);
            else {
              assert.ok(n < 16 || n >= 32, `${what}: a row of the infinite group came out finite in the ref`);
              assert.ok(Math.abs(got[i] - want[i]) <= 1e-4 * Math.max(1, Math.abs(want[i])), what);
            }
          }
        }
      }
    }
  });

  it('supports nf4, fp4 and int8: the dispatcher runs them natively, with no fallback warning', () => {
    assert.equal(cpuBackend.supports('matmulQ', ['nf4']), true);
    assert.equal(cpuBackend.supports('matmulQ', ['fp4']), true);
    assert.equal(cpuBackend.supports('matmulQ', ['int8']), true);  // test/quant-int8-kernel.test.ts
    const N = 20, K = 48, w = randn(N * K, 0.05), x = Tensor.f32([2, K], randn(2 * K));
    const said: string[] = [];
    const prev = setWarningHandler((m) => said.push(m), { reset: true });
    try {
      for (const q of [fromBnb4(quantize4bit(w, [N, K], { quantType: 'nf4' })), fromInt8(quantizeInt8(w, [N, K]), 6)]) {
        const out = Tensor.zeros('F32', [2, N]);
        matmulQ(cpuBackend, x, q, null, out);
        assert.ok(relErr(out.f32, run(refBackend, x, q, null, 2)) <= TOL, q.format);
      }
      // A format without a kernel still warns: test/quant-matmul.test.ts checks the dispatcher with a backend that has none.
      assert.deepEqual(said, []);
    } finally {
      setWarningHandler(prev, { reset: true });
    }
  });

  it('matmulQ4 checks its arguments (types, lengths against the dims) and throws typed errors', () => {
    const N = 4, K = 64, q = quantize4bit(randn(N * K), [N, K], { quantType: 'nf4' });
    const y = new Float32Array(N), x = new Float32Array(K);
    const call = (over: Partial<Record<string, unknown>> = {}) => {
      const a = { y, x, packed: q.packed, absmax: q.absmax, qabsmax: null, nested: null, map: null, nb: 1, off: 0, M: 1, N, K, bs: 64, qt: 0, dt: 0, bias: null, ...over };
      addon!.matmulQ4(a.y as Float32Array, a.x as Float32Array, a.packed as Uint8Array, a.absmax as Float32Array | null, a.qabsmax as Uint8Array | null,
        a.nested as Float32Array | null, a.map as Float32Array | null, a.nb as number, a.off as number, a.M as number, a.N as number, a.K as number,
        a.bs as number, a.qt as number, a.dt as number, a.bias as Float32Array | null);
    };
    call();
    assert.throws(() => call({ packed: q.packed.subarray(1) }), /matmulQ4: packed has 127 elements, expected 128/);
    assert.throws(() => call({ packed: new Int8Array(128) }), (e: Error) => e instanceof TypeError && /packed must be a Uint8Array/.test(e.message));
    assert.throws(() => call({ absmax: new Float32Array(3) }), RangeError);
    assert.throws(() => call({ x: new Float32Array(K - 1) }), RangeError);
    assert.throws(() => call({ qt: 2 }), /quantType must be 0 \(nf4\) or 1 \(fp4\)/);
    assert.throws(() => call({ bs: 0 }), RangeError);
    assert.throws(() => call({ qabsmax: new Uint8Array(4) }), TypeError);                       // both kinds of scale
    assert.throws(() => call({ absmax: null, qabsmax: new Uint8Array(4), nested: new Float32Array(4) }), TypeError);  // no map
    assert.throws(() => call({ absmax: null, qabsmax: new Uint8Array(3), nested: new Float32Array(4), map: new Float32Array(256) }), RangeError);
    call({ absmax: null, qabsmax: new Uint8Array(4), nested: new Float32Array(1), map: new Float32Array(256), nb: 256 });
    assert.throws(() => call({ bias: new Float32Array(N + 1) }), RangeError);
  });

  it('a golden Llama quantized on load (nf4) gives the ref logits on the cpu backend, with no fallback warning', async () => {
    // 12 tokens: every quantized matmul takes the exact prefill GEMM. 7 tokens: the int16-activation decode GEMV,
    // whose activation rounding (about 1e-4 of a chunk's largest |x|) leaves the logits within 1e-3 (measured 2.7e-4).
    const cfg = { loadIn4bit: true, bnb4bitQuantType: 'nf4' } as const;
    const prefill = await quantizedCpuVsRef(cfg, [[1, 5, 9, 2, 7, 3, 11, 4, 8, 6, 10, 12]]);
    assert.ok(prefill.err <= TOL, `prefill logits relative error ${prefill.err.toExponential(2)}`);
    assert.deepEqual(prefill.warnings, []);
    const decode = await quantizedCpuVsRef(cfg);
    assert.ok(decode.err <= 1e-3, `decode logits relative error ${decode.err.toExponential(2)}`);
    assert.deepEqual(decode.warnings, []);
  });
});
