/**
 * ProxyDHCP decisions and replies for the captured packets (testdata/packets.json) and for cases
 * derived from them: which clients get which file, what a reply contains byte by byte, where it goes,
 * and what the Booter's local / refuse / failure does.
 */
import t from 'tap';
import type { BootDecision, BootRequest } from '../boot/booter.js';
import type { MachineRecord } from '../machines/model.js';
import { FakeBooter } from '../../test/lib/fake-booter.js';
import {
  DHCPACK,
  DHCPOFFER,
  OPT,
  PXE_SUB,
  describeRequest,
  parsePacket,
  parseSubOptions,
  type DhcpPacket,
} from './packet.js';
import { handleRequest, type Inbound, type ListenPort, type ProxyConfig, type ProxyOutcome } from './proxy.js';
import { fixture, withAddr, withOptions } from './testdata/fixtures.js';

const CFG: ProxyConfig = {
  serverIp: '10.99.0.1',
  bootFileBios: 'undionly.kpxe',
  bootFileEfi: 'snponly.efi',
  httpBootUrl: 'http://10.99.0.1:8080/ipxe/ipxe.efi',
  ipxeScriptUrl: 'http://10.99.0.1:8080/boot.ipxe',
  decideTimeoutMs: 300,
  relayPort: 67,
  clientPort: 68,
};

const machine = { mac: '52:54:00:d0:00:01' } as unknown as MachineRecord;
const RAMBOOT = (): BootDecision => ({ kind: 'ramboot', mode: 'ramboot', image: { name: 'test', dir: '/x', manifest: {} } as never, machine });

function inbound(buf: Buffer, port: ListenPort = 'dhcp', source = { address: '0.0.0.0', port: 68 }): Inbound {
  const p = parsePacket(buf);
  if (!p.ok) throw new Error(p.error.message);
  const i = describeRequest(p.value);
  if (!i.ok) throw new Error(i.error.message);
  return { packet: p.value, info: i.value, port, source };
}

function replyOf(out: ProxyOutcome): { pkt: DhcpPacket; out: Extract<ProxyOutcome, { kind: 'reply' }> } {
  if (out.kind !== 'reply') throw new Error(`expected a reply, got ignored: ${out.reason}`);
  const p = parsePacket(out.reply);
  if (!p.ok) throw new Error(`reply does not parse: ${p.error.message}`);
  return { pkt: p.value, out };
}

const optStr = (p: DhcpPacket, code: number): string | undefined => p.options.get(code)?.toString('latin1');

t.test('each captured DISCOVER gets the right proxy OFFER', async (t) => {
  const rows: Array<{ fx: string; file: string; vc: 'PXEClient' | 'HTTPClient'; firmware: string }> = [
    { fx: 'bios-ipxe-rom-discover', file: CFG.ipxeScriptUrl, vc: 'PXEClient', firmware: 'ipxe' },
    { fx: 'bios-undionly-discover', file: CFG.ipxeScriptUrl, vc: 'PXEClient', firmware: 'ipxe' },
    { fx: 'uefi-edk2-pxe-discover', file: 'snponly.efi', vc: 'PXEClient', firmware: 'efi' },
    { fx: 'uefi-snponly-discover', file: CFG.ipxeScriptUrl, vc: 'PXEClient', firmware: 'ipxe' },
    { fx: 'uefi-ipxe-rom-discover', file: CFG.ipxeScriptUrl, vc: 'PXEClient', firmware: 'ipxe' },
    { fx: 'uefi-http-discover', file: CFG.httpBootUrl, vc: 'HTTPClient', firmware: 'http' },
  ];
  for (const row of rows) {
    const req = fixture(row.fx);
    const booter = new FakeBooter(RAMBOOT);
    const { pkt, out } = replyOf(await handleRequest(inbound(req), CFG, booter));
    const sent = inbound(req).packet;
    t.equal(pkt.op, 2, `${row.fx}: BOOTREPLY`);
    t.equal(pkt.xid, sent.xid, `${row.fx}: xid echoed`);
    t.same(pkt.chaddr, sent.chaddr, `${row.fx}: chaddr echoed`);
    t.equal(pkt.flags, sent.flags, `${row.fx}: broadcast flag echoed`);
    t.equal(pkt.yiaddr, '0.0.0.0', `${row.fx}: no address offered`);
    t.equal(pkt.ciaddr, '0.0.0.0', `${row.fx}: ciaddr 0 in an OFFER`);
    t.equal(pkt.siaddr, CFG.serverIp, `${row.fx}: siaddr = next server`);
    t.equal(pkt.options.get(OPT.MESSAGE_TYPE)?.[0], DHCPOFFER, `${row.fx}: DHCPOFFER`);
    t.same([...(pkt.options.get(OPT.SERVER_ID) ?? [])], [10, 99, 0, 1], `${row.fx}: option 54`);
    t.equal(optStr(pkt, OPT.VENDOR_CLASS), row.vc, `${row.fx}: option 60 ${row.vc}`);
    t.same(pkt.options.get(OPT.CLIENT_UUID), sent.options.get(OPT.CLIENT_UUID), `${row.fx}: option 97 echoed`);
    t.equal(pkt.file, row.file, `${row.fx}: file field`);
    t.equal(optStr(pkt, OPT.BOOTFILE), row.file, `${row.fx}: option 67`);
    if (row.vc === 'PXEClient') {
      t.same(parseSubOptions(pkt.options.get(OPT.VENDOR_SPECIFIC) ?? Buffer.alloc(0))?.get(PXE_SUB.DISCOVERY_CONTROL), Buffer.from([8]), `${row.fx}: 43/6 = 8`);
    } else {
      t.notOk(pkt.options.has(OPT.VENDOR_SPECIFIC), `${row.fx}: no PXE options for HTTPClient`);
    }
    t.same(out.to, { address: '255.255.255.255', port: 68, broadcast: true }, `${row.fx}: broadcast to port 68`);
    t.equal(out.summary.firmware, row.firmware, `${row.fx}: firmware ${row.firmware}`);
    t.equal(booter.asked.length, 1, `${row.fx}: the Booter was asked once`);
    t.equal(booter.asked[0]?.mac, out.mac, `${row.fx}: ... for this MAC`);
  }
});

t.test('golden reply bytes: OVMF PXE DISCOVER -> proxy OFFER', async (t) => {
  const { out } = replyOf(await handleRequest(inbound(fixture('uefi-edk2-pxe-discover')), CFG, new FakeBooter(RAMBOOT)));
  const header = Buffer.alloc(236);
  header.set([2, 1, 6, 0, 0x73, 0xe8, 0x5c, 0xc7, 0, 0, 0x80, 0], 0); // op htype hlen hops xid secs flags
  header.set([10, 99, 0, 1], 20); // siaddr
  header.set([0x52, 0x54, 0x00, 0xd0, 0x00, 0x02], 28); // chaddr
  header.write('snponly.efi', 108, 'latin1');
  const options = Buffer.concat([
    Buffer.from([0x63, 0x82, 0x53, 0x63]),
    Buffer.from([53, 1, 2]),
    Buffer.from([54, 4, 10, 99, 0, 1]),
    Buffer.from([60, 9]), Buffer.from('PXEClient'),
    Buffer.from([97, 17, 0]), Buffer.alloc(16),
    Buffer.from([43, 4, 6, 1, 8, 255]),
    Buffer.from([67, 11]), Buffer.from('snponly.efi'),
    Buffer.from([255]),
  ]);
  const want = Buffer.concat([header, options]);
  t.equal(out.reply.length, 300, 'padded to 300 bytes');
  t.equal(out.reply.subarray(0, want.length).toString('hex'), want.toString('hex'), 'bytes as built by hand');
  t.ok(out.reply.subarray(want.length).every((b) => b === 0), 'zero padding');
});

t.test('a plain BIOS PXE ROM (arch 0, not iPXE) gets undionly.kpxe', async (t) => {
  // derived: no firmware here sends it (QEMU's BIOS ROMs are all iPXE), so strip iPXE's options
  const req = withOptions(fixture('bios-ipxe-rom-discover'), [OPT.USER_CLASS, OPT.IPXE_ENCAP]);
  const booter = new FakeBooter(RAMBOOT);
  const { pkt, out } = replyOf(await handleRequest(inbound(req), CFG, booter));
  t.equal(pkt.file, 'undionly.kpxe');
  t.equal(out.summary.firmware, 'bios');
  t.match(booter.asked[0]?.facts, { platform: 'pcbios' }, 'facts: pcbios');
});

t.test('a user class "iPXE" alone, or option 175 alone, marks iPXE', async (t) => {
  const base = fixture('uefi-snponly-discover');
  for (const [what, drop] of [['user class only', [OPT.IPXE_ENCAP]], ['175 only', [OPT.USER_CLASS]]] as const) {
    const { pkt } = replyOf(await handleRequest(inbound(withOptions(base, [...drop])), CFG, new FakeBooter(RAMBOOT)));
    t.equal(pkt.file, CFG.ipxeScriptUrl, what);
  }
});

t.test('the captured EDK2 boot-server request (port 4011) -> unicast ACK to ciaddr:4011', async (t) => {
  const req = inbound(fixture('uefi-edk2-pxe-request-4011'), 'pxe', { address: '10.99.0.133', port: 4011 });
  t.equal(req.packet.ciaddr, '10.99.0.133', 'the client already has its address');
  const { pkt, out } = replyOf(await handleRequest(req, CFG, new FakeBooter(RAMBOOT)));
  t.equal(pkt.options.get(OPT.MESSAGE_TYPE)?.[0], DHCPACK, 'DHCPACK');
  t.equal(pkt.ciaddr, '10.99.0.133', 'ciaddr echoed');
  t.equal(pkt.yiaddr, '0.0.0.0', 'no address');
  t.equal(pkt.file, 'snponly.efi', 'the EFI NBP');
  t.equal(pkt.siaddr, CFG.serverIp, 'next server');
  t.same(out.to, { address: '10.99.0.133', port: 4011, broadcast: false }, 'to ciaddr at the port it came from (4011)');
});

t.test('DHCPREQUEST on port 4011 -> unicast ACK to ciaddr:source port', async (t) => {
  // EDK2 sends its boot-server request to 4011 with its new address in ciaddr
  const req = withAddr(withOptions(fixture('uefi-edk2-pxe-request'), [OPT.SERVER_ID, OPT.REQUESTED_IP], [[OPT.VENDOR_SPECIFIC, Buffer.from([71, 4, 0x80, 0, 0, 0, 255])]]), 12, '10.99.0.176');
  const { pkt, out } = replyOf(await handleRequest(inbound(req, 'pxe', { address: '10.99.0.176', port: 4011 }), CFG, new FakeBooter(RAMBOOT)));
  t.equal(pkt.options.get(OPT.MESSAGE_TYPE)?.[0], DHCPACK, 'DHCPACK');
  t.equal(pkt.ciaddr, '10.99.0.176', 'ciaddr echoed in an ACK');
  t.equal(pkt.file, 'snponly.efi');
  t.same(out.to, { address: '10.99.0.176', port: 4011, broadcast: false }, 'unicast to the client port');
});

t.test('DHCPREQUEST on port 67', async (t) => {
  // the SELECTING request picks the site server's lease (options 50 + 54): never answered, even when
  // option 54 is our own address (ramboot on the DHCP server's host). An ACK with yiaddr 0 made EDK2
  // decline its lease (PXE-E07) in the end-to-end test.
  for (const serverIp of ['10.99.0.1', '10.99.0.2']) {
    const r = await handleRequest(inbound(fixture('uefi-edk2-pxe-request')), { ...CFG, serverIp }, new FakeBooter(RAMBOOT));
    t.match(r, { kind: 'ignored', recordFor: undefined, level: 'debug', reason: /for the address server \(10\.99\.0\.1, requests 10\.99\.0\.176\)/ }, `selecting the site's lease, we are ${serverIp}: quiet`);
  }
  // a boot-server request broadcast to 67: address already configured, none requested
  const boot = withAddr(withOptions(fixture('uefi-edk2-pxe-request'), [OPT.SERVER_ID, OPT.REQUESTED_IP]), 12, '10.99.0.176');
  const mine = replyOf(await handleRequest(inbound(boot), CFG, new FakeBooter(RAMBOOT)));
  t.equal(mine.pkt.options.get(OPT.MESSAGE_TYPE)?.[0], DHCPACK, 'a boot-server request (ciaddr, no option 50) -> ACK');
  t.same(mine.out.to, { address: '10.99.0.176', port: 68, broadcast: false }, '... unicast to ciaddr:68');
  const elsewhere = withOptions(boot, [], [[OPT.SERVER_ID, Buffer.from([10, 99, 0, 9])]]);
  t.match(await handleRequest(inbound(elsewhere), CFG, new FakeBooter(RAMBOOT)), { kind: 'ignored', level: 'debug' }, 'naming another server: quiet');
});

t.test('ciaddr set on port 67 -> unicast to ciaddr:68', async (t) => {
  const req = withAddr(fixture('uefi-edk2-pxe-discover'), 12, '10.99.0.50');
  const { out } = replyOf(await handleRequest(inbound(req, 'dhcp', { address: '10.99.0.50', port: 68 }), CFG, new FakeBooter(RAMBOOT)));
  t.same(out.to, { address: '10.99.0.50', port: 68, broadcast: false });
});

t.test('relayed (giaddr set): reply to the relay on port 67, option 82 echoed last', async (t) => {
  const ri = Buffer.from([1, 3, 0x65, 0x74, 0x31]);
  const req = withAddr(withOptions(fixture('uefi-edk2-pxe-discover'), [], [[OPT.RELAY_AGENT, ri]]), 24, '10.5.0.1');
  const { pkt, out } = replyOf(await handleRequest(inbound(req, 'dhcp', { address: '10.5.0.1', port: 67 }), CFG, new FakeBooter(RAMBOOT)));
  t.same(out.to, { address: '10.5.0.1', port: 67, broadcast: false });
  t.equal(pkt.giaddr, '10.5.0.1', 'giaddr kept');
  t.same(pkt.options.get(OPT.RELAY_AGENT), ri, 'option 82 echoed');
  t.equal([...pkt.options.keys()].at(-1), OPT.RELAY_AGENT, '... as the last option');
});

t.test('Booter decisions', async (t) => {
  const req = fixture('uefi-edk2-pxe-discover');
  const local = await handleRequest(inbound(req), CFG, new FakeBooter(() => ({ kind: 'local', reason: 'is not registered with ramboot' })));
  t.match(local, { kind: 'ignored', reason: /^boot local disk/, recordFor: '52:54:00:d0:00:02', level: 'info' }, 'local -> no reply, recorded');
  const refuse = await handleRequest(inbound(req), CFG, new FakeBooter(() => ({ kind: 'refuse', reason: 'no image' })));
  t.match(refuse, { kind: 'reply', message: /refused: no image/ }, 'refuse -> still offered, so iPXE can show why');
  const throwing = await handleRequest(inbound(req), CFG, { decide: async () => { throw new Error('store down'); } });
  t.match(throwing, { kind: 'ignored', reason: /store down/, level: 'warning', recordFor: '52:54:00:d0:00:02' }, 'a Booter error -> ignored, warning');
  const started = Date.now();
  const slow = await handleRequest(inbound(req), CFG, { decide: () => new Promise<BootDecision>(() => undefined) });
  t.match(slow, { kind: 'ignored', reason: /longer than 300 ms/, level: 'warning' }, 'a Booter that never answers -> ignored after the budget');
  t.ok(Date.now() - started < 2000, 'well within the 2 s iPXE waits');
  const seen: BootRequest[] = [];
  await handleRequest(inbound(req), CFG, new FakeBooter((r) => (seen.push(r), RAMBOOT())));
  t.same(seen[0]?.facts, { platform: 'efi', buildarch: 'x86_64', uuid: '00000000-0000-0000-0000-000000000000' }, 'facts from DHCP');
});

t.test('clients that are not served', async (t) => {
  const efi = fixture('uefi-edk2-pxe-discover');
  const asked = new FakeBooter(RAMBOOT);
  const arm = await handleRequest(inbound(withOptions(efi, [OPT.CLIENT_ARCH], [[OPT.CLIENT_ARCH, Buffer.from([0, 11])]])), CFG, asked);
  t.match(arm, { kind: 'ignored', reason: /architecture 11 \(ARM 64-bit UEFI\)/, recordFor: '52:54:00:d0:00:02' }, 'arm64 UEFI: ignored with a reason');
  const armHttp = await handleRequest(inbound(withOptions(fixture('uefi-http-discover'), [OPT.CLIENT_ARCH], [[OPT.CLIENT_ARCH, Buffer.from([0, 19])]])), CFG, asked);
  t.match(armHttp, { kind: 'ignored', reason: /architecture 19/ }, 'arm64 HTTP boot: ignored');
  t.equal(asked.asked.length, 0, 'the Booter is not asked for unsupported arches');
  const noHttp = await handleRequest(inbound(fixture('uefi-http-discover')), { ...CFG, httpBootUrl: '' }, asked);
  t.match(noHttp, { kind: 'ignored', reason: /HTTP boot is not configured/ }, 'HTTP boot without a URL');
  const laptop = await handleRequest(inbound(withOptions(efi, [OPT.VENDOR_CLASS], [[OPT.VENDOR_CLASS, Buffer.from('MSFT 5.0')]])), CFG, asked);
  t.match(laptop, { kind: 'ignored', level: 'debug', recordFor: undefined, reason: /not a netboot client/ }, 'an ordinary DHCP client: quiet');
  const noArch = await handleRequest(inbound(withOptions(efi, [OPT.CLIENT_ARCH])), CFG, asked);
  t.match(noArch, { kind: 'ignored', level: 'debug', reason: /no option 93/ }, 'PXEClient without option 93: quiet');
  const release = await handleRequest(inbound(withOptions(efi, [OPT.MESSAGE_TYPE], [[OPT.MESSAGE_TYPE, Buffer.from([7])]])), CFG, asked);
  t.match(release, { kind: 'ignored', level: 'debug', reason: /DHCPRELEASE/ }, 'DHCPRELEASE: quiet');
  const discover4011 = await handleRequest(inbound(efi, 'pxe'), CFG, asked);
  t.match(discover4011, { kind: 'ignored', level: 'debug' }, 'DISCOVER on 4011: quiet');
  const reply = Buffer.from(efi);
  reply[0] = 2;
  t.match(await handleRequest(inbound(reply), CFG, asked), { kind: 'ignored', reason: /BOOTREQUEST/ }, 'a BOOTREPLY (another server\'s offer): quiet');
  t.equal(asked.asked.length, 0, 'the Booter was never asked');
});

t.test('a missing option 97 is fine (nothing echoed)', async (t) => {
  const { pkt } = replyOf(await handleRequest(inbound(withOptions(fixture('uefi-edk2-pxe-discover'), [OPT.CLIENT_UUID])), CFG, new FakeBooter(RAMBOOT)));
  t.notOk(pkt.options.has(OPT.CLIENT_UUID));
});
