/**
 * The DHCP codec against golden packets captured from real firmware (testdata/packets.json) and
 * against malformed input: every malformed case is a typed error, never a throw.
 */
import t from 'tap';
import {
  BOOTREPLY,
  DHCPOFFER,
  MAX_PACKET_BYTES,
  OPT,
  describeRequest,
  encodePacket,
  encodeSubOptions,
  parsePacket,
  parseSubOptions,
  parseUserClass,
  formatUuid,
  type DhcpPacket,
  type DhcpRequestInfo,
} from './packet.js';
import { fixture, fixtures, withOptions } from './testdata/fixtures.js';

function parseOk(buf: Buffer): DhcpPacket {
  const r = parsePacket(buf);
  if (!r.ok) throw new Error(`parse failed: ${r.error.code} ${r.error.message}`);
  return r.value;
}

function infoOk(buf: Buffer): DhcpRequestInfo {
  const r = describeRequest(parseOk(buf));
  if (!r.ok) throw new Error(`describe failed: ${r.error.code} ${r.error.message}`);
  return r.value;
}

const IPXE_PARAMS = [1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203];

/** What each captured packet must decode to. */
const GOLDEN: Record<string, Partial<DhcpRequestInfo> & { flags: number; xid: number; secs?: number; codes?: number[] }> = {
  'bios-ipxe-rom-discover': {
    mac: '52:54:00:d0:00:01', messageType: 1, vendorClass: 'PXEClient:Arch:00000:UNDI:002001', userClasses: ['iPXE'], arch: [0],
    ndi: { type: 1, major: 2, minor: 1 }, ipxeEncap: true, maxMessageSize: 1472, parameterList: IPXE_PARAMS, flags: 0, xid: 0xb12b823c, secs: 4,
    codes: [53, 57, 93, 94, 60, 77, 55, 175, 61, 97],
  },
  'bios-ipxe-rom-request': { mac: '52:54:00:d0:00:01', messageType: 3, serverId: '10.99.0.1', requestedIp: '10.99.0.175', ipxeEncap: true, flags: 0, xid: 0xb12b823c },
  'bios-undionly-discover': { mac: '52:54:00:d0:00:01', messageType: 1, arch: [0], userClasses: ['iPXE'], ipxeEncap: true, flags: 0x8000, xid: 0xc60da245 },
  'bios-undionly-request': { messageType: 3, serverId: '10.99.0.1', flags: 0x8000, xid: 0xc60da245 },
  'uefi-edk2-pxe-discover': {
    mac: '52:54:00:d0:00:02', messageType: 1, vendorClass: 'PXEClient:Arch:00007:UNDI:003000', userClasses: [], arch: [7],
    ndi: { type: 1, major: 3, minor: 0 }, ipxeEncap: false, uuid: '00000000-0000-0000-0000-000000000000', maxMessageSize: 1472, flags: 0x8000, xid: 0x73e85cc7,
    codes: [53, 57, 55, 97, 94, 93, 60],
  },
  'uefi-edk2-pxe-request': { messageType: 3, serverId: '10.99.0.1', requestedIp: '10.99.0.176', maxMessageSize: 65280, arch: [7], flags: 0x8000, xid: 0x73e85cc7 },
  'uefi-edk2-pxe-request-4011': {
    mac: '52:54:00:d0:00:05', messageType: 3, serverId: undefined, requestedIp: undefined, vendorClass: 'PXEClient:Arch:00007:UNDI:003000', arch: [7], pxe: undefined,
    flags: 0, xid: 0x9ddcaa09, codes: [53, 55, 57, 60, 93, 94, 97],
  },
  'uefi-http-discover': {
    mac: '52:54:00:d0:00:04', messageType: 1, vendorClass: 'HTTPClient:Arch:00016:UNDI:003000', arch: [16], userClasses: [], ipxeEncap: false, flags: 0x8000, xid: 0x966afb92,
  },
  'uefi-ipxe-rom-discover': { mac: '52:54:00:d0:00:03', messageType: 1, vendorClass: 'PXEClient:Arch:00007:UNDI:003010', arch: [7], userClasses: ['iPXE'], ipxeEncap: true, flags: 0, xid: 0x13569956 },
  'uefi-ipxe-rom-request': { messageType: 3, serverId: '10.99.0.1', arch: [7], flags: 0, xid: 0x13569956 },
  'uefi-snponly-discover': { mac: '52:54:00:d0:00:02', messageType: 1, vendorClass: 'PXEClient:Arch:00007:UNDI:003010', arch: [7], userClasses: ['iPXE'], flags: 0, xid: 0x823f532e },
  'uefi-snponly-request': { messageType: 3, serverId: '10.99.0.1', requestedIp: '10.99.0.176', flags: 0, xid: 0x823f532e },
};

t.test('every captured packet parses to the recorded fields', async (t) => {
  const all = fixtures();
  t.ok(all.length >= Object.keys(GOLDEN).length, `${all.length} fixtures`);
  for (const name of Object.keys(GOLDEN)) t.ok(all.some((f) => f.name === name), `fixture ${name} present`);
  for (const f of all) {
    const buf = Buffer.from(f.hex, 'hex');
    const p = parseOk(buf);
    const info = infoOk(buf);
    t.equal(p.op, 1, `${f.name}: BOOTREQUEST`);
    t.equal(p.htype, 1, `${f.name}: Ethernet`);
    t.equal(p.yiaddr, '0.0.0.0', `${f.name}: no yiaddr`);
    t.equal(p.giaddr, '0.0.0.0', `${f.name}: not relayed`);
    t.equal(p.overload, 0, `${f.name}: no overload`);
    const want = GOLDEN[f.name];
    if (!want) continue;
    const { flags, xid, secs, codes, ...fields } = want;
    t.equal(p.flags, flags, `${f.name}: flags`);
    t.equal(p.xid, xid, `${f.name}: xid`);
    if (secs !== undefined) t.equal(p.secs, secs, `${f.name}: secs`);
    if (codes) t.same([...p.options.keys()], codes, `${f.name}: option order`);
    t.match(info, fields, `${f.name}: decoded options`);
    t.equal(info.clientId97?.length, 17, `${f.name}: option 97 is type 0 + 16-byte UUID`);
  }
});

t.test('encode(parse(x)) keeps every field and option', async (t) => {
  for (const f of fixtures()) {
    const p = parseOk(Buffer.from(f.hex, 'hex'));
    const again = parseOk(
      encodePacket({ ...p, options: [...p.options.entries()], maxBytes: MAX_PACKET_BYTES }),
    );
    t.same({ ...again, options: [...again.options] }, { ...p, options: [...p.options] }, `${f.name} round trip`);
  }
});

t.test('malformed packets are typed errors', async (t) => {
  const good = fixture('uefi-edk2-pxe-discover');
  const cases: Array<[string, Buffer, string]> = [
    ['empty', Buffer.alloc(0), 'truncated'],
    ['header only', good.subarray(0, 236), 'truncated'],
    ['one byte short of the cookie', good.subarray(0, 239), 'truncated'],
    ['oversized', Buffer.concat([good, Buffer.alloc(MAX_PACKET_BYTES)]), 'too-large'],
    ['op 3', Buffer.concat([Buffer.from([3]), good.subarray(1)]), 'bad-op'],
    ['hlen 17', (() => { const b = Buffer.from(good); b[2] = 17; return b; })(), 'bad-htype'],
    ['bad cookie', (() => { const b = Buffer.from(good); b[236] = 0x64; return b; })(), 'bad-cookie'],
    ['no END', Buffer.concat([good.subarray(0, 240), Buffer.from([53, 1, 1])]), 'no-end'],
    ['option past the end', Buffer.concat([good.subarray(0, 240), Buffer.from([53, 1, 1, 60, 50, 0x41])]), 'bad-option-length'],
    ['length byte missing', Buffer.concat([good.subarray(0, 240), Buffer.from([53, 1, 1, 60])]), 'bad-option-length'],
    ['overload 4', withOptions(good, [], [[OPT.OVERLOAD, Buffer.from([4])]]), 'bad-overload'],
    ['overload 0', withOptions(good, [], [[OPT.OVERLOAD, Buffer.from([0])]]), 'bad-overload'],
    ['overload 2 bytes', withOptions(good, [], [[OPT.OVERLOAD, Buffer.from([1, 1])]]), 'bad-overload'],
    ['overload twice', withOptions(good, [], [[OPT.OVERLOAD, Buffer.from([1])], [OPT.OVERLOAD, Buffer.from([1])]]), 'bad-overload'],
    // file field of zeros has no END
    ['overloaded file without END', withOptions(good, [], [[OPT.OVERLOAD, Buffer.from([1])]]), 'bad-overload'],
  ];
  for (const [what, buf, code] of cases) {
    let r: ReturnType<typeof parsePacket> | undefined;
    t.doesNotThrow(() => (r = parsePacket(buf)), `${what}: no throw`);
    t.match(r, { ok: false, error: { code, message: String } }, `${what}: ${code}`);
  }
  // option 52 inside an overloaded field
  const inner = withOptions(good, [], [[OPT.OVERLOAD, Buffer.from([1])]]);
  Buffer.from([OPT.OVERLOAD, 1, 1, 255]).copy(inner, 108);
  t.match(parsePacket(inner), { ok: false, error: { code: 'bad-overload', message: /inside the overloaded file/ } }, 'option 52 in the file field');
});

t.test('fixed-format options with bad lengths fail describeRequest', async (t) => {
  const good = fixture('uefi-edk2-pxe-discover');
  const cases: Array<[string, number, Buffer, RegExp]> = [
    ['53 empty', OPT.MESSAGE_TYPE, Buffer.alloc(0), /option 53/],
    ['54 three bytes', OPT.SERVER_ID, Buffer.from([10, 0, 0]), /option 54/],
    ['93 odd', OPT.CLIENT_ARCH, Buffer.from([0, 7, 0]), /option 93/],
    ['93 empty', OPT.CLIENT_ARCH, Buffer.alloc(0), /option 93/],
    ['94 two bytes', OPT.CLIENT_NDI, Buffer.from([1, 3]), /option 94/],
    ['97 five bytes', OPT.CLIENT_UUID, Buffer.from([0, 1, 2, 3, 4]), /option 97/],
    ['57 one byte', OPT.MAX_MESSAGE_SIZE, Buffer.from([5]), /option 57/],
    ['43 truncated sub-option', OPT.VENDOR_SPECIFIC, Buffer.from([71, 4, 0, 0]), /option 43/],
  ];
  for (const [what, code, value, re] of cases) {
    const buf = withOptions(good, [code], [[code, value]]);
    const r = describeRequest(parseOk(buf));
    t.match(r, { ok: false, error: { code: 'bad-option', message: re } }, what);
  }
});

t.test('option overload: options in file and sname join the options field (RFC 2131, 3396)', async (t) => {
  const base = withOptions(fixture('uefi-edk2-pxe-discover'), [OPT.VENDOR_CLASS], [[OPT.OVERLOAD, Buffer.from([3])]]);
  // file carries option 60 in two pieces (RFC 3396 split), sname carries option 93's continuation order
  Buffer.concat([Buffer.from([60, 9]), Buffer.from('PXEClient'), Buffer.from([255])]).copy(base, 108);
  Buffer.concat([Buffer.from([60, 5]), Buffer.from(':Arch'), Buffer.from([77, 4]), Buffer.from('iPXE'), Buffer.from([255])]).copy(base, 44);
  const p = parseOk(base);
  t.equal(p.overload, 3);
  t.equal(p.file, '', 'file is not a name when overloaded');
  t.equal(p.sname, '', 'sname is not a name when overloaded');
  const info = describeRequest(p);
  t.match(info, { ok: true, value: { vendorClass: 'PXEClient:Arch', userClasses: ['iPXE'], arch: [7] } }, 'file then sname, joined');
});

t.test('split options join (RFC 3396) and encode splits long values', async (t) => {
  const long = Buffer.alloc(600, 0x41);
  const enc = encodePacket({ op: BOOTREPLY, xid: 1, chaddr: Buffer.alloc(6, 1), options: [[OPT.VENDOR_SPECIFIC, long]], maxBytes: 1500 });
  t.equal(enc.length, 240 + 3 * 2 + 600 + 1, 'three instances + END');
  t.same(parseOk(enc).options.get(OPT.VENDOR_SPECIFIC), long, 'joined back');
  t.throws(() => encodePacket({ op: BOOTREPLY, xid: 1, chaddr: Buffer.alloc(6), options: [[OPT.VENDOR_SPECIFIC, Buffer.alloc(400)]] }), /exceeds 548/, 'over the 576-byte default');
  t.throws(() => encodePacket({ op: BOOTREPLY, xid: 1, chaddr: Buffer.alloc(6), file: 'x'.repeat(128), options: [] }), /does not fit/, 'file field is 127 + NUL');
  const small = encodePacket({ op: BOOTREPLY, xid: 7, chaddr: Buffer.alloc(6), options: [[OPT.MESSAGE_TYPE, Buffer.from([DHCPOFFER])]] });
  t.equal(small.length, 300, 'padded to the BOOTP minimum');
  t.equal(small[243], 255, 'END after option 53');
});

t.test('sub-options, user class, UUID', async (t) => {
  t.same(parseSubOptions(encodeSubOptions([[6, Buffer.from([8])], [71, Buffer.from([0x80, 0, 0, 0])]])), new Map([[6, Buffer.from([8])], [71, Buffer.from([0x80, 0, 0, 0])]]));
  t.equal(parseSubOptions(Buffer.from([6, 2, 8])), undefined, 'truncated sub-option');
  t.same(parseSubOptions(Buffer.from([0, 6, 1, 8])), new Map([[6, Buffer.from([8])]]), 'pad and no END at the very end');
  t.same(parseUserClass(Buffer.from('iPXE')), ['iPXE'], 'iPXE plain string');
  t.same(parseUserClass(Buffer.from([4, 0x69, 0x50, 0x58, 0x45, 3, 0x66, 0x6f, 0x6f])), ['iPXE', 'foo'], 'RFC 3004 instances');
  t.same(parseUserClass(Buffer.from([0, 1])), ['??'], 'zero-length instance: one opaque class');
  t.same(parseUserClass(Buffer.alloc(0)), [], 'empty');
  const raw = Buffer.from('33221100554477668899aabbccddeeff', 'hex');
  t.equal(formatUuid(raw), '00112233-4455-6677-8899-aabbccddeeff', 'SMBIOS byte order');
});

t.test('option 82 (relay agent information) is kept as sent', async (t) => {
  const ri = Buffer.from([1, 4, 0, 1, 0, 2, 2, 3, 0xaa, 0xbb, 0xcc]);
  const info = infoOk(withOptions(fixture('uefi-edk2-pxe-discover'), [], [[OPT.RELAY_AGENT, ri]]));
  t.same(info.relayAgent, ri);
});
