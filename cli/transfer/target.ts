import type { Inventory, Plan, PlannedFilesystem, PlannedPartition } from './types.js';
import { execOk, type Remote } from './ssh.js';
import { runSteps, type Step } from './steps.js';

/**
 * Step 3 of `ramboot transfer`: the target disk made as the Plan says (partitions, LVM,
 * filesystems with the source's UUIDs and labels), mounted in order under MOUNT_ROOT, with a
 * marker holding the plan hash on its root filesystem. A rerun finds the marker with the same hash
 * on exactly the planned layout and only mounts (the copy then converges); anything else is wiped
 * and made again.
 */

export const MOUNT_ROOT = '/mnt/ramboot-transfer';
/** On the target's root filesystem; rsync excludes it (so --delete keeps it); removed when done. */
export const MARKER = '.ramboot-transfer';

export class PlanError extends Error {
  override name = 'PlanError';
}

const DEV_RE = /^\/dev\/[A-Za-z0-9][A-Za-z0-9._+:@=-]*(\/[A-Za-z0-9._+:@=-]+)*$/;
const MOUNTPOINT_RE = /^\/([A-Za-z0-9._+@-]+(\/[A-Za-z0-9._+@-]+)*)?$/;
const UUID_RE = /^[0-9A-Fa-f]{4,8}(-[0-9A-Fa-f]{4,12}){1,4}$/;
const GPT_TYPE_RE = /^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$/i;
const MBR_TYPE_RE = /^[0-9a-f]{1,2}$/i;
const LVM_NAME_RE = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$/;
const TEXT_RE = /^[\x20-\x7e]{0,72}$/;

function check(ok: boolean, what: string): void {
  if (!ok) throw new PlanError(`the plan has ${what}: refusing to run commands with it`);
}

export function validDevice(d: string): boolean {
  return DEV_RE.test(d) && !d.split('/').some((s) => s === '.' || s === '..');
}

export function validMountpoint(m: string): boolean {
  return MOUNTPOINT_RE.test(m) && !m.split('/').some((s) => s === '.' || s === '..');
}

/** Every value of a Plan that reaches a command line, checked (the plan is built from what machines reported). */
export function validatePlan(plan: Plan): void {
  check(/^[0-9a-f]{64}$/.test(plan.hash), `a bad hash "${plan.hash}"`);
  check(validDevice(plan.target.disk.device), `a bad target disk "${plan.target.disk.device}"`);
  check(plan.table === 'gpt' || plan.table === 'dos', `an unknown table type "${String(plan.table)}"`);
  for (const p of plan.partitions) {
    check(validDevice(p.device), `a bad partition device "${p.device}"`);
    check(Number.isSafeInteger(p.number) && p.number >= 1 && p.number <= 128, `a bad partition number ${p.number}`);
    check(Number.isSafeInteger(p.startSector) && Number.isSafeInteger(p.sizeSectors) && p.startSector > 0 && p.sizeSectors > 0, `bad sectors for ${p.device}`);
    check(plan.table === 'gpt' ? GPT_TYPE_RE.test(p.type) : MBR_TYPE_RE.test(p.type), `a bad partition type "${p.type}" for ${p.device}`);
    check(p.name === null || TEXT_RE.test(p.name), `a bad partition name for ${p.device}`);
    for (const a of p.attrs) check(gptAttrBit(a) !== undefined, `an unknown GPT attribute "${a}" on ${p.device}`);
  }
  for (const f of plan.filesystems) {
    check(validDevice(f.device), `a bad filesystem device "${f.device}"`);
    check(['ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'vfat', 'swap'].includes(f.type), `an unsupported filesystem type "${f.type}"`);
    check(f.uuid === null || UUID_RE.test(f.uuid), `a bad UUID "${String(f.uuid)}" for ${f.device}`);
    check(f.label === null || TEXT_RE.test(f.label), `a bad label for ${f.device}`);
    check(f.mountpoint === null || validMountpoint(f.mountpoint), `a mount point the transfer cannot handle: "${String(f.mountpoint)}"`);
  }
  for (const vg of plan.lvm) {
    check(LVM_NAME_RE.test(vg.name), `a bad volume group name "${vg.name}"`);
    check(Number.isSafeInteger(vg.extentBytes) && vg.extentBytes >= 1024 && (vg.extentBytes & (vg.extentBytes - 1)) === 0, `a bad extent size for ${vg.name}`);
    for (const pv of vg.pvs) check(validDevice(pv), `a bad PV device "${pv}"`);
    for (const lv of vg.lvs) {
      check(LVM_NAME_RE.test(lv.name), `a bad logical volume name "${lv.name}"`);
      check(Number.isSafeInteger(lv.extents) && lv.extents > 0, `bad extents for ${lv.name}`);
    }
  }
  for (const m of plan.mounts) {
    check(validMountpoint(m.mountpoint), `a mount point the transfer cannot handle: "${m.mountpoint}"`);
    check(validDevice(m.device), `a bad mount device "${m.device}"`);
  }
  check(plan.mounts[0]?.mountpoint === '/', 'no root filesystem mounted first');
  for (const c of plan.copies) {
    check(validMountpoint(c.mountpoint), `a mount point the transfer cannot handle: "${c.mountpoint}"`);
    check(validDevice(c.sourceDevice), `a bad source device "${c.sourceDevice}"`);
    check(c.sourcePath === null || validMountpoint(c.sourcePath), `a source path the transfer cannot handle: "${String(c.sourcePath)}"`);
  }
}

/** sfdisk's GPT attribute names -> sgdisk bit numbers. */
export function gptAttrBit(name: string): number | undefined {
  const fixed: Record<string, number> = { RequiredPartition: 0, NoBlockIOProtocol: 1, LegacyBIOSBootable: 2 };
  if (name in fixed) return fixed[name];
  const m = /^GUID:(\d{1,2})$/.exec(name);
  if (m && Number(m[1]) >= 48 && Number(m[1]) <= 63) return Number(m[1]);
  return undefined;
}

/** The source partitions' unique GUIDs, kept on GPT (fstab or a boot entry may name PARTUUID=). */
function partuuidFor(p: PlannedPartition, source: Inventory | undefined): string | undefined {
  if (!source || !p.source) return undefined;
  for (const d of source.disks) for (const sp of d.partitions) if (sp.path === p.source.device && sp.partuuid && GPT_TYPE_RE.test(sp.partuuid)) return sp.partuuid.toUpperCase();
  return undefined;
}

/** The partition table: sgdisk for GPT, sfdisk (script on stdin) for MBR. */
export function partitionSteps(plan: Plan, source?: Inventory): Step[] {
  const disk = plan.target.disk.device;
  if (plan.table === 'gpt') {
    const argv = ['sgdisk'];
    for (const p of plan.partitions) {
      const n = p.number;
      argv.push('-n', `${n}:${p.startSector}:${p.startSector + p.sizeSectors - 1}`, '-t', `${n}:${p.type.toUpperCase()}`);
      if (p.name) argv.push('-c', `${n}:${p.name}`);
      const uuid = partuuidFor(p, source);
      if (uuid) argv.push('-u', `${n}:${uuid}`);
      for (const a of p.attrs) argv.push('-A', `${n}:set:${gptAttrBit(a)!}`);
    }
    argv.push(disk);
    return [
      { what: `writing a new GPT on ${disk}`, argv: ['sgdisk', '-o', disk] },
      { what: `creating the partitions on ${disk}`, argv },
    ];
  }
  const lines = ['label: dos', 'unit: sectors', ''];
  for (const p of plan.partitions) {
    lines.push(`${p.device} : start=${p.startSector}, size=${p.sizeSectors}, type=${p.type.toLowerCase()}${p.bootable ? ', bootable' : ''}`);
  }
  return [{ what: `creating the MBR partitions on ${disk}`, argv: ['sfdisk', '--no-reread', '--no-tell-kernel', '-q', '-w', 'always', '-W', 'always', disk], input: `${lines.join('\n')}\n` }];
}

/** Everything old on the target disk out of the way: mounts, swap, volume groups, signatures. */
export function wipeSteps(plan: Plan, oldVgs: readonly string[]): Step[] {
  const disk = plan.target.disk.device;
  const steps: Step[] = [{ what: `unmounting ${MOUNT_ROOT}`, argv: ['umount', '-R', MOUNT_ROOT], mayFail: true }];
  for (const s of plan.swap) steps.push({ what: `swapoff ${s.device}`, argv: ['swapoff', s.device], mayFail: true });
  for (const vg of new Set([...oldVgs, ...plan.lvm.map((v) => v.name)])) {
    steps.push({ what: `deactivating the volume group ${vg}`, argv: ['vgchange', '-an', vg], mayFail: true });
  }
  // Signatures of the old partitions (an old PV or filesystem would otherwise be found again).
  steps.push({ what: `wiping the old partitions of ${disk}`, argv: ['sh', '-c', 'for p in $(lsblk -nrpo NAME -- "$1" | tail -n +2); do wipefs -a -f -- "$p" >/dev/null 2>&1; done; true', 'sh', disk] });
  steps.push({ what: `wiping ${disk}`, argv: ['wipefs', '-a', '-f', disk] });
  steps.push({ what: `zapping the partition tables of ${disk}`, argv: ['sgdisk', '--zap-all', disk], mayFail: true });
  return steps;
}

/** The kernel re-reads the table; the partition devices appear. */
export function settleSteps(plan: Plan, devices: readonly string[]): Step[] {
  const disk = plan.target.disk.device;
  return [
    { what: `re-reading the partition table of ${disk}`, argv: ['sh', '-c', 'partprobe -- "$1" 2>/dev/null || blockdev --rereadpt -- "$1"', 'sh', disk] },
    { what: 'waiting for udev', argv: ['udevadm', 'settle', '--timeout=60'], mayFail: true },
    ...devices.map((d) => ({ what: `waiting for ${d}`, argv: ['sh', '-c', 'i=0; while [ ! -b "$1" ]; do i=$((i+1)); [ $i -le 150 ] || { echo "$1 did not appear" >&2; exit 1; }; sleep 0.2; done', 'sh', d] })),
  ];
}

export function lvmSteps(plan: Plan): Step[] {
  const steps: Step[] = [];
  for (const vg of plan.lvm) {
    for (const pv of vg.pvs) steps.push({ what: `making ${pv} an LVM physical volume`, argv: ['pvcreate', '-ff', '-y', pv] });
    steps.push({ what: `creating the volume group ${vg.name}`, argv: ['vgcreate', '-y', '-s', `${vg.extentBytes / 1024}k`, vg.name, ...vg.pvs] });
    for (const lv of vg.lvs) {
      steps.push({ what: `creating the logical volume ${vg.name}/${lv.name}`, argv: ['lvcreate', '-y', '-W', 'y', '-Z', 'y', '-n', lv.name, '-l', String(lv.extents), vg.name] });
    }
  }
  if (plan.lvm.length) steps.push({ what: 'waiting for udev', argv: ['udevadm', 'settle', '--timeout=60'], mayFail: true });
  return steps;
}

/** The mkfs command keeping the source's UUID and label. */
export function mkfsArgv(f: PlannedFilesystem): string[] {
  const uuid = f.uuid ?? undefined;
  const label = f.label ?? undefined;
  switch (f.type) {
    case 'ext2':
    case 'ext3':
    case 'ext4':
      return [`mkfs.${f.type}`, '-F', '-q', ...(uuid ? ['-U', uuid] : []), ...(label ? ['-L', label] : []), f.device];
    case 'xfs':
      return ['mkfs.xfs', '-f', '-q', ...(uuid ? ['-m', `uuid=${uuid}`] : []), ...(label ? ['-L', label] : []), f.device];
    case 'btrfs':
      return ['mkfs.btrfs', '-f', '-q', ...(uuid ? ['-U', uuid] : []), ...(label ? ['-L', label] : []), f.device];
    case 'vfat': {
      const bits = /^FAT(12|16|32)$/.exec(f.version ?? '')?.[1];
      const id = uuid && /^[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}$/.test(uuid) ? uuid.replace('-', '') : undefined;
      return ['mkfs.vfat', ...(bits ? ['-F', bits] : []), ...(id ? ['-i', id] : []), ...(label ? ['-n', label] : []), f.device];
    }
    case 'swap':
      return ['mkswap', '-f', ...(uuid ? ['-U', uuid] : []), ...(label ? ['-L', label] : []), f.device];
  }
}

export function formatSteps(plan: Plan): Step[] {
  return plan.filesystems.map((f) => ({ what: `making the ${f.type} filesystem on ${f.device}`, argv: mkfsArgv(f) }));
}

/** The target path of a mount point under MOUNT_ROOT. */
export function underRoot(mountpoint: string): string {
  return mountpoint === '/' ? MOUNT_ROOT : `${MOUNT_ROOT}${mountpoint}`;
}

export function mountSteps(plan: Plan): Step[] {
  const steps: Step[] = [];
  for (const m of plan.mounts) {
    const dir = underRoot(m.mountpoint);
    steps.push({ what: `creating ${dir}`, argv: ['mkdir', '-p', dir] });
    steps.push({ what: `mounting ${m.device} on ${dir}`, argv: ['mount', '-t', m.vfstype, m.device, dir] });
  }
  return steps;
}

export function markerStep(plan: Plan): Step {
  return { what: 'writing the transfer marker', argv: ['sh', '-c', 'printf "%s\\n" "$1" >"$2" && sync', 'sh', plan.hash, `${MOUNT_ROOT}/${MARKER}`] };
}

/** The whole start-over: wipe, partition, LVM, mkfs, mount, marker. */
export function applySteps(plan: Plan, opts: { source?: Inventory; oldVgs?: readonly string[] } = {}): { stage: 'partition' | 'format' | 'mount'; steps: Step[] }[] {
  const lvDevices = plan.lvm.flatMap((v) => v.lvs.map((l) => l.path));
  return [
    { stage: 'partition', steps: [...wipeSteps(plan, opts.oldVgs ?? []), ...partitionSteps(plan, opts.source), ...settleSteps(plan, plan.partitions.filter((p) => p.role !== 'extended').map((p) => p.device))] },
    { stage: 'format', steps: [...lvmSteps(plan), ...settleSteps(plan, lvDevices).slice(2), ...formatSteps(plan)] },
    { stage: 'mount', steps: [...mountSteps(plan), markerStep(plan)] },
  ];
}

// ---------------------------------------------------------------------------------------------
// Resume: does the target already carry this plan?

interface SfdiskJson {
  partitiontable?: { label?: string; partitions?: { node: string; start: number; size: number; type: string }[] };
}

/** Why the layout on the target is not the planned one (undefined: it is). */
export function layoutMismatch(plan: Plan, sfdiskOut: string, blkid: Map<string, Record<string, string>>): string | undefined {
  let t: SfdiskJson;
  try {
    t = JSON.parse(sfdiskOut) as SfdiskJson;
  } catch {
    return 'no partition table';
  }
  const pt = t.partitiontable;
  if (!pt || pt.label !== plan.table) return `the partition table is ${pt?.label ?? 'missing'}, the plan wants ${plan.table}`;
  const parts = pt.partitions ?? [];
  if (parts.length !== plan.partitions.length) return `${parts.length} partitions, the plan has ${plan.partitions.length}`;
  for (const p of plan.partitions) {
    const q = parts.find((x) => x.node === p.device);
    if (!q) return `${p.device} is missing`;
    if (q.start !== p.startSector || q.size !== p.sizeSectors) return `${p.device} is at ${q.start}+${q.size}, the plan says ${p.startSector}+${p.sizeSectors}`;
    if (q.type.toLowerCase() !== p.type.toLowerCase()) return `${p.device} has type ${q.type}, the plan says ${p.type}`;
  }
  for (const f of plan.filesystems) {
    const b = blkid.get(f.device);
    if (!b) return `${f.device} has no filesystem`;
    if (b['TYPE'] !== f.type) return `${f.device} holds ${b['TYPE'] ?? 'nothing'}, the plan says ${f.type}`;
    if (f.uuid && (b['UUID'] ?? '').toLowerCase() !== f.uuid.toLowerCase()) return `${f.device} has UUID ${b['UUID'] ?? 'none'}, the plan says ${f.uuid}`;
  }
  return undefined;
}

/** `blkid -p -o export` blocks after "@@blkid DEV" lines -> device -> fields. */
export function parseBlkidSections(out: string): Map<string, Record<string, string>> {
  const m = new Map<string, Record<string, string>>();
  let cur: Record<string, string> | undefined;
  for (const line of out.split('\n')) {
    const h = /^@@blkid (.+)$/.exec(line);
    if (h) {
      cur = {};
      m.set(h[1]!, cur);
      continue;
    }
    const kv = /^([A-Z_]+)=(.*)$/.exec(line);
    if (kv && cur) cur[kv[1]!] = kv[2]!;
  }
  for (const [k, v] of m) if (Object.keys(v).length === 0) m.delete(k);
  return m;
}

/** Run on the target before a plan is applied: clears what an earlier run left, then reads the disk. */
export const PROBE = String.raw`
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH; LC_ALL=C; export LC_ALL
root=$1 disk=$2; shift 2
# A killed run's receiving rsync (rrsync's rsync --server, working in $root) holds the mounts until
# it notices that its sender is gone (a minute and more): stop it first.
for p in /proc/[0-9]*; do
  case $(readlink -- "$p/cwd" 2>/dev/null) in "$root" | "$root"/*) ;; *) continue ;; esac
  case $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) in
    *rsync\ --server\ *) pid=$(basename -- "$p"); kill -- "$pid" 2>/dev/null && echo "stopped an earlier run's rsync (pid $pid)" >&2 ;;
  esac
done
# an earlier run's mounts (chroot binds included)
i=0
while findmnt -rn -- "$root" >/dev/null 2>&1; do
  umount -R -- "$root" 2>/dev/null && break
  i=$((i+1)); if [ $i -ge 30 ]; then umount -R -l -- "$root" 2>/dev/null; break; fi
  sleep 1
done
while [ "$1" != -- ]; do vgchange -ay -- "$1" >/dev/null 2>&1; shift; done; shift
udevadm settle --timeout=30 >/dev/null 2>&1
echo @@sfdisk
sfdisk --json -- "$disk" 2>/dev/null
for d in "$@"; do echo "@@blkid $d"; [ -b "$d" ] && blkid -p -o export -- "$d" 2>/dev/null; done
echo @@end
`;

export interface ApplyHooks {
  onStage?: (stage: 'partition' | 'format' | 'mount', resumed: boolean) => void;
  onStep?: (s: Step) => void;
  log?: (msg: string) => void;
}

/**
 * Makes the target as planned, or finds it made by an earlier run of the same plan (then only
 * mounts). Returns whether it resumed.
 */
export async function applyPlan(target: Remote, plan: Plan, opts: { source?: Inventory; targetInventory?: Inventory } & ApplyHooks = {}): Promise<{ resumed: boolean }> {
  validatePlan(plan);
  const disk = plan.target.disk.device;
  const r = await execOk(target, ['sh', '-s', '--', MOUNT_ROOT, disk, ...plan.lvm.map((v) => v.name), '--', ...plan.filesystems.map((f) => f.device)], 'reading the target disk', { stdin: PROBE, timeoutMs: 120_000 });
  for (const l of r.stderr.split('\n')) if (l.startsWith('stopped an earlier run\'s rsync')) opts.log?.(`on the target: ${l}`);
  const sf = /@@sfdisk\n([\s\S]*?)@@blkid|@@sfdisk\n([\s\S]*?)@@end/.exec(r.stdout);
  const why = layoutMismatch(plan, (sf?.[1] ?? sf?.[2] ?? '').trim(), parseBlkidSections(r.stdout));
  if (why === undefined) {
    opts.onStage?.('mount', true);
    await runSteps(target, mountSteps(plan), opts.onStep);
    const m = await target.exec(['cat', `${MOUNT_ROOT}/${MARKER}`]);
    if (m.code === 0 && m.stdout.trim() === plan.hash) {
      opts.log?.(`the target already carries this plan (marker ${plan.hash.slice(0, 12)}): resuming without formatting`);
      return { resumed: true };
    }
    opts.log?.('the target has the planned layout but no marker of this plan: starting over');
  } else opts.log?.(`the target disk does not carry the plan (${why}): partitioning`);
  const oldVgs = (opts.targetInventory?.lvm.vgs ?? []).filter((vg) => vg.pvs.some((pv) => pv.startsWith(disk))).map((vg) => vg.name).filter((n) => LVM_NAME_RE.test(n));
  for (const { stage, steps } of applySteps(plan, { ...(opts.source ? { source: opts.source } : {}), oldVgs })) {
    opts.onStage?.(stage, false);
    await runSteps(target, steps, opts.onStep);
  }
  return { resumed: false };
}

/** Unmounts everything under MOUNT_ROOT (finish, and cleanup after a failure). */
export async function unmountTarget(target: Remote): Promise<void> {
  await runSteps(target, [
    { what: 'sync', argv: ['sync'] },
    { what: `unmounting ${MOUNT_ROOT}`, argv: ['sh', '-c', 'if findmnt -rn -- "$1" >/dev/null 2>&1; then umount -R -- "$1"; fi', 'sh', MOUNT_ROOT] },
  ]);
}
