// ramboot-fix and its fix scripts on fixture trees: fstab in -> fstab out, net rules, getty,
// hostname, bad input; plus one run against real (loop) block devices, discovered with blkid.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fixesDir } from '../../builder/hooks.js';
import { findExecutable, isCI, requirements } from '../../test/lib/requirements.js';
import { makeTree, read, snapshot, type TreeSpec } from '../../test/lib/test-tree.js';
import { tempDir } from '../../test/lib/temp-dir.js';

const FIX = join(fixesDir(), 'ramboot-fix');
const FIXTURES = join(fixesDir(), 'fixtures');

function fix(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(FIX, args, { encoding: 'utf8', env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env }, timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A target tree: a systemd Debian with /etc/fstab and /etc/hosts. */
function target(t: Parameters<typeof tempDir>[0], extra: TreeSpec = {}): string {
  const root = tempDir(t, 'target');
  makeTree(root, {
    'etc/hostname': 'oldname\n',
    'etc/hosts': '127.0.0.1\tlocalhost\n127.0.1.1\toldname.example.org oldname\n\n# IPv6\n::1\tlocalhost ip6-localhost\n',
    'usr/lib/systemd/system/serial-getty@.service': '[Unit]\n',
    lib: { link: 'usr/lib' },
    ...extra,
  });
  return root;
}

t.test('fstab fixtures: in -> out, and a second run changes nothing', async (t) => {
  const cases = readdirSync(FIXTURES).sort();
  t.ok(cases.length >= 10, `${cases.length} cases`);
  for (const name of cases) {
    t.test(name, async (t) => {
      const dir = join(FIXTURES, name);
      const root = target(t);
      if (existsSync(join(dir, 'fstab.in'))) copyFileSync(join(dir, 'fstab.in'), join(root, 'etc/fstab'));
      const r = fix(['--devices', join(dir, 'devices'), root]);
      t.equal(r.status, 0, r.stderr);
      t.equal(read(root, 'etc/fstab'), read(dir, 'fstab.out'));
      if (existsSync(join(dir, 'fstab.in'))) {
        t.equal(read(root, 'etc/fstab.before-ramboot-fix'), read(dir, 'fstab.in'), 'previous fstab kept');
      }
      const before = snapshot(root);
      const again = fix(['--devices', join(dir, 'devices'), root]);
      t.equal(again.status, 0, again.stderr);
      t.same(snapshot(root), before, 'idempotent');
    });
  }
});

t.test('fstab: what the fixtures promise, spelled out', async (t) => {
  const out = (name: string): string => read(join(FIXTURES, name), 'fstab.out');
  const inp = (name: string): string => read(join(FIXTURES, name), 'fstab.in');
  t.test('comments and spacing of kept lines survive; root and swap go to the new UUIDs', async (t) => {
    const o = out('debian-uuid');
    for (const line of inp('debian-uuid').split('\n').filter((l) => l.startsWith('#'))) t.ok(o.includes(`${line}\n`), `kept: ${line}`);
    t.match(o, /^UUID=6a1c9f3e-1111-4c2a-9d0e-aaaaaaaaaaaa \/ {15}ext4 {4}errors=remount-ro 0 {7}1$/m);
    t.match(o, /^UUID=9e8d7c6b-2222-4f1e-8d2c-bbbbbbbbbbbb none {12}swap/m);
  });
  t.test('/dev/sdX entries: mounted ones to UUID=, swap to the new swap area, a gone disk commented out', async (t) => {
    const o = out('dev-names');
    t.match(o, /^UUID=aaaaaaaa-0000-4000-8000-000000000001\t\/\text4\tdefaults,noatime\t0\t1$/m);
    t.match(o, /^UUID=aaaaaaaa-0000-4000-8000-000000000003\tnone\tswap/m);
    t.match(o, /^# ramboot-fix: device not found: \/dev\/sdb1\t\/data/m);
  });
  t.test('noauto, network, bind and pseudo filesystems untouched', async (t) => {
    const i = inp('network-noauto').split('\n');
    const o = out('network-noauto').split('\n');
    t.equal(o.length, i.length);
    for (const [n, line] of i.entries()) {
      if (line.startsWith('UUID=old-root')) continue;
      t.equal(o[n], line, `unchanged: ${line}`);
    }
  });
  t.test('LABEL= with an escaped space resolves; gone labels commented out', async (t) => {
    const o = out('labels');
    t.match(o, /^LABEL=My\\040Data \/mnt\/my\\040data ext4/m);
    t.match(o, /^# ramboot-fix: device not found: LABEL=old-scratch/m);
  });
  t.test('a new filesystem type gets default options', async (t) => {
    t.match(out('type-change'), /^UUID=f00dfeed-0000-4000-8000-000000000001\t\/\txfs\tdefaults\t0\t0$/m);
  });
  t.test('an EFI partition mounted on the target but missing from fstab is added (UUID case kept)', async (t) => {
    t.match(out('efi-added'), /^UUID=7A3B-1C2D\t\/boot\/efi\tvfat\tumask=0077/m);
  });
  t.test('btrfs subvolumes: both entries to the new UUID, subvol options kept', async (t) => {
    t.match(out('btrfs-subvol'), /^UUID=b7f5b7f5-0000-4000-8000-000000000002 \/home btrfs defaults,subvol=@home 0 0$/m);
  });
});

t.test('root device unknown: the root entry is kept and a warning printed', async (t) => {
  const dir = join(FIXTURES, 'root-unknown');
  const root = target(t, { 'etc/fstab': read(dir, 'fstab.in') });
  const r = fix(['--devices', join(dir, 'devices'), root]);
  t.equal(r.status, 0);
  t.match(r.stderr, /warning: root entry kept/);
});

t.test('initramfs resume setting follows the new swap area, or none', async (t) => {
  const dir = join(FIXTURES, 'multi-swap');
  const root = target(t, { 'etc/fstab': read(dir, 'fstab.in'), 'etc/initramfs-tools/conf.d/resume': '# resume\nRESUME=UUID=swap-gone-1\n' });
  t.equal(fix(['--devices', join(dir, 'devices'), root]).status, 0);
  t.equal(read(root, 'etc/initramfs-tools/conf.d/resume'), '# resume\nRESUME=UUID=00000000-0000-4000-8000-0000000000a2\n');
  const noSwap = target(t, { 'etc/fstab': 'UUID=x / ext4 defaults 0 1\nUUID=gone none swap sw 0 0\n', 'etc/initramfs-tools/conf.d/resume': 'RESUME=UUID=gone\n' });
  const devices = join(tempDir(t, 'dev'), 'devices');
  writeFileSync(devices, 'DEVNAME=/dev/vda1\nUUID=x\nTYPE=ext4\nMOUNTPOINT=/\n');
  t.equal(fix(['--devices', devices, noSwap]).status, 0);
  t.equal(read(noSwap, 'etc/initramfs-tools/conf.d/resume'), 'RESUME=none\n', 'swap gone: no resume device to wait for');
});

t.test('persistent net rules removed, the generator mask and unrelated files kept', async (t) => {
  const root = target(t, {
    'etc/fstab': '',
    'etc/udev/rules.d/70-persistent-net.rules': 'SUBSYSTEM=="net", ATTR{address}=="52:54:00:12:34:56", NAME="eth0"\n',
    'etc/udev/rules.d/75-persistent-net-generator.rules': { link: '/dev/null' },
    'etc/udev/rules.d/99-local.rules': '# mine\n',
    'etc/systemd/network/10-lan.link': '[Match]\nMACAddress=52:54:00:12:34:56\n\n[Link]\nName=lan0\n',
    'etc/systemd/network/20-wired.network': '[Match]\nName=en*\n\n[Network]\nDHCP=yes\n',
    'etc/systemd/network/99-default.link': '[Match]\nOriginalName=*\n\n[Link]\nNamePolicy=keep kernel database onboard slot path\n',
  });
  const r = fix(['--devices', '/dev/null', root]);
  t.equal(r.status, 0, r.stderr);
  t.notOk(existsSync(join(root, 'etc/udev/rules.d/70-persistent-net.rules')));
  t.equal(readlinkSync(join(root, 'etc/udev/rules.d/75-persistent-net-generator.rules')), '/dev/null');
  t.ok(existsSync(join(root, 'etc/udev/rules.d/99-local.rules')));
  t.notOk(existsSync(join(root, 'etc/systemd/network/10-lan.link')));
  t.ok(existsSync(join(root, 'etc/systemd/network/10-lan.link.disabled-by-ramboot-fix')));
  t.ok(existsSync(join(root, 'etc/systemd/network/20-wired.network')));
  t.ok(existsSync(join(root, 'etc/systemd/network/99-default.link')));
});

t.test('serial getty: systemd unit enabled, or an inittab line for sysvinit', async (t) => {
  const root = target(t, { 'etc/fstab': '' });
  t.equal(fix(['--devices', '/dev/null', root]).status, 0);
  t.equal(readlinkSync(join(root, 'etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service')), '/lib/systemd/system/serial-getty@.service');
  t.equal(fix(['--serial', 'ttyS1', '--devices', '/dev/null', root]).status, 0);
  t.ok(lstatSync(join(root, 'etc/systemd/system/getty.target.wants/serial-getty@ttyS1.service')).isSymbolicLink());

  const sysv = tempDir(t, 'sysv');
  makeTree(sysv, { 'etc/fstab': '', 'etc/inittab': 'id:2:initdefault:\n1:2345:respawn:/sbin/getty 38400 tty1\n' });
  t.equal(fix(['--devices', '/dev/null', sysv]).status, 0);
  t.equal(fix(['--devices', '/dev/null', sysv]).status, 0);
  t.equal(read(sysv, 'etc/inittab'), 'id:2:initdefault:\n1:2345:respawn:/sbin/getty 38400 tty1\nS0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100\n', 'added once');
});

t.test('hostname: set with --hostname, kept without', async (t) => {
  const root = target(t, { 'etc/fstab': '' });
  t.equal(fix(['--devices', '/dev/null', root]).status, 0);
  t.equal(read(root, 'etc/hostname'), 'oldname\n', 'kept without --hostname');
  const r = fix(['--hostname', 'web1.example.com', '--devices', '/dev/null', root]);
  t.equal(r.status, 0, r.stderr);
  t.equal(read(root, 'etc/hostname'), 'web1\n');
  t.equal(read(root, 'etc/hosts'), '127.0.0.1\tlocalhost\n127.0.1.1\tweb1.example.com web1\n\n# IPv6\n::1\tlocalhost ip6-localhost\n');
  const bare = tempDir(t, 'bare');
  makeTree(bare, { 'etc/fstab': '' });
  t.equal(fix(['--hostname=db2', '--devices', '/dev/null', bare]).status, 0);
  t.equal(read(bare, 'etc/hosts'), '127.0.0.1\tlocalhost\n127.0.1.1\tdb2\n');
});

t.test('bad input: clear error, exit 2, target untouched', async (t) => {
  const root = target(t, { 'etc/fstab': 'UUID=x / ext4 defaults 0 1\n' });
  const before = snapshot(root);
  const cases: [string[], RegExp][] = [
    [[], /usage: ramboot-fix/],
    [['relative/target'], /TARGET must be an absolute path/],
    [['/'], /refusing to fix \//],
    [[join(root, 'missing')], /TARGET is not a directory/],
    [[join(root, 'usr')], /etc does not exist/],
    [['--hostname', '-bad', root], /invalid hostname/],
    [['--hostname', 'a_b', root], /invalid hostname/],
    [['--hostname', 'x;reboot', root], /invalid hostname/],
    [['--hostname', `${'a'.repeat(64)}`, root], /invalid hostname/],
    [['--serial', 'ttyS0;reboot', root], /invalid serial console/],
    [['--devices', join(root, 'nope'), root], /--devices: cannot read/],
    [['--frobnicate', root], /unknown option: --frobnicate/],
    [[root, root], /only one TARGET/],
    [['--hostname'], /--hostname needs a value/],
  ];
  for (const [args, why] of cases) {
    const r = fix(args);
    t.equal(r.status, 2, `${JSON.stringify(args)} exits 2`);
    t.match(r.stderr, why, `${JSON.stringify(args)}: ${r.stderr.trim().split('\n')[0]}`);
  }
  t.same(snapshot(root), before, 'target untouched');
});

t.test('a fix never writes outside the target through an absolute symlink', async (t) => {
  const outside = tempDir(t, 'outside');
  writeFileSync(join(outside, 'hostname'), 'ramboot-os\n');
  const root = tempDir(t, 'target');
  makeTree(root, { 'etc/fstab': '', 'etc/hostname': { link: join(outside, 'hostname') } });
  const r = fix(['--hostname', 'web1', '--devices', '/dev/null', root]);
  t.equal(r.status, 0, r.stderr);
  t.equal(read(outside, 'hostname'), 'ramboot-os\n', 'the file the link pointed at is untouched');
  t.equal(read(root, 'etc/hostname'), 'web1\n', 'the link was replaced by a file');

  const root2 = tempDir(t, 'target');
  makeTree(root2, { 'etc/fstab': '', 'etc/udev': { link: outside } });
  mkdirSync(join(outside, 'rules.d'));
  writeFileSync(join(outside, 'rules.d/70-persistent-net.rules'), 'host rules\n');
  const r2 = fix(['--devices', '/dev/null', root2]);
  t.equal(r2.status, 1, 'the fix fails');
  t.match(r2.stderr, /resolves outside the target/);
  t.ok(existsSync(join(outside, 'rules.d/70-persistent-net.rules')), 'host file not removed');
});

t.test('real block devices: discovery with blkid and findmnt on a mounted loop device', async (t) => {
  if (!requirements(t, ['root'])) return;
  const tools = ['losetup', 'mkfs.ext4', 'mkswap', 'blkid', 'findmnt', 'mount', 'umount'];
  const missing = tools.filter((x) => findExecutable(x) === undefined).map((x) => `${x} not found (util-linux, e2fsprogs, mount)`);
  if (missing.length === 0 && spawnSync('losetup', ['-f'], { encoding: 'utf8' }).status !== 0) missing.push('no free loop device (losetup -f failed)');
  if (missing.length) {
    const reason = missing.join('; ');
    if (isCI()) t.fail(`missing test requirement under CI=true: ${reason}`);
    else {
      t.comment(`!!!!! SKIPPING: missing test requirement: ${reason}`);
      t.pass(`missing requirement: ${reason}`, { skip: reason });
    }
    return;
  }
  const dir = tempDir(t, 'loop');
  const sh = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000 });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  const loops: string[] = [];
  const mnt = join(dir, 'target');
  mkdirSync(mnt);
  let mounted = false;
  t.teardown(() => {
    if (mounted) spawnSync('umount', [mnt]);
    for (const l of loops) spawnSync('losetup', ['-d', l]);
  });
  const img = (name: string): string => {
    const p = join(dir, name);
    writeFileSync(p, '');
    sh('truncate', ['-s', '32M', p]);
    const l = sh('losetup', ['-f', '--show', p]);
    loops.push(l);
    return l;
  };
  const rootDev = img('root.img');
  const swapDev = img('swap.img');
  sh('mkfs.ext4', ['-q', '-F', rootDev]);
  sh('mkswap', [swapDev]);
  sh('mount', [rootDev, mnt]);
  mounted = true;
  const uuid = sh('blkid', ['-c', '/dev/null', '-o', 'value', '-s', 'UUID', rootDev]);
  const swapUuid = sh('blkid', ['-c', '/dev/null', '-o', 'value', '-s', 'UUID', swapDev]);
  mkdirSync(join(mnt, 'etc'));
  writeFileSync(join(mnt, 'etc/fstab'), '# from the image\nUUID=image-root / ext4 errors=remount-ro 0 1\nUUID=image-swap none swap sw 0 0\n/dev/ramboot-gone1 /data ext4 defaults 0 2\n');
  const r = fix(['--hostname', 'loop1', mnt]);
  t.equal(r.status, 0, r.stderr);
  const fstab = read(mnt, 'etc/fstab');
  t.match(fstab, new RegExp(`^UUID=${uuid} / ext4 errors=remount-ro 0 1$`, 'm'), 'root to the real UUID');
  // Other loop devices on this shared machine may hold swap areas too: only check that the entry
  // now names an existing swap area (ours when it is the only one).
  const swapLine = fstab.split('\n').find((l) => /\sswap\s/.test(l) && !l.startsWith('#')) ?? '';
  t.match(swapLine, /^UUID=\S+ none swap sw 0 0$/, `swap entry rewritten: ${swapLine}`);
  const allSwap = sh('blkid', ['-c', '/dev/null', '-t', 'TYPE=swap', '-o', 'value', '-s', 'UUID']).split('\n');
  t.ok(allSwap.includes(swapLine.slice(5).split(' ')[0] ?? ''), 'names an existing swap area');
  if (allSwap.length === 1) t.equal(swapLine.slice(5).split(' ')[0], swapUuid);
  t.match(fstab, /^# ramboot-fix: device not found: \/dev\/ramboot-gone1/m);
  t.equal(read(mnt, 'etc/hostname'), 'loop1\n');
  rmSync(join(mnt, 'etc'), { recursive: true });
});
