// Atomic file writes: write a sibling temp file, fsync, rename over the target. An existing target is either the
// old file or the new one, never half of each; several files can be staged first and committed together. Also
// probePath, which tells a missing path from a dangling symlink, a loop or a FIFO without opening anything.
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';

/** Largest single read/write call (Node refuses ≥ 2 GiB in one call). */
export const MAX_IO_CHUNK = 1 << 30;

/** What is at a path, following symlinks, with a sentence for everything that cannot be opened as a file or folder. */
export type PathProbe =
  | { kind: 'file'; stats: fs.Stats }
  | { kind: 'dir'; stats: fs.Stats }
  /** Nothing at all at this name, not even a symlink. */
  | { kind: 'missing' }
  /** Something is there but it cannot be used: `problem` completes "<path> …". */
  | { kind: 'bad'; problem: string; code?: string };

function fileKind(st: fs.Stats): string {
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'a special file';
}

/**
 * Classifies `path` without opening it. `fs.existsSync` says "no" for a dangling symlink and for a symlink loop,
 * which turns both into a misleading "not found"; this tells them apart, and never opens a FIFO (which would block).
 */
export function probePath(path: string): PathProbe {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      let target: string | undefined;
      try { if (fs.lstatSync(path).isSymbolicLink()) target = fs.readlinkSync(path); } catch { /* nothing there */ }
      return target === undefined ? { kind: 'missing' }
        : { kind: 'bad', code, problem: `is a dangling symlink: its target ${target} does not exist` };
    }
    if (code === 'ELOOP') return { kind: 'bad', code, problem: 'is a symlink loop (too many levels of symbolic links)' };
    if (code === 'EACCES' || code === 'EPERM') return { kind: 'bad', code, problem: 'cannot be read: permission denied on a folder in its path' };
    if (code === 'ENOTDIR') return { kind: 'bad', code, problem: 'does not exist: a part of its path is a file, not a folder' };
    return { kind: 'bad', code, problem: `cannot be read: ${(e as Error).message}` };
  }
  if (st.isFile()) return { kind: 'file', stats: st };
  if (st.isDirectory()) return { kind: 'dir', stats: st };
  return { kind: 'bad', code: 'EINVAL', problem: `is ${fileKind(st)}, not a regular file` };
}

/**
 * Reads a small text file (config.json, tokenizer files, templates, indexes) after checking that it is a regular
 * file: opening a FIFO would block forever, and a folder or a loop would give a raw errno. Problems are reported
 * through `toError(message)` so each reader keeps its own error class; the message starts with the path.
 */
export function readTextFile(path: string, toError: (message: string) => Error): string {
  const p = probePath(path);
  if (p.kind === 'missing') throw toError(`${path}: no such file`);
  if (p.kind === 'dir') throw toError(`${path}: is a folder, not a file`);
  if (p.kind === 'bad') throw toError(`${path}: ${p.problem}`);
  try {
    return fs.readFileSync(path, 'utf8');
  } catch (e) {
    throw toError(`${path}: cannot be read: ${(e as Error).message}`);
  }
}

/**
 * The tag in every temp name lowbit writes: `.tmp-<pid>-<12 hex>`. The pid lets a later writer tell an abandoned
 * temp file (its writer is gone) from one that another live process is still writing.
 */
export function tempTag(): string {
  return `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/**
 * Whether a temp file tagged with `pid` may be deleted: its writer is not this process and no longer runs. A
 * process of another user still counts as running (EPERM). Our own pid counts as running: a save in another worker
 * thread of this process may own the file.
 */
export function writerIsGone(pid: number): boolean {
  if (pid === process.pid || !Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * Creates `path` (which must not exist), writes `fill`'s output, fsyncs and closes it. On failure the file is
 * removed. Used directly for files that are complete under their final name once written (staged shards).
 */
export function writeFileExclusive(path: string, fill: (fd: number) => void): void {
  let fd = fs.openSync(path, 'wx', 0o644);
  try {
    fill(fd);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = -1;
  } catch (e) {
    if (fd >= 0) try { fs.closeSync(fd); } catch { /* already failing */ }
    fs.rmSync(path, { force: true });
    throw e;
  }
}

/**
 * Writes `fill`'s output to a sibling temp file `<path>.tmp-<pid>-<hex>` (same folder, so the later rename cannot
 * cross filesystems), fsyncs it and returns its path. On failure the temp file is removed. The caller commits it
 * with `commitTemp`.
 */
export function writeFileTemp(path: string, fill: (fd: number) => void): string {
  const tmp = path + tempTag();
  writeFileExclusive(tmp, fill);
  return tmp;
}

/**
 * Persists renames, links and unlinks in `dir` (the directory entry, not the file data). Not every platform lets a
 * directory be fsynced, hence best effort.
 */
export function fsyncDir(dir: string): void {
  try {
    const dfd = fs.openSync(dir, 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
  } catch { /* best effort */ }
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
  fsyncDir(dirname(path));
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
