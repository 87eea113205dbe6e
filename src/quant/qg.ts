// GPTQ weights as the native kernels take them (native/cpu/kernels.h, QgWeight): the input dimension permuted so that
// every group is contiguous (act-order's g_idx sorted; the identity otherwise), padded to a multiple of 64 with zero
// codes, each row cut into 64-code chunks whose bytes suit a SIMD decode with no lookups. Built once per layer from
// the unpacked codes (GptqCodes); the file keeps AutoGPTQ's layout. qgDecodeRef is the decode kernels' twin.
import { roundHalfEven } from './int8.js';
import { f16ToF32, f32ToF16 } from '../tensor/dtype.js';
import type { GptqBits, GptqCodes } from './gptq-types.js';

export interface QgPacked {
  bits: GptqBits;
  /** [out N, in K]. */
  N: number;
  K: number;
  /** K rounded up to a multiple of 64. */
  Kpad: number;
  /** Group size in the permuted order (a multiple of 32; Kpad for a single group). */
  G: number;
  nG: number;
  /** [N, Kpad/64 · qgChunkBytes(bits)]. */
  codes: Uint8Array;
  /** [N, nG], float16 bits: every GPTQ and AWQ file stores its scales as float16, and the kernels read them so. */
  scales: Uint16Array;
  zeros: Uint8Array;
  /** The input read at each permuted position (length K), or null for the identity. */
  perm: Int32Array | null;
}

/** The largest |xq| of the kernels' activations: int8 against 2/3/4-bit codes (vpmaddubsw), int16 against 8-bit. */
export function qgXmax(bits: number): number {
  return bits <= 4 ? 127 : 8191;
}

export function qgChunkBytes(bits: number): number {
  return bits === 3 ? 24 : 8 * bits;
}

/** Bytes of one 64-code chunk in the kernels' layout (kernels.h): see QgWeight. */
export function packChunk(bits: GptqBits, c: ArrayLike<number>, out: Uint8Array, o: number): void {
  if (bits === 8) for (let p = 0; p < 64; p++) out[o + p] = c[p];
  else if (bits === 4) for (let i = 0; i < 32; i++) out[o + i] = c[i] | (c[i + 32] << 4);
  else {
    for (let i = 0; i < 16; i++) out[o + i] = (c[i] & 3) | ((c[i + 16] & 3) << 2) | ((c[i + 32] & 3) << 4) | ((c[i + 48] & 3) << 6);
    if (bits === 3) for (let p = 0; p < 64; p++) out[o + 16 + (p >> 3)] |= (c[p] >> 2) << (p & 7);
  }
}

/** Code p of a chunk (the inverse of packChunk). */
export function chunkCode(bits: GptqBits, b: Uint8Array, o: number, p: number): number {
  if (bits === 8) return b[o + p];
  if (bits === 4) return p < 32 ? b[o + p] & 15 : b[o + p - 32] >> 4;
  const lo = (b[o + (p & 15)] >> (2 * (p >> 4))) & 3;
  return bits === 2 ? lo : lo | (((b[o + 16 + (p >> 3)] >> (p & 7)) & 1) << 2);
}

/**
 * The kernels' layout of one layer, or null when its groups cannot be made contiguous runs of one size (a g_idx
 * that no act-order run writes) or that size is not a multiple of 32: such a layer takes the reference matmul.
 */
export function qgPack(q: GptqCodes): QgPacked | null {
  const { bits } = q, [N, K] = q.shape;
  const order = qgOrder(q.gIdx, K, q.groupSize);
  if (!order) return null;
  const { Kpad, G, nG, perm } = order;
  const cb = qgChunkBytes(bits), nc = Kpad / 64;
  const codes = new Uint8Array(N * nc * cb), chunk = new Uint8Array(64);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let c = 0; c < nc; c++) {
      for (let p = 0; p < 64; p++) {
        const j = c * 64 + p;
        chunk[p] = j < K ? q.intWeight[row + (perm ? perm[j] : j)] : 0;
      }
      packChunk(bits, chunk, codes, (n * nc + c) * cb);
    }
  }
  const scales = new Uint16Array(N * nG), zeros = new Uint8Array(N * nG);
  for (let g = 0; g < nG; g++)
    for (let n = 0; n < N; n++) {
      const s = q.scales[g * N + n], h = f32ToF16(s);
      // unpackGptq / unpackAwq widen the files' float16 scales, so this holds for every layer that reaches here.
      if (f16ToF32(h) !== s) throw new Error(`qgPack: scale [${g}, ${n}] = ${s} is not a float16 value`);
      scales[n * nG + g] = h;
      zeros[n * nG + g] = q.zeros[g * N + n];
    }
  return { bits, N, K, Kpad, G, nG, codes, scales, zeros, perm };
}

/**
 * The kernels' input order for a layer with this g_idx: K padded to a multiple of 64, the group size in that order
 * (Kpad for a single group) and the permutation that makes every group a contiguous run (null: the identity), or
 * null when no such order exists (a g_idx no act-order run writes) or the group size is not a multiple of 32.
 */
export function qgOrder(gIdx: Int32Array, K: number, groupSize: number): { Kpad: number; G: number; nG: number; perm: Int32Array | null } | null {
  const nG = groupSize === -1 ? 1 : Math.ceil(K / groupSize);
  const Kpad = Math.ceil(K / 64) * 64;
  const Gfile = groupSize === -1 ? K : groupSize;
  const G = nG === 1 ? Kpad : Gfile;
  if (G % 32 !== 0) return null;
  // Stable sort of the inputs by group: act-order files list each group's inputs in their original order.
  let monotone = true;
  for (let k = 1; k < K; k++) if (gIdx[k] < gIdx[k - 1]) { monotone = false; break; }
  const order = Int32Array.from({ length: K }, (_, k) => k);
  if (!monotone) order.sort((a, b) => gIdx[a] - gIdx[b] || a - b);
  for (let j = 0; j < K; j++) if (gIdx[order[j]] !== Math.floor(j / Gfile)) return null;
  return { Kpad, G, nG, perm: monotone ? null : order };
}

/**
 * quantize_chunk (native/cpu/gemm.cc), the twin both integer-activation decodes share: the 64 finite values
 * v[off .. off+64) become q[off + i] = round_half_even(fl(v·fl(xmax/max|v|))) clamped to ±xmax (0 for an all-zero
 * chunk); returns the chunk's scale fl(max|v|/xmax).
 */
export function quantizeChunk(v: ArrayLike<number>, off: number, xmax: number, q: Int16Array): number {
  let mx = 0;
  for (let i = off; i < off + 64; i++) mx = Math.max(mx, Math.abs(v[i]));
  const inv = mx > 0 ? Math.fround(xmax / mx) : 0;
  for (let i = off; i < off + 64; i++) q[i] = Math.max(-xmax, Math.min(xmax, roundHalfEven(Math.fround(v[i] * inv))));
  return Math.fround(mx / xmax);
}

/**
 * One x row as qg_prep gives it (natural order): xq [Kpad] (|xq| ≤ qgXmax(bits)), dx [Kpad/64] (one scale per chunk),
 * xbar [nG]; null when x is not finite.
 */
export function qgQuantizeX(x: Float32Array, p: QgPacked): { xq: Int16Array; dx: Float32Array; xbar: Float32Array } | null {
  const { K, Kpad, G, nG, perm } = p, xmax = qgXmax(p.bits);
  const v = new Float32Array(Kpad);
  for (let j = 0; j < K; j++) {
    v[j] = x[perm ? perm[j] : j];
    if (!Number.isFinite(v[j])) return null;
  }
  const xq = new Int16Array(Kpad), dx = new Float32Array(Kpad / 64), xbar = new Float32Array(nG);
  for (let c = 0; c < Kpad / 64; c++) dx[c] = quantizeChunk(v, 64 * c, xmax, xq);
  // Per half-chunk h: xbar[group] += fl(dx·Σxq); the padding past K may reach past the last group (zeros: any serves).
  for (let h = 0; h < Kpad / 32; h++) {
    let s = 0;
    for (let i = 32 * h; i < 32 * h + 32; i++) s += xq[i];
    const g = Math.min(Math.floor((32 * h) / G), nG - 1);
    xbar[g] = Math.fround(xbar[g] + Math.fround(dx[h >> 1] * s));
  }
  return { xq, dx, xbar };
}

/**
 * y [M, N] as the decode kernels compute it (gemv_qg): per chunk Σ code·xq exact, times fl(scale·dx) (per half-chunk
 * when a group edge falls mid-chunk), float32 across chunks, minus Σ_g fl(scale·zero)·xbar[g], plus bias. Returns null
 * when some x is not finite (the kernels then take the exact path).
 */
export function qgDecodeRef(x: Float32Array, M: number, p: QgPacked, bias: Float32Array | null): Float32Array | null {
  const { N, K, Kpad, G, nG, bits } = p, nc = Kpad / 64, cb = qgChunkBytes(bits);
  const halves = G % 64 !== 0;  // each half-chunk on its own: a group edge falls mid-chunk
  const rows = [];
  for (let m = 0; m < M; m++) {
    const r = qgQuantizeX(x.subarray(m * K, (m + 1) * K), p);
    if (!r) return null;
    rows.push(r);
  }
  const y = new Float32Array(M * N), code = new Int32Array(64);
  for (let n = 0; n < N; n++) {
    const acc = new Array<number>(M).fill(0);
    for (let c = 0; c < nc; c++) {
      for (let i = 0; i < 64; i++) code[i] = chunkCode(bits, p.codes, (n * nc + c) * cb, i);
      for (let m = 0; m < M; m++) {
        const { xq, dx } = rows[m];
        let s0 = 0, s1 = 0;
        for (let i = 0; i < 32; i++) s0 += code[i] * xq[c * 64 + i];
        for (let i = 32; i < 64; i++) s1 += code[i] * xq[c * 64 + i];
        const s = (k: number) => f16ToF32(p.scales[n * nG + Math.min(Math.floor(k / G), nG - 1)]);
        if (halves) {
          acc[m] = Math.fround(acc[m] + Math.fround(s0 * Math.fround(s(c * 64) * dx[c])));
          acc[m] = Math.fround(acc[m] + Math.fround(s1 * Math.fround(s(c * 64 + 32) * dx[c])));
        } else {
          acc[m] = Math.fround(acc[m] + Math.fround(Math.fround(s0 + s1) * Math.fround(s(c * 64) * dx[c])));
        }
      }
    }
    for (let m = 0; m < M; m++) {
      let corr = 0;
      for (let g = 0; g < nG; g++) {
        const sz = Math.fround(f16ToF32(p.scales[n * nG + g]) * p.zeros[n * nG + g]);  // exact
        corr = Math.fround(corr + Math.fround(sz * rows[m].xbar[g]));
      }
      y[m * N + n] = Math.fround(Math.fround(acc[m] - corr) + (bias ? bias[n] : 0));
    }
  }
  return y;
}
