// Native failures become JS errors, never a dead host process. Cases that would abort the process on a regression
// run in a child Node process, and the test asserts its exit code and what it printed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { addonLoadError, loadAddon } from '../src/native/addon.js';

const addonUrl = new URL('../src/native/addon.js', import.meta.url).href;
const skip = loadAddon() ? false : `native addon not built: ${addonLoadError}`;

/** Runs `body` (an async ES module body with `a` = the addon) in a child Node; returns its exit status and output. */
function child(body: string, env: Record<string, string | undefined> = {}): { status: number | null; signal: string | null; out: string } {
  const code = `const { loadAddon } = await import(${JSON.stringify(addonUrl)}); const a = loadAddon();\n${body}`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env },
  });
  return { status: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` };
}

describe('native errors', { skip }, () => {
  it('a native allocation that fails (std::bad_alloc) is a RangeError naming the op, on the caller and on pool threads', () => {
    // hd = 0 makes q, k and v empty, so a cache capacity of 10^15 positions passes the length checks; the
    // attention driver's per-thread score buffer (pastLen + T floats, 4 PB) cannot be allocated. H = 1 fails on
    // the calling thread; H = 65536 splits over two pool threads, and with the width pinned and a worker claiming
    // first (poolConfig), a chunk certainly fails on the worker, whose exception must cross back too.
    const r = child(`
      const e = new Float32Array(0);
      a.setThreads(2);
      a.poolConfig({ adaptive: false, workerFirst: true });
      for (const H of [1, 65536]) {
        const before = a.poolStats();
        try { a.attention(e, e, e, e, 1, 1, H, 1, 0, 1e15, 1e15 - 1, null, 1, 0); console.log('H=' + H + ' returned'); }
        catch (err) { console.log('H=' + H + ' ' + err.name + ': ' + err.message); }
        const after = a.poolStats();
        console.log('H=' + H + ' worker chunks ' + (after.chunksOnWorkers - before.chunksOnWorkers) + ', worker errors ' + (after.errorsOnWorkers - before.errorsOnWorkers));
      }
      // The pool still works afterwards.
      const y = new Float32Array(70001), x = Float32Array.from({ length: 70001 }, (_, i) => i);
      a.add(y, x, x, 70001);
      console.log('after: ' + (y[70000] === 140000));
    `);
    assert.equal(r.signal, null, `child died by ${r.signal}: ${r.out}`);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /H=1 RangeError: attention: out of memory/);
    assert.match(r.out, /H=1 worker chunks 0, worker errors 0/);
    assert.match(r.out, /H=65536 RangeError: attention: out of memory/);
    assert.match(r.out, /H=65536 worker chunks [12], worker errors [12]\b/);
    assert.match(r.out, /after: true/);
  });

  it('LOWBIT_POOL_ADAPT=0 pins the split width; poolConfig switches it; a malformed value is an error naming it', () => {
    let r = child(`console.log(JSON.stringify(a.poolConfig()) + ' ' + a.cpuInfo().activeThreads + '/' + a.getThreads());`, { LOWBIT_POOL_ADAPT: '0', LOWBIT_THREADS: '2' });
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /\{"adaptive":false,"workerFirst":false\} 2\/2/);
    r = child(`
      console.log(JSON.stringify(a.poolConfig()));
      console.log(JSON.stringify(a.poolConfig({ adaptive: false })));
      a.setThreads(3);  // a new pool keeps the switch
      console.log(JSON.stringify(a.poolConfig()));
      try { a.poolConfig({ adaptive: 'no' }); } catch (err) { console.log(err.name + ': ' + err.message); }
    `, { LOWBIT_POOL_ADAPT: undefined });
    assert.equal(r.status, 0, r.out);
    assert.deepEqual(r.out.trim().split('\n'), [
      '{"adaptive":true,"workerFirst":false}', '{"adaptive":false,"workerFirst":false}', '{"adaptive":false,"workerFirst":false}',
      'TypeError: poolConfig: adaptive must be a boolean',
    ]);
    r = child(`try { a.getThreads(); console.log('no error'); } catch (err) { console.log(err.name + ': ' + err.message); }`, { LOWBIT_POOL_ADAPT: 'off' });
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /RangeError: getThreads: LOWBIT_POOL_ADAPT must be 0 or 1, got 'off'/);
  });

  it('kernel-side argument errors keep their message and name the function once', () => {
    const a = loadAddon()!;
    assert.throws(() => a.memBandwidth(100, 1), { name: 'RangeError', message: /^memBandwidth: bytes must be at least 1 MiB$/ });
    assert.throws(() => a.fmaPeak(-1), { name: 'RangeError', message: /^fmaPeak: ms must be positive$/ });
    assert.throws(() => a.setLevel('vax'), { name: 'RangeError', message: /^setLevel: level 'vax' is not available/ });
  });

  it('LOWBIT_THREADS sets the default thread count; a malformed one is an error that names it', () => {
    let r = child(`console.log('threads=' + a.getThreads() + ' default=' + a.cpuInfo().defaultThreads);`, { LOWBIT_THREADS: '3' });
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /threads=3 default=3/);

    r = child(`
      try { a.getThreads(); console.log('no error'); } catch (err) { console.log(err.name + ': ' + err.message); }
      a.setThreads(2);  // an explicit count still works
      console.log('threads=' + a.getThreads());
    `, { LOWBIT_THREADS: 'lots' });
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /RangeError: getThreads: LOWBIT_THREADS must be an integer from 1 to 1024, got 'lots'/);
    assert.match(r.out, /threads=2/);

    r = child(`const i = a.cpuInfo(); console.log(JSON.stringify(i));`, { LOWBIT_THREADS: undefined });
    assert.equal(r.status, 0, r.out);
    const info = JSON.parse(r.out.trim().split('\n').pop()!) as { threads: number; defaultThreads: number; physicalCores: number; hardwareThreads: number };
    assert.equal(info.threads, info.defaultThreads);
    assert.ok(info.defaultThreads >= 1 && info.defaultThreads <= Math.min(16, info.physicalCores), JSON.stringify(info));
    assert.ok(info.physicalCores <= info.hardwareThreads, JSON.stringify(info));
  });
});
