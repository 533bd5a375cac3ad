import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export interface LogOptions {
  level?: string;
  /** Where JSON lines go; stdout by default. Tests pass a stream to capture them. */
  destination?: DestinationStream;
}

/** One JSON line per event. Boot-related lines carry `mac`. */
export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? process.env['RAMBOOT_LOG_LEVEL'] ?? 'info';
  return pino(
    {
      level,
      base: { app: 'ramboot' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    opts.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** A logger that discards everything (unit tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
