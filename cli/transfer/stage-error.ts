import type { TransferStep } from './events.js';

/** A transfer failed at a stage: reported as `transfer.failed {stage, reason}` and one line. */
export class StageError extends Error {
  override name = 'StageError';
  constructor(
    readonly stage: TransferStep | 'connect' | 'preflight',
    message: string,
  ) {
    super(message);
  }
}
