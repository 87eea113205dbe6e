// Atomic file writes: write a sibling temp file, fsync, rename over the target. An existing target is either the
// old file or the new one, never half of each; several files can be staged first and committed together; a temp
// file's tag tells a later save whether anyone may still be writing it. Also probePath, which tells a missing path
// from a dangling symlink, a loop or a FIFO without opening anything, and readTextFile, which reads only regular files.
import * as fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, resolve } from 'node:path';
import { threadId } from 'node:worker_threads';

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
 * through `toError(message, detail)` so each reader keeps its own error class; `message` is `<path>: <detail>`.
 */
export function readTextFile(path: string, toError: (message: string, detail: string) => Error): string {
  const fail = (detail: string) => toError(`${path}: ${detail}`, detail);
  const p = probePath(path);
  if (p.kind === 'missing') throw fail('no such file');
  if (p.kind === 'dir') throw fail('is a folder, not a file');
  if (p.kind === 'bad') throw fail(p.problem);
  try {
    return fs.readFileSync(path, 'utf8');
  } catch (e) {
    throw fail(`cannot be read: ${(e as Error).message}`);
  }
}

/**
 * Temp and staged files that this thread is writing right now (resolved paths), from their creation until they are
 * committed, removed, or the save that staged them returns. A file tagged with our own pid and thread that is not
 * here was left by an earlier process that had the same pid (pids repeat, in containers especially) or by a save of
 * ours that failed, so a later save may remove it.
 */
const inProgress = new Set<string>();

/** Marks `path` as being written by this thread until `releaseTemp(path)`. */
export function holdTemp(path: string): void { inProgress.add(resolve(path)); }
export function releaseTemp(path: string): void { inProgress.delete(resolve(path)); }

/**
 * The tag in every temp name lowbit writes: `.tmp-<pid>-<12 hex>`, or `.tmp-<pid>-t<threadId>-<12 hex>` from a worker
 * thread. The pid lets a later writer tell an abandoned temp file (its writer is gone) from one that another live
 * process is still writing; the thread id does the same within this process, since each thread has its own
 * `inProgress` set.
 */
export function tempTag(): string {
  return `.tmp-${process.pid}${threadId === 0 ? '' : `-t${threadId}`}-${randomBytes(6).toString('hex')}`;
}

/** The tag as a regular expression source; group 1 is the pid, group 2 the thread id (absent: the main thread). */
export const TEMP_TAG_RE = String.raw`\.tmp-(\d+)(?:-t(\d+))?-[0-9a-f]{12}`;

/**
 * Whether a temp file tagged with `pid` may be deleted: its writer no longer runs. A process of another user still
 * counts as running (EPERM). Our own pid counts as running here; `tempIsAbandoned` also settles that case.
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
 * Whether the temp file at `path`, tagged with `pid` and `thread` (0: the main thread), is abandoned: its writer
 * process is gone, or it carries this thread's tag but this thread is not writing it now. A file of another thread
 * of this process is kept: that thread may be writing it, and its set cannot be seen from here.
 */
export function tempIsAbandoned(path: string, pid: number, thread = 0): boolean {
  if (pid !== process.pid) return writerIsGone(pid);
  return thread === threadId && !inProgress.has(resolve(path));
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
 * with `commitTemp`, or removes it and calls `releaseTemp`; until then a save in this folder leaves it alone.
 */
export function writeFileTemp(path: string, fill: (fd: number) => void): string {
  const tmp = path + tempTag();
  holdTemp(tmp);
  try {
    writeFileExclusive(tmp, fill);
  } catch (e) {
    releaseTemp(tmp);
    throw e;
  }
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
  } finally {
    releaseTemp(tmp);
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
