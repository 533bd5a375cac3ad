import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';

/**
 * A child process for tests: no shell, output captured as lines (and optionally to a file), `waitFor`
 * a line, `stop()` kills its whole process group. Every process is started under
 * `setpriv --pdeathsig KILL` so it dies even when the test process is killed with -9.
 */
export interface ManagedProcessOptions {
  /** Short label used in error messages. */
  name: string;
  /** Program and arguments; never passed through a shell. */
  argv: readonly string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Raw stdout+stderr is written here as it arrives. */
  logFile?: string;
  /** Wrap in `setpriv --pdeathsig KILL` (default true). */
  pdeathsig?: boolean;
  /** Lines kept in memory (default 20000; older ones are dropped from memory, not from logFile). */
  maxLines?: number;
}

export interface WaitOptions {
  /** Hard timeout (default 120 s). */
  timeoutMs?: number;
  /** Reject as soon as a line matches this (default: none here; qemu.ts sets its own). */
  failOn?: RegExp | null;
  /** Scan from the first captured line instead of after the previous successful match. */
  fromStart?: boolean;
  /**
   * Also test the unterminated last line (for prompts printed without a newline). Off by default: a
   * line still arriving could match a prefix of itself (`mac=(\S+)` matching "mac=52").
   */
  partialLines?: boolean;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

interface Waiter {
  re: RegExp;
  failOn: RegExp | null;
  partial: boolean;
  next: number;
  resolve: (m: RegExpMatchArray) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

// eslint-disable-next-line no-control-regex
const ANSI_RE = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\x1b[=>c78]|\x1b/g;
// eslint-disable-next-line no-control-regex
const CTRL_RE = /[\x00-\x08\x0b-\x1f\x7f]/g;

/** Console text as a human would match it: no ANSI escapes, no CR or other control characters. */
export function cleanConsoleText(s: string): string {
  return s.replace(ANSI_RE, '').replace(CTRL_RE, '');
}

const live = new Set<ManagedProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of live) p.killNow('SIGKILL');
  });
}

export class ManagedProcess {
  readonly name: string;
  readonly child: ChildProcess;
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<ExitInfo>;
  readonly logFile: string | undefined;
  private readonly lines: string[] = [];
  private dropped = 0;
  private readonly maxLines: number;
  private readonly partial: Record<'stdout' | 'stderr', string> = { stdout: '', stderr: '' };
  private readonly waiters = new Set<Waiter>();
  private readonly lineListeners = new Set<(line: string) => void>();
  private cursor = 0;
  private exitInfo: ExitInfo | undefined;
  private log: WriteStream | undefined;

  constructor(opts: ManagedProcessOptions) {
    if (opts.argv.length === 0 || opts.argv[0] === '') throw new Error('ManagedProcess: empty argv');
    this.name = opts.name;
    this.maxLines = opts.maxLines ?? 20000;
    this.logFile = opts.logFile;
    if (opts.logFile !== undefined) {
      mkdirSync(dirname(opts.logFile), { recursive: true });
      this.log = createWriteStream(opts.logFile, { flags: 'a' });
      this.log.on('error', () => undefined);
    }
    const argv = opts.pdeathsig === false ? [...opts.argv] : ['setpriv', '--pdeathsig', 'KILL', '--', ...opts.argv];
    const [cmd, ...args] = argv as [string, ...string[]];
    this.child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // own process group: stop() signals the whole tree
    });
    installExitHook();
    live.add(this);
    this.child.stdin?.on('error', () => undefined);
    this.child.stdout?.on('data', (b: Buffer) => this.onData('stdout', b));
    this.child.stderr?.on('data', (b: Buffer) => this.onData('stderr', b));
    this.exited = new Promise<ExitInfo>((resolve) => {
      this.child.on('error', (error) => {
        this.finish({ code: null, signal: null, error }, resolve);
      });
      this.child.on('close', (code, signal) => {
        this.finish({ code, signal }, resolve);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  /** All captured lines still in memory (cleaned), including the unterminated last one. */
  output(): string {
    return this.allLines().join('\n');
  }

  /** The last `n` lines (cleaned). */
  tail(n = 40): string {
    return this.allLines().slice(-n).join('\n');
  }

  /** Called with every complete line (cleaned). */
  onLine(fn: (line: string) => void): () => void {
    this.lineListeners.add(fn);
    return () => this.lineListeners.delete(fn);
  }

  /** Send text to the process's stdin (e.g. keys to a serial console). */
  write(text: string): void {
    this.child.stdin?.write(text);
  }

  /**
   * Resolves with the match of the first line matching `re`, scanning after the previous successful
   * match (or from the start). Rejects on a `failOn` line, on exit, or on timeout.
   */
  waitFor(re: RegExp, opts: WaitOptions = {}): Promise<RegExpMatchArray> {
    const timeoutMs = opts.timeoutMs ?? 120_000;
    return new Promise<RegExpMatchArray>((resolve, reject) => {
      const w: Waiter = {
        re: new RegExp(re.source, re.flags.replace('g', '')),
        failOn: opts.failOn ? new RegExp(opts.failOn.source, opts.failOn.flags.replace('g', '')) : null,
        partial: opts.partialLines ?? false,
        next: opts.fromStart ? this.dropped : Math.max(this.cursor, this.dropped),
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          reject(this.error(`timed out after ${timeoutMs} ms waiting for ${String(re)}`));
        }, timeoutMs),
      };
      this.waiters.add(w);
      this.check(w);
      if (this.waiters.has(w) && this.exitInfo !== undefined) this.rejectOnExit(w);
    });
  }

  /** SIGTERM to the process group, SIGKILL after `graceMs`; resolves when it has exited. */
  async stop(graceMs = 5000): Promise<ExitInfo> {
    if (this.exitInfo) return this.exitInfo;
    this.killNow('SIGTERM');
    const timer = setTimeout(() => this.killNow('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Signal the whole process group now (no waiting). */
  killNow(signal: NodeJS.Signals): void {
    const pid = this.child.pid;
    if (pid === undefined || this.exitInfo) return;
    try {
      process.kill(-pid, signal);
    } catch {
      try {
        this.child.kill(signal);
      } catch {
        // already gone
      }
    }
  }

  private allLines(): string[] {
    const out = [...this.lines];
    for (const k of ['stdout', 'stderr'] as const) {
      if (this.partial[k] !== '') out.push(cleanConsoleText(this.partial[k]));
    }
    return out;
  }

  private error(message: string): Error {
    return new Error(`${this.name}: ${message}\n--- last lines of ${this.name} output ---\n${this.tail(30)}`);
  }

  private onData(stream: 'stdout' | 'stderr', b: Buffer): void {
    this.log?.write(b);
    const text = this.partial[stream] + b.toString('latin1');
    const parts = text.split('\n');
    this.partial[stream] = parts.pop() ?? '';
    for (const raw of parts) {
      const line = cleanConsoleText(raw);
      this.lines.push(line);
      for (const fn of this.lineListeners) fn(line);
    }
    if (this.lines.length > this.maxLines) {
      const n = this.lines.length - this.maxLines;
      this.lines.splice(0, n);
      this.dropped += n;
    }
    for (const w of [...this.waiters]) this.check(w);
  }

  private check(w: Waiter): void {
    const total = this.dropped + this.lines.length;
    for (; w.next < total; w.next++) {
      if (w.next < this.dropped) continue;
      const line = this.lines[w.next - this.dropped] ?? '';
      if (this.testLine(w, line, w.next + 1)) return;
    }
    // Unterminated lines: fail-fast patterns always (e.g. "No bootable device." sits there for 60 s),
    // the wanted pattern only when asked.
    for (const k of ['stdout', 'stderr'] as const) {
      const p = this.partial[k];
      if (p !== '' && this.testLine(w, cleanConsoleText(p), total + 1, w.partial)) return;
    }
  }

  /** True when the waiter is settled. */
  private testLine(w: Waiter, line: string, cursorAfter: number, matchWanted = true): boolean {
    const m = matchWanted ? line.match(w.re) : null;
    if (m) {
      this.settle(w);
      this.cursor = cursorAfter;
      w.resolve(m);
      return true;
    }
    if (w.failOn && w.failOn.test(line)) {
      this.settle(w);
      w.reject(this.error(`fail-fast pattern ${String(w.failOn)} matched "${line.trim()}" while waiting for ${String(w.re)}`));
      return true;
    }
    return false;
  }

  private settle(w: Waiter): void {
    clearTimeout(w.timer);
    this.waiters.delete(w);
  }

  private rejectOnExit(w: Waiter): void {
    const e = this.exitInfo;
    this.settle(w);
    const how = e?.error ? `failed to start (${e.error.message})` : `exited (code ${e?.code ?? 'none'}, signal ${e?.signal ?? 'none'})`;
    w.reject(this.error(`${how} before ${String(w.re)} appeared`));
  }

  private finish(info: ExitInfo, resolve: (i: ExitInfo) => void): void {
    if (this.exitInfo) return;
    // flush unterminated lines so waiters and output() see them
    for (const k of ['stdout', 'stderr'] as const) {
      if (this.partial[k] !== '') {
        const line = cleanConsoleText(this.partial[k]);
        this.partial[k] = '';
        this.lines.push(line);
        for (const fn of this.lineListeners) fn(line);
      }
    }
    for (const w of [...this.waiters]) this.check(w);
    this.exitInfo = info;
    live.delete(this);
    this.log?.end();
    for (const w of [...this.waiters]) this.rejectOnExit(w);
    resolve(info);
  }
}
