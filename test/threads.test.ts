// The thread API of the package (setThreads / getThreads / cpuInfo / measureRoofline) and the pool's behaviour when
// the cores are taken: chunks that a preempted worker has not started are run by the caller, and waits give the
// CPU back, so two threads on busy cores decode about as fast as one instead of collapsing (native/cpu/pool.h).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { cpuAvailable, cpuInfo, getThreads, measureRoofline, setThreads } from '../src/index.js';
import { loadAddon, type NativeAddon } from '../src/native/addon.js';

const skip = cpuAvailable() ? false : 'native addon not built';

describe('thread API', { skip }, () => {
  it('setThreads / getThreads / cpuInfo agree, and bad counts are RangeErrors naming the value', () => {
    const t = getThreads();
    try {
      setThreads(1);
      assert.equal(getThreads(), 1);
      assert.equal(cpuInfo().threads, 1);
      setThreads(2);
      assert.equal(getThreads(), 2);
      for (const bad of [0, -1, 1.5, 1025, NaN]) assert.throws(() => setThreads(bad), { name: 'RangeError', message: new RegExp(`setThreads: n must be an integer from 1 to 1024, got ${bad}`) });
      const info = cpuInfo();
      assert.ok(['scalar', 'avx2', 'avx512', 'neon'].includes(info.level));
      assert.ok(info.physicalCores >= 1 && info.defaultThreads >= 1 && info.defaultThreads <= 16);
    } finally {
      setThreads(t);
    }
  });

  it('measureRoofline reports bandwidth and peak with the current threads', () => {
    const r = measureRoofline({ bandwidthBytes: 16 << 20, iters: 2, peakMs: 20 });
    assert.equal(r.threads, getThreads());
    assert.ok(r.bandwidthGBs > 0.1 && r.peakGflops > 0.1, JSON.stringify(r));
  });

  it('the pool survives thousands of jobs mixed with failing ones, at 1, 2 and 3 threads', () => {
    const a = loadAddon()!, t = getThreads();
    const n = 70001, x = Float32Array.from({ length: n }, (_, i) => i), y = new Float32Array(n), e = new Float32Array(0);
    try {
      for (const threads of [2, 3, 1]) {
        setThreads(threads);
        for (let i = 0; i < 2000; i++) {
          y.fill(-1);
          a.add(y, x, x, n);
          assert.ok(y[0] === 0 && y[n - 1] === 2 * (n - 1) && y[n >> 1] === 2 * (n >> 1), `threads ${threads}, job ${i}`);
          // Every 100th job throws std::bad_alloc on the pool's threads (see native-errors.test.ts).
          if (i % 100 === 0) assert.throws(() => a.attention(e, e, e, e, 1, 1, 65536, 1, 0, 1e15, 1e15 - 1, null, 1, 0), /out of memory/);
        }
      }
    } finally {
      setThreads(t);
    }
  });
});

/** One decode step's worth of small ops (6 layers of a 256-wide bf16 Llama): matmuls and attention split over threads. */
function decodeLike(a: NativeAddon): () => Float32Array {
  const H = 256, I = 688, hd = 32, nH = 8, nKV = 4, S = 64, past = 40;
  const r = (n: number) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
  const bf = (n: number) => Uint16Array.from({ length: n }, () => 0x3c00 | ((Math.random() * 0x3ff) & 0x3ff));
  const layers = Array.from({ length: 6 }, () => ({
    qkv: bf((nH + 2 * nKV) * hd * H), o: bf(H * nH * hd), gu: bf(2 * I * H), down: bf(H * I), k: r(S * nKV * hd), v: r(S * nKV * hd),
  }));
  const x = r(H), y = new Float32Array(H), qkv = new Float32Array((nH + 2 * nKV) * hd), att = new Float32Array(nH * hd);
  const gu = new Float32Array(2 * I), act = new Float32Array(I), norm = new Float32Array(H).fill(1);
  return () => {
    for (const l of layers) {
      a.rmsnorm(y, x, norm, 1, H, 1e-5);
      a.matmul(qkv, y, l.qkv, 1, 1, qkv.length, H, null);
      a.attention(att, qkv.subarray(0, nH * hd), l.k, l.v, 1, 1, nH, nKV, hd, S, past, null, 0.17, 0);
      a.matmul(y, att, l.o, 1, 1, H, nH * hd, null);
      a.add(x, x, y, H);
      a.rmsnorm(y, x, norm, 1, H, 1e-5);
      a.matmul(gu, y, l.gu, 1, 1, 2 * I, H, null);
      a.siluMul(act, gu.subarray(0, I), gu.subarray(I), I);
      a.matmul(y, act, l.down, 1, 1, H, I, null);
      x.fill(0.01);
    }
    return y;
  };
}

describe('thread pool under load', { skip }, () => {
  // Correctness under contention, not speed (speed is `lowbit bench`'s "decode, 1 busy process" row): with every
  // core taken by another process, a 2-thread pool must neither deadlock nor change results while its workers are
  // descheduled mid-job, which is when chunk claiming and the spin → yield → sleep waits are exercised.
  const cores = availableParallelism();
  it('with every core busy, 2 threads finish 200 decode steps with the 1-thread results', { skip: cores > 32 ? `${cores} cores: too many competitor processes for a unit test` : false, timeout: 120_000 }, async () => {
    const a = loadAddon()!, t = getThreads();
    const step = decodeLike(a);
    const kids: ChildProcess[] = [];
    try {
      setThreads(1);
      const want = Float32Array.from(step());
      for (let i = 0; i < cores; i++) {
        kids.push(spawn(process.execPath, ['-e', 'process.stdout.write("go\\n"); const e = Date.now() + 60000; while (Date.now() < e);'], { stdio: ['ignore', 'pipe', 'ignore'] }));
      }
      await Promise.all(kids.map((k) => new Promise((res) => k.stdout!.once('data', res))));
      setThreads(2);
      for (let i = 0; i < 200; i++) {
        const got = step();
        for (let j = 0; j < want.length; j++) {
          if (got[j] !== want[j]) assert.fail(`step ${i}: element ${j} is ${got[j]} with 2 threads, ${want[j]} with 1`);
        }
      }
    } finally {
      for (const k of kids) k.kill('SIGKILL');
      setThreads(t);
    }
  });
});

describe('lowbit bench', { skip }, () => {
  it('reports decode beside one busy process and shows progress on stderr, --json included', () => {
    const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    const model = fileURLToPath(new URL('../../models/kjv-demo', import.meta.url));
    const r = spawnSync(process.execPath, [cli, 'bench', model, '--prompt-len', '4', '--decode-len', '8', '--threads', '2', '--json'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    const res = JSON.parse(r.stdout) as Record<string, number | null>;
    assert.equal(res.threads, 2);
    for (const k of ['decodeTokPerSec', 'decodeContendedTokPerSec', 'decodeContendedRoofline', 'contendedSlowdown']) {
      assert.ok(typeof res[k] === 'number' && (res[k] as number) > 0, `${k} = ${res[k]}`);
    }
    assert.match(r.stderr, /measuring memory bandwidth/);
    assert.match(r.stderr, /decode: 8 tokens beside one busy process/);
  });
});
