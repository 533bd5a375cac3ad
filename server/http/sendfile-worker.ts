import { close, open } from 'node:fs';
import { nativeSendfile, startTransfer } from './sendfile-native.js';

/**
 * A sendfile worker process (forked by sendfile-pool.ts). It receives an accepted client socket whose
 * status line and headers the server already wrote, plus a file path the server resolved and
 * authorized; it sends the byte range with sendfile(2) and reports {id, errno, sent, stalled}.
 * It never parses HTTP and never reads the socket. It exits when the server goes away.
 */
export interface WorkerJob {
  type: 'send';
  id: number;
  path: string;
  offset: number;
  length: number;
  stallMs: number;
}
export interface WorkerCancel {
  type: 'cancel';
  id: number;
}
export type WorkerReply = { type: 'ready' } | { type: 'done'; id: number; errno: number; sent: number; stalled: boolean };

const addon = nativeSendfile();
const reply = (m: WorkerReply) => process.send?.(m);
const running = new Map<number, () => void>();
/** Received, file not open yet; and those of them cancelled meanwhile. */
const opening = new Set<number>();
const cancelled = new Set<number>();

process.on('disconnect', () => process.exit(0));
/** What arrives for a raw TCP handle sent with keepOpen: the handle itself (fd, close). */
interface RawHandle {
  fd?: unknown;
  close(): void;
}

process.on('message', (msg: WorkerJob | WorkerCancel, socket?: RawHandle) => {
  if (msg.type === 'cancel') {
    const cancel = running.get(msg.id);
    if (cancel) cancel();
    else if (opening.has(msg.id)) cancelled.add(msg.id);
    return;
  }
  const fd = socket?.fd;
  if (!addon || !socket || typeof fd !== 'number' || fd < 0) {
    socket?.close();
    reply({ type: 'done', id: msg.id, errno: 22 /* EINVAL */, sent: 0, stalled: false });
    return;
  }
  opening.add(msg.id);
  open(msg.path, 'r', (err, fileFd) => {
    opening.delete(msg.id);
    if (cancelled.delete(msg.id)) {
      if (!err) close(fileFd, () => undefined);
      socket.close();
      reply({ type: 'done', id: msg.id, errno: 125 /* ECANCELED */, sent: 0, stalled: false });
      return;
    }
    if (err) {
      socket.close();
      reply({ type: 'done', id: msg.id, errno: (err as NodeJS.ErrnoException).errno ? -((err as NodeJS.ErrnoException).errno ?? 0) : 2, sent: 0, stalled: false });
      return;
    }
    try {
      let ended = false;
      const cancel = startTransfer(addon, fd, fileFd, msg.offset, msg.length, msg.stallMs, (end) => {
        ended = true;
        running.delete(msg.id);
        reply({ type: 'done', id: msg.id, ...end });
      });
      if (!ended) running.set(msg.id, cancel);
    } catch {
      reply({ type: 'done', id: msg.id, errno: 24 /* EMFILE */, sent: 0, stalled: false });
    } finally {
      close(fileFd, () => undefined);
      // the addon holds dups of both
      socket.close();
    }
  });
});
if (addon) reply({ type: 'ready' });
else process.exit(3);
