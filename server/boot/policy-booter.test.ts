import t from 'tap';
import { silentLogger } from '../../common/log.js';
import { parseMac } from '../../common/mac.js';
import type { ImageManifest } from '../../common/manifest.js';
import { MemoryEventLog } from '../events/event-log.js';
import { ImageStore, type ImageLookup } from '../images/image-store.js';
import { machineSpecSchema } from '../machines/model.js';
import { Registry } from '../machines/registry.js';
import { MemoryStore } from '../store/memory-store.js';
import type { BootFacts } from './booter.js';
import { PolicyBooter, type UnknownMachinePolicy } from './policy-booter.js';

const manifest = (name: string, minRamMiB: number): ImageManifest => ({
  schema: 1, name, kernel: 'vmlinuz', initrd: ['initrd.img'], cmdline: '', minRamMiB, packages: [], build: {},
  files: { vmlinuz: { sha256: 'a'.repeat(64), size: 1 }, 'initrd.img': { sha256: 'b'.repeat(64), size: 1 } },
});
/** Images "default" (512 MiB) and "big" (4096 MiB) exist; anything else does not. */
const images = {
  async lookup(name: string): Promise<ImageLookup> {
    const need = { default: 512, big: 4096 }[name];
    return need ? { ok: true, image: { name, dir: '/nonexistent', manifest: manifest(name, need) } } : { ok: false, reason: `no image "${name}"` };
  },
};

function setup(unknown: UnknownMachinePolicy = { boot: 'local', image: 'default' }, maxDiscovered = 100) {
  const registry = new Registry(new MemoryStore(), new MemoryEventLog(), new ImageStore('/nonexistent', silentLogger()), silentLogger(), maxDiscovered);
  return { registry, booter: new PolicyBooter({ machines: registry, images, unknown }) };
}

const REG = parseMac('52:54:00:00:00:01');
const NEW = parseMac('52:54:00:00:00:99');

interface Row {
  name: string;
  /** The registered machine's fields; none = the MAC is unknown. */
  machine?: { boot?: 'ramboot' | 'once' | 'local'; image?: string };
  unknown?: UnknownMachinePolicy;
  facts?: BootFacts;
  want: { kind: 'ramboot' | 'local' | 'refuse'; mode?: string; reason?: RegExp; image?: string };
}

const rows: Row[] = [
  { name: 'registered ramboot boots its image', machine: { boot: 'ramboot' }, want: { kind: 'ramboot', mode: 'ramboot', image: 'default' } },
  { name: 'registered once boots once', machine: { boot: 'once', image: 'big' }, want: { kind: 'ramboot', mode: 'once', image: 'big' } },
  { name: 'registered local boots the disk', machine: { boot: 'local' }, want: { kind: 'local', reason: /set to boot from its local disk/ } },
  { name: 'local wins over a missing image', machine: { boot: 'local', image: 'gone' }, want: { kind: 'local' } },
  { name: 'unknown MAC with policy local', want: { kind: 'local', reason: /not registered/ } },
  { name: 'unknown MAC with policy ramboot', unknown: { boot: 'ramboot', image: 'big' }, want: { kind: 'ramboot', mode: 'ramboot', image: 'big' } },
  { name: 'arm64 firmware is refused', machine: {}, facts: { buildarch: 'arm64' }, want: { kind: 'refuse', reason: /images are x86_64; this machine runs arm64/ } },
  { name: 'i386 iPXE on x86 hardware boots', machine: {}, facts: { buildarch: 'i386' }, want: { kind: 'ramboot' } },
  { name: 'missing image is refused', machine: { image: 'gone' }, want: { kind: 'refuse', reason: /image gone is not available/ } },
  { name: 'too little RAM is refused', machine: { image: 'big' }, facts: { memsizeMiB: 2048 }, want: { kind: 'refuse', reason: /2048 MiB of RAM but image big needs 4096 MiB/ } },
  { name: 'exactly enough RAM boots', machine: { image: 'big' }, facts: { memsizeMiB: 4096 }, want: { kind: 'ramboot' } },
  { name: 'unknown RAM (old iPXE) boots', machine: { image: 'big' }, facts: {}, want: { kind: 'ramboot' } },
];

for (const row of rows) {
  t.test(row.name, async (t) => {
    const { registry, booter } = setup(row.unknown);
    const mac = row.machine ? REG : NEW;
    if (row.machine) await registry.put(REG, machineSpecSchema.parse({ sshKeys: [], ...row.machine }), false);
    const d = await booter.decide({ mac, facts: row.facts ?? {} });
    t.equal(d.kind, row.want.kind);
    if (row.want.reason) t.match(d.kind === 'ramboot' ? '' : d.reason, row.want.reason);
    if (d.kind === 'ramboot') {
      if (row.want.mode) t.equal(d.mode, row.want.mode);
      if (row.want.image) t.equal(d.image.name, row.want.image);
      t.equal(d.machine.mac, mac, 'the decision carries the machine it is for');
    }
    if (!row.machine) t.match(registry.get(NEW), { discovered: true, boot: 'local' }, 'an unknown MAC is recorded as discovered');
  });
}

t.test('over the discovery cap: not recorded; policy ramboot is refused, policy local still boots local', async (t) => {
  const local = setup({ boot: 'local', image: 'default' }, 0);
  t.match(await local.booter.decide({ mac: NEW, facts: {} }), { kind: 'local' });
  t.notOk(local.registry.has(NEW));
  const rb = setup({ boot: 'ramboot', image: 'default' }, 0);
  t.match(await rb.booter.decide({ mac: NEW, facts: {} }), { kind: 'refuse', reason: /too many unregistered machines/ });
  t.notOk(rb.registry.has(NEW));
});

t.test('finding 8: the discovery cap is exact under concurrency', async (t) => {
  const { registry, booter } = setup({ boot: 'local', image: 'default' }, 50);
  const macs = Array.from({ length: 120 }, (_, i) => parseMac(`02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`));
  // every request starts before any write lands, the same MAC asked twice at once counts once
  await Promise.all([...macs, ...macs.slice(0, 10)].map((mac) => booter.decide({ mac, facts: {} })));
  t.equal(registry.list().filter((m) => m.discovered).length, 50, 'exactly the cap, not more, not fewer');
});
