import { appendFile, mkdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { macToFileStem, type Mac } from '../mac.js';
import { writeFileAtomic } from '../store/atomic-write.js';
import { KeyedMutex } from '../store/keyed-mutex.js';

export type EventLevel = 'info' | 'warning' | 'error';

/** One entry of a machine's boot timeline. */
export interface MachineEvent {
  time: string;
  /** Dotted name, e.g. ipxe.script, image.fetch, cloud-init.seed, phone-home.ready, tftp.transfer. */
  event: string;
  level: EventLevel;
  message: string;
  data?: Record<string, unknown>;
}

export interface EventLog {
  append(mac: Mac, ev: Omit<MachineEvent, 'time'> & { time?: string }): Promise<void>;
  /** Oldest first; at most `limit` newest entries. */
  list(mac: Mac, limit?: number): Promise<MachineEvent[]>;
  remove(mac: Mac): Promise<void>;
}

/** Keep the newest MAX_EVENTS per machine; older ones are trimmed when the file grows past 2x that. */
const MAX_EVENTS = 500;

/** Append-only JSON lines, one file per machine: <dir>/aa-bb-cc-dd-ee-ff.jsonl. */
export class FileEventLog implements EventLog {
  private mutex = new KeyedMutex();
  private lineCounts = new Map<string, number>();

  constructor(private readonly dir: string) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  private file(mac: Mac): string {
    return join(this.dir, `${macToFileStem(mac)}.jsonl`);
  }

  append(mac: Mac, ev: Omit<MachineEvent, 'time'> & { time?: string }): Promise<void> {
    const entry: MachineEvent = { time: ev.time ?? new Date().toISOString(), event: ev.event, level: ev.level, message: ev.message };
    if (ev.data) entry.data = ev.data;
    return this.mutex.run(mac, async () => {
      const path = this.file(mac);
      await appendFile(path, `${JSON.stringify(entry)}\n`);
      let n = this.lineCounts.get(mac);
      if (n === undefined) n = (await this.readAll(mac)).length;
      else n += 1;
      if (n > 2 * MAX_EVENTS) {
        const keep = (await this.readAll(mac)).slice(-MAX_EVENTS);
        await writeFileAtomic(path, keep.map((e) => JSON.stringify(e)).join('\n') + '\n');
        n = keep.length;
      }
      this.lineCounts.set(mac, n);
    });
  }

  private async readAll(mac: Mac): Promise<MachineEvent[]> {
    let text: string;
    try {
      text = await readFile(this.file(mac), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: MachineEvent[] = [];
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        out.push(JSON.parse(line) as MachineEvent);
      } catch {
        // a torn last line after a crash: skip it
      }
    }
    return out;
  }

  async list(mac: Mac, limit = MAX_EVENTS): Promise<MachineEvent[]> {
    const all = await this.mutex.run(mac, () => this.readAll(mac));
    return all.slice(-limit);
  }

  remove(mac: Mac): Promise<void> {
    return this.mutex.run(mac, async () => {
      this.lineCounts.delete(mac);
      await unlink(this.file(mac)).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw e;
      });
    });
  }
}

/** In-memory EventLog (tests). */
export class MemoryEventLog implements EventLog {
  private events = new Map<string, MachineEvent[]>();
  async append(mac: Mac, ev: Omit<MachineEvent, 'time'> & { time?: string }): Promise<void> {
    const list = this.events.get(mac) ?? [];
    list.push({ ...ev, time: ev.time ?? new Date().toISOString() });
    this.events.set(mac, list.slice(-MAX_EVENTS));
  }
  async list(mac: Mac, limit = MAX_EVENTS): Promise<MachineEvent[]> {
    return (this.events.get(mac) ?? []).slice(-limit);
  }
  async remove(mac: Mac): Promise<void> {
    this.events.delete(mac);
  }
}
