import t from 'tap';
import { mkdtemp, mkdir, writeFile, symlink, utimes, chmod, readFile, rm, readdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { needExecutables, requirements } from '../test/lib/requirements.js';
import { assembleInitrd, ramPolicy, sha256File } from './initrd.js';

const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
const ready = requirements(t, ['busybox']) && needExecutables(t, [
  { exe: 'mksquashfs', pkg: 'squashfs-tools' }, { exe: 'unsquashfs', pkg: 'squashfs-tools' }, { exe: 'cpio', pkg: 'cpio' },
]);

/** A small root tree; `order` changes creation order, `stamp` the mtimes: neither may matter. */
async function fixtureRoot(dir: string, order: 'a' | 'b', stamp: number): Promise<void> {
  const files: Array<[string, string, number]> = [
    ['etc/hostname', 'ramboot\n', 0o644],
    ['etc/ssh/sshd_config', 'PasswordAuthentication no\n', 0o644],
    ['usr/bin/tool', '#!/bin/sh\necho hi\n', 0o755],
    ['usr/lib/modules/6.1.0-test-amd64/kernel/fs/squashfs/squashfs.ko', 'not really a module', 0o644],
    ['usr/lib/modules/6.1.0-test-amd64/kernel/fs/overlayfs/overlay.ko', 'neither', 0o644],
    ['var/lib/empty/.keep', '', 0o600],
  ];
  if (order === 'b') files.reverse();
  for (const [p, body, mode] of files) {
    await mkdir(join(dir, p, '..'), { recursive: true });
    await writeFile(join(dir, p), body);
    await chmod(join(dir, p), mode);
    await utimes(join(dir, p), stamp, stamp);
  }
  await symlink('usr/bin', join(dir, 'bin'));
  await mkdir(join(dir, 'tmp'), { recursive: true });
  await chmod(join(dir, 'tmp'), 0o1777);
  await utimes(join(dir, 'etc'), stamp + 7, stamp + 7);
}

async function assemble(base: string, order: 'a' | 'b', stamp: number, epoch: number): Promise<{ file: string; sha: string; squashfsSize: number }> {
  const root = join(base, `root-${order}-${stamp}`);
  await fixtureRoot(root, order, stamp);
  const mods = join(root, 'usr/lib/modules/6.1.0-test-amd64/kernel/fs');
  const outFile = join(base, `initrd-${order}-${stamp}.img`);
  const r = await assembleInitrd({
    rootDir: root,
    busybox: BUSYBOX ?? '',
    modules: [
      { source: join(mods, 'squashfs/squashfs.ko'), name: 'squashfs.ko' },
      { source: join(mods, 'overlayfs/overlay.ko'), name: 'overlay.ko' },
    ],
    imageName: 'test',
    rootBytes: 1_000_000,
    epoch,
    squashfsFile: join(base, `sq-${order}-${stamp}.squashfs`),
    outFile,
  });
  t.equal(r.sha256, await sha256File(outFile), 'reported sha256 is the file digest');
  return { file: outFile, sha: r.sha256, squashfsSize: r.squashfsSize };
}

if (ready) t.test('initrd assembly is reproducible from a fixed root tree', async (t) => {
  const base = await mkdtemp(join(tmpdir(), 'ramboot-initrd-'));
  t.teardown(() => rm(base, { recursive: true, force: true }));
  const a = await assemble(base, 'a', 1_600_000_000, 1_700_000_000);
  const b = await assemble(base, 'b', 1_650_000_000, 1_700_000_000);
  t.equal(a.sha, b.sha, 'same tree content + same SOURCE_DATE_EPOCH => byte-identical initrd');
  const c = await assemble(base, 'a', 1_600_000_001, 1_700_000_100);
  t.not(c.sha, a.sha, 'a different SOURCE_DATE_EPOCH changes the bytes (the epoch is really used)');

  // The archive is a valid newc cpio the way the kernel reads it; root.squashfs is last.
  const x = join(base, 'x');
  await mkdir(x);
  const list = spawnSync('cpio', ['-itv', '--quiet', '-F', a.file], { encoding: 'utf8' });
  t.equal(list.status, 0, `cpio lists it: ${list.stderr}`);
  const names = spawnSync('cpio', ['-it', '--quiet', '-F', a.file], { encoding: 'utf8' }).stdout.trim().split('\n');
  t.equal(names.at(-1), 'root.squashfs', 'root.squashfs is the last member');
  t.ok(names.includes('init') && names.includes('bin/busybox') && names.includes('dev/console'), 'init, busybox, console');
  t.match(list.stdout, /^crw------- .* 5,\s*1 .* dev\/console$/m, '/dev/console is char 5,1');
  const ex = spawnSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames', '-F', a.file], { cwd: x, encoding: 'utf8' });
  t.equal(ex.status, 0, `cpio extracts it: ${ex.stderr}`);
  const conf = await readFile(join(x, 'etc/ramboot.conf'), 'utf8');
  t.match(conf, new RegExp(`^RAMBOOT_ROOT_SIZE='${a.squashfsSize}'$`, 'm'), 'config carries the squashfs size');
  t.match(conf, /^RAMBOOT_MODULES='squashfs.ko overlay.ko'$/m, 'config lists modules in order');
  t.same((await readdir(join(x, 'modules'))).sort(), ['overlay.ko', 'squashfs.ko']);
  const un = spawnSync('unsquashfs', ['-d', join(base, 'unsq'), join(x, 'root.squashfs')], { encoding: 'utf8' });
  t.equal(un.status, 0, `unsquashfs reads the root: ${un.stderr}`);
  t.equal(await readFile(join(base, 'unsq/etc/ssh/sshd_config'), 'utf8'), 'PasswordAuthentication no\n');
  const sh = spawnSync(BUSYBOX ?? 'false', ['sh', '-n', join(x, 'init')], { encoding: 'utf8' });
  t.equal(sh.status, 0, `/init parses under busybox sh: ${sh.stderr}`);
});

t.test('RAM policy grows with the root image', async (t) => {
  const small = ramPolicy(50 * 1048576, 200 * 1048576);
  const big = ramPolicy(120 * 1048576, 400 * 1048576);
  t.ok(big.minRamMiB > small.minRamMiB);
  t.equal(small.minRamMiB % 32, 0, 'rounded to 32 MiB');
  t.ok(small.minMemTotalKiB < small.minRamMiB * 1024, 'MemTotal threshold leaves room for the kernel');
  t.ok(big.minMemTotalKiBCopy > big.minMemTotalKiB, 'copy mode needs more than overlay');
});
