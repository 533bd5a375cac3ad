import { readdir, readFile, rename, rm, mkdir, copyFile } from 'node:fs/promises';
import { join, basename } from 'node:path';
import { runOk } from '../common/run.js';

/**
 * Module trees of Debian's generic kernel kept in the image (paths under lib/modules/<ver>/kernel/),
 * plus whatever they depend on. Kept: every Ethernet NIC, SATA/SAS/NVMe/RAID/virtio storage, md/dm,
 * USB host + storage + HID (a console keyboard), filesystems an imaging job meets, crypto, lib.
 * Everything else (graphics, sound, media, wireless, Fibre Channel/iSCSI HBAs, InfiniBand...) goes:
 * the generic kernel's 391 MiB of modules would otherwise be most of the image.
 */
export const KEPT_MODULE_DIRS = [
  'drivers/net/ethernet', 'drivers/net/phy', 'drivers/net/mdio', 'drivers/net/pcs', 'drivers/net/usb',
  'drivers/net/bonding', 'drivers/net/team', 'drivers/net/vmxnet3', 'drivers/net/virtio_net.ko',
  'drivers/net/net_failover.ko', 'drivers/net/mii.ko', 'drivers/net/tun.ko', 'drivers/net/macvlan.ko',
  'drivers/net/dummy.ko', 'drivers/net/veth.ko', 'drivers/net/mdio.ko',
  'drivers/ata', 'drivers/nvme', 'drivers/block', 'drivers/md', 'drivers/virtio', 'drivers/scsi',
  'drivers/message', 'drivers/cdrom', 'drivers/usb/host', 'drivers/usb/storage', 'drivers/usb/core',
  'drivers/usb/common', 'drivers/hid/usbhid', 'drivers/hid/hid-generic.ko', 'drivers/hid/hid.ko',
  'drivers/input/keyboard', 'drivers/input/serio', 'drivers/pci', 'drivers/char/virtio_console.ko',
  'drivers/char/hw_random', 'drivers/ptp', 'drivers/pps', 'drivers/dca', 'drivers/dma/ioat',
  'drivers/nvmem', 'drivers/firmware/efi',
  'fs/ext4', 'fs/jbd2', 'fs/mbcache.ko', 'fs/xfs', 'fs/btrfs', 'fs/fat', 'fs/exfat', 'fs/nls',
  'fs/squashfs', 'fs/overlayfs', 'fs/autofs', 'fs/isofs', 'fs/udf', 'fs/fuse', 'fs/efivarfs', 'fs/ntfs3',
  'crypto', 'arch/x86/crypto', 'lib',
  'net/8021q', 'net/802', 'net/llc', 'net/bridge/bridge.ko', 'net/packet', 'net/ipv4', 'net/ipv6',
  'net/core', 'net/unix',
];

/** Inside the kept trees, still dropped: Fibre Channel and iSCSI offload HBAs (big, never boot media here). */
export const DROPPED_MODULE_DIRS = [
  'drivers/scsi/lpfc', 'drivers/scsi/qla2xxx', 'drivers/scsi/qla4xxx', 'drivers/scsi/bfa',
  'drivers/scsi/be2iscsi', 'drivers/scsi/bnx2fc', 'drivers/scsi/bnx2i', 'drivers/scsi/csiostor',
  'drivers/scsi/cxgbi', 'drivers/scsi/fcoe', 'drivers/scsi/fnic', 'drivers/scsi/qedf', 'drivers/scsi/qedi',
  'drivers/scsi/snic', 'drivers/scsi/libfc', 'drivers/scsi/aic7xxx', 'drivers/scsi/aic94xx',
  'drivers/scsi/pcmcia', 'drivers/scsi/elx', 'drivers/block/drbd', 'drivers/block/rnbd',
  'drivers/nvme/target', 'drivers/nvme/host/nvme-fc.ko', 'drivers/nvme/host/nvme-rdma.ko',
  'drivers/md/bcache',
];

/** Modules /init loads (when they are modules; built-ins are skipped). */
export const INITRD_MODULES = ['loop', 'squashfs', 'overlay'];

export interface KernelResult {
  version: string;
  vmlinuz: string;
}

/**
 * Unpacks Debian's kernel package (not installed: no dpkg entry, no initramfs-tools run), keeps
 * the pruned module tree in the root at /usr/lib/modules/<ver> and returns the vmlinuz path.
 */
export async function installKernel(kernelDeb: string, workDir: string, rootDir: string): Promise<KernelResult> {
  const x = join(workDir, 'kernel');
  await rm(x, { recursive: true, force: true });
  await mkdir(x, { recursive: true });
  await runOk('dpkg-deb', ['-x', kernelDeb, x]);
  const versions = await readdir(join(x, 'lib', 'modules'));
  const version = versions[0];
  if (versions.length !== 1 || version === undefined) throw new Error(`kernel package has ${versions.length} module trees`);
  const vmlinuz = join(workDir, 'vmlinuz');
  await copyFile(join(x, 'boot', `vmlinuz-${version}`), vmlinuz);
  const modTree = join(x, 'lib', 'modules', version);
  const dest = join(rootDir, 'usr', 'lib', 'modules');
  await mkdir(dest, { recursive: true });
  await rm(join(dest, version), { recursive: true, force: true });
  await rename(modTree, join(dest, version));
  // The package ships no modules.dep: the root's depmod makes one for the full tree, pruning uses
  // it (Debian's System.map is a stub, so symbols cannot be checked otherwise), then depmod again.
  await runOk('chroot', [rootDir, 'depmod', '-a', version]);
  await pruneModules(join(dest, version));
  await runOk('chroot', [rootDir, 'depmod', '-a', version]);
  return { version, vmlinuz };
}

const under = (m: string, dirs: readonly string[]): boolean =>
  dirs.some((d) => m === `kernel/${d}` || m.startsWith(`kernel/${d}/`));

/**
 * Keeps the modules under KEPT_MODULE_DIRS (minus DROPPED_MODULE_DIRS) and everything they depend
 * on (the tree's modules.dep); deletes the rest. Returns [kept, removed] counts.
 */
export async function pruneModules(modTree: string): Promise<[number, number]> {
  const deps = parseModulesDep(await readFile(join(modTree, 'modules.dep'), 'utf8'));
  const keep = new Set<string>();
  const visit = (m: string): void => {
    if (keep.has(m)) return;
    keep.add(m);
    for (const d of deps.get(m) ?? []) visit(d);
  };
  for (const m of deps.keys()) if (under(m, KEPT_MODULE_DIRS) && !under(m, DROPPED_MODULE_DIRS)) visit(m);
  let removed = 0;
  for (const m of deps.keys()) {
    if (!keep.has(m)) {
      await rm(join(modTree, m), { force: true });
      removed++;
    }
  }
  await removeEmptyDirs(join(modTree, 'kernel'));
  return [keep.size, removed];
}

async function removeEmptyDirs(dir: string): Promise<boolean> {
  let empty = true;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory() && (await removeEmptyDirs(join(dir, e.name)))) continue;
    empty = false;
  }
  if (empty) await rm(dir, { recursive: true });
  return empty;
}

function parseModulesDep(text: string): Map<string, string[]> {
  const dep = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const [mod, deps] = line.split(':');
    if (!mod) continue;
    dep.set(mod, (deps ?? '').trim().split(/\s+/).filter((s) => s !== ''));
  }
  return dep;
}

/** The .ko files (with dependencies, dependencies first) /init must load from the initrd. */
export async function initrdModules(rootDir: string, version: string, wanted = INITRD_MODULES): Promise<Array<{ source: string; name: string }>> {
  const base = join(rootDir, 'usr', 'lib', 'modules', version);
  const dep = parseModulesDep(await readFile(join(base, 'modules.dep'), 'utf8'));
  const byName = new Map<string, string>();
  for (const p of dep.keys()) byName.set(basename(p).replace(/\.ko(\.[a-z]+)?$/, '').replace(/-/g, '_'), p);
  const order: string[] = [];
  const visit = (p: string): void => {
    if (order.includes(p)) return;
    for (const d of dep.get(p) ?? []) visit(d);
    order.push(p);
  };
  for (const w of wanted) {
    const p = byName.get(w.replace(/-/g, '_'));
    if (p) visit(p); // absent: built into the kernel
  }
  for (const p of order) {
    if (!p.endsWith('.ko')) throw new Error(`initrd module ${p} is compressed; busybox insmod needs plain .ko files`);
  }
  return order.map((p) => ({ source: join(base, p), name: basename(p) }));
}
