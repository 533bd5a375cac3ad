/**
 * Minimal writer for the "newc" cpio format the Linux kernel unpacks as an initramfs.
 * Deterministic: entries sorted by path, fixed mtime, uid/gid 0, inode numbers by position.
 */
export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Buffer; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'chardev'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const PATH_RE = /^[A-Za-z0-9._+-]+(\/[A-Za-z0-9._+-]+)*$/;

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`cpio: field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}

function record(
  name: string,
  fields: { ino: number; mode: number; nlink: number; mtime: number; data: Buffer; rdevMajor: number; rdevMinor: number },
): Buffer {
  const nameBuf = Buffer.from(`${name}\0`, 'utf8');
  const header = Buffer.from(
    '070701' +
      hex8(fields.ino) +
      hex8(fields.mode) +
      hex8(0) + // uid
      hex8(0) + // gid
      hex8(fields.nlink) +
      hex8(fields.mtime) +
      hex8(fields.data.length) +
      hex8(0) + // devmajor
      hex8(0) + // devminor
      hex8(fields.rdevMajor) +
      hex8(fields.rdevMinor) +
      hex8(nameBuf.length) +
      hex8(0), // check
    'ascii',
  );
  return Buffer.concat([header, nameBuf, pad4(header.length + nameBuf.length), fields.data, pad4(fields.data.length)]);
}

/** Serialises `entries` (relative paths, no leading "/" or ".."), sorted, with the TRAILER!!! record. */
export function buildCpio(entries: readonly CpioEntry[], mtime = 0): Buffer {
  const seen = new Set<string>();
  for (const e of entries) {
    if (!PATH_RE.test(e.path) || e.path.split('/').some((c) => c === '.' || c === '..')) {
      throw new Error(`cpio: bad path "${e.path}"`);
    }
    if (seen.has(e.path)) throw new Error(`cpio: duplicate path "${e.path}"`);
    seen.add(e.path);
  }
  const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of sorted) {
    const base = { ino: ino++, mtime, rdevMajor: 0, rdevMinor: 0 };
    switch (e.type) {
      case 'dir':
        parts.push(record(e.path, { ...base, mode: S_IFDIR | (e.mode ?? 0o755), nlink: 2, data: Buffer.alloc(0) }));
        break;
      case 'file':
        parts.push(record(e.path, { ...base, mode: S_IFREG | (e.mode ?? 0o644), nlink: 1, data: e.data }));
        break;
      case 'symlink':
        parts.push(record(e.path, { ...base, mode: S_IFLNK | 0o777, nlink: 1, data: Buffer.from(e.target, 'utf8') }));
        break;
      case 'chardev':
        parts.push(
          record(e.path, {
            ...base,
            mode: S_IFCHR | (e.mode ?? 0o600),
            nlink: 1,
            data: Buffer.alloc(0),
            rdevMajor: e.major,
            rdevMinor: e.minor,
          }),
        );
        break;
    }
  }
  parts.push(record('TRAILER!!!', { ino: 0, mode: 0, nlink: 1, mtime: 0, data: Buffer.alloc(0), rdevMajor: 0, rdevMinor: 0 }));
  return Buffer.concat(parts);
}
