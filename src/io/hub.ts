// Model location: a local folder, or a Hub id resolved through the standard HF cache layout
// (HF_HUB_CACHE or HF_HOME/hub → models--org--name/{refs,snapshots,blobs}). Missing files are fetched with
// @huggingface/hub (which writes blobs atomically and links them into snapshots/); HF_HUB_OFFLINE=1 uses the
// cache alone. A file that a cached commit lacks is recorded as huggingface_hub does, by an empty
// models--org--name/.no_exist/<commit>/<file>, so that later loads do not ask the Hub again.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { probePath, readTextFile, writeFileAtomic } from '../util/fs.js';
import { warnOnce } from '../util/warn.js';
import { otherSafetensorsFiles, parseIndex } from './checkpoint.js';
import { checkProgressCallback, progressReporter, type OnProgress } from '../util/progress.js';

export class ModelNotFoundError extends Error { override name = 'ModelNotFoundError'; }

/**
 * The Hub could not provide a model that is not on disk: unreachable (`status` undefined), refused (401/403), not
 * found (404), or another HTTP failure. The message names the id and what to try instead.
 */
export class HubError extends ModelNotFoundError {
  override name = 'HubError';
  constructor(readonly id: string, readonly revision: string, message: string, readonly status?: number, options?: { cause?: unknown }) {
    super(message, options);
  }
}

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
  /**
   * Progress of long work (src/util/progress.ts): downloads report task 'download' in 'bytes' with the file as the
   * item (total 0 when the server sends no length); fromPretrained adds 'quantize' in 'layers'.
   */
  onProgress?: OnProgress;
  /**
   * Milliseconds allowed for asking the Hub for the tokenizer files that a cached snapshot lacks (default 10,000);
   * past it the cached copy is used as it is, with a warning. Downloads of a model not in the cache have no limit.
   */
  completionTimeoutMs?: number;
}

const COMPLETION_TIMEOUT_MS = 10_000;

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
    commit = readTextFile(ref, (m) => new ModelNotFoundError(m)).trim();
  }
  const snap = join(repo, 'snapshots', commit);
  return existsSync(snap) ? snap : null;
}

/**
 * Which needed files a snapshot lacks (config and every weight file). The index is read by the checkpoint loader's
 * rules (parseIndex): a FIFO, a malformed index or a shard name that is not a plain file name is a CheckpointError.
 */
export function missingFiles(dir: string): string[] {
  if (!existsSync(join(dir, 'config.json'))) return ['config.json'];
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(join(dir, 'model.safetensors'))) return [];
  // AutoGPTQ's gptq_model-4bit-128g.safetensors: loadStateDict takes a folder's one other safetensors file.
  if (!existsSync(index)) return otherSafetensorsFiles(dir).length ? [] : ['model.safetensors'];
  const shards = new Set(parseIndex(index).values());
  return [...shards].filter((s) => !existsSync(join(dir, s)));
}

/** huggingface_hub's record that `file` does not exist at `commit`: models--org--name/.no_exist/<commit>/<file>. */
function noExistMarker(cacheDir: string, id: string, commit: string, file: string): string {
  return join(cacheDir, `models--${id.replace('/', '--')}`, '.no_exist', commit, file);
}

/** What a relative path was resolved against, for messages about a name that was not found on disk. */
function whereRelative(path: string): string {
  return isAbsolute(path) ? '' : ` (a relative path is resolved against the current directory, ${process.cwd()})`;
}

export async function resolveModelDir(idOrPath: string, opts: ResolveOptions = {}): Promise<string> {
  checkProgressCallback(opts.onProgress, 'resolveModelDir');
  // Anything on disk at this path, even a broken symlink, is the user's local model: it always wins over a Hub id.
  const local = probePath(idOrPath);
  if (local.kind === 'dir') return idOrPath;
  if (local.kind === 'file') throw new ModelNotFoundError(`${idOrPath}: not a folder (give the model folder, not a file)`);
  if (local.kind === 'bad') throw new ModelNotFoundError(`${idOrPath}: ${local.problem}`);
  if (!REPO_ID.test(idOrPath)) {
    throw new ModelNotFoundError(`${idOrPath}: no such folder${whereRelative(idOrPath)}, and not a Hub id of the form org/name`);
  }
  const revision = opts.revision ?? 'main';
  const cacheDir = opts.cacheDir ?? hubCacheDir();
  const snap = cachedSnapshot(idOrPath, revision, cacheDir);
  const missing = !snap ? ['config.json', 'model weights'] : opts.configOnly ? (existsSync(join(snap, 'config.json')) ? [] : ['config.json']) : missingFiles(snap);
  if (snap && missing.length === 0) {
    if (!opts.configOnly && !isOffline(opts) && !existsSync(join(snap, 'tokenizer.json'))) await completeTokenizer(idOrPath, snap, cacheDir, opts);
    return snap;
  }
  if (isOffline(opts)) {
    throw new ModelNotFoundError(`${idOrPath}@${revision}: not in the Hub cache at ${cacheDir} (missing ${missing.join(', ')}) and HF_HUB_OFFLINE is set`);
  }
  try {
    return await download(idOrPath, revision, cacheDir, opts);
  } catch (e) {
    throw hubFailure(e, idOrPath, revision, cacheDir, snap !== null);
  }
}

/**
 * Turns a failed Hub call into a HubError that names the id and what to try. Errors that are not about the Hub (a
 * cache folder that cannot be written) pass through unchanged.
 */
function hubFailure(e: unknown, id: string, revision: string, cacheDir: string, cached: boolean): unknown {
  if (e instanceof ModelNotFoundError) return e;
  const status = (e as { statusCode?: unknown })?.statusCode;
  let what: string;
  if (typeof status === 'number') {
    const detail = (e as Error).message.split('. URL:')[0];
    what = status === 401 || status === 403
      ? `the Hugging Face Hub refused access (HTTP ${status}: ${detail}). A private or gated model needs HF_TOKEN; the Hub also answers ${status} for a repository that does not exist`
      : status === 404
        ? `the Hugging Face Hub has no repository ${id} with a revision ${revision} (HTTP 404: ${detail}); check the spelling`
        : `the Hugging Face Hub answered HTTP ${status}: ${detail}`;
  } else if (e instanceof TypeError || (e as Error)?.name === 'AbortError') {
    // undici's fetch reports every network failure as TypeError('fetch failed') with the reason in `cause`.
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message;
    what = `the Hugging Face Hub could not be reached (${(e as Error).message}${why ? `: ${why}` : ''})`;
  } else {
    return e;
  }
  const cwd = process.cwd();
  const message = `${id}@${revision}: ${what}. `
    + `"${id}" is not a folder in the current directory (${cwd}), so it was taken for a Hub id. To load it anyway: `
    + `give the path of a local model folder (a relative path is resolved against ${cwd}); `
    + `or set HF_HUB_OFFLINE=1 to use a copy in the Hub cache at ${cacheDir}${cached ? ' (the copy there is incomplete)' : ' (there is none yet)'}; `
    + 'or check the network connection and HF_TOKEN.';
  return new HubError(id, revision, message, typeof status === 'number' ? status : undefined, { cause: e });
}

type Hub = typeof import('@huggingface/hub');

function isWanted(path: string, configOnly: boolean | undefined): boolean {
  return configOnly ? path === 'config.json' : WANTED.includes(path) || /^model(-\d{5}-of-\d{5})?\.safetensors$/.test(path);
}

/** Downloads `files` of `id` at `commit` into that commit's snapshot folder; returns the folder. */
async function downloadAt(hub: Hub, id: string, commit: string, files: string[], cacheDir: string, opts: ResolveOptions): Promise<string> {
  const accessToken = opts.token ?? process.env.HF_TOKEN ?? undefined;
  const fetchFn = progressFetch(opts.fetch ?? fetch, opts.onProgress);
  let snapshot = join(cacheDir, `models--${id.replace('/', '--')}`, 'snapshots', commit);
  for (const path of files) {
    const p = await hub.downloadFileToCacheDir({ repo: { type: 'model', name: id }, path, revision: commit, cacheDir, accessToken, fetch: fetchFn });
    snapshot = dirname(p);
  }
  return snapshot;
}

async function listWanted(hub: Hub, id: string, commit: string, opts: ResolveOptions): Promise<string[]> {
  const accessToken = opts.token ?? process.env.HF_TOKEN ?? undefined;
  const files: string[] = [], other: string[] = [];
  for await (const f of hub.listFiles({ repo: { type: 'model', name: id }, revision: commit, accessToken, fetch: opts.fetch ?? fetch, expand: false })) {
    if (f.type !== 'file') continue;
    if (isWanted(f.path, opts.configOnly)) files.push(f.path);
    else if (/^[^/]+\.safetensors$/.test(f.path)) other.push(f.path);
  }
  // A repository with neither model.safetensors nor an index but one other safetensors file (AutoGPTQ names it
  // gptq_model-4bit-128g.safetensors) is loaded from that file, as loadStateDict does.
  if (!opts.configOnly && other.length === 1 && !files.some((f) => f.endsWith('.safetensors') || f === 'model.safetensors.index.json')) files.push(other[0]);
  return files;
}

async function download(id: string, revision: string, cacheDir: string, opts: ResolveOptions): Promise<string> {
  const hub = await import('@huggingface/hub');
  const accessToken = opts.token ?? process.env.HF_TOKEN ?? undefined;
  // Pin the revision to one commit first. Downloading by branch name files each file under the commit that last
  // changed it (@huggingface/hub's downloadFileToCacheDir uses the file's lastCommit), which scatters one model
  // over several snapshot folders; huggingface_hub and @huggingface/hub's own snapshotDownload pin the commit too.
  const commit = COMMIT.test(revision) ? revision
    : (await hub.modelInfo({ name: id, revision, additionalFields: ['sha'], accessToken, fetch: opts.fetch ?? fetch })).sha;
  if (typeof commit !== 'string' || !COMMIT.test(commit)) throw new ModelNotFoundError(`${id}@${revision}: the Hub gave no commit for this revision`);
  const files = await listWanted(hub, id, commit, opts);
  if (!files.includes('config.json')) throw new ModelNotFoundError(`${id}@${revision}: the repository has no config.json`);
  const snapshot = await downloadAt(hub, id, commit, files, cacheDir, opts);
  // Record the ref so that later offline runs find this snapshot (the library links files but writes no refs/).
  if (!COMMIT.test(revision)) {
    const ref = join(cacheDir, `models--${id.replace('/', '--')}`, 'refs', revision);
    mkdirSync(dirname(ref), { recursive: true });   // revisions such as refs/pr/1 nest
    writeFileAtomic(ref, commit);
  }
  return snapshot;
}

/**
 * A snapshot with weights but no tokenizer.json may come from a download that fetched weights only: ask the Hub,
 * once and within `completionTimeoutMs`, for the wanted files the repository has at that same commit. Afterwards a
 * `.no_exist` marker records a tokenizer.json still missing, so later loads make no request: the repository has none
 * at that commit (facebook/opt-*), or the Hub could not be asked (then the warning names the marker to remove to
 * ask again). The cached copy serves either way.
 */
async function completeTokenizer(id: string, snap: string, cacheDir: string, opts: ResolveOptions): Promise<void> {
  const commit = basename(snap);
  const marker = noExistMarker(cacheDir, id, commit, 'tokenizer.json');
  if (existsSync(marker)) return;
  const ms = opts.completionTimeoutMs ?? COMPLETION_TIMEOUT_MS;
  if (typeof ms !== 'number' || !(ms > 0)) throw new TypeError(`resolveModelDir: completionTimeoutMs must be a number > 0, got ${JSON.stringify(ms)}`);
  let failure: string | null = null;
  try {
    await withTimeout(ms, opts.fetch ?? fetch, (fetchFn) => fetchMissing(id, commit, snap, cacheDir, { ...opts, fetch: fetchFn }));
  } catch (e) {
    failure = (e as Error)?.message ?? String(e);
  }
  if (existsSync(join(snap, 'tokenizer.json'))) return;
  try {
    mkdirSync(dirname(marker), { recursive: true });
    writeFileSync(marker, '');
  } catch { /* a read-only cache: the next load asks again */ }
  if (failure !== null) {
    warnOnce(`${id}: the cached copy at ${snap} has no tokenizer.json and the Hub could not be asked for one (${failure}); using the cached copy as it is. `
      + `Later loads will not ask again: remove ${marker} to retry`);
  }
}

/**
 * Runs `work` with a fetch whose requests are aborted after `ms` milliseconds, and gives up at that moment even if
 * an injected fetch ignores the abort. A ref'd timer, unlike AbortSignal.timeout's, keeps the process alive until
 * then, so a fetch that holds no socket cannot let Node exit with the load still pending.
 */
async function withTimeout<T>(ms: number, base: typeof fetch, work: (fetchFn: typeof fetch) => Promise<T>): Promise<T> {
  const ctl = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const e = new Error(`the Hub did not answer within ${ms} ms`);
      e.name = 'TimeoutError';
      ctl.abort(e);
      reject(e);
    }, ms);
  });
  const fetchFn = ((input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) =>
    base(input, { ...init, signal: init?.signal ? eitherSignal(init.signal, ctl.signal) : ctl.signal })) as typeof fetch;
  try {
    return await Promise.race([work(fetchFn), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** A signal that aborts when either does (AbortSignal.any, which Node 20.0–20.2 lack). */
function eitherSignal(a: AbortSignal, b: AbortSignal): AbortSignal {
  const ctl = new AbortController();
  for (const s of [a, b]) {
    if (s.aborted) { ctl.abort(s.reason); break; }
    s.addEventListener('abort', () => ctl.abort(s.reason), { once: true, signal: ctl.signal });
  }
  return ctl.signal;
}

/** Adds the wanted files that the repository has at `commit` and the snapshot `snap` lacks. */
async function fetchMissing(id: string, commit: string, snap: string, cacheDir: string, opts: ResolveOptions): Promise<void> {
  const hub = await import('@huggingface/hub');
  const files = (await listWanted(hub, id, commit, opts)).filter((f) => !existsSync(join(snap, f)));
  if (files.length) await downloadAt(hub, id, commit, files, cacheDir, opts);
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
    const report = progressReporter('download', 'bytes', total, onProgress);
    const counted = res.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) { done += chunk.byteLength; report(done, file); ctl.enqueue(chunk); },
    }));
    return new Response(counted, { status: res.status, statusText: res.statusText, headers: res.headers });
  }) as typeof fetch;
}
