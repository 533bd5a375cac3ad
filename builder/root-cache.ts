import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, copyFile, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk } from '../common/run.js';
import { HOOK_SCRIPT, MMDEBSTRAP_ARGS_VERSION } from './mmdebstrap.js';

/**
 * Cache of mmdebstrap's output (<data-dir>/cache/roots/<key>/): the root as a tar.zst plus the
 * files the customize hook handed over. The key covers everything mmdebstrap's result depends on,
 * including the suite's InRelease (so a mirror update means a fresh root): a warm rebuild skips
 * the package install, which is most of a cold build's time (dpkg in a chroot on 2 cores).
 */
const OUT_FILES = ['kernel.deb', 'busybox.deb', 'kernel.txt', 'packages.tsv'];
const KEEP = 3;

export async function rootKey(k: {
  suite: string; mirror: string; packages: string[]; sourceDateEpoch: number; inRelease: string;
}): Promise<string> {
  const h = createHash('sha256');
  h.update(JSON.stringify({
    v: MMDEBSTRAP_ARGS_VERSION, suite: k.suite, mirror: k.mirror, packages: [...k.packages].sort(),
    epoch: k.sourceDateEpoch, inRelease: k.inRelease,
  }));
  h.update(await readFile(HOOK_SCRIPT));
  return h.digest('hex').slice(0, 24);
}

/** Restores a cached root into rootDir and its hook outputs into outDir; false on a miss. */
export async function restoreRoot(cacheDir: string, key: string, rootDir: string, outDir: string): Promise<boolean> {
  const dir = join(cacheDir, 'roots', key);
  if (!existsSync(join(dir, 'complete'))) return false;
  await mkdir(rootDir, { recursive: true });
  await runOk('tar', ['-C', rootDir, '--numeric-owner', '--xattrs', '--xattrs-include=*', '-I', 'zstd -d -T0',
    '-xpf', join(dir, 'root.tar.zst')]);
  await mkdir(outDir, { recursive: true });
  for (const f of OUT_FILES) await copyFile(join(dir, f), join(outDir, f));
  const now = new Date();
  await utimes(join(dir, 'complete'), now, now);
  return true;
}

/** Stores rootDir (+ outDir files) under key, then keeps only the most recently used roots. */
export async function storeRoot(cacheDir: string, key: string, rootDir: string, outDir: string): Promise<void> {
  const roots = join(cacheDir, 'roots');
  const tmp = join(roots, `.${key}.tmp-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    await runOk('tar', ['-C', rootDir, '--numeric-owner', '--xattrs', '--xattrs-include=*', '-I', 'zstd -1 -T0',
      '-cf', join(tmp, 'root.tar.zst'), '.']);
    for (const f of OUT_FILES) await copyFile(join(outDir, f), join(tmp, f));
    await copyFile(join(outDir, 'kernel.txt'), join(tmp, 'complete'));
    await rm(join(roots, key), { recursive: true, force: true });
    await rename(tmp, join(roots, key));
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  const entries: Array<{ name: string; used: number }> = [];
  for (const name of await readdir(roots)) {
    const c = join(roots, name, 'complete');
    if (existsSync(c)) entries.push({ name, used: (await stat(c)).mtimeMs });
  }
  entries.sort((a, b) => b.used - a.used);
  for (const e of entries.slice(KEEP)) await rm(join(roots, e.name), { recursive: true, force: true });
}
