/** RFC 2347 option negotiation for read requests: blksize (2348), tsize/timeout (2349), windowsize (7440). */

export const DEFAULT_BLKSIZE = 512;
export const MIN_BLKSIZE = 8;
export const MAX_BLKSIZE = 65464;

export interface NegotiationLimits {
  /** Largest blksize we agree to (clients asking more get this). */
  maxBlksize: number;
  /** Largest windowsize we agree to. */
  maxWindowsize: number;
  /** Largest burst (windowsize * blksize) we agree to: bigger bursts overflow client socket buffers. */
  maxWindowBytes: number;
}

export interface Negotiated {
  blksize: number;
  windowsize: number;
  /** Client-requested retransmission timeout in seconds, or null when not negotiated. */
  timeoutSec: number | null;
  /** Options to acknowledge in an OACK, in request order; empty means: no OACK, start with DATA 1. */
  oack: Array<[string, string]>;
}

function parseUint(value: string): number | null {
  return /^[0-9]{1,10}$/.test(value) ? Number(value) : null;
}

/**
 * Decides which requested options we accept. Unknown or malformed options are ignored (RFC 2347:
 * the server simply leaves them out of the OACK). `size` is the number of bytes the transfer will carry.
 */
export function negotiate(requested: ReadonlyMap<string, string>, size: number, limits: NegotiationLimits): Negotiated {
  const out: Negotiated = { blksize: DEFAULT_BLKSIZE, windowsize: 1, timeoutSec: null, oack: [] };
  for (const [name, raw] of requested) {
    const n = parseUint(raw);
    if (n === null) continue;
    switch (name) {
      case 'blksize': {
        if (n < MIN_BLKSIZE) break;
        out.blksize = Math.min(n, limits.maxBlksize, MAX_BLKSIZE);
        out.oack.push([name, String(out.blksize)]);
        break;
      }
      case 'tsize':
        out.oack.push([name, String(size)]);
        break;
      case 'timeout':
        if (n < 1 || n > 255) break;
        out.timeoutSec = n;
        out.oack.push([name, String(n)]);
        break;
      case 'windowsize': {
        if (n < 1 || n > 65535) break;
        out.windowsize = Math.min(n, limits.maxWindowsize);
        out.oack.push([name, '']); // value filled in below, once blksize is known
        break;
      }
      default:
        break;
    }
  }
  out.windowsize = Math.max(1, Math.min(out.windowsize, Math.floor(limits.maxWindowBytes / out.blksize)));
  for (const o of out.oack) if (o[0] === 'windowsize') o[1] = String(out.windowsize);
  return out;
}
