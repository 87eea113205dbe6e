// Shape rules of the op catalogue (src/backend/backend.ts), checked once here for every backend: each backend op
// calls its function first and gets the sizes it needs back. A violation is a ShapeError naming the op and shapes.
import type { AttentionArgs } from './backend.js';
import { ShapeError, type Tensor } from '../tensor/tensor.js';

export function lastDim(t: Tensor): number {
  return t.shape[t.shape.length - 1];
}

export function checkSize(what: string, t: Tensor, n: number): void {
  if (t.numel !== n) throw new ShapeError(`${what}: expected ${n} elements, got [${t.shape}]`);
}

/** An op's output: `n` elements, and writable (a checkpoint's mapped weights are not). */
export function checkOut(what: string, out: Tensor, n: number): void {
  checkSize(what, out, n);
  out.assertWritable(what);
}

/** Rows of x when read as [rows, dim]. */
export function rowsOf(op: string, x: Tensor, dim: number): number {
  if (!(dim > 0) || x.numel % dim !== 0) throw new ShapeError(`${op}: [${x.shape}] has no whole rows of ${dim}`);
  return x.numel / dim;
}

/** out[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N]). */
export function matmulShape(x: Tensor, w: Tensor, bias: Tensor | null, out: Tensor): { M: number; N: number; K: number } {
  const K = lastDim(x);
  if (w.shape.length !== 2 || w.shape[1] !== K) throw new ShapeError(`matmul: x [${x.shape}] vs w [${w.shape}]`);
  const M = rowsOf('matmul', x, K), N = w.shape[0];
  checkOut('matmul out', out, M * N);
  if (bias) checkSize('matmul bias', bias, N);
  return { M, N, K };
}

/** matmulQ: out[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N]) with the quantized weight's [N, K]. */
export function matmulQShape(x: Tensor, wShape: readonly [number, number], bias: Tensor | null, out: Tensor): { M: number; N: number; K: number } {
  const [N, K] = wShape;
  if (lastDim(x) !== K) throw new ShapeError(`matmulQ: x [${x.shape}] vs quantized w [${wShape}]`);
  const M = rowsOf('matmulQ', x, K);
  checkOut('matmulQ out', out, M * N);
  if (bias) checkSize('matmulQ bias', bias, N);
  return { M, N, K };
}

/** rmsnorm / layernorm: x [rows, D], each parameter [D], out like x. */
export function normShape(op: string, x: Tensor, params: Record<string, Tensor>, out: Tensor): { rows: number; D: number } {
  const D = lastDim(x), rows = rowsOf(op, x, D);
  for (const [name, p] of Object.entries(params)) checkSize(`${op} ${name}`, p, D);
  checkOut(`${op} out`, out, x.numel);
  return { rows, D };
}

/** rope in place on x [rows, nHeads, hd] with one position per row and hd/2 inverse frequencies. */
export function ropeShape(x: Tensor, positions: Int32Array, invFreq: Float32Array): { rows: number; nHeads: number; hd: number } {
  const hd = lastDim(x), rows = positions.length;
  if (!(hd > 0) || hd % 2 !== 0) throw new ShapeError(`rope: head dim ${hd} must be even and positive`);
  if (rows === 0 || x.numel % (rows * hd) !== 0) throw new ShapeError(`rope: [${x.shape}] vs ${rows} positions`);
  if (invFreq.length !== hd / 2) throw new ShapeError(`rope: invFreq has ${invFreq.length} entries, expected ${hd / 2}`);
  x.assertWritable('rope (in place)');
  return { rows, nHeads: x.numel / (rows * hd), hd };
}

export interface AttentionShape { B: number; T: number; H: number; nKV: number; hd: number; S: number }

/** q [B,T,H,hd], caches [B,S,nKV,hd] with H a multiple of nKV, pastLen + T <= S, keyMask [B, pastLen+T]. */
export function attentionShape(q: Tensor, kCache: Tensor, vCache: Tensor, args: AttentionArgs, out: Tensor): AttentionShape {
  if (q.shape.length !== 4 || kCache.shape.length !== 4) throw new ShapeError(`attention: q [${q.shape}], cache [${kCache.shape}] must be 4-D`);
  const [B, T, H, hd] = q.shape;
  const S = kCache.shape[1], nKV = kCache.shape[2];
  if (kCache.shape[0] !== B || kCache.shape[3] !== hd) throw new ShapeError(`attention: q [${q.shape}] vs k cache [${kCache.shape}]`);
  if (vCache.shape.join() !== kCache.shape.join()) throw new ShapeError(`attention: k cache [${kCache.shape}] vs v cache [${vCache.shape}]`);
  if (!(nKV > 0) || H % nKV !== 0) throw new ShapeError(`attention: ${H} heads not a multiple of ${nKV} kv heads`);
  if (!Number.isInteger(args.pastLen) || args.pastLen < 0) throw new ShapeError(`attention: pastLen must be an integer >= 0, got ${args.pastLen}`);
  if (args.pastLen + T > S) throw new ShapeError(`attention: ${args.pastLen + T} positions exceed the cache capacity ${S}`);
  const window = args.window ?? 0;
  if (!Number.isInteger(window) || window < 0) throw new ShapeError(`attention: window must be an integer >= 0, got ${window}`);
  if (args.keyMask && args.keyMask.length !== B * (args.pastLen + T))
    throw new ShapeError(`attention: keyMask has ${args.keyMask.length} entries, expected B·(pastLen+T) = ${B * (args.pastLen + T)}`);
  checkOut('attention out', out, q.numel);
  return { B, T, H, nKV, hd, S };
}

/** Elementwise ops: every operand and out have x's element count. */
export function elementwiseShape(op: string, x: Tensor, others: Record<string, Tensor>, out: Tensor): number {
  for (const [name, t] of Object.entries(others)) checkSize(`${op} ${name}`, t, x.numel);
  checkOut(`${op} out`, out, x.numel);
  return x.numel;
}

/** softmax over the last dim of x [rows, D]. */
export function softmaxShape(x: Tensor, out: Tensor): { rows: number; D: number } {
  const D = lastDim(x), rows = rowsOf('softmax', x, D);
  checkOut('softmax out', out, x.numel);
  return { rows, D };
}

/** table [V, D] (2-D), out [ids.length, D]. */
export function embeddingShape(table: Tensor, ids: Int32Array, out: Tensor): { V: number; D: number } {
  if (table.shape.length !== 2) throw new ShapeError(`embedding: table [${table.shape}] must be 2-D`);
  const [V, D] = table.shape;
  checkOut('embedding out', out, ids.length * D);
  return { V, D };
}
