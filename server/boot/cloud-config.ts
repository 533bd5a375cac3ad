import { stringify } from 'yaml';
import type { Mac } from '../../common/mac.js';
import type { MachineRecord } from '../machines/model.js';

export const PHONE_HOME_POST = ['pub_key_rsa', 'pub_key_ecdsa', 'pub_key_ed25519', 'instance_id', 'hostname', 'fqdn'] as const;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Merge the admin's userData into the generated config: objects merge key by key, lists are
 * concatenated (generated entries first, so the admin's keys add to ramboot's), anything else
 * from userData wins.
 */
export function mergeCloudConfig(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    const cur = out[k];
    if (Array.isArray(cur) && Array.isArray(v)) out[k] = [...cur, ...v];
    else if (isPlainObject(cur) && isPlainObject(v)) out[k] = mergeCloudConfig(cur, v);
    else out[k] = v;
  }
  return out;
}

export function defaultHostname(mac: Mac): string {
  return `ramboot-${mac.replaceAll(':', '')}`;
}

/** user-data: #cloud-config with keys, hostname and the phone_home that reports the machine ready. */
export function userData(m: MachineRecord, seed: string): string {
  const hostname = m.hostname ?? defaultHostname(m.mac as Mac);
  const short = hostname.split('.')[0] ?? hostname;
  const generated: Record<string, unknown> = {
    hostname: short,
    ...(hostname.includes('.') ? { fqdn: hostname } : {}),
    preserve_hostname: false,
    disable_root: false,
    ssh_pwauth: false,
    ssh_deletekeys: false,
    ssh_genkeytypes: ['ed25519', 'ecdsa'],
    ssh_authorized_keys: m.sshKeys,
    // no distro default user ("debian"): root, by key only, is the one login (admins may add users)
    users: [],
  };
  const merged = mergeCloudConfig(generated, m.userData);
  merged['phone_home'] = { url: `${seed}phone-home`, post: [...PHONE_HOME_POST], tries: 10 };
  return `#cloud-config\n${stringify(merged as Json, { lineWidth: 0 })}`;
}

export function metaData(m: MachineRecord, sessionId: string): string {
  const hostname = m.hostname ?? defaultHostname(m.mac as Mac);
  // A new instance-id per boot session: every boot is a fresh instance (the root is in RAM).
  return stringify({ 'instance-id': `ramboot-${m.mac.replaceAll(':', '')}-${sessionId.slice(0, 8)}`, 'local-hostname': hostname });
}

export function vendorData(): string {
  return '#cloud-config\n{}\n';
}

/** DHCP on every Ethernet NIC, whatever its name. */
export function networkConfig(): string {
  return stringify({
    version: 2,
    ethernets: {
      'all-en': { match: { name: 'en*' }, dhcp4: true, dhcp6: true, 'dhcp-identifier': 'mac' },
      'all-eth': { match: { name: 'eth*' }, dhcp4: true, dhcp6: true, 'dhcp-identifier': 'mac' },
    },
  });
}
