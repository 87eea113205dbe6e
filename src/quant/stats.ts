// What a quantized checkpoint costs, read from its tensors by bitsandbytes', GPTQ's and AWQ's names (FORMATS.md
// §2.4, §3, §4.5, §5.4): shared by
// `lowbit info` (a file) and `lowbit quantize` (the state dict it writes), so both count the same bytes.
import type { Tensor } from '../tensor/tensor.js';
import { bnb4FromStateDict } from './bnb4.js';
import type { QuantFormat } from './qweight.js';

export interface QuantStats {
  /** Quantized linear layers, by name. */
  layers: string[];
  formats: QuantFormat[];
  /** 4-bit block sizes found (bitsandbytes' default is 64); empty for int8 and GPTQ. */
  blocksizes: number[];
  /** GPTQ / AWQ bit widths found (2, 3, 4, 8); empty for bitsandbytes. */
  bits: number[];
  /** Whether the 4-bit layers' absmax is double-quantized (null: no 4-bit layer, or mixed). */
  doubleQuant: boolean | null;
  /** Weights in the quantized layers. */
  params: number;
  /**
   * Bytes of their codes and scales: 4-bit packed codes + absmax (U8 with double quant, else F32) + nested_absmax;
   * int8 codes + SCB; GPTQ qweight + qzeros + scales + g_idx; AWQ qweight + qzeros + scales (4-bit g128 on large layers: 4 + 20/128 + 32/N). The
   * per-layer code tables (quant_map 64 B, nested_quant_map 1 KiB) and the quant_state JSON
   * do not grow with the layer and are left out, as in the usual bits-per-weight figure.
   */
  bytes: number;
  /** 8·bytes / params: NF4 with double quant at block 64 is 4 + 8/64 + 32/(64·256) ≈ 4.127 on large layers. */
  bitsPerWeight: number;
  /** Every tensor's bytes (the safetensors payload, headers aside). */
  totalBytes: number;
}

const QS = /^(.*)\.weight\.quant_state\.bitsandbytes__(nf4|fp4)$/;
const SCB = /^(.*)\.SCB$/;
const QWEIGHT = /^(.*)\.qweight$/;

export function quantStats(tensors: Map<string, Tensor>): QuantStats {
  const layers: string[] = [], formats = new Set<QuantFormat>(), blocksizes = new Set<number>(), dq = new Set<boolean>(), bits = new Set<number>();
  let params = 0, bytes = 0, totalBytes = 0;
  const size = (n: string) => tensors.get(n)?.byteLength ?? 0;
  for (const [name, t] of tensors) {
    totalBytes += t.byteLength;
    let m = QS.exec(name);
    if (m) {
      const w = bnb4FromStateDict(m[1], (n) => tensors.get(n));
      layers.push(m[1]); formats.add(w.quantType); blocksizes.add(w.blocksize); dq.add(w.nested !== null);
      params += w.shape.reduce((a, b) => a * b, 1);
      bytes += size(`${m[1]}.weight`) + size(`${m[1]}.weight.absmax`) + size(`${m[1]}.weight.nested_absmax`);
      continue;
    }
    m = QWEIGHT.exec(name);
    const gIdx = m ? tensors.get(`${m[1]}.g_idx`) : undefined;
    if (m && t.dtype === 'I32' && t.shape.length === 2 && gIdx?.shape.length === 1 && tensors.has(`${m[1]}.qzeros`) && tensors.has(`${m[1]}.scales`)) {
      // qweight [K·bits/32, N], g_idx [K].
      const K = gIdx.shape[0], N = t.shape[1];
      layers.push(m[1]); formats.add('gptq'); bits.add((t.shape[0] * 32) / K);
      params += K * N;
      bytes += t.byteLength + size(`${m[1]}.qzeros`) + size(`${m[1]}.scales`) + gIdx.byteLength;
      continue;
    }
    const qz = m ? tensors.get(`${m[1]}.qzeros`) : undefined, sc = m ? tensors.get(`${m[1]}.scales`) : undefined;
    if (m && !gIdx && t.dtype === 'I32' && t.shape.length === 2 && qz?.shape.length === 2 && sc?.shape.length === 2) {
      // AWQ, 4-bit: GEMM qweight [K, N/8] with scales [K/G, N]; GEMV qweight [N, K/8] with scales [N, ·].
      const gemm = sc.shape[1] === 8 * t.shape[1];
      const K = gemm ? t.shape[0] : 8 * t.shape[1], N = gemm ? sc.shape[1] : t.shape[0];
      layers.push(m[1]); formats.add('awq'); bits.add(4);
      params += K * N;
      bytes += t.byteLength + qz.byteLength + sc.byteLength;
      continue;
    }
    m = SCB.exec(name);
    const codes = m ? tensors.get(`${m[1]}.weight`) : undefined;
    if (m && codes?.dtype === 'I8') {
      layers.push(m[1]); formats.add('int8');
      params += codes.numel;
      bytes += codes.byteLength + t.byteLength;
    }
  }
  return {
    layers, formats: [...formats], blocksizes: [...blocksizes].sort((a, b) => a - b), bits: [...bits].sort((a, b) => a - b),
    doubleQuant: dq.size === 1 ? [...dq][0] : null, params, bytes, bitsPerWeight: params ? (8 * bytes) / params : 0, totalBytes,
  };
}
