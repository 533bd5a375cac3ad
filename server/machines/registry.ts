import { createHash } from 'node:crypto';
import type { Logger } from '../../common/log.js';
import type { Mac } from '../../common/mac.js';
import type { EventLog, MachineEvent, NewEvent } from '../events/event-log.js';
import type { ImageStore } from '../images/image-store.js';
import type { MachineStore } from '../store/store.js';
import { KeyedMutex } from '../store/keyed-mutex.js';
import { notRegistered, RegistryError } from './errors.js';
import { machineRecordSchema, type MachinePatch, type MachineRecord, type MachineSpec } from './model.js';

/** Phone-home sessions remembered per machine; sessions also expire (default 1 h). */
const USED_SESSIONS_KEPT = 64;

export interface PhoneHomeReport {
  sessionId: string;
  hostKeys: string[];
  hostname?: string;
  ip?: string;
}

/** Machine registry operations shared by the admin API and the boot-time endpoints. */
export class Registry {
  /** MACs of discovered (not yet registered) machines, kept current from store changes. */
  private discovered = new Set<string>();
  /** MACs whose discovery write is under way: they count against the cap until it lands. */
  private reserved = new Set<string>();
  /**
   * Per MAC: an event is appended only while the machine is in the registry, and a delete removes
   * the record and its timeline in one step, so a delete racing a PUT or a boot never drops the new
   * machine's events nor leaves a timeline behind for a deleted one.
   */
  private readonly timelineLock = new KeyedMutex();
  /** Told of every event once it is recorded (live event stream, metrics). */
  private readonly eventListeners = new Set<(mac: Mac, ev: MachineEvent) => void>();

  constructor(
    private readonly store: MachineStore,
    private readonly events: EventLog,
    private readonly images: ImageStore,
    private readonly logger: Logger,
    private readonly maxDiscovered: number,
  ) {
    for (const r of store.list()) if (r.discovered) this.discovered.add(r.mac);
    store.onChange((mac) => {
      this.reserved.delete(mac);
      if (store.get(mac)?.discovered) this.discovered.add(mac);
      else this.discovered.delete(mac);
    });
  }

  get(mac: Mac): MachineRecord | undefined {
    return this.store.get(mac);
  }

  has(mac: Mac): boolean {
    return this.store.has(mac);
  }

  list(): MachineRecord[] {
    return this.store.list();
  }

  /** A machine's timeline, oldest first (at most `limit` newest events). */
  async timeline(mac: Mac, limit?: number): Promise<MachineEvent[]> {
    if (!this.store.has(mac)) throw notRegistered(mac);
    return this.events.list(mac, limit);
  }

  /** Called after any change to a machine, by API, boot or hand edit. */
  onChange(listener: (mac: Mac) => void): () => void {
    return this.store.onChange(listener);
  }

  /** Subscribe to every timeline event as it is recorded (in recording order); returns unsubscribe. */
  onEvent(listener: (mac: Mac, ev: MachineEvent) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Append to a machine's timeline. Only machines in the registry have one (no files for strangers' MACs). */
  async event(mac: Mac, ev: NewEvent): Promise<void> {
    await this.timelineLock.run(mac, async () => {
      if (!this.store.has(mac)) return;
      // the time is fixed here so the stored event and the published one are the same
      const full: NewEvent & { time: string } = { ...ev, time: ev.time ?? new Date().toISOString() };
      try {
        await this.events.append(mac, full);
      } catch (e) {
        this.logger.error({ event: 'events.append-failed', mac, err: e }, 'could not record a machine event');
        return;
      }
      const published: MachineEvent = { time: full.time, event: full.event, level: full.level, message: full.message, ...(full.data ? { data: full.data } : {}) };
      for (const l of this.eventListeners) {
        try {
          l(mac, published);
        } catch (e) {
          this.logger.error({ event: 'events.listener-failed', mac, err: e }, 'an event listener threw');
        }
      }
    });
  }

  private checkIfMatch(cur: MachineRecord | undefined, ifMatch: string | undefined): void {
    if (ifMatch === undefined || ifMatch === '*') {
      if (ifMatch === '*' && !cur) throw new RegistryError('precondition-failed', 'If-Match: * but the machine does not exist');
      return;
    }
    // If-Match uses strong comparison: weak tags (W/"...") never match
    const want = ifMatch.split(',').map((s) => s.trim());
    if (!cur || !want.includes(etagOf(cur))) {
      throw new RegistryError('precondition-failed', `the machine changed since you read it (its ETag is now ${cur ? etagOf(cur) : 'none'}); GET it again`);
    }
  }

  async put(mac: Mac, spec: MachineSpec, explicitImage: boolean, ifMatch?: string): Promise<{ record: MachineRecord; created: boolean }> {
    if (explicitImage) await this.requireImage(spec.image);
    let created = false;
    const rec = await this.store.update(mac, (cur) => {
      this.checkIfMatch(cur, ifMatch);
      created = !cur;
      const now = new Date().toISOString();
      return machineRecordSchema.parse({
        mac,
        ...spec,
        discovered: false,
        createdAt: cur?.createdAt ?? now,
        updatedAt: now,
        revision: (cur?.revision ?? 0) + 1,
        status: cur ? { ...cur.status, state: cur.status.state === 'discovered' ? 'registered' : cur.status.state } : undefined,
      });
    });
    if (!rec) throw new Error('store lost the record it just wrote');
    await this.event(mac, { event: created ? 'api.registered' : 'api.replaced', level: 'info', message: `machine ${created ? 'registered' : 'replaced'} (boot: ${rec.boot}, image: ${rec.image})` });
    return { record: rec, created };
  }

  async patch(mac: Mac, patch: MachinePatch, ifMatch?: string): Promise<MachineRecord> {
    if (patch.image !== undefined) await this.requireImage(patch.image);
    const rec = await this.store.update(mac, (cur) => {
      if (!cur) throw notRegistered(mac);
      this.checkIfMatch(cur, ifMatch);
      const next: Record<string, unknown> = { ...cur };
      for (const [k, v] of Object.entries(patch)) {
        if (v === undefined) continue;
        if (v === null) delete next[k];
        else next[k] = v;
      }
      if (cur.discovered) {
        next['discovered'] = false;
        next['status'] = { ...cur.status, state: 'registered' };
      }
      next['updatedAt'] = new Date().toISOString();
      next['revision'] = cur.revision + 1;
      return machineRecordSchema.parse(next);
    });
    if (!rec) throw new Error('store lost the record it just wrote');
    await this.event(mac, { event: 'api.updated', level: 'info', message: `machine updated: ${Object.keys(patch).join(', ') || 'no fields'}` });
    return rec;
  }

  async remove(mac: Mac, ifMatch?: string): Promise<void> {
    await this.timelineLock.run(mac, async () => {
      let existed = false;
      await this.store.update(mac, (cur) => {
        if (!cur) return undefined;
        this.checkIfMatch(cur, ifMatch);
        existed = true;
        return null;
      });
      if (!existed) throw notRegistered(mac);
      await this.events.remove(mac);
    });
  }

  private async requireImage(name: string): Promise<void> {
    const found = await this.images.lookup(name);
    if (!found.ok) throw new RegistryError('invalid', `image: ${found.reason}`);
  }

  /** Record an unknown MAC that asked to boot. Returns the record, or undefined when over the cap. */
  async discover(mac: Mac, facts: Record<string, unknown>): Promise<MachineRecord | undefined> {
    const known = this.store.get(mac);
    if (known) return known;
    // A slot is taken before the write starts, so concurrent discoveries never pass the cap.
    if (!this.reserved.has(mac) && this.discovered.size + this.reserved.size >= this.maxDiscovered) {
      this.logger.warn({ event: 'machine.discover-capped', mac, max: this.maxDiscovered }, 'too many discovered machines; not recording this one');
      return undefined;
    }
    this.reserved.add(mac);
    let created = false;
    let rec: MachineRecord | undefined;
    try {
      rec = await this.store.update(mac, (cur) => {
        if (cur) return undefined;
        created = true;
        return machineRecordSchema.parse({ mac, sshKeys: [], boot: 'local', discovered: true, status: { state: 'discovered' } });
      });
    } finally {
      this.reserved.delete(mac);
    }
    if (created) {
      this.logger.info({ event: 'machine.discovered', mac, facts }, `unknown machine ${mac} asked to boot; recorded as discovered`);
      await this.event(mac, { event: 'machine.discovered', level: 'info', message: 'unknown machine asked to boot', data: facts });
    }
    return rec;
  }

  /**
   * The booted OS reports in. First phone-home of a session wins: stores host keys, marks the
   * machine ready and flips `once` to `local`. Later ones are refused and recorded as warnings.
   */
  async phoneHome(mac: Mac, report: PhoneHomeReport): Promise<'accepted' | 'duplicate' | 'unknown'> {
    let outcome = 'unknown' as 'accepted' | 'duplicate' | 'unknown';
    let flipped = false;
    await this.store.update(mac, (cur) => {
      if (!cur) return undefined;
      if (cur.status.usedSessions.includes(report.sessionId)) {
        outcome = 'duplicate';
        return undefined;
      }
      outcome = 'accepted';
      flipped = cur.boot === 'once';
      const now = new Date().toISOString();
      return machineRecordSchema.parse({
        ...cur,
        boot: flipped ? 'local' : cur.boot,
        updatedAt: now,
        revision: cur.revision + 1,
        status: {
          ...cur.status,
          state: 'ready',
          readyAt: now,
          ip: report.ip,
          reportedHostname: report.hostname,
          hostKeys: report.hostKeys,
          usedSessions: [...cur.status.usedSessions, report.sessionId].slice(-USED_SESSIONS_KEPT),
        },
      });
    });
    if (outcome === 'accepted') {
      await this.event(mac, {
        event: 'phone-home.ready',
        level: 'info',
        message: `OS is up${report.ip ? ` at ${report.ip}` : ''} with ${report.hostKeys.length} host key(s)${flipped ? '; boot switched from once to local' : ''}`,
        data: { ip: report.ip, hostname: report.hostname, session: report.sessionId.slice(0, 8) },
      });
      this.logger.info({ event: 'phone-home.ready', mac, ip: report.ip, flippedToLocal: flipped }, `machine ${mac} reported ready`);
    } else if (outcome === 'duplicate') {
      await this.event(mac, {
        event: 'phone-home.duplicate',
        level: 'warning',
        message: `a second phone-home for an already used boot session was refused${report.ip ? ` (from ${report.ip})` : ''}`,
        data: { ip: report.ip, session: report.sessionId.slice(0, 8) },
      });
      this.logger.warn({ event: 'phone-home.duplicate', mac, ip: report.ip }, `refused a second phone-home for machine ${mac}`);
    }
    return outcome;
  }
}

/** Strong ETag: a digest of the whole stored record (changes with any edit, by API or by hand). */
export function etagOf(r: MachineRecord): string {
  return `"${createHash('sha256').update(JSON.stringify(r)).digest('base64url').slice(0, 22)}"`;
}
