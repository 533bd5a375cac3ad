/**
 * rsync --info=progress2 lines (written to stdout, separated by \r):
 *   "    315,845,600  21%   60.71MB/s    0:00:04 (xfr#1, to-chk=41/43)"
 * bytes so far, percent of the whole transfer, rate (rsync's kB/MB/GB are 1024-based), time (the
 * ETA while running; the elapsed time on the line that ends a file), then, after a file, how many
 * were transferred and how many of the total are left to check.
 */
export interface Progress2 {
  bytes: number;
  percent: number;
  /** bytes per second */
  rate: number;
  /** ETA while running, elapsed on a file's final line (see `final`). */
  seconds: number;
  /** Files transferred so far (xfr#N), when the line says. */
  transferred?: number;
  /** Files checked so far (total - to-chk), when the line says. */
  checked?: number;
  /** Total files of the transfer, when the line says. */
  totalFiles?: number;
  /** The line ended a file (its time field is the elapsed time, not an ETA). */
  final: boolean;
}

const LINE = /^\s*([\d,.]+)\s+(\d{1,3})%\s+([\d.,]+)([kMGT]?B)\/s\s+(\d+):(\d{2}):(\d{2})(?:\s+\(xfr#(\d+),\s+(?:to|ir)-chk=(\d+)\/(\d+)\))?\s*$/;
const UNIT: Record<string, number> = { B: 1, kB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };

/** One progress2 line, or undefined for anything else (file names, messages, blank). */
export function parseProgress2(line: string): Progress2 | undefined {
  const m = LINE.exec(line);
  if (!m) return undefined;
  const bytes = Number(m[1]!.replace(/[,.]/g, ''));
  const rate = Number(m[3]!.replace(',', '.')) * (UNIT[m[4]!] ?? 1);
  const seconds = Number(m[5]) * 3600 + Number(m[6]) * 60 + Number(m[7]);
  const p: Progress2 = { bytes, percent: Number(m[2]), rate: Math.round(rate), seconds, final: m[8] !== undefined };
  if (m[8] !== undefined) {
    p.transferred = Number(m[8]);
    p.totalFiles = Number(m[10]);
    p.checked = Number(m[10]) - Number(m[9]);
  }
  return p;
}
