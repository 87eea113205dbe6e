// Python's `random` module, bit for bit where GPTQ's calibration uses it: MT19937 seeded as random.seed(int) does
// (init_by_array over the seed's 32-bit words), getrandbits, and randint's rejection sampling (_randbelow), so a
// seed picks the same calibration windows as the reference scripts (../shared/spec/FORMATS.md §4.4).

const N = 624, M = 397;

export class PyRandom {
  private readonly mt = new Uint32Array(N);
  private mti = N + 1;

  /** random.seed(seed) for a non-negative integer (a negative one is taken by its absolute value, as Python does). */
  constructor(seed: number | bigint = 0) {
    let s = BigInt(seed);
    if (typeof seed === 'number' && !Number.isSafeInteger(seed)) throw new RangeError(`PyRandom: seed must be an integer, got ${seed}`);
    if (s < 0n) s = -s;
    const key: number[] = [];
    do { key.push(Number(s & 0xffffffffn)); s >>= 32n; } while (s > 0n);
    this.initByArray(key);
  }

  private initGenrand(s: number): void {
    const mt = this.mt;
    mt[0] = s >>> 0;
    for (let i = 1; i < N; i++) {
      const p = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = (Math.imul(1812433253, p) + i) >>> 0;
    }
    this.mti = N;
  }

  private initByArray(key: number[]): void {
    const mt = this.mt;
    this.initGenrand(19650218);
    let i = 1, j = 0;
    for (let k = Math.max(N, key.length); k > 0; k--) {
      const p = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(p, 1664525)) + key[j] + j) >>> 0;
      i++; j++;
      if (i >= N) { mt[0] = mt[N - 1]; i = 1; }
      if (j >= key.length) j = 0;
    }
    for (let k = N - 1; k > 0; k--) {
      const p = mt[i - 1] ^ (mt[i - 1] >>> 30);
      mt[i] = ((mt[i] ^ Math.imul(p, 1566083941)) - i) >>> 0;
      i++;
      if (i >= N) { mt[0] = mt[N - 1]; i = 1; }
    }
    mt[0] = 0x80000000;
  }

  /** genrand_uint32. */
  uint32(): number {
    const mt = this.mt;
    if (this.mti >= N) {
      let kk = 0;
      const mag = (y: number) => (y & 1 ? 0x9908b0df : 0);
      for (; kk < N - M; kk++) {
        const y = (mt[kk] & 0x80000000) | (mt[kk + 1] & 0x7fffffff);
        mt[kk] = mt[kk + M] ^ (y >>> 1) ^ mag(y);
      }
      for (; kk < N - 1; kk++) {
        const y = (mt[kk] & 0x80000000) | (mt[kk + 1] & 0x7fffffff);
        mt[kk] = mt[kk + (M - N)] ^ (y >>> 1) ^ mag(y);
      }
      const y = (mt[N - 1] & 0x80000000) | (mt[0] & 0x7fffffff);
      mt[N - 1] = mt[M - 1] ^ (y >>> 1) ^ mag(y);
      this.mti = 0;
    }
    let y = mt[this.mti++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** random.getrandbits(k) for 0 ≤ k ≤ 53 (32-bit words filled from the least significant, the last one cut from the top). */
  getrandbits(k: number): number {
    if (!(Number.isInteger(k) && k >= 0 && k <= 53)) throw new RangeError(`getrandbits: k must be an integer in [0, 53], got ${k}`);
    if (k === 0) return 0;
    if (k <= 32) return this.uint32() >>> (32 - k);
    const lo = this.uint32(), hi = this.uint32() >>> (64 - k);
    return hi * 4294967296 + lo;
  }

  /** random.randint(a, b): a + _randbelow(b − a + 1), by rejection on getrandbits(bit_length(n)). */
  randint(a: number, b: number): number {
    if (!(Number.isSafeInteger(a) && Number.isSafeInteger(b))) throw new RangeError(`randint: bounds must be integers, got ${a}, ${b}`);
    const n = b - a + 1;
    if (n <= 0) throw new RangeError(`randint: empty range (${a}, ${b})`);
    let k = 0;                                   // n.bit_length()
    while (2 ** k <= n) k++;
    let r = this.getrandbits(k);
    while (r >= n) r = this.getrandbits(k);
    return a + r;
  }
}
