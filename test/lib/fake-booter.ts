import type { BootDecision, Booter, BootRequest } from '../../server/boot/booter.js';

/** A Booter that answers what the test says and remembers what it was asked (handler tests). */
export class FakeBooter implements Booter {
  readonly asked: BootRequest[] = [];
  constructor(private readonly answer: (req: BootRequest) => BootDecision) {}

  async decide(req: BootRequest): Promise<BootDecision> {
    this.asked.push(req);
    return this.answer(req);
  }
}
