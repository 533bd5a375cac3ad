/**
 * One read transfer: sends `data` to a client over a socket already connected to the client's TID.
 * Lock-step windows (RFC 7440; windowsize 1 is plain RFC 1350). An ACK that advances the window sends
 * the next window at once; a duplicate or stale ACK is ignored (no Sorcerer's Apprentice storm); a lost
 * window is resent after an adaptive retransmission timeout (see rto.ts).
 *
 * Retransmissions are budgeted, so a request from an address that never answers (a spoofed source, a
 * flood) draws a bounded number of packets:
 *  - until the client's first ACK, the first reply (OACK or first window) is resent on our timer at most
 *    `firstReply` times; the client's own retries (its RRQ again) are answered one for one;
 *  - after that, one window is resent at most `perWindow` times while no ACK advances it;
 *  - the whole transfer resends at most `totalBytes` bytes.
 * After the last allowed resend the transfer waits at least the longest RTO in silence (so the client's
 * own timer can fire and its retry get through), then ends.
 */
import type { Socket } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { encodeDataHeader, encodeError, parseAck, parseError, ERR_UNDEFINED, OP_ERROR } from './packet.js';
import { RtoEstimator, type RtoConfig } from './rto.js';
import type { BlockSource } from './source.js';

export type { RtoConfig } from './rto.js';

/** A repeated RRQ sooner than this after our reply is a network duplicate, not a client retry. */
const REPEAT_GAP_MS = 250;

export interface RetransmitBudget {
  /** Timer-driven resends of the first reply (OACK or first window) while the client has ACKed nothing. */
  firstReply: number;
  /** Timer-driven resends of one window while no ACK advances it (once the client has ACKed something). */
  perWindow: number;
  /** Bytes (UDP payload) resent over the whole transfer, for any reason. */
  totalBytes: number;
}

export interface TransferConfig {
  socket: Socket;
  source: BlockSource;
  blksize: number;
  windowsize: number;
  /** Sent first and acknowledged with ACK 0 when options were negotiated. */
  oack: Buffer | null;
  rto: RtoConfig;
  /** Give up when no ACK has advanced the transfer for this long. */
  giveUpMs: number;
  budget: RetransmitBudget;
  onDone: (result: TransferResult) => void;
}

export interface TransferResult {
  outcome: 'ok' | 'error' | 'timeout';
  error?: string;
  /** Bytes the client acknowledged. */
  bytes: number;
  /** Packets sent again (DATA blocks and OACKs). */
  retransmits: number;
  /** UDP payload bytes sent, retransmissions included. */
  sentBytes: number;
}

export class Transfer {
  private readonly cfg: TransferConfig;
  private readonly lastBlock: number;
  private readonly rto: RtoEstimator;
  /** Highest absolute block number the client acknowledged (0 = OACK or nothing yet). */
  private base = 0;
  /** Highest absolute block number sent in the current window. */
  private sentHigh = 0;
  /** Highest block number ever sent: sending one at or below it again is a retransmission. */
  private highestSent = 0;
  private oackSent = false;
  /** The client has acknowledged something (ACK 0 of the OACK, or a block): it is a real peer. */
  private acked = false;
  private retransmits = 0;
  private resentBytes = 0;
  private sentBytes = 0;
  /** Timer-driven resends since the last ACK that advanced the transfer. */
  private timerResends = 0;
  private windowSentAt = 0;
  private windowRetransmitted = false;
  private lastProgress = performance.now();
  private timer: NodeJS.Timeout | null = null;
  private armedMs = 0;
  private done = false;
  /** An OACK is out and ACK 0 has not come back yet. */
  private oackPending: boolean;
  private readonly onTimeout = (): void => this.timeout();

  constructor(cfg: TransferConfig) {
    this.cfg = cfg;
    this.lastBlock = Math.floor(cfg.source.size / cfg.blksize) + 1;
    this.rto = new RtoEstimator(cfg.rto);
    this.oackPending = cfg.oack !== null;
  }

  start(): void {
    this.cfg.socket.on('message', (msg: Buffer) => this.onMessage(msg));
    this.cfg.socket.on('error', (err: NodeJS.ErrnoException) => {
      // The client's port is gone (ICMP port unreachable): stop. Anything else (ENOBUFS, EPERM from a
      // firewall, EAGAIN) is treated like a lost packet: the retransmission timer recovers or gives up.
      if (err.code === 'ECONNREFUSED') this.finish({ outcome: 'error', error: 'client port unreachable' });
    });
    this.transmit();
  }

  /**
   * The client repeated its request: our first reply was lost, resend it now (only before any ACK).
   * A copy that arrives within REPEAT_GAP_MS of our reply is a network duplicate of the same request,
   * not a retransmission: answering it would hand the client a duplicate OACK, which atftp aborts on.
   * Each answer is one packet for one request, so it does not use the timer's resend budget.
   */
  onRepeatedRequest(): void {
    if (this.done || this.base !== 0) return;
    if (performance.now() - this.windowSentAt < REPEAT_GAP_MS) return;
    this.windowRetransmitted = true;
    this.transmit();
  }

  /** Every block has been sent and only the final ACK is missing. */
  get awaitingFinalAck(): boolean {
    return !this.done && !this.oackPending && this.sentHigh === this.lastBlock;
  }

  abort(reason: string): void {
    this.finish({ outcome: 'error', error: reason });
  }

  /** Sends the OACK or the current window (again, if it was sent before) and arms the timer. */
  private transmit(): void {
    const resend = this.resendCost();
    if (resend.packets > 0) {
      if (this.resentBytes + resend.bytes > this.cfg.budget.totalBytes) {
        // Only a peer that has ACKed is told: an ERROR to an address that never answered could be
        // a packet reflected at a spoofed victim.
        this.finish({ outcome: 'error', error: `retransmission budget spent (${this.resentBytes} bytes resent)`, tell: this.acked });
        return;
      }
      this.retransmits += resend.packets;
      this.resentBytes += resend.bytes;
    }
    this.windowSentAt = performance.now();
    if (this.oackPending && this.cfg.oack) {
      this.cfg.socket.send(this.cfg.oack);
      this.sentBytes += this.cfg.oack.length;
      this.oackSent = true;
    } else {
      try {
        this.sendWindow();
      } catch (err) {
        this.finish({ outcome: 'error', error: `read: ${(err as Error).message}` });
        return;
      }
    }
    this.arm();
  }

  /** Packets and bytes of the next transmit() that were sent before. */
  private resendCost(): { packets: number; bytes: number } {
    if (this.oackPending && this.cfg.oack) return this.oackSent ? { packets: 1, bytes: this.cfg.oack.length } : { packets: 0, bytes: 0 };
    const high = Math.min(this.base + this.cfg.windowsize, this.lastBlock, this.highestSent);
    let bytes = 0;
    for (let b = this.base + 1; b <= high; b++) bytes += 4 + this.payloadBytes(b);
    return { packets: Math.max(0, high - this.base), bytes };
  }

  private payloadBytes(block: number): number {
    const { blksize, source } = this.cfg;
    return Math.max(0, Math.min(blksize, source.size - (block - 1) * blksize));
  }

  private sendWindow(): void {
    const { socket, source, blksize, windowsize } = this.cfg;
    const high = Math.min(this.base + windowsize, this.lastBlock);
    for (let b = this.base + 1; b <= high; b++) {
      const payload = source.slice((b - 1) * blksize, blksize);
      socket.send([encodeDataHeader(b), payload]);
      this.sentBytes += 4 + payload.length;
    }
    this.sentHigh = high;
    this.highestSent = Math.max(this.highestSent, high);
  }

  private get resendLimit(): number {
    return this.acked ? this.cfg.budget.perWindow : this.cfg.budget.firstReply;
  }

  private arm(): void {
    // Two waits are at least the longest RTO:
    //  - An unanswered OACK is left to the client first: it re-sends its RRQ (OACK lost) or its ACK 0
    //    (ACK lost) on its own timer. Re-sending the OACK early would, when only the ACK was lost, hand
    //    the client a second OACK, which atftp treats as fatal.
    //  - The wait after the last allowed resend: a silent gap in which the client's own timer fires and
    //    its retry can still reach this transfer before it ends.
    const last = this.timerResends >= this.resendLimit;
    const rto = this.oackPending || last ? Math.max(this.rto.ms, this.rto.maxMs) : this.rto.ms;
    // Re-arming happens once per window: refresh() the existing timer while the (10 ms-rounded)
    // timeout is unchanged instead of allocating a new one.
    // Never past the give-up point: a long backoff would otherwise keep a dead transfer's slot.
    const untilGiveUp = this.cfg.giveUpMs - (performance.now() - this.lastProgress);
    const ms = Math.ceil(Math.max(10, Math.min(rto, untilGiveUp)) / 10) * 10;
    if (this.timer && ms === this.armedMs) {
      this.timer.refresh();
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.armedMs = ms;
    this.timer = setTimeout(this.onTimeout, ms);
  }

  private onMessage(msg: Buffer): void {
    if (this.done) return;
    const ack = parseAck(msg);
    if (ack === null) {
      if (msg.length >= 2 && msg.readUInt16BE(0) === OP_ERROR) {
        const err = parseError(msg);
        this.finish({ outcome: 'error', error: `client error ${err?.code ?? '?'}: ${err?.message ?? ''}` });
      }
      return; // anything else from the client's TID is ignored
    }
    // Map the 16-bit block number (it rolls over to 0) onto the window in flight.
    const now = performance.now();
    if (this.oackPending) {
      if (ack !== 0) return;
      this.oackPending = false;
      if (!this.windowRetransmitted) this.rto.sample(now - this.windowSentAt);
      this.progressed(now);
      this.transmit();
      return;
    }
    const delta = (ack - (this.base & 0xffff)) & 0xffff;
    const abs = this.base + delta;
    if (delta === 0 || abs > this.sentHigh) return; // duplicate or stale ACK: never triggers a resend
    if (abs === this.sentHigh && !this.windowRetransmitted) this.rto.sample(now - this.windowSentAt);
    this.base = abs;
    this.progressed(now);
    if (this.base >= this.lastBlock) {
      this.finish({ outcome: 'ok' });
      return;
    }
    this.transmit(); // the next window; from the gap on if the ACK fell inside the window
  }

  private progressed(now: number): void {
    this.acked = true;
    this.lastProgress = now;
    this.windowRetransmitted = false;
    this.timerResends = 0;
  }

  private timeout(): void {
    this.timer = null;
    if (this.done) return;
    if (performance.now() - this.lastProgress >= this.cfg.giveUpMs) {
      this.finish({ outcome: 'timeout', error: `no ACK for ${this.cfg.giveUpMs} ms` });
      return;
    }
    const limit = this.resendLimit;
    if (this.timerResends >= limit) {
      const what = this.acked ? 'window' : this.oackPending ? 'OACK' : 'first block';
      this.finish({ outcome: 'timeout', error: `no ACK for the ${what} after ${limit} retransmission(s)` });
      return;
    }
    this.timerResends++;
    this.rto.backoff();
    this.windowRetransmitted = true;
    this.transmit();
  }

  private finish(r: { outcome: TransferResult['outcome']; error?: string; tell?: boolean }): void {
    if (this.done) return;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (r.tell && r.error !== undefined) this.cfg.socket.send(encodeError(ERR_UNDEFINED, r.error));
    const { size } = this.cfg.source;
    const bytes = r.outcome === 'ok' ? size : Math.min(this.base * this.cfg.blksize, size);
    this.cfg.source.close();
    const result: TransferResult = { outcome: r.outcome, bytes, retransmits: this.retransmits, sentBytes: this.sentBytes };
    if (r.error !== undefined) result.error = r.error;
    this.cfg.onDone(result);
  }
}
