import { processAlive } from '../../builder/build-lock.js';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, runOk } from '../../common/run.js';
import { CACHE_DIR } from './paths.js';
import { findExecutable } from './requirements.js';

/**
 * The SOURCE machine of the transfer tests: a qcow2 disk holding a small Debian 12 that boots by itself
 * on SeaBIOS, installed here the way an admin would (mmdebstrap into a directory, then a real disk:
 * loop device, sgdisk, mkfs, GRUB from the installed system in a chroot):
 *
 *   GPT: p1 1 MiB BIOS boot (ef02), p2 ext4 `/`, p3 ext4 `/home`, p4 swap (3 GiB disk).
 *   /etc/fstab: `/` and swap by UUID, `/home` by its /dev name (/dev/vda3): the one line a transfer
 *   must rewrite for the new disk.
 *   linux-image-cloud-amd64 + grub-pc on the disk, console on ttyS0, GRUB timeout 1 s.
 *   openssh-server: root logs in with the fixed test key stored beside the disk (id_ed25519); the
 *   host keys generated at install are stored beside it too (host-keys.pub), so tests verify them.
 *   systemd-networkd: DHCP on every en* / eth* NIC (client id = MAC). rsync, attr, acl, libcap2-bin, fdisk.
 *   Hostname `source-vm`.
 *   A test tree in /srv/tree (on /) and /home/user (on /home): hard links, user/trusted/security
 *   xattrs, ACLs (access and default), a 64 MiB sparse file with 3 written blocks, symlinks
 *   (relative, absolute, dangling, to a directory), a fifo, a device node, setuid and sticky modes,
 *   numeric owners without a name, odd names (spaces, tab, newline, UTF-8, a leading dash, quotes,
 *   glob characters, a backslash, 200 characters), fixed old mtimes.
 *   /usr/local/bin/tree-sum: prints one line per entry of the trees it is given (see TREE_SUM); the
 *   listing the build computed is stored as tree.list, so a test compares the source's own live
 *   output and the target's with it.
 *
 * Cached in .cache/source-disk/<key>/ where the key hashes the recipe (every text below); built once:
 * callers in this process share one promise, other processes wait on a lock directory (a dead
 * builder's lock is taken over), the result is published by renaming a finished temp dir. Every loop
 * device, mount and bind is released even when a step fails. Treat the disk as read-only: boot a
 * copy-on-write overlay (qemu-img create -b).
 */
export const SOURCE_DISK_DIR = join(CACHE_DIR, 'source-disk');
const RECIPE = 'source-disk-v3';
const MIRROR = 'http://deb.debian.org/debian';
const SUITE = 'bookworm';
export const SOURCE_HOSTNAME = 'source-vm';
/** The trees tree-sum covers (one on /, one on /home). */
export const TREE_DIRS = ['/srv/tree', '/home/user'] as const;
/** The sparse file: 64 MiB apparent, three small writes. */
export const SPARSE_FILE = '/srv/tree/sparse.img';
/** Disk geometry in MiB: p1 BIOS boot, p2 root, p3 home, p4 swap = the rest of DISK_MIB. */
const DISK_MIB = 3072;
const ROOT_MIB = 2000;
const HOME_MIB = 512;
const STALE_LOCK_CHECK_MS = 2000;
const OLD_KEY_MS = 6 * 3600 * 1000;

const PACKAGES = [
  'systemd', 'systemd-sysv', 'udev', 'dbus', 'kmod', 'procps', 'iproute2', 'netbase',
  'linux-image-cloud-amd64', 'initramfs-tools', 'zstd', 'grub-pc',
  'openssh-server', 'openssh-sftp-server', 'rsync', 'attr', 'acl', 'libcap2-bin', 'e2fsprogs', 'fdisk',
];

/**
 * tree-sum DIR...: for each DIR, `== DIR` then one line per entry (sorted by name, names %q-quoted):
 * name, type, mode (octal, with setuid/sticky), uid:gid, link count, mtime, size (not for directories:
 * their size depends on the filesystem's history), sha256 of a file / target of a symlink / device
 * numbers, `=FIRST` when the entry is a further name of an inode already listed (hard-link groups),
 * and every xattr (user, trusted, security, ACLs as system.posix_acl_*) sorted, in hex.
 */
export const TREE_SUM = `#!/bin/bash
set -euo pipefail
export LC_ALL=C
for top in "$@"; do
  cd -- "$top"
  unset first
  declare -A first=()
  printf '== %q\\n' "$top"
  while IFS= read -r -d '' p; do
    IFS=' ' read -r ino nlink mode uid gid mtime size kind < <(stat -c '%i %h %a %u %g %Y %s %F' -- "$p")
    what=-
    case "$kind" in
      'regular file'|'regular empty file') what=$(sha256sum < "$p"); what=\${what%% *} ;;
      'symbolic link') what=$(printf '%q' "$(readlink -- "$p")") ;;
      'character special file'|'block special file') what=$(stat -c '%t:%T' -- "$p") ;;
    esac
    link=-
    if [ "$kind" = directory ]; then
      size=-
    elif [ "$nlink" -gt 1 ]; then
      if [ -n "\${first[$ino]:-}" ]; then link="=\${first[$ino]}"; else first[$ino]=$(printf '%q' "$p"); fi
    fi
    xa=$( { getfattr -h -d -m - -e hex -- "$p" 2>/dev/null || true; } | { grep -v -e '^#' -e '^$' || true; } | sort | tr '\\n' ' ')
    printf '%q|%s|%s|%s:%s|%s|%s|%s|%s|%s|%s\\n' "$p" "$kind" "$mode" "$uid" "$gid" "$nlink" "$mtime" "$size" "$what" "$link" "$xa"
  done < <(find . -xdev -print0 | sort -z)
done
`;

/** Run in the chroot of the installed system (root and /home mounted): the test user and the trees. */
const MAKE_TREE = `#!/bin/bash
set -euo pipefail
umask 022
useradd -m -u 1000 -U -s /bin/bash user
T=/srv/tree
mkdir -p "$T/dir/sub" "$T/empty-dir" "$T/sticky" "$T/odd"
chmod 1777 "$T/sticky"
printf 'hello\\n' > "$T/hello.txt"
: > "$T/empty"
head -c 5000 /dev/urandom > "$T/small.bin"
head -c 8M /dev/urandom > "$T/big.bin"
for i in $(seq 1 300); do printf 'file %s\\n' "$i" > "$T/dir/sub/f$i.txt"; done
ln "$T/small.bin" "$T/dir/small-link"
ln "$T/small.bin" "$T/dir/sub/small-link2"
ln "$T/big.bin" "$T/big-link"
ln -s ../hello.txt "$T/dir/rel-link"
ln -s /srv/tree/hello.txt "$T/abs-link"
ln -s missing-target "$T/dangling"
ln -s dir "$T/dir-link"
truncate -s 64M "$T/sparse.img"
printf 'start' | dd of="$T/sparse.img" conv=notrunc status=none
printf 'middle' | dd of="$T/sparse.img" bs=1M seek=32 conv=notrunc status=none
printf 'end' | dd of="$T/sparse.img" bs=1 seek=$((64 * 1024 * 1024 - 3)) conv=notrunc status=none
setfattr -n user.comment -v 'kept by rsync -X' "$T/hello.txt"
setfattr -n user.bin -v 0x00ff10 "$T/small.bin"
setfattr -n user.dir -v 'on a directory' "$T/dir"
setfattr -n trusted.ramboot -v 'trusted namespace' "$T/hello.txt"
cp /usr/bin/true "$T/raw-capable"
setcap cap_net_raw+ep "$T/raw-capable"
cp /usr/bin/true "$T/setuid"
chmod 4755 "$T/setuid"
printf 'acl\\n' > "$T/acl-file"
setfacl -m u:1000:rw,g:100:r "$T/acl-file"
mkfifo "$T/fifo"
mknod "$T/null-dev" c 1 3
chown 1000:1000 "$T/hello.txt"
chown 1234:4321 "$T/small.bin"
touch "$T/odd/with space" "$T/odd/tab	here" "$T/odd/new
line" "$T/odd/ünïcödé-名前" "$T/odd/-leading-dash" "$T/odd/quote'\\"s" "$T/odd/star*?[x]" "$T/odd/back\\\\slash"
touch "$T/odd/$(printf 'x%.0s' $(seq 200))"
setfacl -d -m u:1000:rwx "$T/dir/sub"
touch -d '1999-12-31 23:59:59' "$T/hello.txt"
touch -h -d '2001-02-03 04:05:06' "$T/abs-link"
H=/home/user
mkdir -p "$H/docs" "$H/.ssh"
head -c 1M /dev/urandom > "$H/docs/data.bin"
ln "$H/docs/data.bin" "$H/data-link"
printf 'notes\\n' > "$H/docs/notes.txt"
setfattr -n user.owner -v 'user' "$H/docs/notes.txt"
ln -s docs/notes.txt "$H/notes"
chown -R 1000:1000 "$H"
chmod 700 "$H/.ssh"
`;

const FILES: Record<string, string> = {
  '/etc/hostname': `${SOURCE_HOSTNAME}\n`,
  '/etc/hosts': `127.0.0.1 localhost\n127.0.1.1 ${SOURCE_HOSTNAME}\n::1 localhost ip6-localhost ip6-loopback\n`,
  '/etc/systemd/network/20-wired.network': '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nClientIdentifier=mac\n',
  '/etc/default/grub': [
    'GRUB_DEFAULT=0',
    'GRUB_TIMEOUT=1',
    'GRUB_DISTRIBUTOR="Debian"',
    'GRUB_CMDLINE_LINUX_DEFAULT=""',
    'GRUB_CMDLINE_LINUX="console=ttyS0,115200n8"',
    'GRUB_TERMINAL=serial',
    'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"',
    'GRUB_DISABLE_OS_PROBER=true',
    '',
  ].join('\n'),
  // Services may take long under TCG on a loaded machine (udev's coldplug alone can take minutes).
  '/etc/systemd/system.conf.d/10-slow-machine.conf': '[Manager]\nDefaultTimeoutStartSec=15min\n',
  '/usr/local/bin/tree-sum': TREE_SUM,
  '/root/make-tree': MAKE_TREE,
};

/** Units that would only make noise or reach for the internet during a test. */
const MASK = ['apt-daily.timer', 'apt-daily-upgrade.timer', 'e2scrub_all.timer', 'fstrim.timer', 'systemd-networkd-wait-online.service'];

export interface SourceDisk {
  dir: string;
  /** The qcow2 disk (read-only: boot an overlay). */
  disk: string;
  /** Virtual size in bytes. */
  sizeBytes: number;
  /** Private key (0600) root logs in with; `${key}.pub` beside it. */
  key: string;
  pub: string;
  /** The source's SSH host public keys, "type base64" each. */
  hostKeys: string[];
  /** tree-sum output of TREE_DIRS as built. */
  treeList: string;
  uuids: { root: string; home: string; swap: string };
  hostname: string;
}

interface Info {
  recipe: string;
  sizeBytes: number;
  uuids: { root: string; home: string; swap: string };
  packages: string;
  buildSeconds: number;
}

/** Why this machine cannot build the disk (empty when it can). */
export function sourceDiskMissing(): string[] {
  const out: string[] = [];
  if (process.getuid?.() !== 0) out.push('building the source disk needs root (loop devices, mounts, chroot)');
  const exe: [string, string][] = [
    ['mmdebstrap', 'mmdebstrap'], ['sgdisk', 'gdisk'], ['losetup', 'mount'], ['partx', 'util-linux'], ['mkfs.ext4', 'e2fsprogs'],
    ['mkswap', 'util-linux'], ['blkid', 'util-linux'], ['qemu-img', 'qemu-utils'], ['ssh-keygen', 'openssh-client'], ['chroot', 'coreutils'],
  ];
  for (const [name, pkg] of exe) if (findExecutable(name) === undefined) out.push(`${name} not found on PATH (Debian package ${pkg})`);
  if (!existsSync('/dev/loop-control')) out.push('/dev/loop-control is missing (loop devices: kernel module loop)');
  return out;
}

export function sourceDiskKey(): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ RECIPE, MIRROR, SUITE, DISK_MIB, ROOT_MIB, HOME_MIB, PACKAGES, FILES, MASK }));
  return h.digest('hex').slice(0, 16);
}

const building = new Map<string, Promise<SourceDisk>>();

/** The cached source disk (built on first use; `progress` gets a line per build step). */
export function sourceDisk(opts: { progress?: (line: string) => void; cacheDir?: string } = {}): Promise<SourceDisk> {
  const cacheDir = opts.cacheDir ?? SOURCE_DISK_DIR;
  const key = sourceDiskKey();
  const id = join(cacheDir, key);
  let p = building.get(id);
  if (!p) {
    p = obtain(cacheDir, key, opts.progress ?? (() => undefined));
    building.set(id, p);
    p.catch(() => building.delete(id));
  }
  return p;
}

async function load(dir: string): Promise<SourceDisk> {
  const info = JSON.parse(await readFile(join(dir, 'info.json'), 'utf8')) as Info;
  const hostKeys = (await readFile(join(dir, 'host-keys.pub'), 'utf8')).split('\n').filter((l) => l.trim() !== '');
  return {
    dir,
    disk: join(dir, 'disk.qcow2'),
    sizeBytes: info.sizeBytes,
    key: join(dir, 'id_ed25519'),
    pub: (await readFile(join(dir, 'id_ed25519.pub'), 'utf8')).trim(),
    hostKeys,
    treeList: await readFile(join(dir, 'tree.list'), 'utf8'),
    uuids: info.uuids,
    hostname: SOURCE_HOSTNAME,
  };
}

async function obtain(cacheDir: string, key: string, progress: (l: string) => void): Promise<SourceDisk> {
  const final = join(cacheDir, key);
  if (existsSync(join(final, 'info.json'))) return load(final);
  const missing = sourceDiskMissing();
  if (missing.length > 0) throw new Error(`cannot build the source test disk: ${missing.join('; ')}`);
  await mkdir(cacheDir, { recursive: true });
  const lock = join(cacheDir, `${key}.lock`);
  const deadline = Date.now() + 60 * 60_000;
  let announced = false;
  for (;;) {
    if (existsSync(join(final, 'info.json'))) return load(final);
    try {
      await mkdir(lock);
      await writeFile(join(lock, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const pid = Number(await readFile(join(lock, 'pid'), 'utf8').catch(() => ''));
    if (Number.isInteger(pid) && pid > 0 && !processAlive(pid)) {
      progress(`source disk: the builder ${pid} died; taking over`);
      await rm(lock, { recursive: true, force: true });
      continue;
    }
    if (!announced) progress(`source disk: waiting for process ${pid || '?'} to finish building ${final}`);
    announced = true;
    if (Date.now() > deadline) throw new Error(`source disk: still locked by ${lock} after an hour`);
    await new Promise((r) => setTimeout(r, STALE_LOCK_CHECK_MS));
  }
  try {
    if (existsSync(join(final, 'info.json'))) return load(final);
    await removeOld(cacheDir, key);
    const tmp = await mkdtemp(join(cacheDir, '.tmp-'));
    try {
      await build(tmp, progress);
      await rm(final, { recursive: true, force: true });
      await rename(tmp, final);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
    return load(final);
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

/** Other keys' disks not used for 6 hours, and temp dirs of dead builds. */
async function removeOld(cacheDir: string, key: string): Promise<void> {
  for (const n of await readdir(cacheDir)) {
    if (n === key || n.endsWith('.lock')) continue;
    const p = join(cacheDir, n);
    try {
      if (Date.now() - (await stat(p)).mtimeMs > OLD_KEY_MS) await rm(p, { recursive: true, force: true });
    } catch {
      // gone already
    }
  }
}

/** Mounts, binds and loop devices made by a build, released in reverse order. */
class Held {
  private readonly mounts: string[] = [];
  private loop: string | undefined;
  setLoop(dev: string): void {
    this.loop = dev;
  }
  async mount(args: string[], target: string): Promise<void> {
    await runOk('mount', [...args, target]);
    this.mounts.push(target);
  }
  async umountAll(): Promise<void> {
    const errors: string[] = [];
    for (const m of this.mounts.reverse()) {
      const r = await run('umount', [m]);
      if (r.code !== 0) {
        const lazy = await run('umount', ['-l', m]);
        if (lazy.code !== 0) errors.push(`umount ${m}: ${r.stderr.trim()}`);
      }
    }
    this.mounts.length = 0;
    if (this.loop !== undefined) {
      await run('sync', []);
      const r = await run('losetup', ['-d', this.loop]);
      if (r.code !== 0) errors.push(`losetup -d ${this.loop}: ${r.stderr.trim()}`);
      this.loop = undefined;
    }
    if (errors.length > 0) throw new Error(`source disk: could not release: ${errors.join('; ')}`);
  }
}

async function waitForDevice(path: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function uuidOf(dev: string): Promise<string> {
  const u = (await runOk('blkid', ['-s', 'UUID', '-o', 'value', dev])).stdout.trim();
  if (!/^[0-9a-f-]{36}$/.test(u)) throw new Error(`no UUID on ${dev}: "${u}"`);
  return u;
}

async function build(tmp: string, progress: (l: string) => void): Promise<void> {
  const started = Date.now();
  const step = (s: string) => progress(`source disk: ${s} (${Math.round((Date.now() - started) / 1000)} s)`);
  const root = join(tmp, 'root');
  const mnt = join(tmp, 'mnt');
  const raw = join(tmp, 'disk.raw');
  await mkdir(mnt);

  step('test key pair');
  await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ramboot-transfer-test', '-f', join(tmp, 'id_ed25519')]);

  step(`mmdebstrap ${SUITE} (${PACKAGES.length} packages)`);
  const archives = join(CACHE_DIR, 'build-apt-cache', 'apt', 'archives');
  await mkdir(archives, { recursive: true });
  const mm = await run('mmdebstrap', [
    '--mode=root', '--variant=minbase', '--format=directory',
    '--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr',
    '--aptopt=APT::Install-Recommends "false"',
    '--aptopt=Acquire::Retries "3"',
    '--dpkgopt=force-unsafe-io',
    '--skip=download/empty',
    `--include=${PACKAGES.join(',')}`,
    // Fixed strings; the cache path arrives through the environment.
    '--setup-hook=mkdir -p "$1/var/cache/apt/archives" && for f in "$SRCDISK_ARCHIVES"/*.deb; do [ -f "$f" ] && { ln "$f" "$1/var/cache/apt/archives/" 2>/dev/null || cp "$f" "$1/var/cache/apt/archives/"; }; done; true',
    '--customize-hook=for f in "$1"/var/cache/apt/archives/*.deb; do [ -f "$f" ] || continue; t="$SRCDISK_ARCHIVES/$(basename "$f")"; [ -e "$t" ] || { cp "$f" "$t.new.$$" && mv "$t.new.$$" "$t"; }; done; true',
    SUITE, root, MIRROR,
  ], {
    env: { SRCDISK_ARCHIVES: archives, LC_ALL: 'C.UTF-8', DEBIAN_FRONTEND: 'noninteractive' },
    onStderrLine: (l) => { if (/^I: (downloading|installing|configuring|running|extract|cleaning)/.test(l)) step(`mmdebstrap: ${l.slice(3, 100)}`); },
  });
  if (mm.code !== 0) throw new Error(`mmdebstrap failed: ${mm.stderr.trim().split('\n').slice(-8).join(' | ')}`);
  const packages = (await runOk('chroot', [root, 'dpkg-query', '-W', '-f', '${Package} ${Version}\n'])).stdout;

  step(`partitioning a ${DISK_MIB} MiB disk`);
  await runOk('truncate', ['-s', `${DISK_MIB}M`, raw]);
  await runOk('sgdisk', [
    '-o',
    '-n', '1:2048:+1M', '-t', '1:ef02', '-c', '1:bios',
    '-n', `2:0:+${ROOT_MIB}M`, '-t', '2:8300', '-c', '2:root',
    '-n', `3:0:+${HOME_MIB}M`, '-t', '3:8300', '-c', '3:home',
    '-n', '4:0:0', '-t', '4:8200', '-c', '4:swap',
    raw,
  ]);
  const held = new Held();
  try {
    const loop = (await runOk('losetup', ['--find', '--show', '--partscan', raw])).stdout.trim();
    if (!/^\/dev\/loop\d+$/.test(loop)) throw new Error(`losetup gave "${loop}"`);
    held.setLoop(loop);
    // The partition nodes do not always appear from --partscan alone here; partx adds any missing.
    await run('partx', ['-a', loop]);
    for (const n of [2, 3, 4]) await waitForDevice(`${loop}p${n}`);
    step(`formatting ${loop}p2 (/), ${loop}p3 (/home), ${loop}p4 (swap)`);
    await runOk('mkfs.ext4', ['-q', '-L', 'root', `${loop}p2`]);
    await runOk('mkfs.ext4', ['-q', '-L', 'home', `${loop}p3`]);
    await runOk('mkswap', ['-L', 'swap', `${loop}p4`]);
    const uuids = { root: await uuidOf(`${loop}p2`), home: await uuidOf(`${loop}p3`), swap: await uuidOf(`${loop}p4`) };

    await held.mount([`${loop}p2`], mnt);
    await mkdir(join(mnt, 'home'));
    await held.mount([`${loop}p3`], join(mnt, 'home'));
    step('copying the installed system onto the disk');
    await runOk('cp', ['-a', '--', `${root}/.`, `${mnt}/`]);
    await rm(root, { recursive: true, force: true });

    step('configuring (fstab, hostname, network, ssh, grub defaults, test tree)');
    for (const [path, text] of Object.entries(FILES)) {
      await mkdir(join(mnt, path, '..'), { recursive: true });
      await writeFile(join(mnt, path), text);
    }
    await chmod(join(mnt, 'usr/local/bin/tree-sum'), 0o755);
    await writeFile(join(mnt, 'etc/fstab'), [
      '# <file system> <mount point> <type> <options> <dump> <pass>',
      // x-systemd.device-timeout: systemd 252 waits 90 s for a device named in fstab, then goes to
      // emergency mode; udev's coldplug under TCG on a loaded machine has taken longer than that.
      `UUID=${uuids.root} / ext4 errors=remount-ro 0 1`,
      '/dev/vda3 /home ext4 defaults,x-systemd.device-timeout=15min 0 2',
      `UUID=${uuids.swap} none swap sw,x-systemd.device-timeout=15min 0 0`,
      '',
    ].join('\n'));
    await mkdir(join(mnt, 'root/.ssh'), { recursive: true, mode: 0o700 });
    await writeFile(join(mnt, 'root/.ssh/authorized_keys'), await readFile(join(tmp, 'id_ed25519.pub')), { mode: 0o600 });
    for (const d of ['dev', 'proc', 'sys']) await held.mount(['--bind', `/${d}`], join(mnt, d));
    await held.mount(['-t', 'tmpfs', 'tmpfs'], join(mnt, 'run'));
    const inRoot = (args: string[]) => runOk('chroot', [mnt, ...args], { env: { LC_ALL: 'C.UTF-8', DEBIAN_FRONTEND: 'noninteractive', PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
    if (!(await readdir(join(mnt, 'etc/ssh'))).some((n) => n.endsWith('_key'))) await inRoot(['ssh-keygen', '-A']);
    await inRoot(['systemctl', 'enable', 'systemd-networkd.service', 'ssh.service']);
    await inRoot(['systemctl', 'mask', ...MASK]);
    await inRoot(['/bin/bash', '/root/make-tree']);
    await rm(join(mnt, 'root/make-tree'));

    step(`grub-install --target=i386-pc ${loop} + update-grub`);
    await inRoot(['grub-install', '--target=i386-pc', loop]);
    await inRoot(['update-grub']);
    // grub-mkconfig names the root by UUID only when /dev/disk/by-uuid/<uuid> exists, which needs
    // udev (absent here): it wrote root=/dev/loopNp2. Name it as an installer on real hardware would.
    const cfgPath = join(mnt, 'boot/grub/grub.cfg');
    const cfg = (await readFile(cfgPath, 'utf8')).split(`root=${loop}p2 `).join(`root=UUID=${uuids.root} `);
    if (!cfg.includes(`root=UUID=${uuids.root}`) || cfg.includes(loop)) throw new Error(`grub.cfg does not boot the root by UUID:\n${cfg}`);
    await writeFile(cfgPath, cfg);

    step('tree listing');
    const list = (await inRoot(['/usr/local/bin/tree-sum', ...TREE_DIRS])).stdout;
    await writeFile(join(tmp, 'tree.list'), list);
    const hostKeys: string[] = [];
    for (const n of (await readdir(join(mnt, 'etc/ssh'))).sort()) {
      if (!/^ssh_host_.*_key\.pub$/.test(n)) continue;
      const [type, b64] = (await readFile(join(mnt, 'etc/ssh', n), 'utf8')).trim().split(/\s+/);
      if (type && b64) hostKeys.push(`${type} ${b64}`);
    }
    if (hostKeys.length === 0) throw new Error('no SSH host keys in the installed system');
    await writeFile(join(tmp, 'host-keys.pub'), `${hostKeys.join('\n')}\n`);
    await held.umountAll();

    step('converting to qcow2');
    await runOk('qemu-img', ['convert', '-O', 'qcow2', raw, join(tmp, 'disk.qcow2')]);
    await rm(raw);
    const info: Info = { recipe: RECIPE, sizeBytes: DISK_MIB * 1024 * 1024, uuids, packages, buildSeconds: Math.round((Date.now() - started) / 1000) };
    await writeFile(join(tmp, 'info.json'), `${JSON.stringify(info, null, 2)}\n`);
    await rmdir(mnt);
    step('done');
  } finally {
    await held.umountAll();
  }
}
