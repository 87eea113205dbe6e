// The reference quantized matmul: the definition the native kernels are tested against. 4-bit weights are
// dequantized one output row at a time (never the whole float32 matrix), exactly as `dequantize_4bit` would, and
// multiplied as the float matmul does; int8 is LLM.int8's mixed int8/outlier product (src/quant/int8.ts); GPTQ rows
// are dequantized the same way (scale·(q − zero) per group, src/quant/gptq-format.ts).
import type { Tensor } from '../../tensor/tensor.js';
import { int8MatmulRef } from '../../quant/int8.js';
import { dequantizeGptqRow } from '../../quant/gptq-format.js';
import { dequantize4bitRange, type QuantizedWeight } from '../../quant/qweight.js';
import { matmulQShape } from '../shapes.js';

export function matmulQRef(x: Tensor<'F32'>, qw: QuantizedWeight, bias: Tensor<'F32'> | null, out: Tensor<'F32'>): void {
  const { M, N, K } = matmulQShape(x, qw.shape, bias, out);
  const X = x.f32, Y = out.f32, B = bias ? bias.f32 : null;
  if (qw.format === 'int8') {
    Y.set(int8MatmulRef(X, M, qw.int8, { threshold: qw.threshold, bias: B ?? undefined }));
    return;
  }
  const row = new Float32Array(K);
  for (let n = 0; n < N; n++) {
    if (qw.format === 'gptq') dequantizeGptqRow(qw.gptq, n, row);     // row n of the [N, K] weight
    else dequantize4bitRange(qw.bnb4, n * K, (n + 1) * K, row);
    for (let m = 0; m < M; m++) {
      let acc = 0;
      const xo = m * K;
      for (let k = 0; k < K; k++) acc += X[xo + k] * row[k];
      Y[m * N + n] = Math.fround(acc + (B ? B[n] : 0));
    }
  }
}
