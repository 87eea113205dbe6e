// AWQ checkpoints as AutoAWQ writes them (../shared/spec/FORMATS.md §5.4): GptqCodes (src/quant/gptq-types.ts, what
// the AWQ algorithm and round-to-nearest hand over) ⇄ qweight / qzeros / scales in the GEMM layout (WQLinear_GEMM:
// packed along the OUTPUT dim in the interleaved AWQ_ORDER) or the GEMV layout (WQLinear_GEMV: packed along the
// input dim in natural order, zeros and scales padded to calculate_zeros_width), and the reference dequantize.
// Both layouts hold 4-bit codes (AutoAWQ's only packed width), zeros stored raw (no "− 1", unlike GPTQ v1) and one
// float16 scale per (group, output); groups are consecutive runs of G inputs (AWQ has no g_idx).
import { Tensor } from '../tensor/tensor.js';
import { f16ToF32, f32ToF16 } from '../tensor/dtype.js';
import type { GptqCodes } from './gptq-types.js';
import { roundHalfEven as rne } from './int8.js';

export class AwqError extends Error { override name = 'AwqError'; }

/** Tensor layouts: "gemm" (WQLinear_GEMM; also what the exllama and ipex versions load) or "gemv" (WQLinear_GEMV). */
export type AwqLayout = 'gemm' | 'gemv';
export const AWQ_LAYOUTS: readonly AwqLayout[] = ['gemm', 'gemv'];
/** The only width AutoAWQ's WQLinear classes pack ("Only 4-bit are supported for now"). */
export const AWQ_BITS = 4;
/** 4-bit values per int32 word. */
const PACK = 8;
/** GEMM: nibble i of a word holds output 8c + AWQ_ORDER[i]. */
export const AWQ_ORDER: readonly number[] = [0, 2, 4, 6, 1, 3, 5, 7];
/** Its inverse: output 8c + j sits in nibble AWQ_REVERSE_ORDER[j]. */
export const AWQ_REVERSE_ORDER: readonly number[] = [0, 4, 1, 5, 2, 6, 3, 7];

/** One AWQ linear layer [N = out, K = in] as the file holds it (views of the checkpoint when loaded). */
export interface AwqWeight {
  readonly layout: AwqLayout;
  readonly bits: 4;
  /** As the config says it: -1 (one group over all of K) or G. */
  readonly groupSize: number;
  /** [out N, in K]. */
  readonly shape: readonly [number, number];
  /** K / G. */
  readonly nGroups: number;
  /** gemm: I32 [K, N/8] packed along N, AWQ_ORDER; gemv: I32 [N, K/8] packed along K, natural order. */
  readonly qweight: Int32Array;
  /** gemm: I32 [nGroups, N/8] as qweight; gemv: I32 [N, Wz] packed along the groups, natural order, unused nibbles 0. */
  readonly qzeros: Int32Array;
  /** F16 bits. gemm: [nGroups, N]; gemv: [N, 8·Wz], groups past nGroups zero. */
  readonly scales: Uint16Array;
}

/** The inputs per group: AutoAWQ's WQLinear reads group_size -1 as in_features. */
export function awqGroup(K: number, groupSize: number): number {
  return groupSize === -1 ? K : groupSize;
}

/**
 * AutoAWQ's calculate_zeros_width (gemv.py): the qzeros words per output row of a GEMV layer, ceil(nGroups/8)
 * rounded up to a multiple of 1 (G ≥ 128), 2 (G = 64) or 4 (G = 32); other group sizes have no GEMV layout.
 */
export function awqZerosWidth(K: number, G: number): number {
  const m = G >= 128 ? 1 : G === 64 ? 2 : G === 32 ? 4 : 0;
  if (!m) throw new AwqError(`group size ${G} has no GEMV layout (AutoAWQ's calculate_zeros_width takes 32, 64 or ≥ 128); use version "gemm"`);
  return Math.ceil(Math.ceil(Math.floor(K / G) / PACK) / m) * m;
}

/**
 * Why a [N, K] layer cannot be held at this group size and layout, or null. AutoAWQ's WQLinear asserts
 * in_features % group_size == 0 and out_features % 8 == 0; GEMV also packs K by 8 and needs a zeros width.
 */
export function awqShapeProblem(shape: readonly [number, number], groupSize: number, layout: AwqLayout = 'gemm'): string | null {
  const [N, K] = shape, G = awqGroup(K, groupSize);
  if (!(Number.isSafeInteger(G) && G >= 1)) return `group size must be -1 or a positive integer, got ${groupSize}`;
  if (K % G !== 0) return `in_features ${K} is not a multiple of the group size ${G} (AWQ groups are whole runs of G inputs)`;
  if (N % PACK !== 0) return `out_features ${N} is not a multiple of 8, so qzeros (4-bit, packed along the output) cannot hold it`;
  if (layout === 'gemv') {
    if (K % PACK !== 0) return `in_features ${K} is not a multiple of 8, so a GEMV qweight (packed along the input) cannot hold it`;
    if (!(G === 32 || G === 64 || G >= 128)) return `group size ${G} has no GEMV layout (AutoAWQ's calculate_zeros_width takes 32, 64 or ≥ 128); use version "gemm"`;
  }
  return null;
}

/** The three tensors' shapes for a [N, K] layer. */
export function awqTensorShapes(shape: readonly [number, number], groupSize: number, layout: AwqLayout): { qweight: number[]; qzeros: number[]; scales: number[] } {
  const [N, K] = shape, nG = K / awqGroup(K, groupSize);
  if (layout === 'gemm') return { qweight: [K, N / PACK], qzeros: [nG, N / PACK], scales: [nG, N] };
  const wz = awqZerosWidth(K, awqGroup(K, groupSize));
  return { qweight: [N, K / PACK], qzeros: [N, wz], scales: [N, wz * PACK] };
}

// ---- nibble access ----

/** Code of output n, input k. */
function codeAt(w: AwqWeight, n: number, k: number): number {
  const [N, K] = w.shape;
  if (w.layout === 'gemm') return (w.qweight[k * (N / PACK) + (n >> 3)] >>> (4 * AWQ_REVERSE_ORDER[n & 7])) & 15;
  return (w.qweight[n * (K / PACK) + (k >> 3)] >>> (4 * (k & 7))) & 15;
}

/** Zero of output n in group g. */
function zeroAt(w: AwqWeight, g: number, n: number): number {
  const [N] = w.shape;
  if (w.layout === 'gemm') return (w.qzeros[g * (N / PACK) + (n >> 3)] >>> (4 * AWQ_REVERSE_ORDER[n & 7])) & 15;
  const wz = w.qzeros.length / N;
  return (w.qzeros[n * wz + (g >> 3)] >>> (4 * (g & 7))) & 15;
}

/** float16 bits of the scale of output n in group g. */
function scaleAt(w: AwqWeight, g: number, n: number): number {
  const [N] = w.shape;
  return w.layout === 'gemm' ? w.scales[g * N + n] : w.scales[n * (w.scales.length / N) + g];
}

// ---- pack / unpack ----

export interface AwqPackOptions {
  /** The layer's name, for errors. */
  name?: string;
  /** Default "gemm" (AutoAWQ's default version, the one vLLM loads). */
  layout?: AwqLayout;
}

function checkCodes(c: GptqCodes, name: string, layout: AwqLayout): number {
  const fail = (m: string): never => { throw new AwqError(`${name}: ${m}`); };
  if (c.bits !== AWQ_BITS) fail(`AWQ checkpoints hold 4-bit codes only (AutoAWQ packs w_bit / bits 4; vLLM's AWQ loader refuses others), got bits ${c.bits}; save other widths as GPTQ`);
  if (!AWQ_LAYOUTS.includes(layout)) fail(`version must be "gemm" or "gemv", got ${JSON.stringify(layout)}`);
  const [N, K] = c.shape;
  if (!Number.isSafeInteger(N) || !Number.isSafeInteger(K) || N < 1 || K < 1) fail(`shape must be [out, in] sizes, got [${c.shape}]`);
  const problem = awqShapeProblem([N, K], c.groupSize, layout);
  if (problem) fail(problem);
  const G = awqGroup(K, c.groupSize), nG = K / G;
  if (c.intWeight.length !== N * K) fail(`intWeight holds ${c.intWeight.length} codes, [${N}, ${K}] needs ${N * K}`);
  if (c.scales.length !== nG * N) fail(`scales hold ${c.scales.length} values, [${nG}, ${N}] needs ${nG * N}`);
  if (c.zeros.length !== nG * N) fail(`zeros hold ${c.zeros.length} values, [${nG}, ${N}] needs ${nG * N}`);
  if (c.gIdx.length !== K) fail(`g_idx holds ${c.gIdx.length} values, needs ${K}`);
  for (let k = 0; k < K; k++) {
    if (c.gIdx[k] !== Math.floor(k / G)) fail(`g_idx[${k}] is ${c.gIdx[k]}, but AWQ groups are consecutive runs of ${G} inputs (no act-order): it must be ${Math.floor(k / G)}`);
  }
  for (let i = 0; i < c.intWeight.length; i++) if (c.intWeight[i] > 15) fail(`code ${c.intWeight[i]} at [${Math.floor(i / K)}, ${i % K}] does not fit 4 bits`);
  for (let i = 0; i < c.zeros.length; i++) if (c.zeros[i] > 15) fail(`zero ${c.zeros[i]} at [${Math.floor(i / N)}, ${i % N}] does not fit 4 bits`);
  return nG;
}

/**
 * AutoAWQ's WQLinear_GEMM.from_linear / WQLinear_GEMV.from_linear on codes already rounded: the scales to float16
 * (`scales.half()`, round to nearest even), codes and zeros packed as each layout packs them, zeros raw.
 */
export function packAwq(codes: GptqCodes, opts: AwqPackOptions = {}): AwqWeight {
  const name = opts.name ?? 'awq layer', layout = opts.layout ?? 'gemm';
  const nGroups = checkCodes(codes, name, layout);
  const [N, K] = codes.shape, G = awqGroup(K, codes.groupSize), cw = N / PACK;
  let qweight: Int32Array, qzeros: Int32Array, scales: Uint16Array;
  if (layout === 'gemm') {
    qweight = new Int32Array(K * cw);
    for (let n = 0; n < N; n++) {
      const shift = 4 * AWQ_REVERSE_ORDER[n & 7], col = n >> 3, row = n * K;
      for (let k = 0; k < K; k++) qweight[k * cw + col] |= codes.intWeight[row + k] << shift;
    }
    qzeros = new Int32Array(nGroups * cw);
    for (let g = 0; g < nGroups; g++) for (let n = 0; n < N; n++) qzeros[g * cw + (n >> 3)] |= codes.zeros[g * N + n] << (4 * AWQ_REVERSE_ORDER[n & 7]);
    scales = Uint16Array.from(codes.scales, f32ToF16);
  } else {
    const kw = K / PACK, wz = awqZerosWidth(K, G), sw = wz * PACK;
    qweight = new Int32Array(N * kw);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) qweight[n * kw + (k >> 3)] |= codes.intWeight[n * K + k] << (4 * (k & 7));
    qzeros = new Int32Array(N * wz);
    scales = new Uint16Array(N * sw);
    for (let g = 0; g < nGroups; g++) {
      for (let n = 0; n < N; n++) {
        qzeros[n * wz + (g >> 3)] |= codes.zeros[g * N + n] << (4 * (g & 7));
        scales[n * sw + g] = f32ToF16(codes.scales[g * N + n]);
      }
    }
  }
  return { layout, bits: 4, groupSize: codes.groupSize, shape: [N, K], nGroups, qweight, qzeros, scales };
}

/** Back to codes (scales widened from float16, zeros as stored, g_idx = floor(k / G)); pack → unpack is exact. */
export function unpackAwq(w: AwqWeight): GptqCodes {
  const [N, K] = w.shape, G = K / w.nGroups;
  const intWeight = new Uint8Array(N * K);
  if (w.layout === 'gemm') {
    const cw = N / PACK;
    for (let k = 0; k < K; k++) {
      for (let c = 0; c < cw; c++) {
        const word = w.qweight[k * cw + c];
        for (let i = 0; i < PACK; i++) intWeight[(8 * c + AWQ_ORDER[i]) * K + k] = (word >>> (4 * i)) & 15;
      }
    }
  } else {
    const kw = K / PACK;
    for (let n = 0; n < N; n++) {
      for (let c = 0; c < kw; c++) {
        const word = w.qweight[n * kw + c];
        for (let i = 0; i < PACK; i++) intWeight[n * K + 8 * c + i] = (word >>> (4 * i)) & 15;
      }
    }
  }
  const zeros = new Uint8Array(w.nGroups * N), scales = new Float32Array(w.nGroups * N);
  for (let g = 0; g < w.nGroups; g++) {
    for (let n = 0; n < N; n++) { zeros[g * N + n] = zeroAt(w, g, n); scales[g * N + n] = f16ToF32(scaleAt(w, g, n)); }
  }
  return { bits: 4, groupSize: w.groupSize, shape: [N, K], intWeight, scales, zeros, gIdx: Int32Array.from({ length: K }, (_, k) => Math.floor(k / G)) };
}

/** Scales (float16 bits) and zeros per (output, group), [N, nG] row-major: the kernels' order (QgPacked). */
export function awqGroupParams(w: AwqWeight): { scales: Uint16Array; zeros: Uint8Array } {
  const [N] = w.shape, G = w.nGroups, scales = new Uint16Array(N * G), zeros = new Uint8Array(N * G);
  for (let g = 0; g < G; g++)
    for (let n = 0; n < N; n++) { scales[n * G + g] = scaleAt(w, g, n); zeros[n * G + g] = zeroAt(w, g, n); }
  return { scales, zeros };
}

/** The same layer in the other layout (exact both ways; GEMV needs a group size calculate_zeros_width takes). */
export function convertAwqLayout(w: AwqWeight, to: AwqLayout, name?: string): AwqWeight {
  if (!AWQ_LAYOUTS.includes(to)) throw new AwqError(`${name ?? 'awq layer'}: version must be "gemm" or "gemv", got ${JSON.stringify(to)}`);
  return to === w.layout ? w : packAwq(unpackAwq(w), { name, layout: to });
}

/** Row n of the float weight [N, K]: `W[n,k] = scale[g, n] · (q[k,n] − z[g, n])`, g = floor(k / G), in float32. */
export function dequantizeAwqRow(w: AwqWeight, n: number, dst: Float32Array): void {
  const [, K] = w.shape, G = K / w.nGroups;
  for (let g = 0; g < w.nGroups; g++) {
    const s = f16ToF32(scaleAt(w, g, n)), z = zeroAt(w, g, n);
    for (let k = g * G; k < (g + 1) * G; k++) dst[k] = Math.fround(s * (codeAt(w, n, k) - z));
  }
}

/** The float32 weight [N, K] (tests and reference paths). */
export function dequantizeAwq(w: AwqWeight): Float32Array {
  const [N, K] = w.shape, out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) dequantizeAwqRow(w, n, out.subarray(n * K, (n + 1) * K));
  return out;
}

// ---- state dict (FORMATS.md §5.4) ----

/** The tensors AutoAWQ's WQLinear saves for the layer at `prefix`, in its buffer order (the bias is the caller's). */
export function awqToStateDict(prefix: string, w: AwqWeight): Map<string, Tensor> {
  const s = awqTensorShapes(w.shape, w.groupSize, w.layout);
  return new Map<string, Tensor>([
    [`${prefix}.qweight`, new Tensor('I32', s.qweight, w.qweight)],
    [`${prefix}.qzeros`, new Tensor('I32', s.qzeros, w.qzeros)],
    [`${prefix}.scales`, new Tensor('F16', s.scales, w.scales)],
  ]);
}

/** What the config says about every AWQ layer of a checkpoint. */
export interface AwqLayoutSpec {
  layout: AwqLayout;
  /** -1 or G. */
  groupSize: number;
}

/**
 * Reads the layer at `prefix` ([N, K] = `shape`, from the model's config) by name: qweight, qzeros, scales with their
 * dtypes and shapes checked against the config's group size and version. The arrays are views of `get`'s tensors
 * (a mapped file stays mapped, nothing is copied or unpacked).
 */
export function awqFromStateDict(prefix: string, get: (name: string) => Tensor | undefined, spec: AwqLayoutSpec,
  shape: readonly [number, number]): AwqWeight {
  const [N, K] = shape, { layout, groupSize } = spec;
  const problem = awqShapeProblem([N, K], groupSize, layout);
  if (problem) throw new AwqError(`${prefix}: ${problem}`);
  const want = awqTensorShapes([N, K], groupSize, layout), nGroups = K / awqGroup(K, groupSize);
  const take = (suffix: 'qweight' | 'qzeros' | 'scales', dtype: 'I32' | 'F16'): Tensor => {
    const name = `${prefix}.${suffix}`, t = get(name), shp = want[suffix];
    if (!t) throw new AwqError(`${name}: missing from the checkpoint (an AWQ layer has qweight, qzeros and scales)`);
    if (t.dtype !== dtype || t.shape.length !== 2 || t.shape[0] !== shp[0] || t.shape[1] !== shp[1]) {
      const file = t.origin ? ` (in ${t.origin.slice(0, t.origin.lastIndexOf(': ')).split('/').pop()})` : '';
      throw new AwqError(`${name}${file}: expected ${dtype} [${shp.join(', ')}] for a 4-bit [${N}, ${K}] ${layout.toUpperCase()} layer with ${nGroups} group${nGroups === 1 ? '' : 's'} of ${awqGroup(K, groupSize)} inputs, got ${t.dtype} [${t.shape.join(', ')}]`);
    }
    return t;
  };
  const qweight = take('qweight', 'I32').data as Int32Array;
  const qzeros = take('qzeros', 'I32').data as Int32Array;
  const scales = take('scales', 'F16').data as Uint16Array;
  return { layout, bits: 4, groupSize, shape: [N, K], nGroups, qweight, qzeros, scales };
}

// ---- round to nearest on AWQ's grid (§5.3), for `lowbit bench --format awq4` and tests ----

/**
 * AutoAWQ's zero-point quantizer with no scale or clip search: per group of G inputs of each row, max/min of the
 * float32 weights, scale = max(max − min, 1e-5)/15, zero = clamp(−round(min/scale), 0, 15), q = clamp(round(w/scale)
 * + zero, 0, 15), rounding half to even as torch does, in float32 steps. The scale handed over is that float32 value;
 * packing rounds it to float16 as AutoAWQ's `scales.half()` does.
 */
export function awqRtnCodes(w: Float32Array, shape: readonly [number, number], groupSize: number): GptqCodes {
  const [N, K] = shape, G = awqGroup(K, groupSize);
  if (K % G !== 0) throw new AwqError(`in_features ${K} is not a multiple of the group size ${G}`);
  const nG = K / G, intWeight = new Uint8Array(N * K), scales = new Float32Array(nG * N), zeros = new Uint8Array(nG * N);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < nG; g++) {
      let mx = -Infinity, mn = Infinity;
      for (let k = g * G; k < (g + 1) * G; k++) { const v = w[n * K + k]; if (v > mx) mx = v; if (v < mn) mn = v; }
      const s = Math.fround(Math.max(Math.fround(mx - mn), Math.fround(1e-5)) / 15);
      const z = Math.min(15, Math.max(0, -rne(Math.fround(mn / s))));
      scales[g * N + n] = s; zeros[g * N + n] = z;
      for (let k = g * G; k < (g + 1) * G; k++) intWeight[n * K + k] = Math.min(15, Math.max(0, rne(Math.fround(w[n * K + k] / s)) + z));
    }
  }
  return { bits: 4, groupSize, shape: [N, K], intWeight, scales, zeros, gIdx: Int32Array.from({ length: K }, (_, k) => Math.floor(k / G)) };
}
