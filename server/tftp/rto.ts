/**
 * Retransmission timeout in the style of RFC 6298: follows the smoothed round-trip time and its
 * variance, doubles on each timeout (backoff), and stays within [minMs, maxMs]. Callers apply Karn's
 * rule: no sample from a window that was sent more than once.
 */
export interface RtoConfig {
  initialMs: number;
  minMs: number;
  maxMs: number;
}

export class RtoEstimator {
  private srtt = -1;
  private rttvar = 0;
  private rto: number;

  constructor(private readonly cfg: RtoConfig) {
    this.rto = cfg.initialMs;
  }

  /** The current timeout, ms. */
  get ms(): number {
    return this.rto;
  }

  /** The longest timeout: the client's own retry timer is expected to be no longer than this. */
  get maxMs(): number {
    return this.cfg.maxMs;
  }

  sample(ms: number): void {
    if (this.srtt < 0) {
      this.srtt = ms;
      this.rttvar = ms / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - ms);
      this.srtt = 0.875 * this.srtt + 0.125 * ms;
    }
    this.rto = Math.min(this.cfg.maxMs, Math.max(this.cfg.minMs, this.srtt + 4 * this.rttvar));
  }

  backoff(): void {
    this.rto = Math.min(this.rto * 2, this.cfg.maxMs);
  }
}
