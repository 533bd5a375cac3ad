// Helpers for the hook and fix tests: fixture trees in temp dirs, snapshots for idempotency.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, readlinkSync, lstatSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Files to create: content string, or { link } for a symlink, or { dir: true }. */
export type TreeSpec = Record<string, string | { link: string } | { dir: true }>;

export function makeTree(root: string, spec: TreeSpec): void {
  for (const [rel, what] of Object.entries(spec)) {
    const p = join(root, rel);
    mkdirSync(dirname(p), { recursive: true });
    if (typeof what === 'string') writeFileSync(p, what);
    else if ('link' in what) symlinkSync(what.link, p);
    else mkdirSync(p, { recursive: true });
  }
}

/** Every path under root with its type, mode, link target or content hash. */
export function snapshot(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    const p = join(root, rel);
    const st = lstatSync(p);
    const mode = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) out[rel] = `link ${readlinkSync(p)}`;
    else if (st.isDirectory()) {
      out[rel] = `dir ${mode}`;
      for (const name of readdirSync(p).sort()) walk(rel === '' ? name : `${rel}/${name}`);
    } else out[rel] = `file ${mode} ${st.uid}:${st.gid} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
  };
  walk('');
  return out;
}

export function read(root: string, rel: string): string {
  return readFileSync(join(root, rel), 'utf8');
}
