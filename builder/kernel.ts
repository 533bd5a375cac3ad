import { readdir, readFile, rename, rm, mkdir, copyFile } from 'node:fs/promises';
import { join, basename } from 'node:path';
import { runOk } from './run.js';

/**
 * Module trees of Debian's generic kernel left out of the image (paths under
 * lib/modules/<ver>/kernel/). Kept: every NIC and storage driver, filesystems, md/dm, crypto,
 * USB host + HID (a console keyboard), netfilter-free networking. Dropped: graphics, sound, media,
 * wireless, bluetooth, staging, InfiniBand, industrial I/O and other things an imaging OS never uses.
 */
export const PRUNED_MODULE_DIRS = [
  'drivers/gpu', 'drivers/media', 'drivers/staging', 'drivers/infiniband', 'drivers/iio',
  'drivers/net/wireless', 'drivers/net/can', 'drivers/net/wwan', 'drivers/net/ieee802154',
  'drivers/bluetooth', 'drivers/isdn', 'drivers/input/touchscreen', 'drivers/input/joystick',
  'drivers/input/tablet', 'drivers/input/misc', 'drivers/mtd', 'drivers/nfc',
  'drivers/w1', 'drivers/comedi', 'drivers/video', 'drivers/usb/gadget',
  'drivers/usb/serial', 'drivers/usb/misc', 'drivers/gnss', 'drivers/fpga', 'drivers/thunderbolt', 'drivers/platform/chrome',
  'drivers/platform/surface', 'drivers/hid/intel-ish-hid', 'drivers/atm', 'drivers/net/hamradio', 'drivers/net/arcnet', 'drivers/net/fddi',
  'drivers/net/ppp', 'drivers/net/slip', 'drivers/net/plip', 'drivers/net/wan', 'drivers/net/dsa',
  'drivers/char/tpm', 'drivers/char/ipmi', 'drivers/edac', 'drivers/memstick', 'drivers/mmc',
  'drivers/ptp/ptp_ocp.ko', 'drivers/soundwire', 'drivers/ntb', 'drivers/vdpa', 'drivers/vhost',
  'drivers/uio', 'drivers/xen', 'drivers/hv', 'drivers/accel', 'drivers/dma/idxd',
  'sound', 'net/wireless', 'net/mac80211', 'net/bluetooth', 'net/netfilter', 'net/ipv4/netfilter',
  'net/ipv6/netfilter', 'net/bridge/netfilter', 'net/sched', 'net/mac802154', 'net/ieee802154',
  'net/nfc', 'net/rxrpc', 'net/sunrpc', 'net/ceph', 'net/rds', 'net/sctp', 'net/tipc', 'net/netrom',
  'net/rose', 'net/ax25', 'net/atm', 'net/can', 'net/openvswitch', 'net/mpls', 'net/batman-adv',
  'fs/nfs', 'fs/nfsd', 'fs/ceph', 'fs/smb', 'fs/cifs', 'fs/ocfs2', 'fs/gfs2', 'fs/afs', 'fs/orangefs',
  'fs/coda', 'fs/9p', 'fs/dlm', 'fs/lockd', 'fs/nfs_common', 'fs/ntfs3', 'fs/ubifs', 'fs/jffs2',
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
  await pruneModules(modTree);
  const dest = join(rootDir, 'usr', 'lib', 'modules');
  await mkdir(dest, { recursive: true });
  await rm(join(dest, version), { recursive: true, force: true });
  await rename(modTree, join(dest, version));
  // Debian's System.map is a stub, so depmod cannot check symbols: pruneModules used the package's
  // own modules.dep to drop every module that needed a pruned one.
  await runOk('chroot', [rootDir, 'depmod', '-a', version]);
  return { version, vmlinuz };
}

/**
 * Removes PRUNED_MODULE_DIRS and, using the kernel's modules.dep, every remaining module that
 * depends (directly or not) on a removed one. Returns how many modules were removed.
 */
export async function pruneModules(modTree: string): Promise<number> {
  const deps = parseModulesDep(await readFile(join(modTree, 'modules.dep'), 'utf8'));
  const gone = new Set<string>();
  for (const m of deps.keys()) {
    if (PRUNED_MODULE_DIRS.some((d) => m === `kernel/${d}` || m.startsWith(`kernel/${d}/`))) gone.add(m);
  }
  let changed = true;
  while (changed) {
    changed = false;
    for (const [m, ds] of deps) {
      if (!gone.has(m) && ds.some((d) => gone.has(d))) {
        gone.add(m);
        changed = true;
      }
    }
  }
  for (const m of gone) await rm(join(modTree, m), { force: true });
  for (const d of PRUNED_MODULE_DIRS) await rm(join(modTree, 'kernel', d), { recursive: true, force: true });
  return gone.size;
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
