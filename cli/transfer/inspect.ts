/**
 * Reading a machine: the output of INSPECT_SCRIPT (inspect-script.ts, run over SSH in one round trip) ->
 * an Inventory. Pure: no I/O. Every tool output is validated (zod for JSON); a missing, failed, truncated
 * or malformed required section gives an InspectError naming the section and why, never a crash.
 * Optional sections (LVM tools, mdstat, sfdisk on a disk without a table) degrade as documented below.
 */
import { z } from 'zod';
import { describeZodError } from '../../common/zod-error.js';
import { hasOption, isNetworkFs, isVirtualFs, namesBlockDevice, parseFstab, type FstabLine } from './fstab.js';
import type {
  ActiveSwap, Disk, Filesystem, FstabEntry, InspectMode, Inventory, Lvm, LvmLv, LvmPv, LvmVg, Partition,
  PartitionRole, TableType, Uncarryable,
} from './types.js';

export { INSPECT_SCRIPT, inspectRemoteCommand } from './inspect-script.js';

export class InspectError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InspectError';
  }
}

// ---------------------------------------------------------------------------------------------------
// Sections

export interface Section {
  name: string;
  stdout: string;
  stderr: string;
  rc: number;
}

export interface SplitOutput {
  version: number;
  mode: InspectMode;
  sections: Map<string, Section>;
}

/** Splits the script's output into its sections; checks the header and that it ran to the end. */
export function splitSections(text: string): SplitOutput {
  const lines = text.split('\n');
  const header = lines.findIndex((l) => l.startsWith('@@ramboot-inspect '));
  const m = header >= 0 ? /^@@ramboot-inspect (\d+) (live|cold)$/.exec(lines[header]!) : null;
  if (!m) throw new InspectError('inspection output: no "@@ramboot-inspect <version> <mode>" header (did the script run under sh?)');
  const version = Number(m[1]);
  if (version !== 1) throw new InspectError(`inspection output: version ${version} not understood (expected 1)`);
  const mode = m[2] as InspectMode;
  const sections = new Map<string, Section>();
  let done = false;
  for (let i = header + 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '@@ramboot-inspect-done') {
      done = true;
      break;
    }
    const b = /^@@ramboot-inspect-begin (.+)$/.exec(line);
    if (!b) continue;
    const name = b[1]!;
    const out: string[] = [];
    const err: string[] = [];
    let target = out;
    let rc: number | null = null;
    for (i++; i < lines.length; i++) {
      const l = lines[i]!;
      if (l === `@@ramboot-inspect-stderr ${name}`) {
        target = err;
        continue;
      }
      const e = /^@@ramboot-inspect-end (.+) (\d+)$/.exec(l);
      if (e && e[1] === name) {
        rc = Number(e[2]);
        break;
      }
      target.push(l);
    }
    if (rc === null) throw new InspectError(`inspection output truncated inside section "${name}"`);
    // The script adds one newline before each marker.
    const join = (a: string[]) => a.join('\n').replace(/\n$/, '');
    sections.set(name, { name, stdout: join(out), stderr: join(err).trim(), rc });
  }
  if (!done) throw new InspectError('inspection output truncated: no "@@ramboot-inspect-done" (the connection or the script stopped early)');
  return { version, mode, sections };
}

function required(s: SplitOutput, name: string): Section {
  const sec = s.sections.get(name);
  if (!sec) throw new InspectError(`inspection output has no "${name}" section`);
  if (sec.rc !== 0) {
    const why = sec.rc === 127 ? 'command not found' : `exit ${sec.rc}`;
    throw new InspectError(`inspection: ${name} failed (${why}): ${sec.stderr.split('\n')[0] ?? ''}`.trim());
  }
  return sec;
}

function parseJson<T>(sec: Section, schema: z.ZodType<T>): T {
  let raw: unknown;
  try {
    raw = JSON.parse(sec.stdout);
  } catch (e) {
    throw new InspectError(`inspection: ${sec.name} output is not JSON (${(e as Error).message})`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new InspectError(`inspection: ${sec.name} output not as expected: ${describeZodError(r.error)}`);
  return r.data;
}

// ---------------------------------------------------------------------------------------------------
// Tool output schemas (lenient on extra fields, strict on the ones used)

const num = z.union([z.number().int().nonnegative(), z.string().regex(/^\d+$/).transform(Number)]);
const boolish = z.union([z.boolean(), z.enum(['0', '1']).transform((v) => v === '1')]);
const str = z.string().nullable().optional();

interface LsblkDev {
  name: string;
  kname?: string | undefined;
  path?: string | undefined;
  type: string;
  size: number;
  rm?: boolean | undefined;
  ro?: boolean | undefined;
  'log-sec'?: number | null | undefined;
  fstype?: string | null | undefined;
  fsver?: string | null | undefined;
  uuid?: string | null | undefined;
  label?: string | null | undefined;
  fssize?: number | null | undefined;
  fsused?: number | null | undefined;
  parttype?: string | null | undefined;
  partlabel?: string | null | undefined;
  partuuid?: string | null | undefined;
  partflags?: string | null | undefined;
  pttype?: string | null | undefined;
  ptuuid?: string | null | undefined;
  start?: number | null | undefined;
  model?: string | null | undefined;
  serial?: string | null | undefined;
  tran?: string | null | undefined;
  mountpoint?: string | null | undefined;
  mountpoints?: (string | null)[] | undefined;
  children?: LsblkDev[] | undefined;
}

const lsblkDev: z.ZodType<LsblkDev> = z.lazy(() =>
  z.object({
    name: z.string().min(1),
    kname: z.string().optional(),
    path: z.string().optional(),
    type: z.string(),
    size: num,
    rm: boolish.optional(),
    ro: boolish.optional(),
    'log-sec': num.nullable().optional(),
    fstype: str,
    fsver: str,
    uuid: str,
    label: str,
    fssize: num.nullable().optional(),
    fsused: num.nullable().optional(),
    parttype: str,
    partlabel: str,
    partuuid: str,
    partflags: str,
    pttype: str,
    ptuuid: str,
    start: num.nullable().optional(),
    model: str,
    serial: str,
    tran: str,
    mountpoint: str,
    mountpoints: z.array(z.string().nullable()).optional(),
    children: z.array(lsblkDev).optional(),
  }),
);
const lsblkSchema = z.object({ blockdevices: z.array(lsblkDev) });

const sfdiskSchema = z.object({
  partitiontable: z.object({
    label: z.string(),
    id: z.string().optional(),
    device: z.string(),
    unit: z.literal('sectors'),
    sectorsize: num.optional(),
    partitions: z
      .array(
        z.object({
          node: z.string(),
          start: num,
          size: num,
          type: z.string(),
          uuid: z.string().optional(),
          name: z.string().optional(),
          attrs: z.string().optional(),
          bootable: z.boolean().optional(),
        }),
      )
      .default([]),
  }),
});
type SfdiskTable = z.infer<typeof sfdiskSchema>['partitiontable'];

const findmntSchema = z.object({
  filesystems: z.array(
    z.object({
      source: z.string(),
      target: z.string(),
      fstype: z.string(),
      options: z.string().optional(),
      size: num.nullable().optional(),
      used: num.nullable().optional(),
      avail: num.nullable().optional(),
    }),
  ),
});

const lvmReport = <T extends z.ZodRawShape>(key: string, row: T) =>
  z.object({ report: z.array(z.object({ [key]: z.array(z.object(row)) })).min(1) });
const pvsSchema = lvmReport('pv', { pv_name: z.string(), vg_name: z.string(), pv_uuid: z.string(), pv_size: num, pv_free: num });
const vgsSchema = lvmReport('vg', { vg_name: z.string(), vg_uuid: z.string(), vg_size: num, vg_free: num, vg_extent_size: num });
const lvsSchema = lvmReport('lv', {
  vg_name: z.string(), lv_name: z.string(), lv_uuid: z.string(), lv_size: num, lv_attr: z.string(), segtype: z.string(),
  lv_path: z.string(), lv_dm_path: z.string(),
});

// ---------------------------------------------------------------------------------------------------
// Small text formats

/** `blkid -o export`: blocks of KEY=value lines separated by blank lines; values backslash-escaped. */
export function parseBlkidExport(text: string): Map<string, Record<string, string>> {
  const out = new Map<string, Record<string, string>>();
  for (const block of text.split(/\n\s*\n/)) {
    const rec: Record<string, string> = {};
    for (const line of block.split('\n')) {
      const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
      if (m) rec[m[1]!] = m[2]!.replace(/\\(.)/g, '$1');
    }
    if (rec['DEVNAME']) out.set(rec['DEVNAME'], rec);
  }
  return out;
}

/** /proc/swaps (sizes in KiB). */
export function parseSwaps(text: string): ActiveSwap[] {
  const out: ActiveSwap[] = [];
  for (const line of text.split('\n').slice(1)) {
    if (!line.trim()) continue;
    const f = line.trim().split(/\s+/);
    if (f.length < 5 || !/^\d+$/.test(f[2]!) || !/^\d+$/.test(f[3]!) || !/^-?\d+$/.test(f[4]!)) {
      throw new InspectError(`inspection: /proc/swaps line not understood: ${JSON.stringify(line)}`);
    }
    out.push({
      device: f[0]!.replace(/\\040/g, ' '),
      kind: f[1] === 'file' ? 'file' : 'partition',
      sizeBytes: Number(f[2]) * 1024,
      usedBytes: Number(f[3]) * 1024,
      priority: Number(f[4]),
    });
  }
  return out;
}

/** /proc/mdstat: array name -> member kernel names. */
export function parseMdstat(text: string): Map<string, { state: string; level: string; members: string[] }> {
  const out = new Map<string, { state: string; level: string; members: string[] }>();
  for (const line of text.split('\n')) {
    const m = /^(md\S*)\s*:\s*(\S+)\s+(?:\((?:auto-)?read-only\)\s+)?(\S+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const members = [...m[4]!.matchAll(/(\S+?)\[\d+\]/g)].map((x) => x[1]!);
    out.set(m[1]!, { state: m[2]!, level: m[3]!, members });
  }
  return out;
}

/** df -B1 --output=size,used,avail: header + one line of numbers. */
function parseDf(sec: Section): { size: number; used: number } | null {
  if (sec.rc !== 0) return null;
  const line = sec.stdout.split('\n').filter((l) => l.trim()).slice(-1)[0] ?? '';
  const f = line.trim().split(/\s+/);
  if (f.length < 2 || !/^\d+$/.test(f[0]!) || !/^\d+$/.test(f[1]!)) return null;
  return { size: Number(f[0]), used: Number(f[1]) };
}

// ---------------------------------------------------------------------------------------------------
// Type codes

export const GPT = {
  biosBoot: '21686148-6449-6E6F-744E-656564454649',
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  swap: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
  lvm: 'E6D6D379-F507-44C2-A23C-238F2A3DF928',
  raid: 'A19D880F-05FC-4D3B-A006-743F0F84911E',
  luks: 'CA7D7CCB-63ED-4C53-861C-1742536059CC',
  linux: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
} as const;

const MBR_EXTENDED = new Set(['05', '0f', '85']);

/** MBR type as two lower-case hex digits ("5" -> "05", "0x83" -> "83"). */
export function normaliseMbrType(t: string): string {
  const h = t.toLowerCase().replace(/^0x/, '');
  if (!/^[0-9a-f]{1,2}$/.test(h)) throw new InspectError(`MBR partition type ${JSON.stringify(t)} not understood`);
  return h.padStart(2, '0');
}

function roleOf(table: TableType, type: string, fsType: string | null): PartitionRole {
  if (table === 'gpt' && type === GPT.biosBoot) return 'bios-boot';
  if (table === 'dos' && MBR_EXTENDED.has(type)) return 'extended';
  if (fsType === 'swap') return 'swap';
  if (fsType === 'LVM2_member') return 'lvm';
  if (fsType === 'crypto_LUKS') return 'luks';
  if (fsType === 'linux_raid_member') return 'raid';
  if ((table === 'gpt' && type === GPT.esp) || (table === 'dos' && type === 'ef')) return 'esp';
  if (fsType) return 'data';
  if (table === 'gpt') {
    if (type === GPT.swap) return 'swap';
    if (type === GPT.lvm) return 'lvm';
    if (type === GPT.raid) return 'raid';
    if (type === GPT.luks) return 'luks';
  } else {
    if (type === '82') return 'swap';
    if (type === '8e') return 'lvm';
    if (type === 'fd') return 'raid';
  }
  return fsType === null ? 'other' : 'data';
}

/** Filesystem types the transfer can carry. */
export const CARRYABLE_FS = new Set(['ext2', 'ext3', 'ext4', 'xfs', 'btrfs', 'vfat', 'swap']);
const CONTAINER_FS = new Set(['LVM2_member', 'crypto_LUKS', 'linux_raid_member']);

// ---------------------------------------------------------------------------------------------------
// The inventory

const SKIP_DISK = /^(zram|ram|loop|sr|fd|nbd)\d*/;

function flatten(devs: readonly LsblkDev[], parent: LsblkDev | null, out: { dev: LsblkDev; parent: LsblkDev | null }[]): void {
  for (const d of devs) {
    out.push({ dev: d, parent });
    if (d.children) flatten(d.children, d, out);
  }
}

function pathOf(d: LsblkDev): string {
  return d.path ?? `/dev/${d.name}`;
}

/** Partition number from its kernel name (vda2 -> 2, nvme0n1p3 -> 3). */
function partNumber(name: string): number | null {
  const m = /(\d+)$/.exec(name);
  return m ? Number(m[1]) : null;
}

const HOSTNAME_RE = /^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$/;

/** Parses the whole output of INSPECT_SCRIPT. Throws InspectError on anything it cannot trust. */
export function parseInspection(text: string): Inventory {
  const s = splitSections(text);
  const warnings: string[] = [];

  let hostname = required(s, 'hostname').stdout.trim();
  if (!HOSTNAME_RE.test(hostname)) throw new InspectError(`inspection: hostname ${JSON.stringify(hostname)} not understood`);
  const fw = required(s, 'firmware').stdout.trim();
  if (fw !== 'bios' && fw !== 'uefi') throw new InspectError(`inspection: firmware ${JSON.stringify(fw)} not understood`);
  const kernelSec = s.sections.get('kernel');
  const kernel = kernelSec && kernelSec.rc === 0 ? kernelSec.stdout.trim() || null : null;

  const lsblk = parseJson(required(s, 'lsblk'), lsblkSchema);
  const blkidSec = s.sections.get('blkid');
  // blkid exits 2 when it finds nothing (a blank machine): that is no information, not an error.
  const blkid = blkidSec && (blkidSec.rc === 0 || blkidSec.rc === 2) ? parseBlkidExport(blkidSec.stdout) : new Map<string, Record<string, string>>();
  const mounts = parseJson(required(s, 'findmnt'), findmntSchema).filesystems;
  const swapsSec = s.sections.get('swaps');
  const swapsRaw = swapsSec && swapsSec.rc === 0 ? parseSwaps(swapsSec.stdout) : [];
  const mdSec = s.sections.get('mdstat');
  const mdstat = mdSec && mdSec.rc === 0 ? parseMdstat(mdSec.stdout) : new Map<string, { state: string; level: string; members: string[] }>();

  // by-id / by-path links: target -> links
  const links = new Map<string, string[]>();
  const linkTarget = new Map<string, string>();
  for (const line of (s.sections.get('links')?.stdout ?? '').split('\n')) {
    const [l, target] = line.split('\t');
    if (!l || !target || !l.startsWith('/dev/disk/')) continue;
    linkTarget.set(l, target);
    links.set(target, [...(links.get(target) ?? []), l]);
  }

  // LVM
  const lvmAvailable = s.sections.has('pvs');
  const lvm: Lvm = { available: lvmAvailable, pvs: [], vgs: [], lvs: [] };
  if (lvmAvailable) {
    const pvs = parseJson(required(s, 'pvs'), pvsSchema).report[0]!['pv'] as z.infer<typeof pvsSchema>['report'][number]['pv'];
    const vgs = parseJson(required(s, 'vgs'), vgsSchema).report[0]!['vg'] as z.infer<typeof vgsSchema>['report'][number]['vg'];
    const lvs = parseJson(required(s, 'lvs'), lvsSchema).report[0]!['lv'] as z.infer<typeof lvsSchema>['report'][number]['lv'];
    lvm.pvs = pvs.map((p): LvmPv => ({ device: p.pv_name, vg: p.vg_name || null, uuid: p.pv_uuid, sizeBytes: p.pv_size, freeBytes: p.pv_free }));
    lvm.vgs = vgs.map((v): LvmVg => ({
      name: v.vg_name, uuid: v.vg_uuid, sizeBytes: v.vg_size, freeBytes: v.vg_free, extentBytes: v.vg_extent_size,
      pvs: lvm.pvs.filter((p) => p.vg === v.vg_name).map((p) => p.device),
    }));
    const byUuid = new Map<string, LvmLv>();
    for (const r of lvs) {
      const seen = byUuid.get(r.lv_uuid);
      if (seen) {
        if (!seen.segtype.split(',').includes(r.segtype)) seen.segtype += `,${r.segtype}`;
        continue;
      }
      byUuid.set(r.lv_uuid, {
        vg: r.vg_name, name: r.lv_name, path: r.lv_path || `/dev/${r.vg_name}/${r.lv_name}`,
        mapperPath: r.lv_dm_path || `/dev/mapper/${r.vg_name.replaceAll('-', '--')}-${r.lv_name.replaceAll('-', '--')}`,
        uuid: r.lv_uuid, sizeBytes: r.lv_size, attr: r.lv_attr, segtype: r.segtype, fs: null,
      });
    }
    lvm.lvs = [...byUuid.values()];
  }

  // Every lsblk node, and the aliases of each block device -> its canonical path (LVs: /dev/<vg>/<lv>).
  const nodes: { dev: LsblkDev; parent: LsblkDev | null }[] = [];
  flatten(lsblk.blockdevices, null, nodes);
  const canonical = new Map<string, string>();
  const lvByMapper = new Map(lvm.lvs.map((lv) => [lv.mapperPath, lv]));
  for (const { dev } of nodes) {
    const p = pathOf(dev);
    const lv = lvByMapper.get(p);
    const c = lv ? lv.path : p;
    for (const a of [p, `/dev/${dev.name}`, dev.kname ? `/dev/${dev.kname}` : null]) if (a && !canonical.has(a)) canonical.set(a, c);
  }
  for (const lv of lvm.lvs) {
    canonical.set(lv.path, lv.path);
    canonical.set(lv.mapperPath, lv.path);
  }
  const canon = (p: string): string => canonical.get(p) ?? canonical.get(linkTarget.get(p) ?? '') ?? p;

  // Mounts on the inspected machine, by canonical device.
  const mountsOf = new Map<string, { target: string; fstype: string; size: number | null; used: number | null }[]>();
  for (const m of mounts) {
    if (!m.source.startsWith('/dev/')) continue;
    const dev = canon(m.source.replace(/\[.*\]$/, ''));
    mountsOf.set(dev, [...(mountsOf.get(dev) ?? []), { target: m.target, fstype: m.fstype, size: m.size ?? null, used: m.used ?? null }]);
  }

  // Cold: used bytes measured on read-only mounts.
  const usage = new Map<string, { size: number; used: number }>();
  for (const sec of s.sections.values()) {
    const u = /^usage (\/dev\/\S+)$/.exec(sec.name);
    if (u) {
      const d = parseDf(sec);
      if (d) usage.set(canon(u[1]!), d);
      else warnings.push(`used bytes of ${u[1]} not measured: df said ${JSON.stringify(sec.stderr.split('\n')[0] ?? '')}`);
    }
    const f = /^(mount|umount)-failed (\/dev\/\S+)$/.exec(sec.name);
    if (f) warnings.push(`${f[1]} of ${f[2]} read-only failed: ${(sec.stdout || sec.stderr).split('\n')[0] ?? ''}`);
  }

  // The fstab of the source system.
  let fstabLines: FstabLine[] = [];
  let fstabFrom: string | null = null;
  let coldRoot: string | null = null;
  const fstabSections = [...s.sections.values()].filter((x) => x.name.startsWith('fstab ') && x.rc === 0);
  // Resolution of fstab specs to canonical devices (needs filesystems' uuid/label: from blkid + lsblk).
  const tagIndex = new Map<string, string>();
  const addTag = (k: string, v: string | null | undefined, dev: string) => {
    if (v && !tagIndex.has(`${k}=${v.toLowerCase()}`)) tagIndex.set(`${k}=${v.toLowerCase()}`, dev);
  };
  for (const { dev } of nodes) {
    const c = canon(pathOf(dev));
    const b = blkid.get(pathOf(dev)) ?? {};
    addTag('UUID', b['UUID'] ?? dev.uuid, c);
    addTag('LABEL', b['LABEL'] ?? dev.label, c);
    addTag('PARTUUID', b['PARTUUID'] ?? dev.partuuid, c);
    addTag('PARTLABEL', b['PARTLABEL'] ?? dev.partlabel, c);
  }
  const resolve = (spec: string): string | null => {
    const tag = /^(UUID|LABEL|PARTUUID|PARTLABEL)=(.*)$/.exec(spec);
    if (tag) return tagIndex.get(`${tag[1]}=${tag[2]!.replace(/^"(.*)"$/, '$1').toLowerCase()}`) ?? null;
    const by = /^\/dev\/disk\/by-(uuid|label|partuuid|partlabel)\/(.+)$/.exec(spec);
    if (by) return tagIndex.get(`${by[1]!.toUpperCase()}=${by[2]!.replace(/\\x2f/g, '/').toLowerCase()}`) ?? canonical.get(linkTarget.get(spec) ?? '') ?? null;
    if (spec.startsWith('/dev/')) {
      const c = canonical.get(spec) ?? canonical.get(linkTarget.get(spec) ?? '');
      return c ?? null;
    }
    return null;
  };

  if (s.mode === 'live') {
    const sec = s.sections.get('fstab /etc/fstab');
    if (sec && sec.rc === 0) {
      fstabLines = parseWithContext(sec.stdout, '/etc/fstab');
      fstabFrom = '/etc/fstab';
    }
  } else {
    const candidates: { raw: string; dev: string; path: string; lines: FstabLine[] }[] = [];
    for (const sec of fstabSections) {
      const m = /^fstab (\/dev\/\S+):(\/.*)$/.exec(sec.name);
      if (!m) continue;
      candidates.push({ raw: m[1]!, dev: canon(m[1]!), path: m[2]!, lines: parseWithContext(sec.stdout, `${m[1]}:${m[2]}`) });
    }
    // The source root: a filesystem whose own fstab mounts it at /.
    const rooted = candidates.filter((c) => c.lines.some((l) => l.file === '/' && resolve(l.spec) === c.dev));
    const chosen = rooted[0] ?? (candidates.length === 1 ? candidates[0] : undefined);
    if (rooted.length > 1) warnings.push(`several root filesystems found (${rooted.map((c) => c.dev).join(', ')}): using ${chosen!.dev}`);
    if (!chosen && candidates.length > 1) warnings.push(`several fstabs found and none mounts its own filesystem at /: ${candidates.map((c) => `${c.dev}:${c.path}`).join(', ')}`);
    if (chosen && rooted.length === 0) warnings.push(`the only fstab found (${chosen.dev}:${chosen.path}) does not name its own filesystem for /: taken as the root anyway`);
    if (chosen) {
      fstabLines = chosen.lines;
      fstabFrom = `${chosen.dev}:${chosen.path}`;
      coldRoot = chosen.dev;
      // Cold: the machine runs the RAM OS; the source system's name is the one in its own root.
      const own = s.sections.get(`etc-hostname ${chosen.raw}:${chosen.path.replace(/fstab$/, 'hostname')}`);
      const name = own && own.rc === 0 ? own.stdout.trim().split('\n')[0]!.trim() : '';
      if (HOSTNAME_RE.test(name)) hostname = name;
      else warnings.push(`the source root has no usable /etc/hostname${name ? ` (${JSON.stringify(name.slice(0, 64))})` : ''}: the target keeps the name ${hostname}`);
    }
  }
  const fstab: FstabEntry[] = fstabLines.map((l) => ({ ...l, device: namesBlockDevice(l.spec) ? resolve(l.spec) : null }));
  const fstabOf = (dev: string) => fstab.find((e) => e.device === dev && e.vfstype !== 'swap' && e.file.startsWith('/'));
  const inFstab = (dev: string) => fstab.some((e) => e.device === dev);

  const fsOf = (dev: LsblkDev): Filesystem | null => {
    const p = pathOf(dev);
    const c = canon(p);
    const b = blkid.get(p) ?? {};
    const mine = mountsOf.get(c) ?? [];
    // No signature read (no udev data, blkid not permitted) but mounted: the kernel's word for it.
    const type = b['TYPE'] ?? dev.fstype ?? mine[0]?.fstype ?? null;
    if (!type) return null;
    const entry = fstabOf(c);
    const mountedAt = s.mode === 'live' ? (mine.find((m) => m.target === entry?.file) ?? mine[0])?.target ?? null : null;
    const live = s.mode === 'live' ? mine.find((m) => m.target === mountedAt) : undefined;
    const u = usage.get(c);
    return {
      type,
      version: dev.fsver ?? b['VERSION'] ?? null,
      uuid: b['UUID'] ?? dev.uuid ?? null,
      label: b['LABEL'] ?? dev.label ?? null,
      mountpoint: type === 'swap' ? null : entry?.file ?? mountedAt,
      mountedAt,
      sizeBytes: u?.size ?? live?.size ?? dev.fssize ?? null,
      usedBytes: type === 'swap' ? null : u?.used ?? live?.used ?? dev.fsused ?? null,
    };
  };

  // Disks and partitions.
  const sfdiskOf = (name: string): SfdiskTable | null => {
    const sec = s.sections.get(`sfdisk /dev/${name}`);
    if (!sec || sec.rc !== 0) {
      if (sec && !/does not contain a recognized partition table/.test(sec.stderr)) {
        warnings.push(`sfdisk /dev/${name} failed (${sec.stderr.split('\n')[0] ?? `exit ${sec.rc}`}): partitions read from lsblk`);
      }
      return null;
    }
    return parseJson(sec, sfdiskSchema).partitiontable;
  };

  const disks: Disk[] = [];
  for (const d of lsblk.blockdevices) {
    if (d.type !== 'disk' || SKIP_DISK.test(d.name) || d.size === 0) continue;
    const path = pathOf(d);
    const sectorSize = d['log-sec'] ?? 512;
    const sf = sfdiskOf(d.name);
    const label = sf?.label ?? d.pttype ?? null;
    if (label !== null && label !== 'gpt' && label !== 'dos') throw new InspectError(`${path}: partition table type ${label} not supported (only gpt and dos)`);
    const table: TableType | null = label;
    const children = (d.children ?? []).filter((c) => c.type === 'part');
    const partitions: Partition[] = [];
    if (table) {
      const rows = sf
        ? sf.partitions.map((p) => ({ node: p.node, start: p.start * (sf.sectorsize ?? sectorSize), size: p.size * (sf.sectorsize ?? sectorSize), type: p.type, uuid: p.uuid ?? null, name: p.name ?? null, attrs: p.attrs ?? '', bootable: p.bootable ?? false }))
        : children.map((c) => ({ node: pathOf(c), start: (c.start ?? 0) * 512, size: c.size, type: c.parttype ?? '', uuid: c.partuuid ?? null, name: c.partlabel ?? null, attrs: '', bootable: false }));
      for (const r of rows) {
        const child = children.find((c) => pathOf(c) === r.node || `/dev/${c.name}` === r.node);
        const number = partNumber(r.node);
        if (number === null) throw new InspectError(`${path}: partition ${r.node} has no number`);
        const type = table === 'gpt' ? r.type.toUpperCase() : normaliseMbrType(r.type);
        const fs = child ? fsOf(child) : null;
        partitions.push({
          number,
          path: child ? pathOf(child) : r.node,
          startBytes: r.start,
          sizeBytes: r.size,
          type,
          name: table === 'gpt' ? r.name || child?.partlabel || null : null,
          partuuid: (table === 'gpt' ? r.uuid : null) ?? child?.partuuid ?? null,
          attrs: r.attrs.split(/\s+/).filter(Boolean),
          bootable: table === 'dos' && r.bootable,
          role: roleOf(table, type, fs?.type ?? null),
          fs,
        });
      }
      partitions.sort((a, b) => a.startBytes - b.startBytes);
    }
    disks.push({
      path, name: d.name, sizeBytes: d.size, sectorSize, removable: d.rm ?? false, readOnly: d.ro ?? false,
      model: d.model?.trim() || null, serial: d.serial?.trim() || null, transport: d.tran ?? null,
      byId: (links.get(path) ?? []).filter((l) => l.startsWith('/dev/disk/by-id/')).sort(),
      byPath: (links.get(path) ?? []).filter((l) => l.startsWith('/dev/disk/by-path/')).sort(),
      table, tableId: table ? sf?.id ?? d.ptuuid ?? null : null,
      partitions,
      fs: table ? null : fsOf(d),
    });
  }

  // LV filesystems.
  for (const lv of lvm.lvs) {
    const node = nodes.find((n) => pathOf(n.dev) === lv.mapperPath || canon(pathOf(n.dev)) === lv.path);
    lv.fs = node ? fsOf(node.dev) : null;
  }

  // Active swap, by canonical device.
  const swaps = swapsRaw.map((x) => (x.kind === 'partition' ? { ...x, device: canon(x.device) } : x));

  // What cannot be carried.
  const unsupported: Uncarryable[] = [];
  const used = (dev: string) => (mountsOf.get(dev)?.length ?? 0) > 0 || inFstab(dev) || swaps.some((x) => x.device === dev);
  const mountpointOf = (dev: string) => fstabOf(dev)?.file ?? mountsOf.get(dev)?.[0]?.target ?? null;
  const mdDevices = nodes.filter((n) => /^raid|^linear$/.test(n.dev.type)).map((n) => canon(pathOf(n.dev)));
  const mdInUse = mdDevices.some(used) || fstab.some((e) => e.device !== null && /^\/dev\/md/.test(e.device));
  const cryptOpen = (p: string) => nodes.some((n) => n.dev.type === 'crypt' && n.parent !== null && canon(pathOf(n.parent)) === p);
  const fstabNamesCrypt = fstab.some((e) => e.device === null && /^\/dev\/mapper\//.test(e.spec));
  const blockItems: { path: string; fs: Filesystem | null }[] = [
    ...disks.flatMap((d) => (d.table ? d.partitions.map((p) => ({ path: p.path, fs: p.fs })) : [{ path: d.path, fs: d.fs }])),
    ...lvm.lvs.map((lv) => ({ path: lv.path, fs: lv.fs })),
  ];
  for (const { path, fs } of blockItems) {
    const type = fs?.type ?? null;
    if (!type) continue;
    if (type === 'linux_raid_member') {
      const arrays = [...mdstat.entries()].filter(([, a]) => a.members.some((m) => `/dev/${m}` === path || canon(`/dev/${m}`) === path)).map(([n]) => n);
      unsupported.push({
        kind: 'md-raid', device: path, mountpoint: null, inUse: mdInUse || arrays.length > 0,
        reason: `md RAID member${arrays.length ? ` of ${arrays.map((a) => `/dev/${a}`).join(', ')}` : ''}: md RAID is not carried (the target gets one disk)`,
      });
    } else if (type === 'crypto_LUKS') {
      const open = cryptOpen(path);
      unsupported.push({
        kind: 'luks', device: path, mountpoint: null, inUse: open || fstabNamesCrypt,
        reason: `dm-crypt LUKS container${open ? ' (open)' : ''}: not carried without its key`,
      });
    } else if (type === 'LVM2_member') {
      if (!lvm.available) unsupported.push({ kind: 'lvm-unsupported', device: path, mountpoint: null, inUse: true, reason: 'LVM physical volume, but the LVM tools are not installed on this machine: its volumes cannot be read' });
    } else if (!CARRYABLE_FS.has(type) && !CONTAINER_FS.has(type)) {
      unsupported.push({ kind: 'unknown-fs', device: path, mountpoint: mountpointOf(path), inUse: used(path), reason: `filesystem type ${type} is not carried (carried: ${[...CARRYABLE_FS].join(', ')})` });
    }
  }
  for (const lv of lvm.lvs) {
    const segs = lv.segtype.split(',');
    if (segs.some((x) => x !== 'linear' && x !== 'striped')) {
      unsupported.push({ kind: 'lvm-unsupported', device: lv.path, mountpoint: mountpointOf(lv.path), inUse: used(lv.path) || /^.{4}a/.test(lv.attr), reason: `logical volume of type ${lv.segtype}: only linear and striped volumes are carried` });
    }
  }
  const subvolMounts = fstab.filter((e) => e.vfstype === 'btrfs' && /(^|,)subvol(id)?=/.test(e.options));
  for (const dev of new Set(subvolMounts.map((e) => e.device ?? e.spec))) {
    const at = subvolMounts.filter((e) => (e.device ?? e.spec) === dev).map((e) => e.file);
    unsupported.push({ kind: 'other', device: dev, mountpoint: at[0] ?? null, inUse: true, reason: `btrfs subvolumes (mounted at ${at.join(', ')}): the subvolume layout is not carried yet` });
  }
  for (const e of fstab) {
    if (isNetworkFs(e.vfstype)) {
      unsupported.push({ kind: 'network-fs', device: e.spec, mountpoint: e.file, inUse: false, reason: `network filesystem (${e.vfstype}): its fstab line is kept, its data is not copied` });
    } else if (e.vfstype === 'swap' && !namesBlockDevice(e.spec)) {
      unsupported.push({ kind: 'swap-file', device: e.spec, mountpoint: null, inUse: false, reason: 'swap file: copied with its filesystem; a sparse copy cannot be used as swap (recreate it with fallocate + mkswap if swapon refuses it)' });
    } else if (namesBlockDevice(e.spec) && e.device === null && !isVirtualFs(e.vfstype)) {
      const optional = hasOption(e.options, 'noauto') || hasOption(e.options, 'nofail');
      unsupported.push({ kind: 'missing-device', device: e.spec, mountpoint: e.vfstype === 'swap' ? null : e.file, inUse: !optional, reason: `fstab names ${e.spec}${e.file.startsWith('/') ? ` for ${e.file}` : ''}, which is not on this machine${optional ? ' (noauto/nofail: not needed to boot)' : ''}` });
    }
  }
  for (const sw of swaps) {
    if (sw.kind === 'file' && !unsupported.some((u) => u.kind === 'swap-file' && u.device === sw.device)) {
      unsupported.push({ kind: 'swap-file', device: sw.device, mountpoint: null, inUse: false, reason: 'active swap file: copied with its filesystem; a sparse copy cannot be used as swap (recreate it with fallocate + mkswap if swapon refuses it)' });
    }
  }

  let rootDevice: string | null;
  if (s.mode === 'live') {
    const root = mounts.find((m) => m.target === '/');
    rootDevice = root && root.source.startsWith('/dev/') ? canon(root.source.replace(/\[.*\]$/, '')) : null;
  } else {
    rootDevice = coldRoot;
  }

  const inv: Inventory = {
    schema: 1, mode: s.mode, hostname, bootMode: fw, kernel, disks, lvm, swaps, fstab, fstabFrom, rootDevice, unsupported,
  };
  if (warnings.length) inv.warnings = warnings;
  return inv;
}

function parseWithContext(text: string, where: string): FstabLine[] {
  try {
    return parseFstab(text, where);
  } catch (e) {
    throw new InspectError(`inspection: ${(e as Error).message}`);
  }
}
