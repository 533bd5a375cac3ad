import { close, existsSync, open } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import send from 'send';

/**
 * The one way ramboot sends a large file (image files, deploy artifacts) on an HTTP response.
 * Routes authorize and resolve the path (never from client input), set ETag/Cache-Control, then call
 * sendFile. `send` does the HTTP semantics (Range, suffix ranges, 416, If-None-Match -> 304, If-Range,
 * HEAD, Content-Length); only the body is moved differently: on Linux with the native addon
 * (native/sendfile.c, built by scripts/build-native.mjs) the kernel copies the file to the socket
 * with sendfile(2) from the event loop (non-blocking socket, woken by writability, no thread pool);
 * otherwise, or on TLS, a 1 MiB-chunk read stream is piped (the JS path). bench/http.ts measures both.
 */

interface NativeSendfile {
  start(socketFd: number, fileFd: number, offset: number, length: number, done: (errno: number, sent: number) => void): object;
  cancel(job: object): void;
  sent(job: object): number;
}

/** Where scripts/build-native.mjs puts the addon, from server/http/ (sources) or dist/server/http/. */
const ADDON_CANDIDATES = ['../../native/build/sendfile.node', '../../../native/build/sendfile.node'].map((p) => fileURLToPath(new URL(p, import.meta.url)));

let native: NativeSendfile | null | undefined;
let nativeProblem = '';

/** The sendfile addon, or null (with nativeSendfileProblem() saying why). RAMBOOT_SENDFILE=0 turns it off. */
export function nativeSendfile(): NativeSendfile | null {
  if (native !== undefined) return native;
  native = null;
  if (process.env.RAMBOOT_SENDFILE === '0') nativeProblem = 'turned off by RAMBOOT_SENDFILE=0';
  else if (process.platform !== 'linux') nativeProblem = `sendfile path is Linux-only (${process.platform})`;
  else {
    const file = ADDON_CANDIDATES.find((f) => existsSync(f));
    if (!file) nativeProblem = 'native/build/sendfile.node is not built (npm ci or node scripts/build-native.mjs; needs a C compiler)';
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

export interface SendFileOptions {
  /** 'allow' for store blobs whose path has a dot directory; 'deny' elsewhere. */
  dotfiles: 'allow' | 'deny';
  /** The body (whole file or the range) was handed to the kernel; bytes = body bytes. Not called for HEAD, 304, errors or aborts. */
  onSent?: (bytes: number, via: 'sendfile' | 'stream') => void;
  /** Errors before the status line went out (404, 412, 416, 500): the route answers them. */
  onError: (err: Error & { status?: number; code?: string }) => void;
  /** A transfer that started but did not finish (client gone, stalled, file shrank): the socket is destroyed. */
  onAborted?: (reason: string, bytes: number) => void;
  /** sendfile path: abort when the client has taken no byte for this long (default 120 s, the server's socket timeout). */
  stallMs?: number;
  /** Force the JS path (tests, benchmarks). */
  noSendfile?: boolean;
}

type SendStream = ReturnType<typeof send>;
interface SendStreamInternals {
  stream(path: string, options: { start?: number; end?: number }): void;
  onStatError(err: Error): void;
}

function socketFd(sock: Socket | null): number | undefined {
  if (!sock || sock instanceof TLSSocket) return undefined;
  const fd = (sock as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

const QUIET_ERRNOS = new Set([32 /* EPIPE */, 104 /* ECONNRESET */, 125 /* ECANCELED */]);

function errnoName(n: number): string {
  const names: Record<number, string> = { 5: 'EIO', 11: 'EAGAIN', 32: 'EPIPE', 104: 'ECONNRESET', 110: 'ETIMEDOUT', 125: 'ECANCELED' };
  return names[n] ?? `errno ${n}`;
}

/** Send `path` (already authorized and resolved by the route) as the response to `req`. */
export function sendFile(req: IncomingMessage, res: ServerResponse, path: string, opts: SendFileOptions): void {
  const stream: SendStream = send(req, path, { etag: false, lastModified: false, dotfiles: opts.dotfiles, index: false, highWaterMark: 1 << 20 } as send.SendOptions);
  stream.on('error', opts.onError);
  const addon = opts.noSendfile ? null : nativeSendfile();
  const internals = stream as unknown as SendStreamInternals;
  if (addon && socketFd(res.socket) !== undefined) {
    internals.stream = (p, o) => viaSendfile(addon, res, p, o.start ?? 0, stream, internals, opts);
  } else {
    let bytes = 0;
    stream.on('stream', (fileStream: NodeJS.ReadableStream) => fileStream.on('data', (c: Buffer) => (bytes += c.length)));
    stream.on('end', () => opts.onSent?.(bytes, 'stream'));
  }
  stream.pipe(res);
}

function viaSendfile(addon: NativeSendfile, res: ServerResponse, path: string, start: number, stream: SendStream, internals: SendStreamInternals, opts: SendFileOptions): void {
  const length = Number(res.getHeader('Content-Length') ?? 0);
  open(path, 'r', (err, fileFd) => {
    if (err) return internals.onStatError(err);
    const sock = res.socket;
    const fd = socketFd(sock);
    if (!sock || fd === undefined || sock.destroyed) {
      close(fileFd, () => undefined);
      return;
    }
    // The status line and headers go out through Node; the body starts once they are all in the kernel.
    res.flushHeaders();
    const begin = () => {
      if (sock.destroyed) return close(fileFd, () => undefined);
      const timeout = sock.timeout ?? 0;
      // Node sees no writes while the kernel sends: its inactivity timeout is replaced by the stall check.
      sock.setTimeout(0);
      const stallMs = opts.stallMs ?? 120_000;
      let job: object | undefined;
      let timer: NodeJS.Timeout | undefined;
      let stalled = false;
      const onClose = () => {
        if (job) addon.cancel(job);
      };
      const done = (errno: number, sent: number): void => {
        clearInterval(timer);
        sock.removeListener('close', onClose);
        if (errno === 0) {
          sock.setTimeout(timeout);
          res.end();
          stream.emit('end');
          opts.onSent?.(sent, 'sendfile');
          return;
        }
        const reason = stalled ? `client took no data for ${stallMs} ms` : QUIET_ERRNOS.has(errno) ? 'client went away' : `sendfile failed: ${errnoName(errno)}`;
        opts.onAborted?.(reason, sent);
        sock.destroy();
      };
      sock.once('close', onClose);
      try {
        job = addon.start(fd, fileFd, start, length, done);
      } catch (e) {
        sock.removeListener('close', onClose);
        opts.onAborted?.(`sendfile did not start: ${(e as Error).message}`, 0);
        sock.destroy();
        return;
      } finally {
        close(fileFd, () => undefined); // the addon holds its own dup
      }
      let last = 0;
      let lastAt = Date.now();
      const running = job;
      timer = setInterval(() => {
        const now = addon.sent(running);
        if (now < 0) return clearInterval(timer); // finished
        if (now !== last) {
          last = now;
          lastAt = Date.now();
        } else if (Date.now() - lastAt >= stallMs) {
          stalled = true;
          addon.cancel(running);
        }
      }, Math.max(50, Math.min(5000, stallMs / 4)));
    };
    if (sock.writableLength === 0) return begin();
    // headers still queued in Node: start once they are in the kernel, or release the file if the client left
    const onGone = () => {
      sock.removeListener('drain', onDrain);
      close(fileFd, () => undefined);
    };
    const onDrain = () => {
      sock.removeListener('close', onGone);
      begin();
    };
    sock.once('drain', onDrain);
    sock.once('close', onGone);
  });
}
