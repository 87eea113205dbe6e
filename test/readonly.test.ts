// A checkpoint's weights are read-only views of its file (mapped PROT_READ by default: a write would kill the process
// with SIGSEGV). They carry `readOnly` and their origin; every op refuses them as an output with a
// ReadOnlyTensorError naming the tensor, and `writable()` gives an algorithm that must change a weight its own copy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuAvailable, cpuBackend } from '../src/backend/cpu/index.js';
import { refBackend } from '../src/backend/ref/index.js';
import { loadStateDict, saveStateDict } from '../src/io/checkpoint.js';
import { ReadOnlyTensorError, Tensor } from '../src/tensor/tensor.js';

function withCheckpoint(fn: (file: string, dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-ro-'));
  try {
    saveStateDict(dir, new Map([
      ['w', Tensor.f32([3, 4], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])],
      ['v', Tensor.f32([4], [0.5, -1, 2, 0])],
    ]));
    fn(join(dir, 'model.safetensors'), dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

for (const mmap of [true, false]) {
  test(`checkpoint tensors are read-only (mmap ${mmap}): ops refuse them as outputs, writable() copies`, () => {
    withCheckpoint((file, dir) => {
      const before = sha(file);
      const { tensors } = loadStateDict(dir, { mmap });
      const w = tensors.get('w')! as Tensor<'F32'>, v = tensors.get('v')! as Tensor<'F32'>;
      assert.equal(w.readOnly, true);
      assert.equal(w.origin, `${file}: w`);
      assert.equal(w.reshape([12]).readOnly, true, 'a reshaped view is still read-only');

      const backends = cpuAvailable() ? [refBackend, cpuBackend] : [refBackend];
      for (const be of backends) {
        // matmul into a weight, an elementwise op into a weight, rope in place on a weight: all refused before any
        // byte is written (on the cpu backend a write into the mapping would be a SIGSEGV, not an exception).
        assert.throws(() => be.matmul(Tensor.f32([1, 4], [1, 1, 1, 1]), Tensor.f32([4, 4]), null, v),
          (e: unknown) => e instanceof ReadOnlyTensorError && e.message.includes(`matmul out: ${file}: v is read-only`), `${be.name} matmul`);
        assert.throws(() => be.add(Tensor.f32([4]), Tensor.f32([4]), v),
          (e: unknown) => e instanceof ReadOnlyTensorError && e.message.includes(`${file}: v`), `${be.name} add`);
        assert.throws(() => be.rope(w.reshape([3, 1, 4]), Int32Array.of(0, 1, 2), Float32Array.of(1, 0.5)),
          (e: unknown) => e instanceof ReadOnlyTensorError && e.message.includes('rope (in place)'), `${be.name} rope`);
      }

      // Copy-on-write: the copy is writable, holds the same values, and changing it leaves the file alone.
      const c = w.writable();
      assert.notEqual(c, w);
      assert.equal(c.readOnly, false);
      assert.deepEqual([...c.f32], [...w.f32]);
      c.f32[0] = 100;
      refBackend.add(c, c, c);
      assert.equal(c.f32[0], 200);
      assert.equal(w.f32[0], 1);
      assert.equal(sha(file), before);
      // A tensor that is already writable is its own writable().
      assert.equal(c.writable(), c);
    });
  });
}
