/**
 * A UDP relay for tests that impairs TFTP traffic in both directions: loss, duplication and reordering
 * (a held-back packet is overtaken by the following ones), from a seeded PRNG so runs are replayable.
 * It understands TFTP TIDs: clients talk to the relay's port as if it were the server; each client gets
 * its own upstream socket, and the server's transfer port is mirrored by a per-client downstream socket.
 */
import { createSocket, type Socket } from 'node:dgram';

export interface Impairment {
  loss: number;
  duplicate: number;
  reorder: number;
  /** How long a reordered packet is held back, ms. */
  reorderDelayMs: number;
  seed: number;
}

export interface RelayStats {
  forwarded: number;
  dropped: number;
  duplicated: number;
  reordered: number;
}

interface Session {
  up: Socket; // talks to the server
  down: Socket; // talks to the client, from a port that stands in for the server's TID
  serverTid: number | null;
}

/** Deterministic PRNG (mulberry32) so a failure can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function bound(host: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    s.once('error', reject);
    s.bind(0, host, () => {
      s.off('error', reject);
      s.on('error', () => undefined); // ICMP errors from closed peers are expected
      resolve(s);
    });
  });
}

export class ImpairRelay {
  readonly stats: RelayStats = { forwarded: 0, dropped: 0, duplicated: 0, reordered: 0 };
  private readonly rnd: () => number;
  private readonly sessions = new Map<string, Session>();
  private readonly timers = new Set<NodeJS.Timeout>();

  private constructor(
    private readonly listen: Socket,
    private readonly host: string,
    private readonly serverPort: number,
    private readonly imp: Impairment,
  ) {
    this.rnd = prng(imp.seed);
  }

  static async start(host: string, serverPort: number, imp: Impairment): Promise<ImpairRelay> {
    const relay = new ImpairRelay(await bound(host), host, serverPort, imp);
    relay.listen.on('message', (msg, r) => void relay.fromClient(msg, r.address, r.port, null));
    return relay;
  }

  get port(): number {
    return this.listen.address().port;
  }

  private send(sock: Socket, msg: Buffer, port: number, address: string): void {
    const r = this.rnd();
    const { loss, duplicate, reorder, reorderDelayMs } = this.imp;
    if (r < loss) {
      this.stats.dropped++;
      return;
    }
    const copies = r < loss + duplicate ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    const out = (): void => {
      for (let i = 0; i < copies; i++) sock.send(msg, port, address);
      this.stats.forwarded++;
    };
    if (this.rnd() < reorder) {
      this.stats.reordered++;
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        out();
      }, reorderDelayMs);
      this.timers.add(timer);
    } else out();
  }

  private readonly pending = new Map<string, Promise<Session>>();

  private async session(address: string, port: number): Promise<Session> {
    const key = `${address}|${port}`;
    const existing = this.sessions.get(key);
    if (existing) return existing;
    let p = this.pending.get(key);
    if (!p) {
      p = (async () => {
        const session: Session = { up: await bound(this.host), down: await bound(this.host), serverTid: null };
        session.up.on('message', (m, r) => {
          session.serverTid = r.port;
          this.send(session.down, m, port, address);
        });
        session.down.on('message', (m, r) => void this.fromClient(m, r.address, r.port, session));
        this.sessions.set(key, session);
        return session;
      })();
      this.pending.set(key, p);
    }
    return p;
  }

  private async fromClient(msg: Buffer, address: string, port: number, via: Session | null): Promise<void> {
    const s = via ?? (await this.session(address, port));
    // Requests go to the listen port; everything after the server's first reply goes to its TID.
    this.send(s.up, msg, via && s.serverTid !== null ? s.serverTid : this.serverPort, this.host);
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    const socks = [this.listen, ...[...this.sessions.values()].flatMap((s) => [s.up, s.down])];
    await Promise.all(socks.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}
