import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { readdirSync, rmSync, statSync } from 'node:fs';

/** Repository root (this file lives in <repo>/test/lib/). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Gitignored cache for downloaded kernels etc. */
export const CACHE_DIR = join(REPO_ROOT, '.cache');

/** Where console logs of test VMs/processes go (gitignored). */
export const TEST_LOG_DIR = join(CACHE_DIR, 'test-logs');

const LOG_NAME_RE = /^[A-Za-z0-9._-]{1,100}$/;
const LOG_MAX_AGE_MS = 3 * 24 * 3600 * 1000;
let pruned = false;

/** Deletes test logs older than 3 days (once per process). */
function pruneOldLogs(): void {
  if (pruned) return;
  pruned = true;
  try {
    for (const n of readdirSync(TEST_LOG_DIR)) {
      const p = join(TEST_LOG_DIR, n);
      try {
        if (n.endsWith('.log') && Date.now() - statSync(p).mtimeMs > LOG_MAX_AGE_MS) rmSync(p, { force: true });
      } catch {
        // another process pruned it
      }
    }
  } catch {
    // no log dir yet
  }
}

/** A fresh log file path: <repo>/.cache/test-logs/<name>-<time>-<pid>.log */
export function testLogPath(name: string): string {
  if (!LOG_NAME_RE.test(name)) throw new Error(`bad log name "${name}"`);
  pruneOldLogs();
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  return join(TEST_LOG_DIR, `${name}-${stamp}-${process.pid}.log`);
}
