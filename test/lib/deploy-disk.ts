import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildBusyboxInitrd } from './busybox-initrd.js';
import { CACHE_DIR } from './paths.js';
import { findExecutable } from './requirements.js';
import { run } from './run.js';
import { ensureTestKernel } from './test-kernel.js';

/**
 * A raw disk image that both SeaBIOS and OVMF boot, as the thing a deploy writes in tests:
 *
 *   - GPT, one FAT partition from 1 MiB to the end. It is the EFI System Partition (type EF00) and,
 *     for BIOS, marked "legacy BIOS bootable" (GPT attribute bit 2), which syslinux's gptmbr.bin (in
 *     the protective MBR's boot code) looks for.
 *   - UEFI: systemd-boot as EFI/BOOT/BOOTX64.EFI (the removable-media path firmware tries without
 *     boot variables) with one loader entry.
 *   - BIOS: syslinux's boot sector + ldlinux.sys/ldlinux.c32 installed onto the FAT through mtools
 *     (`syslinux --offset`), with syslinux.cfg.
 *   - Both boot the test kernel (ensureTestKernel) with a busybox initrd that prints
 *     `<marker> cmdline=...` on ttyS0 and powers off. The command line carries
 *     `ramboot.loader=syslinux|systemd-boot`, so a test sees which path booted.
 *   - `RAMBOOT-DEPLOY-DISK.TXT` on the FAT holds the marker (tests recognise the disk by it); there
 *     is no Linux root (no /etc/fstab), so the deploy agent skips ramboot-fix on it.
 *
 * Everything is written with sgdisk, dd and mtools into a plain file: no loop device, no root.
 * Cached in <repo>/.cache/deploy-disk/<hash of every input>.img; concurrent callers each build in
 * their own temp dir and rename into place (same inputs, same meaning: whichever rename lands last
 * wins, readers keep the inode they opened). Treat the result as read-only (boot it with
 * snapshot=on, copy it before writing).
 */
export const DEPLOY_DISK_DIR = join(CACHE_DIR, 'deploy-disk');
/** Bumped whenever the recipe below changes, so older cached images are not reused. */
const RECIPE = 'deploy-disk-v1';
const MARKER_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const STALE_TMP_MS = 60 * 60 * 1000;
/** The partition starts at 1 MiB (sector 2048), the usual alignment. */
const PART_START_SECTOR = 2048;
const PART_OFFSET = PART_START_SECTOR * 512;

export const GPTMBR = '/usr/lib/syslinux/mbr/gptmbr.bin';
export const SYSTEMD_BOOT_EFI = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
/** Name of the marker file on the FAT. */
export const DEPLOY_DISK_MARKER_FILE = 'RAMBOOT-DEPLOY-DISK.TXT';

export interface DeployDiskOptions {
  /** Printed by the initrd (`<marker> cmdline=...`) and stored in RAMBOOT-DEPLOY-DISK.TXT. */
  marker: string;
  /** Image size in MiB (default 64; at least 40: FAT + kernel + initrd + GPT). */
  sizeMiB?: number;
  /** Cache directory (the helper's own tests); default .cache/deploy-disk. */
  cacheDir?: string;
}

/** Host tools this helper needs, as missing-requirement reasons (empty when all are there). */
export function deployDiskMissing(): string[] {
  const out: string[] = [];
  const exe: [string, string][] = [['sgdisk', 'gdisk'], ['mformat', 'mtools'], ['mcopy', 'mtools'], ['mmd', 'mtools'], ['syslinux', 'syslinux'], ['dd', 'coreutils']];
  for (const [name, pkg] of exe) if (findExecutable(name) === undefined) out.push(`${name} not found on PATH (Debian package ${pkg})`);
  if (!existsSync(GPTMBR)) out.push(`${GPTMBR} is missing (Debian package syslinux-common)`);
  if (!existsSync(SYSTEMD_BOOT_EFI)) out.push(`${SYSTEMD_BOOT_EFI} is missing (Debian package systemd-boot-efi)`);
  return out;
}

function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

async function removeStaleTemps(dir: string): Promise<void> {
  for (const n of await readdir(dir)) {
    if (!n.startsWith('.tmp-')) continue;
    const p = join(dir, n);
    try {
      if (Date.now() - (await stat(p)).mtimeMs > STALE_TMP_MS) await rm(p, { recursive: true, force: true });
    } catch {
      // another process is cleaning it
    }
  }
}

/** The kernel command line both loaders pass (`loader` tells a test which path booted). */
function cmdline(loader: 'syslinux' | 'systemd-boot'): string {
  return `console=ttyS0,115200 panic=-1 ramboot.loader=${loader}`;
}

/** Path of the cached image for these options (built on first use). */
export async function buildDeployDisk(opts: DeployDiskOptions): Promise<string> {
  const { marker } = opts;
  const sizeMiB = opts.sizeMiB ?? 64;
  if (!MARKER_RE.test(marker)) throw new Error(`bad deploy disk marker "${marker}"`);
  if (!Number.isInteger(sizeMiB) || sizeMiB < 40 || sizeMiB > 4096) throw new Error(`bad deploy disk size ${sizeMiB} MiB (40..4096)`);
  const missing = deployDiskMissing();
  if (missing.length > 0) throw new Error(`cannot build the deploy test disk: ${missing.join('; ')}`);

  const kernelPath = await ensureTestKernel();
  const kernel = readFileSync(kernelPath);
  const initrd = buildBusyboxInitrd({ marker });
  const syslinuxPath = findExecutable('syslinux') ?? 'syslinux';
  const key = sha256(
    JSON.stringify({
      recipe: RECIPE,
      marker,
      sizeMiB,
      kernel: sha256(kernel),
      initrd: sha256(initrd),
      gptmbr: sha256(readFileSync(GPTMBR)),
      systemdBoot: sha256(readFileSync(SYSTEMD_BOOT_EFI)),
      // syslinux carries ldlinux.sys and ldlinux.c32 inside its installer binary.
      syslinux: sha256(readFileSync(syslinuxPath)),
    }),
  ).slice(0, 32);
  const cacheDir = opts.cacheDir ?? DEPLOY_DISK_DIR;
  const final = join(cacheDir, `${marker}-${sizeMiB}M-${key}.img`);
  if (existsSync(final)) return final;

  await mkdir(cacheDir, { recursive: true });
  await removeStaleTemps(cacheDir);
  const tmp = await mkdtemp(join(cacheDir, '.tmp-'));
  try {
    const img = join(tmp, 'disk.img');
    const files = join(tmp, 'files');
    await mkdir(files);
    await writeFile(join(files, 'vmlinuz'), kernel);
    await writeFile(join(files, 'initrd.img'), initrd);
    await writeFile(join(files, DEPLOY_DISK_MARKER_FILE), `${marker}\n`);
    await writeFile(join(files, 'syslinux.cfg'), ['DEFAULT deploy', 'PROMPT 0', 'TIMEOUT 0', 'LABEL deploy', '  KERNEL /vmlinuz', `  APPEND initrd=/initrd.img ${cmdline('syslinux')}`, ''].join('\n'));
    await writeFile(join(files, 'loader.conf'), 'default deploy.conf\ntimeout 0\nconsole-mode keep\n');
    await writeFile(join(files, 'deploy.conf'), ['title ramboot deploy test disk', 'linux /vmlinuz', 'initrd /initrd.img', `options ${cmdline('systemd-boot')}`, ''].join('\n'));

    // A sparse file of the full size; GPT with one partition to the end (sgdisk puts the backup
    // header in the last 33 sectors), type EF00 (ESP), attribute bit 2 (legacy BIOS bootable).
    await writeFile(img, '');
    await run(['truncate', '-s', `${sizeMiB}M`, img]);
    await run(['sgdisk', '-n', `1:${PART_START_SECTOR}:0`, '-t', '1:ef00', '-c', '1:RAMBOOT-DEPLOY-TEST', '-A', '1:set:2', img]);
    const info = (await run(['sgdisk', '-i', '1', img])).stdout;
    const last = /^Last sector: (\d+)/m.exec(info)?.[1];
    if (last === undefined) throw new Error(`sgdisk -i 1: no last sector in:\n${info}`);
    const sectors = Number(last) - PART_START_SECTOR + 1;
    // BIOS stage 1: gptmbr.bin in the boot code area (first 440 bytes) of the protective MBR; it
    // loads the boot sector of the partition with the legacy-bootable attribute.
    await run(['dd', `if=${GPTMBR}`, `of=${img}`, 'bs=440', 'count=1', 'conv=notrunc', 'status=none']);

    // FAT on the partition through mtools' img@@offset syntax (no loop device). -H: hidden sectors
    // = partition start, which the FAT boot sector expects; -N: a fixed serial number.
    const at = `${img}@@${PART_OFFSET}`;
    await run(['mformat', '-i', at, '-T', String(sectors), '-h', '64', '-s', '32', '-H', String(PART_START_SECTOR), '-N', '52414d42', '-v', 'RAMBOOT', '::']);
    await run(['mmd', '-i', at, '::EFI', '::EFI/BOOT', '::loader', '::loader/entries']);
    const put = (src: string, dst: string) => run(['mcopy', '-i', at, '-o', src, `::${dst}`]);
    await put(SYSTEMD_BOOT_EFI, 'EFI/BOOT/BOOTX64.EFI');
    await put(join(files, 'loader.conf'), 'loader/loader.conf');
    await put(join(files, 'deploy.conf'), 'loader/entries/deploy.conf');
    await put(join(files, 'vmlinuz'), 'vmlinuz');
    await put(join(files, 'initrd.img'), 'initrd.img');
    await put(join(files, 'syslinux.cfg'), 'syslinux.cfg');
    await put(join(files, DEPLOY_DISK_MARKER_FILE), DEPLOY_DISK_MARKER_FILE);
    // BIOS stage 2: syslinux's FAT boot sector + ldlinux.sys + ldlinux.c32, written through mtools.
    await run(['syslinux', '--offset', String(PART_OFFSET), '--install', img]);

    try {
      await rename(img, final);
    } catch (e) {
      // Another process renamed an identical image into place first: use it.
      if (!existsSync(final)) throw e;
    }
    return final;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
