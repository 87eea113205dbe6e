// Hugging Face checkpoint folders (../shared/spec/FORMATS.md §1.4): a single `model.safetensors`, or shards listed by
// `model.safetensors.index.json`. Saving follows huggingface_hub's greedy splitter and transformers' index writer,
// and replaces a previous checkpoint in the folder as one unit (see saveStateDict).
import * as fs from 'node:fs';
import { basename, join } from 'node:path';
import { Tensor } from '../tensor/tensor.js';
import { pyJsonDumps } from '../util/pyjson.js';
import {
  commitTemp, fsyncDir, holdTemp, probePath, readTextFile, releaseTemp, tempIsAbandoned, tempTag, TEMP_TAG_RE, writeFileExclusive,
  writeFileTemp,
} from '../util/fs.js';
import { warnOnce } from '../util/warn.js';
import {
  SafetensorsError, SafetensorsFile, TensorDict, readSafetensors, safetensorsWriter,
} from './safetensors.js';

export const SAFE_WEIGHTS_NAME = 'model.safetensors';
export const SAFE_WEIGHTS_INDEX_NAME = 'model.safetensors.index.json';
const SHARD_RE = /^model-\d{5}-of-\d{5}\.safetensors$/;
/**
 * A shard written by a save in progress, `model-00001-of-00003.tmp-<pid>-<hex>.safetensors`. It is complete once
 * written; an index names it only between a save's commit and its rename to the standard name. It ends in
 * `.safetensors` because transformers picks its loader by that suffix.
 */
const STAGED_RE = new RegExp(String.raw`^model-\d{5}-of-\d{5}${TEMP_TAG_RE}\.safetensors$`);
/** A temp file of `writeFileTemp` for one of our names; never complete until renamed. */
const TEMP_RE = new RegExp(String.raw`^(?:model\.safetensors|model\.safetensors\.index\.json|model-\d{5}-of-\d{5}\.safetensors)${TEMP_TAG_RE}$`);

/** A checkpoint folder or its index is unusable. `.file` is the folder or the index file. */
export class CheckpointError extends SafetensorsError { override name = 'CheckpointError'; }

export interface StateDict {
  tensors: Map<string, Tensor>;
  files: SafetensorsFile[];
}

/**
 * Reads `model.safetensors.index.json`: tensor name → shard file name. Each shard must be a plain file name (it sits
 * beside the index); anything else is a CheckpointError naming the index and the tensor.
 */
export function parseIndex(indexPath: string): Map<string, string> {
  const text = readTextFile(indexPath, (_m, detail) => new CheckpointError(indexPath, detail));
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(indexPath, `not valid JSON: ${(e as Error).message}`);
  }
  const wm = (raw as { weight_map?: unknown } | null)?.weight_map;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
    throw new CheckpointError(indexPath, 'expected an object with a "weight_map" object');
  }
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(wm)) {
    // Shards must sit beside the index: a weight_map must not be able to point anywhere else on disk.
    if (typeof shard !== 'string' || shard === '' || basename(shard) !== shard || shard === '.' || shard === '..' || shard.includes('\\')) {
      throw new CheckpointError(indexPath, `weight_map entry must be a file name in the same folder, got ${JSON.stringify(shard)}`, name);
    }
    map.set(name, shard);
  }
  return map;
}

/** Throws CheckpointError unless `dir` is (or links to) a folder. */
function requireFolder(dir: string): void {
  const d = probePath(dir);
  if (d.kind === 'dir') return;
  if (d.kind === 'missing') throw new CheckpointError(dir, 'folder does not exist');
  if (d.kind === 'file') throw new CheckpointError(dir, 'is a file, not a checkpoint folder: give the folder that holds model.safetensors');
  throw new CheckpointError(dir, d.problem);
}

/** `*.safetensors` files of `dir` other than a save's temp and staged names, sorted (model.safetensors included). */
export function otherSafetensorsFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors') && !STAGED_RE.test(f) && !TEMP_RE.test(f)
    && probePath(join(dir, f)).kind === 'file').sort();
}

/**
 * The one `*.safetensors` file of a folder that has neither model.safetensors nor an index: AutoGPTQ names its
 * file `gptq_model-4bit-128g.safetensors` (quantize_config.json's model_file_base_name). Null when there is none;
 * several are a CheckpointError naming them (which one is the model is anyone's guess).
 */
function otherSingleFile(dir: string): string | null {
  const found = otherSafetensorsFiles(dir);
  if (found.length > 1) {
    throw new CheckpointError(dir, `no ${SAFE_WEIGHTS_NAME} or ${SAFE_WEIGHTS_INDEX_NAME}, and ${found.length} other safetensors files (${found.slice(0, 4).join(', ')}${found.length > 4 ? ', …' : ''}): cannot tell which is the model`);
  }
  return found[0] ?? null;
}

/**
 * The weight files `loadStateDict(dir)` reads (model.safetensors, or the index and its shards, or a folder's one
 * other safetensors file), as paths.
 */
export function checkpointFiles(dir: string): string[] {
  if (probePath(join(dir, SAFE_WEIGHTS_NAME)).kind !== 'missing') return [join(dir, SAFE_WEIGHTS_NAME)];
  const index = join(dir, SAFE_WEIGHTS_INDEX_NAME);
  if (probePath(index).kind === 'missing') {
    const other = otherSingleFile(dir);
    if (!other) throw new CheckpointError(dir, `no ${SAFE_WEIGHTS_NAME} or ${SAFE_WEIGHTS_INDEX_NAME} in this folder`);
    return [join(dir, other)];
  }
  return [index, ...[...new Set(parseIndex(index).values())].map((f) => join(dir, f))];
}

/**
 * Loads every tensor of a checkpoint folder as zero-copy views. Prefers `model.safetensors` over an index, as
 * transformers does; a folder with neither loads its one other safetensors file (AutoGPTQ's file name). `mmap: false` reads each file into memory instead of mapping it (see readSafetensors: a mapped
 * file that another process truncates kills this process with SIGBUS).
 */
export function loadStateDict(dir: string, opts: { mmap?: boolean } = {}): StateDict {
  requireFolder(dir);
  const single = join(dir, SAFE_WEIGHTS_NAME);
  const indexPath = join(dir, SAFE_WEIGHTS_INDEX_NAME);
  const s = probePath(single);
  if (s.kind !== 'missing') {
    // Anything at this name is the checkpoint. transformers' os.path.isfile would skip a folder, a dangling link or
    // a loop here and load the index instead; that index may be another checkpoint, so say what is wrong instead.
    if (s.kind !== 'file') {
      const what = s.kind === 'dir' ? 'is a folder, not a safetensors file' : s.problem;
      const alt = probePath(indexPath).kind === 'file' ? `; remove it to load the sharded checkpoint that ${SAFE_WEIGHTS_INDEX_NAME} lists` : '';
      throw new CheckpointError(single, what + alt);
    }
    const f = readSafetensors(single, opts);
    return { tensors: new Map(f.names().map((n) => [n, f.get(n)])), files: [f] };
  }
  const ix = probePath(indexPath);
  if (ix.kind === 'missing') {
    const other = otherSingleFile(dir);
    if (other) {
      const f = readSafetensors(join(dir, other), opts);
      return { tensors: new Map(f.names().map((n) => [n, f.get(n)])), files: [f] };
    }
    const pt = ['pytorch_model.bin', 'pytorch_model.bin.index.json'].filter((f) => probePath(join(dir, f)).kind !== 'missing');
    const hint = pt.length
      ? ` It has ${pt.join(' and ')}: PyTorch pickle checkpoints are not supported; convert them to safetensors first.`
      : '';
    throw new CheckpointError(dir, `no ${SAFE_WEIGHTS_NAME} or ${SAFE_WEIGHTS_INDEX_NAME} in this folder.${hint}`);
  }
  if (ix.kind !== 'file') throw new CheckpointError(indexPath, ix.kind === 'dir' ? 'is a folder, not an index file' : ix.problem);
  const weightMap = parseIndex(indexPath);
  const shards = new Map<string, SafetensorsFile>();
  for (const [name, shard] of weightMap) {
    if (shards.has(shard)) continue;
    const p = join(dir, shard);
    // Other problems (a folder, a dangling link, a loop) come from readSafetensors as a FileAccessError naming p.
    if (probePath(p).kind === 'missing') throw new CheckpointError(indexPath, `weight_map points to ${shard}, which is missing`, name);
    shards.set(shard, readSafetensors(p, opts));
  }
  const tensors = new Map<string, Tensor>();
  for (const [name, shard] of weightMap) {
    const f = shards.get(shard)!;
    if (!f.has(name)) throw new CheckpointError(indexPath, `weight_map says it is in ${shard}, but that file has no such tensor`, name);
    tensors.set(name, f.get(name));
  }
  // A shard may hold tensors the index forgot; transformers loads whole shards, so keep them, but never let two
  // shards disagree about one name.
  const owner = new Map<string, string>();
  for (const [shard, f] of shards) {
    for (const name of f.names()) {
      const first = owner.get(name);
      if (first !== undefined) throw new CheckpointError(indexPath, `present in both ${first} and ${shard}`, name);
      owner.set(name, shard);
      if (!tensors.has(name)) tensors.set(name, f.get(name));
    }
  }
  return { tensors, files: [...shards.values()] };
}

const SIZE_UNITS: Record<string, number> = { KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12 };

/** huggingface_hub's `parse_size_to_int`: decimal units, "5GB" = 5·10⁹, fractional values allowed. */
export function parseSize(size: number | string): number {
  if (typeof size === 'number') {
    if (!Number.isFinite(size) || size <= 0) throw new RangeError(`max shard size must be positive, got ${size}`);
    return Math.floor(size);
  }
  const s = size.trim();
  const unit = SIZE_UNITS[s.slice(-2).toUpperCase()];
  const value = s.slice(0, -2).trim();
  if (unit === undefined || !/^\d+(\.\d*)?$|^\.\d+$/.test(value) || Number(value) <= 0) {
    throw new RangeError(`cannot parse size ${JSON.stringify(size)}: expected a number followed by KB, MB, GB or TB`);
  }
  return Math.floor(Number(value) * unit);
}

/**
 * The points between a save's filesystem steps, in the order they occur; `onStep` reports each (progress, and the
 * tests that kill a writer at every one of them).
 * - `remove-leftover` (file): about to delete a file that the checkpoint in the folder does not use: a temp or staged
 *   file of an interrupted save, a shard no index names, an index that `model.safetensors` overrides.
 * - `write` (file): a new weights file exists with only its header written; tensor data follows.
 * - `written` (file): that file is complete and fsynced.
 * - `index-written`: a new index is complete under a temp name.
 * - `index-renamed`: a new index is in place, but not yet in force: model.safetensors still overrides it (a save
 *   from a single file to shards); or, after `committed`, the index with the standard shard names is in place.
 * - `committed`: the folder now loads as the new checkpoint; reported right after the one rename or unlink that
 *   commits. Every point before it leaves the old checkpoint.
 * - `remove-old` (file): about to delete a file of the old checkpoint.
 * - `linked` (file): a staged shard now also has its standard name.
 * - `unlink-staged` (file): about to delete a staged name that the final index no longer uses.
 * - `done`.
 */
export type SaveStep =
  | 'remove-leftover' | 'write' | 'written' | 'index-written' | 'index-renamed' | 'committed' | 'remove-old'
  | 'linked' | 'unlink-staged' | 'done';

export interface SaveOptions {
  /** Bytes, or a string like "5GB" (decimal units). Default "5GB", huggingface_hub's default. */
  maxShardSize?: number | string;
  /** Added to every file's `__metadata__` after `format: "pt"`. */
  metadata?: Record<string, string>;
  /** Called between the save's filesystem steps, with the file name where there is one (see SaveStep). */
  onStep?: (step: SaveStep, file?: string) => void;
}

export interface SaveResult {
  files: string[];
  totalSize: number;
  sharded: boolean;
}

/**
 * The names the checkpoint now in `dir` loads from, by loadStateDict's rule (model.safetensors wins over an index).
 * Null when nothing loadable can be told apart (an unreadable index, something odd at model.safetensors): then only
 * abandoned temp files count as leftovers.
 */
function committedNames(dir: string): Set<string> | null {
  const single = join(dir, SAFE_WEIGHTS_NAME);
  const s = probePath(single);
  if (s.kind === 'file') return new Set([SAFE_WEIGHTS_NAME]);
  if (s.kind === 'dir') throw new CheckpointError(single, 'is a folder; cannot save a checkpoint over it');
  if (s.kind === 'bad') return null;
  const indexPath = join(dir, SAFE_WEIGHTS_INDEX_NAME);
  const ix = probePath(indexPath);
  if (ix.kind === 'missing') return new Set();
  if (ix.kind === 'dir') throw new CheckpointError(indexPath, 'is a folder; cannot save a checkpoint over it');
  if (ix.kind === 'bad') return null;
  try {
    return new Set([SAFE_WEIGHTS_INDEX_NAME, ...parseIndex(indexPath).values()]);
  } catch {
    return null;
  }
}

/**
 * Files of ours in `dir` that `keep` does not name: standard checkpoint names (unless `keep` is null), files that
 * `previous` (the checkpoint just replaced) named, and temp and staged files that no one is writing (their process
 * is gone, or they carry this thread's tag but no save of ours holds them: see tempIsAbandoned). Never anything else in the folder (config.json, a user's files), and never a temp file of a writer that still runs. The
 * index comes first, so that an index never names a deleted shard.
 */
function unusedFiles(dir: string, keep: Set<string> | null, previous: Set<string> | null = null): string[] {
  const out: string[] = [];
  for (const f of fs.readdirSync(dir)) {
    if (keep?.has(f)) continue;
    const tmp = TEMP_RE.exec(f) ?? STAGED_RE.exec(f);
    if (previous?.has(f)) out.push(f);
    else if (tmp) { if (tempIsAbandoned(join(dir, f), Number(tmp[1]), Number(tmp[2] ?? 0))) out.push(f); }
    else if (keep !== null && (f === SAFE_WEIGHTS_NAME || f === SAFE_WEIGHTS_INDEX_NAME || SHARD_RE.test(f))) out.push(f);
  }
  return out.sort((a, b) => Number(b === SAFE_WEIGHTS_INDEX_NAME) - Number(a === SAFE_WEIGHTS_INDEX_NAME));
}

/** Deletes files that no checkpoint in the folder uses. A failure leaves an unused file behind, so it only warns. */
function removeFiles(dir: string, names: string[], step: SaveStep, onStep: (s: SaveStep, f?: string) => void): void {
  for (const f of names) {
    onStep(step, f);
    try {
      fs.unlinkSync(join(dir, f));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // A folder that happens to have a shard's name is not ours to remove.
      if (code !== 'ENOENT' && code !== 'EISDIR' && code !== 'EPERM') warnOnce(`${join(dir, f)}: could not remove this unused file: ${(e as Error).message}`);
    }
  }
  if (names.length) fsyncDir(dir);
}

/** transformers' index: `indent=2, sort_keys=True` plus a newline (../shared/spec/FORMATS.md §1.4). */
function indexBytes(shardList: Map<string, Tensor>[], names: string[], totalSize: number): Buffer {
  // A Map, so a tensor called "__proto__" stays an ordinary key.
  const weightMap = new Map<string, string>();
  shardList.forEach((shard, i) => { for (const name of shard.keys()) weightMap.set(name, names[i]); });
  const text = pyJsonDumps(
    new Map<string, unknown>([['metadata', { total_size: totalSize }], ['weight_map', weightMap]]),
    { indent: 2, sortKeys: true },
  ) + '\n';
  return Buffer.from(text, 'utf8');
}

function writeIndexTemp(dir: string, bytes: Buffer): string {
  return writeFileTemp(join(dir, SAFE_WEIGHTS_INDEX_NAME), (fd) => {
    for (let off = 0; off < bytes.length;) off += fs.writeSync(fd, bytes, off);
  });
}

/**
 * Saves a state dict the way transformers' save_pretrained does: one `model.safetensors` when it fits in
 * `maxShardSize`, else greedy shards in insertion order plus an index with the standard shard names.
 *
 * A checkpoint already in `dir` is replaced as one unit: if the process dies at any moment (SIGKILL, power loss
 * after the fsyncs), the folder loads as either the old checkpoint or the new one, never a mix. The commit is one
 * rename or unlink, chosen by loadStateDict's rule that model.safetensors wins over an index:
 * - to a single file: write `model.safetensors.tmp-…`, rename it over `model.safetensors` (commit), then remove the
 *   old index and shards;
 * - to shards: write each shard under a new staged name (`model-00001-of-00002.tmp-<pid>-<hex>.safetensors`, never
 *   an old shard's name), fsync, rename an index naming the staged shards over the old index (the commit when there
 *   is no model.safetensors), unlink model.safetensors if present (then that is the commit), remove the old shards,
 *   hard-link each staged shard to its standard name, rename a second index with the standard names into place
 *   (still the new checkpoint), and unlink the staged names. Where hard links are not supported the staged names
 *   stay, with a warning; transformers loads whatever names an index lists.
 * Files of ours that the folder's checkpoint does not use (temp and staged files of an interrupted save whose
 * writer is gone, orphaned shards) are removed first. Concurrent saves to one folder are not supported.
 */
export function saveStateDict(dir: string, tensors: TensorDict, opts: SaveOptions = {}): SaveResult {
  const max = parseSize(opts.maxShardSize ?? '5GB');
  const metadata = { format: 'pt', ...(opts.metadata ?? {}) };
  const onStep = opts.onStep ?? (() => {});
  const entries = tensors instanceof Map ? [...tensors] : Object.entries(tensors);

  // Mirrors split_state_dict_into_shards_factory exactly, including its quirk that an oversized tensor's own
  // shard is emitted before the shard still being filled.
  const shardList: Map<string, Tensor>[] = [];
  let current = new Map<string, Tensor>();
  let currentSize = 0;
  let totalSize = 0;
  for (const [name, t] of entries) {
    const size = t.byteLength;
    totalSize += size;
    if (size > max) { shardList.push(new Map([[name, t]])); continue; }
    if (currentSize + size > max) { shardList.push(current); current = new Map(); currentSize = 0; }
    current.set(name, t);
    currentSize += size;
  }
  if (current.size > 0 || shardList.length === 0) shardList.push(current);

  const n = shardList.length;
  const names = n === 1 ? [SAFE_WEIGHTS_NAME]
    : shardList.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`);
  // The names the new files are first written under: a temp for the single file, staged names for shards.
  const firstNames = n === 1 ? [SAFE_WEIGHTS_NAME + tempTag()] : names.map((f) => f.replace(/\.safetensors$/, `${tempTag()}.safetensors`));
  // Every tensor is validated here, before the folder is touched.
  const fills = shardList.map((shard, i) =>
    safetensorsWriter(join(dir, names[i]), shard, metadata, () => onStep('write', firstNames[i])));

  // Held from before they exist until this save returns: files with our pid that nothing holds are leftovers of an
  // earlier process that had our pid, and a save removes them.
  const held = firstNames.map((f) => join(dir, f));
  held.forEach(holdTemp);
  try {
    return commitSave(dir, shardList, names, firstNames, fills, totalSize, onStep);
  } finally {
    held.forEach(releaseTemp);
  }
}

/** saveStateDict's filesystem steps, once every tensor is validated and every name chosen. */
function commitSave(
  dir: string, shardList: Map<string, Tensor>[], names: string[], firstNames: string[], fills: ((fd: number) => void)[],
  totalSize: number, onStep: (s: SaveStep, f?: string) => void,
): SaveResult {
  const n = shardList.length;
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    requireFolder(dir); // a typed error for a file, a dangling link or a loop in the way
    throw e;
  }
  const previous = committedNames(dir);
  removeFiles(dir, unusedFiles(dir, previous), 'remove-leftover', onStep);

  const single = join(dir, SAFE_WEIGHTS_NAME);
  const written: string[] = [];
  let indexTmp: string | undefined;
  try {
    shardList.forEach((_, i) => {
      writeFileExclusive(join(dir, firstNames[i]), fills[i]);
      written.push(firstNames[i]);
      onStep('written', firstNames[i]);
    });
    if (n > 1) {
      fsyncDir(dir); // the staged names are durable before an index names them
      indexTmp = writeIndexTemp(dir, indexBytes(shardList, firstNames, totalSize));
      onStep('index-written');
    }
  } catch (e) {
    for (const f of written) fs.rmSync(join(dir, f), { force: true });
    if (indexTmp) { fs.rmSync(indexTmp, { force: true }); releaseTemp(indexTmp); }
    throw e;
  }

  if (n === 1) {
    commitTemp(join(dir, firstNames[0]), single); // the commit: model.safetensors wins over any index
    onStep('committed');
    removeFiles(dir, unusedFiles(dir, new Set([SAFE_WEIGHTS_NAME]), previous), 'remove-old', onStep);
    onStep('done');
    return { files: [single], totalSize, sharded: false };
  }

  try {
    commitTemp(indexTmp!, join(dir, SAFE_WEIGHTS_INDEX_NAME));
  } catch (e) {
    for (const f of written) fs.rmSync(join(dir, f), { force: true });
    throw e;
  }
  if (probePath(single).kind !== 'missing') {
    onStep('index-renamed');
    // model.safetensors still wins over the new index: removing it is the commit. If that fails the old checkpoint
    // stays in force, and the new index and staged shards are removed.
    try {
      fs.unlinkSync(single);
    } catch (e) {
      // Undo the new index (ours: an old one was removed as unused at the start) and then the shards it names.
      for (const f of [SAFE_WEIGHTS_INDEX_NAME, ...written]) fs.rmSync(join(dir, f), { force: true });
      fsyncDir(dir);
      throw new CheckpointError(single, `could not remove it to put the new sharded checkpoint in force, so the folder still holds the old one: ${(e as Error).message}`);
    }
    fsyncDir(dir);
  }
  onStep('committed');

  // From here on the folder holds the new checkpoint; what follows only tidies names, so failures warn.
  removeFiles(dir, unusedFiles(dir, new Set([SAFE_WEIGHTS_INDEX_NAME, ...firstNames]), previous), 'remove-old', onStep);
  const linked: string[] = [];
  let finalNames = names;
  let finalTmp: string | undefined;
  try {
    names.forEach((f, i) => {
      fs.linkSync(join(dir, firstNames[i]), join(dir, f));
      linked.push(f);
      onStep('linked', f);
    });
    fsyncDir(dir);
    finalTmp = writeIndexTemp(dir, indexBytes(shardList, names, totalSize));
    onStep('index-written');
    commitTemp(finalTmp, join(dir, SAFE_WEIGHTS_INDEX_NAME));
  } catch (e) {
    // The index in place still names the staged shards; the standard-name links it does not use can go.
    for (const f of linked) fs.rmSync(join(dir, f), { force: true });
    if (finalTmp) { fs.rmSync(finalTmp, { force: true }); releaseTemp(finalTmp); }
    warnOnce(`${dir}: saved the shards as ${firstNames[0]} … (the index lists them) because they could not be given `
      + `their standard names: ${(e as Error).message}`);
    finalNames = firstNames;
  }
  if (finalNames === names) {
    onStep('index-renamed');
    removeFiles(dir, firstNames, 'unlink-staged', onStep);
  }
  onStep('done');
  return { files: finalNames.map((f) => join(dir, f)), totalSize, sharded: true };
}
