import type { Teardown } from '../test/lib/teardown.js';
import { progress } from './lib.js';

/** Teardown collector standing in for a tap test, for benchmarks that reuse the test harness. */
export class BenchScope implements Teardown {
  private fns: Array<() => unknown> = [];
  teardown(fn: () => unknown): void { this.fns.push(fn); }
  comment(...args: unknown[]): void { progress(args.map(String).join(' ')); }
  passing(): boolean { return true; }
  async close(): Promise<void> {
    for (const fn of this.fns.reverse()) await fn();
    this.fns = [];
  }
}
