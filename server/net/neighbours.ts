import { readFile } from 'node:fs/promises';
import { tryParseMac, type Mac } from '../../common/mac.js';

/**
 * MAC of an IPv4 neighbour from the kernel's ARP table (/proc/net/arp), so a TFTP transfer (which
 * only knows the client's IP) can land on the machine's boot timeline. Undefined when unknown.
 */
export async function macForIPv4(ip: string, arpFile = '/proc/net/arp'): Promise<Mac | undefined> {
  const addr = ip.replace(/^::ffff:/, '');
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(addr)) return undefined;
  let text: string;
  try {
    text = await readFile(arpFile, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols[0] === addr && cols[3] && cols[3] !== '00:00:00:00:00:00') return tryParseMac(cols[3]);
  }
  return undefined;
}
