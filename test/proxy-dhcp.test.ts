import t, { type Test } from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findExecutable, reportMissing, missingRequirements } from './lib/requirements.js';
import { writeTestImage } from './lib/test-image.js';
import { DEFAULT_INITRD_MARKER } from './lib/busybox-initrd.js';
import { DEFAULT_FAIL_PATTERN, startQemu, type QemuNic } from './lib/qemu.js';
import { createNetns, type Netns } from './lib/netns.js';
import { readUdpDatagrams, startCapture, type UdpDatagram } from './lib/pcap.js';
import { startRambootServer, type RambootServer } from './lib/ramboot-server.js';
import { OPT, parsePacket, type DhcpPacket } from '../server/dhcp/packet.js';

// Netboot with the site's DHCP server untouched. In a network namespace made here:
//  - busybox udhcpd is the site DHCP server: addresses only, no boot options at all;
//  - dnsmasq sends IPv6 router advertisements only (else iPXE waits ~16 s for IPv6), no DHCPv4;
//  - `ramboot serve --proxy-dhcp --dhcp-interface br0` (HTTP, TFTP, registry, proxyDHCP), which also
//    serves ipxe.efi over HTTP for UEFI HTTP boot (GET /ipxe/ipxe.efi);
//  - tcpdump records every DHCP packet on the bridge: offers are asserted from the wire.
// Real firmware boots the test initrd: SeaBIOS + QEMU's iPXE ROM, OVMF's own PXE (TFTP snponly.efi),
// OVMF's UEFI HTTP boot (ipxe.efi over HTTP). A MAC set to boot local and an unknown MAC (unknown
// policy: local) must get no proxy offer at all.

const IP = '10.99.0.1';
const BASE = `http://${IP}:8080`;
const HTTP_BOOT_URL = `${BASE}/ipxe/ipxe.efi`;
const MARKER_RE = new RegExp(`${DEFAULT_INITRD_MARKER} cmdline=(.*)$`);
const MACS = {
  bios: '52:54:00:e0:00:01',
  uefiPxe: '52:54:00:e0:00:02',
  uefiHttp: '52:54:00:e0:00:03',
  local: '52:54:00:e0:00:04',
  unknown: '52:54:00:e0:00:05',
} as const;

async function tempDir(t: Test, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

interface Wire {
  d: UdpDatagram;
  p: DhcpPacket;
}

/** Every well-formed DHCP packet on the wire for `mac`. */
async function wireFor(pcap: string, mac: string): Promise<Wire[]> {
  const chaddr = Buffer.from(mac.replace(/:/g, ''), 'hex');
  const out: Wire[] = [];
  for (const d of await readUdpDatagrams(pcap)) {
    const r = parsePacket(d.payload);
    if (r.ok && r.value.chaddr.subarray(0, 6).equals(chaddr)) out.push({ d, p: r.value });
  }
  return out;
}

const isProxyReply = (w: Wire): boolean => w.p.op === 2 && w.p.yiaddr === '0.0.0.0' && w.d.srcIp === IP;
const isSiteOffer = (w: Wire): boolean => w.p.op === 2 && w.p.yiaddr !== '0.0.0.0';
const msgType = (w: Wire): number | undefined => w.p.options.get(OPT.MESSAGE_TYPE)?.[0];

function describe(w: Wire): string {
  const vc = w.p.options.get(OPT.VENDOR_CLASS)?.toString('latin1') ?? '-';
  return `${w.d.srcIp}:${w.d.srcPort}->${w.d.dstIp}:${w.d.dstPort} op=${w.p.op} type=${msgType(w)} yiaddr=${w.p.yiaddr} ciaddr=${w.p.ciaddr} vc=${vc} file=${w.p.file || '-'}`;
}

interface Env {
  ns: Netns;
  srv: RambootServer;
  pcap: string;
}

async function setup(t: Test): Promise<Env> {
  const dataDir = await tempDir(t, 'ramboot-proxy-dhcp-');
  const tmp = await tempDir(t, 'ramboot-proxy-dhcp-tmp-');
  await writeTestImage(dataDir, 'test', { minRamMiB: 256 });
  const ns = await createNetns(t, { name: 'proxydhcp', ipv4: IP });
  const ra = ns.spawn('dnsmasq-ra', [
    'dnsmasq', '--conf-file=/dev/null', '--keep-in-foreground', '--log-facility=-', `--pid-file=${join(tmp, 'dnsmasq.pid')}`,
    '--port=0', '--bind-interfaces', `--interface=${ns.bridge}`, '--enable-ra', `--dhcp-range=${ns.ula},ra-only,64`,
  ]);
  await ra.waitFor(/started/, { timeoutMs: 30_000, failOn: /FAILED|failed to|bad |unknown interface|cannot/i });
  const conf = join(tmp, 'udhcpd.conf');
  await writeFile(conf, [
    `interface ${ns.bridge}`,
    `start ${ns.subnet24}.100`,
    `end ${ns.subnet24}.199`,
    `lease_file ${join(tmp, 'udhcpd.leases')}`,
    'option subnet 255.255.255.0',
    'option lease 3600',
    '',
  ].join('\n'));
  await writeFile(join(tmp, 'udhcpd.leases'), '');
  ns.spawn('udhcpd', ['busybox', 'udhcpd', '-f', conf]);
  const pcap = join(tmp, 'dhcp.pcap');
  await startCapture(ns, ns.bridge, pcap);
  const srv = await startRambootServer(t, {
    dataDir, httpHost: IP, httpPort: 8080, publicUrl: BASE, tftpListen: `${IP}:69`, ipxeDir: '/usr/lib/ipxe',
    extraArgs: ['--unknown-boot', 'local', '--proxy-dhcp', '--dhcp-interface', ns.bridge, '--log-level', 'debug'], wrap: ns.wrap, name: 'ramboot-proxy-dhcp',
  });
  const put = async (mac: string, boot: 'ramboot' | 'local'): Promise<void> => {
    const r = await srv.api('PUT', `/api/v1/machines/${mac}`, { hostname: `proxy-${mac.slice(-2)}`, sshKeys: [], boot, image: 'test' });
    if (r.status !== 200 && r.status !== 201) throw new Error(`PUT ${mac} -> ${r.status} ${r.text.slice(0, 300)}`);
  };
  for (const m of [MACS.bios, MACS.uefiPxe, MACS.uefiHttp]) await put(m, 'ramboot');
  await put(MACS.local, 'local');
  return { ns, srv, pcap };
}

async function timeline(srv: RambootServer, mac: string): Promise<Array<{ event: string; message: string; data?: Record<string, unknown> }>> {
  const r = await srv.api('GET', `/api/v1/machines/${mac}/events`);
  const j = r.json as { events?: Array<{ event: string; message: string; data?: Record<string, unknown> }> } | Array<{ event: string; message: string }> | undefined;
  if (Array.isArray(j)) return j;
  return j?.events ?? [];
}

async function bootToMarker(t: Test, env: Env, name: string, mac: string, firmware: 'bios' | 'uefi', nic: Partial<QemuNic>, extraArgs: string[] = []): Promise<void> {
  const started = Date.now();
  const vm = startQemu(t, {
    name: `proxy-dhcp-${name}`,
    firmware,
    wrap: env.ns.wrap,
    memoryMiB: 512,
    nics: [{ type: 'tap', ifname: env.ns.tap, mac, ...nic } as QemuNic],
    extraArgs,
    // OVMF ends in its shell when every boot option failed
    failOn: new RegExp(`${DEFAULT_FAIL_PATTERN.source}|EFI Internal Shell|failed to load Boot`),
  });
  const m = await vm.waitFor(MARKER_RE, { timeoutMs: 300_000 });
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  t.match(m[1] ?? '', new RegExp(`ds=nocloud-net;s=${esc(BASE)}/cloud-init/${esc(mac)}/`), `${name}: the test initrd ran with this MAC's cmdline (${secs} s from power-on)`);
  await vm.stop();
}

/** Wire checks for a MAC that must have been offered: the proxy replies, with which files, how fast. */
async function assertOffered(t: Test, env: Env, name: string, mac: string, files: Array<string | RegExp>): Promise<Wire[]> {
  const wire = await wireFor(env.pcap, mac);
  const proxy = wire.filter(isProxyReply);
  t.comment(`${name} on the wire:\n${wire.map(describe).join('\n')}`);
  t.ok(wire.some(isSiteOffer), `${name}: the site DHCP server offered an address`);
  t.ok(proxy.length > 0, `${name}: the proxy answered (${proxy.length} replies)`);
  for (const f of files) t.ok(proxy.some((w) => (typeof f === 'string' ? w.p.file === f : f.test(w.p.file))), `${name}: a proxy reply with file ${String(f)}`);
  // latency: each proxy reply against the newest client request before it with the same xid
  for (const r of proxy) {
    const req = wire.filter((w) => w.p.op === 1 && w.p.xid === r.p.xid && w.d.time <= r.d.time).at(-1);
    if (req) t.ok(r.d.time - req.d.time < 1, `${name}: reply ${msgType(r)} on port ${r.d.srcPort} ${((r.d.time - req.d.time) * 1000).toFixed(1)} ms after the request`);
  }
  const ev = await timeline(env.srv, mac);
  t.ok(ev.some((e) => e.event === 'dhcp.offer'), `${name}: dhcp.offer on the machine's timeline`);
  return wire;
}

t.test('proxyDHCP: netboot with a site DHCP server that hands out addresses only', async (t) => {
  const missing = missingRequirements(['root', 'qemu', 'ovmf', 'ipxe', 'busybox', 'dnsmasq', 'ip', 'tun', 'unshare', 'nsenter', 'setpriv', 'apt-get', 'dpkg']);
  if (!findExecutable('tcpdump')) missing.push('tcpdump not found on PATH (Debian package tcpdump)');
  if (!reportMissing(t, missing)) return;
  const env = await setup(t);

  await t.test('BIOS: SeaBIOS + QEMU\'s iPXE ROM gets the script URL straight away', async (t) => {
    await bootToMarker(t, env, 'bios', MACS.bios, 'bios', {});
    await assertOffered(t, env, 'bios', MACS.bios, [`${BASE}/boot.ipxe`]);
  });

  await t.test('UEFI PXE: OVMF\'s own PXE gets snponly.efi over TFTP, then iPXE the script', async (t) => {
    await bootToMarker(t, env, 'uefi-pxe', MACS.uefiPxe, 'uefi', { bootindex: 1, romfile: '' }, ['-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=n']);
    const wire = await assertOffered(t, env, 'uefi-pxe', MACS.uefiPxe, ['snponly.efi', `${BASE}/boot.ipxe`]);
    const tftp = env.srv.logs().find((l) => l['event'] === 'tftp.transfer' && l['file'] === 'snponly.efi' && l['outcome'] === 'ok');
    t.ok(tftp, 'snponly.efi went over ramboot\'s TFTP');
    const on4011 = wire.filter((w) => w.d.dstPort === 4011 || w.d.srcPort === 4011);
    t.comment(`port 4011 exchange: ${on4011.length === 0 ? 'none (the offer was enough)' : on4011.map(describe).join(' | ')}`);
  });

  await t.test('UEFI HTTP boot: OVMF fetches ipxe.efi by URL (PXE switched off), then iPXE the script', async (t) => {
    await bootToMarker(t, env, 'uefi-http', MACS.uefiHttp, 'uefi', { bootindex: 1, romfile: '' }, [
      '-fw_cfg', 'name=opt/org.tianocore/IPv4PXESupport,string=n',
      '-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=n',
    ]);
    const wire = await assertOffered(t, env, 'uefi-http', MACS.uefiHttp, [HTTP_BOOT_URL, `${BASE}/boot.ipxe`]);
    const http = wire.filter(isProxyReply).find((w) => w.p.file === HTTP_BOOT_URL);
    t.equal(http?.p.options.get(OPT.VENDOR_CLASS)?.toString('latin1'), 'HTTPClient', 'the HTTP boot offer says HTTPClient');
  });

  for (const [name, mac, why] of [['local', MACS.local, 'is set to boot from its local disk'], ['unknown', MACS.unknown, 'is not registered with ramboot']] as const) {
    await t.test(`no offer for a MAC that ${why}`, async (t) => {
      const vm = startQemu(t, {
        name: `proxy-dhcp-${name}`,
        wrap: env.ns.wrap,
        memoryMiB: 512,
        nics: [{ type: 'tap', ifname: env.ns.tap, mac }],
        // here "No bootable device" is the expected end; a kernel or the marker is the failure
        failOn: new RegExp(`Linux version|${DEFAULT_INITRD_MARKER}|Kernel panic`),
      });
      // SeaBIOS tries the (empty) disk and CD first: only what follows iPXE counts
      await vm.waitFor(/iPXE .*starting execution/, { timeoutMs: 300_000 });
      await vm.waitFor(/No bootable device|Boot failed/, { timeoutMs: 300_000 });
      t.pass(`${name}: iPXE found nothing to boot and the BIOS moved on`);
      await vm.stop();
      const wire = await wireFor(env.pcap, mac);
      t.comment(`${name} on the wire:\n${wire.map(describe).join('\n')}`);
      t.ok(wire.some((w) => w.p.op === 1 && msgType(w) === 1), `${name}: the client sent DHCPDISCOVERs`);
      t.ok(wire.some(isSiteOffer), `${name}: the site server offered an address (the capture sees replies)`);
      t.same(wire.filter(isProxyReply).map(describe), [], `${name}: not one proxyDHCP reply on the wire`);
      t.notOk(wire.some((w) => w.d.dstPort === 4011), `${name}: nothing on port 4011`);
      const ignored = env.srv.logs().filter((l) => l['event'] === 'dhcp.ignored' && l['mac'] === mac);
      t.ok(ignored.some((l) => /^boot local disk/.test(String(l['reason']))), `${name}: dhcp.ignored "boot local disk" logged`);
      const ev = await timeline(env.srv, mac);
      t.ok(ev.some((e) => e.event === 'dhcp.ignored' && /boot local disk/.test(e.message)), `${name}: dhcp.ignored on the machine's timeline`);
      t.notOk(ev.some((e) => e.event === 'dhcp.offer'), `${name}: no dhcp.offer on the timeline`);
    });
  }
});
