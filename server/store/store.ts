import type { Mac } from '../../common/mac.js';
import type { MachineRecord } from '../machines/model.js';

/**
 * The machine registry's storage seam. Implementations: FileStore (one JSON file per machine, hand
 * edits picked up live) and MemoryStore (tests). Reads are synchronous from an in-memory index;
 * writes go through update(), serialised per MAC so concurrent read-modify-write never loses an update.
 */
export interface MachineStore {
  get(mac: Mac): MachineRecord | undefined;
  has(mac: Mac): boolean;
  list(): MachineRecord[];
  count(): number;
  /**
   * Read-modify-write one machine. `fn` gets the current record (or undefined) and returns the new
   * record, `null` to delete, or `undefined` to leave it unchanged. Throwing from `fn` changes nothing.
   * Resolves to the record as stored afterwards.
   */
  update(mac: Mac, fn: (current: MachineRecord | undefined) => MachineRecord | null | undefined): Promise<MachineRecord | undefined>;
  /** Called after any change, by API or by hand edit, with the MAC that changed. */
  onChange(listener: (mac: Mac) => void): () => void;
  close(): Promise<void>;
}
