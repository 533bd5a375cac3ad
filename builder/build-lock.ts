import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BuildError } from './mmdebstrap.js';

/** True when a process with this pid exists (EPERM: it exists, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * One `ramboot build` at a time per cache directory (<data-dir>/cache, which may be shared between
 * data dirs through a symlink): two builds would race on the apt cache, the cached roots and the
 * image swap. The lock is a file holding the builder's pid, created with O_EXCL; a lock whose
 * process is gone (a killed build) is taken over. Returns the release function.
 */
export async function acquireBuildLock(cacheDir: string): Promise<() => Promise<void>> {
  const file = join(cacheDir, '.build.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, 'wx', 0o644);
      try {
        await fh.writeFile(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      return async () => { await rm(file, { force: true }); };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const text = await readFile(file, 'utf8').catch(() => '');
    const pid = Number(text.trim());
    if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
      throw new BuildError('busy', `another ramboot build (pid ${pid}) is using ${cacheDir}: wait for it, or remove ${file} if that process is not a build`);
    }
    await rm(file, { force: true }); // stale: its build was killed
  }
  throw new BuildError('busy', `could not take the build lock ${file}: another build took it at the same moment`);
}
