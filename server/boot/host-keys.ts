import { parseSshPublicKey } from '../machines/ssh-key.js';

/** Host keys from a cloud-init phone_home post (values "N/A" or garbage are skipped). */
export function hostKeysFromPhoneHome(body: Record<string, unknown>): string[] {
  const keys: string[] = [];
  for (const field of ['pub_key_ed25519', 'pub_key_ecdsa', 'pub_key_rsa']) {
    const v = body[field];
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

/** known_hosts lines: "<ip>,<hostname> <type> <base64>". */
export function knownHostsLines(names: string[], hostKeys: string[]): string {
  const who = names.filter(Boolean).join(',');
  if (!who) return '';
  return hostKeys.map((k) => `${who} ${k}\n`).join('');
}
