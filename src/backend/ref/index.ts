// The reference backend: plain TypeScript, the definition of every op and the oracle in tests. Not a fast path.
// Shapes are checked by src/backend/shapes.ts, the same rules as every other backend.
import { hostMemory } from '../host.js';
import type { AttentionArgs, Backend, OpName } from '../backend.js';
import { f16ToF32, type DType } from '../../tensor/dtype.js';
import type { Tensor } from '../../tensor/tensor.js';
import { QUANT_FORMATS, type QuantFormat } from '../../quant/qweight.js';
import { matmulQRef } from './quant.js';
import { attentionShape, elementwiseShape, embeddingShape, lastDim, matmulShape, normShape, ropeShape, softmaxShape } from '../shapes.js';

const FLOAT_WEIGHTS: readonly DType[] = ['F32', 'BF16', 'F16'];

export const refBackend: Backend & { rowF32(w: Tensor, row: number, dst: Float32Array): void } = {
  name: 'ref',
  device: 'cpu',
  ...hostMemory,

  supports(op: OpName, dtypes: readonly (DType | QuantFormat)[]): boolean {
    if (op === 'matmulQ') return dtypes.every((d) => QUANT_FORMATS.includes(d as QuantFormat));
    if (op === 'matmulQMany') return false;
    if (op === 'matmul' || op === 'embedding') return dtypes.every((d) => FLOAT_WEIGHTS.includes(d as DType));
    return dtypes.every((d) => d === 'F32');
  },

  /** Row `row` of a 2-D float weight, widened into dst. */
  rowF32(w: Tensor, row: number, dst: Float32Array): void {
    const K = lastDim(w);
    const base = row * K;
    if (w.dtype === 'F32') { dst.set((w.data as Float32Array).subarray(base, base + K)); return; }
    const src = w.data as Uint16Array;
    if (w.dtype === 'BF16') {
      const d32 = new Uint32Array(dst.buffer, dst.byteOffset, K);
      for (let k = 0; k < K; k++) d32[k] = src[base + k] << 16;
      return;
    }
    if (w.dtype === 'F16') { for (let k = 0; k < K; k++) dst[k] = f16ToF32(src[base + k]); return; }
    throw new TypeError(`unsupported weight dtype ${w.dtype}`);
  },

  matmul(x, w, bias, out) {
    const { M, N, K } = matmulShape(x, w, bias, out);
    const X = x.f32, Y = out.f32, row = new Float32Array(K);
    const B = bias ? bias.f32 : null;
    for (let n = 0; n < N; n++) {
      this.rowF32(w, n, row);
      for (let m = 0; m < M; m++) {
        let acc = 0;
        const xo = m * K;
        for (let k = 0; k < K; k++) acc += X[xo + k] * row[k];
        Y[m * N + n] = Math.fround(acc + (B ? B[n] : 0));
      }
    }
  },

  matmulQ(x, qw, bias, out) {
    matmulQRef(x, qw, bias, out);
  },

  rmsnorm(x, w, eps, out) {
    const { rows, D } = normShape('rmsnorm', x, { w }, out);
    const X = x.f32, W = w.f32, Y = out.f32;
    for (let r = 0; r < rows; r++) {
      let ss = 0;
      for (let i = 0; i < D; i++) ss += X[r * D + i] * X[r * D + i];
      const inv = 1 / Math.sqrt(ss / D + eps);
      for (let i = 0; i < D; i++) Y[r * D + i] = W[i] * Math.fround(X[r * D + i] * inv);
    }
  },

  layernorm(x, w, b, eps, out) {
    const { rows, D } = normShape('layernorm', x, { w, b }, out);
    const X = x.f32, W = w.f32, Bb = b.f32, Y = out.f32;
    for (let r = 0; r < rows; r++) {
      let mean = 0;
      for (let i = 0; i < D; i++) mean += X[r * D + i];
      mean /= D;
      let v = 0;
      for (let i = 0; i < D; i++) { const d = X[r * D + i] - mean; v += d * d; }
      const inv = 1 / Math.sqrt(v / D + eps);
      for (let i = 0; i < D; i++) Y[r * D + i] = (X[r * D + i] - mean) * inv * W[i] + Bb[i];
    }
  },

  rope(x, positions, invFreq) {
    const { rows, nHeads, hd } = ropeShape(x, positions, invFreq);
    const half = hd / 2;
    const X = x.f32;
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < half; i++) {
        const ang = Math.fround(positions[r] * invFreq[i]);
        const c = Math.fround(Math.cos(ang)), s = Math.fround(Math.sin(ang));
        for (let h = 0; h < nHeads; h++) {
          const o = (r * nHeads + h) * hd;
          const a = X[o + i], b = X[o + i + half];
          X[o + i] = a * c - b * s;           // rotate_half: [x1, x2] → [−x2, x1]
          X[o + i + half] = b * c + a * s;
        }
      }
    }
  },

  attention(q, kCache, vCache, args: AttentionArgs, out) {
    const { B, T, H, nKV, hd, S } = attentionShape(q, kCache, vCache, args, out);
    const group = H / nKV;
    const kvLen = args.pastLen + T;
    const Q = q.f32, K = kCache.f32, V = vCache.f32, O = out.f32;
    const scores = new Float64Array(kvLen);
    for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / group);                      // kv head j serves q heads j·g … j·g+g−1
      const qo = ((b * T + t) * H + h) * hd;
      const last = args.pastLen + t;
      const first = args.window ? Math.max(0, last - args.window + 1) : 0;
      let max = -Infinity;
      for (let s = 0; s < first; s++) scores[s] = -Infinity;
      for (let s = first; s <= last; s++) {
        if (args.keyMask && !args.keyMask[b * kvLen + s]) { scores[s] = -Infinity; continue; }
        const ko = ((b * S + s) * nKV + kvh) * hd;
        let dot = 0;
        for (let i = 0; i < hd; i++) dot += Q[qo + i] * K[ko + i];
        scores[s] = dot * args.scale;
        if (scores[s] > max) max = scores[s];
      }
      const oo = qo;
      for (let i = 0; i < hd; i++) O[oo + i] = 0;
      if (max === -Infinity) continue;                         // a padding query with no visible key
      let sum = 0;
      for (let s = 0; s <= last; s++) { scores[s] = Math.exp(scores[s] - max); sum += scores[s]; }
      for (let s = 0; s <= last; s++) {
        const p = scores[s] / sum;
        if (p === 0) continue;
        const vo = ((b * S + s) * nKV + kvh) * hd;
        for (let i = 0; i < hd; i++) O[oo + i] += p * V[vo + i];
      }
    }
  },

  siluMul(gate, up, out) {
    elementwiseShape('siluMul', gate, { up }, out);
    const G = gate.f32, U = up.f32, Y = out.f32;
    for (let i = 0; i < G.length; i++) Y[i] = (G[i] / (1 + Math.exp(-G[i]))) * U[i];
  },

  relu(x, out) {
    elementwiseShape('relu', x, {}, out);
    const X = x.f32, Y = out.f32;
    for (let i = 0; i < X.length; i++) Y[i] = X[i] > 0 ? X[i] : 0;
  },

  softmax(x, out) {
    const { rows, D } = softmaxShape(x, out);
    const X = x.f32, Y = out.f32;
    for (let r = 0; r < rows; r++) {
      let max = -Infinity;
      for (let i = 0; i < D; i++) max = Math.max(max, X[r * D + i]);
      let sum = 0;
      for (let i = 0; i < D; i++) { const e = Math.exp(X[r * D + i] - max); Y[r * D + i] = e; sum += e; }
      for (let i = 0; i < D; i++) Y[r * D + i] /= sum;
    }
  },

  embedding(table, ids, out) {
    const { V, D } = embeddingShape(table, ids, out);
    const row = new Float32Array(D), Y = out.f32;
    for (let n = 0; n < ids.length; n++) {
      if (ids[n] < 0 || ids[n] >= V) throw new RangeError(`embedding: token id ${ids[n]} outside [0, ${V})`);
      this.rowF32(table, ids[n], row);
      Y.set(row, n * D);
    }
  },

  add(a, b, out) {
    elementwiseShape('add', a, { b }, out);
    const A = a.f32, Bb = b.f32, Y = out.f32;
    for (let i = 0; i < A.length; i++) Y[i] = A[i] + Bb[i];
  },
};
