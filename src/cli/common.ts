// Options several commands share.
import { cpuAvailable, setThreads } from '../backend/cpu/index.js';
import { intOpt, UsageError } from './args.js';

/** --threads N through the library's public thread API (see setThreads in src/backend/cpu/index.ts). */
export function setThreadsOption(v: string | undefined): void {
  const n = intOpt(v, '--threads', 1);
  if (n === undefined) return;
  if (!cpuAvailable()) throw new UsageError('--threads needs the native CPU backend, which is not built (run npm install)');
  if (n > 1024) throw new UsageError(`--threads must be at most 1024, got ${n}`);
  setThreads(n);
}
