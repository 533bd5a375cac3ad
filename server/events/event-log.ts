import { appendFileSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { EventName } from '../../common/event-names.js';
import { macToFileStem, type Mac } from '../../common/mac.js';

export type EventLevel = 'info' | 'warning' | 'error';

/** One entry of a machine's boot timeline. */
export interface MachineEvent {
  time: string;
  /** Dotted name from common/event-names.ts (a hand-edited file may hold others). */
  event: string;
  level: EventLevel;
  message: string;
  data?: Record<string, unknown>;
}

/** An event as an emitter hands it over: its name is one of the known ones. */
export type NewEvent = Omit<MachineEvent, 'time' | 'event'> & { event: EventName; time?: string };

export interface EventLog {
  append(mac: Mac, ev: NewEvent): Promise<void>;
  /** Oldest first; at most `limit` newest entries. */
  list(mac: Mac, limit?: number): Promise<MachineEvent[]>;
  remove(mac: Mac): Promise<void>;
}

/** At most MAX_EVENTS per machine; past TRIM_BYTES a file is cut back to the newest events in half that. */
const MAX_EVENTS = 500;
const TRIM_BYTES = 256 * 1024;

/**
 * Append-only JSON lines, one file per machine: <dir>/aa-bb-cc-dd-ee-ff.jsonl.
 * Appends are synchronous: one small write to the page cache costs tens of microseconds, where a
 * round trip through libuv's thread pool costs far more on a busy machine (measured: bench/).
 */
export class FileEventLog implements EventLog {
  private sizes = new Map<string, number>();

  constructor(private readonly dir: string) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  private file(mac: Mac): string {
    return join(this.dir, `${macToFileStem(mac)}.jsonl`);
  }

  async append(mac: Mac, ev: NewEvent): Promise<void> {
    const entry: MachineEvent = { time: ev.time ?? new Date().toISOString(), event: ev.event, level: ev.level, message: ev.message };
    if (ev.data) entry.data = ev.data;
    const path = this.file(mac);
    const line = `${JSON.stringify(entry)}\n`;
    appendFileSync(path, line, { mode: 0o600 });
    let size = this.sizes.get(mac);
    if (size === undefined) size = statSync(path).size;
    else size += Buffer.byteLength(line);
    if (size > TRIM_BYTES) {
      // keep the newest events that fit in half the budget, so trimming is rare
      const lines = this.readAll(mac).slice(-MAX_EVENTS).map((e) => JSON.stringify(e));
      let bytes = 0;
      let from = lines.length;
      while (from > 0 && bytes + lines[from - 1]!.length + 1 <= TRIM_BYTES / 2) bytes += lines[--from]!.length + 1;
      const text = lines.slice(from).map((l) => `${l}\n`).join('');
      writeFileSync(`${path}.tmp`, text, { mode: 0o600 });
      renameSync(`${path}.tmp`, path);
      size = Buffer.byteLength(text);
    }
    this.sizes.set(mac, size);
  }

  private readAll(mac: Mac): MachineEvent[] {
    let text: string;
    try {
      text = readFileSync(this.file(mac), 'utf8');
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
    return limit === 0 ? [] : this.readAll(mac).slice(-limit);
  }

  async remove(mac: Mac): Promise<void> {
    this.sizes.delete(mac);
    await unlink(this.file(mac)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }
}

/** In-memory EventLog (tests). */
export class MemoryEventLog implements EventLog {
  private events = new Map<string, MachineEvent[]>();
  async append(mac: Mac, ev: NewEvent): Promise<void> {
    const list = this.events.get(mac) ?? [];
    list.push({ ...ev, time: ev.time ?? new Date().toISOString() });
    this.events.set(mac, list.slice(-MAX_EVENTS));
  }
  async list(mac: Mac, limit = MAX_EVENTS): Promise<MachineEvent[]> {
    return limit === 0 ? [] : (this.events.get(mac) ?? []).slice(-limit);
  }
  async remove(mac: Mac): Promise<void> {
    this.events.delete(mac);
  }
}
