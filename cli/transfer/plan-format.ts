/** Human text of a Plan (`ramboot transfer --plan`) and of a PlanRefusal; what cannot be carried is always printed. */
import { table } from '../table.js';
import { fmt } from './plan.js';
import type { Plan, PlannedPartition, PlanRefusal, Uncarryable } from './types.js';

const GPT_NAMES: Record<string, string> = {
  '21686148-6449-6E6F-744E-656564454649': 'BIOS boot',
  'C12A7328-F81F-11D2-BA4B-00A0C93EC93B': 'EFI system',
  '0FC63DAF-8483-4772-8E79-3D69D8477DE4': 'Linux filesystem',
  '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F': 'Linux swap',
  'E6D6D379-F507-44C2-A23C-238F2A3DF928': 'Linux LVM',
  'A19D880F-05FC-4D3B-A006-743F0F84911E': 'Linux RAID',
  'CA7D7CCB-63ED-4C53-861C-1742536059CC': 'Linux LUKS',
  '933AC7E1-2EB4-4F13-B844-0E14E2AEF915': 'Linux /home',
  '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709': 'Linux root (x86-64)',
  '3B8F8425-20E0-4F3B-907F-1A25A76F98E8': 'Linux /srv',
  'BC13C2FF-59E6-4262-A352-B275FD6F7172': 'Linux extended boot',
  'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7': 'Microsoft basic data',
};
const MBR_NAMES: Record<string, string> = {
  '83': 'Linux', '82': 'Linux swap', '8e': 'Linux LVM', fd: 'Linux RAID', ef: 'EFI system', '05': 'Extended', '0f': 'Extended (LBA)',
  '85': 'Linux extended', '07': 'NTFS/exFAT', '0b': 'FAT32', '0c': 'FAT32 (LBA)', '06': 'FAT16',
};

export function typeName(type: string): string {
  return GPT_NAMES[type.toUpperCase()] ?? MBR_NAMES[type.toLowerCase()] ?? (type.length > 8 ? type.slice(0, 8) : `type ${type}`);
}

const TABLE_NAME = { gpt: 'GPT', dos: 'MBR' } as const;
const shortUuid = (u: string | null) => (u ? (u.length > 13 ? `${u.slice(0, 8)}…` : u) : '-');

function partitionRow(plan: Plan, p: PlannedPartition): string[] {
  const fs = plan.filesystems.find((f) => f.device === p.device);
  const size = p.source ? `${fmt(p.source.sizeBytes)} -> ${fmt(p.sizeBytes)}` : `(added) ${fmt(p.sizeBytes)}`;
  const sizing = p.sizing === 'scaled' || p.sizing === 'added' ? '' : ` (${p.sizing})`;
  const vg = p.role === 'lvm' ? plan.lvm.find((v) => v.pvs.includes(p.device)) : undefined;
  return [
    p.device,
    typeName(p.type) + (p.bootable ? ' *' : ''),
    fs?.type ?? (vg ? `PV of ${vg.name}` : '-'),
    size + sizing,
    fs?.usedBytes !== null && fs?.usedBytes !== undefined ? fmt(fs.usedBytes) : '-',
    fs?.mountpoint ?? (fs?.type === 'swap' ? '[swap]' : '-'),
    fs ? (fs.added ? 'new' : fs.uuid ? `${shortUuid(fs.uuid)} kept` : 'new') : '-',
  ];
}

/** What cannot be carried: always printed, "(nothing)" when empty. */
export function formatCannotCarry(items: readonly Uncarryable[]): string {
  if (items.length === 0) return 'Cannot carry: nothing (everything found is carried)';
  return [
    'Cannot carry:',
    ...items.map((c) => `  ${c.inUse ? '!! in use' : 'not used'}  ${c.device}${c.mountpoint ? ` (${c.mountpoint})` : ''} [${c.kind}]: ${c.reason}`),
  ].join('\n');
}

export function formatPlan(plan: Plan): string {
  const s = plan.source;
  const t = plan.target;
  const lines: string[] = [];
  lines.push(`Transfer plan: ${s.hostname} (${s.mode}, ${s.bootMode.toUpperCase()}) ${s.disk.device} ${fmt(s.disk.sizeBytes)} -> ${t.hostname} (${t.bootMode.toUpperCase()}) ${t.disk.requested}${t.disk.requested !== t.disk.device ? ` = ${t.disk.device}` : ''} ${fmt(t.disk.sizeBytes)}`);
  lines.push(`Partition table: ${TABLE_NAME[plan.table]}, scale ${plan.totals.scale.toFixed(2)}, ${fmt(plan.totals.plannedBytes)} of ${fmt(plan.totals.targetDiskBytes)} planned, ${fmt(plan.totals.usedBytes)} to copy`);
  lines.push('');
  const rows: string[][] = [];
  for (const p of plan.partitions) {
    rows.push(partitionRow(plan, p));
    if (p.role === 'lvm') {
      for (const vg of plan.lvm.filter((v) => v.pvs.includes(p.device))) {
        for (const lv of vg.lvs) {
          const fs = plan.filesystems.find((f) => f.device === lv.path);
          rows.push([
            `  ${lv.path}`, 'LV', fs?.type ?? '-',
            `${fmt(lv.sourceSizeBytes)} -> ${fmt(lv.sizeBytes)}${lv.sizing === 'scaled' ? '' : ` (${lv.sizing})`}`,
            fs?.usedBytes !== null && fs?.usedBytes !== undefined ? fmt(fs.usedBytes) : '-',
            fs?.mountpoint ?? (fs?.type === 'swap' ? '[swap]' : '-'),
            fs?.uuid ? `${shortUuid(fs.uuid)} kept` : '-',
          ]);
        }
      }
    }
  }
  lines.push(table(['PARTITION', 'TYPE', 'FS', 'SIZE (SOURCE -> TARGET)', 'USED', 'MOUNTPOINT', 'UUID'], rows));
  lines.push('');
  lines.push(`Copy (${plan.copies.length}): ${plan.copies.map((c) => `${c.mountpoint} ${c.sourceDevice} -> ${c.targetDevice}${c.usedBytes !== null ? ` (${fmt(c.usedBytes)})` : ''}`).join(', ') || 'nothing'}`);
  if (plan.swap.length) lines.push(`Swap: ${plan.swap.map((x) => `${x.device} ${fmt(x.sizeBytes)}`).join(', ')}`);
  const b = plan.boot;
  const bootBits = [`${b.mode.toUpperCase()}, GRUB on ${b.disk}`];
  if (b.biosBoot) bootBits.push(`BIOS boot partition ${b.biosBoot.device}${b.biosBoot.added ? ' (added)' : ''}`);
  if (b.esp) bootBits.push(`ESP ${b.esp.device} at ${b.esp.mountpoint}${b.esp.added ? ' (added)' : ''}`);
  lines.push(`Boot: ${bootBits.join('; ')}`);
  for (const n of plan.notes) lines.push(`Note: ${n}`);
  lines.push(formatCannotCarry(plan.cannotCarry));
  lines.push(`Plan hash: ${plan.hash}`);
  return lines.join('\n');
}

export function formatRefusal(r: PlanRefusal): string {
  const lines: string[] = [`Cannot transfer (${r.code}): ${r.reason}`];
  if (r.neededBytes !== null && r.availableBytes !== null) {
    lines.push(`Needed ${fmt(r.neededBytes)} (${r.neededBytes} bytes), available ${fmt(r.availableBytes)} (${r.availableBytes} bytes)`);
  }
  if (r.filesystems.length) {
    lines.push('');
    lines.push(table(['DEVICE', 'MOUNTPOINT', 'FS', 'SOURCE SIZE', 'USED', 'MINIMUM', 'PLANNED'], r.filesystems.map((f) => [
      f.device, f.mountpoint ?? '-', f.type ?? '-', f.sourceSizeBytes !== null ? fmt(f.sourceSizeBytes) : '-',
      f.usedBytes !== null ? fmt(f.usedBytes) : '-', fmt(f.minBytes), f.plannedBytes !== null ? fmt(f.plannedBytes) : '-',
    ])));
  }
  if (r.disks.length) {
    lines.push('');
    lines.push('Disks of the target:');
    lines.push(table(['DEVICE', 'SIZE', 'BY-ID', 'REMOVABLE'], r.disks.map((d) => [d.device, fmt(d.sizeBytes), d.byId[0] ?? '-', d.removable ? 'yes' : 'no'])));
  }
  lines.push(formatCannotCarry(r.cannotCarry));
  return lines.join('\n');
}
