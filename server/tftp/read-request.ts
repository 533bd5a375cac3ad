/**
 * Turns a parsed RRQ into what a transfer needs: the opened file (or its netascii form), the negotiated
 * options, the OACK and the retransmission timeout bounds. Or into a refusal with its TFTP error code.
 */
import { encodeOack, ERR_ACCESS, ERR_ILLEGAL_OP, type Request } from './packet.js';
import type { ServerConfig } from './config.js';
import { printable } from './events.js';
import { negotiate } from './options.js';
import { openServedFile, toNetascii } from './resolve.js';
import { BufferSource, FileSource, type BlockSource } from './source.js';
import type { RtoConfig } from './transfer.js';

export interface PreparedRead {
  /** The caller owns it and must close it (a Transfer closes it when it ends). */
  source: BlockSource;
  blksize: number;
  windowsize: number;
  oack: Buffer | null;
  /** What the transfer event reports: mode and the negotiated options. */
  options: Record<string, string | number>;
  rto: RtoConfig;
}

export type PrepareResult = { ok: true; read: PreparedRead } | { ok: false; code: number; reason: string };

export async function prepareRead(req: Request, cfg: ServerConfig): Promise<PrepareResult> {
  if (req.mode !== 'octet' && req.mode !== 'netascii') {
    return { ok: false, code: ERR_ILLEGAL_OP, reason: `unsupported mode ${printable(req.mode)}` };
  }
  const opened = await openServedFile(cfg.root, cfg.symlinkRoots, req.filename);
  if (!opened.ok) return opened;
  const { handle, size } = opened.file;
  if (size > cfg.maxFileBytes) {
    await handle.close();
    return { ok: false, code: ERR_ACCESS, reason: 'file too large' };
  }
  const ascii = req.mode === 'netascii' ? toNetascii(await handle.readFile().finally(() => handle.close())) : null;
  const neg = negotiate(req.options, ascii ? ascii.length : size, cfg);
  const source: BlockSource = ascii ? new BufferSource(ascii) : new FileSource(handle, size, neg.blksize * neg.windowsize);
  const options: Record<string, string | number> = { mode: req.mode, blksize: neg.blksize, windowsize: neg.windowsize };
  if (neg.timeoutSec !== null) options['timeout'] = neg.timeoutSec;
  if (req.options.has('tsize')) options['tsize'] = source.size;
  // The client's `timeout` option caps the retransmission timeout: it retries on that timer itself.
  const maxRto = neg.timeoutSec !== null ? neg.timeoutSec * 1000 : cfg.maxRtoMs;
  return {
    ok: true,
    read: {
      source,
      blksize: neg.blksize,
      windowsize: neg.windowsize,
      oack: neg.oack.length > 0 ? encodeOack(neg.oack) : null,
      options,
      rto: { initialMs: Math.min(cfg.initialRtoMs, maxRto), minMs: Math.min(cfg.minRtoMs, maxRto), maxMs: maxRto },
    },
  };
}
