// GPTQ checkpoints as AutoGPTQ / optimum / transformers / GPTQModel store them (../shared/spec/FORMATS.md §4.5):
// GptqCodes (src/quant/gptq-types.ts, the algorithm's hand-over) ⇄ qweight / qzeros / scales / g_idx, the v1
// (AutoGPTQ: zero − 1) and v2 (GPTQModel: the true zero) zero-point conventions, and the reference dequantize.
//
// Every bit width packs the same way: the values along the packed axis form one little-endian bit stream of int32
// words, value i at bit bits·i. For 2/4/8 bits that is 32/bits values per word; for 3 bits it is AutoGPTQ's "32
// values in 3 words" scheme (v10 and v21 straddle two words). qweight packs along the input dim K (per output
// column n), qzeros along the output dim N (per group).
import { Tensor } from '../tensor/tensor.js';
import { f16ToF32, f32ToF16 } from '../tensor/dtype.js';
import { GPTQ_BITS, type GptqBits, type GptqCodes } from './gptq-types.js';

export class GptqError extends Error { override name = 'GptqError'; }

/** "gptq": v1, zeros stored minus one (AutoGPTQ, optimum, transformers); "gptq_v2": true zeros (GPTQModel). */
export type GptqCheckpointFormat = 'gptq' | 'gptq_v2';
export const GPTQ_CHECKPOINT_FORMATS: readonly GptqCheckpointFormat[] = ['gptq', 'gptq_v2'];

/** One GPTQ linear layer [N = out, K = in] as the file holds it (views of the checkpoint when loaded). */
export interface GptqWeight {
  readonly bits: GptqBits;
  /** -1 (one group over all of K) or G. */
  readonly groupSize: number;
  readonly sym: boolean;
  readonly descAct: boolean;
  readonly checkpointFormat: GptqCheckpointFormat;
  /** [out N, in K]. */
  readonly shape: readonly [number, number];
  readonly nGroups: number;
  /** I32 [K·bits/32, N], packed along K. */
  readonly qweight: Int32Array;
  /** I32 [nGroups, N·bits/32], packed along N; v1: zero − 1, v2: zero. */
  readonly qzeros: Int32Array;
  /** F16 bits [nGroups, N]. */
  readonly scales: Uint16Array;
  /** I32 [K]: the group of each input column. */
  readonly gIdx: Int32Array;
}

/** Groups a layer of K inputs has at group size G (-1: one). AutoGPTQ: ceil(infeatures / group_size). */
export function gptqGroups(K: number, groupSize: number): number {
  return groupSize === -1 ? 1 : Math.ceil(K / groupSize);
}

/** Values that share one run of `bits` words: 32/bits words hold them for 2/4/8 bits, 3 words hold 32 for 3 bits. */
const valuesPerRun = (bits: GptqBits) => (bits === 3 ? 32 : 32 / bits);

/**
 * Why a [N, K] layer cannot be packed at `bits`, or null. The packed axes must fill whole words: K (qweight) and N
 * (qzeros) multiples of 32/bits, of 32 at 3 bits. AutoGPTQ's QuantLinear classes ask more, K and N multiples of 32
 * (their buffers are `K // 32 * bits` rows and would drop the tail), and vLLM's Marlin more again (docs/p5-gptq-format.md).
 */
export function gptqShapeProblem(shape: readonly [number, number], bits: GptqBits): string | null {
  const per = valuesPerRun(bits), [N, K] = shape;
  if (K % per !== 0) return `in_features ${K} is not a multiple of ${per}, so qweight (${bits}-bit, packed along the input) cannot hold it`;
  if (N % per !== 0) return `out_features ${N} is not a multiple of ${per}, so qzeros (${bits}-bit, packed along the output) cannot hold it`;
  return null;
}

// ---- the bit stream ----

/** dst[at(i)] |= v << (bits·i), with AutoGPTQ's numpy semantics: the shift keeps the low 32 bits of the word, and a
 *  value straddling two words puts its high bits, masked, into the next (`(v >> 2) & 1`, `(v >> 1) & 0x3`). */
function orField(dst: Int32Array, word0: number, stride: number, i: number, bits: number, v: number): void {
  const p = bits * i, w = p >>> 5, off = p & 31;
  dst[word0 + w * stride] |= v << off;
  if (off + bits > 32) dst[word0 + (w + 1) * stride] |= (v >>> (32 - off)) & ((1 << (off + bits - 32)) - 1);
}

function getField(src: Int32Array, word0: number, stride: number, i: number, bits: number, mask: number): number {
  const p = bits * i, w = p >>> 5, off = p & 31;
  let v = src[word0 + w * stride] >>> off;
  if (off + bits > 32) v |= src[word0 + (w + 1) * stride] << (32 - off);
  return v & mask;
}

// ---- pack / unpack ----

export interface PackOptions {
  /** The layer's name, for errors. */
  name?: string;
  sym: boolean;
  descAct: boolean;
  /** Default "gptq" (v1), what AutoGPTQ / optimum / transformers write. */
  checkpointFormat?: GptqCheckpointFormat;
}

function checkCodes(c: GptqCodes, name: string): number {
  const fail = (m: string): never => { throw new GptqError(`${name}: ${m}`); };
  if (!GPTQ_BITS.includes(c.bits)) fail(`bits must be one of ${GPTQ_BITS.join(', ')}, got ${c.bits}`);
  const [N, K] = c.shape;
  if (!Number.isSafeInteger(N) || !Number.isSafeInteger(K) || N < 1 || K < 1) fail(`shape must be [out, in] sizes, got [${c.shape}]`);
  if (c.groupSize !== -1 && !(Number.isSafeInteger(c.groupSize) && c.groupSize >= 1)) fail(`group size must be -1 or a positive integer, got ${c.groupSize}`);
  const problem = gptqShapeProblem([N, K], c.bits);
  if (problem) fail(problem);
  const G = gptqGroups(K, c.groupSize), maxq = (1 << c.bits) - 1;
  if (c.intWeight.length !== N * K) fail(`intWeight holds ${c.intWeight.length} codes, [${N}, ${K}] needs ${N * K}`);
  if (c.scales.length !== G * N) fail(`scales hold ${c.scales.length} values, [${G}, ${N}] needs ${G * N}`);
  if (c.zeros.length !== G * N) fail(`zeros hold ${c.zeros.length} values, [${G}, ${N}] needs ${G * N}`);
  if (c.gIdx.length !== K) fail(`g_idx holds ${c.gIdx.length} values, needs ${K}`);
  for (let i = 0; i < c.intWeight.length; i++) if (c.intWeight[i] > maxq) fail(`code ${c.intWeight[i]} at [${Math.floor(i / K)}, ${i % K}] does not fit ${c.bits} bits`);
  for (let i = 0; i < c.zeros.length; i++) if (c.zeros[i] > maxq) fail(`zero ${c.zeros[i]} at [${Math.floor(i / N)}, ${i % N}] does not fit ${c.bits} bits`);
  for (let k = 0; k < K; k++) if (!(c.gIdx[k] >= 0 && c.gIdx[k] < G)) fail(`g_idx[${k}] = ${c.gIdx[k]} is not a group in [0, ${G})`);
  return G;
}

/**
 * AutoGPTQ's `QuantLinear.pack` on codes the algorithm already rounded: qweight from the codes, scales to float16
 * (`scales.half()`, round to nearest even), qzeros from the zeros, g_idx as given. v1 stores `zero − 1` cast to
 * uint32 and OR-ed in, so an asymmetric zero of 0 becomes 0xFFFFFFFF and sets every higher bit of its word, as
 * Python writes it (FORMATS.md §4.5; loaders then read those fields as zero 0). v2 stores the zeros as they are.
 */
export function packGptq(codes: GptqCodes, opts: PackOptions): GptqWeight {
  const name = opts.name ?? 'gptq layer';
  const nGroups = checkCodes(codes, name);
  const { bits } = codes, [N, K] = codes.shape, fmt = opts.checkpointFormat ?? 'gptq';
  if (!GPTQ_CHECKPOINT_FORMATS.includes(fmt)) throw new GptqError(`${name}: checkpoint format must be "gptq" or "gptq_v2", got ${JSON.stringify(fmt)}`);
  const qweight = new Int32Array((K * bits / 32) * N);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let k = 0; k < K; k++) orField(qweight, n, N, k, bits, codes.intWeight[row + k]);
  }
  const cols = N * bits / 32, qzeros = new Int32Array(nGroups * cols);
  for (let g = 0; g < nGroups; g++) {
    for (let n = 0; n < N; n++) {
      const z = codes.zeros[g * N + n];
      orField(qzeros, g * cols, 1, n, bits, fmt === 'gptq' ? (z - 1) >>> 0 : z);
    }
  }
  const scales = new Uint16Array(nGroups * N);
  for (let i = 0; i < scales.length; i++) scales[i] = f32ToF16(codes.scales[i]);
  return {
    bits, groupSize: codes.groupSize, sym: opts.sym, descAct: opts.descAct, checkpointFormat: fmt, shape: [N, K], nGroups,
    qweight, qzeros, scales, gIdx: Int32Array.from(codes.gIdx),
  };
}

/** The zero of output n in group g: v1 adds one back as AutoGPTQ's loaders do, `(z + 1) & maxq`; v2 is as stored. */
function zeroAt(w: GptqWeight, g: number, n: number): number {
  const maxq = (1 << w.bits) - 1, cols = w.shape[0] * w.bits / 32;
  const z = getField(w.qzeros, g * cols, 1, n, w.bits, maxq);
  return w.checkpointFormat === 'gptq' ? (z + 1) & maxq : z;
}

/** Scales (float16 bits) and zeros per (output, group), [N, nG] row-major: the kernels' order (QgPacked). */
export function gptqGroupParams(w: GptqWeight): { scales: Uint16Array; zeros: Uint8Array } {
  const [N] = w.shape, G = w.nGroups, scales = new Uint16Array(N * G), zeros = new Uint8Array(N * G);
  for (let g = 0; g < G; g++)
    for (let n = 0; n < N; n++) { scales[n * G + g] = w.scales[g * N + n]; zeros[n * G + g] = zeroAt(w, g, n); }
  return { scales, zeros };
}

/** Back to codes: scales widened from float16, zeros per the checkpoint format. pack → unpack is exact for codes
 *  whose scales are float16 values and (v1) whose zeros are not 0; a v1 zero of 0 reads back as the file says. */
export function unpackGptq(w: GptqWeight): GptqCodes {
  const [N, K] = w.shape, maxq = (1 << w.bits) - 1;
  const intWeight = new Uint8Array(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) intWeight[n * K + k] = getField(w.qweight, n, N, k, w.bits, maxq);
  const zeros = new Uint8Array(w.nGroups * N);
  for (let g = 0; g < w.nGroups; g++) for (let n = 0; n < N; n++) zeros[g * N + n] = zeroAt(w, g, n);
  return {
    bits: w.bits, groupSize: w.groupSize, shape: [N, K], intWeight, scales: Float32Array.from(w.scales, f16ToF32), zeros,
    gIdx: Int32Array.from(w.gIdx),
  };
}

/**
 * Row n of the float weight [N, K]: `W[n,k] = scale[g_idx[k], n] · (q[k,n] − z[g_idx[k], n])` in float32 (the
 * float16 scale widened, the integer difference exact), into dst[0..K).
 */
export function dequantizeGptqRow(w: GptqWeight, n: number, dst: Float32Array): void {
  const [N, K] = w.shape, maxq = (1 << w.bits) - 1, G = w.nGroups;
  const scale = new Float32Array(G), zero = new Float32Array(G);
  for (let g = 0; g < G; g++) { scale[g] = f16ToF32(w.scales[g * N + n]); zero[g] = zeroAt(w, g, n); }
  for (let k = 0; k < K; k++) {
    const g = w.gIdx[k];
    dst[k] = Math.fround(scale[g] * (getField(w.qweight, n, N, k, w.bits, maxq) - zero[g]));
  }
}

/** The float32 weight [N, K] (tests and reference paths). */
export function dequantizeGptq(w: GptqWeight): Float32Array {
  const [N, K] = w.shape, out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) dequantizeGptqRow(w, n, out.subarray(n * K, (n + 1) * K));
  return out;
}

/**
 * The same layer in the other zero-point convention: every qzeros field moves by one (v1 → v2: `(z + 1) & maxq`,
 * v2 → v1: `(z − 1) & maxq`), so both read back to the same zeros and the conversion is lossless both ways. GPTQModel
 * adds or subtracts a packed constant to whole words instead (0x11111111 at 4 bits); that equals this except where
 * a field carries into the next (a v1 asymmetric zero of 0), and its 3-bit constants are not the per-field ones.
 * qweight, scales and g_idx are shared with `w`.
 */
export function convertGptqFormat(w: GptqWeight, to: GptqCheckpointFormat): GptqWeight {
  if (!GPTQ_CHECKPOINT_FORMATS.includes(to)) throw new GptqError(`checkpoint format must be "gptq" or "gptq_v2", got ${JSON.stringify(to)}`);
  if (to === w.checkpointFormat) return w;
  const [N] = w.shape, maxq = (1 << w.bits) - 1, cols = N * w.bits / 32, d = to === 'gptq_v2' ? 1 : -1;
  const qzeros = new Int32Array(w.qzeros.length);
  for (let g = 0; g < w.nGroups; g++) {
    for (let n = 0; n < N; n++) orField(qzeros, g * cols, 1, n, w.bits, (getField(w.qzeros, g * cols, 1, n, w.bits, maxq) + d) & maxq);
  }
  return { ...w, checkpointFormat: to, qzeros };
}

// ---- state dict (FORMATS.md §4.5) ----

/** The tensors AutoGPTQ's QuantLinear saves for the layer at `prefix`, in its buffer order (the bias is the caller's). */
export function gptqToStateDict(prefix: string, w: GptqWeight): Map<string, Tensor> {
  const [N, K] = w.shape;
  return new Map<string, Tensor>([
    [`${prefix}.qweight`, new Tensor('I32', [K * w.bits / 32, N], w.qweight)],
    [`${prefix}.qzeros`, new Tensor('I32', [w.nGroups, N * w.bits / 32], w.qzeros)],
    [`${prefix}.scales`, new Tensor('F16', [w.nGroups, N], w.scales)],
    [`${prefix}.g_idx`, new Tensor('I32', [K], w.gIdx)],
  ]);
}

/** What the config says about every GPTQ layer of a checkpoint. */
export interface GptqLayout {
  bits: GptqBits;
  groupSize: number;
  sym: boolean;
  descAct: boolean;
  checkpointFormat: GptqCheckpointFormat;
}

/**
 * Reads the layer at `prefix` ([N, K] = `shape`, from the model's config) by name: qweight, qzeros, scales, g_idx
 * with their dtypes and shapes checked against the config's bits and group size, and every g_idx entry a group.
 * The arrays are views of `get`'s tensors (a mapped file stays mapped, nothing is copied or unpacked).
 */
export function gptqFromStateDict(prefix: string, get: (name: string) => Tensor | undefined, layout: GptqLayout,
  shape: readonly [number, number]): GptqWeight {
  const [N, K] = shape, { bits } = layout;
  const problem = gptqShapeProblem([N, K], bits);
  if (problem) throw new GptqError(`${prefix}: ${problem}`);
  const nGroups = gptqGroups(K, layout.groupSize);
  const take = (suffix: string, dtype: 'I32' | 'F16', want: number[]): Tensor => {
    const name = `${prefix}.${suffix}`, t = get(name);
    if (!t) throw new GptqError(`${name}: missing from the checkpoint (a ${bits}-bit GPTQ layer has qweight, qzeros, scales and g_idx)`);
    if (t.dtype !== dtype || t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i])) {
      const file = t.origin ? ` (in ${t.origin.slice(0, t.origin.lastIndexOf(': ')).split('/').pop()})` : '';
      const why = suffix === 'scales' || suffix === 'qzeros' ? `: ${nGroups} group${nGroups === 1 ? '' : 's'} of ${layout.groupSize === -1 ? 'all' : layout.groupSize} inputs` : '';
      throw new GptqError(`${name}${file}: expected ${dtype} [${want.join(', ')}] for a ${bits}-bit [${N}, ${K}] layer${why}, got ${t.dtype} [${t.shape.join(', ')}]`);
    }
    return t;
  };
  const qweight = take('qweight', 'I32', [K * bits / 32, N]).data as Int32Array;
  const qzeros = take('qzeros', 'I32', [nGroups, N * bits / 32]).data as Int32Array;
  const scales = take('scales', 'F16', [nGroups, N]).data as Uint16Array;
  const gIdx = take('g_idx', 'I32', [K]).data as Int32Array;
  for (let k = 0; k < K; k++) {
    if (!(gIdx[k] >= 0 && gIdx[k] < nGroups)) throw new GptqError(`${prefix}.g_idx: entry ${k} is ${gIdx[k]}, not a group in [0, ${nGroups})`);
  }
  const { groupSize, sym, descAct, checkpointFormat } = layout;
  return { bits, groupSize, sym, descAct, checkpointFormat, shape: [N, K], nGroups, qweight, qzeros, scales, gIdx };
}
