// bitsandbytes reference algorithms (src/quant/bnb4.ts, src/quant/int8.ts) against hand-computed cases, bounds on
// random data of odd sizes, and test/fixtures/bnb: outputs of bitsandbytes 0.50.2.dev0 (built from source on an
// H200) and a 1-layer Llama saved by transformers 5.17 in nf4 + double quant and in int8
// (scripts/golden/make_bnb_fixture.py; docs/p4-progress.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseSafetensors, readSafetensors, serializeSafetensors, type SafetensorsFile } from '../src/io/safetensors.js';
import { Tensor } from '../src/tensor/tensor.js';
import { f16ToF32, f32ToF16 } from '../src/tensor/dtype.js';
import {
  BNB4_BLOCKSIZES, Bnb4Error, FP4_CODE, NF4_CODE, blockAbsmax, bnb4FromStateDict, bnb4ToStateDict, codeValue,
  createDynamicMap, cudaReciprocal, dequantize4bit, dequantizeNested, dynamicCode, fp4Code, nf4Code, pack4,
  quantMap, quantStateJson, quantize4bit, quantizeBlockwise8, quantizeCodes4, unpack4,
  type Bnb4QuantType, type Bnb4Weight,
} from '../src/quant/bnb4.js';
import {
  Int8Error, dequantizeInt8, int8FromStateDict, int8MatmulRef, int8ToStateDict, int8VectorwiseQuant, quantizeInt8,
  roundHalfEven,
} from '../src/quant/int8.js';
import { ROOT } from './helpers.js';

const FIX = join(ROOT, 'test', 'fixtures', 'bnb');
const f = Math.fround;

/** Seeded normal samples (mulberry32 + Box-Muller), float32. */
function randn(n: number, seed: number, std = 1): Float32Array {
  let s = seed >>> 0;
  const u = () => {
    let t = (s = (s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return Float32Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u()));
}

function hex(x: number): string {
  const b = new Uint8Array(new Float32Array([x]).buffer);
  return [...b].reverse().map((v) => v.toString(16).padStart(2, '0')).join('');
}

function bytesOf(t: Tensor): Uint8Array {
  const d = t.data as unknown as ArrayBufferView;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

const lookup = (file: SafetensorsFile) => (name: string) => (file.has(name) ? file.get(name) : undefined);

/** Every tensor of `ours` is in `file` with the same dtype, shape and bytes. */
function assertSameTensors(ours: Map<string, Tensor>, file: SafetensorsFile): void {
  for (const [name, t] of ours) {
    assert.ok(file.has(name), `${name} missing from ${file.path}`);
    const theirs = file.get(name);
    assert.equal(t.dtype, theirs.dtype, `${name} dtype`);
    assert.deepEqual([...t.shape], [...theirs.shape], `${name} shape`);
    assert.ok(Buffer.from(bytesOf(t)).equals(Buffer.from(file.bytes(name))), `${name} bytes differ`);
  }
}

let golden: SafetensorsFile | undefined;
function gold(): SafetensorsFile {
  return (golden ??= readSafetensors(join(FIX, 'bnb_golden.safetensors'), { mmap: false }));
}

// ---- code tables ----

test('NF4 and FP4 tables are the spec tables (§2.1), and FP4 stores +0 at code 8', () => {
  assert.deepEqual([...NF4_CODE].map(hex), [
    'bf800000', 'bf3239b1', 'bf066b30', 'beca32a0', 'be91a24d', 'be3d353f', 'bdba7871', '00000000',
    '3da2faff', '3e24cae3', '3e7c04dd', '3ead033a', '3ee1a4b8', '3f1007ab', '3f3913b3', '3f800000']);
  assert.deepEqual([...FP4_CODE.subarray(0, 8)].map(hex),
    ['00000000', '3baaaaab', '3f2aaaab', '3f800000', '3eaaaaab', '3f000000', '3e2aaaab', '3e800000']);
  for (let c = 9; c < 16; c++) assert.equal(FP4_CODE[c], -FP4_CODE[c - 8]);
  // get_4bit_type writes code 8 as the Python int -0, so the stored quant_map has +0 (bitsandbytes' fixture agrees);
  // its CUDA LUT multiplies by the sign and dequantizes code 8 to -0.
  assert.equal(hex(FP4_CODE[8]), '00000000');
  assert.ok(Buffer.from(new Uint8Array(quantMap('fp4').buffer)).equals(Buffer.from(gold().bytes('cuda.fp4.b64.weight.quant_map'))));
  assert.ok(Buffer.from(new Uint8Array(quantMap('nf4').buffer)).equals(Buffer.from(gold().bytes('cuda.nf4.b64.weight.quant_map'))));
  assert.ok(Object.is(codeValue('fp4', 8), -0));
  assert.equal(codeValue('fp4', 11), -1);
});

test('nearest-code rules: NF4 ties to the lower value, FP4 (CUDA thresholds on |y|) to the smaller magnitude; NaN, ±0', () => {
  // The next float32 above x.
  const nextUp = (x: number) => { const a = new Float32Array([x]); const u = new Int32Array(a.buffer); u[0] += x > 0 ? 1 : -1; return a[0]; };
  for (let c = 0; c < 16; c++) assert.equal(nf4Code(NF4_CODE[c]), c, `level ${c}`);
  for (let c = 0; c < 15; c++) {
    const mid = f(f(NF4_CODE[c] + NF4_CODE[c + 1]) / 2);
    assert.equal(nf4Code(mid), c, `NF4 midpoint ${c}|${c + 1} goes down`);
    assert.equal(nf4Code(nextUp(mid)), c + 1, `just above midpoint ${c}|${c + 1}`);
  }
  assert.equal(nf4Code(-2), 0);
  assert.equal(nf4Code(2), 15);
  assert.equal(nf4Code(NaN), 0);
  assert.equal(nf4Code(0), 7);
  assert.equal(nf4Code(-0), 7);
  // FP4: each level maps to its own code, for both signs.
  for (let c = 0; c < 16; c++) {
    if (c === 8) continue;
    assert.equal(fp4Code(codeValue('fp4', c)), c, `FP4 level ${c}`);
  }
  assert.equal(fp4Code(0), 0);
  assert.equal(fp4Code(-0), 0);      // CUDA: sign only for y < 0
  assert.equal(fp4Code(-1e-9), 8);   // a tiny negative keeps its sign bit
  assert.equal(fp4Code(NaN), 0);
  // The CUDA literal 0.583333f (6 ulp under the float32 midpoint of 0.5 and 0.6667) decides, ties going down.
  assert.equal(fp4Code(f(0.583333)), 0b101);
  assert.equal(fp4Code(f(0.5833333)), 0b010);
  assert.equal(fp4Code(-f(0.8333333)), 0b1010);
  assert.equal(fp4Code(-f(0.8333334)), 0b1011);
  assert.equal(fp4Code(-0.0859375), 0b1001, 'a negative tie goes toward zero');
  assert.equal(nf4Code(f(f(NF4_CODE[1] + NF4_CODE[2]) / 2)), 1, 'an NF4 negative tie goes to the lower value');
});

test('a block of exactly the code values × absmax maps to exactly those codes and back', () => {
  for (const type of ['nf4', 'fp4'] as Bnb4QuantType[]) {
    const absmax = 0.5; // a power of two keeps every product exact
    const order = [15, 3, 0, 7, 12, 8, 1, 14, 2, 9, 5, 10, 4, 13, 6, 11];
    const values = Float32Array.from(order, (c) => codeValue(type, c) * absmax + 0); // + 0: FP4's -0 becomes 0
    const { codes, absmax: am } = quantizeCodes4(values, type, 32);
    const expect = order.map((c) => (type === 'fp4' && c === 8 ? 0 : c)); // 0.0 takes code 0 (sign only if < 0)
    assert.deepEqual([...codes], expect, type);
    assert.deepEqual([...am], [absmax]);
    const w = quantize4bit(values, [4, 4], { quantType: type, blocksize: 32 });
    assert.deepEqual([...dequantize4bit(w)], [...values], `${type} dequantizes exactly`);
  }
});

// ---- packing ----

test('pack4/unpack4: high nibble first, bit-exact round trips at odd sizes, pad nibble', () => {
  assert.deepEqual([...pack4(Uint8Array.of(1, 2, 3), 7)], [0x12, 0x37]);
  assert.deepEqual([...unpack4(Uint8Array.of(0x12, 0x37), 3)], [1, 2, 3]);
  let s = 12345;
  for (const n of [0, 1, 2, 63, 64, 65, 11181]) {
    const codes = Uint8Array.from({ length: n }, () => (s = (s * 1103515245 + 12345) >>> 0) >>> 28);
    const packed = pack4(codes);
    assert.equal(packed.length, Math.ceil(n / 2));
    assert.deepEqual(unpack4(packed, n), codes);
    assert.deepEqual(pack4(unpack4(packed, n)), packed);
  }
  assert.throws(() => unpack4(new Uint8Array(3), 7), Bnb4Error);
  assert.throws(() => pack4(Uint8Array.of(16)), Bnb4Error);
  // An odd count pads with the code of 0.0 under the last block's scale, or code 0 when that block is all zero.
  const odd = quantize4bit(Float32Array.of(0.1, -0.2, 0.3), [3], { quantType: 'nf4' });
  assert.equal(odd.packed[1] & 0xf, 7);
  assert.equal(quantize4bit(Float32Array.of(0.1, -0.2, 0.3), [3], { quantType: 'fp4' }).packed[1] & 0xf, 0);
  const zeros = quantize4bit(new Float32Array(65), [65], { quantType: 'nf4' });
  assert.equal(zeros.packed[32], 0x00);
  assert.deepEqual([...dequantize4bit(zeros)].map((v) => v === 0), new Array(65).fill(true));
});

// ---- error bounds on random data ----

/** |x − x̂| is at most the distance to the nearest level of the block (plus float32 slack): the code is the nearest. */
function assertNearest(x: Float32Array, w: Bnb4Weight, scales: Float32Array, label: string): void {
  const got = dequantize4bit(w);
  const trueAbsmax = quantizeCodes4(x, w.quantType, w.blocksize).absmax;
  const levels = Array.from({ length: 16 }, (_, c) => codeValue(w.quantType, c));
  for (let i = 0; i < x.length; i++) {
    const b = Math.floor(i / w.blocksize);
    let best = Infinity;
    for (const v of levels) best = Math.min(best, Math.abs(v * trueAbsmax[b] - x[i]));
    // With double quantization the code is chosen under the true absmax but scaled by the dequantized one.
    const bound = best + Math.abs(scales[b] - trueAbsmax[b]) + 1e-6 * trueAbsmax[b];
    if (!(Math.abs(got[i] - x[i]) <= bound)) assert.fail(`${label}: element ${i}: |${got[i]} - ${x[i]}| > ${bound}`);
  }
}

test('quantize → dequantize error is within half a code step per block, every block size, 172×65', () => {
  const x = randn(172 * 65, 7, 0.05);
  x[5] = 0.9; // an outlier block
  for (const quantType of ['nf4', 'fp4'] as Bnb4QuantType[]) {
    for (const blocksize of BNB4_BLOCKSIZES) {
      const w = quantize4bit(x, [172, 65], { quantType, blocksize });
      assert.equal(w.absmax!.length, Math.ceil(11180 / blocksize));
      assertNearest(x, w, w.absmax!, `${quantType}/${blocksize}`);
    }
  }
  assert.throws(() => quantize4bit(x, [172, 65], { quantType: 'nf4', blocksize: 48 }), /blocksize 48/);
  assert.throws(() => quantize4bit(x, [172, 64], { quantType: 'nf4' }), Bnb4Error);
});

test('double quantization: offset = mean, 256-blocks, absmax error within half a dynamic-map step', () => {
  const x = randn(172 * 65, 11, 0.05);
  const map = createDynamicMap();
  for (const blocksize of [32, 64, 4096]) {
    const plain = quantize4bit(x, [172, 65], { quantType: 'nf4', blocksize });
    const dq = quantize4bit(x, [172, 65], { quantType: 'nf4', blocksize, doubleQuant: true });
    const absmax = plain.absmax!, n = dq.nested!;
    assert.deepEqual(dq.packed, plain.packed, 'double quantization leaves the 4-bit codes alone');
    assert.equal(n.qabsmax.length, absmax.length);
    assert.equal(n.nestedAbsmax.length, Math.ceil(absmax.length / 256));
    const mean = absmax.reduce((a, b) => a + b, 0) / absmax.length;
    assert.equal(n.offset, f(mean));
    const scales = blockAbsmax(dq);
    for (let i = 0; i < absmax.length; i++) {
      const nb = n.nestedAbsmax[Math.floor(i / 256)];
      let best = Infinity;
      for (const v of map) best = Math.min(best, Math.abs(f(f(v * nb) + n.offset) - absmax[i]));
      assert.ok(Math.abs(scales[i] - absmax[i]) <= best + 1e-7 * absmax[i], `block ${i} of ${blocksize}`);
    }
    assertNearest(x, dq, scales, `nf4+dq/${blocksize}`);
  }
  // One block: the centred absmax is 0, its scale 0 gives NaN → code 0, and the offset alone restores it exactly.
  const one = quantize4bit(randn(50, 3), [50], { quantType: 'fp4', doubleQuant: true });
  assert.deepEqual([...one.nested!.qabsmax], [0]);
  assert.deepEqual([...dequantizeNested(one.nested!)], [one.nested!.offset]);
});

// ---- the 8-bit dynamic map ----

test('createDynamicMap: shape of the map; FMA variant = torch on AVX2/AVX-512 = files, plain variant = the spec JSON', () => {
  const map = createDynamicMap();
  assert.equal(map.length, 256);
  for (let i = 1; i < 256; i++) assert.ok(map[i - 1] < map[i]);
  assert.equal(map[127], 0);
  assert.equal(map[255], 1);
  assert.equal(map[0], f(-0.99296875));
  assert.ok(Math.abs(map[128] - 5.5e-7) < 1e-13);
  for (let k = 1; k < 128; k++) assert.equal(map[127 + k], -map[127 - k]);

  const asBits = (a: Float32Array) => [...new Int32Array(Float32Array.from(a).buffer)];
  assert.deepEqual(asBits(map), asBits(gold().get('dynamic_map').data as Float32Array), 'bitsandbytes create_dynamic_map()');
  const hf = readSafetensors(join(FIX, 'hf_llama_nf4dq', 'model.safetensors'), { mmap: false });
  assert.deepEqual(asBits(map), asBits(hf.get('model.layers.0.mlp.up_proj.weight.nested_quant_map').data as Float32Array));
  const meta = JSON.parse(readFileSync(join(FIX, 'bnb_golden.json'), 'utf8'));
  const byCap = meta.dynamic_map_by_capability;
  assert.deepEqual(byCap.avx2.bits, asBits(map));
  assert.deepEqual(byCap.avx512.bits, asBits(map));
  const plain = createDynamicMap({ fusedMultiplyAdd: false });
  assert.deepEqual(byCap.default.bits, asBits(plain), 'ATEN_CPU_CAPABILITY=default rounds twice');
  const differ = [...map.keys()].filter((i) => map[i] !== plain[i]);
  assert.equal(differ.length, 42);
  const ulps = differ.map((i) => Math.abs(asBits(map)[i] - asBits(plain)[i]));
  assert.deepEqual([ulps.filter((u) => u === 1).length, ulps.filter((u) => u === 2).length], [40, 2]);
  const spec = resolve(ROOT, '..', 'shared', 'spec', 'bnb_dynamic_map_f32.UNCONFIRMED.json');
  if (existsSync(spec)) {
    assert.deepEqual(asBits(Float32Array.from(JSON.parse(readFileSync(spec, 'utf8')).values as number[])), asBits(plain));
  }
});

test('dynamicCode: nearest entry, exact midpoints to the even index (CUDA dQuantize), NaN to 0', () => {
  const map = createDynamicMap();
  for (let i = 0; i < 256; i++) assert.equal(dynamicCode(map[i], map), i);
  for (let i = 0; i < 255; i++) {
    const mid = f(f(map[i] + map[i + 1]) * 0.5);
    if (mid === map[i] || mid === map[i + 1]) continue;
    assert.equal(dynamicCode(mid, map), i % 2 === 0 ? i : i + 1, `midpoint ${i}|${i + 1}`);
  }
  assert.equal(dynamicCode(NaN, map), 0);
  assert.equal(dynamicCode(-5, map), 0);
  assert.equal(dynamicCode(5, map), 255);
  assert.equal(dynamicCode(0, map), 127);
});

test('cudaReciprocal: MUFU.RCP as measured on the H200 for all float16/bfloat16 mantissas', () => {
  const line = readFileSync(join(FIX, 'cuda_rcp_h200.txt'), 'utf8').split('\n')[0];
  assert.ok(line.startsWith('DEV '));
  const u = new Uint32Array(1), fl = new Float32Array(u.buffer);
  for (let m = 0; m < 1024; m++) {
    for (const e of [-20, 0, 7]) {
      const x = (1 + m / 1024) * 2 ** e;
      u[0] = new Uint32Array(new Float32Array([f(1 / x)]).buffer)[0];
      const ieee = u[0];
      fl[0] = cudaReciprocal(x);
      const dev = u[0] - ieee;
      assert.equal(dev === 0 ? '0' : dev === 1 ? '+' : '-', line[4 + m], `mantissa ${m}, 2^${e}`);
    }
  }
  assert.equal(cudaReciprocal(0), Infinity);
  assert.equal(cudaReciprocal(1e-40), Infinity); // FTZ
  assert.equal(cudaReciprocal(f(0.1)), f(1 / f(0.1))); // more than 10 mantissa bits: IEEE
});

// ---- bitsandbytes' own outputs ----

const VARIANTS: [Bnb4QuantType, number, boolean][] = [
  ['nf4', 64, false], ['nf4', 64, true], ['fp4', 64, false], ['fp4', 64, true], ['nf4', 32, true], ['fp4', 128, false],
  ['nf4', 4096, true],
];
const vname = (dev: string, [t, bs, dq]: [Bnb4QuantType, number, boolean]) => `${dev}.${t}.b${bs}${dq ? '.dq' : ''}`;

test('golden: quantize4bit reproduces bitsandbytes CUDA quantize_4bit state dicts byte for byte', () => {
  const W = gold().get('W').toF32();
  for (const v of VARIANTS) {
    const [quantType, blocksize, doubleQuant] = v;
    const ours = bnb4ToStateDict(vname('cuda', v), quantize4bit(W, [172, 65], { quantType, blocksize, doubleQuant, dtype: 'bfloat16' }));
    assertSameTensors(ours, gold());
    const theirKeys = gold().names().filter((k) => k.startsWith(`${vname('cuda', v)}.weight`) && !k.endsWith('.dequant'));
    assert.deepEqual([...ours.keys()].sort(), theirKeys.sort(), vname('cuda', v));
  }
});

test('golden: dequantize4bit of bitsandbytes state dicts equals dequantize_4bit bit for bit (signs of zero too)', () => {
  for (const v of VARIANTS.filter(([, bs, dq]) => dq && bs !== 4096)) {
    const w = bnb4FromStateDict(vname('cuda', v), lookup(gold()));
    const ours = dequantize4bit(w);
    const theirs = gold().get(`${vname('cuda', v)}.weight.dequant`).toF32();
    for (let i = 0; i < ours.length; i++) if (!Object.is(ours[i], theirs[i])) assert.fail(`${vname('cuda', v)} element ${i}: ${ours[i]} vs ${theirs[i]}`);
  }
});

test("golden: bitsandbytes' torch/CPU backend differs only where docs/p4-progress.md says", () => {
  const W = gold().get('W').toF32();
  const map = createDynamicMap();
  for (const v of VARIANTS) {
    const [quantType, blocksize, doubleQuant] = v;
    const theirs = bnb4FromStateDict(vname('cpu', v), lookup(gold()));
    const ours = quantize4bit(W, [172, 65], { quantType, blocksize, doubleQuant, dtype: 'bfloat16', reciprocal: 'ieee' });
    const a = unpack4(ours.packed, W.length), b = unpack4(theirs.packed, W.length);
    const absmax = quantizeCodes4(W, quantType, blocksize).absmax;
    for (let i = 0; i < W.length; i++) {
      if (a[i] === b[i]) continue;
      const am = absmax[Math.floor(i / blocksize)], y = f(W[i] * f(1 / am));
      const zeroBlock = am === 0;                                        // torch clamps absmax to 1e-38: code of 0.0
      const sameValue = codeValue(quantType, a[i]) === codeValue(quantType, b[i]); // FP4 ±0 (argsort puts +0 first)
      // FP4: CUDA's literal thresholds sit up to 14 ulp off the float32 midpoints torch bucketizes on, and CUDA
      // compares |y|, so an exact tie on a negative value goes to the smaller magnitude there, the larger in torch.
      const literal = [0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333].map(f);
      const midpoint = [0.0026041667442768812, 0.0859375, 0.2083333432674408, 0.2916666865348816, 0.4166666865348816,
        0.5833333730697632, 0.8333333730697632];
      const fp4Gap = quantType === 'fp4' &&
        literal.some((t, k) => Math.abs(y) > Math.min(t, midpoint[k]) && Math.abs(y) <= Math.max(t, midpoint[k]));
      const fp4NegativeTie = quantType === 'fp4' && y < 0 && midpoint.includes(-y);
      assert.ok(zeroBlock || sameValue || fp4Gap || fp4NegativeTie, `${vname('cpu', v)} element ${i}: y ${y}, ours ${a[i]}, torch ${b[i]}`);
    }
    if (doubleQuant) {
      // The CPU library's 8-bit quantizer goes through a 65536-entry lookup table; where it differs, ours is nearer.
      const n = theirs.nested!;
      const centred = absmax.map((x) => f(x - n.offset));
      const mine = quantizeBlockwise8(centred, map, 256, 'ieee');
      for (let i = 0; i < centred.length; i++) {
        if (mine.q[i] === n.qabsmax[i]) continue;
        const nb = mine.absmax[Math.floor(i / 256)];
        assert.ok(Math.abs(map[mine.q[i]] * nb - centred[i]) <= Math.abs(map[n.qabsmax[i]] * nb - centred[i]), `absmax ${i}`);
      }
    }
  }
});

test('golden: a transformers nf4 + double-quant save is exactly what we write from its bf16 weights', () => {
  const bf = readSafetensors(join(FIX, 'hf_llama_bf16', 'model.safetensors'), { mmap: false });
  const nf = readSafetensors(join(FIX, 'hf_llama_nf4dq', 'model.safetensors'), { mmap: false });
  const linears = bf.names().filter((n) => /_proj\.weight$/.test(n));
  assert.equal(linears.length, 7);
  let written = 0;
  for (const name of linears) {
    const prefix = name.slice(0, -'.weight'.length), t = bf.get(name);
    const ours = bnb4ToStateDict(prefix, quantize4bit(t.toF32(), t.shape, { quantType: 'nf4', doubleQuant: true, dtype: 'bfloat16' }));
    assertSameTensors(ours, nf);
    assert.deepEqual([...ours.keys()].sort(), nf.names().filter((k) => k.startsWith(`${prefix}.`)).sort());
    written += ours.size;
    // …and what we read back from their file dequantizes to what we read back from ours.
    const back = bnb4FromStateDict(prefix, lookup(nf));
    assert.equal(back.nested!.offset, f(JSON.parse(quantStateJson(back)).nested_offset));
    const q = dequantize4bit(back), x = t.toF32();
    assert.deepEqual(q, dequantize4bit(bnb4FromStateDict(prefix, (n) => ours.get(n))));
    assert.ok(q.every((v, i) => Math.abs(v - x[i]) <= 0.2 * Math.abs(x[i]) + 0.03));
  }
  assert.equal(written, 7 * 6);
  // lm_head is not quantized by transformers' default and stays bf16.
  assert.equal(nf.get('lm_head.weight').dtype, 'BF16');
});

// ---- LLM.int8 ----

test('roundHalfEven and per-row int8 quantization round half to even after scaling', () => {
  const cases: [number, number][] = [[0.5, 0], [1.5, 2], [2.5, 2], [-0.5, 0], [-1.5, -2], [-2.5, -2], [3.49, 3], [-3.51, -4], [126.5, 126]];
  for (const [x, r] of cases) assert.equal(roundHalfEven(x) + 0, r, `${x}`);
  // SCB = 127 makes the scale fl32(fl32(1/127)·127) = 1 exactly, so the codes are the rounded values themselves.
  const row = Float32Array.of(127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 63.5, 64.5, -126.5);
  const q = quantizeInt8(row, [1, 10]);
  assert.deepEqual([...q.SCB], [127]);
  assert.deepEqual([...q.CB], [127, 0, 2, 2, 0, -2, -2, 64, 64, -126]);
  // Weights are cast to float16 first: 1e-8 underflows to 0 and 70000 overflows… so SCB is the float16 absmax.
  const w16 = quantizeInt8(Float32Array.of(0.1, 1e-8), [1, 2]);
  assert.deepEqual([...w16.SCB], [f16ToF32(f32ToF16(0.1))]);
  assert.deepEqual([...w16.CB], [127, 0]);
  assert.deepEqual([...quantizeInt8(new Float32Array(3), [1, 3]).CB], [0, 0, 0]); // 0 · ∞ = NaN → 0, as CUDA
  assert.throws(() => quantizeInt8(row, [2, 10]), Int8Error);
});

test('golden: int8 weights, activation quantization and outliers equal bitsandbytes (CUDA and torch backend)', () => {
  const g = gold();
  const W = g.get('W').toF32();
  const ours = quantizeInt8(W, [172, 65]);
  assertSameTensors(int8ToStateDict('int8', ours), g);
  const cpu = quantizeInt8(W, [172, 65], 'ieee');
  assert.deepEqual(cpu.CB, g.get('int8.cpu.CB').data);
  assert.deepEqual(cpu.SCB, g.get('int8.cpu.SCB').data);

  const X = g.get('int8.X').toF32();
  const act = int8VectorwiseQuant(X, 5, 65, 6);
  assert.deepEqual(act.CA, g.get('int8.CA').data);
  assert.deepEqual(act.SCA, g.get('int8.SCA').data);
  assert.deepEqual(act.outlierCols, [...(g.get('int8.outlier_cols').data as BigInt64Array)].map(Number));
  assert.ok(act.outlierCols.includes(40), '|x| = 6.0 exactly is an outlier');
  assert.ok(!act.outlierCols.includes(12), '5.99 is not');
  for (const c of act.outlierCols) for (let r = 0; r < 5; r++) assert.equal(act.CA[r * 65 + c], 0);

  // bitsandbytes' output is float16 (and its int8 part goes through float16), so agreement is to half an fp16 ulp.
  const w = int8FromStateDict('int8', lookup(g));
  const bias = g.get('int8.bias').toF32();
  for (const [x, rows, name] of [[X, 5, 'int8.Y'], [X.subarray(2 * 65, 3 * 65), 1, 'int8.Y_row2']] as const) {
    const y = int8MatmulRef(x, rows, w, { bias }), ref = g.get(name).toF32();
    let err = 0, scale = 0;
    for (let i = 0; i < y.length; i++) { err = Math.max(err, Math.abs(y[i] - ref[i])); scale = Math.max(scale, Math.abs(ref[i])); }
    assert.ok(err <= 1e-3 * scale, `${name}: max error ${err} against max |y| ${scale}`);
  }
});

test('int8MatmulRef equals a float64 evaluation of the LLM.int8 decomposition; outliers keep full precision', () => {
  const rows = 7, cols = 65, out = 33;
  const x = randn(rows * cols, 21, 1.5);
  x[3 * cols + 10] = 9.25;        // outlier column 10
  x[6 * cols + 64] = -7.5;        // outlier column 64
  x[1 * cols + 20] = 1e5;         // beyond float16: ∞ after the cast, still an outlier, used as 1e5
  const wf = randn(out * cols, 22, 0.05);
  const w = quantizeInt8(wf, [out, cols]);
  const bias = randn(out, 23, 0.1);
  const y = int8MatmulRef(x, rows, w, { bias });
  const { CA, SCA, outlierCols } = int8VectorwiseQuant(x, rows, cols);
  assert.deepEqual(outlierCols, [10, 20, 64]);
  const wdq = dequantizeInt8(w);
  for (let t = 0; t < rows; t++) {
    for (let o = 0; o < out; o++) {
      let e = bias[o];
      for (let k = 0; k < cols; k++) {
        const wv = (w.CB[o * cols + k] * w.SCB[o]) / 127;
        e += outlierCols.includes(k) ? x[t * cols + k] * wdq[o * cols + k] : ((CA[t * cols + k] * SCA[t]) / 127) * wv;
      }
      assert.ok(Math.abs(y[t * out + o] - e) <= 1e-6 * Math.max(1, Math.abs(e)), `y[${t},${o}] = ${y[t * out + o]}, float64 ${e}`);
    }
  }
  // Against the unquantized product, the error is the int8 rounding of the inlier part only: the 1e5 outlier alone
  // would swamp any int8 row scale.
  let num = 0, den = 0;
  for (let t = 0; t < rows; t++) for (let o = 0; o < out; o++) {
    let e = bias[o];
    for (let k = 0; k < cols; k++) e += x[t * cols + k] * wf[o * cols + k];
    num += (y[t * out + o] - e) ** 2; den += e * e;
  }
  assert.ok(Math.sqrt(num / den) < 0.02, `relative error ${Math.sqrt(num / den)}`);
  // Threshold 0 turns the decomposition off.
  assert.deepEqual(int8VectorwiseQuant(x, rows, cols, 0).outlierCols, []);
});

// ---- serialization ----

test('quant-state JSON and tensor layout match spec §2.4 byte for byte', () => {
  const w: Bnb4Weight = {
    quantType: 'nf4', blocksize: 64, dtype: 'float16', shape: [8, 64], packed: new Uint8Array(256), absmax: null,
    nested: { qabsmax: new Uint8Array(8), nestedAbsmax: new Float32Array(1), nestedQuantMap: createDynamicMap(), nestedBlocksize: 256, offset: 0.5 },
  };
  const appendixA = '{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [8, 64], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.5}';
  assert.equal(quantStateJson(w), appendixA);
  const sd = bnb4ToStateDict('model.layers.0.mlp.up_proj', w);
  assert.deepEqual([...sd].map(([k, t]) => [k, t.dtype, [...t.shape]]), [
    ['model.layers.0.mlp.up_proj.weight', 'U8', [256, 1]],
    ['model.layers.0.mlp.up_proj.weight.absmax', 'U8', [8]],
    ['model.layers.0.mlp.up_proj.weight.quant_map', 'F32', [16]],
    ['model.layers.0.mlp.up_proj.weight.nested_absmax', 'F32', [1]],
    ['model.layers.0.mlp.up_proj.weight.nested_quant_map', 'F32', [256]],
    ['model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__nf4', 'U8', [appendixA.length]],
  ]);
  const fp4 = quantize4bit(randn(3 * 5, 1), [3, 5], { quantType: 'fp4', blocksize: 128, dtype: 'bfloat16' });
  const plainJson = '{"quant_type": "fp4", "blocksize": 128, "dtype": "bfloat16", "shape": [3, 5]}';
  assert.equal(quantStateJson(fp4), plainJson);
  assert.deepEqual([...bnb4ToStateDict('p', fp4)].map(([k, t]) => [k, t.dtype, [...t.shape]]), [
    ['p.weight', 'U8', [8, 1]], ['p.weight.absmax', 'F32', [1]], ['p.weight.quant_map', 'F32', [16]],
    ['p.weight.quant_state.bitsandbytes__fp4', 'U8', [plainJson.length]],
  ]);
  // nested_offset is Python's repr of the float32 widened to a double, as `offset.item()` gives it.
  const odd = quantize4bit(randn(200, 9, 0.05), [200], { quantType: 'nf4', doubleQuant: true });
  const repr = JSON.parse(quantStateJson(odd)).nested_offset;
  assert.equal(repr, odd.nested!.offset);
  assert.match(quantStateJson(odd), new RegExp(`"nested_offset": ${String(odd.nested!.offset).replace('.', '\\.')}}$`));
  const int8 = int8ToStateDict('q', quantizeInt8(randn(6, 2), [2, 3]));
  assert.deepEqual([...int8].map(([k, t]) => [k, t.dtype, [...t.shape]]), [['q.weight', 'I8', [2, 3]], ['q.SCB', 'F32', [2]], ['q.weight_format', 'U8', []]]);
});

test('quantize → save → load → dequantize is bit-exact (safetensors bytes in between)', () => {
  const x = randn(172 * 65, 31, 0.05);
  for (const [quantType, doubleQuant, blocksize] of [['nf4', true, 64], ['fp4', false, 256], ['fp4', true, 32]] as const) {
    const w = quantize4bit(x, [172, 65], { quantType, doubleQuant, blocksize });
    const file = parseSafetensors(serializeSafetensors(bnb4ToStateDict('m.l', w), { format: 'pt' }));
    const back = bnb4FromStateDict('m.l', lookup(file));
    assert.deepEqual(dequantize4bit(back), dequantize4bit(w), `${quantType} dq=${doubleQuant}`);
    assert.deepEqual(back.packed, w.packed);
  }
  const q = quantizeInt8(x, [172, 65]);
  const file = parseSafetensors(serializeSafetensors(int8ToStateDict('m.l', q), { format: 'pt' }));
  assert.deepEqual(dequantizeInt8(int8FromStateDict('m.l', lookup(file))), dequantizeInt8(q));
});

test('golden: a transformers int8 save is exactly what we write from its weights (cast to float16)', () => {
  const bf = readSafetensors(join(FIX, 'hf_llama_bf16', 'model.safetensors'), { mmap: false });
  const i8 = readSafetensors(join(FIX, 'hf_llama_int8', 'model.safetensors'), { mmap: false });
  for (const name of bf.names().filter((n) => /_proj\.weight$/.test(n))) {
    const prefix = name.slice(0, -'.weight'.length), t = bf.get(name);
    const ours = int8ToStateDict(prefix, quantizeInt8(t.toF32(), t.shape as [number, number]));
    assertSameTensors(ours, i8);
    assert.deepEqual([...ours.keys()].sort(), i8.names().filter((k) => k.startsWith(`${prefix}.`)).sort());
  }
});

test('malformed state dicts are typed errors naming the tensor', () => {
  const w = quantize4bit(randn(130, 5), [2, 65], { quantType: 'nf4', doubleQuant: true });
  const good = bnb4ToStateDict('m', w);
  const without = (drop: string, add: [string, Tensor][] = []) => {
    const m = new Map(good); m.delete(drop); for (const [k, t] of add) m.set(k, t); return (n: string) => m.get(n);
  };
  const expectErr = (get: (n: string) => Tensor | undefined, re: RegExp) =>
    assert.throws(() => bnb4FromStateDict('m', get), (e: Error) => e instanceof Bnb4Error && re.test(e.message));
  expectErr(without('m.weight.quant_state.bitsandbytes__nf4'), /m\.weight: expected exactly one of quant_state/);
  expectErr(without('', [['m.weight.quant_state.bitsandbytes__fp4', good.get('m.weight.quant_state.bitsandbytes__nf4')!]]), /exactly one/);
  expectErr(without('m.weight.nested_absmax'), /nested_absmax and nested_offset/);
  expectErr(without('m.weight', [['m.weight', new Tensor('U8', [64, 1], new Uint8Array(64))]]), /m\.weight: 64 bytes.*needs 65/);
  expectErr(without('m.weight.absmax', [['m.weight.absmax', new Tensor('F32', [3], new Float32Array(3))]]), /m\.weight\.absmax: expected U8 \[3\]/);
  expectErr(without('m.weight.quant_map', [['m.weight.quant_map', new Tensor('F32', [16], quantMap('fp4'))]]), /not bitsandbytes' nf4 table/);
  const bad = (json: string) => without('m.weight.quant_state.bitsandbytes__nf4',
    [['m.weight.quant_state.bitsandbytes__nf4', new Tensor('U8', [json.length], new TextEncoder().encode(json))]]);
  expectErr(bad('{"quant_type": "nf4", "blocksize": 48, "dtype": "float16", "shape": [2, 65]}'), /"blocksize" must be one of/);
  expectErr(bad('{"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [2, 65]}'), /"dtype"/);
  expectErr(bad('{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [2, 65], "bogus": 1}'), /"bogus" is not a QuantState key/);
  expectErr(bad('not json'), /not UTF-8 JSON/);

  const q = int8ToStateDict('m', quantizeInt8(randn(6, 2), [2, 3]));
  const i8 = (drop: string, add: [string, Tensor][] = []) => { const m = new Map(q); m.delete(drop); for (const [k, t] of add) m.set(k, t); return (n: string) => m.get(n); };
  assert.throws(() => int8FromStateDict('m', i8('m.SCB')), /m\.SCB: missing/);
  assert.throws(() => int8FromStateDict('m', i8('', [['m.weight_format', new Tensor('U8', [], Uint8Array.of(1))]])), /m\.weight_format: only the "row" format/);
  assert.throws(() => int8FromStateDict('m', i8('', [['m.SCB', new Tensor('F32', [3], new Float32Array(3))]])), Int8Error);
  assert.deepEqual(int8FromStateDict('m', i8('m.weight_format')).shape, [2, 3], 'weight_format is optional');
});
