import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';

export type FileCheck = { ok: true } | { ok: false; reason: string };

interface Verified {
  size: number;
  mtimeMs: number;
  ino: number;
  sha256: string;
  result: Promise<FileCheck>;
}

/**
 * Checks image files against what their manifest says before they are served: size, inode and mtime
 * on every request (one stat), the sha256 only when those changed since the file was last hashed
 * (once per file per change, shared by concurrent requests). A file replaced or damaged on disk is
 * refused instead of being booted.
 */
export class FileVerifier {
  private known = new Map<string, Verified>();

  async check(path: string, want: { size: number; sha256: string }): Promise<FileCheck> {
    let st;
    try {
      st = await stat(path);
    } catch (e) {
      this.known.delete(path);
      return { ok: false, reason: (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing on disk' : `cannot stat: ${(e as Error).message}` };
    }
    if (st.size !== want.size) {
      this.known.delete(path);
      return { ok: false, reason: `is ${st.size} bytes on disk but the manifest says ${want.size}` };
    }
    const k = this.known.get(path);
    if (k && k.size === st.size && k.mtimeMs === st.mtimeMs && k.ino === st.ino && k.sha256 === want.sha256) return k.result;
    const result = sha256Of(path).then(
      (got): FileCheck => (got === want.sha256 ? { ok: true } : { ok: false, reason: `sha256 on disk is ${got.slice(0, 16)}..., the manifest says ${want.sha256.slice(0, 16)}...` }),
      (e: Error): FileCheck => ({ ok: false, reason: `cannot read: ${e.message}` }),
    );
    this.known.set(path, { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, sha256: want.sha256, result });
    // a failed read is not remembered: the next request tries again
    void result.then((r) => {
      if (!r.ok && r.reason.startsWith('cannot read')) this.known.delete(path);
    });
    return result;
  }
}

function sha256Of(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path, { highWaterMark: 1 << 20 })
      .on('data', (d) => h.update(d))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}
