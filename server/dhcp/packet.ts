/**
 * DHCPv4 wire format (RFC 2131 / RFC 2132), strict and bounded. Pure functions, no I/O.
 *
 * `parsePacket` never throws: anything malformed is a typed `DhcpParseError`. It decodes the BOOTP
 * header, the magic cookie and the options, honours option 52 (overload: the `file` and/or `sname`
 * fields carry more options) and joins repeated options (RFC 3396). `describeRequest` then reads the
 * options a netboot server cares about (53, 54, 55, 57, 60, 61, 77, 82, 93, 94, 97, 175, 43 with the
 * PXE sub-options) into typed fields, again failing with a typed error on bad lengths.
 * `encodePacket` builds a reply; options longer than 255 bytes are split (RFC 3396).
 */

/** BOOTP header (236 bytes) + magic cookie (4). */
export const HEADER_BYTES = 236;
export const COOKIE = 0x63825363;
export const MIN_PACKET_BYTES = HEADER_BYTES + 4;
/**
 * Largest DHCP message accepted. A client without an address cannot reassemble IP fragments, so a
 * real DHCP message fits one Ethernet frame: 1500 - 20 (IP) - 8 (UDP) = 1472 bytes. Anything larger
 * is not from a firmware on an Ethernet segment; refusing it bounds the work per datagram.
 */
export const MAX_PACKET_BYTES = 1472;
/** RFC 1542: BOOTP relays and old clients expect at least 300 bytes; replies are padded to this. */
export const MIN_REPLY_BYTES = 300;

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
export const FLAG_BROADCAST = 0x8000;

export const DHCPDISCOVER = 1;
export const DHCPOFFER = 2;
export const DHCPREQUEST = 3;
export const DHCPDECLINE = 4;
export const DHCPACK = 5;
export const DHCPNAK = 6;
export const DHCPRELEASE = 7;
export const DHCPINFORM = 8;

export const MESSAGE_TYPE_NAMES: Readonly<Record<number, string>> = {
  1: 'DHCPDISCOVER', 2: 'DHCPOFFER', 3: 'DHCPREQUEST', 4: 'DHCPDECLINE', 5: 'DHCPACK', 6: 'DHCPNAK', 7: 'DHCPRELEASE', 8: 'DHCPINFORM',
};

/** Option codes used here. */
export const OPT = {
  PAD: 0,
  HOSTNAME: 12,
  VENDOR_SPECIFIC: 43,
  REQUESTED_IP: 50,
  OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  PARAMETER_LIST: 55,
  MAX_MESSAGE_SIZE: 57,
  VENDOR_CLASS: 60,
  CLIENT_ID: 61,
  TFTP_SERVER: 66,
  BOOTFILE: 67,
  USER_CLASS: 77,
  RELAY_AGENT: 82,
  CLIENT_ARCH: 93,
  CLIENT_NDI: 94,
  CLIENT_UUID: 97,
  IPXE_ENCAP: 175,
  END: 255,
} as const;

/** PXE vendor sub-options inside option 43 (PXE spec 2.1, RFC 4578). */
export const PXE_SUB = {
  DISCOVERY_CONTROL: 6,
  BOOT_SERVERS: 8,
  BOOT_MENU: 9,
  MENU_PROMPT: 10,
  BOOT_ITEM: 71,
} as const;

export type DhcpErrorCode =
  | 'truncated'
  | 'too-large'
  | 'bad-op'
  | 'bad-htype'
  | 'bad-cookie'
  | 'bad-option-length'
  | 'no-end'
  | 'bad-overload'
  | 'bad-option';

export interface DhcpParseError {
  code: DhcpErrorCode;
  message: string;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: DhcpParseError };

export interface DhcpPacket {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** The 16-byte chaddr field as sent. */
  chaddr: Buffer;
  /** sname/file as strings (up to the first NUL) when not overloaded with options, else ''. */
  sname: string;
  file: string;
  /** Options by code, repeated instances joined (RFC 3396), in order of first appearance. */
  options: Map<number, Buffer>;
  /** Value of option 52 (1 = file, 2 = sname, 3 = both carry options), 0 when absent. */
  overload: number;
}

function fail<T>(code: DhcpErrorCode, message: string): Parsed<T> {
  return { ok: false, error: { code, message } };
}

function ipAt(buf: Buffer, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

/** A NUL-terminated field as printable latin1 (non-printable bytes become '?'). */
function cString(buf: Buffer, from: number, to: number): string {
  const end = buf.indexOf(0, from);
  const stop = end < 0 || end > to ? to : end;
  return buf.toString('latin1', from, stop).replace(/[^\x20-\x7e]/g, '?');
}

/**
 * Walks one option area (the options field, or an overloaded file/sname field) and appends to
 * `into`. Pad (0) is skipped; the area must end with END (255); each length must fit. Returns an
 * error message or undefined.
 */
function readOptionArea(buf: Buffer, from: number, to: number, where: string, into: Map<number, Buffer[]>): string | undefined {
  let i = from;
  while (i < to) {
    const code = buf[i]!;
    if (code === OPT.PAD) {
      i++;
      continue;
    }
    if (code === OPT.END) return undefined;
    if (i + 1 >= to) return `option ${code} in ${where} has no length byte`;
    const len = buf[i + 1]!;
    if (i + 2 + len > to) return `option ${code} in ${where} claims ${len} bytes, only ${to - i - 2} left`;
    const list = into.get(code);
    const data = buf.subarray(i + 2, i + 2 + len);
    if (list) list.push(data);
    else into.set(code, [data]);
    i += 2 + len;
  }
  return `no end option in ${where}`;
}

/** Parses one DHCP message (a UDP payload). Never throws. */
export function parsePacket(buf: Buffer): Parsed<DhcpPacket> {
  if (buf.length < MIN_PACKET_BYTES) return fail('truncated', `${buf.length} bytes, a DHCP message has at least ${MIN_PACKET_BYTES}`);
  if (buf.length > MAX_PACKET_BYTES) return fail('too-large', `${buf.length} bytes, more than ${MAX_PACKET_BYTES}`);
  const op = buf[0]!;
  if (op !== BOOTREQUEST && op !== BOOTREPLY) return fail('bad-op', `op ${op} is neither BOOTREQUEST nor BOOTREPLY`);
  const htype = buf[1]!;
  const hlen = buf[2]!;
  // Ethernet (1) with a 6-byte address is what a netboot server serves; hlen > 16 overflows chaddr
  if (hlen > 16) return fail('bad-htype', `hlen ${hlen} exceeds the 16-byte chaddr field`);
  if (buf.readUInt32BE(HEADER_BYTES) !== COOKIE) return fail('bad-cookie', `magic cookie 0x${buf.readUInt32BE(HEADER_BYTES).toString(16)} is not 0x63825363`);
  const raw = new Map<number, Buffer[]>();
  const err = readOptionArea(buf, MIN_PACKET_BYTES, buf.length, 'options', raw);
  if (err) return fail(err.startsWith('no end') ? 'no-end' : 'bad-option-length', err);
  let overload = 0;
  const ov = raw.get(OPT.OVERLOAD);
  if (ov) {
    if (ov.length !== 1 || ov[0]!.length !== 1) return fail('bad-overload', 'option 52 must appear once with 1 byte');
    overload = ov[0]![0]!;
    if (overload < 1 || overload > 3) return fail('bad-overload', `option 52 value ${overload} is not 1, 2 or 3`);
    // RFC 2131: the options field first, then file, then sname
    const areas: [number, number, string][] = [];
    if (overload & 1) areas.push([108, 236, 'file']);
    if (overload & 2) areas.push([44, 108, 'sname']);
    for (const [from, to, where] of areas) {
      const before = raw.get(OPT.OVERLOAD)!.length;
      const e = readOptionArea(buf, from, to, where, raw);
      if (e) return fail('bad-overload', e);
      if (raw.get(OPT.OVERLOAD)!.length !== before) return fail('bad-overload', `option 52 inside the overloaded ${where} field`);
    }
  }
  const options = new Map<number, Buffer>();
  for (const [code, parts] of raw) options.set(code, parts.length === 1 ? Buffer.from(parts[0]!) : Buffer.concat(parts));
  return {
    ok: true,
    value: {
      op,
      htype,
      hlen,
      hops: buf[3]!,
      xid: buf.readUInt32BE(4),
      secs: buf.readUInt16BE(8),
      flags: buf.readUInt16BE(10),
      ciaddr: ipAt(buf, 12),
      yiaddr: ipAt(buf, 16),
      siaddr: ipAt(buf, 20),
      giaddr: ipAt(buf, 24),
      chaddr: Buffer.from(buf.subarray(28, 44)),
      sname: overload & 2 ? '' : cString(buf, 44, 108),
      file: overload & 1 ? '' : cString(buf, 108, 236),
      options,
      overload,
    },
  };
}

/** Sub-options (TLV, 0 = pad, 255 = end; the end is optional at the very end). Undefined when malformed. */
export function parseSubOptions(data: Buffer): Map<number, Buffer> | undefined {
  const out = new Map<number, Buffer>();
  let i = 0;
  while (i < data.length) {
    const code = data[i]!;
    if (code === 0) {
      i++;
      continue;
    }
    if (code === 255) return out;
    if (i + 1 >= data.length) return undefined;
    const len = data[i + 1]!;
    if (i + 2 + len > data.length) return undefined;
    const v = data.subarray(i + 2, i + 2 + len);
    const prev = out.get(code);
    out.set(code, prev ? Buffer.concat([prev, v]) : Buffer.from(v));
    i += 2 + len;
  }
  return out;
}

/** Encodes sub-options (for option 43), with a closing end (255). */
export function encodeSubOptions(subs: ReadonlyArray<readonly [number, Buffer]>): Buffer {
  const parts: Buffer[] = [];
  for (const [code, v] of subs) {
    if (v.length > 255) throw new Error(`sub-option ${code} longer than 255 bytes`);
    parts.push(Buffer.from([code, v.length]), v);
  }
  parts.push(Buffer.from([255]));
  return Buffer.concat(parts);
}

/**
 * Option 77 (user class). RFC 3004 is a list of (length, data) instances; iPXE and many firmwares
 * send one plain string instead ("iPXE"). The RFC form is used when the bytes split into non-empty
 * instances exactly; otherwise the whole value is one class.
 */
export function parseUserClass(data: Buffer): string[] {
  const rfc: string[] = [];
  let i = 0;
  while (i < data.length) {
    const len = data[i]!;
    if (len === 0 || i + 1 + len > data.length) {
      return data.length === 0 ? [] : [printableLatin1(data)];
    }
    rfc.push(printableLatin1(data.subarray(i + 1, i + 1 + len)));
    i += 1 + len;
  }
  return rfc;
}

function printableLatin1(b: Buffer): string {
  return b.toString('latin1').replace(/[^\x20-\x7e]/g, '?');
}

/** What a netboot server reads out of a client request. */
export interface DhcpRequestInfo {
  /** chaddr as aa:bb:cc:dd:ee:ff when htype is Ethernet with hlen 6, else undefined. */
  mac: string | undefined;
  messageType: number | undefined;
  serverId: string | undefined;
  requestedIp: string | undefined;
  parameterList: number[];
  maxMessageSize: number | undefined;
  /** Option 60 as text (e.g. "PXEClient:Arch:00007:UNDI:003016"). */
  vendorClass: string | undefined;
  /** Option 77 instances. */
  userClasses: string[];
  /** Option 93: client system architectures (RFC 4578; 0 BIOS, 7/9 x64 UEFI, 16 x64 UEFI HTTP...). */
  arch: number[];
  /** Option 94: network interface type and UNDI version. */
  ndi: { type: number; major: number; minor: number } | undefined;
  /** Option 97: the raw option (echoed in replies) and the UUID when it is type 0 + 16 bytes. */
  clientId97: Buffer | undefined;
  uuid: string | undefined;
  /** Option 43 PXE sub-options, when present and well formed. */
  pxe: Map<number, Buffer> | undefined;
  /** Option 175 (iPXE's encapsulated options) is present: the client is iPXE. */
  ipxeEncap: boolean;
  /** Option 82, raw (RFC 3046: echoed unchanged in replies). */
  relayAgent: Buffer | undefined;
}

function ipv4(b: Buffer): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** 16 bytes as the usual UUID text; the first three fields are little-endian (SMBIOS / PXE). */
export function formatUuid(b: Buffer): string {
  const h = (from: number, to: number, swap: boolean): string => {
    const part = Buffer.from(b.subarray(from, to));
    if (swap) part.reverse();
    return part.toString('hex');
  };
  return `${h(0, 4, true)}-${h(4, 6, true)}-${h(6, 8, true)}-${h(8, 10, false)}-${h(10, 16, false)}`;
}

/** Reads the netboot-relevant options; fixed-format options with a wrong length are a typed error. */
export function describeRequest(p: DhcpPacket): Parsed<DhcpRequestInfo> {
  const o = p.options;
  const bad = (message: string): Parsed<DhcpRequestInfo> => fail('bad-option', message);
  const fixed = (code: number, len: number): Buffer | undefined | false => {
    const v = o.get(code);
    if (v === undefined) return undefined;
    return v.length === len ? v : false;
  };
  const mt = fixed(OPT.MESSAGE_TYPE, 1);
  if (mt === false) return bad('option 53 must be 1 byte');
  const sid = fixed(OPT.SERVER_ID, 4);
  if (sid === false) return bad('option 54 must be 4 bytes');
  const rip = fixed(OPT.REQUESTED_IP, 4);
  if (rip === false) return bad('option 50 must be 4 bytes');
  const mms = fixed(OPT.MAX_MESSAGE_SIZE, 2);
  if (mms === false) return bad('option 57 must be 2 bytes');
  const archRaw = o.get(OPT.CLIENT_ARCH);
  if (archRaw !== undefined && (archRaw.length === 0 || archRaw.length % 2 !== 0)) return bad(`option 93 length ${archRaw.length} is not a non-empty multiple of 2`);
  const arch: number[] = [];
  if (archRaw) for (let i = 0; i < archRaw.length; i += 2) arch.push(archRaw.readUInt16BE(i));
  const ndiRaw = fixed(OPT.CLIENT_NDI, 3);
  if (ndiRaw === false) return bad('option 94 must be 3 bytes');
  const id97 = o.get(OPT.CLIENT_UUID);
  let uuid: string | undefined;
  if (id97 !== undefined) {
    // PXE spec / RFC 4578: type 0 followed by a 16-byte UUID; a few firmwares send just 16 bytes
    if (id97.length === 17 && id97[0] === 0) uuid = formatUuid(id97.subarray(1));
    else if (id97.length === 16) uuid = formatUuid(id97);
    else if (id97.length !== 0) return bad(`option 97 length ${id97.length} is not 17 (type 0 + UUID)`);
  }
  const vc = o.get(OPT.VENDOR_CLASS);
  const vendorClass = vc ? printableLatin1(vc) : undefined;
  let pxe: Map<number, Buffer> | undefined;
  const v43 = o.get(OPT.VENDOR_SPECIFIC);
  if (v43 !== undefined && vendorClass?.startsWith('PXEClient')) {
    pxe = parseSubOptions(v43);
    if (!pxe) return bad('option 43 (PXE sub-options) is malformed');
  }
  const mac = p.htype === 1 && p.hlen === 6 ? [...p.chaddr.subarray(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join(':') : undefined;
  const ul = o.get(OPT.USER_CLASS);
  return {
    ok: true,
    value: {
      mac,
      messageType: mt ? mt[0] : undefined,
      serverId: sid ? ipv4(sid) : undefined,
      requestedIp: rip ? ipv4(rip) : undefined,
      parameterList: [...(o.get(OPT.PARAMETER_LIST) ?? [])],
      maxMessageSize: mms ? mms.readUInt16BE(0) : undefined,
      vendorClass,
      userClasses: ul ? parseUserClass(ul) : [],
      arch,
      ndi: ndiRaw ? { type: ndiRaw[0]!, major: ndiRaw[1]!, minor: ndiRaw[2]! } : undefined,
      clientId97: id97,
      uuid,
      pxe,
      ipxeEncap: o.has(OPT.IPXE_ENCAP),
      relayAgent: o.get(OPT.RELAY_AGENT),
    },
  };
}

/** Fields of a message to encode; unset addresses are 0.0.0.0. */
export interface DhcpPacketInit {
  op: number;
  htype?: number;
  hlen?: number;
  hops?: number;
  xid: number;
  secs?: number;
  flags?: number;
  ciaddr?: string;
  yiaddr?: string;
  siaddr?: string;
  giaddr?: string;
  chaddr: Buffer;
  sname?: string;
  file?: string;
  /** Written in this order; values over 255 bytes are split into several instances (RFC 3396). */
  options: ReadonlyArray<readonly [number, Buffer]>;
  /** Largest message the receiver accepts (default 576, the RFC 2131 minimum every client takes). */
  maxBytes?: number;
}

function writeIp(buf: Buffer, at: number, ip: string | undefined): void {
  const parts = (ip ?? '0.0.0.0').split('.');
  if (parts.length !== 4) throw new Error(`bad IPv4 address "${ip}"`);
  parts.forEach((p, i) => {
    const n = Number(p);
    if (!/^\d{1,3}$/.test(p) || n > 255) throw new Error(`bad IPv4 address "${ip}"`);
    buf[at + i] = n;
  });
}

function writeField(buf: Buffer, at: number, size: number, s: string | undefined, name: string): void {
  if (s === undefined) return;
  const b = Buffer.from(s, 'latin1');
  // the field must keep a terminating NUL
  if (b.length >= size) throw new Error(`${name} "${s.slice(0, 40)}..." does not fit in ${size - 1} bytes`);
  b.copy(buf, at);
}

/** Encodes a message: header, cookie, options, END, padded to MIN_REPLY_BYTES. Throws on bad input (our own bug). */
export function encodePacket(p: DhcpPacketInit): Buffer {
  const header = Buffer.alloc(MIN_PACKET_BYTES);
  header[0] = p.op;
  header[1] = p.htype ?? 1;
  header[2] = p.hlen ?? 6;
  header[3] = p.hops ?? 0;
  header.writeUInt32BE(p.xid >>> 0, 4);
  header.writeUInt16BE(p.secs ?? 0, 8);
  header.writeUInt16BE(p.flags ?? 0, 10);
  writeIp(header, 12, p.ciaddr);
  writeIp(header, 16, p.yiaddr);
  writeIp(header, 20, p.siaddr);
  writeIp(header, 24, p.giaddr);
  if (p.chaddr.length > 16) throw new Error('chaddr longer than 16 bytes');
  p.chaddr.copy(header, 28);
  writeField(header, 44, 64, p.sname, 'sname');
  writeField(header, 108, 128, p.file, 'file');
  header.writeUInt32BE(COOKIE, HEADER_BYTES);
  const parts: Buffer[] = [header];
  for (const [code, value] of p.options) {
    if (code === OPT.PAD || code === OPT.END || code < 0 || code > 255) throw new Error(`option code ${code} cannot carry data`);
    let off = 0;
    do {
      const chunk = value.subarray(off, off + 255);
      parts.push(Buffer.from([code, chunk.length]), chunk);
      off += 255;
    } while (off < value.length);
  }
  parts.push(Buffer.from([OPT.END]));
  let out = Buffer.concat(parts);
  if (out.length < MIN_REPLY_BYTES) out = Buffer.concat([out, Buffer.alloc(MIN_REPLY_BYTES - out.length)]);
  // option 57 / the RFC 2131 minimum count the IP and UDP headers (28 bytes) as well
  const max = Math.max(576, p.maxBytes ?? 576) - 28;
  if (out.length > max) throw new Error(`DHCP message of ${out.length} bytes exceeds ${max}`);
  return out;
}
