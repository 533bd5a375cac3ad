import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CACHE_DIR } from './paths.js';
import { runOk } from '../../common/run.js';

/**
 * A real Debian cloud kernel for tests, fetched with `apt-get download` + `dpkg -x` (never installed),
 * cached in <repo>/.cache/test-kernel/<package>/vmlinuz. Safe when several processes ask at once: each
 * unpacks into its own temp dir and renames the result into place; the first rename wins.
 *
 * RAMBOOT_TEST_KERNEL=/path/to/vmlinuz overrides the download.
 */
export const TEST_KERNEL_DIR = join(CACHE_DIR, 'test-kernel');
const META_PACKAGE = 'linux-image-cloud-amd64';
const PKG_RE = /^linux-image-[0-9][a-z0-9.+-]*-cloud-amd64$/;
const STALE_TMP_MS = 60 * 60 * 1000;

/** Name of the kernel package the cloud meta-package currently depends on (from the local apt lists). */
export async function currentKernelPackage(): Promise<string> {
  const { stdout } = await runOk('apt-cache', ['depends', META_PACKAGE], { timeoutMs: 60_000 });
  for (const line of stdout.split('\n')) {
    const m = /^\s*Depends:\s*(\S+)\s*$/.exec(line);
    if (m?.[1] && PKG_RE.test(m[1])) return m[1];
  }
  throw new Error(`could not find the kernel package ${META_PACKAGE} depends on (is "apt-get update" done?):\n${stdout}`);
}

async function cachedKernels(cacheDir: string): Promise<string[]> {
  if (!existsSync(cacheDir)) return [];
  const names = (await readdir(cacheDir)).filter((n) => PKG_RE.test(n)).sort();
  return names.map((n) => join(cacheDir, n, 'vmlinuz')).filter((p) => existsSync(p));
}

async function removeStaleTemps(cacheDir: string): Promise<void> {
  if (!existsSync(cacheDir)) return;
  for (const n of await readdir(cacheDir)) {
    if (!n.startsWith('.tmp-')) continue;
    const p = join(cacheDir, n);
    try {
      if (Date.now() - (await stat(p)).mtimeMs > STALE_TMP_MS) await rm(p, { recursive: true, force: true });
    } catch {
      // another process is cleaning it
    }
  }
}

async function download(pkg: string, cacheDir: string): Promise<string> {
  const finalDir = join(cacheDir, pkg);
  const vmlinuz = join(finalDir, 'vmlinuz');
  if (existsSync(vmlinuz)) return vmlinuz;
  await mkdir(cacheDir, { recursive: true });
  await removeStaleTemps(cacheDir);
  const tmp = await mkdtemp(join(cacheDir, `.tmp-${pkg}-`));
  try {
    await runOk('apt-get', ['download', '-q', pkg], { cwd: tmp, timeoutMs: 600_000 });
    const deb = (await readdir(tmp)).find((n) => n.endsWith('.deb'));
    if (!deb) throw new Error(`apt-get download ${pkg} produced no .deb`);
    const root = join(tmp, 'root');
    await runOk('dpkg', ['-x', join(tmp, deb), root], { timeoutMs: 600_000 });
    const boot = join(root, 'boot');
    const kernels = (await readdir(boot)).filter((n) => n.startsWith('vmlinuz-'));
    if (kernels.length !== 1 || kernels[0] === undefined) {
      throw new Error(`expected one boot/vmlinuz-* in ${deb}, found: ${kernels.join(', ') || 'none'}`);
    }
    const out = join(tmp, 'out');
    await mkdir(out);
    await copyFile(join(boot, kernels[0]), join(out, 'vmlinuz'));
    try {
      await rename(out, finalDir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // Another process won the race: use its copy.
      if (!((code === 'EEXIST' || code === 'ENOTEMPTY') && existsSync(vmlinuz))) throw e;
    }
    return vmlinuz;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Path of a real Debian cloud-amd64 vmlinuz (downloaded on first use). `cacheDir` is for the cache's
 * own tests; everyone else shares the default.
 */
export async function ensureTestKernel(cacheDir = TEST_KERNEL_DIR): Promise<string> {
  const override = process.env['RAMBOOT_TEST_KERNEL'];
  if (cacheDir === TEST_KERNEL_DIR && override !== undefined && override !== '') {
    if (!existsSync(override)) throw new Error(`RAMBOOT_TEST_KERNEL=${override} does not exist`);
    return override;
  }
  let pkg: string;
  try {
    pkg = await currentKernelPackage();
  } catch (e) {
    // Offline or no apt lists: any kernel cached earlier will do.
    const cached = await cachedKernels(cacheDir);
    const last = cached[cached.length - 1];
    if (last !== undefined) return last;
    throw e;
  }
  return download(pkg, cacheDir);
}
