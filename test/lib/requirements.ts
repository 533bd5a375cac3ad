import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Test } from 'tap';

/**
 * What a test may need from the machine. Tests call `requirements(t, [...])` first; when something is
 * missing the test is skipped loudly, except under CI (`CI=true`), where a missing requirement FAILS.
 */
export type Requirement =
  | 'root'
  | 'qemu'
  | 'ipxe'
  | 'ovmf'
  | 'busybox'
  | 'dnsmasq'
  | 'unshare'
  | 'nsenter'
  | 'setpriv'
  | 'ip'
  | 'tun'
  | 'apt-get'
  | 'dpkg'
  | 'ssh-keygen'
  | 'chromium'
  | 'loop';

/** A tap Test (the top-level `t` or a subtest). */
export type RequirementTest = Pick<Test, 'comment' | 'pass' | 'fail'>;

/** First executable called `name` on PATH (plus the sbin dirs, which a non-root PATH may lack). */
export function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const dir of dirs) {
    if (dir === '') continue;
    const p = join(dir, name);
    try {
      if (statSync(p).isFile()) {
        accessSync(p, constants.X_OK);
        return p;
      }
    } catch {
      // not here
    }
  }
  return undefined;
}

function needExecutable(name: string, pkg: string): string | undefined {
  return findExecutable(name) ? undefined : `${name} not found on PATH (Debian package ${pkg})`;
}

function needFile(path: string, pkg: string): string | undefined {
  return existsSync(path) ? undefined : `${path} is missing (Debian package ${pkg})`;
}

/** Returns why `req` is not met, or undefined when it is. */
export function checkRequirement(req: Requirement): string | undefined {
  switch (req) {
    case 'root':
      return process.getuid?.() === 0 ? undefined : `needs root (running as uid ${process.getuid?.() ?? '?'})`;
    case 'qemu':
      return needExecutable('qemu-system-x86_64', 'qemu-system-x86');
    case 'ipxe':
      return needFile('/usr/lib/ipxe/undionly.kpxe', 'ipxe') ?? needFile('/usr/lib/ipxe/snponly.efi', 'ipxe');
    case 'ovmf':
      return needFile('/usr/share/ovmf/OVMF.fd', 'ovmf');
    case 'busybox':
      return needFile('/bin/busybox', 'busybox-static');
    case 'dnsmasq':
      return needExecutable('dnsmasq', 'dnsmasq-base');
    case 'unshare':
      return needExecutable('unshare', 'util-linux');
    case 'nsenter':
      return needExecutable('nsenter', 'util-linux');
    case 'setpriv':
      return needExecutable('setpriv', 'util-linux');
    case 'ip':
      return needExecutable('ip', 'iproute2');
    case 'tun':
      return needFile('/dev/net/tun', 'kernel tun module');
    case 'apt-get':
      return needExecutable('apt-get', 'apt');
    case 'dpkg':
      return needExecutable('dpkg', 'dpkg');
    case 'ssh-keygen':
      return needExecutable('ssh-keygen', 'openssh-client');
    case 'chromium':
      // Debian's browser, driven by playwright-core (which downloads no browser of its own)
      return needFile('/usr/bin/chromium', 'chromium');
    case 'loop':
      // loop devices with partitions (the transfer tests' source disk is installed through one)
      return needFile('/dev/loop-control', 'kernel loop module') ?? needExecutable('losetup', 'mount') ?? needExecutable('partx', 'util-linux');
  }
}

/** Reasons for every requirement in `reqs` that is not met (empty when all are met). */
export function missingRequirements(reqs: readonly Requirement[]): string[] {
  const out: string[] = [];
  for (const r of reqs) {
    const why = checkRequirement(r);
    if (why !== undefined) out.push(why);
  }
  return out;
}

export function isCI(): boolean {
  return process.env['CI'] === 'true';
}

/**
 * Checks `reqs`. Returns true when all are met. Otherwise: outside CI the test is skipped with a loud
 * comment; under CI=true a failing assertion is recorded. Either way false is returned and the caller
 * must return without running the test body:
 *
 *   if (!requirements(t, ['root', 'qemu'])) return;
 */
export function requirements(t: RequirementTest, reqs: readonly Requirement[]): boolean {
  return reportMissing(t, missingRequirements(reqs));
}

/** The reporting half of `requirements`: true when `missing` is empty, else skip (or fail under CI). */
export function reportMissing(t: RequirementTest, missing: readonly string[]): boolean {
  if (missing.length === 0) return true;
  const reason = missing.join('; ');
  if (isCI()) {
    t.fail(`missing test requirement under CI=true: ${reason}`);
  } else {
    t.comment(`!!!!! SKIPPING: missing test requirement: ${reason}`);
    t.comment('!!!!! (under CI=true this is a failure; run scripts/setup-system.sh as root to install)');
    t.pass(`missing requirement: ${reason}`, { skip: reason });
  }
  return false;
}

/** Executables a test needs beyond the named requirements: `[{ exe: 'mksquashfs', pkg: 'squashfs-tools' }]`. */
export function needExecutables(t: RequirementTest, tools: ReadonlyArray<{ exe: string; pkg: string }>): boolean {
  return reportMissing(t, tools.filter((x) => !findExecutable(x.exe)).map((x) => `${x.exe} not found on PATH (Debian package ${x.pkg})`));
}
