/** One JSON log line of a ramboot server, as tests read it. */
export type LogLine = Record<string, unknown> & { event?: string; msg?: string };
