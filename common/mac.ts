/**
 * MAC address parsing. Accepted notations, any case:
 *   aa:bb:cc:dd:ee:ff   aa-bb-cc-dd-ee-ff   aabb.ccdd.eeff   aabbccddeeff
 * Canonical form: lower-case, colon separated.
 */
export type Mac = string & { readonly __brand: 'Mac' };

export class MacError extends Error {
  override name = 'MacError';
}

const SEPARATED = /^([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$/i;
const CISCO = /^([0-9a-f]{4})\.([0-9a-f]{4})\.([0-9a-f]{4})$/i;
const BARE = /^[0-9a-f]{12}$/i;

/** Parse any accepted notation; throws MacError with the reason otherwise. */
export function parseMac(input: unknown): Mac {
  if (typeof input !== 'string') throw new MacError('MAC address must be a string');
  const s = input.trim();
  if (s.length === 0) throw new MacError('MAC address is empty');
  let hex: string | undefined;
  const sep = SEPARATED.exec(s);
  if (sep) hex = [sep[1], sep[3], sep[4], sep[5], sep[6], sep[7]].join('');
  else {
    const cisco = CISCO.exec(s);
    if (cisco) hex = `${cisco[1]}${cisco[2]}${cisco[3]}`;
    else if (BARE.test(s)) hex = s;
  }
  if (hex === undefined) {
    throw new MacError(
      `"${s.slice(0, 40)}" is not a MAC address (expected 6 hex octets like aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff, aabb.ccdd.eeff or aabbccddeeff)`,
    );
  }
  const lower = hex.toLowerCase();
  const mac = lower.match(/../g)!.join(':') as Mac;
  // A NIC's own address is unicast and not all zero: broadcast and group addresses never boot.
  if (/^0{12}$/.test(lower)) throw new MacError(`${mac} is the all-zero address, not a network card's`);
  if (parseInt(lower.slice(0, 2), 16) & 1) throw new MacError(`${mac} is a ${lower === 'ffffffffffff' ? 'broadcast' : 'multicast (group)'} address, not a network card's`);
  return mac;
}

export function tryParseMac(input: unknown): Mac | undefined {
  try {
    return parseMac(input);
  } catch {
    return undefined;
  }
}

/** File-name-safe form: aa-bb-cc-dd-ee-ff. */
export function macToFileStem(mac: Mac): string {
  return mac.replaceAll(':', '-');
}
