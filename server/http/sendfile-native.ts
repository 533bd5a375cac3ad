import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * The sendfile(2) addon (native/sendfile.c, built by scripts/build-native.mjs) and one transfer on it
 * with stall detection. Used in the server process and in its sendfile workers (sendfile-worker.ts).
 */
export interface NativeSendfile {
  start(socketFd: number, fileFd: number, offset: number, length: number, done: (errno: number, sent: number) => void): object;
  cancel(job: object): void;
  sent(job: object): number;
}

/** Where the build puts the addon, seen from server/http/ (sources) or dist/server/http/. */
const ADDON_CANDIDATES = ['../../native/build/sendfile.node', '../../../native/build/sendfile.node'].map((p) => fileURLToPath(new URL(p, import.meta.url)));

let native: NativeSendfile | null | undefined;
let nativeProblem = '';

/** The addon, or null (nativeSendfileProblem() says why). RAMBOOT_SENDFILE=0 turns it off. */
export function nativeSendfile(): NativeSendfile | null {
  if (native !== undefined) return native;
  native = null;
  if (process.env.RAMBOOT_SENDFILE === '0') nativeProblem = 'turned off by RAMBOOT_SENDFILE=0';
  else if (process.platform !== 'linux') nativeProblem = `sendfile path is Linux-only (${process.platform})`;
  else {
    const file = ADDON_CANDIDATES.find((f) => existsSync(f));
    if (!file) nativeProblem = 'native/build/sendfile.node is not built (npm ci, npm run build or node scripts/build-native.mjs; needs a C compiler)';
    else {
      try {
        native = createRequire(import.meta.url)(file) as NativeSendfile;
      } catch (e) {
        nativeProblem = `cannot load ${file}: ${(e as Error).message}`;
      }
    }
  }
  return native;
}

export function nativeSendfileProblem(): string {
  nativeSendfile();
  return nativeProblem;
}

export interface TransferEnd {
  /** 0 = every byte went to the kernel; else the errno (ECANCELED when cancelled or stalled). */
  errno: number;
  sent: number;
  stalled: boolean;
}

/**
 * Send `length` bytes of `fileFd` from `offset` to the connected socket `socketFd` (both stay the
 * caller's: the addon works on dups). `done` is called exactly once. A client that takes no byte for
 * `stallMs` is cancelled. Throws when the transfer cannot start (EMFILE...).
 */
export function startTransfer(addon: NativeSendfile, socketFd: number, fileFd: number, offset: number, length: number, stallMs: number, done: (end: TransferEnd) => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stalled = false;
  const job = addon.start(socketFd, fileFd, offset, length, (errno, sent) => {
    clearInterval(timer);
    done({ errno, sent, stalled });
  });
  let last = 0;
  let lastAt = Date.now();
  timer = setInterval(() => {
    const now = addon.sent(job);
    if (now < 0) return clearInterval(timer); // finished
    if (now !== last) {
      last = now;
      lastAt = Date.now();
    } else if (Date.now() - lastAt >= stallMs) {
      stalled = true;
      addon.cancel(job);
    }
  }, Math.max(50, Math.min(5000, stallMs / 4)));
  return () => addon.cancel(job);
}

export const ERRNO = { EIO: 5, EPIPE: 32, ECONNRESET: 104, ECANCELED: 125 } as const;
const QUIET = new Set<number>([ERRNO.EPIPE, ERRNO.ECONNRESET, ERRNO.ECANCELED]);

/** Why a transfer ended early, for the log. */
export function abortReason(end: TransferEnd, stallMs: number): string {
  if (end.stalled) return `client took no data for ${stallMs} ms`;
  if (QUIET.has(end.errno)) return 'client went away';
  return `sendfile failed: errno ${end.errno}${end.errno === ERRNO.EIO ? ' (file shorter than announced)' : ''}`;
}
