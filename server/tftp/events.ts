/** What the TFTP server reports about each transfer: one log line and one `onTransfer` call. */
import type { Logger } from '../../common/log.js';

export interface TftpTransferEvent {
  client: { address: string; port: number };
  file: string;
  options: Record<string, string | number>;
  bytes: number;
  durationMs: number;
  /** Packets sent again: DATA blocks and OACKs (retransmission timer, gaps the client reported, repeated requests). */
  retransmits: number;
  outcome: 'ok' | 'error' | 'timeout' | 'refused';
  error?: string;
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
