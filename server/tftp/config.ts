/** The TFTP server's options, their defaults and their checks. */
import { realpath, stat } from 'node:fs/promises';
import type { Logger } from '../../common/log.js';
import type { TftpRefusedEvent, TftpTransferEvent } from './events.js';

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
  /**
   * Concurrent transfers, all clients together. A request beyond it is dropped without an answer and
   * reported to `onRefused`. Default 256.
   */
  maxTransfers?: number;
  /**
   * Concurrent transfers per client IP address (any port), so one address cannot take the whole pool.
   * A request beyond it is dropped without an answer and reported to `onRefused`. Default 8.
   */
  maxTransfersPerClient?: number;
  /** Called for each request dropped by `maxTransfers` or `maxTransfersPerClient`. */
  onRefused?: (ev: TftpRefusedEvent) => void;
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
  /**
   * How often the first reply (OACK or DATA 1) is resent on the server's timer before the client has
   * ACKed anything. Such a client may be a spoofed address: every resend is traffic aimed at a third
   * party. A real client that lost the reply sends its RRQ again, and each repeat is answered. Default 1.
   */
  firstReplyRetransmits?: number;
  /** How often one window is resent on the timer while no ACK advances it. Default 10. */
  windowRetransmits?: number;
}

/** Options with defaults applied and paths resolved. */
export interface ServerConfig {
  host: string;
  port: number;
  /** Real path of the served directory. */
  root: string;
  /** Real paths. */
  symlinkRoots: string[];
  maxBlksize: number;
  maxWindowsize: number;
  maxWindowBytes: number;
  maxTransfers: number;
  maxTransfersPerClient: number;
  maxFileBytes: number;
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  giveUpMs: number;
  firstReplyRetransmits: number;
  windowRetransmits: number;
}

function intIn(name: string, v: number | undefined, def: number, min: number, max: number): number {
  const n = v ?? def;
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`tftp: ${name} must be an integer in ${min}..${max}, got ${String(v)}`);
  return n;
}

/** Checks the numbers, applies the defaults and resolves the served directories to real paths. */
export async function resolveConfig(opts: TftpServerOptions): Promise<ServerConfig> {
  const numbers = {
    port: intIn('port', opts.port, 0, 0, 65535),
    maxBlksize: intIn('maxBlksize', opts.maxBlksize, 65464, 512, 65464),
    maxWindowsize: intIn('maxWindowsize', opts.maxWindowsize, 64, 1, 65535),
    maxWindowBytes: intIn('maxWindowBytes', opts.maxWindowBytes, 65536, 512, 2 ** 30),
    maxTransfers: intIn('maxTransfers', opts.maxTransfers, 256, 1, 65536),
    maxFileBytes: intIn('maxFileBytes', opts.maxFileBytes, 512 * 1024 * 1024, 0, 2 ** 32),
    initialRtoMs: intIn('initialRtoMs', opts.initialRtoMs, 500, 1, 60_000),
    minRtoMs: intIn('minRtoMs', opts.minRtoMs, 20, 1, 60_000),
    maxRtoMs: intIn('maxRtoMs', opts.maxRtoMs, 6000, 1, 255_000),
    giveUpMs: intIn('giveUpMs', opts.giveUpMs, 30_000, 1, 3_600_000),
    firstReplyRetransmits: intIn('firstReplyRetransmits', opts.firstReplyRetransmits, 1, 0, 100),
    windowRetransmits: intIn('windowRetransmits', opts.windowRetransmits, 10, 0, 1000),
  };
  const maxTransfersPerClient = Math.min(numbers.maxTransfers, intIn('maxTransfersPerClient', opts.maxTransfersPerClient, 8, 1, 65536));
  const root = await realpath(opts.root).catch((err: NodeJS.ErrnoException) => {
    throw new Error(`tftp: served directory ${opts.root} is not usable: ${err.code ?? err.message}`);
  });
  if (!(await stat(root)).isDirectory()) throw new Error(`tftp: served directory ${opts.root} is not a directory`);
  const symlinkRoots: string[] = [];
  for (const r of opts.symlinkRoots ?? []) {
    symlinkRoots.push(await realpath(r).catch(() => { throw new Error(`tftp: symlink root ${r} does not exist`); }));
  }
  return { host: opts.host, root, symlinkRoots, ...numbers, maxTransfersPerClient };
}
