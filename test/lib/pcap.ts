import { readFile } from 'node:fs/promises';
import type { Netns } from './netns.js';
import type { ManagedProcess } from './process.js';

/**
 * A minimal reader for the classic pcap files `tcpdump -w` writes (link type Ethernet), enough to
 * pull out the UDP datagrams of a DHCP exchange: the proxyDHCP tests assert on what really went over
 * the bridge, not on what the server says it sent.
 */
export interface UdpDatagram {
  /** Seconds since the epoch, with microseconds. */
  time: number;
  srcMac: string;
  dstMac: string;
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

const LINKTYPE_ETHERNET = 1;

function mac(buf: Buffer, at: number): string {
  return [...buf.subarray(at, at + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

function ip(buf: Buffer, at: number): string {
  return [...buf.subarray(at, at + 4)].join('.');
}

/** Every IPv4 UDP datagram (unfragmented) in a pcap file's bytes. Truncated trailing records are skipped. */
export function udpDatagrams(file: Buffer): UdpDatagram[] {
  if (file.length < 24) return [];
  const magic = file.readUInt32LE(0);
  let le: boolean;
  let nano = false;
  if (magic === 0xa1b2c3d4) le = true;
  else if (magic === 0xd4c3b2a1) le = false;
  else if (magic === 0xa1b23c4d) (le = true), (nano = true);
  else if (magic === 0x4d3cb2a1) (le = false), (nano = true);
  else throw new Error('not a pcap file');
  const u32 = (at: number): number => (le ? file.readUInt32LE(at) : file.readUInt32BE(at));
  if (u32(20) !== LINKTYPE_ETHERNET) throw new Error(`pcap link type ${u32(20)} is not Ethernet`);
  const out: UdpDatagram[] = [];
  let pos = 24;
  while (pos + 16 <= file.length) {
    const sec = u32(pos);
    const frac = u32(pos + 4);
    const incl = u32(pos + 8);
    const start = pos + 16;
    pos = start + incl;
    if (pos > file.length) break;
    const f = file.subarray(start, start + incl);
    if (f.length < 14 + 20 + 8 || f.readUInt16BE(12) !== 0x0800) continue;
    const ihl = (f[14]! & 0x0f) * 4;
    if (f[14 + 9] !== 17) continue; // not UDP
    if ((f.readUInt16BE(14 + 6) & 0x3fff) !== 0) continue; // a fragment
    const udp = 14 + ihl;
    if (f.length < udp + 8) continue;
    const len = f.readUInt16BE(udp + 4);
    if (len < 8 || udp + len > f.length) continue;
    out.push({
      time: sec + frac / (nano ? 1e9 : 1e6),
      srcMac: mac(f, 6),
      dstMac: mac(f, 0),
      srcIp: ip(f, 14 + 12),
      dstIp: ip(f, 14 + 16),
      srcPort: f.readUInt16BE(udp),
      dstPort: f.readUInt16BE(udp + 2),
      payload: Buffer.from(f.subarray(udp + 8, udp + len)),
    });
  }
  return out;
}

export async function readUdpDatagrams(path: string): Promise<UdpDatagram[]> {
  return udpDatagrams(await readFile(path));
}

/**
 * Starts tcpdump inside the namespace on `iface`, writing DHCP/PXE traffic (UDP 67, 68, 4011) to
 * `file`, unbuffered (-U) so the file can be read while it runs. Resolves once tcpdump listens.
 */
export async function startCapture(ns: Netns, iface: string, file: string, name = 'tcpdump'): Promise<ManagedProcess> {
  const p = ns.spawn(name, ['tcpdump', '-i', iface, '-n', '-U', '--immediate-mode', '-s', '0', '-w', file, 'udp port 67 or udp port 68 or udp port 4011']);
  await p.waitFor(/listening on/, { timeoutMs: 20_000, failOn: /tcpdump: .*(error|No such)/i });
  return p;
}
