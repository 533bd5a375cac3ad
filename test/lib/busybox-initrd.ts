import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { cpioBuffer } from '../../builder/cpio.js';

/**
 * A tiny initrd (newc cpio, gzip) made of the static /bin/busybox and an /init that mounts
 * proc/sys/dev, prints `<marker> cmdline=<contents of /proc/cmdline>` on the console, runs the caller's
 * extra shell lines, and powers off. Same inputs -> same bytes.
 */
export const DEFAULT_INITRD_MARKER = 'RAMBOOT-TEST-INITRD-OK';
const MARKER_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface BusyboxInitrdOptions {
  /** Printed first on the marker line (letters, digits, ".", "_", "-"). */
  marker?: string;
  /** Shell lines run after the marker line, before power-off (test code, not user input). */
  extraLines?: readonly string[];
  /** After the extra lines: 'poweroff' (default) or 'hang' (sleep forever; the test stops QEMU). */
  end?: 'poweroff' | 'hang';
  /** busybox binary to embed (default /bin/busybox from busybox-static; must be static). */
  busyboxPath?: string;
}

/** Throws unless `elf` is an x86-64 ELF executable without a program interpreter (i.e. static). */
export function assertStaticElf(elf: Buffer, what: string): void {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${what} is not an ELF file`);
  if (elf[4] !== 2 || elf[5] !== 1) throw new Error(`${what} is not a 64-bit little-endian ELF`);
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > elf.length) break;
    if (elf.readUInt32LE(off) === 3) {
      throw new Error(`${what} is dynamically linked; install busybox-static (it provides a static /bin/busybox)`);
    }
  }
}

export function initScript(opts: BusyboxInitrdOptions = {}): string {
  const marker = opts.marker ?? DEFAULT_INITRD_MARKER;
  if (!MARKER_RE.test(marker)) throw new Error(`bad initrd marker "${marker}"`);
  const end = opts.end ?? 'poweroff';
  return [
    '#!/bin/sh',
    'export PATH=/bin',
    '/bin/busybox mount -t proc proc /proc',
    '/bin/busybox mount -t sysfs sysfs /sys',
    '/bin/busybox mount -t devtmpfs devtmpfs /dev',
    '/bin/busybox --install -s /bin',
    // keep kernel messages from interleaving with our lines
    'dmesg -n 1',
    `echo "${marker} cmdline=$(cat /proc/cmdline)"`,
    ...(opts.extraLines ?? []),
    end === 'poweroff' ? 'poweroff -f' : 'while :; do sleep 3600; done',
    // if poweroff failed, exiting init panics the kernel; with panic=-1 and -no-reboot QEMU exits
    '',
  ].join('\n');
}

/** The initrd as a Buffer (gzip-compressed newc cpio). */
export function buildBusyboxInitrd(opts: BusyboxInitrdOptions = {}): Buffer {
  const busyboxPath = opts.busyboxPath ?? '/bin/busybox';
  const busybox = readFileSync(busyboxPath);
  assertStaticElf(busybox, busyboxPath);
  const entries: Parameters<typeof cpioBuffer>[0] = [
    { type: 'dir', path: 'bin', mode: 0o755 },
    { type: 'data', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { type: 'symlink', path: 'bin/sh', target: 'busybox' },
    { type: 'dir', path: 'dev', mode: 0o755 },
    { type: 'char', path: 'dev/console', major: 5, minor: 1, mode: 0o600 },
    { type: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
    { type: 'data', path: 'init', data: Buffer.from(initScript(opts), 'utf8'), mode: 0o755 },
    { type: 'dir', path: 'proc', mode: 0o755 },
    { type: 'dir', path: 'root', mode: 0o700 },
    { type: 'dir', path: 'sys', mode: 0o755 },
    { type: 'dir', path: 'tmp', mode: 0o1777 },
  ];
  return gzipSync(cpioBuffer(entries, 0), { level: 9 });
}

/** Writes the initrd to `path`; returns its bytes. */
export async function writeBusyboxInitrd(path: string, opts: BusyboxInitrdOptions = {}): Promise<Buffer> {
  const data = buildBusyboxInitrd(opts);
  await writeFile(path, data);
  return data;
}
