import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { ERRNO, type TransferEnd } from './sendfile-native.js';
import type { WorkerJob, WorkerReply } from './sendfile-worker.js';

/**
 * N sendfile worker processes (N = cores). On loopback and fast links the kernel's TCP work for a
 * sendfile runs in the sending process: one Node process tops out at one core, nginx spreads it over
 * its workers. The server keeps HTTP (parsing, authorization, headers, keep-alive decisions); a worker
 * gets the socket's fd (not a Socket: it never reads) and the resolved path and only moves the bytes;
 * keep-alive works as in-process. A worker that dies costs
 * its clients their connections (the server destroys them) and is respawned; until one is ready
 * again the server sends in-process. Workers exit with the server (IPC disconnect, and killed on exit).
 */
interface Worker {
  proc: ChildProcess;
  ready: boolean;
  inflight: Map<number, (end: TransferEnd) => void>;
}

const WORKER_FILE = fileURLToPath(new URL(`./sendfile-worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url));

export class SendfilePool {
  private readonly workers: Worker[] = [];
  private nextId = 1;
  private stopped = false;
  private readonly restarts: number[] = [];

  constructor(private readonly size: number) {
    for (let i = 0; i < size; i++) this.spawn();
    process.once('exit', () => this.stop());
  }

  private spawn(): void {
    if (this.stopped) return;
    // from sources (tsx), the worker needs the TypeScript loader too
    const execArgv = WORKER_FILE.endsWith('.ts') ? ['--import', import.meta.resolve('tsx/esm')] : [];
    const proc = fork(WORKER_FILE, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json' });
    const w: Worker = { proc, ready: false, inflight: new Map() };
    this.workers.push(w);
    proc.unref();
    proc.channel?.unref();
    proc.on('message', (m: WorkerReply) => {
      if (m.type === 'ready') w.ready = true;
      else {
        const cb = w.inflight.get(m.id);
        w.inflight.delete(m.id);
        cb?.({ errno: m.errno, sent: m.sent, stalled: m.stalled });
      }
    });
    proc.on('error', () => undefined); // 'exit' follows
    proc.once('exit', () => {
      this.workers.splice(this.workers.indexOf(w), 1);
      for (const cb of w.inflight.values()) cb({ errno: ERRNO.ECONNRESET, sent: 0, stalled: false });
      w.inflight.clear();
      if (this.stopped) return;
      // respawn, but not in a tight loop when workers cannot start at all
      const now = Date.now();
      this.restarts.push(now);
      while (this.restarts.length && now - this.restarts[0]! > 60_000) this.restarts.shift();
      setTimeout(() => this.spawn(), this.restarts.length > 5 ? 5000 : 100).unref();
    });
  }

  /** The ready worker with the fewest transfers, or undefined (send in-process then). */
  private pick(): Worker | undefined {
    let best: Worker | undefined;
    for (const w of this.workers) if (w.ready && w.proc.connected && (!best || w.inflight.size < best.inflight.size)) best = w;
    return best;
  }

  get available(): boolean {
    return this.pick() !== undefined;
  }

  /** Process ids of the live workers (tests). */
  pids(): number[] {
    return this.workers.map((w) => w.proc.pid).filter((p): p is number => p !== undefined);
  }

  /**
   * Hand `socket` (headers already in the kernel) to a worker to send [offset, offset+length) of `path`.
   * Returns a cancel function, or undefined when no worker is ready.
   */
  send(socket: Socket, path: string, offset: number, length: number, stallMs: number, done: (end: TransferEnd) => void): (() => void) | undefined {
    const w = this.pick();
    if (!w) return undefined;
    const id = this.nextId++;
    let finished = false;
    const finish = (end: TransferEnd) => {
      if (finished) return;
      finished = true;
      w.inflight.delete(id);
      done(end);
    };
    w.inflight.set(id, finish);
    const job: WorkerJob = { type: 'send', id, path, offset, length, stallMs };
    // the raw TCP handle, not the Socket: the worker gets a plain fd (no reader in it that could take the
    // client's next request), and keepOpen leaves this process's connection as it is
    const handle = (socket as unknown as { _handle?: object })._handle;
    if (!handle) {
      finish({ errno: ERRNO.ECONNRESET, sent: 0, stalled: false });
      return () => undefined;
    }
    w.proc.send(job, handle as unknown as Socket, { keepOpen: true }, (err) => {
      if (err) finish({ errno: ERRNO.ECONNRESET, sent: 0, stalled: false });
    });
    return () => {
      if (!finished && w.proc.connected) w.proc.send({ type: 'cancel', id });
    };
  }

  stop(): void {
    this.stopped = true;
    for (const w of this.workers) if (w.proc.exitCode === null && w.proc.signalCode === null) w.proc.kill('SIGKILL');
  }
}

let pool: SendfilePool | null | undefined;

/** The process-wide pool (RAMBOOT_SENDFILE_WORKERS=N, default = cores; 0 = send in the server process). */
export function sendfilePool(): SendfilePool | null {
  if (pool !== undefined) return pool;
  const env = process.env.RAMBOOT_SENDFILE_WORKERS;
  const n = env !== undefined && /^\d{1,2}$/.test(env) ? Number(env) : availableParallelism();
  pool = n > 0 ? new SendfilePool(n) : null;
  return pool;
}

/** Stop the workers (server shutdown, tests); a later sendfilePool() starts a new pool. */
export function stopSendfilePool(): void {
  pool?.stop();
  pool = undefined;
}
