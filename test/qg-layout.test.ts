// The host half of the GPU's GPTQ/AWQ layout (src/backend/cuda/index.ts cudaQgLayout builds it from these, and the
// device repacks the codes): per-(row, group) scales and zeros and the input order, checked against the CPU's own
// unpack and qgPack on random layers. Runs anywhere; test/cuda.test.ts checks the device half on a GPU.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gptqGroupParams, packGptq, unpackGptq } from '../src/quant/gptq-format.js';
import { awqGroupParams, packAwq, unpackAwq } from '../src/quant/awq-format.js';
import type { GptqBits } from '../src/quant/gptq-types.js';
import { qgOrder, qgPack } from '../src/quant/qg.js';
import { f32ToF16 } from '../src/tensor/dtype.js';
import { Rand, randomGptqCodes } from './helpers.js';

const rng = new Rand(20261202);

const codes = (bits: GptqBits, N: number, K: number, groupSize: number, actOrder: boolean) => randomGptqCodes(rng, bits, N, K, groupSize, actOrder);

/** [nG, N] (the files' order) → [N, nG] (the kernels'). */
function transpose<T extends Uint8Array | Uint16Array>(a: T, nG: number, N: number, make: (n: number) => T): T {
  const out = make(a.length);
  for (let g = 0; g < nG; g++) for (let n = 0; n < N; n++) out[n * nG + g] = a[g * N + n];
  return out;
}

test('gptqGroupParams: scales and zeros per (row, group) as unpackGptq reads them, v1 and v2, 2/3/4/8 bits', () => {
  for (const [bits, N, K, gs] of [[4, 64, 256, 128], [2, 48, 320, 64], [3, 64, 256, -1], [8, 36, 192, 32]] as [GptqBits, number, number, number][])
    for (const checkpointFormat of ['gptq', 'gptq_v2'] as const) {
      const c = codes(bits, N, K, gs, false);
      if (checkpointFormat === 'gptq') c.zeros.forEach((z, i) => { c.zeros[i] = Math.max(1, z); });  // v1 stores zero − 1: 0 does not read back
      const w = packGptq(c, { sym: false, descAct: false, checkpointFormat });
      const u = unpackGptq(w), nG = w.nGroups, p = gptqGroupParams(w);
      assert.deepEqual(p.zeros, transpose(u.zeros, nG, N, (n) => new Uint8Array(n)), `${bits}-bit ${checkpointFormat}`);
      assert.deepEqual(p.scales, transpose(Uint16Array.from(u.scales, f32ToF16), nG, N, (n) => new Uint16Array(n)));
    }
});

test('awqGroupParams: both layouts give unpackAwq\'s scales and zeros', () => {
  for (const layout of ['gemm', 'gemv'] as const) {
    const c = codes(4, 64, 256, 64, false), w = packAwq(c, { layout }), u = unpackAwq(w), p = awqGroupParams(w);
    assert.deepEqual(p.zeros, transpose(u.zeros, w.nGroups, 64, (n) => new Uint8Array(n)), layout);
    assert.deepEqual(p.scales, transpose(Uint16Array.from(u.scales, f32ToF16), w.nGroups, 64, (n) => new Uint16Array(n)), layout);
  }
});

test('qgOrder: the identity in order, the act-order permutation qgPack lays out, null where no layout exists', () => {
  const inOrder = codes(4, 8, 200, 64, false);
  assert.deepEqual(qgOrder(inOrder.gIdx, 200, 64), { Kpad: 256, G: 64, nG: 4, perm: null });
  assert.deepEqual(qgOrder(inOrder.gIdx, 200, -1), null, 'a -1 group with a g_idx of several groups');
  assert.deepEqual(qgOrder(new Int32Array(200), 200, -1), { Kpad: 256, G: 256, nG: 1, perm: null });
  const act = codes(4, 8, 256, 32, true), o = qgOrder(act.gIdx, 256, 32)!;
  assert.ok(o.perm);
  assert.deepEqual(o.perm, qgPack(act)!.perm);
  for (let j = 0; j < 256; j++) assert.equal(act.gIdx[o.perm[j]], Math.floor(j / 32));  // every group a contiguous run
  assert.equal(qgOrder(codes(4, 8, 240, 48, false).gIdx, 240, 48), null, 'group 48: not a multiple of 32');
});
