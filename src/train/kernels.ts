// The training ops that have native kernels (native/cpu/train.h), with their TypeScript twins in ./ops.ts as the
// fallback and the reference: attention forward and backward, silu·mul forward (the inference op) and backward, and
// the inference ops for RMSNorm's forward, RoPE both ways (the inverse rotation is the
// rotation by −position) and residual adds. The cpu backend takes the native path when the addon
// loads; any other backend (ref) runs the twins.
import type { Backend } from '../backend/backend.js';
import { loadAddon } from '../native/addon.js';
import { Tensor } from '../tensor/tensor.js';
import * as ops from './ops.js';

function native(be: Backend) {
  return be.name === 'cpu' ? loadAddon() : null;
}

export function attentionForward(be: Backend, q: Float32Array, k: Float32Array, v: Float32Array, sh: ops.AttentionShape): { o: Float32Array; act: ops.AttentionAct } {
  const a = native(be);
  if (!a) { const r = ops.attentionForward(q, k, v, sh); return { o: r.o as Float32Array, act: r.act }; }
  const { B, T, H, nKV, hd } = sh;
  const o = new Float32Array(B * T * H * hd), p = new Float32Array(B * H * T * T);
  a.attentionTrainForward(o, p, q, k, v, sh.keyMask, B, T, H, nKV, hd, sh.scale, sh.window);
  return { o, act: { q, k, v, p } };
}

export function attentionBackward(be: Backend, dO: Float32Array, act: ops.AttentionAct, sh: ops.AttentionShape): { dq: Float32Array; dk: Float32Array; dv: Float32Array } {
  const a = native(be);
  if (!a) { const r = ops.attentionBackward(dO, act, sh); return { dq: r.dq as Float32Array, dk: r.dk as Float32Array, dv: r.dv as Float32Array }; }
  const dq = new Float32Array(act.q.length), dk = new Float32Array(act.k.length), dv = new Float32Array(act.v.length);
  a.attentionTrainBackward(dq, dk, dv, dO, act.q as Float32Array, act.k as Float32Array, act.v as Float32Array, act.p as Float32Array, sh.B, sh.T, sh.H, sh.nKV, sh.hd, sh.scale);
  return { dq, dk, dv };
}

export function siluMulForward(be: Backend, g: Float32Array, u: Float32Array): Float32Array {
  if (be.name !== 'cpu') return ops.siluMulForward(g, u) as Float32Array;
  const out = Tensor.zeros('F32', [g.length]);
  be.siluMul(new Tensor('F32', [g.length], g), new Tensor('F32', [u.length], u), out);
  return out.f32;
}

export function siluMulBackward(be: Backend, dy: Float32Array, g: Float32Array, u: Float32Array): { dg: Float32Array; du: Float32Array } {
  const a = native(be);
  if (!a) { const r = ops.siluMulBackward(dy, g, u); return { dg: r.dg as Float32Array, du: r.du as Float32Array }; }
  const dg = new Float32Array(g.length), du = new Float32Array(g.length);
  a.siluMulBackward(dg, du, dy, g, u);
  return { dg, du };
}

/** RMSNorm forward on the backend; the record's 1/rms per row comes from one more pass over x here. */
export function rmsnormForward(be: Backend, x: Float32Array, w: Float32Array, eps: number, rows: number, D: number): { y: Float32Array; act: ops.RmsNormAct } {
  if (be.name !== 'cpu') { const r = ops.rmsnormForward(x, w, eps, rows, D); return { y: r.y as Float32Array, act: r.act }; }
  const out = Tensor.zeros('F32', [rows, D]);
  be.rmsnorm(new Tensor('F32', [rows, D], x), new Tensor('F32', [D], w), eps, out);
  return { y: out.f32, act: { x, rstd: rstdOf(x, eps, rows, D) } };
}

function rstdOf(x: Float32Array, eps: number, rows: number, D: number): Float32Array {
  const r = new Float32Array(rows);
  for (let i = 0; i < rows; i++) {
    let ss = 0;
    for (let j = 0; j < D; j++) ss += x[i * D + j] * x[i * D + j];
    r[i] = 1 / Math.sqrt(ss / D + eps);
  }
  return r;
}

/** RoPE of x [rows, nHeads, hd] in place (forward: positions; backward: the same call with −positions). */
export function ropeInPlace(be: Backend, x: Float32Array, positions: Int32Array, invFreq: Float32Array, nHeads: number, hd: number): Float32Array {
  if (be.name !== 'cpu') { const y = ops.ropeForward(x, positions, invFreq, nHeads, hd); x.set(y); return x; }
  be.rope(new Tensor('F32', [positions.length, nHeads, hd], x), positions, invFreq);
  return x;
}

/** a + b into a new array. */
export function add(be: Backend, a: Float32Array, b: Float32Array): Float32Array {
  if (be.name !== 'cpu') return ops.addVec(a, b) as Float32Array;
  const out = Tensor.zeros('F32', [a.length]);
  be.add(new Tensor('F32', [a.length], a), new Tensor('F32', [b.length], b), out);
  return out.f32;
}
