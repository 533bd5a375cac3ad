import type { Mac } from '../../common/mac.js';
import type { MachineRecord } from '../machines/model.js';

/** A machine file that is on disk but invalid: kept as it is, never served, never overwritten silently. */
export interface BrokenRecord {
  mac: Mac;
  file: string;
  reason: string;
  /** When it was found broken (ISO). */
  since: string;
}

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
  /** Machine files that exist but do not validate (FileStore only; hand edits). */
  broken(): BrokenRecord[];
  brokenFor(mac: Mac): BrokenRecord | undefined;
  /**
   * Read-modify-write one machine. `fn` gets the current record (or undefined) and returns the new
   * record, `null` to delete, or `undefined` to leave it unchanged. Throwing from `fn` changes nothing.
   * Resolves to the record as stored afterwards. A write over a broken file keeps a copy of it.
   */
  update(mac: Mac, fn: (current: MachineRecord | undefined) => MachineRecord | null | undefined): Promise<MachineRecord | undefined>;
  /** Called after any change, by API or by hand edit, with the MAC that changed. */
  onChange(listener: (mac: Mac) => void): () => void;
  close(): Promise<void>;
}
