// AWQ's tensors (src/quant/awq-format.ts, FORMATS.md §5.4) and config (src/io/awqconfig.ts, §5.5): the spec's test
// vector for the GEMM interleave, codes → GEMM → codes and → GEMV → codes exact for every group size the layouts
// allow (K not a multiple of 64 too), dequantize = scale·(q − z), the errors that name what is wrong, AWQ's
// round-to-nearest grid, the config reader/writer; then the kernels: the cpu backend's matmulQ on AWQ weights (GPTQ's
// group-quantized kernels, unpacked once) against its twins for M = 1..5, 8, 9, 17 and groups 32/64/128/-1.
import { describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpuBackend } from '../src/backend/cpu/index.js';
import { refBackend } from '../src/backend/ref/index.js';
import { AwqConfig, awqConfigDict, parseAwqConfig } from '../src/io/awqconfig.js';
import { ConfigError, UnsupportedModelError } from '../src/io/config.js';
import { parseQuantizationConfig } from '../src/io/quantconfig.js';
import { loadAddon } from '../src/native/addon.js';
import {
  AWQ_ORDER, AWQ_REVERSE_ORDER, AwqError, awqFromStateDict, awqRtnCodes, awqShapeProblem, awqToStateDict, awqZerosWidth,
  convertAwqLayout, dequantizeAwq, packAwq, unpackAwq, type AwqLayout,
} from '../src/quant/awq-format.js';
import { packGptq } from '../src/quant/gptq-format.js';
import type { GptqCodes } from '../src/quant/gptq-types.js';
import { qgDecodeRef, qgPack } from '../src/quant/qg.js';
import { fromAwq, fromGptq } from '../src/quant/qweight.js';
import { f16ToF32, f32ToF16 } from '../src/tensor/dtype.js';
import { Tensor } from '../src/tensor/tensor.js';
import { setWarningHandler } from '../src/util/warn.js';
import { Rand, simdLevels } from './helpers.js';

const SEED = Number(process.env.LOWBIT_TEST_SEED ?? (Date.now() % 2 ** 31));
const rng = new Rand(SEED);
const randn = (n: number, std = 1) => Float32Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(rng.next() + 1e-12)) * Math.cos(2 * Math.PI * rng.next()));

/** Random 4-bit codes for [N, K] at group size G (or -1): float16 scales, zeros over the whole 0..15. */
function randomCodes(N: number, K: number, groupSize: number): GptqCodes {
  const G = groupSize === -1 ? K : groupSize, nG = K / G;
  return {
    bits: 4, groupSize, shape: [N, K],
    intWeight: Uint8Array.from({ length: N * K }, () => Math.floor(rng.next() * 16)),
    scales: Float32Array.from({ length: nG * N }, () => f16ToF32(f32ToF16(0.001 + 0.02 * rng.next()))),
    zeros: Uint8Array.from({ length: nG * N }, () => Math.floor(rng.next() * 16)),
    gIdx: Int32Array.from({ length: K }, (_, k) => Math.floor(k / G)),
  };
}

const same = (a: GptqCodes, b: GptqCodes, what: string) => {
  assert.deepEqual([a.bits, a.groupSize, [...a.shape]], [b.bits, b.groupSize, [...b.shape]], what);
  assert.deepEqual(a.intWeight, b.intWeight, `${what}: codes`);
  assert.deepEqual(a.zeros, b.zeros, `${what}: zeros`);
  assert.deepEqual(a.scales, b.scales, `${what}: scales`);
  assert.deepEqual(a.gIdx, b.gIdx, `${what}: g_idx`);
};

describe('AWQ tensors', () => {
  it('the spec\'s GEMM vector: outputs 0..7 with codes c0..c7 pack as c0 | c2<<4 | c4<<8 | c6<<12 | c1<<16 | c3<<20 | c5<<24 | c7<<28', () => {
    assert.deepEqual(AWQ_ORDER.map((o) => AWQ_REVERSE_ORDER[o]), [0, 1, 2, 3, 4, 5, 6, 7]);
    const c = [1, 2, 3, 4, 5, 6, 7, 15];
    const codes: GptqCodes = { bits: 4, groupSize: -1, shape: [8, 1], intWeight: Uint8Array.from(c), scales: new Float32Array(8).fill(1), zeros: Uint8Array.from([9, 8, 7, 6, 5, 4, 3, 2]), gIdx: new Int32Array(1) };
    const w = packAwq(codes);
    const word = (v: number[]) => (v[0] | v[2] << 4 | v[4] << 8 | v[6] << 12 | v[1] << 16 | v[3] << 20 | v[5] << 24 | v[7] << 28) | 0;
    assert.deepEqual([...w.qweight], [word(c)]);
    assert.deepEqual([...w.qzeros], [word([9, 8, 7, 6, 5, 4, 3, 2])]);
    assert.equal(w.qweight[0], -163416783);          // 0xF6427531 as int32: the top nibble (c7 = 15) sets the sign
    // GEMV of the same layer is natural order along K: K = 1 is not a whole word, so it has no GEMV layout.
    assert.match(awqShapeProblem([8, 1], -1, 'gemv')!, /in_features 1 is not a multiple of 8/);
  });

  it('codes → GEMM → codes and → GEMV → codes are exact; GEMM ⇄ GEMV converts exactly; dequantize is scale·(q − z)', () => {
    const cases: [number, number, number, AwqLayout[]][] = [
      [24, 256, 128, ['gemm', 'gemv']], [16, 256, 64, ['gemm', 'gemv']], [32, 160, 32, ['gemm', 'gemv']], [8, 96, 32, ['gemm', 'gemv']],
      [16, 128, -1, ['gemm', 'gemv']], [8, 320, 64, ['gemm', 'gemv']], [40, 1056, 32, ['gemm', 'gemv']],
      [16, 100, 20, ['gemm']], [8, 36, -1, ['gemm']], [8, 384, 192, ['gemm', 'gemv']],
    ];
    for (const [N, K, G, layouts] of cases) {
      const codes = randomCodes(N, K, G);
      const W = dequantizeAwq(packAwq(codes));
      const Gr = G === -1 ? K : G;
      for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) {
        const g = Math.floor(k / Gr);
        assert.equal(W[n * K + k], Math.fround(codes.scales[g * N + n] * (codes.intWeight[n * K + k] - codes.zeros[g * N + n])));
      }
      for (const layout of layouts) {
        const w = packAwq(codes, { layout });
        same(unpackAwq(w), codes, `[${N}, ${K}] g${G} ${layout}`);
        assert.deepEqual(dequantizeAwq(w), W, `[${N}, ${K}] g${G} ${layout} dequantize`);
        const sd = awqToStateDict('p', w);
        const shapes = [...sd.values()].map((t) => [...t.shape]);
        if (layout === 'gemm') assert.deepEqual(shapes, [[K, N / 8], [K / Gr, N / 8], [K / Gr, N]]);
        else {
          const wz = awqZerosWidth(K, Gr);
          assert.deepEqual(shapes, [[N, K / 8], [N, wz], [N, 8 * wz]]);
          // The padding AutoAWQ leaves: scales past the last group are 0, and so are the zeros' unused nibbles.
          for (let n = 0; n < N; n++) for (let j = K / Gr; j < 8 * wz; j++) assert.equal(w.scales[n * 8 * wz + j], 0);
          for (let n = 0; n < N; n++) for (let j = K / Gr; j < 8 * wz; j++) assert.equal((w.qzeros[n * wz + (j >> 3)] >>> (4 * (j & 7))) & 15, 0);
        }
        // Read back by name from its own state dict: views, the same layer.
        const back = awqFromStateDict('p', (n) => sd.get(n), { layout, groupSize: G }, [N, K]);
        assert.equal(back.qweight, w.qweight);
        same(unpackAwq(back), codes, `[${N}, ${K}] g${G} ${layout} by name`);
      }
      if (layouts.includes('gemv')) {
        const gemv = packAwq(codes, { layout: 'gemv' }), gemm = packAwq(codes);
        assert.deepEqual(convertAwqLayout(gemv, 'gemm').qweight, gemm.qweight);
        assert.deepEqual(convertAwqLayout(gemm, 'gemv').qzeros, gemv.qzeros);
        assert.deepEqual(convertAwqLayout(gemm, 'gemv').scales, gemv.scales);
      }
    }
    // calculate_zeros_width, as AutoAWQ computes it.
    assert.deepEqual([awqZerosWidth(4096, 128), awqZerosWidth(4096, 64), awqZerosWidth(4096, 32), awqZerosWidth(11008, 128), awqZerosWidth(64, 32), awqZerosWidth(128, 64)],
      [4, 8, 16, 11, 4, 2]);
    assert.throws(() => awqZerosWidth(96, 48), /group size 48 has no GEMV layout/);
  });

  it('errors name the option, the tensor and what the layout needs', () => {
    const ok = randomCodes(16, 64, 32);
    assert.throws(() => packAwq({ ...ok, bits: 3 }, { name: 'L' }), (e: Error) => e instanceof AwqError && /^L: AWQ checkpoints hold 4-bit codes only .* got bits 3/.test(e.message));
    assert.throws(() => packAwq(randomCodes(12, 64, 32)), /out_features 12 is not a multiple of 8/);
    assert.throws(() => packAwq({ ...randomCodes(16, 64, 32), groupSize: 48 }), /in_features 64 is not a multiple of the group size 48/);
    assert.throws(() => packAwq(randomCodes(16, 100, 20), { layout: 'gemv' }), /in_features 100 is not a multiple of 8/);
    assert.throws(() => packAwq(randomCodes(16, 96, 48), { layout: 'gemv' }), /group size 48 has no GEMV layout/);
    const act = randomCodes(16, 64, 32);
    act.gIdx[3] = 1;
    assert.throws(() => packAwq(act), /g_idx\[3\] is 1, but AWQ groups are consecutive runs of 32 inputs/);
    const big = randomCodes(16, 64, 32);
    big.zeros[5] = 16;
    assert.throws(() => packAwq(big), /zero 16 at \[0, 5\] does not fit 4 bits/);
    assert.throws(() => packAwq(ok, { layout: 'gemv_fast' as AwqLayout }), /version must be "gemm" or "gemv"/);
    const sd = awqToStateDict('m.q', packAwq(ok));
    assert.throws(() => awqFromStateDict('m.q', (n) => sd.get(n), { layout: 'gemm', groupSize: 64 }, [16, 64]),
      (e: Error) => e instanceof AwqError && e.message === 'm.q.qzeros: expected I32 [1, 2] for a 4-bit [16, 64] GEMM layer with 1 group of 64 inputs, got I32 [2, 2]');
    assert.throws(() => awqFromStateDict('m.q', (n) => sd.get(n), { layout: 'gemv', groupSize: 32 }, [16, 64]), /m\.q\.qweight: expected I32 \[16, 8\] for a 4-bit \[16, 64\] GEMV layer/);
    assert.throws(() => awqFromStateDict('m.q', (n) => (n.endsWith('scales') ? undefined : sd.get(n)), { layout: 'gemm', groupSize: 32 }, [16, 64]),
      /m\.q\.scales: missing from the checkpoint \(an AWQ layer has qweight, qzeros and scales\)/);
  });

  it('round to nearest on AWQ\'s zero-point grid (§5.3): hand-computed groups, ties to even', () => {
    // One row, three groups of 4 (binary-exact values, so every step is exact in float32). Group 0: min −0.375, max 1.5
    // → scale 1.875/15 = 0.125, zero −round(−3) = 3; w/scale = −3, 0.5, 2.5, 12 → half to even −3, 0, 2, 12 → 0, 3, 5,
    // 15. Group 1: min/scale = −2.5 → zero −round(−2.5) = 2 (even); 12.5 → 12, 1.5 → 2. Group 2: all 0.5 → max − min
    // clamps to 1e-5, scale 1e-5/15, zero clamp(−round(0.5/scale), 0, 15) = 0, q clamps to 15.
    const w = Float32Array.from([-0.375, 0.0625, 0.3125, 1.5, -0.3125, 1.5625, 0, 0.1875, 0.5, 0.5, 0.5, 0.5]);
    const c = awqRtnCodes(w, [1, 12], 4);
    assert.deepEqual([...c.scales], [0.125, 0.125, Math.fround(Math.fround(1e-5) / 15)]);
    assert.deepEqual([...c.zeros], [3, 2, 0]);
    assert.deepEqual([...c.intWeight], [0, 3, 5, 15, 0, 14, 2, 4, 15, 15, 15, 15]);
    assert.deepEqual([...c.gIdx], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    // A negative-only group: zero −round(−2/0.125) = 16 clamps to 15, and the codes below it clamp at 0.
    const neg = awqRtnCodes(Float32Array.from([-2, -0.125, -1, -0.5]), [1, 4], -1);
    assert.deepEqual([neg.zeros[0], [...neg.intWeight]], [15, [0, 14, 7, 11]]);
  });
});

describe('AWQ config', () => {
  it('reads AutoAWQ\'s, transformers\' and quant_config.json\'s spellings; writes exactly to_transformers_dict', () => {
    const autoawq = parseAwqConfig({ quant_method: 'awq', zero_point: true, group_size: 128, bits: 4, version: 'gemm', modules_to_not_convert: null }, 'c');
    assert.deepEqual([autoawq.method, autoawq.bits, autoawq.groupSize, autoawq.zeroPoint, autoawq.version, autoawq.layout, autoawq.modulesToNotConvert],
      ['awq', 4, 128, true, 'gemm', 'gemm', null]);
    const old = parseQuantizationConfig({ zero_point: true, q_group_size: 64, w_bit: 4, version: 'GEMV' }, 'quant_config.json', { where: '', defaultMethod: 'awq' });
    assert.deepEqual(old && old.method === 'awq' && [old.groupSize, old.version, old.layout], [64, 'gemv', 'gemv']);
    const tf = parseAwqConfig({ quant_method: 'awq', bits: 4, group_size: 32, zero_point: true, version: 'exllama', backend: 'autoawq', do_fuse: false,
      fuse_max_seq_len: null, modules_to_fuse: null, modules_to_not_convert: ['visual'], exllama_config: { version: 2, max_input_len: 2048, max_batch_size: 8 } }, 'c');
    assert.deepEqual([tf.version, tf.layout, tf.skipModules], ['exllama', 'gemm', ['visual']]);
    assert.deepEqual([...awqConfigDict(autoawq).entries()], [['quant_method', 'awq'], ['zero_point', true], ['group_size', 128], ['bits', 4], ['version', 'gemm'], ['modules_to_not_convert', null]]);
    // A config.json quantization_config dispatches here by quant_method.
    assert.equal(parseQuantizationConfig({ quant_method: 'awq', bits: 4, group_size: 128, zero_point: true, version: 'gemm' }, 'c')?.method, 'awq');
  });

  it('refuses what it cannot read, naming the key; from a call, unknown keys are errors', () => {
    const refuses = (v: Record<string, unknown>, E: typeof ConfigError, re: RegExp, strict = false) =>
      assert.throws(() => parseAwqConfig(v, 'f/config.json', { strict }), (e: Error) => e instanceof E && re.test(e.message), JSON.stringify(v));
    refuses({ quant_method: 'awq', bits: 3 }, UnsupportedModelError, /"quantization_config\.bits" 3 is not supported: AWQ checkpoints pack 4-bit codes only/);
    refuses({ quant_method: 'awq', bits: 5 }, ConfigError, /"quantization_config\.bits" must be 4, got 5/);
    refuses({ quant_method: 'awq', group_size: 0 }, ConfigError, /group_size" must be -1 or a positive integer, got 0/);
    refuses({ quant_method: 'awq', version: 'marlin' }, UnsupportedModelError, /version" "marlin" is not supported: AutoAWQ's Marlin-repacked tensors/);
    refuses({ quant_method: 'awq', version: 'GEMV_fast' }, UnsupportedModelError, /GEMVFast/);
    refuses({ quant_method: 'awq', version: 'gemmm' }, ConfigError, /version" must be "gemm" or "gemv"/);
    refuses({ quant_method: 'awq', backend: 'llm-awq' }, UnsupportedModelError, /llm-awq's real-quant tensors/);
    refuses({ quant_method: 'awq', modules_to_not_convert: 'lm_head' }, ConfigError, /modules_to_not_convert" must be a list of module names or null/);
    refuses({ quant_method: 'awq', zero_point: 'yes' }, ConfigError, /zero_point" must be true or false/);
    refuses({ quant_method: 'awq', bits: 4, w_bit: 4 }, ConfigError, /gives bits twice/);
    refuses({ quant_method: 'awq', group_szie: 64 }, ConfigError, /"quantization_config\.group_szie" is not an AwqConfig field/, true);
    // From a file, an unknown key is said once and read past.
    const said: string[] = [];
    const prev = setWarningHandler((m) => said.push(m), { reset: true });
    try { parseAwqConfig({ quant_method: 'awq', future_key: 1 }, 'f/config.json'); } finally { setWarningHandler(prev, { reset: true }); }
    assert.deepEqual(said, ['f/config.json: "quantization_config.future_key" is not an AWQ config field lowbit knows; ignored']);
  });

  it('AwqConfig: camelCase (snake_case and w_bit accepted), checked as built, toDict', () => {
    const c = new AwqConfig({ groupSize: 64, version: 'GEMV', modulesToNotConvert: ['down_proj'], dataset: ['a text'], nsamples: 8 });
    assert.deepEqual([c.bits, c.groupSize, c.zeroPoint, c.version, c.modulesToNotConvert, c.nsamples, c.seqlen], [4, 64, true, 'gemv', ['down_proj'], 8, 512]);
    assert.deepEqual(Object.fromEntries(c.toDict()), { quant_method: 'awq', zero_point: true, group_size: 64, bits: 4, version: 'gemv', modules_to_not_convert: ['down_proj'] });
    assert.equal(new AwqConfig({ w_bit: 4, q_group_size: 32 }).groupSize, 32);
    assert.equal(new AwqConfig().groupSize, 128);
    assert.throws(() => new AwqConfig({ groupsize: 64 }), /AwqConfig: "groupsize" is not an AwqConfig field \(did you mean groupSize\?\)/);
    assert.throws(() => new AwqConfig({ bits: 8 as 4 }), /"bits" 8 is not supported/);
    assert.throws(() => new AwqConfig({ version: 'exllama' as 'gemm' }), /version" must be "gemm" or "gemv" \(the layouts lowbit writes\)/);
  });
});

const addon = loadAddon();
test('cpu matmulQ on AWQ weights runs GPTQ\'s native kernels (no warning): = the same codes as a GPTQ layer, within the decode twin\'s bound of ref', { skip: addon ? false : 'native addon not built' }, () => {
  const said: string[] = [];
  const prev = setWarningHandler((m) => said.push(m), { reset: true });
  try {
    assert.equal(cpuBackend.supports('matmulQ', ['awq']), true);
    assert.equal(refBackend.supports('matmulQ', ['awq']), true);
    for (const [N, K, G] of [[24, 256, 128], [16, 256, 64], [32, 160, 32], [16, 96, 32], [8, 320, -1], [16, 192, 64]] as const) {
      const codes = randomCodes(N, K, G);
      for (const layout of ['gemm', 'gemv'] as const) {
        const awq = fromAwq(packAwq(codes, { layout })), gptq = fromGptq(packGptq(codes, { sym: false, descAct: false, checkpointFormat: 'gptq_v2' }));
        const p = qgPack(unpackAwq(awq.awq))!;
        for (const M of [1, 2, 3, 4, 5, 8, 9, 17]) {
          const x = Tensor.f32([M, K], randn(M * K)), bias = M % 2 ? Tensor.f32([N], randn(N, 0.1)) : null;
          const ref = Tensor.zeros('F32', [M, N]), refG = Tensor.zeros('F32', [M, N]);
          refBackend.matmulQ!(x, awq, bias, ref);
          refBackend.matmulQ!(x, gptq, bias, refG);
          assert.deepEqual(ref.f32, refG.f32, 'ref: AWQ and GPTQ of the same codes dequantize alike');
          const W = dequantizeAwq(awq.awq);
          for (const level of simdLevels()) {
            addon!.setLevel(level);
            const got = Tensor.zeros('F32', [M, N]), gotG = Tensor.zeros('F32', [M, N]);
            cpuBackend.matmulQ!(x, awq, bias, got);
            cpuBackend.matmulQ!(x, gptq, bias, gotG);
            assert.deepEqual(got.f32, gotG.f32, `${level} [${N}, ${K}] g${G} ${layout} M=${M}: the AWQ layer runs the GPTQ kernel`);
            // M ≤ 8: the int8-activation decode, equal to its twin; above: the exact GEMM, equal to ref up to summation order.
            const want = M <= 8 ? qgDecodeRef(x.f32, M, p, bias?.f32 ?? null)! : ref.f32;
            for (let i = 0; i < M * N; i++) {
              const m = Math.floor(i / N), n = i % N;
              let mag = 0;
              for (let k = 0; k < K; k++) mag += Math.abs(x.f32[m * K + k] * W[n * K + k]);
              assert.ok(Math.abs(got.f32[i] - want[i]) <= 1e-5 * (mag + 1), `${level} [${N}, ${K}] g${G} ${layout} M=${M} out ${i} (seed ${SEED}): ${got.f32[i]} vs ${want[i]}`);
            }
          }
          addon!.setLevel('best');
        }
      }
    }
    // A group size the kernels do not take (20: not a multiple of 32) runs the reference with one warning.
    const odd = fromAwq(packAwq(randomCodes(16, 100, 20)));
    const x = Tensor.f32([2, 100], randn(200)), a = Tensor.zeros('F32', [2, 16]), b = Tensor.zeros('F32', [2, 16]);
    cpuBackend.matmulQ!(x, odd, null, a);
    cpuBackend.matmulQ!(x, odd, null, a);
    refBackend.matmulQ!(x, odd, null, b);
    assert.deepEqual(a.f32, b.f32);
    assert.equal(said.length, 1);
    assert.match(said[0], /an AWQ layer \[16,100\] with group size 20 has no native layout .* runs the reference matmul/);
  } finally {
    setWarningHandler(prev, { reset: true });
    addon?.setLevel('best');
  }
});
