import NodeCache from 'node-cache';

/**
 * Rendered iPXE scripts and user-data, keyed per MAC. Entries for a MAC are dropped whenever that
 * machine changes (API or hand edit). Image changes need no flush: callers put the image
 * generation (ImageStore.version) in their keys, so old renders are never hit again and expire.
 */
export class RenderCache {
  private cache = new NodeCache({ stdTTL: 600, checkperiod: 120, useClones: false, maxKeys: 100_000 });
  private keysByMac = new Map<string, Set<string>>();

  constructor() {
    // keep the per-MAC key index as small as the cache: forget keys that expire or are deleted
    const forget = (key: string) => {
      const mac = key.slice(0, key.indexOf('|'));
      const keys = this.keysByMac.get(mac);
      if (!keys) return;
      keys.delete(key);
      if (keys.size === 0) this.keysByMac.delete(mac);
    };
    this.cache.on('expired', forget);
    this.cache.on('del', forget);
  }

  get(mac: string, key: string): string | undefined {
    return this.cache.get<string>(`${mac}|${key}`);
  }

  set(mac: string, key: string, value: string): void {
    const full = `${mac}|${key}`;
    try {
      this.cache.set(full, value);
    } catch {
      return; // cache full: rendering again is only slower
    }
    let keys = this.keysByMac.get(mac);
    if (!keys) this.keysByMac.set(mac, (keys = new Set()));
    keys.add(full);
  }

  invalidate(mac: string): void {
    const keys = this.keysByMac.get(mac);
    if (!keys) return;
    this.cache.del([...keys]);
    this.keysByMac.delete(mac);
  }

  close(): void {
    this.cache.close();
  }
}
