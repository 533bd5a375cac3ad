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
import type { RetransmitBudget, RtoConfig } from './transfer.js';

/**
 * Bytes a transfer may resend in all: eight times the file, plus 16 full windows so that small files
 * can ride out loss too. Windows are go-back-N: a gap resends the rest of the window, so loss costs
 * more at larger windows. At 5% loss, 5% duplication and 10% reordering each way, windowsize 16 resends
 * about 2.5 times the file (loss.test.ts prints the worst ratio). A peer that acknowledges one block at
 * a time inside each window, making the server resend the rest every time, runs into the cap instead
 * of drawing up to windowsize times the file.
 */
export const RESEND_FILE_FACTOR = 8;
export const RESEND_WINDOWS = 16;

function resendBytesBudget(size: number, blksize: number, windowsize: number): number {
  return RESEND_FILE_FACTOR * size + RESEND_WINDOWS * (blksize + 4) * windowsize;
}

export interface PreparedRead {
  /** The caller owns it and must close it (a Transfer closes it when it ends). */
  source: BlockSource;
  blksize: number;
  windowsize: number;
  oack: Buffer | null;
  /** What the transfer event reports: mode and the negotiated options. */
  options: Record<string, string | number>;
  rto: RtoConfig;
  budget: RetransmitBudget;
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
      budget: {
        firstReply: cfg.firstReplyRetransmits,
        perWindow: cfg.windowRetransmits,
        totalBytes: resendBytesBudget(source.size, neg.blksize, neg.windowsize),
      },
    },
  };
}
