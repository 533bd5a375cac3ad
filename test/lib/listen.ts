import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Teardown } from './teardown.js';

/** Listens on 127.0.0.1 (a port the kernel picks) and closes the server, connections included, at teardown. */
export async function listenLocal(t: Pick<Teardown, 'teardown'>, server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return (server.address() as AddressInfo).port;
}

/**
 * Answers a `Range: bytes=START-[END]` request for `data` with 206 and the part (true), or does
 * nothing (false) when the request has no such range: the caller then sends the whole body.
 */
export function sendRange(req: IncomingMessage, res: ServerResponse, data: Buffer): boolean {
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  if (!m) return false;
  const start = Number(m[1]);
  const end = m[2] === '' ? data.length - 1 : Math.min(Number(m[2]), data.length - 1);
  res.statusCode = 206;
  res.setHeader('Content-Range', `bytes ${start}-${end}/${data.length}`);
  res.setHeader('Content-Length', end - start + 1);
  res.end(data.subarray(start, end + 1));
  return true;
}
