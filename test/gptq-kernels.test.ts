// The native GPTQ kernels (native/cpu: gemv_qg with int8 activations (int16 against 8-bit codes) for up to 8 rows of x, the exact dequantize +
// float GEMM above that) against their twins at every SIMD level this CPU offers: qgDecodeRef (src/quant/qg.ts) for
// decode, itself within a derived bound of the exact product; the ref matmulQ (dequantize → matmul) for prefill.
// Bits 2/3/4/8 × group size -1/32/64/128 × act-order g_idx (groups shuffled across K) or in order, K a multiple of
// 64 or not (padding), M = 1, 2, 3, 5 (GEMV) and 9, 33 (GEMM), bias on and off. Then the wiring: the cpu backend's
// matmulQ on a GPTQ weight runs natively with no warning, and a g_idx whose groups are not runs of one size takes
// the reference with a one-time warning.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { refBackend } from '../src/backend/ref/index.js';
import { cpuBackend } from '../src/backend/cpu/index.js';
import { matmulQ } from '../src/backend/dispatch.js';
import { addonLoadError, loadAddon } from '../src/native/addon.js';
import { dequantizeGptq, packGptq } from '../src/quant/gptq-format.js';
import type { GptqBits, GptqCodes } from '../src/quant/gptq-types.js';
import { chunkCode, packChunk, qgChunkBytes, qgDecodeRef, qgPack, qgQuantizeX, type QgPacked } from '../src/quant/qg.js';
import { fromGptq } from '../src/quant/qweight.js';
import { Tensor } from '../src/tensor/tensor.js';
import { setWarningHandler } from '../src/util/warn.js';
import { Rand, randomGptqCodes, simdLevels } from './helpers.js';

const SEED = Number(process.env.LOWBIT_TEST_SEED ?? (Date.now() % 2 ** 31));
const rng = new Rand(SEED);
const randn = (n: number, std = 1) => Float32Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(rng.next() + 1e-12)) * Math.cos(2 * Math.PI * rng.next()));
const TOL = 1e-5;
const addon = loadAddon();
const skip = addon ? false : `native addon not built: ${addonLoadError}`;
const levels = simdLevels;

const randomCodes = (bits: GptqBits, N: number, K: number, groupSize: number, actOrder: boolean) => randomGptqCodes(rng, bits, N, K, groupSize, actOrder);

/** The exact product with the dequantized weights (float64 sums), and Σ|x|·(|s·q| + |s·z|) per output. */
function exact(codes: GptqCodes, x: Float32Array, M: number, bias: Float32Array | null): { y: Float64Array; mag: Float64Array } {
  const [N, K] = codes.shape, y = new Float64Array(M * N), mag = new Float64Array(M * N);
  for (let n = 0; n < N; n++)
    for (let m = 0; m < M; m++) {
      let t = bias ? bias[n] : 0, a = bias ? Math.abs(bias[n]) : 0;
      for (let k = 0; k < K; k++) {
        const g = codes.gIdx[k], s = codes.scales[g * N + n], q = codes.intWeight[n * K + k], z = codes.zeros[g * N + n];
        t += x[m * K + k] * Math.fround(s * (q - z));
        a += Math.abs(x[m * K + k]) * (Math.abs(s * q) + Math.abs(s * z));
      }
      y[m * N + n] = t;
      mag[m * N + n] = a;
    }
  return { y, mag };
}

function native(p: QgPacked, x: Float32Array, M: number, bias: Float32Array | null): Float32Array {
  const y = new Float32Array(M * p.N).fill(NaN);
  addon!.matmulQg(y, x, p.codes, p.bits, p.N, p.K, p.Kpad, p.G, p.nG, p.scales, p.zeros, p.perm, M, bias);
  return y;
}

describe('native GPTQ matmul vs its twins', { skip }, () => {
  after(() => { addon?.setLevel('best'); });

  it('chunk layouts: packChunk → chunkCode is the identity at 2/3/4/8 bits', () => {
    for (const bits of [2, 3, 4, 8] as GptqBits[]) {
      const c = Uint8Array.from({ length: 64 }, () => Math.floor(rng.next() * (1 << bits)));
      const b = new Uint8Array(qgChunkBytes(bits) + 3);
      packChunk(bits, c, b, 3);
      for (let p = 0; p < 64; p++) assert.equal(chunkCode(bits, b, 3, p), c[p], `${bits}-bit code ${p}`);
    }
  });

  it(`${levels().join(', ')}: bits 2/3/4/8 × groups -1/32/64/128 × act-order × K = 256, 160 (448 with g128) × M = 1, 2, 3, 5, 9, 33`, () => {
    for (const bits of [2, 3, 4, 8] as GptqBits[])
      for (const groupSize of [-1, 32, 64, 128])
        for (const actOrder of [false, true])
          for (const K of [256, 160, 448]) {
            if (groupSize === 128 && K === 160) continue;  // 2 groups of 128 over 160 inputs: fine, but covered by 256
            if (groupSize !== 128 && K === 448) continue;  // 7 chunks in groups of 128: the VNNI kernel's pair steps, then an odd chunk
            const N = 24, codes = randomCodes(bits, N, K, groupSize, actOrder), p = qgPack(codes);
            assert.ok(p, `qgPack ${bits}-bit g${groupSize} act=${actOrder} K=${K}`);
            assert.equal(p.perm === null, !actOrder || groupSize === -1 || (groupSize >= K));
            for (const M of [1, 2, 3, 5, 9, 33]) {
              const x = randn(M * K), bias = M % 2 ? randn(N, 0.1) : null;
              const { y: want, mag } = exact(codes, x, M, bias);
              const decode = M <= 8;
              const twin = decode ? qgDecodeRef(x, M, p, bias)! : null;
              if (twin) {
                // The twin against the exact product: x's rounding (dx/2 per element) times |w|, plus float32 slop.
                for (let m = 0; m < M; m++) {
                  const r = qgQuantizeX(x.subarray(m * K, (m + 1) * K), p)!;
                  for (let n = 0; n < N; n++) {
                    let b = 0;
                    for (let k = 0; k < K; k++) {
                      const j = p.perm ? Array.prototype.indexOf.call(p.perm, k) : k;
                      const g = codes.gIdx[k];
                      b += (r.dx[Math.floor(j / 64)] / 2) * Math.abs(codes.scales[g * N + n] * (codes.intWeight[n * K + k] - codes.zeros[g * N + n]));
                    }
                    const i = m * N + n;
                    assert.ok(Math.abs(twin[i] - want[i]) <= b * 1.01 + 1e-6 * mag[i], `twin ${bits}-bit g${groupSize} act=${actOrder} K=${K} M=${M} out ${i}: ${twin[i]} vs exact ${want[i]}, bound ${b}`);
                  }
                }
              }
              for (const level of levels()) {
                assert.equal(addon!.setLevel(level), level);
                const got = native(p, x, M, bias);
                const ref = twin ?? want;
                for (let i = 0; i < M * N; i++) {
                  const what = `${level} ${bits}-bit g${groupSize} act=${actOrder} K=${K} M=${M} out ${i} (seed ${SEED}): got ${got[i]}, want ${ref[i]}`;
                  assert.ok(Math.abs(got[i] - ref[i]) <= TOL * mag[i], what);
                }
              }
            }
          }
  });

  it('a NaN in x sends the decode call to the exact path: NaN rows stay NaN, the others exact', () => {
    const N = 16, K = 128, codes = randomCodes(4, N, K, 32, true), p = qgPack(codes)!;
    const x = randn(2 * K);
    x[K + 5] = NaN;
    assert.equal(qgDecodeRef(x, 2, p, null), null);
    const { y: want, mag } = exact(codes, x, 2, null);
    for (const level of levels()) {
      addon!.setLevel(level);
      const got = native(p, x, 2, null);
      for (let i = 0; i < 2 * N; i++) {
        if (Number.isNaN(want[i])) assert.ok(Number.isNaN(got[i]), `${level} out ${i}`);
        else assert.ok(Math.abs(got[i] - want[i]) <= TOL * mag[i], `${level} out ${i}: ${got[i]} vs ${want[i]}`);
      }
    }
  });

  it('the cpu backend runs GPTQ natively (no warning); a g_idx of uneven groups takes ref with one warning', () => {
    assert.equal(cpuBackend.supports('matmulQ', ['gptq']), true);
    const said: string[] = [];
    const prev = setWarningHandler((m) => said.push(m), { reset: true });
    try {
      const N = 32, K = 128, codes = randomCodes(4, N, K, 32, true);
      const q = fromGptq(packGptq(codes, { sym: false, descAct: true }));
      const x = Tensor.f32([3, K], randn(3 * K));
      const out = Tensor.zeros('F32', [3, N]), ref = Tensor.zeros('F32', [3, N]);
      matmulQ(cpuBackend, x, q, null, out);
      refBackend.matmulQ!(x, q, null, ref);
      const W = dequantizeGptq(q.gptq);
      for (let i = 0; i < 3 * N; i++) {
        // The decode path's bound, loosely: x rounded to int8 per chunk (at most max|x|/254 per element) times |w|.
        const m = Math.floor(i / N);
        let mag = 0, wsum = 0, xmax = 0;
        for (let k = 0; k < K; k++) {
          mag += Math.abs(x.f32[m * K + k] * W[(i % N) * K + k]);
          wsum += Math.abs(W[(i % N) * K + k]);
          xmax = Math.max(xmax, Math.abs(x.f32[m * K + k]));
        }
        assert.ok(Math.abs(out.f32[i] - ref.f32[i]) <= (xmax / 254) * wsum + 1e-5 * mag, `out ${i}: ${out.f32[i]} vs ref ${ref.f32[i]}`);
      }
      assert.deepEqual(said, []);
      // Group 0 holds 33 inputs and group 3 holds 31: not runs of one size.
      const uneven = randomCodes(4, N, K, 32, false);
      uneven.gIdx[32] = 0;
      const qu = fromGptq(packGptq(uneven, { sym: false, descAct: true }));
      assert.equal(qgPack({ ...uneven }), null);
      const o2 = Tensor.zeros('F32', [3, N]), r2 = Tensor.zeros('F32', [3, N]);
      matmulQ(cpuBackend, x, qu, null, o2);
      matmulQ(cpuBackend, x, qu, null, o2);
      refBackend.matmulQ!(x, qu, null, r2);
      assert.deepEqual(o2.f32, r2.f32);
      assert.equal(said.length, 1);
      assert.match(said[0], /GPTQ layer \[32,128\] with group size 32 .* runs the reference matmul/);
    } finally {
      setWarningHandler(prev, { reset: true });
    }
  });

  it('matmulQg checks its arguments', () => {
    const p = qgPack(randomCodes(4, 8, 64, 32, false))!;
    const y = new Float32Array(8), x = new Float32Array(64);
    const call = (o: Partial<Record<string, unknown>> = {}) => {
      const a = { codes: p.codes, bits: 4, Kpad: 64, G: 32, nG: 2, perm: null, ...o };
      addon!.matmulQg(y, x, a.codes as Uint8Array, a.bits as number, 8, 64, a.Kpad as number, a.G as number, a.nG as number, p.scales, p.zeros,
        a.perm as Int32Array | null, 1, null);
    };
    call();
    assert.throws(() => call({ bits: 5 }), /bits must be 2, 3, 4 or 8/);
    assert.throws(() => call({ Kpad: 128 }), /Kpad must be K rounded up/);
    assert.throws(() => call({ G: 48 }), /G must be a multiple of 32/);
    assert.throws(() => call({ codes: p.codes.subarray(1) }), RangeError);
    assert.throws(() => call({ perm: new Int32Array(63) }), RangeError);
    assert.throws(() => call({ perm: Int32Array.from({ length: 64 }, (_, i) => (i === 3 ? 64 : i)) }), /perm\[3\] = 64 is outside/);
  });
});
