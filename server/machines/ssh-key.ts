/**
 * OpenSSH public key validation ("type base64 [comment]"): the base64 blob is decoded and walked in
 * the SSH wire format (RFC 4253 §6.6, RFC 5656, RFC 8709), so a truncated or mislabelled key is refused.
 */
export class SshKeyError extends Error {
  override name = 'SshKeyError';
}

export interface ParsedSshKey {
  type: string;
  base64: string;
  comment: string;
}

/** Key type -> the fields that follow the type string in the blob. */
const LAYOUTS: Record<string, readonly string[]> = {
  'ssh-ed25519': ['ed25519'],
  'ssh-rsa': ['mpint', 'mpint'],
  'ecdsa-sha2-nistp256': ['curve', 'string'],
  'ecdsa-sha2-nistp384': ['curve', 'string'],
  'ecdsa-sha2-nistp521': ['curve', 'string'],
  'sk-ssh-ed25519@openssh.com': ['ed25519', 'string'],
  'sk-ecdsa-sha2-nistp256@openssh.com': ['curve', 'string', 'string'],
};

export const SUPPORTED_KEY_TYPES = Object.keys(LAYOUTS);

function readString(buf: Buffer, off: number): { value: Buffer; next: number } {
  if (off + 4 > buf.length) throw new SshKeyError('key data is truncated');
  const len = buf.readUInt32BE(off);
  const start = off + 4;
  if (start + len > buf.length) throw new SshKeyError('key data is truncated');
  return { value: buf.subarray(start, start + len), next: start + len };
}

export function parseSshPublicKey(line: unknown): ParsedSshKey {
  if (typeof line !== 'string') throw new SshKeyError('SSH key must be a string');
  if (/[\r\n\0]/.test(line)) throw new SshKeyError('SSH key must be a single line');
  const parts = line.trim().split(/\s+/);
  const [type, b64, ...rest] = parts;
  if (!type || !b64) throw new SshKeyError('SSH key must look like "<type> <base64> [comment]"');
  const layout = LAYOUTS[type];
  if (!layout) {
    throw new SshKeyError(
      `unsupported SSH key type "${type.slice(0, 40)}" (supported: ${SUPPORTED_KEY_TYPES.join(', ')})`,
    );
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) {
    throw new SshKeyError('SSH key data is not valid base64');
  }
  const blob = Buffer.from(b64, 'base64');
  const head = readString(blob, 0);
  if (head.value.toString('latin1') !== type) {
    throw new SshKeyError(`SSH key data says "${head.value.toString('latin1').slice(0, 40)}" but the line says "${type}"`);
  }
  let off = head.next;
  for (const field of layout) {
    const f = readString(blob, off);
    off = f.next;
    if (field === 'ed25519' && f.value.length !== 32) throw new SshKeyError('ed25519 key must be 32 bytes');
    if (field === 'mpint' && f.value.length === 0) throw new SshKeyError('RSA key has an empty number');
    if (field === 'curve' && !type.includes(f.value.toString('latin1'))) {
      throw new SshKeyError('ECDSA key curve does not match its type');
    }
  }
  if (off !== blob.length) throw new SshKeyError('SSH key data has trailing bytes');
  if (type === 'ssh-rsa') {
    // modulus is the second mpint; require >= 2048 bits
    const e = readString(blob, head.next);
    const n = readString(blob, e.next);
    const bits = (n.value.length - (n.value[0] === 0 ? 1 : 0)) * 8;
    if (bits < 2040) throw new SshKeyError(`RSA key is too short (${bits} bits; need at least 2048)`);
  }
  return { type, base64: b64, comment: rest.join(' ') };
}

/** Canonical single-line form: "type base64 comment". */
export function normalizeSshKey(line: string): string {
  const k = parseSshPublicKey(line);
  return k.comment ? `${k.type} ${k.base64} ${k.comment}` : `${k.type} ${k.base64}`;
}
