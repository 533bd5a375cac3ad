import { createHash } from 'node:crypto';
import type { Logger } from '../../common/log.js';
import type { Mac } from '../../common/mac.js';
import type { EventLog, MachineEvent, NewEvent } from '../events/event-log.js';
import type { ImageStore, LoadedImage } from '../images/image-store.js';
import type { BrokenRecord, MachineStore } from '../store/store.js';
import { EventBudget } from '../events/rate-limit.js';
import { KeyedMutex } from '../store/keyed-mutex.js';
import { notRegistered, RegistryError } from './errors.js';
import { isSessionUsed, recordUsedSession, machineRecordSchema, newDeployId, type DeploySpec, type MachinePatch, type MachineRecord, type MachineSpec } from './model.js';

/** Session ids remembered per machine (for sessions that expire in the same second as the newest used one). */
const USED_SESSIONS_KEPT = 64;

/** What the registry needs to know about deploy artifacts (server/artifacts implements it). */
export interface ArtifactLookup {
  has(name: string): Promise<boolean>;
}

/** A status report of the deploy agent (POST <seed>deploy/status), validated by the route. */
export interface DeployReport {
  id: string;
  state: 'started' | 'progress' | 'succeeded' | 'failed';
  stage?: string;
  message?: string;
  bytes?: number;
  total?: number;
  rateBps?: number;
  etaSeconds?: number;
  seconds?: number;
  disk?: string;
}

/** accepted; stale: not the machine's current attempt; finished: the attempt already succeeded or failed. */
export type DeployReportOutcome = 'accepted' | 'stale' | 'finished' | 'unknown';

export interface PhoneHomeReport {
  sessionId: string;
  sessionExpiresAt: Date;
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
  private readonly budget = new EventBudget();
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
    private readonly checks: RegistryChecks = {},
    private readonly artifacts?: ArtifactLookup,
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

  /** Machine files on disk that do not validate (hand edits): never served, never discovered over. */
  broken(): BrokenRecord[] {
    return this.store.broken();
  }

  brokenFor(mac: Mac): BrokenRecord | undefined {
    return this.store.brokenFor(mac);
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

  /**
   * Append an event caused by an unauthenticated request (iPXE, TFTP, image fetches, DHCP): rate
   * limited per MAC, so floods cannot evict the admin's and the OS's events. The next event that
   * passes says how many were dropped.
   */
  async bootEvent(mac: Mac, ev: NewEvent): Promise<void> {
    if (!this.store.has(mac)) return;
    const dropped = this.budget.take(mac);
    if (dropped === undefined) return;
    await this.event(mac, dropped > 0 ? { ...ev, data: { ...ev.data, eventsDroppedBefore: dropped } } : ev);
  }

  /**
   * Append an event the admin's client reports about a registered machine (a transfer it runs).
   * Unlike boot events, an unknown MAC is an error the client hears about.
   */
  async clientEvent(mac: Mac, ev: NewEvent): Promise<MachineEvent> {
    if (!this.store.has(mac)) throw notRegistered(mac);
    const time = new Date().toISOString();
    await this.event(mac, { ...ev, time });
    return { time, event: ev.event, level: ev.level, message: ev.message, ...(ev.data ? { data: ev.data } : {}) };
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

  async put(mac: Mac, spec: MachineSpec, explicitImage: boolean, pre: WritePreconditions = {}): Promise<{ record: MachineRecord; created: boolean }> {
    if (explicitImage) await this.requireImage(spec.image);
    await this.checkCmdline(mac, spec.image, spec.kernelArgs);
    if (spec.deploy) await this.requireArtifact(spec.deploy);
    let created = false;
    const rec = await this.store.update(mac, (cur) => {
      this.checkIfMatch(cur, pre.ifMatch);
      if (pre.ifNoneMatch !== undefined) checkIfNoneMatch(cur, pre.ifNoneMatch);
      created = !cur;
      const now = new Date().toISOString();
      return machineRecordSchema.parse({
        mac,
        ...spec,
        // every deploy set is a new attempt
        deploy: spec.deploy ? { ...spec.deploy, id: newDeployId(), setAt: now } : undefined,
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
    const cur = this.store.get(mac);
    if (cur && (patch.image !== undefined || patch.kernelArgs !== undefined)) {
      await this.checkCmdline(mac, patch.image ?? cur.image, patch.kernelArgs === null ? '' : patch.kernelArgs ?? cur.kernelArgs);
    }
    if (patch.deploy) await this.requireArtifact(patch.deploy);
    const rec = await this.store.update(mac, (cur) => {
      if (!cur) throw this.missing(mac);
      this.checkIfMatch(cur, ifMatch);
      const next: Record<string, unknown> = { ...cur };
      for (const [k, v] of Object.entries(patch)) {
        if (v === undefined) continue;
        if (v === null) delete next[k];
        else next[k] = v;
      }
      // every deploy set is a new attempt
      if (patch.deploy) next['deploy'] = { ...patch.deploy, id: newDeployId(), setAt: new Date().toISOString() };
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
      this.budget.forget(mac);
    });
  }

  /** When the image exists, its command line plus kernelArgs must fit the kernel's limit. */
  private async checkCmdline(mac: Mac, imageName: string, kernelArgs: string): Promise<void> {
    if (!this.checks.cmdline) return;
    const found = await this.images.lookup(imageName);
    if (!found.ok) return; // a missing image is refused at boot, with its own reason
    const problem = this.checks.cmdline(mac, found.image, kernelArgs);
    if (problem) throw new RegistryError('invalid', `kernelArgs: ${problem}`);
  }

  /** Not registered, or registered with a file that does not validate (which says why). */
  missing(mac: Mac): RegistryError {
    const b = this.store.brokenFor(mac);
    return b ? new RegistryError('broken', `machine ${mac}: its file ${b.file} is invalid (${b.reason}); fix it, or PUT the machine again (the bad file is kept in quarantine/)`) : notRegistered(mac);
  }

  private async requireArtifact(deploy: DeploySpec): Promise<void> {
    if (deploy.artifact === undefined) return;
    if (!this.artifacts || !(await this.artifacts.has(deploy.artifact))) throw new RegistryError('invalid', `deploy.artifact: no artifact "${deploy.artifact}" (upload it first: PUT /api/v1/artifacts/${deploy.artifact})`);
  }

  private async requireImage(name: string): Promise<void> {
    const found = await this.images.lookup(name);
    if (!found.ok) throw new RegistryError('invalid', `image: ${found.reason}`);
  }

  /** Record an unknown MAC that asked to boot. Returns the record, or undefined when over the cap. */
  async discover(mac: Mac, facts: Record<string, unknown>): Promise<MachineRecord | undefined> {
    const known = this.store.get(mac);
    if (known) return known;
    // an invalid file is the admin's record with a typo, not a stranger: never discovered over
    if (this.store.brokenFor(mac)) return undefined;
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
        if (cur || this.store.brokenFor(mac)) return undefined;
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
   * The booted OS reports its SSH host keys as soon as sshd runs, before cloud-init's phone-home,
   * so known_hosts is there when SSH is. The same trust as phone-home (a live session of this
   * machine that has not phoned home yet); stores the keys and the address, changes nothing else.
   */
  async hostKeys(mac: Mac, report: Omit<PhoneHomeReport, 'hostname'>): Promise<'accepted' | 'used' | 'unknown'> {
    let outcome = 'unknown' as 'accepted' | 'used' | 'unknown';
    await this.store.update(mac, (cur) => {
      if (!cur) return undefined;
      if (isSessionUsed(cur.status, { id: report.sessionId, expiresAt: report.sessionExpiresAt })) {
        outcome = 'used';
        return undefined;
      }
      outcome = 'accepted';
      return withStatus(cur, false, new Date().toISOString(), { ip: report.ip, hostKeys: report.hostKeys });
    });
    if (outcome === 'accepted') {
      await this.event(mac, {
        event: 'host-keys.reported',
        level: 'info',
        message: `sshd is up${report.ip ? ` at ${report.ip}` : ''} with ${report.hostKeys.length} host key(s); known_hosts is ready`,
        data: { ip: report.ip, session: report.sessionId.slice(0, 8) },
      });
    }
    return outcome;
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
      if (isSessionUsed(cur.status, { id: report.sessionId, expiresAt: report.sessionExpiresAt })) {
        outcome = 'duplicate';
        return undefined;
      }
      outcome = 'accepted';
      // with a deploy assigned, the deploy's success flips once to local, not the OS being up
      flipped = cur.boot === 'once' && !cur.deploy;
      const now = new Date().toISOString();
      return withStatus(cur, flipped, now, {
        state: 'ready',
        readyAt: now,
        ip: report.ip,
        reportedHostname: report.hostname,
        hostKeys: report.hostKeys,
        ...recordUsedSession(cur.status, { id: report.sessionId, expiresAt: report.sessionExpiresAt }, USED_SESSIONS_KEPT),
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

  /**
   * The deploy agent reports on attempt `r.id`. Only the machine's current attempt is accepted, and
   * only until it succeeded or failed. started/progress go to the timeline only (no record write);
   * succeeded/failed are recorded in status.deploy, and succeeded flips once to local.
   */
  async deployReport(mac: Mac, r: DeployReport): Promise<DeployReportResult> {
    let outcome: DeployReportOutcome = 'unknown';
    let flipped = false;
    const check = (cur: MachineRecord | undefined): DeployReportOutcome => {
      if (!cur) return 'unknown';
      if (cur.deploy?.id !== r.id) return 'stale';
      if (cur.status.deploy?.id === r.id) return 'finished';
      return 'accepted';
    };
    if (r.state === 'started' || r.state === 'progress') {
      outcome = check(this.store.get(mac));
    } else {
      await this.store.update(mac, (cur) => {
        outcome = check(cur);
        if (outcome !== 'accepted' || !cur) return undefined;
        const now = new Date().toISOString();
        flipped = r.state === 'succeeded' && cur.boot === 'once';
        return withStatus(cur, flipped, now, {
          deploy: { id: r.id, state: r.state, finishedAt: now, bytes: r.bytes, seconds: r.seconds, stage: r.stage, message: r.message, disk: r.disk },
        });
      });
    }
    if (outcome !== 'accepted') return { outcome, flipped };
    const data = { id: r.id, stage: r.stage, bytes: r.bytes, total: r.total, rateBps: r.rateBps, etaSeconds: r.etaSeconds, seconds: r.seconds, disk: r.disk };
    const what = r.message ? `: ${r.message}` : '';
    if (r.state === 'started') await this.event(mac, { event: 'deploy.started', level: 'info', message: `deploy ${r.id} started${what}`, data });
    else if (r.state === 'progress') {
      // percent too: what the web page's progress bar reads
      const percent = r.total && r.bytes !== undefined ? Math.min(100, Math.floor((r.bytes / r.total) * 100)) : undefined;
      await this.event(mac, {
        event: 'deploy.progress',
        level: 'info',
        message: `deploy ${r.id} ${r.stage ?? ''} ${r.bytes ?? 0}${r.total ? `/${r.total}` : ''} bytes${percent !== undefined ? ` (${percent}%)` : ''}`,
        data: { ...data, percent },
      });
    }
    else if (r.state === 'succeeded') {
      await this.event(mac, { event: 'deploy.succeeded', level: 'info', message: `deploy ${r.id} succeeded${what}${flipped ? '; boot switched from once to local' : ''}`, data });
      this.logger.info({ event: 'deploy.succeeded', mac, id: r.id, flippedToLocal: flipped }, `machine ${mac} deployed ${r.id}`);
    } else {
      await this.event(mac, { event: 'deploy.failed', level: 'error', message: `deploy ${r.id} failed at ${r.stage ?? 'an unknown stage'}${what}`, data });
      this.logger.warn({ event: 'deploy.failed', mac, id: r.id, stage: r.stage, reason: r.message }, `machine ${mac}: deploy ${r.id} failed at ${r.stage ?? '?'}`);
    }
    return { outcome, flipped };
  }
}

export interface DeployReportResult {
  outcome: DeployReportOutcome;
  flipped: boolean;
}

/** Checks the registry runs on writes that need knowledge it does not own (the public URL, say). */
export interface RegistryChecks {
  /** Why this machine's kernel command line would not fit, or undefined. */
  cmdline?: (mac: Mac, image: LoadedImage, kernelArgs: string) => string | undefined;
}

/** HTTP-style preconditions of a write (If-Match, If-None-Match), checked under the machine's lock. */
export interface WritePreconditions {
  ifMatch?: string | undefined;
  ifNoneMatch?: string | undefined;
}

/**
 * `cur` one revision later with `status` merged into its status (phone-home, deploy report); with
 * `flipToLocal`, boot once becomes local.
 */
function withStatus(cur: MachineRecord, flipToLocal: boolean, now: string, status: Record<string, unknown>): MachineRecord {
  return machineRecordSchema.parse({
    ...cur,
    boot: flipToLocal ? 'local' : cur.boot,
    updatedAt: now,
    revision: cur.revision + 1,
    status: { ...cur.status, ...status },
  });
}

/** If-None-Match: "*" means create only; a list of ETags means "only if it is none of these". */
function checkIfNoneMatch(cur: MachineRecord | undefined, ifNoneMatch: string): void {
  if (!cur) return;
  const tags = ifNoneMatch.split(',').map((s) => s.trim());
  if (tags.includes('*')) throw new RegistryError('precondition-failed', 'If-None-Match: * but the machine already exists');
  // weak comparison for If-None-Match (RFC 9110 13.1.2)
  const mine = etagOf(cur);
  if (tags.some((t) => t.replace(/^W\//, '') === mine)) throw new RegistryError('precondition-failed', 'If-None-Match: the machine still has that ETag');
}

/** Strong ETag: a digest of the whole stored record (changes with any edit, by API or by hand). */
export function etagOf(r: MachineRecord): string {
  return `"${createHash('sha256').update(JSON.stringify(r)).digest('base64url').slice(0, 22)}"`;
}
