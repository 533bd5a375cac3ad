import { open, lstat, readdir, readlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A deterministic writer for the kernel's initramfs format ("newc" cpio, uncompressed).
 * Every byte depends only on the entries given: inode numbers are assigned in order, owners are
 * root unless stated, mtimes are the caller's fixed timestamp. No hard links are emitted.
 */
export type CpioEntry =
  | { type: 'dir'; path: string; mode: number }
  | { type: 'file'; path: string; mode: number; source: string }
  | { type: 'data'; path: string; mode: number; data: Buffer }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char'; path: string; mode: number; major: number; minor: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const CHUNK = 1 << 20;

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`cpio: field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function header(f: {
  ino: number; mode: number; nlink: number; mtime: number; size: number;
  rmajor: number; rminor: number; name: string;
}): Buffer {
  const name = Buffer.from(`${f.name}\0`, 'utf8');
  const fields = [f.ino, f.mode, 0, 0, f.nlink, f.mtime, f.size, 0, 0, f.rmajor, f.rminor, name.length, 0];
  const head = Buffer.from(`070701${fields.map(hex8).join('')}`, 'ascii');
  return Buffer.concat([head, name, Buffer.alloc(pad4(head.length + name.length))]);
}

function checkPath(p: string): string {
  const clean = p.replace(/^\/+/, '');
  if (clean === '' || clean.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    throw new Error(`cpio: bad entry path "${p}"`);
  }
  return clean;
}

type InMemoryEntry = Exclude<CpioEntry, { type: 'file' }>;
type Base = { ino: number; mtime: number; rmajor: number; rminor: number; name: string };

/** Header and payload of an entry whose content is in memory (everything but 'file'). */
function encodeInMemory(e: InMemoryEntry, base: Base): Buffer {
  switch (e.type) {
    case 'dir':
      return header({ ...base, mode: S_IFDIR | (e.mode & 0o7777), nlink: 2, size: 0 });
    case 'symlink': {
      const data = Buffer.from(e.target, 'utf8');
      return Buffer.concat([header({ ...base, mode: S_IFLNK | 0o777, nlink: 1, size: data.length }), data, Buffer.alloc(pad4(data.length))]);
    }
    case 'char':
      return header({ ...base, mode: S_IFCHR | (e.mode & 0o7777), nlink: 1, size: 0, rmajor: e.major, rminor: e.minor });
    case 'data':
      return Buffer.concat([header({ ...base, mode: S_IFREG | (e.mode & 0o7777), nlink: 1, size: e.data.length }), e.data, Buffer.alloc(pad4(e.data.length))]);
  }
}

function trailer(offset: number): Buffer {
  const t = header({ ino: 0, mode: 0, nlink: 1, mtime: 0, size: 0, rmajor: 0, rminor: 0, name: 'TRAILER!!!' });
  // Pad to a 512-byte boundary like GNU cpio, so concatenated archives stay aligned.
  return Buffer.concat([t, Buffer.alloc((512 - ((offset + t.length) % 512)) % 512)]);
}

/** The same archive as writeCpio, in memory, for entries whose content is in memory (small initrds, tests). */
export function cpioBuffer(entries: readonly InMemoryEntry[], mtime: number): Buffer {
  const parts: Buffer[] = [];
  const seen = new Set<string>();
  let ino = 1;
  let offset = 0;
  for (const e of entries) {
    const name = checkPath(e.path);
    if (seen.has(name)) throw new Error(`cpio: duplicate entry "${name}"`);
    seen.add(name);
    const b = encodeInMemory(e, { ino: ino++, mtime, rmajor: 0, rminor: 0, name });
    parts.push(b);
    offset += b.length;
  }
  parts.push(trailer(offset));
  return Buffer.concat(parts);
}

class Out {
  offset = 0;
  constructor(private readonly fh: FileHandle) {}
  async write(buf: Buffer): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, done, buf.length - done);
      done += bytesWritten;
    }
    this.offset += buf.length;
  }
}

async function copyFile(out: Out, source: string, size: number): Promise<void> {
  const fh = await open(source, 'r');
  try {
    const buf = Buffer.allocUnsafe(CHUNK);
    let pos = 0;
    while (pos < size) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, size - pos), pos);
      if (bytesRead === 0) throw new Error(`cpio: ${source} shrank while being archived`);
      await out.write(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

/** Writes `entries` (in the given order) as a newc archive to `outFile`. Returns its size. */
export async function writeCpio(outFile: string, entries: CpioEntry[], mtime: number): Promise<number> {
  const fh = await open(outFile, 'w', 0o644);
  const out = new Out(fh);
  try {
    let ino = 1;
    const seen = new Set<string>();
    for (const e of entries) {
      const name = checkPath(e.path);
      if (seen.has(name)) throw new Error(`cpio: duplicate entry "${name}"`);
      seen.add(name);
      const base = { ino: ino++, mtime, rmajor: 0, rminor: 0, name };
      switch (e.type) {
        case 'dir':
        case 'symlink':
        case 'char':
        case 'data':
          await out.write(encodeInMemory(e, base));
          break;
        case 'file': {
          const st = await lstat(e.source);
          if (!st.isFile()) throw new Error(`cpio: ${e.source} is not a regular file`);
          await out.write(header({ ...base, mode: S_IFREG | (e.mode & 0o7777), nlink: 1, size: st.size }));
          await copyFile(out, e.source, st.size);
          await out.write(Buffer.alloc(pad4(st.size)));
          break;
        }
      }
    }
    await out.write(trailer(out.offset));
    return out.offset;
  } finally {
    await fh.close();
  }
}

/**
 * Entries for every file under `dir`, parents before children, names in byte order, permissions
 * kept, owners and times dropped (the archive is root-owned with one fixed mtime).
 */
export async function entriesFromDir(dir: string, prefix = ''): Promise<CpioEntry[]> {
  const out: CpioEntry[] = [];
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(dir, rel))).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      const abs = join(dir, r);
      const st = await lstat(abs);
      const path = prefix ? `${prefix}/${r}` : r;
      if (st.isDirectory()) {
        out.push({ type: 'dir', path, mode: st.mode });
        await walk(r);
      } else if (st.isSymbolicLink()) {
        out.push({ type: 'symlink', path, target: await readlink(abs) });
      } else if (st.isFile()) {
        out.push({ type: 'file', path, mode: st.mode, source: abs });
      } else {
        throw new Error(`cpio: unsupported file type at ${abs}`);
      }
    }
  };
  await walk('');
  return out;
}
