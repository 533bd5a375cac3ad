import type { CopyProgress } from './copy.js';

/**
 * Timeline events of a transfer, posted to every machine involved (the target; the source too when
 * it is a registered machine): transfer.planned, .started, .step, .progress (at most one per
 * PROGRESS_EVERY_MS), .succeeded, .failed. Posting never fails the transfer: a server that does not
 * answer costs a warning (once per machine).
 */
export type TransferEventName = 'transfer.planned' | 'transfer.started' | 'transfer.progress' | 'transfer.step' | 'transfer.succeeded' | 'transfer.failed';

export const TRANSFER_STEPS = ['inspect', 'plan', 'partition', 'format', 'mount', 'copy', 'fix', 'bootloader', 'initramfs', 'finish'] as const;
export type TransferStep = (typeof TRANSFER_STEPS)[number];

export const PROGRESS_EVERY_MS = 3000;

export interface TimelineMachine {
  mac: string;
  role: 'source' | 'target';
  /** The other side, as the user named it (a MAC or a host). */
  peer: string;
}

export interface EventBody {
  event: TransferEventName;
  message: string;
  level?: 'info' | 'warning' | 'error';
  data?: Record<string, unknown>;
}

/** The server takes messages and data strings of at most 500 characters: longer ones are cut. */
export const MAX_TEXT = 500;

export function boundedBody(b: EventBody): EventBody {
  const cut = (s: string): string => (s.length > MAX_TEXT ? `${s.slice(0, MAX_TEXT - 1)}…` : s);
  const data = b.data ? Object.fromEntries(Object.entries(b.data).map(([k, v]) => [k, typeof v === 'string' ? cut(v) : v])) : undefined;
  return { ...b, message: cut(b.message), ...(data ? { data } : {}) };
}

export type PostEvent = (mac: string, body: EventBody) => Promise<unknown>;

export class Timelines {
  private lastProgress = 0;
  private readonly warned = new Set<string>();
  private pending: Promise<unknown>[] = [];

  constructor(
    private readonly post: PostEvent,
    private readonly machines: readonly TimelineMachine[],
    private readonly warn: (msg: string) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** Posts to every machine; waits for the posts (they are quick) but never throws. */
  async emit(event: TransferEventName, message: string, data: Record<string, unknown> = {}, level?: EventBody['level']): Promise<void> {
    await Promise.all(this.machines.map((m) => this.one(m, boundedBody({ event, message, ...(level ? { level } : {}), data: { role: m.role, peer: m.peer, ...data } }))));
  }

  step(step: TransferStep, message: string): Promise<void> {
    return this.emit('transfer.step', message, { step });
  }

  /** Throttled; does not wait for the posts (the copy goes on). `force` for the last one. */
  progress(p: CopyProgress, force = false): void {
    const t = this.now();
    if (!force && t - this.lastProgress < PROGRESS_EVERY_MS) return;
    this.lastProgress = t;
    const data = { bytes: p.bytes, totalBytes: p.totalBytes, files: p.files, rate: p.rate, etaSeconds: p.etaSeconds ?? null, percent: p.percent, mountpoint: p.mountpoint };
    const msg = `copying ${p.mountpoint}: ${p.percent.toFixed(0)}%`;
    this.pending.push(this.emit('transfer.progress', msg, data));
    if (this.pending.length > 20) this.pending = this.pending.slice(-20);
  }

  /** Waits for progress posts still in flight. */
  async flush(): Promise<void> {
    await Promise.all(this.pending);
    this.pending = [];
  }

  private async one(m: TimelineMachine, body: EventBody): Promise<void> {
    try {
      await this.post(m.mac, body);
    } catch (e) {
      if (!this.warned.has(m.mac)) {
        this.warned.add(m.mac);
        this.warn(`cannot post ${body.event} to the timeline of ${m.mac}: ${(e as Error).message}`);
      }
    }
  }
}
