/**
 * One read transfer: sends `data` to a client over a socket already connected to the client's TID.
 * Lock-step windows (RFC 7440; windowsize 1 is plain RFC 1350). An ACK that advances the window sends
 * the next window at once; a duplicate or stale ACK is ignored (no Sorcerer's Apprentice storm); a lost
 * window is resent after an adaptive retransmission timeout (RFC 6298 style, Karn's rule, backoff).
 */
import type { Socket } from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { encodeDataHeader, parseAck, parseError, OP_ERROR } from './packet.js';
import type { BlockSource } from './source.js';

/** A repeated RRQ sooner than this after our reply is a network duplicate, not a client retry. */
const REPEAT_GAP_MS = 250;

export interface RtoConfig {
  initialMs: number;
  minMs: number;
  maxMs: number;
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
  onDone: (result: TransferResult) => void;
}

export interface TransferResult {
  outcome: 'ok' | 'error' | 'timeout';
  error?: string;
  /** Bytes the client acknowledged. */
  bytes: number;
  retransmits: number;
}

export class Transfer {
  private readonly cfg: TransferConfig;
  private readonly lastBlock: number;
  /** Highest absolute block number the client acknowledged (0 = OACK or nothing yet). */
  private base = 0;
  /** Highest absolute block number sent in the current window. */
  private sentHigh = 0;
  private retransmits = 0;
  private windowSentAt = 0;
  private windowRetransmitted = false;
  private lastProgress = performance.now();
  private srtt = -1;
  private rttvar = 0;
  private rto: number;
  private timer: NodeJS.Timeout | null = null;
  private armedMs = 0;
  private done = false;
  /** An OACK is out and ACK 0 has not come back yet. */
  private oackPending: boolean;
  private readonly onTimeout = (): void => this.timeout();

  constructor(cfg: TransferConfig) {
    this.cfg = cfg;
    this.lastBlock = Math.floor(cfg.source.size / cfg.blksize) + 1;
    this.rto = cfg.rto.initialMs;
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
   */
  onRepeatedRequest(): void {
    if (this.done || this.base !== 0) return;
    if (performance.now() - this.windowSentAt < REPEAT_GAP_MS) return;
    this.windowRetransmitted = true;
    this.retransmits++;
    this.transmit();
  }

  /** Every block has been sent and only the final ACK is missing. */
  get awaitingFinalAck(): boolean {
    return !this.done && !this.oackPending && this.sentHigh === this.lastBlock;
  }

  abort(reason: string): void {
    this.finish({ outcome: 'error', error: reason });
  }

  private transmit(): void {
    const { socket, oack } = this.cfg;
    this.windowSentAt = performance.now();
    if (this.oackPending && oack) {
      socket.send(oack);
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

  private sendWindow(): void {
    const { socket, source, blksize, windowsize } = this.cfg;
    const high = Math.min(this.base + windowsize, this.lastBlock);
    for (let b = this.base + 1; b <= high; b++) {
      socket.send([encodeDataHeader(b), source.slice((b - 1) * blksize, blksize)]);
    }
    this.sentHigh = high;
  }

  private arm(): void {
    // An unanswered OACK is left to the client first: it re-sends its RRQ (OACK lost) or its ACK 0
    // (ACK lost) on its own timer. Re-sending the OACK early would, when only the ACK was lost, hand
    // the client a second OACK, which atftp treats as fatal. So the OACK waits the longest RTO.
    const rto = this.oackPending ? Math.max(this.rto, this.cfg.rto.maxMs) : this.rto;
    // Re-arming happens once per window: refresh() the existing timer while the (10 ms-rounded)
    // timeout is unchanged instead of allocating a new one.
    const ms = Math.ceil(rto / 10) * 10;
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
      if (!this.windowRetransmitted) this.sampleRtt(now - this.windowSentAt);
      this.lastProgress = now;
      this.windowRetransmitted = false;
      this.transmit();
      return;
    }
    const delta = (ack - (this.base & 0xffff)) & 0xffff;
    const abs = this.base + delta;
    if (delta === 0 || abs > this.sentHigh) return; // duplicate or stale ACK: never triggers a resend
    if (abs === this.sentHigh && !this.windowRetransmitted) this.sampleRtt(now - this.windowSentAt);
    this.base = abs;
    this.lastProgress = now;
    this.windowRetransmitted = false;
    if (this.base >= this.lastBlock) {
      this.finish({ outcome: 'ok' });
      return;
    }
    if (abs < this.sentHigh) this.retransmits += this.sentHigh - abs; // client saw a gap
    this.transmit();
  }

  private sampleRtt(sample: number): void {
    if (this.srtt < 0) {
      this.srtt = sample;
      this.rttvar = sample / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - sample);
      this.srtt = 0.875 * this.srtt + 0.125 * sample;
    }
    const { minMs, maxMs } = this.cfg.rto;
    this.rto = Math.min(maxMs, Math.max(minMs, this.srtt + 4 * this.rttvar));
  }

  private timeout(): void {
    this.timer = null;
    if (this.done) return;
    if (performance.now() - this.lastProgress >= this.cfg.giveUpMs) {
      this.finish({ outcome: 'timeout', error: `no ACK for ${this.cfg.giveUpMs} ms` });
      return;
    }
    this.rto = Math.min(this.rto * 2, this.cfg.rto.maxMs);
    this.retransmits += Math.max(1, this.sentHigh - this.base);
    this.windowRetransmitted = true;
    this.transmit();
  }

  private finish(r: { outcome: TransferResult['outcome']; error?: string }): void {
    if (this.done) return;
    this.done = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const { size } = this.cfg.source;
    const bytes = r.outcome === 'ok' ? size : Math.min(this.base * this.cfg.blksize, size);
    this.cfg.source.close();
    const result: TransferResult = { outcome: r.outcome, bytes, retransmits: this.retransmits };
    if (r.error !== undefined) result.error = r.error;
    this.cfg.onDone(result);
  }
}
