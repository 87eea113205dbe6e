// Model location: a local folder, or a Hub id resolved through the standard HF cache layout
// (HF_HUB_CACHE or HF_HOME/hub → models--org--name/{refs,snapshots,blobs}). Missing files are fetched with
// @huggingface/hub (which writes blobs atomically and links them into snapshots/); HF_HUB_OFFLINE=1 uses the
// cache alone.
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../util/fs.js';

export class ModelNotFoundError extends Error { override name = 'ModelNotFoundError'; }

export interface ResolveOptions {
  revision?: string;
  cacheDir?: string;
  /** Use the cache only (default: HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Default: HF_TOKEN. */
  token?: string;
  /** Injected fetch (tests serve a fake Hub with it). */
  fetch?: typeof fetch;
  /** Fetch and require only config.json (for planning and inspecting without downloading weights). */
  configOnly?: boolean;
  /** Progress of downloads: file name, bytes so far, total bytes (0 when unknown). */
  onProgress?: (file: string, done: number, total: number) => void;
}

const REPO_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/;
const COMMIT = /^[0-9a-f]{40}$/;
/** The files a causal LM needs; weights are added from the listing. */
const WANTED = [
  'config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json',
  'chat_template.jinja', 'model.safetensors.index.json', 'quantize_config.json', 'adapter_config.json',
];

export function hubCacheDir(): string {
  if (process.env.HF_HUB_CACHE) return process.env.HF_HUB_CACHE;
  const home = process.env.HF_HOME ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
  return join(home, 'hub');
}

export function isOffline(opts: ResolveOptions = {}): boolean {
  if (opts.offline !== undefined) return opts.offline;
  const v = (process.env.HF_HUB_OFFLINE ?? '').toLowerCase();
  return v === '1' || v === 'true' || v === 'yes' || v === 'on';
}

/** The snapshot folder of `id` at `revision` in the cache, or null when that revision is not cached. */
export function cachedSnapshot(id: string, revision = 'main', cacheDir = hubCacheDir()): string | null {
  const repo = join(cacheDir, `models--${id.replace('/', '--')}`);
  let commit = revision;
  if (!COMMIT.test(revision)) {
    const ref = join(repo, 'refs', revision);
    if (!existsSync(ref)) return null;
    commit = readFileSync(ref, 'utf8').trim();
  }
  const snap = join(repo, 'snapshots', commit);
  return existsSync(snap) ? snap : null;
}

/** Which needed files a snapshot lacks (config and every weight file). */
export function missingFiles(dir: string): string[] {
  if (!existsSync(join(dir, 'config.json'))) return ['config.json'];
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(join(dir, 'model.safetensors'))) return [];
  if (!existsSync(index)) return ['model.safetensors'];
  let weightMap: Record<string, string>;
  try {
    weightMap = JSON.parse(readFileSync(index, 'utf8')).weight_map;
  } catch (e) {
    throw new ModelNotFoundError(`${index}: ${(e as Error).message}`);
  }
  const shards = new Set(Object.values(weightMap ?? {}));
  return [...shards].filter((s) => !existsSync(join(dir, s)));
}

export async function resolveModelDir(idOrPath: string, opts: ResolveOptions = {}): Promise<string> {
  if (existsSync(idOrPath)) {
    if (!statSync(idOrPath).isDirectory()) throw new ModelNotFoundError(`${idOrPath}: not a folder (give the model folder, not a file)`);
    return idOrPath;
  }
  if (!REPO_ID.test(idOrPath)) throw new ModelNotFoundError(`${idOrPath}: no such folder, and not a Hub id of the form org/name`);
  const revision = opts.revision ?? 'main';
  const cacheDir = opts.cacheDir ?? hubCacheDir();
  const snap = cachedSnapshot(idOrPath, revision, cacheDir);
  const missing = !snap ? ['config.json', 'model weights'] : opts.configOnly ? (existsSync(join(snap, 'config.json')) ? [] : ['config.json']) : missingFiles(snap);
  if (snap && missing.length === 0) return snap;
  if (isOffline(opts)) {
    throw new ModelNotFoundError(`${idOrPath}@${revision}: not in the Hub cache at ${cacheDir} (missing ${missing.join(', ')}) and HF_HUB_OFFLINE is set`);
  }
  return download(idOrPath, revision, cacheDir, opts);
}

async function download(id: string, revision: string, cacheDir: string, opts: ResolveOptions): Promise<string> {
  const hub = await import('@huggingface/hub');
  const accessToken = opts.token ?? process.env.HF_TOKEN ?? undefined;
  const fetchFn = progressFetch(opts.fetch ?? fetch, opts.onProgress);
  const files: string[] = [];
  for await (const f of hub.listFiles({ repo: { type: 'model', name: id }, revision, accessToken, fetch: fetchFn, expand: false })) {
    if (f.type !== 'file') continue;
    if (opts.configOnly ? f.path === 'config.json' : WANTED.includes(f.path) || /^model(-\d{5}-of-\d{5})?\.safetensors$/.test(f.path)) files.push(f.path);
  }
  if (!files.includes('config.json')) throw new ModelNotFoundError(`${id}@${revision}: the repository has no config.json`);
  let snapshot = '';
  for (const path of files) {
    const p = await hub.downloadFileToCacheDir({ repo: { type: 'model', name: id }, path, revision, cacheDir, accessToken, fetch: fetchFn });
    snapshot = dirname(p);
  }
  // Record the ref so that later offline runs find this snapshot (the library links files but writes no refs/).
  if (!COMMIT.test(revision)) {
    const ref = join(cacheDir, `models--${id.replace('/', '--')}`, 'refs', revision);
    mkdirSync(dirname(ref), { recursive: true });   // revisions such as refs/pr/1 nest
    writeFileAtomic(ref, snapshot.split(/[\\/]/).pop()!);
  }
  return snapshot;
}

/** Wrap fetch so that response bodies report their progress as they stream. */
function progressFetch(base: typeof fetch, onProgress?: ResolveOptions['onProgress']): typeof fetch {
  if (!onProgress) return base;
  return (async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
    const res = await base(input, init);
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (!res.body || !/\/resolve\//.test(url)) return res;
    const total = Number(res.headers.get('content-length') ?? 0);
    const file = decodeURIComponent(url.split('/resolve/')[1]?.split('/').slice(1).join('/') ?? url);
    let done = 0;
    const counted = res.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) { done += chunk.byteLength; onProgress(file, done, total); ctl.enqueue(chunk); },
    }));
    return new Response(counted, { status: res.status, statusText: res.statusText, headers: res.headers });
  }) as typeof fetch;
}
