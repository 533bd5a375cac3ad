import type { Server } from 'node:http';
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
