import { close, open } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import send from 'send';
import { abortReason, nativeSendfile, startTransfer, type NativeSendfile, type TransferEnd } from './sendfile-native.js';
import { sendfilePool } from './sendfile-pool.js';

/**
 * The one way ramboot sends a large file (image files, deploy artifacts) on an HTTP response.
 * Routes authorize and resolve the path (never from client input), set ETag/Cache-Control, then call
 * sendFile. `send` does the HTTP semantics (Range, suffix ranges, 416, If-None-Match -> 304, If-Range,
 * HEAD, Content-Length); only the body is moved differently: on Linux with the native addon
 * (native/sendfile.c, built by scripts/build-native.mjs) the kernel copies the file to the socket
 * with sendfile(2) (non-blocking socket, woken by writability, no thread pool), in one of the
 * sendfile worker processes (sendfile-pool.ts) once they are ready, else in this process; without
 * the addon, or on TLS, a 1 MiB-chunk read stream is piped (the JS path). bench/http.ts measures all.
 */

export { nativeSendfile, nativeSendfileProblem } from './sendfile-native.js';
export { stopSendfilePool } from './sendfile-pool.js';

export interface SendFileOptions {
  /** 'allow' for store blobs whose path has a dot directory; 'deny' elsewhere. */
  dotfiles: 'allow' | 'deny';
  /** The body (whole file or the range) was handed to the kernel; bytes = body bytes. Not called for HEAD, 304, errors or aborts. */
  onSent?: (bytes: number, via: 'sendfile-worker' | 'sendfile' | 'stream') => void;
  /** Errors before the status line went out (404, 412, 416, 500): the route answers them. */
  onError: (err: Error & { status?: number; code?: string }) => void;
  /** A transfer that started but did not finish (client gone, stalled, file shrank): the socket is destroyed. */
  onAborted?: (reason: string, bytes: number) => void;
  /** sendfile path: abort when the client has taken no byte for this long (default 120 s, the server's socket timeout). */
  stallMs?: number;
  /** Force the JS path (tests, benchmarks). */
  noSendfile?: boolean;
  /** sendfile in this process even when worker processes are ready (tests). */
  noWorkers?: boolean;
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
  const stallMs = opts.stallMs ?? 120_000;
  const pool = opts.noWorkers ? null : sendfilePool();
  const viaWorker = pool?.available === true;
  const finishWith = (sock: Socket, timeout: number) => (end: TransferEnd) => {
    if (end.errno === 0) {
      sock.setTimeout(timeout);
      res.end();
      stream.emit('end');
      opts.onSent?.(end.sent, viaWorker ? 'sendfile-worker' : 'sendfile');
      return;
    }
    opts.onAborted?.(abortReason(end, stallMs), end.sent);
    sock.destroy();
  };
  /** Once the status line and headers are all in the kernel (or never, if the client left first). */
  const afterHeaders = (sock: Socket, go: () => void, gone: () => void) => {
    res.flushHeaders();
    if (sock.writableLength === 0) return go();
    const onGone = () => {
      sock.removeListener('drain', onDrain);
      gone();
    };
    const onDrain = () => {
      sock.removeListener('close', onGone);
      go();
    };
    sock.once('drain', onDrain);
    sock.once('close', onGone);
  };
  /** Node sees no writes while the kernel sends: its inactivity timeout gives way to the stall check. */
  const quiet = (sock: Socket) => {
    const timeout = sock.timeout ?? 0;
    sock.setTimeout(0);
    return timeout;
  };

  if (viaWorker && pool) {
    const sock = res.socket;
    if (!sock || sock.destroyed) return;
    afterHeaders(
      sock,
      () => {
        const done = finishWith(sock, quiet(sock));
        let cancel: (() => void) | undefined;
        const onClose = () => cancel?.();
        cancel = pool.send(sock, path, start, length, stallMs, (end) => {
          sock.removeListener('close', onClose);
          done(end);
        });
        if (!cancel) {
          // the last ready worker went away between the check and now
          opts.onAborted?.('no sendfile worker', 0);
          sock.destroy();
          return;
        }
        sock.once('close', onClose);
      },
      () => undefined,
    );
    return;
  }

  open(path, 'r', (err, fileFd) => {
    if (err) return internals.onStatError(err);
    const sock = res.socket;
    const fd = socketFd(sock);
    if (!sock || fd === undefined || sock.destroyed) {
      close(fileFd, () => undefined);
      return;
    }
    afterHeaders(
      sock,
      () => {
        if (sock.destroyed) return close(fileFd, () => undefined);
        const done = finishWith(sock, quiet(sock));
        let cancel: (() => void) | undefined;
        const onClose = () => cancel?.();
        sock.once('close', onClose);
        try {
          cancel = startTransfer(addon, fd, fileFd, start, length, stallMs, (end) => {
            sock.removeListener('close', onClose);
            done(end);
          });
        } catch (e) {
          sock.removeListener('close', onClose);
          opts.onAborted?.(`sendfile did not start: ${(e as Error).message}`, 0);
          sock.destroy();
        } finally {
          close(fileFd, () => undefined); // the addon holds its own dup
        }
      },
      () => close(fileFd, () => undefined),
    );
  });
}
