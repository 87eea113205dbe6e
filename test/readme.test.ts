// The README's library example as a user runs it: copied into a fresh project outside the repo that imports
// 'lowbit' as a dependency, type-checked with `tsc --strict`, and run from that project's folder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './helpers.js';

// LOWBIT_README checks a proposed README before it replaces the real one.
const README = process.env.LOWBIT_README ?? join(ROOT, 'README.md');

/** Every ```ts block of a Markdown file, in order. */
export function tsBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```(?:ts|typescript)\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

test('the README has a TypeScript example', () => {
  assert.ok(tsBlocks(readFileSync(README, 'utf8')).length > 0);
});

tsBlocks(readFileSync(README, 'utf8')).forEach((code, i) => {
  test(`README example ${i + 1} type-checks under tsc --strict and runs from another folder`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-readme-'));
    try {
      // A project that depends on lowbit: node_modules/lowbit is this repo, as `npm install <path>` links it.
      mkdirSync(join(dir, 'node_modules'));
      symlinkSync(ROOT, join(dir, 'node_modules', 'lowbit'), 'dir');
      writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'readme-example', private: true, type: 'module' }));
      writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
        compilerOptions: {
          target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, outDir: 'out',
          skipLibCheck: true, typeRoots: [join(ROOT, 'node_modules', '@types')], types: ['node'],
        },
        files: ['example.ts'],
      }));
      writeFileSync(join(dir, 'example.ts'), code);
      const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { cwd: dir, encoding: 'utf8' });
      assert.equal(tsc.status, 0, `tsc --strict on README example ${i + 1}:\n${tsc.stdout}${tsc.stderr}`);
      // Run from the example's own folder, where a path relative to the repo root does not exist, offline.
      const run = spawnSync(process.execPath, [join(dir, 'out', 'example.js')], {
        cwd: dir, encoding: 'utf8', env: { ...process.env, HF_HUB_OFFLINE: '1' }, timeout: 60_000,
      });
      assert.equal(run.status, 0, `README example ${i + 1} failed:\n${run.stderr}`);
      assert.ok(run.stdout.trim().length > 0, 'the example prints nothing');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
