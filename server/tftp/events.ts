/**
 * What the TFTP server reports: for each transfer one log line and one `onTransfer` call; for each
 * request dropped by a transfer limit one `onRefused` call (and a log line at most every 10 s).
 */
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../common/log.js';

export interface TftpTransferEvent {
  client: { address: string; port: number };
  file: string;
  options: Record<string, string | number>;
  bytes: number;
  durationMs: number;
  /** Packets sent again: DATA blocks and OACKs (retransmission timer, gaps the client reported, repeated requests). */
  retransmits: number;
  /** UDP payload bytes the transfer sent, retransmissions included (0 for a refused request). */
  sentBytes: number;
  outcome: 'ok' | 'error' | 'timeout' | 'refused';
  error?: string;
}

/** A request dropped without an answer because a transfer limit was reached. */
export interface TftpRefusedEvent {
  client: { address: string; port: number };
  file: string;
  reason: 'per-client limit' | 'server limit';
  /** Transfers running for this client address, and in total, when the request came. */
  clientTransfers: number;
  transfers: number;
}

/** Printable, bounded rendering of a client-supplied string for logs. */
export function printable(name: string): string {
  return name.replace(/[^\x20-\x7e]/g, '?').slice(0, 300);
}

/**
 * EDK2 (OVMF) first asks for tsize alone and aborts with ERROR 8 once it has the OACK. That is routine,
 * not a failed transfer.
 */
export function isSizeProbe(ev: TftpTransferEvent): boolean {
  return ev.outcome === 'error' && ev.bytes === 0 && /^client error 8:/.test(ev.error ?? '');
}

export class TransferReporter {
  constructor(private readonly logger: Logger, private readonly onTransfer?: (ev: TftpTransferEvent) => void) {}

  /** Logs `ev` (info when ok or a size probe, warn otherwise) and hands it to `onTransfer`. */
  transfer(ev: TftpTransferEvent): void {
    const level = ev.outcome === 'ok' || isSizeProbe(ev) ? 'info' : 'warn';
    this.logger[level]({ event: 'tftp.transfer', ...ev }, `tftp ${ev.outcome} ${ev.file}`);
    try {
      this.onTransfer?.(ev);
    } catch (err) {
      this.logger.error({ event: 'tftp.on_transfer_failed', err: String(err) });
    }
  }
}

/** Time between `tftp.refused` log lines: a flood must not turn into a log flood. */
const REFUSAL_LOG_INTERVAL_MS = 10_000;

export class RefusalReporter {
  private lastLogAt = -Infinity;
  private unlogged = 0;

  constructor(private readonly logger: Logger, private readonly onRefused?: (ev: TftpRefusedEvent) => void) {}

  /** Hands `ev` to `onRefused`; logs it at warn unless a line went out in the last 10 s (then it is counted in the next one). */
  refused(ev: TftpRefusedEvent): void {
    try {
      this.onRefused?.(ev);
    } catch (err) {
      this.logger.error({ event: 'tftp.on_refused_failed', err: String(err) });
    }
    const now = performance.now();
    if (now - this.lastLogAt < REFUSAL_LOG_INTERVAL_MS) {
      this.unlogged++;
      return;
    }
    this.logger.warn({ event: 'tftp.refused', ...ev, unloggedBefore: this.unlogged }, `tftp refused ${ev.client.address}: ${ev.reason}`);
    this.lastLogAt = now;
    this.unlogged = 0;
  }
}
