/** UDP sockets for the listen port and for transfers (one per transfer, connected to the client's TID). */
import { createSocket, type Socket, type SocketType } from 'node:dgram';

/** Binds exclusively (no SO_REUSEADDR): a second server on the same port fails instead of sharing it. */
export function bindSocket(type: SocketType, host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket({ type, reuseAddr: false });
    const onError = (err: Error): void => {
      s.close();
      reject(err);
    };
    s.once('error', onError);
    s.bind({ address: host, port, exclusive: true }, () => {
      s.off('error', onError);
      resolve(s);
    });
  });
}

export function connectSocket(s: Socket, address: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    s.connect(port, address, (err?: Error) => (err ? reject(err) : resolve()));
  });
}

/** Closes `s`, resolving once it is closed (or at once if it already was). */
export function closeSocket(s: Socket): Promise<void> {
  return new Promise<void>((resolve) => {
    try {
      s.close(() => resolve());
    } catch {
      resolve();
    }
  });
}
