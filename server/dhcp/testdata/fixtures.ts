/** Loads the golden packets captured by test/dhcp/capture.ts (see README.md). */
import { readFileSync } from 'node:fs';
import { OPT } from '../packet.js';

export interface Fixture {
  name: string;
  description: string;
  /** How it was captured (scenario, firmware, time). */
  source: string;
  /** UDP destination port the client sent it to (67 or 4011). */
  port: number;
  /** The UDP payload (the DHCP message), hex. */
  hex: string;
}

const FIXTURES: Fixture[] = JSON.parse(readFileSync(new URL('./packets.json', import.meta.url), 'utf8')) as Fixture[];

export function fixtures(): Fixture[] {
  return FIXTURES.map((f) => ({ ...f }));
}

/** The packet bytes of the named fixture (a fresh copy the caller may mutate). */
export function fixture(name: string): Buffer {
  const f = FIXTURES.find((x) => x.name === name);
  if (!f) throw new Error(`no fixture ${name}`);
  return Buffer.from(f.hex, 'hex');
}

/**
 * Rewrites a captured packet's options (test-only): drops `drop`, then appends `add` before END.
 * Used to derive cases no firmware here sends (a plain BIOS PXE ROM, arm64, relayed requests).
 */
export function withOptions(pkt: Buffer, drop: number[], add: Array<[number, Buffer]> = []): Buffer {
  const head = pkt.subarray(0, 240);
  const parts: Buffer[] = [Buffer.from(head)];
  let i = 240;
  while (i < pkt.length) {
    const c = pkt[i]!;
    if (c === OPT.PAD) { i++; continue; }
    if (c === OPT.END) break;
    const len = pkt[i + 1]!;
    if (!drop.includes(c)) parts.push(pkt.subarray(i, i + 2 + len));
    i += 2 + len;
  }
  for (const [c, v] of add) parts.push(Buffer.from([c, v.length]), v);
  parts.push(Buffer.from([OPT.END]));
  const out = Buffer.concat(parts);
  return out.length < 300 ? Buffer.concat([out, Buffer.alloc(300 - out.length)]) : out;
}

/** Sets an IPv4 header field (ciaddr 12, yiaddr 16, siaddr 20, giaddr 24) of a copy. */
export function withAddr(pkt: Buffer, offset: 12 | 16 | 20 | 24, ip: string): Buffer {
  const out = Buffer.from(pkt);
  ip.split('.').forEach((n, k) => (out[offset + k] = Number(n)));
  return out;
}
