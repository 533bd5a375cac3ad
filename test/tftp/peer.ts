/** A raw UDP TFTP peer for tests: sends hand-made packets and records every packet it receives. */
import { createSocket, type Socket } from 'node:dgram';

export interface Reply {
  msg: Buffer;
  port: number;
  address: string;
}

export class Peer {
  readonly sock: Socket;
  readonly replies: Reply[] = [];
  private waiters: Array<() => void> = [];
  private readonly bound: Promise<void>;
  constructor(host = '127.0.0.1') {
    this.sock = createSocket('udp4');
    this.sock.on('message', (msg, r) => {
      this.replies.push({ msg, port: r.port, address: r.address });
      for (const w of this.waiters.splice(0)) w();
    });
    this.bound = new Promise((resolve) => this.sock.bind(0, host, () => resolve()));
  }
  /** Resolves once the socket is bound (its port is known). */
  ready(): Promise<void> {
    return this.bound;
  }
  get port(): number {
    return this.sock.address().port;
  }
  send(buf: Buffer, port: number, host = '127.0.0.1'): void {
    this.sock.send(buf, port, host);
  }
  /**
   * Waits until `pred` holds, or the timeout. Checked on each arrival, and every 20 ms for predicates
   * on other state (transfer events).
   */
  async until(pred: (r: Reply[]) => boolean, ms = 5000): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!pred(this.replies)) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 20));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }
  close(): Promise<void> {
    return new Promise((resolve) => this.sock.close(() => resolve()));
  }
}

export function rrq(name: string, mode = 'octet', opts: Record<string, string> = {}, op = 1): Buffer {
  const parts = [name, mode, ...Object.entries(opts).flat()];
  return Buffer.concat([Buffer.from([0, op]), ...parts.map((p) => Buffer.from(`${p}\0`, 'latin1'))]);
}
export const ack = (n: number): Buffer => Buffer.from([0, 4, (n >> 8) & 0xff, n & 0xff]);
export const opcode = (b: Buffer): number => (b.length >= 2 ? b.readUInt16BE(0) : -1);
export const errCode = (b: Buffer): number => (opcode(b) === 5 ? b.readUInt16BE(2) : -1);

/** Waits until `pred` holds (polled every 10 ms), or the timeout. */
export async function waitFor(pred: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}
