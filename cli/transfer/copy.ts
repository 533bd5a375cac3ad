import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../common/run.js';
import { parseProgress2, type Progress2 } from './progress2.js';
import { execOk, HostKeyError, RemoteError, tail, type Remote } from './ssh.js';
import { MARKER, MOUNT_ROOT, validDevice, validMountpoint } from './target.js';
import type { Plan, PlannedCopy } from './types.js';

/**
 * Step 4 of `ramboot transfer`: the source pushes each filesystem straight to the target with rsync
 * over SSH, using a one-time key the target accepts only from the source's address and only for
 * rrsync writing under MOUNT_ROOT. The key goes away afterwards on both sides (revokeKey,
 * cleanupSource), whatever happened.
 */

/** The comment that marks the one-time keys in the target's authorized_keys (any run's). */
export const KEY_COMMENT_PREFIX = 'ramboot-transfer-key-';
const AUTH_KEYS = '/root/.ssh/authorized_keys';
const SAFE_PATH = /^\/[A-Za-z0-9._\/-]+$/;

export interface KeyPair {
  dir: string;
  privateKey: string;
  publicKey: string;
  comment: string;
}

/** A fresh ed25519 key pair in a local 0700 temp dir (removed by discardKeyPair). */
export async function makeKeyPair(): Promise<KeyPair> {
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-transfer-'));
  const comment = `${KEY_COMMENT_PREFIX}${randomBytes(6).toString('hex')}`;
  const r = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', join(dir, 'key')]);
  if (r.code !== 0) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`ssh-keygen failed: ${tail(r.stderr)}`);
  }
  return { dir, comment, privateKey: await readFile(join(dir, 'key'), 'utf8'), publicKey: (await readFile(join(dir, 'key.pub'), 'utf8')).trim() };
}

export async function discardKeyPair(k: KeyPair): Promise<void> {
  await rm(k.dir, { recursive: true, force: true });
}

/** The authorized_keys line: only from the source, only rrsync writing into MOUNT_ROOT. */
export function authorizedKeyLine(publicKey: string, sourceIp: string | undefined): string {
  if (!/^ssh-ed25519 [A-Za-z0-9+/=]+ [A-Za-z0-9-]+$/.test(publicKey)) throw new Error('unexpected public key format');
  if (sourceIp !== undefined && isIP(sourceIp) === 0) throw new Error(`not an IP address: ${sourceIp}`);
  const opts = ['restrict', ...(sourceIp ? [`from="${sourceIp}"`] : []), `command="/usr/bin/rrsync -wo -no-lock ${MOUNT_ROOT}"`];
  return `${opts.join(',')} ${publicKey}`;
}

/** Removes every one-time transfer key (this run's and any a killed run left) from the target. */
const REVOKE = String.raw`
f=$1 mark=$2
[ -f "$f" ] || exit 0
grep -q -- "$mark" "$f" || exit 0
t=$(mktemp "$f.XXXXXX") || exit 1
grep -v -- "$mark" "$f" >"$t"
chmod 600 "$t" && mv -f -- "$t" "$f"
`;

const AUTHORIZE = String.raw`
umask 077
mkdir -p -- "$(dirname -- "$2")"
printf '%s\n' "$1" >>"$2"
`;

export async function authorizeKey(target: Remote, line: string, file = AUTH_KEYS): Promise<void> {
  await execOk(target, ['sh', '-s', '--', line, file], 'adding the one-time key', { stdin: AUTHORIZE, timeoutMs: 60_000 });
}

export async function revokeKeys(target: Remote, file = AUTH_KEYS): Promise<void> {
  await execOk(target, ['sh', '-s', '--', file, ` ${KEY_COMMENT_PREFIX}`], 'removing the one-time key', { stdin: REVOKE, timeoutMs: 60_000 });
}

/** The address the source uses toward the target (for from="..."), undefined when it cannot tell. */
export async function sourceAddressToward(source: Remote, targetIp: string): Promise<string | undefined> {
  const r = await source.exec(['ip', '-o', 'route', 'get', targetIp], { timeoutMs: 30_000 });
  const m = / src (\S+)/.exec(r.stdout);
  return m && isIP(m[1]!) ? m[1] : undefined;
}

const PREPARE_SOURCE = String.raw`
umask 077
# What a killed run left: an rsync still using its key (stopped, by pid) and the key itself (the
# target no longer accepts it).
for d in /tmp/ramboot-transfer-key.*; do
  [ -d "$d" ] || continue
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$d/key"; then kill "$(basename -- "$p")" 2>/dev/null; fi
  done
  rm -rf -- "$d"
done
d=$(mktemp -d /tmp/ramboot-transfer-key.XXXXXX) || exit 1
cat >"$d/key"
printf '%s\n' "$1" >"$d/known_hosts"
echo "$d"
`;

/** A 0700 temp dir on the source holding the private key and the target's known_hosts. */
export async function prepareSource(source: Remote, key: KeyPair, knownHosts: string): Promise<string> {
  // the script is an argument and the private key its stdin (never on a command line)
  const r = await execOk(source, ['sh', '-c', PREPARE_SOURCE, 'sh', knownHosts.trim()], 'preparing the source', { stdin: key.privateKey, timeoutMs: 60_000 });
  const dir = r.stdout.trim().split('\n').at(-1) ?? '';
  if (!/^\/tmp\/ramboot-transfer-key\.[A-Za-z0-9]+$/.test(dir)) throw new RemoteError(`preparing the source gave an unexpected temp dir "${dir}"`, 1, r.stderr);
  return dir;
}

export async function cleanupSource(source: Remote, dir: string): Promise<void> {
  if (!/^\/tmp\/ramboot-transfer-key\.[A-Za-z0-9]+$/.test(dir)) return;
  await execOk(source, ['rm', '-rf', '--', dir], 'removing the key from the source', { timeoutMs: 60_000 });
}

export interface RsyncOptions {
  /** Directory on the source to copy (its contents). */
  from: string;
  /** Mount point in the target system ("/", "/home"). */
  mountpoint: string;
  targetIp: string;
  /** The temp dir on the source with key and known_hosts. */
  keyDir: string;
}

/** The rsync the source runs for one filesystem. */
export function rsyncArgv(o: RsyncOptions): string[] {
  for (const p of [o.from, o.keyDir]) if (!SAFE_PATH.test(p) && p !== '/') throw new Error(`unsafe path for rsync: ${p}`);
  if (!validMountpoint(o.mountpoint)) throw new Error(`unsafe mount point: ${o.mountpoint}`);
  if (isIP(o.targetIp) === 0) throw new Error(`not an IP address: ${o.targetIp}`);
  const e = [
    'ssh', '-F', '/dev/null', '-i', `${o.keyDir}/key`, '-o', 'IdentitiesOnly=yes', '-o', `UserKnownHostsFile=${o.keyDir}/known_hosts`,
    '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'StrictHostKeyChecking=yes', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=20',
    '-o', 'ServerAliveInterval=15', '-o', 'Compression=no', '-T', '-x', '-l', 'root',
  ].join(' ');
  const host = isIP(o.targetIp) === 6 ? `[${o.targetIp}]` : o.targetIp;
  const dest = o.mountpoint === '/' ? '/' : `${o.mountpoint}/`;
  return [
    'rsync', '-aHAX', '--numeric-ids', '--sparse', '--partial', '--delete', '--one-file-system',
    '--info=progress2', '--no-inc-recursive', '--outbuf=L',
    ...(o.mountpoint === '/' ? [`--exclude=/${MARKER}`] : []),
    '-e', e,
    o.from.endsWith('/') ? o.from : `${o.from}/`,
    `${host}:${dest}`,
  ];
}

/** Overall progress over several filesystems (weights: their used bytes). */
export interface CopyProgress {
  bytes: number;
  totalBytes: number;
  files: number;
  rate: number;
  etaSeconds: number | undefined;
  percent: number;
  /** The filesystem being copied. */
  mountpoint: string;
}

export class ProgressTracker {
  private doneWeight = 0;
  private doneBytes = 0;
  private doneFiles = 0;
  private current: Progress2 | undefined;
  /** Files checked in the current filesystem (only lines that end a file say it). */
  private checked = 0;
  /** rsync's last ETA for the current filesystem (lines that end a file carry an elapsed time instead). */
  private eta: number | undefined;
  private index = 0;
  readonly totalWeight: number;

  constructor(private readonly copies: readonly PlannedCopy[]) {
    this.totalWeight = copies.reduce((s, c) => s + (c.usedBytes ?? 0), 0);
  }

  start(i: number): void {
    this.index = i;
    this.current = undefined;
    this.checked = 0;
    this.eta = undefined;
  }

  update(p: Progress2): CopyProgress {
    this.current = p;
    if (p.checked !== undefined) this.checked = p.checked;
    if (!p.final) this.eta = p.seconds;
    return this.snapshot();
  }

  /** The filesystem finished: it counts whole. */
  finish(): void {
    this.doneWeight += this.copies[this.index]?.usedBytes ?? 0;
    this.doneBytes += this.current?.bytes ?? 0;
    this.doneFiles += this.checked;
    this.current = undefined;
    this.checked = 0;
    this.eta = undefined;
  }

  snapshot(): CopyProgress {
    const c = this.current;
    const w = this.copies[this.index]?.usedBytes ?? 0;
    const weight = this.doneWeight + (c ? (w * c.percent) / 100 : 0);
    const percent = this.totalWeight > 0 ? Math.min(100, (weight / this.totalWeight) * 100) : 0;
    const rate = c?.rate ?? 0;
    const remainingOthers = this.copies.slice(this.index + 1).reduce((s, x) => s + (x.usedBytes ?? 0), 0);
    const others = rate > 0 ? remainingOthers / rate : undefined;
    const eta = this.eta !== undefined ? this.eta + (others ?? 0) : others;
    return {
      bytes: this.doneBytes + (c?.bytes ?? 0),
      totalBytes: this.totalWeight,
      files: this.doneFiles + this.checked,
      rate,
      etaSeconds: eta === undefined ? undefined : Math.round(eta),
      percent: Math.round(percent * 10) / 10,
      mountpoint: this.copies[this.index]?.mountpoint ?? '/',
    };
  }
}

export interface CopyResult {
  bytes: number;
  files: number;
  seconds: number;
  warnings: string[];
}

const COLD_MOUNT = String.raw`
dev=$1 fstype=$2
d=$(mktemp -d /tmp/ramboot-transfer-src.XXXXXX) || exit 1
case $fstype in
  ext2|ext3|ext4) o=ro,noload ;;
  xfs) o=ro,norecovery ;;
  btrfs) o=ro,rescue=nologreplay ;;
  *) o=ro ;;
esac
if ! mount -t "$fstype" -o "$o" -- "$dev" "$d"; then rmdir -- "$d"; exit 1; fi
echo "$d"
`;

const COLD_UMOUNT = 'umount -- "$1" && rmdir -- "$1"';

/**
 * Copies every planned filesystem. Live: from its mount point on the running source
 * (--one-file-system keeps /proc, /sys, /dev, /run, tmpfs and the other filesystems out). Cold:
 * from a read-only mount (no journal replay) made on the source for the copy and unmounted after.
 */
export async function copyAll(
  source: Remote,
  plan: Plan,
  o: { targetIp: string; keyDir: string; onProgress: (p: CopyProgress) => void; log: (m: string) => void },
): Promise<CopyResult> {
  const t0 = Date.now();
  const tracker = new ProgressTracker(plan.copies);
  const warnings: string[] = [];
  const cold = plan.source.mode === 'cold';
  // logical volumes of a cold source are active (activation writes nothing to the disks)
  if (cold && plan.copies.some((c) => /^\/dev\/(mapper\/|[^/]+\/)/.test(c.sourceDevice))) await source.exec(['vgchange', '-ay'], { timeoutMs: 120_000 });
  for (const [i, c] of plan.copies.entries()) {
    tracker.start(i);
    let from = c.sourcePath ?? undefined;
    let mounted: string | undefined;
    if (cold || from === undefined) {
      if (!validDevice(c.sourceDevice) || !/^[a-z0-9]+$/.test(c.sourceFsType)) throw new Error(`cannot mount the source's ${c.sourceDevice} (${c.sourceFsType})`);
      const r = await execOk(source, ['sh', '-c', COLD_MOUNT, 'sh', c.sourceDevice, c.sourceFsType], `mounting ${c.sourceDevice} read-only on the source`, { timeoutMs: 120_000 });
      mounted = r.stdout.trim().split('\n').at(-1) ?? '';
      if (!/^\/tmp\/ramboot-transfer-src\.[A-Za-z0-9]+$/.test(mounted)) throw new Error(`unexpected mount dir "${mounted}" on the source`);
      from = mounted;
    }
    o.log(`copying ${c.mountpoint} (${c.sourceDevice} -> ${c.targetDevice})`);
    try {
      const argv = rsyncArgv({ from: from!, mountpoint: c.mountpoint, targetIp: o.targetIp, keyDir: o.keyDir });
      const r = await source.exec(argv, {
        crIsNewline: true,
        onStdoutLine: (l) => {
          const p = parseProgress2(l);
          if (p) o.onProgress(tracker.update(p));
        },
      });
      if (r.code === 24) warnings.push(`${c.mountpoint}: some files vanished on the source while it was copied (rsync exit 24)`);
      else if (r.code !== 0) {
        if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/.test(r.stderr)) {
          throw new HostKeyError("the target's SSH host key (seen from the source) does not match the one it reported to ramboot: refusing");
        }
        throw new RemoteError(`rsync of ${c.mountpoint} failed (exit ${r.code}): ${tail(r.stderr)}`, r.code, r.stderr);
      }
      tracker.finish();
      o.onProgress(tracker.snapshot());
    } finally {
      if (mounted) await source.exec(['sh', '-c', COLD_UMOUNT, 'sh', mounted], { timeoutMs: 120_000 });
    }
  }
  const s = tracker.snapshot();
  return { bytes: s.bytes, files: s.files, seconds: (Date.now() - t0) / 1000, warnings };
}

export interface OneTimeKeyCopy {
  targetIp: string;
  /** The target's registry known_hosts (the source checks the target against it). */
  targetKnownHosts: string;
  onProgress: (p: CopyProgress) => void;
  log: (m: string) => void;
  warn: (m: string) => void;
}

/**
 * The whole copy: a one-time key accepted by the target only from the source and only for rrsync
 * into MOUNT_ROOT; the private key in a temp dir on the source; rsync per filesystem. The key is
 * removed from the target, the source and this machine whatever happens (failure, a signal that
 * killed the rsync, success); a cleanup that fails is reported, and a failed copy stays the error.
 */
export async function copyWithOneTimeKey(source: Remote, target: Remote, plan: Plan, o: OneTimeKeyCopy): Promise<CopyResult> {
  const key = await makeKeyPair();
  let keyDir: string | undefined;
  let authorized = false;
  try {
    const srcIp = await sourceAddressToward(source, o.targetIp);
    if (!srcIp) o.warn('cannot tell the source address toward the target: the one-time key is not limited to it');
    authorized = true; // from here on, a revoke is due even if adding fails halfway
    await revokeKeys(target);
    await authorizeKey(target, authorizedKeyLine(key.publicKey, srcIp));
    keyDir = await prepareSource(source, key, o.targetKnownHosts);
    return await copyAll(source, plan, { targetIp: o.targetIp, keyDir, onProgress: o.onProgress, log: o.log });
  } finally {
    const problems: string[] = [];
    if (authorized) await revokeKeys(target).catch((e: Error) => problems.push(`the one-time key may still be in the target's authorized_keys: ${e.message}`));
    if (keyDir) await cleanupSource(source, keyDir).catch((e: Error) => problems.push(`${keyDir} on the source may still hold the one-time key: ${e.message}`));
    await discardKeyPair(key).catch((e: Error) => problems.push(`${key.dir}: ${e.message}`));
    for (const p of problems) o.warn(p);
  }
}
