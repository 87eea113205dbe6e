// Small helpers shared by the commands: argument parsing with lowbit's own messages, and typed option values
// with errors that name the option.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { nearest } from '../util/text.js';
import type { OnProgress, Progress } from '../util/progress.js';

export class UsageError extends Error { override name = 'UsageError'; }

export type Options = NonNullable<ParseArgsConfig['options']>;
export type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>>;

/** A negative or fractional number (`-5`, `-0.5`, `-1e3`): a value, never an option. */
const NUMBER = /^-?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
/** What an option looks like (`-x`, `--name`, `--name=v`); "- item" or "-" are ordinary values. */
const OPTION_LIKE = /^--?[A-Za-z][\w-]*(=.*)?$/;

/**
 * node:util parseArgs with lowbit's messages. Node's strict mode rejects `--max-new-tokens -5` as ambiguous and
 * words its errors for programmers; here a negative number is a value (the option's own check then names the
 * range), an unknown option suggests the nearest known one, and every problem is a UsageError naming the option.
 */
export function parseCommand<O extends Options>(command: string, args: string[], options: O, allowPositionals = true): Parsed<O> {
  const { tokens } = parseArgs({ args, options, allowPositionals: true, strict: false, tokens: true });
  const names = Object.keys(options);
  const rewritten: string[] = [];
  const see = `(see lowbit ${command} --help)`;
  for (const t of tokens) {
    if (t.kind === 'option-terminator') { rewritten.push(...args.slice(t.index)); break; }
    if (t.kind === 'positional') {
      if (!allowPositionals) throw new UsageError(`unexpected argument "${t.value}" ${see}`);
      rewritten.push(t.value); continue;
    }
    const spec = Object.hasOwn(options, t.name) ? options[t.name] : undefined;
    if (!spec) {
      const near = nearest(t.name, names);
      throw new UsageError(`unknown option ${t.rawName}${near ? ` (did you mean --${near}?)` : ''} ${see}`);
    }
    if (spec.type === 'boolean') {
      if (t.value !== undefined) throw new UsageError(`${t.rawName} takes no value, got "${t.value}" ${see}`);
      rewritten.push(`--${t.name}`);
    } else {
      if (t.value === undefined) throw new UsageError(`${t.rawName} needs a value ${see}`);
      if (!t.inlineValue && OPTION_LIKE.test(t.value) && !NUMBER.test(t.value)) {
        throw new UsageError(`${t.rawName} needs a value, got the option ${t.value} (write ${t.rawName}=${t.value} if you mean the text) ${see}`);
      }
      // The inline form keeps a leading '-' a value when the strict parse below reads it again.
      rewritten.push(`--${t.name}=${t.value}`);
    }
  }
  return parseArgs({ args: rewritten, options, allowPositionals: true, strict: true });
}

export function intOpt(v: string | undefined, flag: string, min = 0): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new UsageError(`${flag} must be an integer ≥ ${min}, got "${v}"`);
  return n;
}

export function numOpt(v: string | undefined, flag: string, ok: (x: number) => boolean = () => true, want = 'a number'): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || !ok(n)) throw new UsageError(`${flag} must be ${want}, got "${v}"`);
  return n;
}

export const BACKENDS = ['cpu', 'cuda', 'ref'] as const;

/** --backend (or transformers' --device cpu|cuda): one of the backends this build has a name for. */
export function backendOpt(v: string | undefined, device?: string): (typeof BACKENDS)[number] | undefined {
  if (device !== undefined) {
    if (v !== undefined) throw new UsageError('give --device or --backend, not both');
    if (device !== 'cpu' && device !== 'cuda') throw new UsageError(`--device "${device}" is unknown (choose cpu or cuda)`);
    return device;
  }
  if (v === undefined) return undefined;
  if (!(BACKENDS as readonly string[]).includes(v)) throw new UsageError(`--backend "${v}" is unknown (choose ${BACKENDS.join(', ')})`);
  return v as (typeof BACKENDS)[number];
}

export interface RenderOptions<P extends Progress> {
  /** Replaces the task name at the start of the line ("decode, 1 busy process"). */
  label?: string;
  /** Text after the counts (" · 1,234 tokens/s"). */
  detail?: (p: P) => string;
  /** Off a terminal, print nothing (a bar that only matters to a person watching). Default false. */
  ttyOnly?: boolean;
  /** Off a terminal, at most one line per this many milliseconds, and always the last. Default 2000. */
  everyMs?: number;
}

/**
 * The CLI's view of any src/util/progress.ts callback, on stderr: a bar rewritten in place on a terminal ("quantize
 * model.layers.3 [#########.....] 14/22 layers"); elsewhere (a log, a pipe) a line now and then and the last one
 * ("quantize 22/22 layers"), so a long run shows life without flooding the log.
 */
export function renderProgress<P extends Progress = Progress>(opts: RenderOptions<P> = {}): OnProgress<P> {
  const tty = process.stderr.isTTY, every = opts.everyMs ?? 2000;
  if (!tty && opts.ttyOnly) return () => {};
  let last = performance.now();
  return (p) => {
    const finished = p.total > 0 && p.done >= p.total;
    const count = p.unit === 'bytes' ? `${mib(p.done)}${p.total ? ` / ${mib(p.total)}` : ''} MiB` : `${p.done}${p.total ? `/${p.total}` : ''} ${p.unit}`;
    const detail = opts.detail?.(p) ?? '';
    const label = opts.label ?? p.task;
    if (tty) {
      const frac = p.total > 0 ? Math.min(1, p.done / p.total) : 0, w = 24, fill = Math.round(frac * w);
      const item = p.item && !finished ? ` ${p.item}` : '';
      const bar = p.total > 0 ? ` [${'#'.repeat(fill)}${'.'.repeat(w - fill)}]` : '';
      process.stderr.write(`\r${label}${item}${bar} ${count}${detail}\x1b[K${finished ? '\n' : ''}`);
      return;
    }
    const now = performance.now();
    if (!finished && now - last < every) return;
    last = now;
    process.stderr.write(`${label} ${count}${p.item && !finished ? ` · ${p.item}` : ''}${detail}\n`);
  };
}

function mib(bytes: number): string { return (bytes / 2 ** 20).toFixed(1); }
