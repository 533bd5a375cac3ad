/**
 * Read-only TFTP server (RFC 1350 + 2347/2348/2349/7440) for the first boot stage: hands out the iPXE
 * binaries from one directory. Write requests are refused; see README.md for why this is not npm `tftp`.
 */
import { createSocket, type Socket, type SocketType } from 'node:dgram';
import { realpath, stat } from 'node:fs/promises';
import { isIPv6 } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../common/log.js';
import { negotiate } from './options.js';
import {
  encodeError,
  encodeOack,
  parseRequest,
  ERR_ACCESS,
  ERR_ILLEGAL_OP,
  ERR_UNDEFINED,
  OP_RRQ,
  OP_WRQ,
  type Request,
} from './packet.js';
import { openServedFile, toNetascii } from './resolve.js';
import { BufferSource, FileSource, type BlockSource } from './source.js';
import { Transfer, type TransferResult } from './transfer.js';

export interface TftpTransferEvent {
  client: { address: string; port: number };
  file: string;
  options: Record<string, string | number>;
  bytes: number;
  durationMs: number;
  retransmits: number;
  outcome: 'ok' | 'error' | 'timeout' | 'refused';
  error?: string;
}

export interface TftpServerOptions {
  host: string;
  port: number;
  /** Served directory (the iPXE directory). Must exist. */
  root: string;
  logger: Logger;
  onTransfer?: (ev: TftpTransferEvent) => void;
  /** Extra directory trees a symlink inside `root` may point into (e.g. ['/boot'] for Debian's ipxe.efi). Default none. */
  symlinkRoots?: string[];
  /** Largest blksize granted. Default 65464 (RFC 2348 maximum). */
  maxBlksize?: number;
  /** Largest windowsize granted. Default 64. */
  maxWindowsize?: number;
  /** Largest windowsize * blksize burst granted (the windowsize is lowered to fit). Default 65536. */
  maxWindowBytes?: number;
  /** Concurrent transfers; requests beyond it get ERROR 0 "server busy". Default 256. */
  maxTransfers?: number;
  /** Files larger than this are refused (they are read into memory). Default 512 MiB. */
  maxFileBytes?: number;
  /**
   * Retransmission timeout bounds in ms. Defaults 500 / 20 / 6000 (the max is the client's `timeout`
   * option when it sets one). The max must exceed common client timeouts (5 s): atftp, for one, ignores
   * repeated duplicate DATA until its own timer fires, and only a silent gap lets that timer fire.
   */
  initialRtoMs?: number;
  minRtoMs?: number;
  maxRtoMs?: number;
  /** Abort a transfer when no ACK advanced it for this long. Default 30000 ms. */
  giveUpMs?: number;
}

export interface TftpServer {
  address(): { address: string; port: number };
  close(): Promise<void>;
}

interface Tunables {
  symlinkRoots: string[];
  maxBlksize: number;
  maxWindowsize: number;
  maxWindowBytes: number;
  maxTransfers: number;
  maxFileBytes: number;
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  giveUpMs: number;
}

function intIn(name: string, v: number | undefined, def: number, min: number, max: number): number {
  const n = v ?? def;
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`tftp: ${name} must be an integer in ${min}..${max}, got ${String(v)}`);
  return n;
}

function bindSocket(type: SocketType, host: string, port: number): Promise<Socket> {
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

function connectSocket(s: Socket, address: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    s.connect(port, address, (err?: Error) => (err ? reject(err) : resolve()));
  });
}

/** Printable, bounded rendering of a client-supplied filename for logs. */
function printable(name: string): string {
  return name.replace(/[^\x20-\x7e]/g, '?').slice(0, 300);
}

export async function startTftpServer(opts: TftpServerOptions): Promise<TftpServer> {
  const t: Tunables = {
    symlinkRoots: [],
    maxBlksize: intIn('maxBlksize', opts.maxBlksize, 65464, 512, 65464),
    maxWindowsize: intIn('maxWindowsize', opts.maxWindowsize, 64, 1, 65535),
    maxWindowBytes: intIn('maxWindowBytes', opts.maxWindowBytes, 65536, 512, 2 ** 30),
    maxTransfers: intIn('maxTransfers', opts.maxTransfers, 256, 1, 65536),
    maxFileBytes: intIn('maxFileBytes', opts.maxFileBytes, 512 * 1024 * 1024, 0, 2 ** 32),
    initialRtoMs: intIn('initialRtoMs', opts.initialRtoMs, 500, 1, 60_000),
    minRtoMs: intIn('minRtoMs', opts.minRtoMs, 20, 1, 60_000),
    maxRtoMs: intIn('maxRtoMs', opts.maxRtoMs, 6000, 1, 255_000),
    giveUpMs: intIn('giveUpMs', opts.giveUpMs, 30_000, 1, 3_600_000),
  };
  intIn('port', opts.port, 0, 0, 65535);
  const root = await realpath(opts.root).catch((err: NodeJS.ErrnoException) => {
    throw new Error(`tftp: served directory ${opts.root} is not usable: ${err.code ?? err.message}`);
  });
  if (!(await stat(root)).isDirectory()) throw new Error(`tftp: served directory ${opts.root} is not a directory`);
  for (const r of opts.symlinkRoots ?? []) {
    t.symlinkRoots.push(await realpath(r).catch(() => { throw new Error(`tftp: symlink root ${r} does not exist`); }));
  }

  const { logger } = opts;
  const host = opts.host;
  const type: SocketType = isIPv6(host) ? 'udp6' : 'udp4';
  const listen = await bindSocket(type, host, opts.port);
  /** Keyed by "address|port" of the client TID; a placeholder (null) while the file is being opened. */
  const transfers = new Map<string, Transfer | null>();
  const sockets = new Set<Socket>();
  let closed = false;

  const emit = (ev: TftpTransferEvent): void => {
    const { outcome } = ev;
    // EDK2 (OVMF) first asks for tsize alone and aborts with ERROR 8 once it has the OACK: not a problem.
    const probe = outcome === 'error' && ev.bytes === 0 && /^client error 8:/.test(ev.error ?? '');
    const level = outcome === 'ok' || probe ? 'info' : 'warn';
    logger[level]({ event: 'tftp.transfer', ...ev }, `tftp ${outcome} ${ev.file}`);
    try {
      opts.onTransfer?.(ev);
    } catch (err) {
      logger.error({ event: 'tftp.on_transfer_failed', err: String(err) });
    }
  };

  const replyError = (address: string, port: number, code: number, message: string): void => {
    if (!closed) listen.send(encodeError(code, message), port, address);
  };

  const refuse = (client: { address: string; port: number }, req: Request | null, file: string, code: number, reason: string): void => {
    replyError(client.address, client.port, code, reason);
    const options: Record<string, string> = {};
    if (req) for (const [k, v] of req.options) options[k] = v.slice(0, 64);
    emit({ client, file: printable(file), options, bytes: 0, durationMs: 0, retransmits: 0, outcome: 'refused', error: reason });
  };

  async function handleRead(req: Request, client: { address: string; port: number }, key: string): Promise<void> {
    const started = performance.now();
    const file = printable(req.filename);
    if (req.mode !== 'octet' && req.mode !== 'netascii') {
      refuse(client, req, file, ERR_ILLEGAL_OP, `unsupported mode ${printable(req.mode)}`);
      return;
    }
    const opened = await openServedFile(root, t.symlinkRoots, req.filename);
    if (!opened.ok) {
      refuse(client, req, file, opened.code, opened.reason);
      return;
    }
    const { handle, size } = opened.file;
    if (size > t.maxFileBytes) {
      await handle.close();
      refuse(client, req, file, ERR_ACCESS, 'file too large');
      return;
    }
    const ascii = req.mode === 'netascii' ? toNetascii(await handle.readFile().finally(() => handle.close())) : null;
    const neg = negotiate(req.options, ascii ? ascii.length : size, { maxBlksize: t.maxBlksize, maxWindowsize: t.maxWindowsize, maxWindowBytes: t.maxWindowBytes });
    const source: BlockSource = ascii ? new BufferSource(ascii) : new FileSource(handle, size, neg.blksize * neg.windowsize);
    let sock: Socket | null = null;
    try {
      if (closed) throw new Error('server closing');
      sock = await bindSocket(type, host, 0);
      sockets.add(sock);
      await connectSocket(sock, client.address, client.port);
      if (closed) throw new Error('server closing');
    } catch (err) {
      source.close();
      if (sock) {
        sockets.delete(sock);
        sock.close();
      }
      refuse(client, req, file, ERR_UNDEFINED, `cannot open transfer socket: ${(err as Error).message}`);
      return;
    }
    const tsock = sock;
    const options: Record<string, string | number> = { mode: req.mode, blksize: neg.blksize, windowsize: neg.windowsize };
    if (neg.timeoutSec !== null) options['timeout'] = neg.timeoutSec;
    if (req.options.has('tsize')) options['tsize'] = source.size;
    const maxRto = neg.timeoutSec !== null ? neg.timeoutSec * 1000 : t.maxRtoMs;
    const transfer = new Transfer({
      socket: tsock,
      source,
      blksize: neg.blksize,
      windowsize: neg.windowsize,
      oack: neg.oack.length > 0 ? encodeOack(neg.oack) : null,
      rto: { initialMs: Math.min(t.initialRtoMs, maxRto), minMs: Math.min(t.minRtoMs, maxRto), maxMs: maxRto },
      giveUpMs: t.giveUpMs,
      onDone: (r: TransferResult) => {
        transfers.delete(key);
        sockets.delete(tsock);
        tsock.close();
        const ev: TftpTransferEvent = {
          client, file, options, bytes: r.bytes, retransmits: r.retransmits, outcome: r.outcome,
          durationMs: Math.round((performance.now() - started) * 10) / 10,
        };
        if (r.error !== undefined) ev.error = r.error;
        emit(ev);
      },
    });
    transfers.set(key, transfer);
    logger.debug({ event: 'tftp.start', client, file, options });
    transfer.start();
  }

  listen.on('error', (err: Error) => logger.error({ event: 'tftp.socket_error', err: err.message }));
  listen.on('message', (msg: Buffer, rinfo) => {
    if (closed) return;
    const client = { address: rinfo.address, port: rinfo.port };
    if (client.port === 0) return; // cannot answer port 0
    const parsed = parseRequest(msg);
    if (!parsed.ok) {
      logger.debug({ event: 'tftp.bad_packet', client, bytes: msg.length, reason: parsed.reason });
      // Malformed RRQ/WRQ get ERROR 4. Anything else (stray DATA/ACK/ERROR/OACK, unknown opcodes,
      // runts) is dropped: answering tiny junk with larger errors would make us a UDP reflector.
      const op = msg.length >= 4 ? msg.readUInt16BE(0) : -1;
      if (op === OP_RRQ || op === OP_WRQ) replyError(client.address, client.port, ERR_ILLEGAL_OP, parsed.reason);
      return;
    }
    const req = parsed.value;
    if (req.opcode === OP_WRQ) {
      refuse(client, req, req.filename, ERR_ACCESS, 'read-only server: write requests are refused');
      return;
    }
    const key = `${client.address}|${client.port}`;
    const existing = transfers.get(key);
    if (existing?.awaitingFinalAck) {
      // The client has the whole file (only its last ACK got lost) and reuses its port for a new
      // request: end the old transfer instead of making the new one wait for its give-up timer.
      existing.abort('final ACK lost; the client sent a new request from the same port');
    } else if (transfers.has(key)) {
      existing?.onRepeatedRequest(); // a retransmitted RRQ: our first reply was lost
      return;
    }
    if (transfers.size >= t.maxTransfers) {
      refuse(client, req, req.filename, ERR_UNDEFINED, 'server busy');
      return;
    }
    transfers.set(key, null);
    handleRead(req, client, key)
      .catch((err: unknown) => {
        logger.error({ event: 'tftp.internal_error', client, err: String(err) });
        replyError(client.address, client.port, ERR_UNDEFINED, 'internal error');
      })
      .finally(() => {
        if (transfers.get(key) === null) transfers.delete(key);
      });
  });

  const addr = listen.address();
  logger.debug({ event: 'tftp.listening', address: addr.address, port: addr.port, root });

  return {
    address: () => ({ address: addr.address, port: addr.port }),
    close: async () => {
      if (closed) return;
      closed = true;
      for (const tr of transfers.values()) tr?.abort('server closing');
      transfers.clear();
      await Promise.all(
        [listen, ...sockets].map((s) => new Promise<void>((resolve) => {
          try {
            s.close(() => resolve());
          } catch {
            resolve();
          }
        })),
      );
      sockets.clear();
    },
  };
}
