import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InspectError, normaliseMbrType, parseBlkidExport, parseInspection, parseMdstat, parseSwaps, splitSections } from './inspect.js';
import { INSPECT_SCRIPT, inspectRemoteCommand } from './inspect-script.js';
import { parseFstab } from './fstab.js';
import { plan } from './plan.js';
import type { Inventory } from './types.js';

const FIXTURES = join(fileURLToPath(new URL('.', import.meta.url)), 'fixtures');
const fixture = (name: string) => readFileSync(join(FIXTURES, `${name}.txt`), 'utf8');
const inv = (name: string): Inventory => parseInspection(fixture(name));

t.test('every captured fixture parses, and the inventory is plain JSON', async (t) => {
  const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.txt'));
  t.ok(files.length >= 7, `${files.length} fixtures`);
  for (const f of files) {
    const i = parseInspection(readFileSync(join(FIXTURES, f), 'utf8'));
    t.same(JSON.parse(JSON.stringify(i)), i, `${f}: JSON round trip`);
    for (const d of i.disks) for (const p of d.partitions) t.ok(p.startBytes % 512 === 0 && p.sizeBytes > 0, `${f} ${p.path}: sane geometry`);
  }
});

t.test('GPT + BIOS boot + ext4 / + ext4 /home + swap (cold)', async (t) => {
  const g = inv('cold-gpt-bios');
  t.equal(g.mode, 'cold');
  t.equal(g.bootMode, 'bios');
  t.equal(g.hostname, 'src-bios');
  t.equal(g.rootDevice, '/dev/vda2');
  t.equal(g.fstabFrom, '/dev/vda2:/etc/fstab');
  const vda = g.disks[0]!;
  t.equal(vda.table, 'gpt');
  t.equal(vda.sizeBytes, 3 * 2 ** 30);
  t.match(vda.tableId, /^[0-9A-F-]{36}$/);
  t.same(vda.partitions.map((p) => [p.number, p.role, p.name]), [[1, 'bios-boot', 'bios'], [2, 'data', 'root'], [3, 'data', 'home'], [4, 'swap', 'swap']]);
  t.same(vda.partitions[0]!.attrs, ['LegacyBIOSBootable']);
  t.equal(vda.partitions[0]!.startBytes, 2 ** 20, 'starts at 1 MiB');
  t.equal(vda.partitions[1]!.sizeBytes, 1200 * 2 ** 20);
  t.equal(vda.partitions[2]!.type, '933AC7E1-2EB4-4F13-B844-0E14E2AEF915');
  const root = vda.partitions[1]!.fs!;
  t.equal(root.type, 'ext4');
  t.equal(root.label, 'root');
  t.equal(root.mountpoint, '/');
  t.equal(root.mountedAt, null, 'cold: nothing stays mounted');
  t.ok(root.usedBytes! > 100 * 2 ** 20 && root.usedBytes! < 200 * 2 ** 20, `used ${root.usedBytes}`);
  t.equal(vda.partitions[3]!.fs!.type, 'swap');
  t.same(g.fstab.map((e) => [e.file, e.device]), [['/', '/dev/vda2'], ['/home', '/dev/vda3'], ['none', '/dev/vda4'], ['/tmp', null]], 'UUID= and /dev/ lines resolved');
  t.equal(g.disks[1]!.table, null, 'second disk blank');
  t.ok(vda.byPath.length > 0, 'by-path links');
  t.same(g.unsupported, []);
});

t.test('UEFI with a vfat ESP (cold, OVMF)', async (t) => {
  const e = inv('cold-uefi');
  t.equal(e.bootMode, 'uefi');
  const p = e.disks[0]!.partitions;
  t.same(p.map((x) => x.role), ['esp', 'data', 'swap']);
  t.equal(p[0]!.fs!.type, 'vfat');
  t.equal(p[0]!.fs!.version, 'FAT32');
  t.match(p[0]!.fs!.uuid, /^[0-9A-F]{4}-[0-9A-F]{4}$/);
  t.equal(p[0]!.fs!.mountpoint, '/boot/efi');
  t.ok(p[0]!.fs!.usedBytes! >= 4 * 2 ** 20, 'ESP used bytes measured');
  t.equal(e.rootDevice, '/dev/vda2');
});

t.test('MBR with an extended partition and logical ones (cold)', async (t) => {
  const m = inv('cold-mbr');
  const d = m.disks[0]!;
  t.equal(d.table, 'dos');
  t.match(d.tableId, /^0x[0-9a-f]{8}$/);
  t.same(d.partitions.map((p) => [p.number, p.type, p.role, p.bootable]), [[1, '83', 'data', true], [2, '05', 'extended', false], [5, '82', 'swap', false], [6, '83', 'data', false]]);
  t.equal(d.partitions[0]!.name, null);
  t.same(d.partitions[0]!.attrs, []);
  t.match(d.partitions[0]!.partuuid, /^[0-9a-f]{8}-01$/);
  t.equal(m.rootDevice, '/dev/vda1');
  t.equal(m.fstab.find((e) => e.file === '/srv')?.device, '/dev/vda6', '/dev/vda6 line resolved');
  t.equal(d.partitions[3]!.fs!.mountpoint, '/srv');
});

t.test('LVM: PV, VG, LVs with ext4, xfs, swap (cold)', async (t) => {
  const l = inv('cold-lvm');
  t.ok(l.lvm.available);
  t.same(l.lvm.pvs.map((p) => [p.device, p.vg]), [['/dev/vda3', 'vg0']]);
  const vg = l.lvm.vgs[0]!;
  t.equal(vg.name, 'vg0');
  t.equal(vg.extentBytes, 4 * 2 ** 20);
  t.same(vg.pvs, ['/dev/vda3']);
  const lv = (n: string) => l.lvm.lvs.find((x) => x.name === n)!;
  t.equal(lv('root').path, '/dev/vg0/root');
  t.equal(lv('root').mapperPath, '/dev/mapper/vg0-root');
  t.equal(lv('root').sizeBytes, 1200 * 2 ** 20);
  t.equal(lv('root').segtype, 'linear');
  t.equal(lv('root').fs?.mountpoint, '/');
  t.equal(lv('home').fs?.type, 'xfs');
  t.equal(lv('home').fs?.mountpoint, '/home');
  t.ok((lv('home').fs?.usedBytes ?? 0) > 0, 'xfs mounted ro,norecovery and measured');
  t.equal(lv('swap').fs?.type, 'swap');
  t.equal(l.rootDevice, '/dev/vg0/root', '/dev/mapper/vg0-root in fstab resolves to the LV');
  t.same(l.fstab.map((e) => e.device), ['/dev/vg0/root', '/dev/vda2', '/dev/vg0/home', '/dev/vg0/swap']);
  t.equal(l.disks[0]!.partitions[2]!.role, 'lvm');
});

t.test('LUKS and md RAID members are named as uncarryable', async (t) => {
  const u = inv('cold-luks-md');
  const kinds = u.unsupported.map((x) => `${x.kind} ${x.device} ${x.inUse}`).sort();
  t.same(kinds, ['luks /dev/vda3 true', 'md-raid /dev/vda4 true', 'md-raid /dev/vdb1 true', 'missing-device /dev/mapper/secret false'], JSON.stringify(u.unsupported));
  t.equal(u.disks[0]!.partitions[2]!.role, 'luks');
  t.equal(u.disks[0]!.partitions[3]!.role, 'raid');
  t.equal(u.fstab.find((e) => e.file === '/data')?.device, '/dev/md0');
});

t.test('live: mounts and active swap of the running system', async (t) => {
  const l = inv('live-ramos-home-swap');
  t.equal(l.mode, 'live');
  t.equal(l.fstabFrom, '/etc/fstab');
  t.equal(l.rootDevice, null, 'the RAM OS root is not a disk');
  t.same(l.swaps.map((s) => [s.device, s.kind, s.sizeBytes > 0]), [['/dev/vda4', 'partition', true]]);
  const home = l.disks[0]!.partitions[2]!.fs!;
  t.equal(home.mountedAt, '/home');
  t.equal(home.mountpoint, '/home');
  t.ok(home.usedBytes! > 40 * 2 ** 20, 'used bytes from findmnt');
});

t.test('blank machine with two disks (what a target looks like)', async (t) => {
  const b = inv('cold-bios-blank-2disks');
  t.same(b.disks.map((d) => [d.path, d.sizeBytes, d.table, d.removable]), [['/dev/vda', 3 * 2 ** 30, null, false], ['/dev/vdb', 2 * 2 ** 30, null, false]]);
  t.equal(b.rootDevice, null);
  t.same(b.fstab, []);
  t.equal(b.fstabFrom, null);
});

// ---------------------------------------------------------------------------------------------------
// Bad and partial output: clear errors, never a crash.

const good = fixture('cold-gpt-bios');

t.test('truncated, headerless, wrong version', async (t) => {
  t.throws(() => parseInspection(good.slice(0, good.length / 2)), { name: 'InspectError', message: /truncated/ });
  t.throws(() => parseInspection(good.replace('@@ramboot-inspect-done\n', '')), { message: /no "@@ramboot-inspect-done"/ });
  t.throws(() => parseInspection('sh: 1: lsblk: not found\n'), { message: /no "@@ramboot-inspect <version> <mode>" header/ });
  t.throws(() => parseInspection(good.replace('@@ramboot-inspect 1 cold', '@@ramboot-inspect 2 cold')), { message: /version 2 not understood/ });
  t.throws(() => parseInspection(''), InspectError);
});

t.test('a failed or missing required tool names the section and why', async (t) => {
  const noLsblk = good.replace(/@@ramboot-inspect-begin lsblk\n[\s\S]*?@@ramboot-inspect-end lsblk 0/, '@@ramboot-inspect-begin lsblk\n\n@@ramboot-inspect-stderr lsblk\nsh: 1: lsblk: not found\n@@ramboot-inspect-end lsblk 127');
  t.throws(() => parseInspection(noLsblk), { message: /lsblk failed \(command not found\): sh: 1: lsblk: not found/ });
  const badJson = good.replace('"blockdevices": [', '"blockdevices": [[');
  t.throws(() => parseInspection(badJson), { message: /lsblk output is not JSON|lsblk output not as expected/ });
  const badShape = good.replace(/"size": 3221225472/, '"size": "three"');
  t.throws(() => parseInspection(badShape), { message: /lsblk output not as expected: blockdevices\.\d+\.size/ });
  const noFindmnt = good.replace(/@@ramboot-inspect-begin findmnt\n[\s\S]*?@@ramboot-inspect-end findmnt 0\n/, '');
  t.throws(() => parseInspection(noFindmnt), { message: /no "findmnt" section/ });
  t.throws(() => parseInspection(good.replace(/^(@@ramboot-inspect-begin firmware\n)bios/m, '$1amiga')), { message: /firmware "amiga" not understood/ });
});

t.test('missing LVM tools: no LVM, and an LVM signature becomes uncarryable', async (t) => {
  const lvmOut = fixture('cold-lvm');
  const stripped = lvmOut.replace(/@@ramboot-inspect-begin (pvs|vgs|lvs)\n[\s\S]*?@@ramboot-inspect-end \1 0\n/g, '');
  t.not(stripped, lvmOut);
  const i = parseInspection(stripped);
  t.equal(i.lvm.available, false);
  t.same(i.unsupported.filter((u) => u.kind === 'lvm-unsupported').map((u) => [u.device, u.inUse]), [['/dev/vda3', true]], 'the PV is named, in use');
  t.same(i.lvm.lvs, []);
});

t.test('an fstab line that names a missing device, a network fs, a swap file', async (t) => {
  const extra = good.replace(/(@@ramboot-inspect-begin fstab \/dev\/vda2:\/etc\/fstab\n[\s\S]*?)(\n@@ramboot-inspect-stderr)/, '$1\nUUID=0000-dead /mnt/usb vfat noauto 0 0\nLABEL=gone /opt ext4 defaults 0 2\nnas:/export /nas nfs defaults 0 0\n/swapfile none swap sw 0 0$2');
  const i = parseInspection(extra);
  t.same(i.unsupported.map((u) => [u.kind, u.device, u.inUse]), [
    ['missing-device', 'UUID=0000-dead', false],
    ['missing-device', 'LABEL=gone', true],
    ['network-fs', 'nas:/export', false],
    ['swap-file', '/swapfile', false],
  ]);
});

t.test('btrfs subvolumes are named, in use (their layout is not carried)', async (t) => {
  const sub = good.replace(/(@@ramboot-inspect-begin fstab \/dev\/vda2:\/etc\/fstab\n[\s\S]*?)(\n@@ramboot-inspect-stderr)/, '$1\nLABEL=home /srv btrfs subvol=@srv 0 0\nLABEL=home /var btrfs subvolid=257 0 0$2');
  const i = parseInspection(sub);
  t.same(i.unsupported.map((u) => [u.kind, u.device, u.mountpoint, u.inUse]), [['other', '/dev/vda3', '/srv', true]]);
  t.match(i.unsupported[0]!.reason, /btrfs subvolumes \(mounted at \/srv, \/var\)/);
});

t.test('small formats', async (t) => {
  t.same(parseFstab('# c\n\nUUID=a / ext4 defaults 0 1\n/dev/x\\040y /mnt/a\\040b ext4\n'), [
    { spec: 'UUID=a', file: '/', vfstype: 'ext4', options: 'defaults', dump: 0, pass: 1 },
    { spec: '/dev/x y', file: '/mnt/a b', vfstype: 'ext4', options: 'defaults', dump: 0, pass: 0 },
  ]);
  t.throws(() => parseFstab('UUID=a /\n'), /line 1: expected at least 3 fields/);
  t.throws(() => parseFstab('UUID=a / ext4 defaults x 1\n'), /dump must be a number/);
  t.same(parseSwaps('Filename Type Size Used Priority\n/dev/vda4 partition 262140 0 -2\n/swapfile file 1024 4 -3\n'), [
    { device: '/dev/vda4', kind: 'partition', sizeBytes: 262140 * 1024, usedBytes: 0, priority: -2 },
    { device: '/swapfile', kind: 'file', sizeBytes: 1024 * 1024, usedBytes: 4096, priority: -3 },
  ]);
  t.throws(() => parseSwaps('Filename Type Size Used Priority\n/dev/vda4 partition lots\n'), /not understood/);
  const md = parseMdstat('Personalities : [raid1]\nmd0 : active raid1 vdb1[1] vda4[0]\n      306176 blocks super 1.2 [2/2] [UU]\n\nunused devices: <none>\n');
  t.same([...md.entries()], [['md0', { state: 'active', level: 'raid1', members: ['vdb1', 'vda4'] }]]);
  t.same([...parseBlkidExport('DEVNAME=/dev/vda2\nLABEL=my\\ disk\nTYPE=ext4\n\nDEVNAME=/dev/vda4\nTYPE=swap\n').entries()], [
    ['/dev/vda2', { DEVNAME: '/dev/vda2', LABEL: 'my disk', TYPE: 'ext4' }],
    ['/dev/vda4', { DEVNAME: '/dev/vda4', TYPE: 'swap' }],
  ]);
  t.equal(normaliseMbrType('5'), '05');
  t.equal(normaliseMbrType('0x8E'), '8e');
  t.throws(() => normaliseMbrType('zz'), InspectError);
  const s = splitSections('@@ramboot-inspect 1 live\n@@ramboot-inspect-begin a b\nx\ny\n\n@@ramboot-inspect-stderr a b\noops\n@@ramboot-inspect-end a b 3\n@@ramboot-inspect-done\n');
  t.same(s.sections.get('a b'), { name: 'a b', stdout: 'x\ny', stderr: 'oops', rc: 3 }, 'the marker newline (and the last one of the output) dropped');
});

t.test('the script: fixed text, one argument, no template holes', async (t) => {
  t.equal(inspectRemoteCommand('cold'), 'sh -s -- cold');
  t.equal(inspectRemoteCommand('live'), 'sh -s -- live');
  t.throws(() => inspectRemoteCommand('x; rm -rf /' as 'live'), /live or cold/);
  t.notMatch(INSPECT_SCRIPT, /\$\{/, 'no "${" in the script (it is a template literal)');
  t.match(INSPECT_SCRIPT, /ro,noload/);
  t.match(INSPECT_SCRIPT, /ro,norecovery/);
  t.notMatch(INSPECT_SCRIPT, /rm -r/, 'never removes recursively (a stuck mount must not be walked)');
});

t.test('never a crash: cut or damaged output gives an InspectError or a valid inventory', async (t) => {
  let errors = 0;
  let parsed = 0;
  const blankTarget = inv('cold-bios-blank-2disks');
  const files = readdirSync(FIXTURES).filter((f) => f.endsWith('.txt'));
  for (const f of files) {
    const text = readFileSync(join(FIXTURES, f), 'utf8');
    const variants: string[] = [];
    for (let i = 1; i < 40; i++) variants.push(text.slice(0, Math.floor((text.length * i) / 40)));
    // Damage inside the content but keep the markers: delete a line, swap a value type, drop a key.
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i += Math.max(1, Math.floor(lines.length / 60))) {
      if (lines[i]!.startsWith('@@')) continue;
      variants.push([...lines.slice(0, i), ...lines.slice(i + 1)].join('\n'));
      variants.push([...lines.slice(0, i), lines[i]!.replace(/: (\d+|"[^"]*"|true|false|null)/, ': {}'), ...lines.slice(i + 1)].join('\n'));
    }
    for (const v of variants) {
      try {
        const inv = parseInspection(v);
        // The planner takes whatever the parser accepts without throwing.
        const p = plan(inv, blankTarget, { disk: '/dev/vda' });
        if (p.kind !== 'plan' && p.kind !== 'refusal') t.fail('plan or refusal');
        parsed++;
      } catch (e) {
        if (!(e instanceof InspectError)) {
          t.fail(`${f}: ${(e as Error).name}: ${(e as Error).message}`);
          return;
        }
        errors++;
      }
    }
  }
  t.comment(`${errors} damaged outputs refused with an InspectError, ${parsed} still valid`);
  t.ok(errors > 100);
});

t.test('cold: the source system\'s name comes from its own root, not from the RAM OS it runs now', async (t) => {
  const section = (name: string, body: string, rc = 0) => `@@ramboot-inspect-begin ${name}\n${body}\n@@ramboot-inspect-stderr ${name}\n\n@@ramboot-inspect-end ${name} ${rc}\n`;
  const base = fixture('cold-gpt-bios');
  // a section goes before the script's closing marker
  const withSection = (extra: string) => base.replace('@@ramboot-inspect-done', `${extra}@@ramboot-inspect-done`);
  t.equal(parseInspection(base).hostname, 'src-bios', 'without /etc/hostname in the root: the running name');
  t.match(parseInspection(base).warnings ?? [], [/no usable \/etc\/hostname/], 'and a warning says so');
  const named = withSection(section('etc-hostname /dev/vda2:/etc/hostname', 'source-vm\n'));
  t.equal(parseInspection(named).hostname, 'source-vm', 'the root\'s /etc/hostname wins');
  const other = withSection(section('etc-hostname /dev/vda3:/etc/hostname', 'not-the-root\n'));
  t.equal(parseInspection(other).hostname, 'src-bios', 'a hostname file on another filesystem is not the root\'s');
  const bad = withSection(section('etc-hostname /dev/vda2:/etc/hostname', 'bad name; rm -rf /\n'));
  t.equal(parseInspection(bad).hostname, 'src-bios', 'an unusable name is not taken');
  t.match(parseInspection(bad).warnings ?? [], [/no usable \/etc\/hostname \("bad name; rm -rf \/"\)/]);
});
