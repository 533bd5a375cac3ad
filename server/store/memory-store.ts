import type { Mac } from '../mac.js';
import type { MachineRecord } from '../machines/model.js';
import { KeyedMutex } from './keyed-mutex.js';
import type { MachineStore } from './store.js';

/** In-memory MachineStore for tests and as a reference for other backends. */
export class MemoryStore implements MachineStore {
  private records = new Map<string, MachineRecord>();
  private listeners = new Set<(mac: Mac) => void>();
  private mutex = new KeyedMutex();

  get(mac: Mac): MachineRecord | undefined {
    const r = this.records.get(mac);
    return r ? structuredClone(r) : undefined;
  }

  list(): MachineRecord[] {
    return [...this.records.values()].map((r) => structuredClone(r)).sort((a, b) => a.mac.localeCompare(b.mac));
  }

  count(): number {
    return this.records.size;
  }

  update(mac: Mac, fn: (c: MachineRecord | undefined) => MachineRecord | null | undefined): Promise<MachineRecord | undefined> {
    return this.mutex.run(mac, async () => {
      const next = fn(this.get(mac));
      if (next === undefined) return this.get(mac);
      if (next === null) this.records.delete(mac);
      else this.records.set(mac, structuredClone(next));
      for (const l of this.listeners) l(mac);
      return next === null ? undefined : structuredClone(next);
    });
  }

  onChange(listener: (mac: Mac) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.listeners.clear();
  }
}
