/**
 * Captures the golden DHCP fixtures (packets.json) from real firmware on this machine (root).
 * See server/dhcp/testdata/README.md. Run: `npx tsx test/dhcp/capture.ts [scenario...]`.
 *
 * Each scenario makes a network namespace (test/lib/netns.ts) with dnsmasq as a fully configured
 * site DHCP + TFTP server (so every stage proceeds to the next one), runs tcpdump on the bridge and
 * boots QEMU until the console shows the scenario's end marker (or, for HTTP boot, until the wanted
 * packet is in the capture). Client packets (to port 67 or 4011) are written out as hex.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Fixture } from '../../server/dhcp/testdata/fixtures.js';
import { Netns } from '../lib/netns.js';
import { Qemu, type QemuNic } from '../lib/qemu.js';
import { readUdpDatagrams, startCapture, type UdpDatagram } from '../lib/pcap.js';

const HERE = new URL('../../server/dhcp/testdata/', import.meta.url).pathname;
const OUT = join(HERE, 'packets.json');
const STAGE0 = 'http://10.99.0.1:8081/stage0.ipxe';


interface Scenario {
  firmware: 'bios' | 'uefi';
  /**
   * full (default): dnsmasq as a configured site DHCP + TFTP server. pxe-proxy: busybox udhcpd for
   * addresses and dnsmasq in proxy mode (dhcp-range=...,proxy + pxe-service), which makes EDK2 send
   * its boot-server DHCPREQUEST to port 4011.
   */
  site?: 'full' | 'pxe-proxy';
  mac: string;
  nic: Partial<QemuNic>;
  extraArgs?: string[];
  /** Done when this console line appears... */
  marker?: RegExp;
  /** ...or when a captured client packet satisfies this. */
  until?: (d: UdpDatagram[]) => boolean;
  /** Names the client packets in capture order (by DHCP message type and a label for the stage). */
  label: (d: UdpDatagram, i: number) => string | undefined;
}

function msgType(p: Buffer): number | undefined {
  // options start after the 236-byte header and the 4-byte cookie; walk them for option 53
  let i = 240;
  while (i < p.length) {
    const c = p[i]!;
    if (c === 0) { i++; continue; }
    if (c === 255 || i + 1 >= p.length) return undefined;
    const len = p[i + 1]!;
    if (c === 53 && len === 1) return p[i + 2];
    i += 2 + len;
  }
  return undefined;
}

const has = (p: Buffer, s: string): boolean => p.includes(Buffer.from(s, 'latin1'));
const TYPES: Record<number, string> = { 1: 'discover', 3: 'request', 8: 'inform' };

/** Label: <stage>-<type>, where the stage is told apart by iPXE's user class and the arch option. */
function stageLabel(prefix: string, ipxeStages: string[]): (d: UdpDatagram) => string | undefined {
  let ipxeSeen = 0;
  let lastXid = -1;
  return (d) => {
    const t = TYPES[msgType(d.payload) ?? 0];
    if (!t) return undefined;
    const xid = d.payload.readUInt32BE(4);
    if (has(d.payload, 'iPXE')) {
      // each new iPXE (ROM, then chained) starts a new transaction id
      if (xid !== lastXid && t === 'discover') ipxeSeen++;
      lastXid = xid;
      return `${ipxeStages[Math.max(0, ipxeSeen - 1)] ?? 'ipxe'}-${t}`;
    }
    return `${prefix}-${t}`;
  };
}

const SCENARIOS: Record<string, Scenario> = {
  // SeaBIOS + QEMU's iPXE ROM (virtio-net.rom), which chains Debian's undionly.kpxe over TFTP
  'bios': {
    firmware: 'bios',
    mac: '52:54:00:d0:00:01',
    nic: {},
    marker: /CAPTURE-DONE/,
    label: stageLabel('bios-pxe', ['bios-ipxe-rom', 'bios-undionly']),
  },
  // OVMF's own EDK2 PXE (arch 7), TFTP snponly.efi, whose iPXE does DHCP again
  'uefi-pxe': {
    firmware: 'uefi',
    mac: '52:54:00:d0:00:02',
    nic: { bootindex: 1, romfile: '' },
    extraArgs: ['-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=n'],
    marker: /CAPTURE-DONE/,
    label: stageLabel('uefi-edk2-pxe', ['uefi-snponly']),
  },
  // OVMF's PXE against dnsmasq's proxy mode: the boot-server request to port 4011 (ciaddr, 43/71)
  'uefi-pxe-4011': {
    firmware: 'uefi',
    site: 'pxe-proxy',
    mac: '52:54:00:d0:00:05',
    nic: { bootindex: 1, romfile: '' },
    extraArgs: ['-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=n'],
    until: (ds) => ds.some((d) => d.dstPort === 4011),
    label: (d) => (d.dstPort === 4011 && d.payload[0] === 1 ? `uefi-edk2-pxe-${TYPES[msgType(d.payload) ?? 0] ?? 'other'}-4011` : undefined),
  },
  // OVMF with QEMU's iPXE EFI ROM on the NIC
  'uefi-ipxe-rom': {
    firmware: 'uefi',
    mac: '52:54:00:d0:00:03',
    nic: { bootindex: 1 },
    marker: /CAPTURE-DONE/,
    label: stageLabel('uefi-rom', ['uefi-ipxe-rom']),
  },
  // OVMF's UEFI HTTP boot (arch 16, HTTPClient): PXE switched off so "HTTP Boot over IPv4" runs first
  'uefi-http': {
    firmware: 'uefi',
    mac: '52:54:00:d0:00:04',
    nic: { bootindex: 1, romfile: '' },
    extraArgs: [
      '-fw_cfg', 'name=opt/org.tianocore/IPv4PXESupport,string=n',
      '-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=n',
    ],
    until: (ds) => ds.some((d) => d.dstPort === 67 && has(d.payload, 'HTTPClient')),
    label: (d) => (has(d.payload, 'HTTPClient') ? `uefi-http-${TYPES[msgType(d.payload) ?? 0] ?? 'other'}` : undefined),
  },
};

async function runScenario(name: string, sc: Scenario): Promise<Fixture[]> {
  const tmp = await mkdtemp(join(tmpdir(), 'ramboot-dhcp-capture-'));
  const www = join(tmp, 'www');
  const pcap = join(tmp, 'dhcp.pcap');
  let ns: Netns | undefined;
  let vm: Qemu | undefined;
  try {
    await mkdir(www);
    await writeFile(join(www, 'stage0.ipxe'), [
      '#!ipxe',
      'echo CAPTURE chip=${net0/chip} platform=${platform}',
      'iseq ${platform} pcbios && iseq ${net0/chip} virtio-net && chain tftp://${next-server}/undionly.kpxe ||',
      'echo CAPTURE-DONE',
      '',
    ].join('\n'));
    if (sc.site === 'pxe-proxy') {
      ns = await Netns.create({ name: `dhcpcap-${name}` });
      const conf = join(tmp, 'udhcpd.conf');
      await writeFile(join(tmp, 'udhcpd.leases'), '');
      await writeFile(conf, [`interface ${ns.bridge}`, `start ${ns.subnet24}.100`, `end ${ns.subnet24}.199`, `lease_file ${join(tmp, 'udhcpd.leases')}`, 'option subnet 255.255.255.0', ''].join('\n'));
      ns.spawn('udhcpd', ['busybox', 'udhcpd', '-f', conf]);
      const dm = ns.spawn('dnsmasq-proxy', [
        'dnsmasq', '--conf-file=/dev/null', '--keep-in-foreground', '--log-facility=-', '--log-dhcp', `--pid-file=${join(tmp, 'dnsmasq.pid')}`,
        '--port=0', '--bind-interfaces', `--interface=${ns.bridge}`, `--dhcp-range=${ns.subnet24}.0,proxy`,
        '--pxe-service=x86-64_EFI,ramboot,snponly', '--enable-tftp', '--tftp-root=/usr/lib/ipxe',
      ]);
      await dm.waitFor(/DHCP, proxy on subnet/, { timeoutMs: 30_000 });
    } else {
      ns = await Netns.create({
        name: `dhcpcap-${name}`,
        dhcp: { boot: { ipxe: STAGE0 }, extraArgs: ['--enable-tftp', '--tftp-root=/usr/lib/ipxe'] },
      });
    }
    ns.spawn('httpd', ['busybox', 'httpd', '-f', '-p', '10.99.0.1:8081', '-h', www]);
    await ns.waitForHttp(STAGE0);
    const cap = await startCapture(ns, ns.bridge, pcap);
    const nic = { type: 'tap', ifname: ns.tap, mac: sc.mac, ...sc.nic } as QemuNic;
    vm = new Qemu({ name: `dhcpcap-${name}`, firmware: sc.firmware, wrap: ns.wrap, memoryMiB: 512, nics: [nic], extraArgs: sc.extraArgs ?? [], failOn: null });
    const started = Date.now();
    if (sc.marker) {
      await vm.waitFor(sc.marker, { timeoutMs: 240_000 });
    } else if (sc.until) {
      for (;;) {
        const ds = await readUdpDatagrams(pcap).catch(() => []);
        if (sc.until(ds)) break;
        if (Date.now() - started > 240_000) throw new Error(`${name}: wanted packet not captured\n${vm.tail(20)}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    await vm.stop();
    await cap.stop(3000);
    const ds = (await readUdpDatagrams(pcap)).filter((d) => d.dstPort === 67 || d.dstPort === 4011);
    if (process.env['CAPTURE_DEBUG']) for (const d of ds) console.log(d.srcIp, d.dstPort, d.payload.length, msgType(d.payload));
    const out: Fixture[] = [];
    const seen = new Map<string, number>();
    ds.forEach((d, i) => {
      const label = sc.label(d, i);
      if (!label) return;
      const n = (seen.get(label) ?? 0) + 1;
      seen.set(label, n);
      if (n > 1) return; // the first of each kind is enough; retries differ only in secs/xid
      out.push({
        name: label,
        description: `${label.replace(/-/g, ' ')} (${d.srcIp}:${d.srcPort} -> ${d.dstIp}:${d.dstPort})`,
        source: `capture.ts scenario ${name}, ${new Date().toISOString().slice(0, 10)}`,
        port: d.dstPort,
        hex: d.payload.toString('hex'),
      });
    });
    console.log(`${name}: ${out.map((f) => f.name).join(', ')} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    return out;
  } catch (e) {
    if (vm) console.error(vm.tail(30));
    if (ns) console.error(ns.tail(20));
    throw e;
  } finally {
    await vm?.stop();
    await ns?.destroy();
    await rm(tmp, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const names = process.argv.slice(2);
  const wanted = names.length > 0 ? names : Object.keys(SCENARIOS);
  let existing: Fixture[] = [];
  try {
    existing = JSON.parse(await readFile(OUT, 'utf8')) as Fixture[];
  } catch {
    // first run
  }
  for (const name of wanted) {
    const sc = SCENARIOS[name];
    if (!sc) throw new Error(`unknown scenario ${name} (have ${Object.keys(SCENARIOS).join(', ')})`);
    const got = await runScenario(name, sc);
    const names = new Set(got.map((f) => f.name));
    existing = [...existing.filter((f) => !names.has(f.name)), ...got];
  }
  existing.sort((a, b) => a.name.localeCompare(b.name));
  await writeFile(OUT, `${JSON.stringify(existing, null, 2)}\n`);
  console.log(`wrote ${existing.length} fixtures to ${OUT}`);
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop() ?? '\0')) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
