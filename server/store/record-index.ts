import type { Mac } from '../../common/mac.js';
import type { MachineRecord } from '../machines/model.js';
import { KeyedMutex } from './keyed-mutex.js';
import type { BrokenRecord } from './store.js';

/**
 * The in-memory side every MachineStore shares: the record index (callers get copies), change
 * listeners, and the per-MAC mutex that serialises read-modify-write.
 */
export abstract class RecordIndex {
  protected records = new Map<string, MachineRecord>();
  protected brokenFiles = new Map<string, BrokenRecord>();
  protected mutex = new KeyedMutex();
  private listeners = new Set<(mac: Mac) => void>();

  get(mac: Mac): MachineRecord | undefined {
    const r = this.records.get(mac);
    return r ? structuredClone(r) : undefined;
  }

  has(mac: Mac): boolean {
    return this.records.has(mac);
  }

  list(): MachineRecord[] {
    return [...this.records.values()].map((r) => structuredClone(r)).sort((a, b) => a.mac.localeCompare(b.mac));
  }

  count(): number {
    return this.records.size;
  }

  broken(): BrokenRecord[] {
    return [...this.brokenFiles.values()].sort((a, b) => a.mac.localeCompare(b.mac));
  }

  brokenFor(mac: Mac): BrokenRecord | undefined {
    return this.brokenFiles.get(mac);
  }

  onChange(listener: (mac: Mac) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  protected emit(mac: Mac): void {
    for (const l of this.listeners) l(mac);
  }

  protected clearListeners(): void {
    this.listeners.clear();
  }
}
