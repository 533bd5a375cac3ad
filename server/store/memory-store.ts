import type { Mac } from '../../common/mac.js';
import type { MachineRecord } from '../machines/model.js';
import { RecordIndex } from './record-index.js';
import type { MachineStore } from './store.js';

/** In-memory MachineStore for tests and as a reference for other backends. */
export class MemoryStore extends RecordIndex implements MachineStore {
  update(mac: Mac, fn: (c: MachineRecord | undefined) => MachineRecord | null | undefined): Promise<MachineRecord | undefined> {
    return this.mutex.run(mac, async () => {
      const next = fn(this.get(mac));
      if (next === undefined) return this.get(mac);
      if (next === null) this.records.delete(mac);
      else this.records.set(mac, structuredClone(next));
      this.emit(mac);
      return next === null ? undefined : structuredClone(next);
    });
  }

  async close(): Promise<void> {
    this.clearListeners();
  }
}
