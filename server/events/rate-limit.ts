/**
 * Per-key token buckets: at most `burst` events at once and `perMinute` on average. Used for
 * timeline events that unauthenticated requests cause (a script served, a TFTP transfer, an image
 * fetch), so a flood of them cannot push the admin's and the OS's events out of a bounded timeline.
 */
export class EventBudget {
  private buckets = new Map<string, { tokens: number; at: number; dropped: number }>();

  constructor(
    private readonly burst = 30,
    private readonly perMinute = 20,
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes one token for `key`. Returns how many were dropped before this one, or undefined when this one is dropped too. */
  take(key: string): number | undefined {
    const t = this.now();
    let b = this.buckets.get(key);
    if (!b) {
      b = { tokens: this.burst, at: t, dropped: 0 };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) * this.perMinute) / 60_000);
    b.at = t;
    if (b.tokens < 1) {
      b.dropped++;
      return undefined;
    }
    b.tokens -= 1;
    const dropped = b.dropped;
    b.dropped = 0;
    return dropped;
  }

  forget(key: string): void {
    this.buckets.delete(key);
  }
}
