// What GPTQ and round-to-nearest hand over for one linear layer before packing, and the options both take
// (../shared/spec/FORMATS.md §4). The algorithm (src/quant/gptq.ts) produces GptqCodes; the file format
// (src/quant/gptq-format.ts) packs them into AutoGPTQ's qweight / qzeros / scales / g_idx and unpacks them back.

export type GptqBits = 2 | 3 | 4 | 8;
export const GPTQ_BITS: readonly GptqBits[] = [2, 3, 4, 8];

/** One quantized linear layer [N = out, K = in], unpacked. */
export interface GptqCodes {
  bits: GptqBits;
  /** -1: one group per row (the whole input dimension); else the group size G. */
  groupSize: number;
  /** [out N, in K]. */
  shape: [number, number];
  /** [N, K] row-major, each code in [0, 2^bits). */
  intWeight: Uint8Array;
  /** [nGroups, N] float32 (files store float16); nGroups = ceil(K / G), or 1 when groupSize is -1. */
  scales: Float32Array;
  /** [nGroups, N] the true zero point in [0, 2^bits) (sym: 2^(bits-1)); files store it v1 (minus one) or v2. */
  zeros: Uint8Array;
  /** [K] the group of each input column (monotone unless act-order reordered the columns). */
  gIdx: Int32Array;
}

/** GPTQ's knobs (GPTQConfig / AutoGPTQ's BaseQuantizeConfig meanings, camelCase). */
export interface GptqOptions {
  bits: GptqBits;
  /** -1, or the group size (32, 64, 128 are the usual ones). */
  groupSize: number;
  sym: boolean;
  /** act-order: quantize columns in order of decreasing Hessian diagonal. */
  descAct: boolean;
  /** Fix every group's scale and zero from the original weight before any update (AutoGPTQ static_groups). */
  staticGroups: boolean;
  /** Dampening as a fraction of the mean Hessian diagonal (AutoGPTQ damp_percent, default 0.01). */
  dampPercent: number;
  /** Columns per lazy-update block (128). */
  blockSize: number;
}
