// Small helpers shared by the commands: argument parsing with lowbit's own messages, and typed option values
// with errors that name the option.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { nearest } from '../util/text.js';

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

export const BACKENDS = ['cpu', 'ref'] as const;

/** --backend: one of the backends this build has a name for. */
export function backendOpt(v: string | undefined): (typeof BACKENDS)[number] | undefined {
  if (v === undefined) return undefined;
  if (!(BACKENDS as readonly string[]).includes(v)) throw new UsageError(`--backend "${v}" is unknown (choose ${BACKENDS.join(' or ')})`);
  return v as (typeof BACKENDS)[number];
}

/** A one-line progress bar on stderr (only on a terminal). */
export function progressBar(label: string): (done: number, total: number) => void {
  if (!process.stderr.isTTY) return () => {};
  return (done, total) => {
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const w = 30, fill = Math.round(frac * w);
    process.stderr.write(`\r${label} [${'#'.repeat(fill)}${'.'.repeat(w - fill)}] ${(frac * 100).toFixed(0)}%${frac >= 1 ? '\n' : ''}`);
  };
}
