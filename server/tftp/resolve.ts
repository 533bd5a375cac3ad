/**
 * Maps a TFTP filename to a file inside the served directory, by construction:
 * names are '/'-separated segments of [A-Za-z0-9._+~-] that do not start with '.', so '..', absolute
 * paths, backslashes, '%'-encodings and control bytes never reach the filesystem. The real path
 * (symlinks resolved) must still lie inside the root, or inside one of `symlinkRoots`.
 */
import { constants } from 'node:fs';
import { open, realpath, type FileHandle } from 'node:fs/promises';
import { sep } from 'node:path';
import { ERR_ACCESS, ERR_NOT_FOUND } from './packet.js';

const SEGMENT = /^[A-Za-z0-9_+~-][A-Za-z0-9._+~-]*$/;
export const MAX_NAME_LENGTH = 255;

export type NameCheck = { ok: true; segments: string[] } | { ok: false; reason: string };

export function checkName(name: string): NameCheck {
  if (name.length === 0) return { ok: false, reason: 'empty filename' };
  if (name.length > MAX_NAME_LENGTH) return { ok: false, reason: 'filename too long' };
  if (name.startsWith('/')) return { ok: false, reason: 'absolute filename' };
  const segments = name.split('/');
  for (const s of segments) {
    if (!SEGMENT.test(s)) return { ok: false, reason: 'filename has a forbidden segment or character' };
  }
  return { ok: true, segments };
}

function inside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

export interface OpenedFile {
  realPath: string;
  handle: FileHandle;
  size: number;
}

export type OpenResult = { ok: true; file: OpenedFile } | { ok: false; code: number; reason: string };

/**
 * Opens a served file read-only. `root` and `symlinkRoots` must already be real paths. On success the
 * caller owns (and must close) the handle.
 */
export async function openServedFile(root: string, symlinkRoots: readonly string[], name: string): Promise<OpenResult> {
  const check = checkName(name);
  if (!check.ok) return { ok: false, code: ERR_ACCESS, reason: check.reason };
  const joined = [root, ...check.segments].join(sep);
  let real: string;
  try {
    real = await realpath(joined);
  } catch {
    return { ok: false, code: ERR_NOT_FOUND, reason: 'file not found' };
  }
  if (!inside(real, root) && !symlinkRoots.some((r) => inside(real, r))) {
    return { ok: false, code: ERR_ACCESS, reason: 'file resolves outside the served directory' };
  }
  let handle: FileHandle;
  try {
    handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return { ok: false, code: ERR_NOT_FOUND, reason: 'file not readable' };
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) {
      await handle.close();
      return { ok: false, code: ERR_NOT_FOUND, reason: 'not a regular file' };
    }
    return { ok: true, file: { realPath: real, handle, size: st.size } };
  } catch {
    await handle.close().catch(() => undefined);
    return { ok: false, code: ERR_NOT_FOUND, reason: 'file not readable' };
  }
}

/** RFC 764 netascii: LF -> CR LF, CR -> CR NUL. */
export function toNetascii(data: Buffer): Buffer {
  let extra = 0;
  for (let i = 0; i < data.length; i++) {
    const c = data[i];
    if (c === 0x0a || c === 0x0d) extra++;
  }
  if (extra === 0) return data;
  const out = Buffer.allocUnsafe(data.length + extra);
  let o = 0;
  for (let i = 0; i < data.length; i++) {
    const c = data[i] as number;
    if (c === 0x0a) {
      out[o++] = 0x0d;
      out[o++] = 0x0a;
    } else if (c === 0x0d) {
      out[o++] = 0x0d;
      out[o++] = 0x00;
    } else out[o++] = c;
  }
  return out;
}
