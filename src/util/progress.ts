// The one progress interface for long work. Library calls that take a while (a download, quantizing on load, a
// perplexity run, generation) accept `onProgress: (p: Progress) => void` and call it as units finish; the CLI
// renders any of them as a bar on a terminal, or as throttled lines elsewhere (src/cli/args.ts, renderProgress).

export interface Progress {
  /** What is running: 'download', 'quantize', 'perplexity', 'generate'. */
  readonly task: string;
  /** Units finished so far. */
  readonly done: number;
  /** Units in all; 0 when unknown (a download without a Content-Length). */
  readonly total: number;
  /** What a unit is: 'bytes', 'layers', 'windows', 'steps'. */
  readonly unit: string;
  /** The item being worked on or just finished: a file name, a layer name. */
  readonly item?: string;
  /** Milliseconds since the task started. */
  readonly elapsedMs: number;
}

export type OnProgress<P extends Progress = Progress> = (p: P) => void;

/**
 * A reporter for one task: `report(done, item?)` calls `cb` with elapsedMs measured from when the reporter was made.
 * A task that ends short of its total (generation stopping at eos) says so with `report(done, item, done)`: the new
 * total makes that the last report, so a renderer can finish its line. Without a callback it does nothing, so
 * callers need no checks.
 */
export function progressReporter(task: string, unit: string, total: number, cb: OnProgress | undefined): (done: number, item?: string, newTotal?: number) => void {
  if (!cb) return () => {};
  const t0 = performance.now();
  return (done, item, newTotal) => {
    if (newTotal !== undefined) total = newTotal;
    cb({ task, done, total, unit, item, elapsedMs: performance.now() - t0 });
  };
}

/** Throws a TypeError naming `where` unless `cb` is undefined or a function. */
export function checkProgressCallback(cb: unknown, where: string): void {
  if (cb !== undefined && typeof cb !== 'function') throw new TypeError(`${where}: onProgress must be a function, got ${typeof cb}`);
}
