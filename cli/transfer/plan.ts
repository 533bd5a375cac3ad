/**
 * Planning the target: `plan(source, target, {disk})` -> a Plan (what to make on which disk of the
 * target, what to copy where) or a PlanRefusal (why not, with the numbers). Pure: no I/O.
 *
 * Decisions (documented here, printed as notes where they matter):
 * - One source disk is carried: the one holding the root filesystem (for root on LVM: the disk of its
 *   PVs; a VG spanning several disks is refused). Other disks are named in cannotCarry (inUse when the
 *   source system mounts or swaps on them: then the plan refuses).
 * - The layout is mirrored: every partition of that disk, same numbers, order, types, GPT names and
 *   attributes, MBR boot flag and logical partitions. Content is carried where it can be: carryable
 *   filesystems (ext2/3/4, xfs, btrfs, vfat, swap) are made again with their UUID and label; partitions
 *   holding something that cannot be carried (LUKS, md member, unknown fs) are made empty (and refused if
 *   the source uses them); a filesystem the source system does not mount is made empty, not copied, and
 *   named in cannotCarry.
 * - Sizes: BIOS boot, ESP and swap partitions (and swap LVs) keep their source size. The others are scaled
 *   by (target disk - fixed) / (source disk - fixed), so free space keeps its proportion too, aligned to
 *   1 MiB, and never below used + 10% + 64 MiB (xfs: 300 MiB, btrfs: 256 MiB at least); when the
 *   minimums of some take room, the rest shrink in proportion. Used bytes unknown -> at least the source
 *   size. LVM: the PV partition is scaled like the others (at least the sum of its LVs' minimums), the LVs
 *   are scaled within the VG the same way (whole extents, free extents keep their proportion).
 * - Boot: GPT on a BIOS target without a BIOS boot partition -> a 1 MiB one (ef02) is added at the start
 *   of the disk with the next free number. UEFI target without an ESP -> a 256 MiB vfat ESP is added at
 *   the start, mounted at /boot/efi (transfer-run adds its fstab line). The source's own ones are kept.
 */
import { createHash } from 'node:crypto';
import { CARRYABLE_FS, GPT } from './inspect.js';
import { fitSizes, type SizeItem } from './sizing.js';
import type {
  CarryableFsType, Disk, Filesystem, Inventory, Partition, Plan, PlanDiskRef, PlannedBoot, PlannedCopy,
  PlannedFilesystem, PlannedLv, PlannedMount, PlannedPartition, PlannedSwap, PlannedVg, PlanRefusal,
  PlanRefusalCode, RefusalFilesystem, TableType, TargetInventory, Uncarryable,
} from './types.js';

export const MiB = 2 ** 20;
/** Headroom over used bytes: 10% + 64 MiB. */
export const HEADROOM_FRACTION = 0.1;
export const HEADROOM_BYTES = 64 * MiB;
export const ADDED_ESP_BYTES = 256 * MiB;
export const ADDED_BIOS_BOOT_BYTES = 1 * MiB;
/** Space kept at the end of a GPT disk for the backup table (and alignment). */
const GPT_TAIL = 1 * MiB;
/** Gap before each MBR logical partition (its EBR), as sfdisk aligns it. */
const EBR_GAP = 1 * MiB;
/** LVM metadata area at the start of a PV (pvcreate default pe_start). */
const PV_META = 1 * MiB;
/** Smallest filesystem mkfs accepts, per type (bookworm tools). */
const FS_FLOOR: Partial<Record<string, number>> = { xfs: 300 * MiB, btrfs: 256 * MiB, ext4: 8 * MiB, ext3: 8 * MiB, ext2: 2 * MiB, vfat: 33 * MiB, swap: 1 * MiB };

export interface PlanOptions {
  /** `auto` (default) or a disk path of the target: /dev/vdX, /dev/disk/by-id/..., /dev/disk/by-path/.... */
  disk?: string;
}

const DISK_ARG_RE = /^\/dev\/[A-Za-z0-9._:+@=\/-]+$/;

export function minBytesFor(fs: Filesystem | null, fallback: number): number {
  const floor = FS_FLOOR[fs?.type ?? ''] ?? MiB;
  if (!fs || fs.type === 'swap') return floor;
  if (fs.usedBytes === null) return Math.max(floor, fs.sizeBytes ?? fallback);
  return Math.max(floor, Math.ceil((fs.usedBytes * (1 + HEADROOM_FRACTION) + HEADROOM_BYTES) / MiB) * MiB);
}

/** Target partition device for partition n of disk `disk` (nvme0n1 -> nvme0n1p1, vda -> vda1). */
export function partitionDevice(disk: string, n: number): string {
  return /\d$/.test(disk) ? `${disk}p${n}` : `${disk}${n}`;
}

function diskRef(d: Disk, requested: string): PlanDiskRef {
  return { device: d.path, requested, sizeBytes: d.sizeBytes, sectorSize: d.sectorSize, byId: d.byId };
}

function refusal(code: PlanRefusalCode, reason: string, extra: Partial<Omit<PlanRefusal, 'kind' | 'code' | 'reason'>> = {}): PlanRefusal {
  return { kind: 'refusal', code, reason, neededBytes: null, availableBytes: null, filesystems: [], disks: [], cannotCarry: [], ...extra };
}

const diskList = (inv: Inventory) => inv.disks.map((d) => ({ device: d.path, sizeBytes: d.sizeBytes, byId: d.byId, removable: d.removable }));

export function chooseTargetDisk(target: TargetInventory, wanted: string | undefined): { disk: Disk; requested: string } | PlanRefusal {
  const w = wanted ?? 'auto';
  if (w === 'auto') {
    const fixed = target.disks.filter((d) => !d.removable && !d.readOnly);
    if (fixed.length === 0) return refusal('no-disk', `target ${target.hostname} has no non-removable writable disk`, { disks: diskList(target) });
    if (fixed.length > 1) {
      return refusal('several-disks', `target ${target.hostname} has ${fixed.length} disks: choose one with --disk (${fixed.map((d) => d.byId[0] ?? d.path).join(', ')})`, { disks: diskList(target) });
    }
    return { disk: fixed[0]!, requested: fixed[0]!.path };
  }
  if (!DISK_ARG_RE.test(w)) return refusal('disk-not-found', `--disk ${JSON.stringify(w)} is not a device path under /dev`, { disks: diskList(target) });
  const d = target.disks.find((x) => x.path === w || x.byId.includes(w) || x.byPath.includes(w));
  if (!d) return refusal('disk-not-found', `target ${target.hostname} has no disk ${w}`, { disks: diskList(target) });
  if (d.readOnly) return refusal('disk-not-found', `target disk ${w} is read-only`, { disks: diskList(target) });
  return { disk: d, requested: w };
}

/** The devices (partitions, LVs) of a disk, for "is anything on it in use". */
function devicesOn(src: Inventory, d: Disk): string[] {
  const parts = d.table ? d.partitions.map((p) => p.path) : [d.path];
  const vgs = new Set(src.lvm.pvs.filter((pv) => parts.includes(pv.device) && pv.vg).map((pv) => pv.vg!));
  return [...parts, ...src.lvm.lvs.filter((lv) => vgs.has(lv.vg)).map((lv) => lv.path)];
}

function inUse(src: Inventory, dev: string): boolean {
  return src.fstab.some((e) => e.device === dev) || src.swaps.some((s) => s.device === dev) || allFs(src).some((x) => x.device === dev && x.fs.mountedAt !== null);
}

function allFs(src: Inventory): { device: string; fs: Filesystem }[] {
  const out: { device: string; fs: Filesystem }[] = [];
  for (const d of src.disks) {
    if (d.fs) out.push({ device: d.path, fs: d.fs });
    for (const p of d.partitions) if (p.fs) out.push({ device: p.path, fs: p.fs });
  }
  for (const lv of src.lvm.lvs) if (lv.fs) out.push({ device: lv.path, fs: lv.fs });
  return out;
}

function rootDiskOf(src: Inventory, root: string): Disk | { error: string } {
  const direct = src.disks.find((d) => d.path === root || d.partitions.some((p) => p.path === root));
  if (direct) return direct;
  const lv = src.lvm.lvs.find((l) => l.path === root);
  if (lv) {
    const pvs = src.lvm.pvs.filter((p) => p.vg === lv.vg).map((p) => p.device);
    const disks = src.disks.filter((d) => d.partitions.some((p) => pvs.includes(p.path)) || pvs.includes(d.path));
    if (disks.length === 1) return disks[0]!;
    return { error: `volume group ${lv.vg} of the root filesystem spans ${disks.length} disks (${pvs.join(', ')}): only one source disk is carried` };
  }
  return { error: `the root filesystem ${root} is on no disk found (md RAID or dm-crypt root are not carried)` };
}

const isCarryable = (t: string | null): t is CarryableFsType => t !== null && CARRYABLE_FS.has(t);

interface Slot {
  src: Partition | null; // null = added
  role: Partition['role'];
  number: number;
  type: string;
  name: string | null;
  attrs: string[];
  bootable: boolean;
  logical: boolean;
  item: SizeItem;
  addedKind?: 'bios-boot' | 'esp';
}

export function plan(source: Inventory, target: TargetInventory, opts: PlanOptions = {}): Plan | PlanRefusal {
  const chosen = chooseTargetDisk(target, opts.disk);
  if ('kind' in chosen) return chosen;
  const tdisk = chosen.disk;
  const ss = tdisk.sectorSize;

  if (!source.rootDevice) return refusal('no-root', `no root filesystem found on ${source.hostname}${source.mode === 'cold' ? ' (no filesystem holds an fstab mounting it at /)' : ''}`);
  const sdiskOrErr = rootDiskOf(source, source.rootDevice);
  if ('error' in sdiskOrErr) return refusal('unsupported-layout', sdiskOrErr.error, { cannotCarry: source.unsupported });
  const sdisk = sdiskOrErr;
  if (!sdisk.table) return refusal('unsupported-layout', `the root filesystem is on ${sdisk.path} without a partition table: not carried (only partitioned disks)`);
  const table: TableType = sdisk.table;

  // What cannot be carried.
  const cannotCarry: Uncarryable[] = [...source.unsupported];
  for (const d of source.disks) {
    if (d === sdisk) continue;
    const devs = devicesOn(source, d);
    const used = devs.filter((x) => inUse(source, x));
    const hasData = d.fs !== null || d.partitions.length > 0;
    if (!hasData && used.length === 0) continue;
    cannotCarry.push({
      kind: 'other-disk', device: d.path, mountpoint: null, inUse: used.length > 0,
      reason: `only the disk holding the root filesystem (${sdisk.path}) is carried${used.length ? `; the source uses ${used.join(', ')}` : ''}`,
    });
  }
  const sourceVgs = new Set(source.lvm.pvs.filter((pv) => sdisk.partitions.some((p) => p.path === pv.device) && pv.vg).map((pv) => pv.vg!));
  for (const vg of sourceVgs) {
    const pvs = source.lvm.pvs.filter((p) => p.vg === vg);
    if (pvs.some((p) => !sdisk.partitions.some((q) => q.path === p.device))) {
      return refusal('unsupported-layout', `volume group ${vg} spans several disks (${pvs.map((p) => p.device).join(', ')}): only one source disk is carried`, { cannotCarry });
    }
  }

  // Filesystems on the carried disk, and whether each is copied.
  interface FsUse { device: string; fs: Filesystem; copied: boolean }
  const fsUses: FsUse[] = [];
  const lvsOnDisk = source.lvm.lvs.filter((lv) => sourceVgs.has(lv.vg));
  for (const x of [...sdisk.partitions.filter((p) => p.fs).map((p) => ({ device: p.path, fs: p.fs! })), ...lvsOnDisk.filter((lv) => lv.fs).map((lv) => ({ device: lv.path, fs: lv.fs! }))]) {
    if (!isCarryable(x.fs.type)) continue;
    if (x.fs.type === 'swap') {
      fsUses.push({ ...x, copied: false });
      continue;
    }
    const mounted = source.mode === 'live' ? x.fs.mountedAt !== null : x.fs.mountpoint !== null;
    if (!mounted) {
      cannotCarry.push({
        kind: 'other', device: x.device, mountpoint: x.fs.mountpoint, inUse: false,
        reason: source.mode === 'live' && x.fs.mountpoint
          ? `${x.fs.type} in fstab at ${x.fs.mountpoint} but not mounted now: made empty on the target, not copied (live mode copies mounted filesystems)`
          : `${x.fs.type} not mounted by the source system: made empty on the target (same UUID), its data not copied`,
      });
    }
    fsUses.push({ ...x, copied: mounted });
  }

  const blocking = cannotCarry.filter((c) => c.inUse);
  if (blocking.length) {
    return refusal('uncarryable', `the source uses what cannot be carried: ${blocking.map((c) => `${c.device}${c.mountpoint ? ` (${c.mountpoint})` : ''}: ${c.reason}`).join('; ')}`, { cannotCarry });
  }

  const notes: string[] = [];
  // LVM: minimum PV size from its LVs.
  const vgMin = new Map<string, number>();
  for (const vg of sourceVgs) {
    const v = source.lvm.vgs.find((x) => x.name === vg);
    const ext = v?.extentBytes ?? 4 * MiB;
    const lvs = lvsOnDisk.filter((lv) => lv.vg === vg);
    const min = lvs.reduce((a, lv) => a + Math.ceil((lv.fs?.type === 'swap' ? lv.sizeBytes : minBytesFor(lv.fs, lv.sizeBytes)) / ext) * ext, 0);
    vgMin.set(vg, min + PV_META + ext);
  }

  // Slots: the source partitions in disk order (+ the added boot partitions first).
  const slots: Slot[] = [];
  const usedNumbers = new Set(sdisk.partitions.map((p) => p.number));
  const nextNumber = (primaryOnly: boolean): number | null => {
    for (let n = 1; n <= (primaryOnly ? 4 : 128); n++) if (!usedNumbers.has(n)) return n;
    return null;
  };
  const hasBiosBoot = sdisk.partitions.some((p) => p.role === 'bios-boot');
  const hasEsp = sdisk.partitions.some((p) => p.role === 'esp');
  if (target.bootMode === 'bios' && table === 'gpt' && !hasBiosBoot) {
    const n = nextNumber(false)!;
    usedNumbers.add(n);
    slots.push({ src: null, role: 'bios-boot', number: n, type: GPT.biosBoot, name: 'BIOS boot', attrs: [], bootable: false, logical: false, item: { source: ADDED_BIOS_BOOT_BYTES, min: ADDED_BIOS_BOOT_BYTES, fixed: true }, addedKind: 'bios-boot' });
    notes.push(`the target boots BIOS from GPT and the source has no BIOS boot partition: a 1 MiB one (ef02) is added as partition ${n}`);
  }
  if (target.bootMode === 'uefi' && !hasEsp) {
    const n = nextNumber(table === 'dos');
    if (n === null) return refusal('unsupported-layout', 'the target boots UEFI and the source has no EFI system partition, and its MBR has no free primary slot to add one', { cannotCarry });
    usedNumbers.add(n);
    slots.push({ src: null, role: 'esp', number: n, type: table === 'gpt' ? GPT.esp : 'ef', name: table === 'gpt' ? 'EFI system' : null, attrs: [], bootable: false, logical: false, item: { source: ADDED_ESP_BYTES, min: ADDED_ESP_BYTES, fixed: true }, addedKind: 'esp' });
    notes.push(`the target boots UEFI and the source has no EFI system partition: a 256 MiB vfat ESP is added as partition ${n}, mounted at /boot/efi`);
  }
  for (const p of sdisk.partitions) {
    if (p.role === 'extended') continue; // recomputed around its logical partitions
    const fixed = p.role === 'bios-boot' || p.role === 'esp' || p.role === 'swap';
    let min: number;
    if (p.role === 'lvm') {
      const pv = source.lvm.pvs.find((x) => x.device === p.path);
      min = pv?.vg ? vgMin.get(pv.vg) ?? p.sizeBytes : MiB;
    } else if (p.fs && isCarryable(p.fs.type)) {
      min = minBytesFor(p.fs, p.sizeBytes);
    } else {
      min = MiB;
    }
    slots.push({
      src: p, role: p.role, number: p.number, type: p.type, name: p.name, attrs: p.attrs, bootable: p.bootable,
      logical: table === 'dos' && p.number > 4, item: { source: p.sizeBytes, min, fixed },
    });
  }
  const extended = sdisk.partitions.find((p) => p.role === 'extended') ?? null;
  const logicals = slots.filter((s) => s.logical).length;
  if (logicals > 0 && !extended) return refusal('unsupported-layout', `${sdisk.path}: logical partitions without an extended partition`, { cannotCarry });

  // Sizes.
  const usableEnd = Math.floor((tdisk.sizeBytes - (table === 'gpt' ? GPT_TAIL : 0)) / MiB) * MiB;
  const overhead = MiB + logicals * EBR_GAP; // first MiB + one EBR gap per logical
  const budget = usableEnd - overhead;
  const fixedSrc = slots.reduce((a, s) => a + (s.item.fixed ? s.item.source : 0), 0);
  const srcBase = sdisk.sizeBytes - slots.filter((s) => s.src && s.item.fixed).reduce((a, s) => a + s.item.source, 0);
  const scale = Math.max(0, (tdisk.sizeBytes - fixedSrc) / Math.max(1, srcBase));
  const fit = fitSizes(slots.map((s) => s.item), budget, scale, MiB);

  const refusalFs = (sizes: number[] | null): RefusalFilesystem[] => {
    const out: RefusalFilesystem[] = [];
    slots.forEach((s, i) => {
      if (!s.src) return;
      if (s.role === 'lvm') {
        for (const lv of lvsOnDisk.filter((l) => source.lvm.pvs.some((pv) => pv.device === s.src!.path && pv.vg === l.vg))) {
          out.push({ device: lv.path, mountpoint: lv.fs?.mountpoint ?? null, type: lv.fs?.type ?? null, sourceSizeBytes: lv.sizeBytes, usedBytes: lv.fs?.usedBytes ?? null, minBytes: lv.fs?.type === 'swap' ? lv.sizeBytes : minBytesFor(lv.fs, lv.sizeBytes), plannedBytes: null });
        }
        return;
      }
      out.push({ device: s.src.path, mountpoint: s.src.fs?.mountpoint ?? null, type: s.src.fs?.type ?? null, sourceSizeBytes: s.src.sizeBytes, usedBytes: s.src.fs?.usedBytes ?? null, minBytes: Math.ceil((s.item.fixed ? Math.max(s.item.source, s.item.min) : s.item.min) / MiB) * MiB, plannedBytes: sizes ? sizes[i]! : null });
    });
    return out;
  };
  if (!fit.ok) {
    const needed = fit.neededBytes + overhead + (tdisk.sizeBytes - usableEnd);
    return refusal('too-small', `target disk ${chosen.requested} is too small: ${fmt(needed)} needed (used bytes + headroom and fixed partitions), ${fmt(tdisk.sizeBytes)} available`, {
      // "planned" here: what proportional scaling alone would give each one (below its minimum = the problem).
      neededBytes: needed, availableBytes: tdisk.sizeBytes, filesystems: refusalFs(slots.map((x) => (x.item.fixed ? x.item.source : Math.floor((x.item.source * scale) / MiB) * MiB))), cannotCarry,
    });
  }

  // Positions: added boot partitions first (they are first in slots), then the source order; logical
  // partitions inside one extended container, each after a 1 MiB EBR gap.
  const partitions: PlannedPartition[] = [];
  let pos = MiB;
  let extStart: number | null = null;
  let extEnd = 0;
  slots.forEach((s, i) => {
    const size = fit.sizes[i]!;
    if (s.logical && extStart === null) {
      extStart = pos;
      pos += EBR_GAP;
    } else if (s.logical) {
      pos += EBR_GAP;
    }
    partitions.push({
      number: s.number, device: partitionDevice(tdisk.path, s.number),
      startSector: pos / ss, sizeSectors: size.bytes / ss, startBytes: pos, sizeBytes: size.bytes,
      type: s.type, name: s.name, attrs: s.attrs, bootable: s.bootable, role: s.role, added: s.src === null,
      partuuid: table === 'gpt' ? s.src?.partuuid ?? null : null,
      source: s.src ? { device: s.src.path, sizeBytes: s.src.sizeBytes } : null,
      sizing: s.src === null ? 'added' : size.sizing,
    });
    pos += size.bytes;
    if (s.logical) extEnd = pos;
  });
  if (extended && extStart !== null) {
    const ext: PlannedPartition = {
      number: extended.number, device: partitionDevice(tdisk.path, extended.number),
      startSector: extStart / ss, sizeSectors: (extEnd - extStart) / ss, startBytes: extStart, sizeBytes: extEnd - extStart,
      type: extended.type, name: null, attrs: [], bootable: extended.bootable, role: 'extended', added: false, partuuid: null,
      source: { device: extended.path, sizeBytes: extended.sizeBytes }, sizing: 'container',
    };
    const firstLogical = partitions.findIndex((p) => p.number > 4);
    partitions.splice(firstLogical, 0, ext);
  }

  // Filesystems, LVM, swap.
  const filesystems: PlannedFilesystem[] = [];
  const swap: PlannedSwap[] = [];
  const lvmPlan: PlannedVg[] = [];
  const targetOf = new Map<string, string>(); // source device -> target device
  const addFs = (device: string, fs: Filesystem | null, sourceDevice: string | null, sizeBytes: number, sourceSize: number | null, added: boolean, addedMount?: string) => {
    if (!fs && !added) return;
    const type: CarryableFsType = fs ? (fs.type as CarryableFsType) : 'vfat';
    filesystems.push({
      device, type, uuid: fs?.uuid ?? null, label: fs?.label ?? null, version: fs?.version ?? (added ? 'FAT32' : null),
      mountpoint: addedMount ?? (type === 'swap' ? null : fs?.mountpoint ?? null), sourceDevice, added,
      sourceSizeBytes: sourceSize, usedBytes: fs?.usedBytes ?? null, minBytes: fs ? (type === 'swap' ? MiB : minBytesFor(fs, sourceSize ?? 0)) : ADDED_ESP_BYTES, sizeBytes,
    });
    if (type === 'swap') swap.push({ device, uuid: fs?.uuid ?? null, label: fs?.label ?? null, sizeBytes });
  };
  for (const p of partitions) {
    const s = slots.find((x) => x.number === p.number);
    if (!s) continue; // extended
    if (s.addedKind === 'esp') {
      addFs(p.device, null, null, p.sizeBytes, null, true, '/boot/efi');
      continue;
    }
    if (!s.src) continue;
    targetOf.set(s.src.path, p.device);
    if (s.src.fs && isCarryable(s.src.fs.type)) addFs(p.device, s.src.fs, s.src.path, p.sizeBytes, s.src.sizeBytes, false);
    if (s.role === 'lvm') {
      const pv = source.lvm.pvs.find((x) => x.device === s.src!.path);
      const vg = pv?.vg ? source.lvm.vgs.find((v) => v.name === pv.vg) : undefined;
      if (!vg) continue;
      const ext = vg.extentBytes;
      const vgBytes = Math.floor((p.sizeBytes - PV_META) / ext) * ext;
      const lvs = lvsOnDisk.filter((l) => l.vg === vg.name);
      const items: SizeItem[] = lvs.map((lv) => ({ source: lv.sizeBytes, min: lv.fs?.type === 'swap' ? ext : minBytesFor(lv.fs, lv.sizeBytes), fixed: lv.fs?.type === 'swap' }));
      const lvFixed = lvs.reduce((a, lv, i) => a + (items[i]!.fixed ? lv.sizeBytes : 0), 0);
      const vgScale = (vgBytes - lvFixed) / Math.max(1, vg.sizeBytes - lvFixed);
      const lfit = fitSizes(items, vgBytes, vgScale, ext);
      if (!lfit.ok) {
        // The PV minimum covers the LV minimums, so this only happens with inconsistent LVM numbers.
        return refusal('too-small', `volume group ${vg.name}: its logical volumes need ${fmt(lfit.neededBytes)}, the planned PV holds ${fmt(vgBytes)}`, {
          neededBytes: lfit.neededBytes, availableBytes: vgBytes, filesystems: refusalFs(fit.sizes.map((x) => x.bytes)), cannotCarry,
        });
      }
      const plannedLvs: PlannedLv[] = lvs.map((lv, i) => ({
        name: lv.name, vg: lv.vg, path: lv.path, sizeBytes: lfit.sizes[i]!.bytes, extents: lfit.sizes[i]!.bytes / ext,
        sourceSizeBytes: lv.sizeBytes, sizing: lfit.sizes[i]!.sizing,
      }));
      lvmPlan.push({ name: vg.name, pvs: [p.device], extentBytes: ext, sizeBytes: vgBytes, lvs: plannedLvs });
      for (const [i, lv] of lvs.entries()) {
        targetOf.set(lv.path, lv.path);
        if (lv.fs && isCarryable(lv.fs.type)) addFs(lv.path, lv.fs, lv.path, plannedLvs[i]!.sizeBytes, lv.sizeBytes, false);
      }
    }
  }
  if (target.bootMode === 'uefi' && hasEsp && !filesystems.some((f) => f.type === 'vfat' && partitions.some((p) => p.device === f.device && p.role === 'esp'))) {
    notes.push('the source ESP holds no vfat filesystem: it is made empty; the boot loader step must format it');
  }

  // Mounts (parents first) and copies.
  const copied = new Set(fsUses.filter((u) => u.copied).map((u) => u.device));
  const mounts: PlannedMount[] = filesystems
    .filter((f) => f.mountpoint !== null && f.type !== 'swap' && (f.added || (f.sourceDevice !== null && copied.has(f.sourceDevice))))
    .map((f) => ({ mountpoint: f.mountpoint!, device: f.device, vfstype: f.type }))
    .sort((a, b) => depth(a.mountpoint) - depth(b.mountpoint) || a.mountpoint.localeCompare(b.mountpoint));
  if (!mounts.some((m) => m.mountpoint === '/')) return refusal('no-root', `the root filesystem ${source.rootDevice} is not a carryable filesystem`, { cannotCarry });
  const copies: PlannedCopy[] = fsUses
    .filter((u) => u.copied)
    .map((u) => ({
      mountpoint: u.fs.mountpoint ?? u.fs.mountedAt!, sourceDevice: u.device, sourcePath: source.mode === 'live' ? u.fs.mountedAt : null,
      sourceFsType: u.fs.type!, targetDevice: targetOf.get(u.device)!, usedBytes: u.fs.usedBytes,
    }))
    .sort((a, b) => depth(a.mountpoint) - depth(b.mountpoint) || a.mountpoint.localeCompare(b.mountpoint));
  for (const sw of swap) if (sw.sizeBytes) notes.push(`swap ${sw.device} keeps its source size (${fmt(sw.sizeBytes)})`);
  for (const f of filesystems) if (f.usedBytes === null && f.type !== 'swap' && !f.added) notes.push(`used bytes of ${f.sourceDevice} unknown: given at least its source size`);

  const biosPart = partitions.find((p) => p.role === 'bios-boot');
  const espPart = partitions.find((p) => p.role === 'esp');
  const espFs = espPart ? filesystems.find((f) => f.device === espPart.device) : undefined;
  const boot: PlannedBoot = {
    mode: target.bootMode, table, disk: tdisk.path,
    biosBoot: table === 'gpt' && biosPart ? { device: biosPart.device, added: biosPart.added } : null,
    esp: espPart ? { device: espPart.device, mountpoint: espFs?.mountpoint ?? '/boot/efi', added: espPart.added } : null,
  };
  const last = partitions.reduce((a, p) => Math.max(a, p.startBytes + p.sizeBytes), 0);
  const layout = { table, tableId: sdisk.tableId, sectorSize: ss, partitions, filesystems: filesystems.map(({ device, type, uuid, label }) => ({ device, type, uuid, label })), lvm: lvmPlan };
  return {
    kind: 'plan', schema: 1,
    source: { hostname: source.hostname, mode: source.mode, bootMode: source.bootMode, disk: diskRef(sdisk, sdisk.path) },
    target: { hostname: target.hostname, bootMode: target.bootMode, disk: diskRef(tdisk, chosen.requested) },
    table, tableId: sdisk.tableId, partitions, filesystems, lvm: lvmPlan, mounts, copies, swap, boot, cannotCarry, notes,
    totals: {
      sourceDiskBytes: sdisk.sizeBytes, targetDiskBytes: tdisk.sizeBytes,
      usedBytes: fsUses.filter((u) => u.copied).reduce((a, u) => a + (u.fs.usedBytes ?? 0), 0),
      plannedBytes: last, scale: Math.round(scale * 10000) / 10000,
    },
    hash: layoutHash(layout),
  };
}

function depth(mp: string): number {
  return mp === '/' ? 0 : mp.split('/').length - 1;
}

/** JSON with object keys sorted at every level: the same data always gives the same text. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().filter((k) => o[k] !== undefined).map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

export function layoutHash(layout: unknown): string {
  return createHash('sha256').update(canonicalJson(layout)).digest('hex');
}

/** Bytes for people: 1.5 GiB, 300 MiB. */
export function fmt(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[u]}`;
}
