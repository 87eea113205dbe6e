// Options several commands share.
import { loadAddon } from '../backend/cpu/addon.js';
import { intOpt, UsageError } from './args.js';

export function setThreadsOption(v: string | undefined): void {
  const n = intOpt(v, '--threads', 1);
  if (n === undefined) return;
  const addon = loadAddon();
  if (!addon) throw new UsageError('--threads needs the native CPU backend, which is not built (run npm install)');
  addon.setThreads(n);
}
