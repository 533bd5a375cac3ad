import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

/** Repository root (this file lives in <repo>/test/lib/). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Gitignored cache for downloaded kernels etc. */
export const CACHE_DIR = join(REPO_ROOT, '.cache');

/** Where console logs of test VMs/processes go (gitignored). */
export const TEST_LOG_DIR = join(CACHE_DIR, 'test-logs');
