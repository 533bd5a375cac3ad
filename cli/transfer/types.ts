import type { FstabLine } from './fstab.js';

/**
 * The data `ramboot transfer` passes between its stages: what a machine looks like when read over SSH
 * (`Inventory`, built by inspect.ts), and what the target will look like (`Plan`, built by plan.ts) or why
 * it cannot be done (`PlanRefusal`). Plain JSON-serialisable data only: `--plan --json` prints a Plan or a
 * PlanRefusal as it is. Sizes are bytes (JS numbers: exact up to 8 PiB).
 *
 * Stability: other modules import these types; changes here are additive only (new optional fields, new
 * union members), never renames.
 */

export type BootMode = 'bios' | 'uefi';

/** Partition table type, as sfdisk/lsblk name it: `dos` is MBR. */
export type TableType = 'gpt' | 'dos';

/** How the machine was read: `live` = the running system itself (its own /etc/fstab and mounts);
 *  `cold` = a machine booted into the ramboot RAM OS (disks unmounted; fstab read from the source root
 *  mounted read-only by the inspection script, then unmounted). */
export type InspectMode = 'live' | 'cold';

/** What a partition is for, derived from its type code and what is on it. */
export type PartitionRole =
  | 'bios-boot' // GPT 21686148-6449-6E6F-744E-656564454649 (sgdisk ef02)
  | 'esp' // GPT C12A7328-F81F-11D2-BA4B-00A0C93EC93B, MBR 0xef
  | 'swap'
  | 'lvm' // an LVM physical volume
  | 'extended' // MBR extended container (0x05, 0x0f, 0x85)
  | 'raid' // md member
  | 'luks' // dm-crypt LUKS container
  | 'data' // a filesystem (or empty)
  | 'other';

/** A filesystem (or swap, or a container signature) as blkid/lsblk see it. */
export interface Filesystem {
  /** blkid TYPE: ext2, ext3, ext4, xfs, btrfs, vfat, swap, LVM2_member, crypto_LUKS, linux_raid_member...;
   *  null when there is no signature. */
  type: string | null;
  /** FSVER (e.g. FAT32, 1.0), null when unknown. */
  version: string | null;
  uuid: string | null;
  label: string | null;
  /** Where it is mounted in the source system (live: where it is mounted now; cold: what the source's
   *  fstab says). null when not mounted / not in fstab. For swap: null. */
  mountpoint: string | null;
  /** Live mode: the path it is mounted at right now on the inspected machine (copy from here with
   *  --one-file-system). Cold mode: null (nothing stays mounted after inspection). */
  mountedAt: string | null;
  /** Filesystem size (df size) when it could be measured, else null. */
  sizeBytes: number | null;
  /** Used bytes (df used) when it could be measured (mounted live, or mounted read-only during a cold
   *  inspection), else null. For active swap: null (swap content is not copied). */
  usedBytes: number | null;
}

export interface Partition {
  /** Partition number (1-based; MBR logical partitions are 5+). */
  number: number;
  /** Kernel device path, e.g. /dev/vda1, /dev/nvme0n1p1. */
  path: string;
  startBytes: number;
  sizeBytes: number;
  /** GPT: the type GUID in upper case; MBR: the type byte as two lower-case hex digits ("83", "82", "ef"). */
  type: string;
  /** GPT partition name (PARTLABEL), null for MBR or when empty. */
  name: string | null;
  /** GPT: the partition's unique GUID (upper case); MBR: "<disk id>-<nn>" as the kernel names it. */
  partuuid: string | null;
  /** GPT attribute names as sfdisk prints them, e.g. "LegacyBIOSBootable", "RequiredPartition",
   *  "GUID:63". Empty for MBR. */
  attrs: string[];
  /** MBR active (boot) flag; false for GPT. */
  bootable: boolean;
  role: PartitionRole;
  /** What is on it, null when lsblk/blkid found nothing (e.g. a BIOS boot partition). */
  fs: Filesystem | null;
}

export interface Disk {
  /** Kernel device path, e.g. /dev/vda. */
  path: string;
  /** Kernel name, e.g. vda. */
  name: string;
  sizeBytes: number;
  /** Logical sector size in bytes (sfdisk's sectors are of this size). */
  sectorSize: number;
  removable: boolean;
  readOnly: boolean;
  /** Kind of device: "disk" always here (loop devices and CD-ROMs are left out of disks). */
  model: string | null;
  serial: string | null;
  /** Transport (virtio, sata, nvme, usb...), null when unknown. */
  transport: string | null;
  /** /dev/disk/by-id/... links to the whole disk. */
  byId: string[];
  /** /dev/disk/by-path/... links to the whole disk. */
  byPath: string[];
  /** null when the disk has no partition table. */
  table: TableType | null;
  /** GPT disk GUID or MBR disk identifier ("0x1234abcd"), null without a table. */
  tableId: string | null;
  partitions: Partition[];
  /** A filesystem or signature on the whole disk (no partition table), else null. */
  fs: Filesystem | null;
}

export interface LvmPv {
  /** Device path, e.g. /dev/vda3. */
  device: string;
  /** VG name, null for an orphan PV. */
  vg: string | null;
  uuid: string;
  sizeBytes: number;
  freeBytes: number;
}

export interface LvmVg {
  name: string;
  uuid: string;
  sizeBytes: number;
  freeBytes: number;
  extentBytes: number;
  /** Device paths of its PVs. */
  pvs: string[];
}

export interface LvmLv {
  vg: string;
  name: string;
  /** /dev/<vg>/<lv>. */
  path: string;
  /** /dev/mapper/<vg>-<lv> (dashes in names doubled), how fstab and findmnt often name it. */
  mapperPath: string;
  uuid: string;
  sizeBytes: number;
  /** lv_attr, e.g. "-wi-ao----". */
  attr: string;
  /** Segment type: linear, striped, thin, thin-pool, raid1, ... (only linear/striped are carried). */
  segtype: string;
  fs: Filesystem | null;
}

export interface Lvm {
  /** false when the LVM tools are absent on the machine (then pvs/vgs/lvs are empty and any
   *  LVM2_member signature is reported in `unsupported`). */
  available: boolean;
  pvs: LvmPv[];
  vgs: LvmVg[];
  lvs: LvmLv[];
}

/** An active swap area (/proc/swaps). */
export interface ActiveSwap {
  device: string;
  kind: 'partition' | 'file';
  sizeBytes: number;
  usedBytes: number;
  priority: number;
}

/** One /etc/fstab line of the source system (fields as fstab(5) names them), resolved to a device. */
export interface FstabEntry extends FstabLine {
  /** The block device the spec names on the inspected machine (partition path or /dev/<vg>/<lv>),
   *  null when it names none (tmpfs, network, bind, a device not present). */
  device: string | null;
}

export type UncarryableKind =
  | 'md-raid'
  | 'luks'
  | 'unknown-fs'
  | 'other-disk' // on a disk other than the one carrying the root
  | 'network-fs'
  | 'lvm-unsupported' // thin pools, raid LVs, LVM tools absent, PVs on several disks
  | 'swap-file'
  | 'missing-device' // an fstab line whose device is not present
  | 'other';

/** Something found that the transfer cannot carry, and why. Never silently skipped. */
export interface Uncarryable {
  kind: UncarryableKind;
  /** Device path or fstab spec it is about. */
  device: string;
  /** Where the source system mounts it, if anywhere. */
  mountpoint: string | null;
  /** true when the source system uses it (mounted or in fstab): then the plan refuses; false when it is
   *  unused data that is simply not carried. */
  inUse: boolean;
  reason: string;
}

/** A machine as read over SSH by inspect.ts. The target is read the same way. */
export interface Inventory {
  schema: 1;
  mode: InspectMode;
  hostname: string;
  bootMode: BootMode;
  /** Kernel release of the inspected (running) system. */
  kernel: string | null;
  disks: Disk[];
  lvm: Lvm;
  swaps: ActiveSwap[];
  /** The source system's fstab ([] when none was found). */
  fstab: FstabEntry[];
  /** Where the fstab came from: "/etc/fstab" (live) or "<device>:/etc/fstab" (cold); null when none. */
  fstabFrom: string | null;
  /** Device holding the source system's root filesystem (live: findmnt /; cold: the filesystem that
   *  holds /etc/fstab), null when none found (e.g. a blank target). */
  rootDevice: string | null;
  unsupported: Uncarryable[];
  /** Things the inspection noticed that change nothing by themselves (a filesystem that would not mount
   *  read-only, so its used bytes are unknown; several fstabs found...). Absent = none. */
  warnings?: string[];
}

/** The target is inspected with the same script (in cold mode: it runs the RAM OS). */
export type TargetInventory = Inventory;

/** Filesystem types the transfer can make on the target (keeping UUID and label). */
export type CarryableFsType = 'ext2' | 'ext3' | 'ext4' | 'xfs' | 'btrfs' | 'vfat' | 'swap';

export interface PlannedPartition {
  number: number;
  /** Target kernel device path, e.g. /dev/vda2 (/dev/nvme0n1p2 for nvme/mmc names). */
  device: string;
  /** In the target disk's logical sectors; start aligned to 1 MiB. */
  startSector: number;
  sizeSectors: number;
  startBytes: number;
  sizeBytes: number;
  /** GPT type GUID (upper case) or MBR type byte ("83"), as in Partition.type. */
  type: string;
  /** GPT partition name to set, null for none / MBR. */
  name: string | null;
  /** GPT attributes to set (sfdisk names), [] for MBR. */
  attrs: string[];
  /** MBR active flag. */
  bootable: boolean;
  role: PartitionRole;
  /** true when the plan adds it (BIOS boot or ESP the source lacks). */
  added: boolean;
  /** The source partition it carries, null when added. */
  source: { device: string; sizeBytes: number } | null;
  /** GPT: the source partition's unique GUID, kept (sgdisk -u N:GUID) so PARTUUID= references (fstab,
   *  kernel command lines) stay valid; null for MBR (there it follows from `Plan.tableId`) or added ones. */
  partuuid?: string | null;
  /** How the size was chosen: scaled in proportion, kept as on the source (fixed), raised to the
   *  minimum (used + headroom), or the added default. */
  sizing: 'scaled' | 'fixed' | 'minimum' | 'added' | 'container';
}

export interface PlannedFilesystem {
  /** Target device: a partition (/dev/vda2) or a logical volume (/dev/<vg>/<lv>). */
  device: string;
  type: CarryableFsType;
  /** UUID to keep (mkfs.ext4 -U, mkfs.xfs -m uuid=, mkswap -U, mkfs.btrfs -U, mkfs.vfat -i <id without
   *  the dash>), null = let mkfs choose. */
  uuid: string | null;
  label: string | null;
  /** FSVER of the source (e.g. FAT32 -> mkfs.vfat -F 32), null when unknown. */
  version: string | null;
  /** Mountpoint in the target system, null for swap or unmounted filesystems. */
  mountpoint: string | null;
  /** Source device it carries, null when added (ESP). */
  sourceDevice: string | null;
  /** true when the plan adds it; transfer-run then adds an fstab line for it (e.g. /boot/efi). */
  added: boolean;
  sourceSizeBytes: number | null;
  usedBytes: number | null;
  /** used + headroom: the target must not be smaller. */
  minBytes: number;
  /** Size of the device it is made on. */
  sizeBytes: number;
}

export interface PlannedLv {
  name: string;
  vg: string;
  /** /dev/<vg>/<lv>. */
  path: string;
  sizeBytes: number;
  /** Size in extents of the VG (lvcreate -l). */
  extents: number;
  sourceSizeBytes: number;
  sizing: 'scaled' | 'fixed' | 'minimum';
}

export interface PlannedVg {
  name: string;
  /** Target devices of its PVs (partitions in `partitions`). */
  pvs: string[];
  extentBytes: number;
  /** Usable size of the VG on the target (PV size minus metadata, whole extents). */
  sizeBytes: number;
  lvs: PlannedLv[];
}

/** Mount on the target, in this order (parents before children). */
export interface PlannedMount {
  mountpoint: string;
  device: string;
  vfstype: CarryableFsType;
}

/** One filesystem to copy. */
export interface PlannedCopy {
  /** Mountpoint in the source system (e.g. /, /home). */
  mountpoint: string;
  /** Source device (partition or LV). */
  sourceDevice: string;
  /** Live: the path to copy from on the source (its mountpoint, with --one-file-system). Cold: null
   *  (transfer-run mounts sourceDevice read-only and copies from there). */
  sourcePath: string | null;
  sourceFsType: string;
  /** Target device it is copied onto (mounted at `mountpoint` under the target mount root). */
  targetDevice: string;
  usedBytes: number | null;
}

export interface PlannedSwap {
  device: string;
  uuid: string | null;
  label: string | null;
  sizeBytes: number;
}

export interface PlannedBoot {
  mode: BootMode;
  table: TableType;
  /** The disk to install the boot loader on (GRUB for BIOS). */
  disk: string;
  /** GPT + BIOS: the BIOS boot partition (kept or added); null otherwise. */
  biosBoot: { device: string; added: boolean } | null;
  /** UEFI (or kept from the source): the ESP, its mountpoint in the target system. */
  esp: { device: string; mountpoint: string; added: boolean } | null;
}

export interface PlanTotals {
  sourceDiskBytes: number;
  targetDiskBytes: number;
  /** Sum of used bytes of the carried filesystems. */
  usedBytes: number;
  /** Bytes the planned partitions take (end of the last one). */
  plannedBytes: number;
  /** The proportional factor applied to scalable partitions (target / source, after fixed ones). */
  scale: number;
}

export interface PlanDiskRef {
  /** Kernel device path, e.g. /dev/vda. */
  device: string;
  /** The path the user gave with --disk, or the kernel path for auto. */
  requested: string;
  sizeBytes: number;
  sectorSize: number;
  byId: string[];
}

export interface Plan {
  kind: 'plan';
  schema: 1;
  source: { hostname: string; mode: InspectMode; bootMode: BootMode; disk: PlanDiskRef };
  target: { hostname: string; bootMode: BootMode; disk: PlanDiskRef };
  table: TableType;
  /** The source's disk identifier, kept: GPT disk GUID (sgdisk -U) or MBR id "0x1234abcd" (sfdisk
   *  label-id; MBR PARTUUIDs are "<id>-<nn>"). null when unknown. */
  tableId?: string | null;
  /** In disk order. */
  partitions: PlannedPartition[];
  /** Everything to mkfs/mkswap, partitions and LVs alike. */
  filesystems: PlannedFilesystem[];
  lvm: PlannedVg[];
  mounts: PlannedMount[];
  copies: PlannedCopy[];
  swap: PlannedSwap[];
  boot: PlannedBoot;
  /** Always printed. Items with inUse=false are not carried; any with inUse=true makes a refusal. */
  cannotCarry: Uncarryable[];
  /** Human notes on decisions (ESP added, swap kept at its size, ...). */
  notes: string[];
  totals: PlanTotals;
  /** sha256 (hex) of the canonical JSON of the layout (table, partitions, filesystems, lvm): equal
   *  hashes mean the same target layout (resume detection). */
  hash: string;
}

export type PlanRefusalCode =
  | 'no-disk' // target has no usable disk
  | 'several-disks' // --disk auto and several candidates
  | 'disk-not-found' // --disk names no disk of the target
  | 'too-small'
  | 'uncarryable' // something in use cannot be carried
  | 'no-root' // the source's root filesystem was not found
  | 'unsupported-layout';

/** Per-filesystem numbers in a refusal. */
export interface RefusalFilesystem {
  device: string;
  mountpoint: string | null;
  type: string | null;
  sourceSizeBytes: number | null;
  usedBytes: number | null;
  minBytes: number;
  /** What the plan would give it, null when the plan did not get that far. */
  plannedBytes: number | null;
}

export interface PlanRefusal {
  kind: 'refusal';
  code: PlanRefusalCode;
  /** One line: why. */
  reason: string;
  /** Total bytes the target disk needs vs has (too-small), else null. */
  neededBytes: number | null;
  availableBytes: number | null;
  filesystems: RefusalFilesystem[];
  /** Candidate target disks (several-disks, disk-not-found, no-disk). */
  disks: { device: string; sizeBytes: number; byId: string[]; removable: boolean }[];
  cannotCarry: Uncarryable[];
}

export function isRefusal(p: Plan | PlanRefusal): p is PlanRefusal {
  return p.kind === 'refusal';
}
