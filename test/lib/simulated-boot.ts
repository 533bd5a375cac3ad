import type { Mac } from '../../common/mac.js';
import type { Registry } from '../../server/machines/registry.js';
import { makeKeyPair } from './ssh-keys.js';

/** Host keys a simulated OS reports when it phones home. */
export const SIM_HOST_KEY = makeKeyPair('ed25519', undefined, 'root@sim').pub;

export interface SimulatedBoot {
  /** /cloud-init/<mac>/<token>/ of the boot session. */
  seedPath: string;
  /** Bytes of image files fetched over HTTP. */
  imageBytes: Record<string, number>;
}

export interface SimulateOptions {
  /** Stop after this step (default: the whole boot). */
  until?: 'script' | 'image' | 'sshd' | 'ready';
  /**
   * Image fetches carry no MAC and the neighbour table has none for 127.0.0.1, so the server records
   * no image.fetch for a loopback client: given the registry, the test records them as the server
   * would for a machine on its link.
   */
  registry?: Registry;
  /** Called between steps (e.g. to wait for the UI to show one). */
  between?: (step: 'script' | 'image' | 'sshd') => Promise<void>;
}

/**
 * What a booting machine does over HTTP, as test/boot-flow.test.ts does it: the per-MAC script, the
 * kernel and initrd, an OS progress event, phone-home. Needs an image "default" (writeFakeImage).
 */
export async function simulateBoot(url: string, mac: Mac | string, opts: SimulateOptions = {}): Promise<SimulatedBoot> {
  const script = await (await fetch(`${url}/ipxe?mac=${mac}&platform=pcbios&buildarch=x86_64&memsize=4096`)).text();
  const seed = /;s=(\S+\/)/.exec(script)?.[1];
  if (!seed) throw new Error(`the script boots no ramboot image:\n${script}`);
  const seedPath = new URL(seed).pathname;
  const imageBytes: Record<string, number> = {};
  if (opts.until === 'script') return { seedPath, imageBytes };
  await opts.between?.('script');
  for (const m of script.matchAll(/(?:kernel|initrd --name \S+) (\S+\/images\/(\S+?)\/(\S+?))(?:\s|$)/g)) {
    const path = new URL(m[1]!).pathname;
    const started = Date.now();
    const r = await fetch(`${url}${path}`);
    const body = Buffer.from(await r.arrayBuffer());
    if (r.status !== 200) throw new Error(`GET ${path}: ${r.status}`);
    imageBytes[`${m[2]}/${m[3]}`] = body.length;
    await opts.registry?.event(mac as Mac, {
      event: 'image.fetch',
      level: 'info',
      message: `fetched ${m[2]}/${m[3]} (200)`,
      data: { image: m[2], file: m[3], status: 200, bytes: body.length, ms: Date.now() - started },
    });
  }
  if (opts.until === 'image') return { seedPath, imageBytes };
  await opts.between?.('image');
  const ev = await fetch(`${url}${seedPath}event`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ event: 'sshd.ready', message: 'listening' }) });
  if (ev.status !== 204) throw new Error(`OS event: ${ev.status}`);
  if (opts.until === 'sshd') return { seedPath, imageBytes };
  await opts.between?.('sshd');
  const form = new URLSearchParams({ pub_key_rsa: 'N/A', pub_key_ecdsa: 'N/A', pub_key_ed25519: `${SIM_HOST_KEY}\n`, instance_id: 'i-1', hostname: 'sim', fqdn: 'sim.example.com' });
  const ph = await fetch(`${url}${seedPath}phone-home`, { method: 'POST', body: form });
  if (ph.status !== 200) throw new Error(`phone-home: ${ph.status}`);
  return { seedPath, imageBytes };
}
