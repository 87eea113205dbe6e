// Atomic file writes: write a sibling temp file, fsync, rename over the target. An existing target is either the
// old file or the new one, never half of each; several files can be staged first and committed together.
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';

/** Largest single read/write call (Node refuses ≥ 2 GiB in one call). */
export const MAX_IO_CHUNK = 1 << 30;

/**
 * Writes `fill`'s output to a sibling temp file (same folder, so the later rename cannot cross filesystems), fsyncs
 * it and returns its path. On failure the temp file is removed. The caller commits it with `commitTemp`.
 */
export function writeFileTemp(path: string, fill: (fd: number) => void): string {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fd = fs.openSync(tmp, 'wx', 0o644);
  try {
    fill(fd);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = -1;
  } catch (e) {
    if (fd >= 0) try { fs.closeSync(fd); } catch { /* already failing */ }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  return tmp;
}

/**
 * Renames a temp file over `path`. Renaming (rather than truncating in place) keeps an existing `path` intact until
 * the new bytes are complete, and keeps existing mmaps of the old file valid. On failure the temp file is removed.
 */
export function commitTemp(tmp: string, path: string): void {
  try {
    fs.renameSync(tmp, path);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  // Persist the rename itself; not every platform lets a directory be fsynced, hence best effort.
  try {
    const dfd = fs.openSync(dirname(path), 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
  } catch { /* best effort */ }
}


/** Write a whole file atomically from `fill(fd)` or from bytes/text. */
export function writeFileAtomic(path: string, data: string | Uint8Array | ((fd: number) => void)): void {
  const fill = typeof data === 'function' ? data : (fd: number) => {
    const b = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let off = 0;
    while (off < b.length) off += fs.writeSync(fd, b, off, Math.min(MAX_IO_CHUNK, b.length - off));
  };
  commitTemp(writeFileTemp(path, fill), path);
}
