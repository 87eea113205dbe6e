// Every backward op of src/train/ops.ts against central finite differences in float64: for a random upstream gradient
// r, the scalar L = Σ r ⊙ f(inputs) is differentiated numerically in every input element and compared with what the
// backward returns. Also: the float32 forwards give the inference backend's outputs (ref), so a training forward
// computes the same logits as generation.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as ops from '../src/train/ops.js';
import type { Vec } from '../src/train/ops.js';
import { refBackend } from '../src/backend/ref/index.js';
import { cpuBackend } from '../src/backend/cpu/index.js';
import { loadAddon } from '../src/native/addon.js';
import * as kernels from '../src/train/kernels.js';
import { quantize4bit } from '../src/quant/bnb4.js';
import { rtnQuantize } from '../src/quant/gptq.js';
import { packGptq } from '../src/quant/gptq-format.js';
import { packAwq } from '../src/quant/awq-format.js';
import { dequantizeWeight, fromAwq, fromBnb4, fromGptq, fromInt8, type QuantizedWeight } from '../src/quant/qweight.js';
import { quantizeInt8 } from '../src/quant/int8.js';
import { Tensor } from '../src/tensor/tensor.js';
import { PyRandom } from '../src/util/pyrandom.js';

const rng = new PyRandom(11);
const uni = () => (rng.getrandbits(30) + 0.5) / 2 ** 30;
const randn = (n: number, s = 1) => Float64Array.from({ length: n }, () => s * Math.sqrt(-2 * Math.log(uni())) * Math.cos(2 * Math.PI * uni()));

/** max |analytic − numeric| over every element of every input, against the largest numeric magnitude. */
function checkGrads(name: string, f: (xs: Float64Array[]) => Vec, xs: Float64Array[], grads: Vec[], r: Float64Array, tol = 1e-6): void {
  const L = (v: Vec) => { let s = 0; for (let i = 0; i < v.length; i++) s += r[i] * v[i]; return s; };
  const h = 1e-6;
  xs.forEach((x, j) => {
    let worst = 0, scale = 1e-3;
    for (let i = 0; i < x.length; i++) {
      const keep = x[i];
      x[i] = keep + h; const up = L(f(xs));
      x[i] = keep - h; const down = L(f(xs));
      x[i] = keep;
      const num = (up - down) / (2 * h);
      scale = Math.max(scale, Math.abs(num));
      worst = Math.max(worst, Math.abs(num - grads[j][i]));
    }
    assert.ok(worst <= tol * scale, `${name}: input ${j}: max error ${worst} against gradients up to ${scale}`);
  });
}

describe('training ops: backward against finite differences (float64)', () => {
  it('linear: dx, dw, db', () => {
    const M = 3, N = 4, K = 5, x = randn(M * K), w = randn(N * K), b = randn(N), r = randn(M * N);
    const dx = ops.linearBackwardInput(r, w, M, N, K), { dw, db } = ops.linearBackwardWeight(r, x, M, N, K, true);
    checkGrads('linear', ([x, w, b]) => ops.linearForward(x, w, b, M, N, K), [x, w, b], [dx, dw, db!], r);
  });

  it('embedding: rows accumulate, a repeated id gets both', () => {
    const V = 6, D = 3, ids = [2, 5, 2, 0], table = randn(V * D), r = randn(ids.length * D);
    const f = ([t]: Float64Array[]) => { const y = new Float64Array(ids.length * D); ids.forEach((id, n) => y.set(t.subarray(id * D, id * D + D), n * D)); return y; };
    checkGrads('embedding', f, [table], [ops.embeddingBackward(r, ids, V, D)], r);
  });

  it('rmsnorm: dx, dw', () => {
    const rows = 3, D = 7, x = randn(rows * D), w = randn(D), r = randn(rows * D);
    const { act } = ops.rmsnormForward(x, w, 1e-5, rows, D);
    const { dx, dw } = ops.rmsnormBackward(r, w, act, rows, D);
    checkGrads('rmsnorm', ([x, w]) => ops.rmsnormForward(x, w, 1e-5, rows, D).y, [x, w], [dx, dw], r);
  });

  it('layernorm: dx, dw, db', () => {
    const rows = 3, D = 6, x = randn(rows * D), w = randn(D), b = randn(D), r = randn(rows * D);
    const { act } = ops.layernormForward(x, w, b, 1e-5, rows, D);
    const { dx, dw, db } = ops.layernormBackward(r, w, act, rows, D);
    checkGrads('layernorm', ([x, w, b]) => ops.layernormForward(x, w, b, 1e-5, rows, D).y, [x, w, b], [dx, dw, db], r);
  });

  it('rope: the inverse rotation', () => {
    const nH = 2, hd = 8, pos = [0, 3, 7], inv = Float32Array.from({ length: hd / 2 }, (_, i) => 10000 ** (-2 * i / hd));
    const x = randn(pos.length * nH * hd), r = randn(x.length);
    checkGrads('rope', ([x]) => ops.ropeForward(x, pos, inv, nH, hd), [x], [ops.ropeBackward(r, pos, inv, nH, hd)], r);
  });

  for (const [label, extra] of [
    ['causal, GQA', {}],
    ['left padding mask', { pad: true }],
    ['sliding window 3', { window: 3 }],
  ] as const) {
    it(`attention (${label}): dq, dk, dv`, () => {
      const B = 2, T = 5, H = 4, nKV = 2, hd = 3;
      const keyMask = 'pad' in extra ? Uint8Array.from([0, 0, 1, 1, 1, 1, 1, 1, 1, 1]) : null;
      const sh: ops.AttentionShape = { B, T, H, nKV, hd, scale: 1 / Math.sqrt(hd), keyMask, window: 'window' in extra ? extra.window : 0 };
      const q = randn(B * T * H * hd), k = randn(B * T * nKV * hd), v = randn(B * T * nKV * hd), r = randn(B * T * H * hd);
      const { act } = ops.attentionForward(q, k, v, sh);
      const { dq, dk, dv } = ops.attentionBackward(r, act, sh);
      checkGrads(`attention ${label}`, ([q, k, v]) => ops.attentionForward(q, k, v, sh).o, [q, k, v], [dq, dk, dv], r);
      if (keyMask) for (let i = 0; i < 2 * nKV * hd; i++) assert.equal(dk[i], 0, 'a padding key gets no gradient');
    });
  }

  it('silu·mul and relu', () => {
    const g = randn(10, 2), u = randn(10), r = randn(10);
    const { dg, du } = ops.siluMulBackward(r, g, u);
    checkGrads('siluMul', ([g, u]) => ops.siluMulForward(g, u), [g, u], [dg, du], r);
    const x = randn(10);
    checkGrads('relu', ([x]) => ops.reluForward(x), [x], [ops.reluBackward(r, x)], r);
  });

  it('causal-LM cross-entropy (shift, ignore index -100, mean or a given divisor) and the distillation KL', () => {
    const B = 2, T = 4, V = 5, logits = randn(B * T * V, 2);
    const labels = [1, 4, -100, 2, 0, -100, 3, 3];
    const { loss, count, dlogits } = ops.causalLmLoss(logits, labels, B, T, V);
    assert.equal(count, 4);                              // targets at t+1: [4, −, 2] and [−, 3, 3]
    // By hand: the mean of −log softmax over the four scored rows.
    let want = 0;
    for (const [b, t] of [[0, 0], [0, 2], [1, 1], [1, 2]]) {
      const o = (b * T + t) * V, y = labels[b * T + t + 1];
      const lse = Math.log(Array.from({ length: V }, (_, i) => Math.exp(logits[o + i])).reduce((a, c) => a + c));
      want += (lse - logits[o + y]) / 4;
    }
    assert.ok(Math.abs(loss - want) < 1e-12, `${loss} vs ${want}`);
    const one = new Float64Array([1]);
    checkGrads('cross-entropy', ([l]) => new Float64Array([ops.causalLmLoss(l, labels, B, T, V).loss]), [logits], [dlogits], one);
    const teacher = randn(B * T * V, 2);
    const kd = ops.distillLoss(logits, teacher, labels, B, T, V, 2);
    assert.equal(kd.count, 4);
    checkGrads('distillation KL', ([l]) => new Float64Array([ops.distillLoss(l, teacher, labels, B, T, V, 2).loss]), [logits], [kd.dlogits], one);
    assert.ok(Math.abs(ops.distillLoss(teacher, teacher, labels, B, T, V, 2).loss) < 1e-12, 'KL of a distribution with itself is 0');
    const d10 = ops.causalLmLoss(logits, labels, B, T, V, 10);
    assert.ok(Math.abs(d10.loss - (want * 4) / 10) < 1e-12);
    assert.throws(() => ops.causalLmLoss(logits, [0, 9, 0, 0, 0, 0, 0, 0], B, T, V), /label 9 at \[0, 1\] is outside the vocabulary/);
  });
});

describe('training forwards in float32 give the inference ops', () => {
  const f32 = (n: number) => Float32Array.from(randn(n));
  const t = (shape: number[], d: Float32Array) => Tensor.f32(shape, d);
  const close = (a: ArrayLike<number>, b: ArrayLike<number>, what: string) => {
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= 1e-5 * (1 + Math.abs(b[i])), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
  };
  it('rmsnorm, layernorm, rope, attention, siluMul', () => {
    const rows = 4, D = 8, x = f32(rows * D), w = f32(D), b = f32(D);
    const out = Tensor.zeros('F32', [rows, D]);
    refBackend.rmsnorm(t([rows, D], x), t([D], w), 1e-5, out);
    close(ops.rmsnormForward(x, w, 1e-5, rows, D).y, out.f32, 'rmsnorm');
    refBackend.layernorm(t([rows, D], x), t([D], w), t([D], b), 1e-5, out);
    close(ops.layernormForward(x, w, b, 1e-5, rows, D).y, out.f32, 'layernorm');
    const pos = Int32Array.from([0, 1, 5, 9]), inv = Float32Array.from({ length: 4 }, (_, i) => 10000 ** (-i / 4));
    const xr = t([rows, 1, D], x.slice());
    refBackend.rope(xr, pos, inv);
    close(ops.ropeForward(x, pos, inv, 1, D), xr.f32, 'rope');
    const B = 1, T = 4, H = 2, nKV = 1, hd = 4;
    const q = f32(B * T * H * hd), k = f32(B * T * nKV * hd), v = f32(B * T * nKV * hd), o = Tensor.zeros('F32', [B, T, H, hd]);
    refBackend.attention(t([B, T, H, hd], q), t([B, T, nKV, hd], k), t([B, T, nKV, hd], v), { pastLen: 0, keyMask: null, scale: 0.5, window: 2 }, o);
    close(ops.attentionForward(q, k, v, { B, T, H, nKV, hd, scale: 0.5, keyMask: null, window: 2 }).o, o.f32, 'attention');
    const g = f32(16), u = f32(16), y = Tensor.zeros('F32', [16]);
    refBackend.siluMul(t([16], g), t([16], u), y);
    close(ops.siluMulForward(g, u), y.f32, 'siluMul');
  });
});

describe('native training kernels against their twins (float32)', { skip: loadAddon() ? false : 'the native addon is not built' }, () => {
  for (const [label, B, T, H, nKV, hd, pad, window] of [
    ['GQA 4/2, odd sizes', 2, 7, 4, 2, 5, false, 0], ['MHA, left padding', 2, 9, 3, 3, 8, true, 0], ['sliding window 3, GQA 6/1', 1, 11, 6, 1, 4, false, 3],
  ] as const) {
    it(`attention forward and backward: ${label}`, () => {
      const f = (n: number) => Float32Array.from(randn(n));
      const keyMask = pad ? Uint8Array.from({ length: B * T }, (_, i) => (i < T && i < 3 ? 0 : 1)) : null;
      const sh: ops.AttentionShape = { B, T, H, nKV, hd, scale: 1 / Math.sqrt(hd), keyMask, window };
      const q = f(B * T * H * hd), k = f(B * T * nKV * hd), v = f(B * T * nKV * hd), dO = f(B * T * H * hd);
      const nat = kernels.attentionForward(cpuBackend, q, k, v, sh), ref = ops.attentionForward(q, k, v, sh);
      const close = (a: ArrayLike<number>, b: ArrayLike<number>, what: string) => {
        for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) <= 1e-5 * (1 + Math.abs(b[i])), `${label} ${what}[${i}]: ${a[i]} vs ${b[i]}`);
      };
      close(nat.o, ref.o, 'o');
      close(nat.act.p, ref.act.p, 'p');
      const gn = kernels.attentionBackward(cpuBackend, dO, nat.act, sh), gr = ops.attentionBackward(dO, ref.act, sh);
      close(gn.dq, gr.dq, 'dq');
      close(gn.dk, gr.dk, 'dk');
      close(gn.dv, gr.dv, 'dv');
    });
  }
});

describe('native silu·mul backward against its twin', { skip: loadAddon() ? false : 'the native addon is not built' }, () => {
  it('dg, du on 10001 values (threads split them)', () => {
    const n = 10001, g = Float32Array.from(randn(n, 3)), u = Float32Array.from(randn(n)), dy = Float32Array.from(randn(n));
    const nat = kernels.siluMulBackward(cpuBackend, dy, g, u), ref = ops.siluMulBackward(dy, g, u);
    for (let i = 0; i < n; i++) {
      assert.ok(Math.abs(nat.dg[i] - ref.dg[i]) <= 1e-5 * (1 + Math.abs(ref.dg[i])), `dg[${i}]`);
      assert.ok(Math.abs(nat.du[i] - ref.du[i]) <= 1e-5 * (1 + Math.abs(ref.du[i])), `du[${i}]`);
    }
    const f = kernels.siluMulForward(cpuBackend, g, u), fr = ops.siluMulForward(g, u);
    for (let i = 0; i < n; i++) assert.ok(Math.abs(f[i] - fr[i]) <= 1e-5 * (1 + Math.abs(fr[i])), `y[${i}]`);
  });
});

describe('native input gradients of frozen linears (dx = dy·W) against the twin', { skip: loadAddon() ? false : 'the native addon is not built' }, () => {
  const M = 7, N = 37, K = 160;
  const w = Float32Array.from(randn(N * K, 0.1)), dy = Float32Array.from(randn(M * N));
  const close = (got: Float32Array, want: ArrayLike<number>, what: string) => {
    let scale = 0;
    for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
    for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= 1e-5 * scale, `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  };
  it('float32 and bfloat16 weights', () => {
    for (const t of [Tensor.f32([N, K], w), new Tensor('BF16', [N, K], Uint16Array.from(w, (x) => new Uint16Array(new Float32Array([x]).buffer)[1]))]) {
      const out = Tensor.zeros('F32', [M, K]);
      cpuBackend.matmulT!(Tensor.f32([M, N], dy), t, out);
      close(out.f32, ops.linearBackwardInput(dy, t.toF32(), M, N, K), `${t.dtype}`);
    }
  });
  it('NF4 (plain and double-quantized scales), LLM.int8, GPTQ 4-bit in act order, AWQ GEMM: never the whole weight, same product', () => {
    const cases: [string, QuantizedWeight][] = [
      ['nf4', fromBnb4(quantize4bit(w, [N, K], { quantType: 'nf4', blocksize: 64 }))],
      ['nf4+dq', fromBnb4(quantize4bit(w, [N, K], { quantType: 'nf4', blocksize: 64, doubleQuant: true }))],
      ['int8', fromInt8(quantizeInt8(w, [N, K]), 6)],
    ];
    const codes = rtnQuantize(Float32Array.from(randn(40 * K, 0.1)), [40, K], { bits: 4, groupSize: 32, sym: false }).codes;   // GPTQ packs 8 outputs per word
    const order = Array.from({ length: K }, (_, i) => i).sort((a, b) => ((a * 37) % K) - ((b * 37) % K));
    const act = { ...codes, gIdx: Int32Array.from({ length: K }, (_, k) => Math.floor(order.indexOf(k) / 32)) };
    cases.push(['gptq act-order', fromGptq(packGptq(act, { sym: false, descAct: true }))]);
    const n40 = rtnQuantize(Float32Array.from(randn(40 * K, 0.1)), [40, K], { bits: 4, groupSize: 32, sym: false }).codes;
    cases.push(['awq gemm', fromAwq(packAwq(n40))]);
    for (const [what, qw] of cases) {
      const [n] = qw.shape, g = Float32Array.from(randn(M * n)), out = Tensor.zeros('F32', [M, K]);
      assert.equal(cpuBackend.matmulQT!(Tensor.f32([M, n], g), qw, out), true, what);
      close(out.f32, ops.linearBackwardInput(g, dequantizeWeight(qw), M, n, K), what);
    }
  });
});
