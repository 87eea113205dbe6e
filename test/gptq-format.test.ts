// GPTQ checkpoints both ways (../shared/spec/FORMATS.md §4.5-4.6): pack/unpack bit for bit at 2/3/4/8 bits with the
// spec's test vectors, v1 ⇄ v2, and the Python-layout fixtures of scripts/fixtures/make_gptq_fixtures.py.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  convertGptqFormat, dequantizeGptq, GptqError, gptqFromStateDict, gptqGroups, gptqToStateDict, packGptq, unpackGptq,
  type GptqCheckpointFormat, type GptqWeight,
} from '../src/quant/gptq-format.js';
import { GPTQ_BITS, type GptqBits, type GptqCodes } from '../src/quant/gptq-types.js';
import { f16ToF32 } from '../src/tensor/dtype.js';
import { Rand } from './helpers.js';

/** Random codes [N, K] whose scales are float16 values (so pack → unpack is exact), act-order g_idx if asked. */
function randomCodes(rng: Rand, bits: GptqBits, N: number, K: number, groupSize: number, actOrder = false): GptqCodes {
  const maxq = (1 << bits) - 1, G = gptqGroups(K, groupSize), Gs = groupSize === -1 ? K : groupSize;
  const intWeight = Uint8Array.from({ length: N * K }, () => Math.floor(rng.next() * (maxq + 1)));
  const zeros = Uint8Array.from({ length: G * N }, () => Math.floor(rng.next() * (maxq + 1)));
  const scales = Float32Array.from({ length: G * N }, () => f16ToF32(0x1000 + Math.floor(rng.next() * 0x2000)));
  const perm = Array.from({ length: K }, (_, i) => i);
  if (actOrder) for (let i = K - 1; i > 0; i--) { const j = Math.floor(rng.next() * (i + 1)); [perm[i], perm[j]] = [perm[j], perm[i]]; }
  // g_idx[c] = (position of c in the permutation) // G, as AutoGPTQ derives it (§4.3 step 9).
  const gIdx = new Int32Array(K);
  perm.forEach((c, p) => { gIdx[c] = Math.floor(p / Gs); });
  return { bits, groupSize, shape: [N, K], intWeight, scales, zeros, gIdx };
}

const u32 = (x: number) => x >>> 0;

test('pack → unpack is bit-exact at 2/3/4/8 bits: odd sizes, partial last group, group -1, act-order g_idx, v1 and v2', () => {
  const rng = new Rand(7);
  // N and K: the smallest multiples the packing allows times an odd number (3-bit: 32).
  const cases: [GptqBits, number, number, number][] = [
    [2, 48, 80, 32], [2, 16, 16, -1], [3, 96, 160, 64], [3, 32, 32, 128], [4, 40, 72, 16], [4, 8, 8, -1], [4, 24, 136, 128],
    [8, 12, 20, 8], [8, 4, 4, -1], [8, 36, 44, 32],
  ];
  for (const [bits, N, K, G] of cases) {
    for (const actOrder of [false, true]) {
      for (const fmt of ['gptq', 'gptq_v2'] as GptqCheckpointFormat[]) {
        const c = randomCodes(rng, bits, N, K, G, actOrder);
        if (fmt === 'gptq') c.zeros.forEach((z, i) => { if (z === 0) c.zeros[i] = 1; });   // v1 cannot hold zero 0 (below)
        const w = packGptq(c, { sym: false, descAct: actOrder, checkpointFormat: fmt });
        assert.equal(w.qweight.length, (K * bits / 32) * N);
        assert.equal(w.qzeros.length, gptqGroups(K, G) * (N * bits / 32));
        assert.deepEqual(unpackGptq(w), c, `${bits}-bit [${N}, ${K}] g${G} ${actOrder ? 'act-order ' : ''}${fmt}`);
        // Dequantize is scale·(q − z) through g_idx, in float32.
        const W = dequantizeGptq(w);
        for (const [n, k] of [[0, 0], [N - 1, K - 1], [N >> 1, K >> 1]]) {
          const g = c.gIdx[k];
          assert.equal(W[n * K + k], Math.fround(c.scales[g * N + n] * (c.intWeight[n * K + k] - c.zeros[g * N + n])));
        }
      }
    }
  }
});

test('the spec\'s test vectors: 4-bit qweight words along K, sym qzeros 0x77777777 (v1) / 0x88888888 (v2), 3-bit words', () => {
  // 4-bit, one output, K = 8: word = k0 | k1<<4 | … | k7<<28.
  const ks = [1, 2, 3, 4, 5, 6, 7, 15];
  const c: GptqCodes = { bits: 4, groupSize: -1, shape: [8, 8], intWeight: new Uint8Array(64), scales: new Float32Array(8).fill(1), zeros: new Uint8Array(8).fill(8), gIdx: new Int32Array(8) };
  ks.forEach((v, k) => { c.intWeight[3 * 8 + k] = v; });                   // output n = 3
  const v1 = packGptq(c, { sym: true, descAct: false });
  assert.equal(u32(v1.qweight[3]), u32(ks.reduce((a, v, k) => a | (v << (4 * k)), 0)));
  assert.equal(u32(v1.qweight[3]), 0xf7654321);
  assert.deepEqual([...v1.qzeros], [2004318071]);                          // 0x77777777
  const v2 = packGptq(c, { sym: true, descAct: false, checkpointFormat: 'gptq_v2' });
  assert.deepEqual([...v2.qzeros], [-2004318072]);                         // 0x88888888 as int32
  assert.deepEqual([...convertGptqFormat(v1, 'gptq_v2').qzeros], [...v2.qzeros]);
  assert.deepEqual([...convertGptqFormat(v2, 'gptq').qzeros], [...v1.qzeros]);
  // 2-bit sym zero 2 → v1 field 1 (0x55555555), 8-bit zero 128 → 127 per byte (0x7f7f7f7f).
  const sym = (bits: GptqBits) => packGptq({ ...c, bits, shape: [32, 32], intWeight: new Uint8Array(1024), scales: new Float32Array(32), zeros: new Uint8Array(32).fill(1 << (bits - 1)), gIdx: new Int32Array(32) }, { sym: true, descAct: false });
  assert.deepEqual([...sym(2).qzeros].map(u32), [0x55555555, 0x55555555]);
  assert.deepEqual([...sym(8).qzeros].map(u32), Array(8).fill(0x7f7f7f7f));

  // 3-bit: 32 values in 3 words (§4.5): word0 = v0..v9 | low 2 bits of v10 << 30; word1 = bit 2 of v10 | v11..v20 << 1
  // | low bit of v21 << 31; word2 = bits 1..2 of v21 | v22..v31 << 2. Checked field by field from that text.
  const words3 = (vals: number[]) => {
    const w = [0, 0, 0];
    for (let j = 0; j < 10; j++) w[0] |= vals[j] << (3 * j);
    w[0] |= (vals[10] & 3) << 30; w[1] |= vals[10] >> 2;
    for (let j = 0; j < 10; j++) w[1] |= vals[11 + j] << (3 * j + 1);
    w[1] |= (vals[21] & 1) << 31; w[2] |= vals[21] >> 1;
    for (let j = 0; j < 10; j++) w[2] |= vals[22 + j] << (3 * j + 2);
    return w.map(u32);
  };
  const rng = new Rand(3);
  for (let t = 0; t < 20; t++) {
    const vals = Array.from({ length: 32 }, () => Math.floor(rng.next() * 8));
    if (t === 0) vals.fill(7);
    const c3: GptqCodes = { bits: 3, groupSize: -1, shape: [32, 32], intWeight: new Uint8Array(1024), scales: new Float32Array(32), zeros: Uint8Array.from(vals.map((v) => v || 1)), gIdx: new Int32Array(32) };
    vals.forEach((v, k) => { c3.intWeight[5 * 32 + k] = v; });              // output 5, inputs 0..31
    const w = packGptq(c3, { sym: false, descAct: false, checkpointFormat: 'gptq_v2' });
    assert.deepEqual([w.qweight[5], w.qweight[32 + 5], w.qweight[64 + 5]].map(u32), words3(vals));
    assert.deepEqual([...w.qzeros].map(u32), words3(vals.map((v) => v || 1)));
    // v1 stores zero − 1 in the same fields.
    assert.deepEqual([...convertGptqFormat(w, 'gptq').qzeros].map(u32), words3(vals.map((v) => (v || 1) - 1)));
  }
});

test('v1 asymmetric zero 0 is stored as AutoGPTQ\'s pack stores it (uint32 −1 OR-ed in) and reads back as its loaders read it', () => {
  // 4-bit, 8 outputs in one word: zeros [5, 0, 3, 9, 0, 2, 1, 15].
  const zeros = [5, 0, 3, 9, 0, 2, 1, 15];
  const c: GptqCodes = { bits: 4, groupSize: -1, shape: [8, 8], intWeight: new Uint8Array(64), scales: new Float32Array(8).fill(1), zeros: Uint8Array.from(zeros), gIdx: new Int32Array(8) };
  const w = packGptq(c, { sym: false, descAct: false });
  // numpy: (4) | (0xFFFFFFFF << 4) | … — every field from the first zero 0 up is 0xF.
  assert.equal(u32(w.qzeros[0]), 0xfffffff4);
  // AutoGPTQ's loaders add one back and mask: (0xF + 1) & 0xF = 0, so outputs 1..7 read zero 0.
  assert.deepEqual([...unpackGptq(w).zeros], [5, 0, 0, 0, 0, 0, 0, 0]);
  // v2 holds them as they are; converting it to v1 per field is lossless (no corruption), and back.
  const v2 = packGptq(c, { sym: false, descAct: false, checkpointFormat: 'gptq_v2' });
  assert.deepEqual([...unpackGptq(v2).zeros], zeros);
  const v1 = convertGptqFormat(v2, 'gptq');
  assert.deepEqual([...unpackGptq(v1).zeros], zeros);
  assert.deepEqual([...convertGptqFormat(v1, 'gptq_v2').qzeros], [...v2.qzeros]);
  // 3-bit: a zero 0 at v10 (straddling) sets bits 30-31 of word 0 and, masked, bit 0 of word 1 only.
  const z3 = new Uint8Array(32).fill(1); z3[10] = 0;
  const w3 = packGptq({ bits: 3, groupSize: -1, shape: [32, 32], intWeight: new Uint8Array(1024), scales: new Float32Array(32), zeros: z3, gIdx: new Int32Array(32) }, { sym: false, descAct: false });
  assert.deepEqual([...w3.qzeros].map(u32), [0xc0000000, 1, 0]);
});

test('shapes the packing cannot hold, codes past the bit width and bad g_idx are GptqErrors naming the layer', () => {
  const rng = new Rand(1);
  const ok = randomCodes(rng, 4, 16, 16, 8);
  const refuses = (c: GptqCodes, re: RegExp) => assert.throws(() => packGptq(c, { name: 'model.layers.0.mlp.down_proj', sym: true, descAct: false }),
    (e: Error) => e instanceof GptqError && e.message.startsWith('model.layers.0.mlp.down_proj: ') && re.test(e.message), re.source);
  refuses(randomCodes(rng, 4, 172, 16, 8), /out_features 172 is not a multiple of 8/);
  refuses(randomCodes(rng, 4, 16, 172, -1), /in_features 172 is not a multiple of 8/);
  refuses(randomCodes(rng, 3, 32, 48, -1), /in_features 48 is not a multiple of 32/);
  refuses(randomCodes(rng, 3, 16, 32, -1), /out_features 16 is not a multiple of 32/);
  refuses({ ...ok, bits: 5 as GptqBits }, /bits must be one of 2, 3, 4, 8, got 5/);
  refuses({ ...ok, groupSize: 0 }, /group size must be -1 or a positive integer, got 0/);
  refuses({ ...ok, intWeight: ok.intWeight.map((v, i) => (i === 17 ? 16 : v)) }, /code 16 at \[1, 1\] does not fit 4 bits/);
  refuses({ ...ok, gIdx: ok.gIdx.map((g, i) => (i === 3 ? 2 : g)) }, /g_idx\[3\] = 2 is not a group in \[0, 2\)/);
  refuses({ ...ok, scales: ok.scales.subarray(1) }, /scales hold 31 values, \[2, 16\] needs 32/);
});

test('state dict: AutoGPTQ names, dtypes and shapes; read back by name with shapes checked against the config', () => {
  const rng = new Rand(5);
  for (const bits of GPTQ_BITS) {
    const N = 64, K = 96, c = randomCodes(rng, bits, N, K, 32, true);
    c.zeros.fill(1 << (bits - 1));                                          // sym: 2^(bits-1)
    const w = packGptq(c, { sym: true, descAct: true });
    const sd = gptqToStateDict('p', w);
    assert.deepEqual([...sd].map(([k, t]) => [k, t.dtype, [...t.shape]]), [
      ['p.qweight', 'I32', [K * bits / 32, N]], ['p.qzeros', 'I32', [3, N * bits / 32]], ['p.scales', 'F16', [3, N]], ['p.g_idx', 'I32', [K]],
    ]);
    const layout = { bits, groupSize: 32, sym: true, descAct: true, checkpointFormat: 'gptq' as const };
    const back: GptqWeight = gptqFromStateDict('p', (n) => sd.get(n), layout, [N, K]);
    assert.deepEqual(unpackGptq(back), c);
    assert.equal(back.qweight, w.qweight, 'views, not copies');
    assert.throws(() => gptqFromStateDict('p', (n) => sd.get(n), { ...layout, groupSize: 64 }, [N, K]),
      /^GptqError: p\.qzeros: expected I32 \[2, \d+\] for a \d-bit \[64, 96\] layer: 2 groups of 64 inputs, got I32 \[3, \d+\]/);
    assert.throws(() => gptqFromStateDict('p', (n) => (n === 'p.g_idx' ? undefined : sd.get(n)), layout, [N, K]), /p\.g_idx: missing from the checkpoint/);
    assert.throws(() => gptqFromStateDict('p', (n) => sd.get(n), layout, [N, 101]), /p: in_features 101 is not a multiple/);
  }
});
