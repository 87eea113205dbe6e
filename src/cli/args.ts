// Small helpers shared by the commands: typed option parsing with errors that name the option.
export class UsageError extends Error { override name = 'UsageError'; }

export function intOpt(v: string | undefined, flag: string, min = 0): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`${flag} must be an integer ≥ ${min}, got "${v}"`);
  return n;
}

export function numOpt(v: string | undefined, flag: string, ok: (x: number) => boolean = () => true, want = 'a number'): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || !ok(n)) throw new UsageError(`${flag} must be ${want}, got "${v}"`);
  return n;
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
