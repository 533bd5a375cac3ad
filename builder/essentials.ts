import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Last check before the root is packed: things that must never ship, whatever the hooks did.
 * Throws naming the offending files.
 */
export async function checkRootSafe(root: string): Promise<void> {
  const keys = (await readdir(join(root, 'etc', 'ssh')).catch(() => [] as string[]))
    .filter((f) => /^ssh_host_/.test(f));
  if (keys.length) throw new Error(`root tree still holds SSH host keys (${keys.join(', ')}): refusing to ship them`);
}
