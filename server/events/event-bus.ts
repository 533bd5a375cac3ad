import type { Mac } from '../../common/mac.js';
import type { MachineEvent } from './event-log.js';

/** A timeline event as live subscribers see it: numbered in the order it was recorded. */
export interface BusEvent extends MachineEvent {
  id: number;
  mac: Mac;
}

export type BusListener = (ev: BusEvent) => void;

/**
 * Every recorded timeline event, numbered 1, 2, 3 ... in recording order, fanned out to live
 * subscribers, with the newest `capacity` kept so a reconnecting client can be sent what it missed.
 * Ids restart at 1 with the process; a client holding a larger id than exists is told to reset.
 */
export class EventBus {
  private readonly ring: (BusEvent | undefined)[];
  private nextId = 1;
  private readonly listeners = new Set<BusListener>();

  constructor(readonly capacity = 10_000) {
    this.ring = new Array<BusEvent | undefined>(capacity);
  }

  publish(mac: Mac, ev: MachineEvent): BusEvent {
    const e: BusEvent = { id: this.nextId++, mac, ...ev };
    this.ring[e.id % this.capacity] = e;
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        // a faulty subscriber must not stop the others nor the recording
      }
    }
    return e;
  }

  subscribe(l: BusListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** Id of the newest event (0 before the first). */
  get lastId(): number {
    return this.nextId - 1;
  }

  /**
   * Events after `lastSeen`, oldest first; 'reset' when some of them are no longer kept (or the id
   * is from another run of the server), so the client must re-read the timelines.
   */
  since(lastSeen: number): BusEvent[] | 'reset' {
    const last = this.lastId;
    if (lastSeen > last) return 'reset';
    if (last - lastSeen > this.capacity) return 'reset';
    const out: BusEvent[] = [];
    for (let id = lastSeen + 1; id <= last; id++) {
      const e = this.ring[id % this.capacity];
      if (e?.id === id) out.push(e);
    }
    return out;
  }
}
