import type { Booter, BootDecision, BootRequest } from '../boot/booter.js';
import type { Metrics } from './metrics.js';

/** A Booter that counts its decisions: one decision per per-MAC script served. */
export class MeteredBooter implements Booter {
  constructor(
    private readonly inner: Booter,
    private readonly metrics: Metrics,
  ) {}

  async decide(req: BootRequest): Promise<BootDecision> {
    const d = await this.inner.decide(req);
    this.metrics.bootScript(d);
    return d;
  }
}
