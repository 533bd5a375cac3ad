import { copyFile, mkdir, symlink, rm, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const LEAN_DIR = fileURLToPath(new URL('../boot-assets/lean', import.meta.url));

/**
 * The lean flavour has no cloud-init: install ramboot-nocloud-lite, which reads the same NoCloud
 * seed for root's SSH keys and the hostname, and enable it.
 */
export async function installNocloudLite(root: string): Promise<void> {
  const sbin = join(root, 'usr', 'local', 'sbin');
  await mkdir(sbin, { recursive: true });
  await copyFile(join(LEAN_DIR, 'ramboot-nocloud-lite'), join(sbin, 'ramboot-nocloud-lite'));
  await chmod(join(sbin, 'ramboot-nocloud-lite'), 0o755);
  const units = join(root, 'etc', 'systemd', 'system');
  await copyFile(join(LEAN_DIR, 'ramboot-nocloud-lite.service'), join(units, 'ramboot-nocloud-lite.service'));
  const wants = join(units, 'multi-user.target.wants');
  await mkdir(wants, { recursive: true });
  await rm(join(wants, 'ramboot-nocloud-lite.service'), { force: true });
  await symlink('/etc/systemd/system/ramboot-nocloud-lite.service', join(wants, 'ramboot-nocloud-lite.service'));
}
