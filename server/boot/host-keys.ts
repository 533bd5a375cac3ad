import { isIP } from 'node:net';
import { hostnameProblem } from '../machines/hostname.js';
import { parseSshPublicKey } from '../machines/ssh-key.js';

/** "<type> <base64>" of each string that is an SSH public key; anything else ("N/A", garbage) is skipped. */
export function validHostKeys(values: readonly unknown[]): string[] {
  const keys: string[] = [];
  for (const v of values) {
    if (typeof v !== 'string' || v.trim() === '' || v.trim() === 'N/A') continue;
    try {
      const k = parseSshPublicKey(v.trim());
      keys.push(`${k.type} ${k.base64}`);
    } catch {
      // not a key: ignore
    }
  }
  return keys;
}

/** Host keys from a cloud-init phone_home post. */
export function hostKeysFromPhoneHome(body: Record<string, unknown>): string[] {
  return validHostKeys(['pub_key_ed25519', 'pub_key_ecdsa', 'pub_key_rsa'].map((field) => body[field]));
}

/**
 * known_hosts lines: "<ip>,<hostname> <type> <base64>". Names and keys are re-checked here, so a
 * stored value can never add a line, a marker (@cert-authority) or a wildcard.
 */
export function knownHostsLines(names: string[], hostKeys: string[]): string {
  const who = names.filter((n) => isIP(n) !== 0 || hostnameProblem(n) === undefined).join(',');
  if (!who) return '';
  const keys: string[] = [];
  for (const k of hostKeys) {
    try {
      const p = parseSshPublicKey(k);
      keys.push(`${p.type} ${p.base64}`);
    } catch {
      // not a key: never written out
    }
  }
  return keys.map((k) => `${who} ${k}\n`).join('');
}
