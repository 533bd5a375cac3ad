/**
 * ProxyDHCP decision and reply building (PXE spec 2.1, RFC 2131, RFC 4578). Pure apart from the
 * Booter call: given a parsed request, decide whether to answer, what boot file to hand out, and
 * where to send the reply. No sockets here (server.ts does I/O).
 *
 * A proxyDHCP server never hands out addresses (yiaddr 0): the site's DHCP server does that, and the
 * firmware merges our offer (boot server + file) with the site's (address).
 */
import type { BootDecision, BootFacts, Booter } from '../boot/booter.js';
import { tryParseMac, type Mac } from '../../common/mac.js';
import {
  BOOTREPLY,
  BOOTREQUEST,
  DHCPACK,
  DHCPDISCOVER,
  DHCPINFORM,
  DHCPOFFER,
  DHCPREQUEST,
  MESSAGE_TYPE_NAMES,
  OPT,
  PXE_SUB,
  encodePacket,
  encodeSubOptions,
  type DhcpPacket,
  type DhcpRequestInfo,
} from './packet.js';

/** RFC 4578 / IANA "Processor Architecture Types" (option 93), for logs. */
export const ARCH_NAMES: Readonly<Record<number, string>> = {
  0: 'x86 BIOS',
  1: 'NEC/PC98',
  2: 'Itanium',
  3: 'DEC Alpha',
  4: 'Arc x86',
  5: 'Intel Lean Client',
  6: 'x86 UEFI',
  7: 'x64 UEFI',
  8: 'EFI Xscale',
  9: 'x64 UEFI (EBC number, used by x64 firmware)',
  10: 'ARM 32-bit UEFI',
  11: 'ARM 64-bit UEFI',
  15: 'x86 UEFI HTTP',
  16: 'x64 UEFI HTTP',
  17: 'EBC UEFI HTTP',
  18: 'ARM 32-bit UEFI HTTP',
  19: 'ARM 64-bit UEFI HTTP',
  20: 'x86 BIOS HTTP',
  25: 'RISC-V 64-bit UEFI',
};

export function archName(arch: number): string {
  return ARCH_NAMES[arch] ?? `architecture ${arch}`;
}

/** What boots next on this client: the first stage we hand out. */
export type FirmwareKind = 'bios' | 'efi' | 'http' | 'ipxe';

export interface ProxyConfig {
  /** IPv4 address of this server on the boot network: option 54, siaddr (TFTP next-server). */
  serverIp: string;
  /** TFTP file for BIOS PXE (arch 0). */
  bootFileBios: string;
  /** TFTP file for x64 UEFI PXE (arch 7, 9). */
  bootFileEfi: string;
  /** Absolute http:// URL of an EFI iPXE for UEFI HTTP boot (arch 16); '' = HTTP boot not served. */
  httpBootUrl: string;
  /** The iPXE script URL (<public-url>/boot.ipxe) handed to iPXE itself. */
  ipxeScriptUrl: string;
  /** The Booter gets this long (ms); later counts as an error (iPXE waits ~2 s for a ProxyDHCP offer). */
  decideTimeoutMs: number;
  /** Where replies to relayed requests go (giaddr:relayPort). RFC 2131: 67. */
  relayPort: number;
  /** Where replies to clients go (RFC 2131: 68). Tests on loopback use another. */
  clientPort: number;
}

export type ListenPort = 'dhcp' | 'pxe';

export interface Inbound {
  packet: DhcpPacket;
  info: DhcpRequestInfo;
  /** Which socket it came in on: port 67 (proxyDHCP) or 4011 (PXE boot server). */
  port: ListenPort;
  source: { address: string; port: number };
}

/** For logs and the machine's timeline. */
export interface RequestSummary {
  mac: string | undefined;
  xid: string;
  messageType: string;
  arch: number | undefined;
  archName: string | undefined;
  clientType: 'PXEClient' | 'HTTPClient' | undefined;
  vendorClass: string | undefined;
  firmware: FirmwareKind | undefined;
  userClasses: string[];
  uuid: string | undefined;
  port: ListenPort;
  source: string;
  giaddr: string | undefined;
  file?: string;
  decision?: BootDecision['kind'];
}

export interface ReplyTarget {
  address: string;
  port: number;
  /** Sent to the limited broadcast address: the socket needs SO_BROADCAST and a source address. */
  broadcast: boolean;
}

export type ProxyOutcome =
  | { kind: 'reply'; mac: Mac; reply: Buffer; to: ReplyTarget; summary: RequestSummary; message: string }
  | {
      kind: 'ignored';
      reason: string;
      summary: RequestSummary;
      /**
       * The MAC, when the ignore belongs on the machine's timeline: only for netboot requests that
       * were meant for us. A laptop's DHCP, or a PXE client's DHCPREQUEST to the site's server,
       * is not recorded (it would flood every timeline on each boot and lease renewal).
       */
      recordFor: Mac | undefined;
      /** Booter failures are warnings; everything else is routine. */
      level: 'debug' | 'info' | 'warning';
    };

function summarize(req: Inbound): RequestSummary {
  const { info, packet } = req;
  const vc = info.vendorClass;
  const clientType = vc?.startsWith('PXEClient') ? 'PXEClient' : vc?.startsWith('HTTPClient') ? 'HTTPClient' : undefined;
  const arch = info.arch[0];
  return {
    mac: info.mac,
    xid: `0x${packet.xid.toString(16).padStart(8, '0')}`,
    messageType: info.messageType === undefined ? 'none' : (MESSAGE_TYPE_NAMES[info.messageType] ?? `type ${info.messageType}`),
    arch,
    archName: arch === undefined ? undefined : archName(arch),
    clientType,
    vendorClass: vc?.slice(0, 64),
    firmware: undefined,
    userClasses: info.userClasses.map((u) => u.slice(0, 32)),
    uuid: info.uuid,
    port: req.port,
    source: `${req.source.address}:${req.source.port}`,
    giaddr: packet.giaddr === '0.0.0.0' ? undefined : packet.giaddr,
  };
}

/** iPXE says so in its user class (77 "iPXE") or by sending its own encapsulated options (175). */
export function isIpxe(info: DhcpRequestInfo): boolean {
  return info.ipxeEncap || info.userClasses.includes('iPXE');
}

/** The firmware kind and the file to hand out, or why this client is not served. */
export function chooseBootFile(info: DhcpRequestInfo, clientType: 'PXEClient' | 'HTTPClient', cfg: ProxyConfig): { firmware: FirmwareKind; file: string } | { reason: string } {
  const arch = info.arch[0];
  if (arch === undefined) return { reason: 'no client architecture (option 93)' };
  if (clientType === 'HTTPClient') {
    if (arch === 16) return cfg.httpBootUrl ? { firmware: 'http', file: cfg.httpBootUrl } : { reason: 'UEFI HTTP boot is not configured (no httpBootUrl)' };
    return { reason: `unsupported client architecture ${arch} (${archName(arch)}) for HTTP boot; ramboot serves x64 UEFI (16)` };
  }
  if (arch !== 0 && arch !== 7 && arch !== 9) {
    return { reason: `unsupported client architecture ${arch} (${archName(arch)}); ramboot serves x86 BIOS (0) and x64 UEFI (7, 9, HTTP 16)` };
  }
  // iPXE itself gets the script, so the chain ends here (no TFTP -> iPXE -> DHCP -> TFTP loop)
  if (isIpxe(info)) return { firmware: 'ipxe', file: cfg.ipxeScriptUrl };
  if (arch === 0) return { firmware: 'bios', file: cfg.bootFileBios };
  return { firmware: 'efi', file: cfg.bootFileEfi };
}

/** What the Booter learns from a DHCP request (never trusted for identity: that is the MAC). */
export function factsFrom(req: Inbound): BootFacts {
  const facts: BootFacts = {};
  const arch = req.info.arch[0];
  if (arch === 0) facts.platform = 'pcbios';
  else if (arch !== undefined) {
    facts.platform = 'efi';
    facts.buildarch = 'x86_64'; // only x64 UEFI arches reach the Booter (chooseBootFile)
  }
  if (req.info.uuid) facts.uuid = req.info.uuid;
  const ip = req.packet.ciaddr !== '0.0.0.0' ? req.packet.ciaddr : req.source.address !== '0.0.0.0' ? req.source.address : undefined;
  if (ip) facts.ip = ip;
  return facts;
}

/**
 * RFC 2131 4.1 for a proxy: relayed (giaddr set) -> the relay on port 67; on port 4011 -> unicast
 * to the client (ciaddr, else the source address) at its source port; ciaddr set -> unicast to
 * ciaddr:68; else the limited broadcast. The "unicast to chaddr + yiaddr" case of 4.1 does not exist
 * for a proxy: yiaddr is 0, so an unconfigured client can only be reached by broadcast, whatever its
 * broadcast flag says.
 */
export function replyTarget(req: Inbound, cfg: ProxyConfig): ReplyTarget {
  const p = req.packet;
  if (p.giaddr !== '0.0.0.0') return { address: p.giaddr, port: cfg.relayPort, broadcast: false };
  if (req.port === 'pxe') {
    const address = p.ciaddr !== '0.0.0.0' ? p.ciaddr : req.source.address;
    return { address, port: req.source.port, broadcast: false };
  }
  if (p.ciaddr !== '0.0.0.0') return { address: p.ciaddr, port: cfg.clientPort, broadcast: false };
  return { address: '255.255.255.255', port: cfg.clientPort, broadcast: true };
}

/** Builds the proxy OFFER or ACK. */
export function buildReply(req: Inbound, cfg: ProxyConfig, replyType: number, clientType: 'PXEClient' | 'HTTPClient', file: string): Buffer {
  const { packet: p, info } = req;
  const options: [number, Buffer][] = [
    [OPT.MESSAGE_TYPE, Buffer.from([replyType])],
    [OPT.SERVER_ID, ipBytes(cfg.serverIp)],
    // the PXE spec has the server answer with the class it serves ("PXEClient"); EDK2 HTTP boot
    // only takes offers whose option 60 is "HTTPClient"
    [OPT.VENDOR_CLASS, Buffer.from(clientType, 'latin1')],
  ];
  if (info.clientId97 !== undefined) options.push([OPT.CLIENT_UUID, info.clientId97]);
  if (clientType === 'PXEClient') {
    // sub-option 6 = 8: skip boot server discovery, download the file named in this offer
    options.push([OPT.VENDOR_SPECIFIC, encodeSubOptions([[PXE_SUB.DISCOVERY_CONTROL, Buffer.from([8])]])]);
  }
  // the file also as option 67: iPXE and EDK2 read the field, some firmwares only the option
  options.push([OPT.BOOTFILE, Buffer.from(file, 'latin1')]);
  // RFC 3046: a server echoes the relay agent information unchanged, last
  if (info.relayAgent !== undefined) options.push([OPT.RELAY_AGENT, info.relayAgent]);
  return encodePacket({
    op: BOOTREPLY,
    htype: p.htype,
    hlen: p.hlen,
    xid: p.xid,
    flags: p.flags & 0x8000,
    // RFC 2131 table 3: ciaddr 0 in an OFFER, the client's in an ACK
    ciaddr: replyType === DHCPACK ? p.ciaddr : '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: cfg.serverIp,
    giaddr: p.giaddr,
    chaddr: p.chaddr,
    file: file.length < 128 ? file : '',
    options,
    ...(info.maxMessageSize !== undefined ? { maxBytes: info.maxMessageSize } : {}),
  });
}

function ipBytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map((n) => Number(n)));
}

async function decideWithin(booter: Booter, mac: Mac, facts: BootFacts, ms: number): Promise<BootDecision | { kind: 'error'; reason: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ kind: 'error'; reason: string }>((resolve) => {
    timer = setTimeout(() => resolve({ kind: 'error', reason: `boot decision took longer than ${ms} ms` }), ms);
  });
  try {
    return await Promise.race([
      booter.decide({ mac, facts }).catch((e: unknown) => ({ kind: 'error' as const, reason: `boot decision failed: ${e instanceof Error ? e.message : String(e)}` })),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A DHCPREQUEST/INFORM on port 67 that asks us (not the address server) for boot information: the
 * client already has its address (ciaddr set), requests none (no option 50), and names us or no
 * server. A REQUEST in the SELECTING state (option 50 + option 54) picks the site server's lease and
 * must never be answered by a proxy: an ACK with yiaddr 0 makes EDK2 decline its lease (PXE-E07),
 * and when ramboot runs on the DHCP server's host, option 54 names both. PXE clients send their
 * boot-server requests to port 4011 anyway; this covers old ones that broadcast them to 67.
 */
function isBootServerRequest(req: Inbound, cfg: ProxyConfig): boolean {
  const { info, packet } = req;
  return packet.ciaddr !== '0.0.0.0' && info.requestedIp === undefined && (info.serverId === undefined || info.serverId === cfg.serverIp);
}

/** Decides one request. Never throws (Booter errors and timeouts become "ignored"). */
export async function handleRequest(req: Inbound, cfg: ProxyConfig, booter: Booter): Promise<ProxyOutcome> {
  const summary = summarize(req);
  const { info, packet } = req;
  const quiet = (reason: string): ProxyOutcome => ({ kind: 'ignored', reason, summary, recordFor: undefined, level: 'debug' });
  if (packet.op !== BOOTREQUEST) return quiet('not a BOOTREQUEST');
  const mac = tryParseMac(info.mac);
  if (!mac) return quiet(`hardware type ${packet.htype}/length ${packet.hlen} is not Ethernet`);
  if (!summary.clientType) return quiet('not a netboot client (option 60 is not PXEClient/HTTPClient)');
  if (info.arch.length === 0) return quiet('not a netboot client (no option 93)');
  const mt = info.messageType;
  let replyType: number;
  if (req.port === 'dhcp') {
    if (mt === DHCPDISCOVER) replyType = DHCPOFFER;
    else if ((mt === DHCPREQUEST || mt === DHCPINFORM) && isBootServerRequest(req, cfg)) replyType = DHCPACK;
    else if (mt === DHCPREQUEST) return quiet(`${summary.messageType} is for the address server (${info.serverId ?? 'none named'}${info.requestedIp ? `, requests ${info.requestedIp}` : ''})`);
    else return quiet(`${summary.messageType} needs no proxyDHCP answer`);
  } else {
    if (mt === DHCPREQUEST || mt === DHCPINFORM) replyType = DHCPACK;
    else return quiet(`${summary.messageType} on the PXE boot server port`);
  }
  const recorded = (reason: string, level: 'info' | 'warning' = 'info'): ProxyOutcome => ({ kind: 'ignored', reason, summary, recordFor: mac, level });
  const choice = chooseBootFile(info, summary.clientType, cfg);
  if ('reason' in choice) return recorded(choice.reason);
  summary.firmware = choice.firmware;
  const decision = await decideWithin(booter, mac, factsFrom(req), cfg.decideTimeoutMs);
  if (decision.kind === 'error') return recorded(decision.reason, 'warning');
  summary.decision = decision.kind;
  // no offer at all: the firmware falls through to its next boot option (the local disk)
  if (decision.kind === 'local') return recorded(`boot local disk (${decision.reason})`);
  summary.file = choice.file;
  const reply = buildReply(req, cfg, replyType, summary.clientType, choice.file);
  const what = replyType === DHCPOFFER ? 'offer' : 'ack';
  const refused = decision.kind === 'refuse' ? ` (boot will be refused: ${decision.reason})` : '';
  const message = `proxyDHCP ${what} on port ${req.port === 'dhcp' ? 'dhcp' : 'pxe'} to ${summary.archName} ${choice.firmware === 'ipxe' ? 'iPXE' : summary.clientType}: ${choice.file}${refused}`;
  return { kind: 'reply', mac, reply, to: replyTarget(req, cfg), summary, message };
}
