import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseInspection } from './inspect.js';
import { canonicalJson, HEADROOM_BYTES, MiB, plan } from './plan.js';
import { isRefusal, type Inventory, type Plan, type PlanRefusal } from './types.js';

const FIXTURES = join(fileURLToPath(new URL('.', import.meta.url)), 'fixtures');
const inv = (name: string): Inventory => parseInspection(readFileSync(join(FIXTURES, `${name}.txt`), 'utf8'));
const GiB = 2 ** 30;

/** A blank target (from the captured blank machine) with disks of these sizes. */
function target(sizes: number[], bootMode: 'bios' | 'uefi' = 'bios'): Inventory {
  const b = inv('cold-bios-blank-2disks');
  const proto = b.disks[0]!;
  b.hostname = 'target';
  b.bootMode = bootMode;
  b.disks = sizes.map((size, i) => ({
    ...proto, path: `/dev/vd${'abcd'[i]}`, name: `vd${'abcd'[i]}`, sizeBytes: size,
    byId: [`/dev/disk/by-id/virtio-disk${i}`], byPath: [`/dev/disk/by-path/pci-0000:00:0${3 + i}.0`],
  }));
  return b;
}

function mustPlan(p: Plan | PlanRefusal): Plan {
  if (isRefusal(p)) throw new Error(`refused: ${p.reason}`);
  return p;
}

function checkGeometry(t: Test, p: Plan): void {
  const sorted = [...p.partitions].filter((x) => x.role !== 'extended').sort((a, b) => a.startBytes - b.startBytes);
  for (const x of p.partitions) {
    t.equal(x.startBytes % MiB, 0, `${x.device} starts on a MiB`);
    t.equal(x.sizeBytes % MiB, 0, `${x.device} size in whole MiB`);
    t.equal(x.startSector * p.target.disk.sectorSize, x.startBytes);
    t.equal(x.sizeSectors * p.target.disk.sectorSize, x.sizeBytes);
  }
  for (let i = 1; i < sorted.length; i++) t.ok(sorted[i]!.startBytes >= sorted[i - 1]!.startBytes + sorted[i - 1]!.sizeBytes, `${sorted[i]!.device} after ${sorted[i - 1]!.device}`);
  const end = Math.max(...p.partitions.map((x) => x.startBytes + x.sizeBytes));
  t.ok(end <= p.target.disk.sizeBytes - (p.table === 'gpt' ? MiB : 0), `ends (${end}) inside the disk, GPT backup room kept`);
  for (const f of p.filesystems) t.ok(f.sizeBytes >= f.minBytes, `${f.device}: ${f.sizeBytes} >= min ${f.minBytes}`);
  t.same(JSON.parse(JSON.stringify(p)), p, 'plain JSON');
  t.match(p.hash, /^[0-9a-f]{64}$/);
}

t.test('GPT BIOS source -> bigger BIOS target: same layout, scaled, UUIDs kept', async (t) => {
  const src = inv('cold-gpt-bios');
  const p = mustPlan(plan(src, target([4 * GiB])));
  checkGeometry(t, p);
  t.equal(p.table, 'gpt');
  t.equal(p.target.disk.device, '/dev/vda');
  t.same(p.partitions.map((x) => [x.number, x.device, x.role, x.name, x.sizing]), [
    [1, '/dev/vda1', 'bios-boot', 'bios', 'fixed'], [2, '/dev/vda2', 'data', 'root', 'scaled'], [3, '/dev/vda3', 'data', 'home', 'scaled'], [4, '/dev/vda4', 'swap', 'swap', 'fixed'],
  ]);
  t.same(p.partitions.map((x) => x.type), src.disks[0]!.partitions.map((x) => x.type), 'type GUIDs kept');
  t.same(p.partitions[0]!.attrs, ['LegacyBIOSBootable'], 'GPT attributes kept');
  t.equal(p.partitions[0]!.sizeBytes, MiB);
  t.equal(p.partitions[3]!.sizeBytes, 256 * MiB, 'swap keeps its size');
  const k = (4 * GiB - 257 * MiB) / (3 * GiB - 257 * MiB);
  t.equal(p.totals.scale, Math.round(k * 10000) / 10000);
  t.equal(p.partitions[1]!.sizeBytes, Math.floor((1200 * MiB * k) / MiB) * MiB, 'root scaled in proportion');
  t.equal(p.partitions[2]!.sizeBytes, Math.floor((700 * MiB * k) / MiB) * MiB, '/home scaled in proportion');
  t.ok(p.partitions[1]!.sizeBytes / p.partitions[2]!.sizeBytes - 1200 / 700 < 0.01, 'proportions kept');
  const srcRoot = src.disks[0]!.partitions[1]!.fs!;
  t.same(p.filesystems.map((f) => [f.device, f.type, f.uuid, f.label, f.mountpoint]), [
    ['/dev/vda2', 'ext4', srcRoot.uuid, 'root', '/'],
    ['/dev/vda3', 'ext4', src.disks[0]!.partitions[2]!.fs!.uuid, 'home', '/home'],
    ['/dev/vda4', 'swap', src.disks[0]!.partitions[3]!.fs!.uuid, 'swap', null],
  ]);
  t.same(p.mounts, [{ mountpoint: '/', device: '/dev/vda2', vfstype: 'ext4' }, { mountpoint: '/home', device: '/dev/vda3', vfstype: 'ext4' }]);
  t.same(p.copies.map((c) => [c.mountpoint, c.sourceDevice, c.sourcePath, c.targetDevice]), [['/', '/dev/vda2', null, '/dev/vda2'], ['/home', '/dev/vda3', null, '/dev/vda3']], 'cold: no source path, transfer-run mounts read-only');
  t.same(p.swap.map((s) => s.device), ['/dev/vda4']);
  t.same(p.boot, { mode: 'bios', table: 'gpt', disk: '/dev/vda', biosBoot: { device: '/dev/vda1', added: false }, esp: null });
  t.same(p.cannotCarry, [], 'the blank second source disk is not worth naming');
  t.equal(p.totals.usedBytes, srcRoot.usedBytes! + src.disks[0]!.partitions[2]!.fs!.usedBytes!);
});

t.test('smaller target: scaled down but never below used + headroom', async (t) => {
  const src = inv('cold-gpt-bios');
  const p = mustPlan(plan(src, target([1 * GiB])));
  checkGeometry(t, p);
  const used = src.disks[0]!.partitions[1]!.fs!.usedBytes!;
  const min = Math.ceil((used * 1.1 + HEADROOM_BYTES) / MiB) * MiB;
  t.ok(p.partitions[1]!.sizeBytes >= min, `root ${p.partitions[1]!.sizeBytes} >= ${min}`);
  t.equal(p.filesystems[0]!.minBytes, min);

  // So small that the minimums decide: the root is raised to its minimum, the others share the rest.
  const tight = mustPlan(plan(src, target([600 * MiB])));
  checkGeometry(t, tight);
  t.equal(tight.partitions[1]!.sizing, 'minimum');
  t.equal(tight.partitions[1]!.sizeBytes, min);
});

t.test('too small: refused before anything, with the numbers per filesystem', async (t) => {
  const src = inv('cold-gpt-bios');
  const r = plan(src, target([400 * MiB]));
  t.ok(isRefusal(r));
  if (!isRefusal(r)) return;
  t.equal(r.code, 'too-small');
  t.equal(r.availableBytes, 400 * MiB);
  t.ok(r.neededBytes! > 400 * MiB, `needed ${r.neededBytes}`);
  t.match(r.reason, /target disk \/dev\/vda is too small: .* needed .* 400 MiB available/);
  t.same(r.filesystems.map((f) => [f.device, f.mountpoint, f.type]), [
    ['/dev/vda1', null, null], ['/dev/vda2', '/', 'ext4'], ['/dev/vda3', '/home', 'ext4'], ['/dev/vda4', null, 'swap'],
  ]);
  const k = (400 * MiB - 257 * MiB) / (3 * GiB - 257 * MiB);
  t.same(r.filesystems.map((f) => f.plannedBytes), [MiB, Math.floor((1200 * MiB * k) / MiB) * MiB, Math.floor((700 * MiB * k) / MiB) * MiB, 256 * MiB], 'planned = what scaling alone would give');
  t.ok(r.filesystems[1]!.plannedBytes! < r.filesystems[1]!.minBytes, 'below the minimum: the reason it is refused');
  const root = r.filesystems[1]!;
  t.equal(root.usedBytes, src.disks[0]!.partitions[1]!.fs!.usedBytes);
  t.ok(root.minBytes > root.usedBytes!, 'minimum above used');
  const sum = r.filesystems.reduce((a, f) => a + f.minBytes, 0);
  t.ok(r.neededBytes! >= sum, 'needed covers every minimum');
});

t.test('MBR: primaries, the extended container around logical partitions, boot flag', async (t) => {
  const src = inv('cold-mbr');
  const p = mustPlan(plan(src, target([4 * GiB])));
  checkGeometry(t, p);
  t.equal(p.table, 'dos');
  t.same(p.partitions.map((x) => [x.number, x.type, x.role, x.bootable]), [[1, '83', 'data', true], [2, '05', 'extended', false], [5, '82', 'swap', false], [6, '83', 'data', false]]);
  const [, ext, l5, l6] = p.partitions;
  t.equal(l5!.startBytes, ext!.startBytes + MiB, 'first logical after its EBR');
  t.equal(l6!.startBytes, l5!.startBytes + l5!.sizeBytes + MiB, 'next logical after its EBR');
  t.equal(ext!.startBytes + ext!.sizeBytes, l6!.startBytes + l6!.sizeBytes, 'the container ends with the last logical');
  t.equal(ext!.sizing, 'container');
  t.equal(p.boot.biosBoot, null, 'MBR on BIOS needs no BIOS boot partition');
  t.same(p.mounts.map((m) => [m.mountpoint, m.device]), [['/', '/dev/vda1'], ['/srv', '/dev/vda6']]);
  t.same(p.swap.map((s) => s.device), ['/dev/vda5']);

  // UEFI target: an ESP is added in a free primary slot.
  const u = mustPlan(plan(src, target([4 * GiB], 'uefi')));
  checkGeometry(t, u);
  const esp = u.partitions.find((x) => x.role === 'esp')!;
  t.same([esp.number, esp.type, esp.added, esp.startBytes], [3, 'ef', true, MiB]);
});

t.test('LVM: the PV scaled, the LVs scaled within the VG in whole extents', async (t) => {
  const src = inv('cold-lvm');
  const p = mustPlan(plan(src, target([2 * GiB])));
  checkGeometry(t, p);
  t.same(p.partitions.map((x) => x.role), ['bios-boot', 'data', 'lvm']);
  t.equal(p.lvm.length, 1);
  const vg = p.lvm[0]!;
  t.equal(vg.name, 'vg0');
  t.same(vg.pvs, ['/dev/vda3']);
  t.equal(vg.extentBytes, 4 * MiB);
  t.ok(vg.sizeBytes <= p.partitions[2]!.sizeBytes - MiB, 'VG inside its PV (metadata kept)');
  const lv = (n: string) => vg.lvs.find((x) => x.name === n)!;
  for (const x of vg.lvs) t.equal(x.sizeBytes, x.extents * vg.extentBytes, `${x.name} in whole extents`);
  t.ok(vg.lvs.reduce((a, x) => a + x.sizeBytes, 0) <= vg.sizeBytes, 'LVs fit the VG');
  t.equal(lv('swap').sizeBytes, 200 * MiB, 'swap LV keeps its size');
  t.equal(lv('swap').sizing, 'fixed');
  t.ok(lv('root').sizeBytes < 1200 * MiB, 'root LV scaled down with the smaller disk');
  t.ok(lv('home').sizeBytes >= 300 * MiB, 'xfs never below 300 MiB');
  t.same(p.mounts.map((m) => [m.mountpoint, m.device, m.vfstype]), [['/', '/dev/vg0/root', 'ext4'], ['/boot', '/dev/vda2', 'ext4'], ['/home', '/dev/vg0/home', 'xfs']]);
  t.same(p.swap.map((s) => s.device), ['/dev/vg0/swap']);
  t.equal(p.filesystems.find((f) => f.device === '/dev/vg0/root')?.uuid, src.lvm.lvs.find((x) => x.name === 'root')?.fs?.uuid, 'LV filesystem UUID kept');

  const big = mustPlan(plan(src, target([6 * GiB])));
  checkGeometry(t, big);
  t.ok(big.lvm[0]!.lvs.find((x) => x.name === 'root')!.sizeBytes > 1200 * MiB, 'root LV grows with a bigger disk');
});

t.test('boot partitions: BIOS boot added for a BIOS target, ESP added for a UEFI one', async (t) => {
  const uefiSrc = inv('cold-uefi');
  const b = mustPlan(plan(uefiSrc, target([4 * GiB], 'bios')));
  checkGeometry(t, b);
  const bb = b.partitions[0]!;
  t.same([bb.number, bb.role, bb.type, bb.sizeBytes, bb.startBytes, bb.added, bb.sizing, bb.source], [4, 'bios-boot', '21686148-6449-6E6F-744E-656564454649', MiB, MiB, true, 'added', null]);
  t.same(b.boot.biosBoot, { device: '/dev/vda4', added: true });
  t.same(b.boot.esp, { device: '/dev/vda1', mountpoint: '/boot/efi', added: false }, 'the source ESP is kept');
  t.match(b.notes.join('\n'), /BIOS boot partition: a 1 MiB one \(ef02\) is added as partition 4/);
  t.same(b.mounts.map((m) => m.mountpoint), ['/', '/boot/efi']);

  const gptSrc = inv('cold-gpt-bios');
  const u = mustPlan(plan(gptSrc, target([4 * GiB], 'uefi')));
  checkGeometry(t, u);
  const esp = u.partitions.find((x) => x.role === 'esp')!;
  t.same([esp.number, esp.sizeBytes, esp.added, esp.type], [5, 256 * MiB, true, 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B']);
  const espFs = u.filesystems.find((f) => f.device === esp.device)!;
  t.same([espFs.type, espFs.uuid, espFs.mountpoint, espFs.added], ['vfat', null, '/boot/efi', true]);
  t.same(u.boot.esp, { device: '/dev/vda5', mountpoint: '/boot/efi', added: true });
  t.same(u.mounts.map((m) => m.mountpoint), ['/', '/home', '/boot/efi'], 'parents before children');
  t.same(u.copies.map((c) => c.mountpoint), ['/', '/home'], 'nothing to copy into the added ESP');
  t.match(u.notes.join('\n'), /256 MiB vfat ESP is added/);
});

t.test('target disk choice: auto, several, by path and by-id, unknown, unsafe', async (t) => {
  const src = inv('cold-gpt-bios');
  const two = target([4 * GiB, 3 * GiB]);
  const r = plan(src, two);
  t.ok(isRefusal(r) && r.code === 'several-disks');
  if (isRefusal(r)) {
    t.same(r.disks.map((d) => [d.device, d.sizeBytes, d.byId[0]]), [['/dev/vda', 4 * GiB, '/dev/disk/by-id/virtio-disk0'], ['/dev/vdb', 3 * GiB, '/dev/disk/by-id/virtio-disk1']]);
    t.match(r.reason, /2 disks: choose one with --disk \(\/dev\/disk\/by-id\/virtio-disk0, \/dev\/disk\/by-id\/virtio-disk1\)/);
  }
  const byId = mustPlan(plan(src, two, { disk: '/dev/disk/by-id/virtio-disk1' }));
  t.same([byId.target.disk.device, byId.target.disk.requested], ['/dev/vdb', '/dev/disk/by-id/virtio-disk1']);
  t.equal(byId.partitions[1]!.device, '/dev/vdb2');
  t.equal(mustPlan(plan(src, two, { disk: '/dev/vda' })).target.disk.device, '/dev/vda');
  t.equal(mustPlan(plan(src, two, { disk: '/dev/disk/by-path/pci-0000:00:04.0' })).target.disk.device, '/dev/vdb');
  const none = plan(src, two, { disk: '/dev/vdz' });
  t.ok(isRefusal(none) && none.code === 'disk-not-found' && /has no disk \/dev\/vdz/.test(none.reason) && none.disks.length === 2);
  const bad = plan(src, two, { disk: '/dev/vda; reboot' });
  t.ok(isRefusal(bad) && bad.code === 'disk-not-found' && /not a device path/.test(bad.reason));
  const removable = target([4 * GiB, 8 * GiB]);
  removable.disks[1]!.removable = true;
  t.equal(mustPlan(plan(src, removable)).target.disk.device, '/dev/vda', 'auto ignores removable disks');
  const noDisk = target([]);
  t.ok(isRefusal(plan(src, noDisk)) && (plan(src, noDisk) as PlanRefusal).code === 'no-disk');
  // nvme naming
  const nv = target([4 * GiB]);
  nv.disks[0]!.path = '/dev/nvme0n1';
  t.equal(mustPlan(plan(src, nv)).partitions[1]!.device, '/dev/nvme0n1p2');
});

t.test('what cannot be carried: refused when in use, listed always', async (t) => {
  const r = plan(inv('cold-luks-md'), target([4 * GiB]));
  t.ok(isRefusal(r));
  if (!isRefusal(r)) return;
  t.equal(r.code, 'uncarryable');
  t.match(r.reason, /\/dev\/vda3: dm-crypt LUKS/);
  t.match(r.reason, /md RAID member/);
  t.ok(r.cannotCarry.some((c) => c.kind === 'other-disk' && c.device === '/dev/vdb'), 'the other disk is named');

  // A filesystem the source does not mount: made empty, not copied, named.
  const src = inv('cold-gpt-bios');
  src.fstab = src.fstab.filter((e) => e.file !== '/home');
  src.disks[0]!.partitions[2]!.fs!.mountpoint = null;
  const p = mustPlan(plan(src, target([4 * GiB])));
  t.same(p.copies.map((c) => c.mountpoint), ['/']);
  t.ok(p.filesystems.some((f) => f.device === '/dev/vda3' && f.mountpoint === null), 'still made, same UUID');
  t.same(p.cannotCarry.map((c) => [c.kind, c.device, c.inUse]), [['other', '/dev/vda3', false]]);

  // A second disk the source mounts.
  const two = inv('cold-gpt-bios');
  two.fstab.push({ spec: '/dev/vdb', file: '/data', vfstype: 'ext4', options: 'defaults', dump: 0, pass: 2, device: '/dev/vdb' });
  two.disks[1]!.fs = { type: 'ext4', version: '1.0', uuid: 'x', label: null, mountpoint: '/data', mountedAt: null, sizeBytes: GiB, usedBytes: MiB };
  const o = plan(two, target([4 * GiB]));
  t.ok(isRefusal(o) && o.code === 'uncarryable' && /only the disk holding the root filesystem \(\/dev\/vda\) is carried; the source uses \/dev\/vdb/.test(o.reason));
});

t.test('no root, root on a whole disk', async (t) => {
  const blank = plan(inv('cold-bios-blank-2disks'), target([4 * GiB]));
  t.ok(isRefusal(blank) && blank.code === 'no-root');
  const live = plan(inv('live-ramos-home-swap'), target([4 * GiB]));
  t.ok(isRefusal(live) && live.code === 'no-root', 'the RAM OS itself is no source');
  const whole = inv('cold-bios-blank-2disks');
  whole.rootDevice = '/dev/vdb';
  const w = plan(whole, target([4 * GiB]));
  t.ok(isRefusal(w) && w.code === 'unsupported-layout' && /without a partition table/.test(w.reason));
});

t.test('live source: copies from the mounted paths', async (t) => {
  // The live fixture is the RAM OS (root in RAM); give it a root on vda2 as a live Debian would have.
  const l = inv('live-ramos-home-swap');
  const p2 = l.disks[0]!.partitions[1]!;
  p2.fs = { ...p2.fs!, mountpoint: '/', mountedAt: '/', usedBytes: 100 * MiB };
  l.rootDevice = p2.path;
  const p = mustPlan(plan(l, target([4 * GiB])));
  t.same(p.copies.map((c) => [c.mountpoint, c.sourcePath]), [['/', '/'], ['/home', '/home']]);
});

t.test('hash: stable for the same layout, different for another', async (t) => {
  const src = inv('cold-gpt-bios');
  const a = mustPlan(plan(src, target([4 * GiB])));
  const b = mustPlan(plan(inv('cold-gpt-bios'), target([4 * GiB])));
  t.equal(a.hash, b.hash);
  const c = mustPlan(plan(src, target([5 * GiB])));
  t.not(a.hash, c.hash);
  t.equal(canonicalJson({ b: 1, a: [{ d: 2, c: null }] }), canonicalJson({ a: [{ c: null, d: 2 }], b: 1 }));
  t.equal(canonicalJson({ b: 1, a: [{ d: 2, c: null }] }), '{"a":[{"c":null,"d":2}],"b":1}');
});

t.test('identifiers kept: GPT disk GUID and partition GUIDs, MBR disk id', async (t) => {
  const src = inv('cold-gpt-bios');
  const p = mustPlan(plan(src, target([4 * GiB])));
  t.equal(p.tableId, src.disks[0]!.tableId);
  t.same(p.partitions.map((x) => x.partuuid), src.disks[0]!.partitions.map((x) => x.partuuid));
  const u = mustPlan(plan(src, target([4 * GiB], 'uefi')));
  t.equal(u.partitions.find((x) => x.added)!.partuuid, null, 'an added partition gets a new GUID');
  const m = mustPlan(plan(inv('cold-mbr'), target([4 * GiB])));
  t.match(m.tableId, /^0x[0-9a-f]{8}$/);
  t.ok(m.partitions.every((x) => x.partuuid === null), 'MBR PARTUUIDs follow from the disk id');
});
