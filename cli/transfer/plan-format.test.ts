import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseInspection } from './inspect.js';
import { fmt, plan } from './plan.js';
import { formatCannotCarry, formatPlan, formatRefusal, typeName } from './plan-format.js';
import { isRefusal, type Inventory } from './types.js';

const FIXTURES = join(fileURLToPath(new URL('.', import.meta.url)), 'fixtures');
const inv = (name: string): Inventory => parseInspection(readFileSync(join(FIXTURES, `${name}.txt`), 'utf8'));
const GiB = 2 ** 30;
const MiB = 2 ** 20;

function target(sizes: number[], bootMode: 'bios' | 'uefi' = 'bios'): Inventory {
  const b = inv('cold-bios-blank-2disks');
  b.hostname = 'target';
  b.bootMode = bootMode;
  b.disks = sizes.map((size, i) => ({ ...b.disks[0]!, path: `/dev/vd${'ab'[i]}`, name: `vd${'ab'[i]}`, sizeBytes: size, byId: [`/dev/disk/by-id/virtio-t${i}`] }));
  return b;
}

t.test('a plan as a table: partition, type, fs, size source -> target, used, mountpoint, uuid', async (t) => {
  const p = plan(inv('cold-gpt-bios'), target([4 * GiB], 'uefi'));
  if (isRefusal(p)) throw new Error(p.reason);
  const text = formatPlan(p);
  const lines = text.split('\n');
  t.match(lines[0], /^Transfer plan: src-bios \(cold, BIOS\) \/dev\/vda 3\.0 GiB -> target \(UEFI\) \/dev\/vda 4\.0 GiB$/);
  t.match(text, /Partition table: GPT, scale 1\.27/);
  t.match(text, /PARTITION\s+TYPE\s+FS\s+SIZE \(SOURCE -> TARGET\)\s+USED\s+MOUNTPOINT\s+UUID/);
  t.match(text, /\/dev\/vda1\s+BIOS boot\s+-\s+1\.0 MiB -> 1\.0 MiB \(fixed\)/);
  t.match(text, /\/dev\/vda2\s+Linux filesystem\s+ext4\s+1\.2 GiB -> 1\.5 GiB\s+100 MiB\s+\/\s+[0-9a-f]{8}… kept/);
  t.match(text, /\/dev\/vda3\s+Linux \/home\s+ext4\s+700 MiB -> 890 MiB\s+40\.0 MiB\s+\/home/);
  t.match(text, /\/dev\/vda4\s+Linux swap\s+swap\s+256 MiB -> 256 MiB \(fixed\)\s+-\s+\[swap\]/);
  t.match(text, /\/dev\/vda5\s+EFI system\s+vfat\s+\(added\) 256 MiB\s+-\s+\/boot\/efi\s+new/);
  t.match(text, /Copy \(2\): \/ \/dev\/vda2 -> \/dev\/vda2 \(100 MiB\), \/home \/dev\/vda3 -> \/dev\/vda3 \(40\.0 MiB\)/);
  t.match(text, /Boot: UEFI, GRUB on \/dev\/vda; BIOS boot partition \/dev\/vda1; ESP \/dev\/vda5 at \/boot\/efi \(added\)/);
  t.match(text, /Note: the target boots UEFI/);
  t.match(text, /Cannot carry: nothing/);
  t.match(text, new RegExp(`Plan hash: ${p.hash}$`));
});

t.test('LVs are listed under their PV; the target by-id path is shown with its device', async (t) => {
  const p = plan(inv('cold-lvm'), target([4 * GiB, 3 * GiB]), { disk: '/dev/disk/by-id/virtio-t1' });
  if (isRefusal(p)) throw new Error(p.reason);
  const text = formatPlan(p);
  t.match(text, /-> target \(BIOS\) \/dev\/disk\/by-id\/virtio-t1 = \/dev\/vdb 3\.0 GiB/);
  t.match(text, /\/dev\/vdb3\s+Linux LVM\s+PV of vg0/);
  t.match(text, /\n  \/dev\/vg0\/root\s+LV\s+ext4\s+1\.2 GiB -> /);
  t.match(text, /\n  \/dev\/vg0\/swap\s+LV\s+swap\s+200 MiB -> 200 MiB \(fixed\)/);
});

t.test('a refusal: the reason, the numbers per filesystem, needed vs available, the disks', async (t) => {
  const r = plan(inv('cold-gpt-bios'), target([400 * MiB]));
  if (!isRefusal(r)) throw new Error('expected a refusal');
  const text = formatRefusal(r);
  t.match(text, /^Cannot transfer \(too-small\): target disk \/dev\/vda is too small/);
  t.match(text, new RegExp(`Needed ${fmt(r.neededBytes!).replace('.', '\\.')} \\(${r.neededBytes} bytes\\), available 400 MiB \\(${400 * MiB} bytes\\)`));
  t.match(text, /DEVICE\s+MOUNTPOINT\s+FS\s+SOURCE SIZE\s+USED\s+MINIMUM\s+PLANNED/);
  t.match(text, /\/dev\/vda2\s+\/\s+ext4\s+1\.2 GiB\s+100 MiB\s+175 MiB\s+60\.0 MiB/);
  t.match(text, /Cannot carry: nothing/);

  const several = plan(inv('cold-gpt-bios'), target([4 * GiB, 3 * GiB]));
  if (!isRefusal(several)) throw new Error('expected a refusal');
  const s = formatRefusal(several);
  t.match(s, /Disks of the target:\nDEVICE\s+SIZE\s+BY-ID\s+REMOVABLE\n\/dev\/vda\s+4\.0 GiB\s+\/dev\/disk\/by-id\/virtio-t0\s+no\n\/dev\/vdb\s+3\.0 GiB/);
});

t.test('what cannot be carried is always printed', async (t) => {
  const r = plan(inv('cold-luks-md'), target([4 * GiB]));
  if (!isRefusal(r)) throw new Error('expected a refusal');
  const text = formatRefusal(r);
  t.match(text, /Cannot carry:\n/);
  t.match(text, /!! in use  \/dev\/vda3 \[luks\]: dm-crypt LUKS container: not carried without its key/);
  t.match(text, /!! in use  \/dev\/vda4 \[md-raid\]/);
  t.match(formatCannotCarry([{ kind: 'network-fs', device: 'nas:/x', mountpoint: '/nas', inUse: false, reason: 'network' }]), /not used  nas:\/x \(\/nas\) \[network-fs\]: network/);
});

t.test('type names', async (t) => {
  t.equal(typeName('21686148-6449-6e6f-744e-656564454649'), 'BIOS boot');
  t.equal(typeName('83'), 'Linux');
  t.equal(typeName('8E'), 'Linux LVM');
  t.equal(typeName('aa'), 'type aa');
  t.equal(typeName('12345678-1234-1234-1234-123456789ABC'), '12345678');
});
