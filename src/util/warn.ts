// One-time warnings, as transformers' logger.warning_once: the library says a thing once per process (an option
// that has no effect, checkpoint tensors the model does not use) and the host decides where it goes.

export type WarningHandler = (message: string) => void;

const said = new Set<string>();
let handler: WarningHandler = (m) => process.stderr.write(`lowbit: warning: ${m}\n`);

/** Emit `message` unless the same text was already emitted in this process. */
export function warnOnce(message: string): void {
  if (said.has(message)) return;
  said.add(message);
  handler(message);
}

/**
 * Route warnings elsewhere (a logger, a test's array); `null` restores the default (stderr). Returns the previous
 * handler. `reset` forgets what was said, so tests can observe a warning again.
 */
export function setWarningHandler(h: WarningHandler | null, opts: { reset?: boolean } = {}): WarningHandler {
  const prev = handler;
  handler = h ?? ((m) => process.stderr.write(`lowbit: warning: ${m}\n`));
  if (opts.reset) said.clear();
  return prev;
}
