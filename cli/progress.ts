/** A progress line on stderr: bytes, percent, rate, ETA. Redrawn in place on a TTY, else a line every few seconds. */

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export interface ProgressState {
  label: string;
  bytes: number;
  total?: number;
  rateBps?: number;
  etaSeconds?: number;
}

/** One progress line: "label [#####-----]  45% 1.2 GiB / 2.6 GiB  85.0 MiB/s  ETA 0:17". */
export function progressLine(p: ProgressState, width = 24): string {
  const parts = [p.label];
  if (p.total && p.total > 0) {
    const frac = Math.min(1, p.bytes / p.total);
    const filled = Math.round(frac * width);
    parts.push(`[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}%`);
    parts.push(`${formatBytes(p.bytes)} / ${formatBytes(p.total)}`);
  } else parts.push(formatBytes(p.bytes));
  if (p.rateBps !== undefined) parts.push(`${formatBytes(p.rateBps)}/s`);
  const eta = p.etaSeconds ?? (p.total && p.rateBps ? (p.total - p.bytes) / p.rateBps : undefined);
  if (eta !== undefined) parts.push(`ETA ${formatDuration(eta)}`);
  return parts.join('  ');
}

export class ProgressBar {
  private lastDraw = 0;
  private drawn = false;

  constructor(
    private readonly out: NodeJS.WriteStream = process.stderr,
    /** Minimum ms between two lines when the output is not a terminal. */
    private readonly plainEveryMs = 5000,
  ) {}

  update(p: ProgressState, force = false): void {
    const now = Date.now();
    const line = progressLine(p);
    if (this.out.isTTY) {
      if (!force && now - this.lastDraw < 100) return;
      this.out.write(`\r\x1b[2K${line}`);
      this.drawn = true;
    } else {
      if (!force && now - this.lastDraw < this.plainEveryMs) return;
      this.out.write(`${line}\n`);
    }
    this.lastDraw = now;
  }

  /** End the in-place line (before printing anything else). */
  done(): void {
    if (this.drawn && this.out.isTTY) this.out.write('\n');
    this.drawn = false;
  }
}
