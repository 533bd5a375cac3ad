/** TFTP wire format (RFC 1350, RFC 2347 OACK). Pure functions, no I/O. */

export const OP_RRQ = 1;
export const OP_WRQ = 2;
export const OP_DATA = 3;
export const OP_ACK = 4;
export const OP_ERROR = 5;
export const OP_OACK = 6;

/** RFC 1350 / 2347 error codes. */
export const ERR_UNDEFINED = 0;
export const ERR_NOT_FOUND = 1;
export const ERR_ACCESS = 2;
export const ERR_ILLEGAL_OP = 4;
export const ERR_UNKNOWN_TID = 5;
export const ERR_OPTION = 8;

/** Longest request we parse: RRQ with a filename, mode and a handful of options. */
export const MAX_REQUEST_BYTES = 1024;

export interface Request {
  opcode: typeof OP_RRQ | typeof OP_WRQ;
  filename: string;
  mode: string;
  /** Option names lower-cased; first occurrence wins; values as sent. */
  options: Map<string, string>;
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Splits NUL-terminated ASCII strings; refuses non-printable bytes. */
function splitStrings(buf: Buffer, start: number): ParseResult<string[]> {
  const out: string[] = [];
  let pos = start;
  while (pos < buf.length) {
    const end = buf.indexOf(0, pos);
    if (end < 0) return { ok: false, reason: 'unterminated string' };
    for (let i = pos; i < end; i++) {
      const c = buf[i] as number;
      if (c < 0x20 || c > 0x7e) return { ok: false, reason: 'non-printable byte in request' };
    }
    out.push(buf.toString('latin1', pos, end));
    pos = end + 1;
  }
  return { ok: true, value: out };
}

export function parseRequest(buf: Buffer): ParseResult<Request> {
  if (buf.length < 4) return { ok: false, reason: 'packet too short' };
  if (buf.length > MAX_REQUEST_BYTES) return { ok: false, reason: 'request too long' };
  const opcode = buf.readUInt16BE(0);
  if (opcode !== OP_RRQ && opcode !== OP_WRQ) return { ok: false, reason: `unexpected opcode ${opcode}` };
  const parts = splitStrings(buf, 2);
  if (!parts.ok) return parts;
  const strs = parts.value;
  if (strs.length < 2) return { ok: false, reason: 'missing filename or mode' };
  if (strs.length % 2 !== 0) return { ok: false, reason: 'option without value' };
  const [filename, mode] = strs as [string, string];
  const options = new Map<string, string>();
  for (let i = 2; i < strs.length; i += 2) {
    const name = (strs[i] as string).toLowerCase();
    if (!options.has(name)) options.set(name, strs[i + 1] as string);
  }
  return { ok: true, value: { opcode, filename, mode: mode.toLowerCase(), options } };
}

/** Parses an ACK; returns the block number or null for anything else. */
export function parseAck(buf: Buffer): number | null {
  if (buf.length < 4 || buf.readUInt16BE(0) !== OP_ACK) return null;
  return buf.readUInt16BE(2);
}

export interface ErrorPacket {
  code: number;
  message: string;
}

export function parseError(buf: Buffer): ErrorPacket | null {
  if (buf.length < 4 || buf.readUInt16BE(0) !== OP_ERROR) return null;
  const end = buf.indexOf(0, 4);
  const raw = buf.toString('latin1', 4, end < 0 ? Math.min(buf.length, 4 + 256) : Math.min(end, 4 + 256));
  return { code: buf.readUInt16BE(2), message: raw.replace(/[^\x20-\x7e]/g, '?') };
}

export function encodeError(code: number, message: string): Buffer {
  const msg = Buffer.from(message.replace(/[^\x20-\x7e]/g, '?').slice(0, 200), 'latin1');
  const buf = Buffer.alloc(5 + msg.length);
  buf.writeUInt16BE(OP_ERROR, 0);
  buf.writeUInt16BE(code, 2);
  msg.copy(buf, 4);
  return buf;
}

export function encodeOack(options: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [Buffer.from([0, OP_OACK])];
  for (const [k, v] of options) parts.push(Buffer.from(`${k}\0${v}\0`, 'latin1'));
  return Buffer.concat(parts);
}

/** 4-byte DATA header; the payload is sent as a second buffer (no copy). */
export function encodeDataHeader(block: number): Buffer {
  const buf = Buffer.allocUnsafe(4);
  buf.writeUInt16BE(OP_DATA, 0);
  buf.writeUInt16BE(block & 0xffff, 2);
  return buf;
}
