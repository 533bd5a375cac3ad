/**
 * Read-only TFTP server (RFC 1350 + 2347/2348/2349/7440) for the first boot stage: hands out the iPXE
 * binaries from one directory. Write requests are refused; see README.md for why this is not npm `tftp`.
 *
 * The listen socket only takes requests. Each admitted read gets its own socket, connected to the
 * client's port, and a Transfer that runs the data exchange on it.
 */
import type { RemoteInfo, Socket, SocketType } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../common/log.js';
import { resolveConfig, type ServerConfig, type TftpServerOptions } from './config.js';
import { printable, RefusalReporter, TransferReporter, type TftpTransferEvent } from './events.js';
import { encodeError, parseRequest, ERR_ACCESS, ERR_ILLEGAL_OP, ERR_UNDEFINED, OP_RRQ, OP_WRQ, type Request } from './packet.js';
import { prepareRead, type PreparedRead } from './read-request.js';
import { bindSocket, closeSocket, connectSocket } from './sockets.js';
import { TransferTable } from './transfer-table.js';
import { Transfer, type TransferResult } from './transfer.js';

export type { TftpServerOptions } from './config.js';
export type { TftpRefusedEvent, TftpTransferEvent } from './events.js';

interface Client {
  address: string;
  port: number;
}

export class TftpServer {
  /** Transfers by client TID, with the per-client and global limits. */
  private readonly table: TransferTable<Transfer>;
  /** Transfer sockets, closed with the server. */
  private readonly sockets = new Set<Socket>();
  private closed = false;
  /** Read once: a closed socket can no longer tell its address. */
  private readonly bound: { address: string; port: number };

  private constructor(
    private readonly cfg: ServerConfig,
    private readonly listen: Socket,
    private readonly logger: Logger,
    private readonly report: TransferReporter,
    private readonly refusals: RefusalReporter,
  ) {
    this.table = new TransferTable(cfg);
    const a = listen.address();
    this.bound = { address: a.address, port: a.port };
  }

  /** Checks the options, binds the listen socket and starts taking requests. */
  static async start(opts: TftpServerOptions): Promise<TftpServer> {
    const cfg = await resolveConfig(opts);
    const listen = await bindSocket(TftpServer.socketType(cfg.host), cfg.host, cfg.port);
    const server = new TftpServer(
      cfg, listen, opts.logger, new TransferReporter(opts.logger, opts.onTransfer), new RefusalReporter(opts.logger, opts.onRefused),
    );
    listen.on('error', (err: Error) => opts.logger.error({ event: 'tftp.socket_error', err: err.message }));
    listen.on('message', (msg: Buffer, rinfo: RemoteInfo) => server.receive(msg, { address: rinfo.address, port: rinfo.port }));
    const addr = server.address();
    opts.logger.debug({ event: 'tftp.listening', address: addr.address, port: addr.port, root: cfg.root });
    return server;
  }

  address(): { address: string; port: number } {
    return { ...this.bound };
  }

  /** Aborts every transfer and closes every socket. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Requests still being prepared find the server closed and are refused; they free their own slots.
    for (const tr of this.table.transfers()) tr.abort('server closing');
    await Promise.all([this.listen, ...this.sockets].map(closeSocket));
    this.sockets.clear();
  }

  private static socketType(host: string): SocketType {
    return isIPv6(host) ? 'udp6' : 'udp4';
  }

  /** One datagram on the listen port: a read request starts (or repeats) a transfer; everything else is refused or dropped. */
  private receive(msg: Buffer, client: Client): void {
    if (this.closed || client.port === 0) return; // port 0 cannot be answered
    const parsed = parseRequest(msg);
    if (!parsed.ok) {
      this.logger.debug({ event: 'tftp.bad_packet', client, bytes: msg.length, reason: parsed.reason });
      // Malformed RRQ/WRQ get ERROR 4. Anything else (stray DATA/ACK/ERROR/OACK, unknown opcodes,
      // runts) is dropped: answering tiny junk with larger errors would make us a UDP reflector.
      const op = msg.length >= 4 ? msg.readUInt16BE(0) : -1;
      if (op === OP_RRQ || op === OP_WRQ) this.replyError(client, ERR_ILLEGAL_OP, parsed.reason);
      return;
    }
    const req = parsed.value;
    if (req.opcode === OP_WRQ) {
      this.refuse(client, req, ERR_ACCESS, 'read-only server: write requests are refused');
      return;
    }
    const key = TransferTable.key(client);
    if (!this.admit(req, client, key)) return;
    this.serveRead(req, client, key)
      .catch((err: unknown) => {
        this.logger.error({ event: 'tftp.internal_error', client, err: String(err) });
        this.replyError(client, ERR_UNDEFINED, 'internal error');
      })
      .finally(() => {
        if (this.table.get(key) === null) this.table.remove(key); // refused or failed before it started
      });
  }

  /**
   * Whether `req` starts a new transfer (its slot is then reserved). A repeat of a request already being
   * served is answered by that transfer instead. A request beyond a transfer limit is dropped without an
   * answer: an ERROR would be one more packet aimed at what may be a spoofed address, and a PXE ROM
   * treats an ERROR as final but retries an unanswered request, which gets in once a slot is free.
   */
  private admit(req: Request, client: Client, key: string): boolean {
    const existing = this.table.get(key);
    if (existing?.awaitingFinalAck) {
      // The client has the whole file (only its last ACK got lost) and reuses its port for a new
      // request: end the old transfer instead of making the new one wait for its give-up timer.
      existing.abort('final ACK lost; the client sent a new request from the same port');
    } else if (this.table.has(key)) {
      existing?.onRepeatedRequest(); // a retransmitted RRQ: our first reply was lost
      return false;
    }
    const clientTransfers = this.table.countFor(client.address);
    const transfers = this.table.size;
    const limit = this.table.reserve(key, client.address);
    if (limit === null) return true;
    this.refusals.refused({ client, file: printable(req.filename), reason: limit, clientTransfers, transfers });
    return false;
  }

  /** Opens the file and a transfer socket, then starts the transfer; refuses the request when either fails. */
  private async serveRead(req: Request, client: Client, key: string): Promise<void> {
    const started = performance.now();
    const prepared = await prepareRead(req, this.cfg);
    if (!prepared.ok) {
      this.refuse(client, req, prepared.code, prepared.reason);
      return;
    }
    const { read } = prepared;
    let sock: Socket;
    try {
      sock = await this.openTransferSocket(client);
    } catch (err) {
      read.source.close();
      this.refuse(client, req, ERR_UNDEFINED, `cannot open transfer socket: ${(err as Error).message}`);
      return;
    }
    this.startTransfer(read, sock, client, key, printable(req.filename), started);
  }

  /** A socket on the listen address (fresh port) connected to the client's port, so only its packets arrive. */
  private async openTransferSocket(client: Client): Promise<Socket> {
    if (this.closed) throw new Error('server closing');
    const sock = await bindSocket(TftpServer.socketType(this.cfg.host), this.cfg.host, 0);
    this.sockets.add(sock);
    try {
      await connectSocket(sock, client.address, client.port);
      if (this.closed) throw new Error('server closing');
      return sock;
    } catch (err) {
      this.sockets.delete(sock);
      sock.close();
      throw err;
    }
  }

  private startTransfer(read: PreparedRead, sock: Socket, client: Client, key: string, file: string, started: number): void {
    const transfer = new Transfer({
      socket: sock,
      source: read.source,
      blksize: read.blksize,
      windowsize: read.windowsize,
      oack: read.oack,
      rto: read.rto,
      giveUpMs: this.cfg.giveUpMs,
      budget: read.budget,
      onDone: (r) => this.finishTransfer(r, { sock, client, key, file, options: read.options, started }),
    });
    this.table.attach(key, transfer);
    this.logger.debug({ event: 'tftp.start', client, file, options: read.options });
    transfer.start();
  }

  /** A transfer ended (any outcome): free its slot and socket, then report it. */
  private finishTransfer(
    r: TransferResult,
    t: { sock: Socket; client: Client; key: string; file: string; options: Record<string, string | number>; started: number },
  ): void {
    this.table.remove(t.key);
    this.sockets.delete(t.sock);
    t.sock.close();
    const ev: TftpTransferEvent = {
      client: t.client, file: t.file, options: t.options, bytes: r.bytes, retransmits: r.retransmits, sentBytes: r.sentBytes, outcome: r.outcome,
      durationMs: Math.round((performance.now() - t.started) * 10) / 10,
    };
    if (r.error !== undefined) ev.error = r.error;
    this.report.transfer(ev);
  }

  private replyError(client: Client, code: number, message: string): void {
    if (!this.closed) this.listen.send(encodeError(code, message), client.port, client.address);
  }

  /** Answers with an ERROR and reports the request as a refused transfer. */
  private refuse(client: Client, req: Request, code: number, reason: string): void {
    this.replyError(client, code, reason);
    const options: Record<string, string> = {};
    for (const [k, v] of req.options) options[k] = v.slice(0, 64);
    this.report.transfer({ client, file: printable(req.filename), options, bytes: 0, durationMs: 0, retransmits: 0, sentBytes: 0, outcome: 'refused', error: reason });
  }
}

export function startTftpServer(opts: TftpServerOptions): Promise<TftpServer> {
  return TftpServer.start(opts);
}
