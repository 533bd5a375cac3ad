import type { RequestHandler } from 'express';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry as PromRegistry } from 'prom-client';
import type { Mac } from '../../common/mac.js';
import type { BootDecision } from '../boot/booter.js';
import type { MachineEvent } from '../events/event-log.js';
import type { MachineRecord } from '../machines/model.js';
import type { TftpTransferEvent } from '../tftp/server.js';

/** The label a served boot script is counted under. */
export type ScriptDecision = 'ramboot' | 'once' | 'local' | 'refused' | 'discovered';

export function scriptDecision(d: BootDecision): ScriptDecision {
  if (d.kind === 'ramboot') return d.mode;
  if (d.kind === 'refuse') return 'refused';
  return d.machine?.discovered ? 'discovered' : 'local';
}

/** Machine states a gauge series always exists for (0 when none), so alerts see absent as 0. */
const STATES = ['registered', 'discovered', 'ready'] as const;

/** Boot stages, each measured from the end of the previous one (see BootStageClock). */
export type BootStage = 'image_fetch' | 'os_sshd_ready' | 'phone_home_ready';

/** At most this many boots in flight are timed; the oldest is forgotten past it (a flood of scripts cannot grow memory). */
const MAX_TIMED_BOOTS = 10_000;

interface BootClock {
  scriptAt: number;
  lastFetchAt?: number;
  imageDone?: number;
  sshdAt?: number;
}

/**
 * ramboot's Prometheus metrics, in a registry of its own (several servers in one process, as in the
 * tests, never share series). Labels never carry MACs, tokens or raw URLs: routes are express
 * patterns, images are names from manifests.
 */
export class Metrics {
  readonly registry = new PromRegistry();
  private readonly httpRequests: Counter<'route' | 'method' | 'status'>;
  private readonly httpDuration: Histogram<'route' | 'method'>;
  private readonly bootScripts: Counter<'decision'>;
  private readonly tftpTransfers: Counter<'result'>;
  private readonly tftpBytes: Counter;
  private readonly tftpRetransmits: Counter;
  private readonly imageBytes: Counter<'image' | 'file'>;
  private readonly dhcpReplies: Counter<'outcome' | 'client'>;
  private readonly artifactBytes: Counter<'artifact'>;
  /** deploy.started time per MAC, for the deploy stage. */
  private readonly deployStarted = new Map<string, number>();
  private readonly bootStage: Histogram<'stage'>;
  private readonly bootTotal: Histogram;
  private readonly bootEvents: Counter<'event'>;
  private readonly clocks = new Map<Mac, BootClock>();

  constructor(machines: () => readonly MachineRecord[]) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.httpRequests = new Counter({ name: 'ramboot_http_requests_total', help: 'HTTP requests by route pattern, method and status', labelNames: ['route', 'method', 'status'], registers });
    this.httpDuration = new Histogram({
      name: 'ramboot_http_request_duration_seconds',
      help: 'HTTP request duration until the response is finished',
      labelNames: ['route', 'method'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      registers,
    });
    this.bootScripts = new Counter({ name: 'ramboot_boot_scripts_total', help: 'Per-MAC iPXE scripts served, by boot decision', labelNames: ['decision'], registers });
    for (const d of ['ramboot', 'once', 'local', 'refused', 'discovered'] as const) this.bootScripts.inc({ decision: d }, 0);
    this.tftpTransfers = new Counter({ name: 'ramboot_tftp_transfers_total', help: 'TFTP transfers by result', labelNames: ['result'], registers });
    for (const r of ['ok', 'error', 'timeout', 'refused'] as const) this.tftpTransfers.inc({ result: r }, 0);
    this.tftpBytes = new Counter({ name: 'ramboot_tftp_bytes_total', help: 'Bytes sent over TFTP', registers });
    this.tftpRetransmits = new Counter({ name: 'ramboot_tftp_retransmits_total', help: 'TFTP DATA packets sent again after a timeout', registers });
    this.dhcpReplies = new Counter({ name: 'ramboot_dhcp_requests_total', help: 'proxyDHCP requests from netboot clients, by outcome (offer, ignored) and client (bios, efi, http, ipxe)', labelNames: ['outcome', 'client'], registers });
    this.artifactBytes = new Counter({ name: 'ramboot_artifact_bytes_total', help: 'Bytes of deploy artifacts served to booted machines', labelNames: ['artifact'], registers });
    this.imageBytes = new Counter({ name: 'ramboot_image_bytes_total', help: 'Bytes of image files served over HTTP', labelNames: ['image', 'file'], registers });
    this.bootStage = new Histogram({
      name: 'ramboot_boot_stage_duration_seconds',
      help: 'Boot stage durations: image_fetch (script -> last image file), os_sshd_ready (-> os.sshd.ready), phone_home_ready (-> phone-home.ready)',
      labelNames: ['stage'],
      buckets: [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600],
      registers,
    });
    this.bootTotal = new Histogram({ name: 'ramboot_boot_duration_seconds', help: 'From the boot script to phone-home.ready', buckets: [5, 10, 20, 30, 45, 60, 90, 120, 300, 600, 1800], registers });
    this.bootEvents = new Counter({ name: 'ramboot_timeline_events_total', help: 'Timeline events recorded, by name (os.* events counted as "os")', labelNames: ['event'], registers });
    new Gauge({
      name: 'ramboot_machines',
      help: 'Machines in the registry by state',
      labelNames: ['state'],
      registers,
      collect() {
        const n: Record<string, number> = Object.fromEntries(STATES.map((s) => [s, 0]));
        for (const m of machines()) n[m.status.state] = (n[m.status.state] ?? 0) + 1;
        for (const [state, v] of Object.entries(n)) this.set({ state }, v);
      },
    });
  }

  /** Counts every request under its express route pattern ("unmatched" when no route took it). */
  http(): RequestHandler {
    return (req, res, next) => {
      const end = this.httpDuration.startTimer();
      res.on('finish', () => {
        const route = routeLabel(req.baseUrl, (req as { route?: { path?: unknown } }).route?.path);
        const method = req.method;
        this.httpRequests.inc({ route, method, status: String(res.statusCode) });
        end({ route, method });
      });
      next();
    };
  }

  bootScript(d: BootDecision): void {
    this.bootScripts.inc({ decision: scriptDecision(d) });
  }

  tftp(ev: TftpTransferEvent): void {
    this.tftpTransfers.inc({ result: ev.outcome });
    this.tftpBytes.inc(ev.bytes);
    // the field is new in the TFTP server; older events may lack it
    if (typeof ev.retransmits === 'number' && ev.retransmits > 0) this.tftpRetransmits.inc(ev.retransmits);
  }

  /** A proxyDHCP outcome (the dhcp.offer / dhcp.ignored event the proxy records). */
  dhcp(ev: { event: string; data?: Record<string, unknown> }): void {
    const client = typeof ev.data?.['firmware'] === 'string' ? ev.data['firmware'] : 'unknown';
    this.dhcpReplies.inc({ outcome: ev.event === 'dhcp.offer' ? 'offer' : 'ignored', client });
  }

  /** A TFTP request dropped by the per-client or global transfer limit. */
  tftpRefused(): void {
    this.tftpTransfers.inc({ result: 'refused' });
  }

  imageSent(image: string, file: string, bytes: number): void {
    if (bytes > 0) this.imageBytes.inc({ image, file }, bytes);
  }

  /** Called with every recorded timeline event: boot stage clocks per MAC. */
  timelineEvent(mac: Mac, ev: MachineEvent): void {
    this.bootEvents.inc({ event: ev.event.startsWith('os.') ? 'os' : ev.event });
    const t = Date.parse(ev.time);
    if (!Number.isFinite(t)) return;
    if (this.deployEvent(mac, ev, t)) return;
    if (ev.event === 'ipxe.script') {
      this.clocks.delete(mac); // re-insert: Map order is the eviction order
      this.clocks.set(mac, { scriptAt: t });
      if (this.clocks.size > MAX_TIMED_BOOTS) this.clocks.delete(this.clocks.keys().next().value!);
      return;
    }
    const c = this.clocks.get(mac);
    if (!c) return;
    if (ev.event === 'image.fetch') {
      if (c.imageDone === undefined) c.lastFetchAt = t;
    } else if (ev.event === 'os.sshd.ready') {
      this.closeImageStage(c);
      if (c.sshdAt === undefined) {
        this.bootStage.observe({ stage: 'os_sshd_ready' }, sec(t - (c.imageDone ?? c.scriptAt)));
        c.sshdAt = t;
      }
    } else if (ev.event === 'phone-home.ready') {
      this.closeImageStage(c);
      this.bootStage.observe({ stage: 'phone_home_ready' }, sec(t - (c.sshdAt ?? c.imageDone ?? c.scriptAt)));
      this.bootTotal.observe(sec(t - c.scriptAt));
      this.clocks.delete(mac);
    }
  }

  /** Artifact bytes, and the deploy stage (deploy.started -> deploy.succeeded). True when the event was one of these. */
  private deployEvent(mac: Mac, ev: MachineEvent, t: number): boolean {
    if (ev.event === 'artifact.fetch') {
      const bytes = Number(ev.data?.['bytes'] ?? 0);
      const artifact = typeof ev.data?.['artifact'] === 'string' ? ev.data['artifact'] : 'unknown';
      if (Number.isFinite(bytes) && bytes > 0) this.artifactBytes.inc({ artifact }, bytes);
      return true;
    }
    if (ev.event === 'deploy.started') {
      this.deployStarted.delete(mac);
      this.deployStarted.set(mac, t);
      if (this.deployStarted.size > MAX_TIMED_BOOTS) this.deployStarted.delete(this.deployStarted.keys().next().value!);
      return true;
    }
    if (ev.event === 'deploy.succeeded' || ev.event === 'deploy.failed') {
      const started = this.deployStarted.get(mac);
      this.deployStarted.delete(mac);
      if (ev.event === 'deploy.succeeded' && started !== undefined) this.bootStage.observe({ stage: 'deploy' }, sec(t - started));
      return true;
    }
    return false;
  }

  /** The image stage ends at the last file fetched before the OS first speaks. */
  private closeImageStage(c: BootClock): void {
    if (c.imageDone !== undefined || c.lastFetchAt === undefined) return;
    c.imageDone = c.lastFetchAt;
    this.bootStage.observe({ stage: 'image_fetch' }, sec(c.lastFetchAt - c.scriptAt));
  }

  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

const sec = (ms: number) => Math.max(0, ms) / 1000;

/** The route label: the express pattern joined to its router's mount path; never the raw URL. */
export function routeLabel(baseUrl: string, path: unknown): string {
  if (typeof path !== 'string') return 'unmatched';
  return `${baseUrl}${path}` || '/';
}
