import { mkdtempSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Teardown } from './teardown.js';

/** A fresh temp dir, /tmp/ramboot-<prefix>-XXXXXX, removed when the test ends (pass or fail). */
export function tempDir(t: Pick<Teardown, 'teardown'>, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `ramboot-${prefix}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The same for code without a test to tie it to (benchmarks, runners): the caller cleans up. */
export async function makeTempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `ramboot-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}
