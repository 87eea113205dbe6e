// Hugging Face checkpoint folders (FORMATS.md §1.4): a single `model.safetensors`, or shards listed by
// `model.safetensors.index.json`. Saving follows huggingface_hub's greedy splitter and transformers' index writer.
import * as fs from 'node:fs';
import { basename, join } from 'node:path';
import { Tensor } from '../tensor/tensor.js';
import { pyJsonDumps } from '../util/pyjson.js';
import { commitTemp, writeFileTemp } from '../util/fs.js';
import {
  SafetensorsError, SafetensorsFile, TensorDict, readSafetensors, writeSafetensorsTemp,
} from './safetensors.js';

export const SAFE_WEIGHTS_NAME = 'model.safetensors';
export const SAFE_WEIGHTS_INDEX_NAME = 'model.safetensors.index.json';
const SHARD_RE = /^model-\d{5}-of-\d{5}\.safetensors$/;

/** A checkpoint folder or its index is unusable. `.file` is the folder or the index file. */
export class CheckpointError extends SafetensorsError { override name = 'CheckpointError'; }

export interface StateDict {
  tensors: Map<string, Tensor>;
  files: SafetensorsFile[];
}

function parseIndex(indexPath: string): Map<string, string> {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
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

/**
 * Loads every tensor of a checkpoint folder as zero-copy views. Prefers `model.safetensors` over an index, as
 * transformers does.
 */
export function loadStateDict(dir: string, opts: { mmap?: boolean } = {}): StateDict {
  const single = join(dir, SAFE_WEIGHTS_NAME);
  if (fs.existsSync(single)) {
    const f = readSafetensors(single, opts);
    return { tensors: new Map(f.names().map((n) => [n, f.get(n)])), files: [f] };
  }
  const indexPath = join(dir, SAFE_WEIGHTS_INDEX_NAME);
  if (!fs.existsSync(indexPath)) {
    if (!fs.existsSync(dir)) throw new CheckpointError(dir, 'folder does not exist');
    const pt = ['pytorch_model.bin', 'pytorch_model.bin.index.json'].filter((f) => fs.existsSync(join(dir, f)));
    const hint = pt.length
      ? ` It has ${pt.join(' and ')}: PyTorch pickle checkpoints are not supported; convert them to safetensors first.`
      : '';
    throw new CheckpointError(dir, `no ${SAFE_WEIGHTS_NAME} or ${SAFE_WEIGHTS_INDEX_NAME} in this folder.${hint}`);
  }
  const weightMap = parseIndex(indexPath);
  const shards = new Map<string, SafetensorsFile>();
  for (const [name, shard] of weightMap) {
    if (shards.has(shard)) continue;
    const p = join(dir, shard);
    if (!fs.existsSync(p)) throw new CheckpointError(indexPath, `weight_map points to ${shard}, which is missing`, name);
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

export interface SaveOptions {
  /** Bytes, or a string like "5GB" (decimal units). Default "5GB", huggingface_hub's default. */
  maxShardSize?: number | string;
  /** Added to every file's `__metadata__` after `format: "pt"`. */
  metadata?: Record<string, string>;
}

export interface SaveResult {
  files: string[];
  totalSize: number;
  sharded: boolean;
}

/**
 * Saves a state dict the way transformers' save_pretrained does: one `model.safetensors` when it fits in
 * `maxShardSize`, else greedy shards in insertion order plus an index. Every file is written atomically, and files
 * of an earlier save are removed only after the new set is complete.
 */
export function saveStateDict(dir: string, tensors: TensorDict, opts: SaveOptions = {}): SaveResult {
  const max = parseSize(opts.maxShardSize ?? '5GB');
  const metadata = { format: 'pt', ...(opts.metadata ?? {}) };
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

  fs.mkdirSync(dir, { recursive: true });
  const n = shardList.length;
  const names = n === 1 ? [SAFE_WEIGHTS_NAME]
    : shardList.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`);
  // Every new file is written and fsynced under a temp name before any is renamed into place, so a failure while
  // writing (bad tensor, full disk) leaves a previous checkpoint in this folder exactly as it was, even when the new
  // shard names coincide with the old ones.
  const staged: [tmp: string, path: string][] = [];
  try {
    shardList.forEach((shard, i) => {
      const path = join(dir, names[i]);
      staged.push([writeSafetensorsTemp(path, shard, metadata), path]);
    });
    if (n > 1) {
      // A Map, so a tensor called "__proto__" stays an ordinary key.
      const weightMap = new Map<string, string>();
      shardList.forEach((shard, i) => { for (const name of shard.keys()) weightMap.set(name, names[i]); });
      const text = pyJsonDumps(
        new Map<string, unknown>([['metadata', { total_size: totalSize }], ['weight_map', weightMap]]),
        { indent: 2, sortKeys: true },
      ) + '\n';
      const bytes = Buffer.from(text, 'utf8');
      const path = join(dir, SAFE_WEIGHTS_INDEX_NAME);
      staged.push([writeFileTemp(path, (fd) => {
        for (let off = 0; off < bytes.length;) off += fs.writeSync(fd, bytes, off);
      }), path]);
    }
  } catch (e) {
    for (const [tmp] of staged) fs.rmSync(tmp, { force: true });
    throw e;
  }
  // Shards first, index last: the index never names a shard that is not yet in place.
  staged.forEach(([tmp, path], i) => {
    try {
      commitTemp(tmp, path);
    } catch (e) {
      for (const [rest] of staged.slice(i + 1)) fs.rmSync(rest, { force: true });
      throw e;
    }
  });

  const written = new Set(staged.map(([, path]) => basename(path)));
  for (const f of fs.readdirSync(dir)) {
    const ours = f === SAFE_WEIGHTS_NAME || f === SAFE_WEIGHTS_INDEX_NAME || SHARD_RE.test(f);
    if (ours && !written.has(f)) fs.rmSync(join(dir, f), { force: true });
  }
  return { files: names.map((f) => join(dir, f)), totalSize, sharded: n > 1 };
}
