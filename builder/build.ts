import { mkdir, mkdtemp, rm, rename, readFile, writeFile, copyFile, statfs, stat, access, lstat, readdir, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { rootKey, restoreRoot, storeRoot } from './root-cache.js';
import type { Logger } from '../common/log.js';
import { manifestSchema, type ImageManifest } from '../common/manifest.js';
import type { BuildOptions } from './options.js';
import { packagesFor } from './packages.js';
import { debootstrap, BuildError } from './mmdebstrap.js';
import { installKernel, initrdModules } from './kernel.js';
import { assembleInitrd, sha256File, KERNEL_RESERVED_MIB } from './initrd.js';
import { checkRootSafe } from './essentials.js';
import { runHooks } from './hooks.js';
import { runOk } from '../common/run.js';
import { checkPackagesExist } from './apt-check.js';
import { acquireBuildLock } from './build-lock.js';

export { BuildError };

/** Free space a build needs in the data dir (root tree, squashfs, initrd, cache growth). */
export const MIN_FREE_BYTES = 3 * 1024 ** 3;
/**
 * quiet: every console line costs boot time (QEMU's UART runs at the set baud rate); errors still show.
 * rootfstype=ramfs: the kernel's rootfs (which holds /root.squashfs) is then ramfs, not a tmpfs capped
 * at half of the RAM left beside the loaded initrd: with the cap a 121 MiB root image did not even
 * unpack at 384 MiB ("Initramfs unpacking failed: write error"); without it it boots at 352 MiB.
 * It names no root device: the kernel still runs /init from the initramfs. Never add root=.
 */
export const DEFAULT_CMDLINE = 'console=tty0 console=ttyS0,115200n8 quiet rootfstype=ramfs ramboot.root=overlay';
const HOST_TOOLS = ['mmdebstrap', 'mksquashfs', 'dpkg-deb', 'chroot'];

export interface BuildResult {
  imageDir: string;
  manifest: ImageManifest;
  seconds: number;
}

async function which(tool: string): Promise<boolean> {
  for (const dir of (process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    try {
      await access(join(dir, tool));
      return true;
    } catch { /* next */ }
  }
  return false;
}

/** Quick checks before the long part; returns the sha256 of the suite's InRelease (cache key). */
export async function preflight(o: BuildOptions): Promise<string> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new BuildError('not-root', 'ramboot build must run as root (mmdebstrap root mode, chroot and device nodes need it): run it with sudo');
  }
  const missing: string[] = [];
  for (const t of HOST_TOOLS) if (!(await which(t))) missing.push(t);
  if (missing.length) throw new BuildError('missing-tool', `missing host tools: ${missing.join(', ')} (run scripts/setup-system.sh)`);
  await mkdir(o.dataDir, { recursive: true });
  const fs = await statfs(o.dataDir);
  const free = fs.bavail * fs.bsize;
  if (free < MIN_FREE_BYTES) {
    throw new BuildError('no-space', `no space left for a build in ${o.dataDir}: ${Math.floor(free / 1048576)} MiB free, need ${MIN_FREE_BYTES / 1048576} MiB`);
  }
  let res: Response;
  const url = `${o.mirror}/dists/${o.suite}/InRelease`;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(30_000), redirect: 'follow' });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new BuildError('mirror-unreachable', `mirror unreachable: ${o.mirror} (${cause?.code ?? cause?.message ?? (err as Error).message})`);
  }
  if (res.status === 404) throw new BuildError('unknown-suite', `unknown suite "${o.suite}" on mirror ${o.mirror} (${url}: 404)`);
  if (!res.ok) throw new BuildError('mirror-unreachable', `mirror ${o.mirror} answered ${res.status} for ${url}`);
  return createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex');
}

async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    for (const n of await readdir(d)) {
      const p = join(d, n);
      const st = await lstat(p);
      if (st.isDirectory()) await walk(p);
      else total += st.isFile() ? st.size : 0;
    }
  };
  await walk(dir);
  return total;
}

/** Removes what must not ship and what only the build needed. */
async function cleanRoot(root: string): Promise<void> {
  for (const d of ['var/lib/apt/lists', 'var/cache/apt', 'var/log', 'tmp', 'var/tmp']) {
    const p = join(root, d);
    for (const n of await readdir(p).catch(() => [] as string[])) {
      if (d === 'var/lib/apt/lists' && n === 'partial') continue;
      await rm(join(p, n), { recursive: true, force: true });
    }
  }
}

function parsePackages(tsv: string): Array<{ name: string; version: string }> {
  return tsv.split('\n').filter((l) => l.includes('\t')).map((l) => {
    const [name = '', version = ''] = l.split('\t');
    return { name, version };
  }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** `ramboot build`: root with mmdebstrap, kernel, hooks, initrd, manifest, then an atomic swap. */
export async function build(o: BuildOptions, logger: Logger): Promise<BuildResult> {
  const started = Date.now();
  const inRelease = await preflight(o);
  const imagesDir = join(o.dataDir, 'images');
  const cacheDir = join(o.dataDir, 'cache', 'apt');
  const buildsDir = join(o.dataDir, 'build');
  await mkdir(imagesDir, { recursive: true });
  await mkdir(cacheDir, { recursive: true });
  await mkdir(buildsDir, { recursive: true });
  const releaseLock = await acquireBuildLock(join(o.dataDir, 'cache'));
  try {
    return await buildLocked(o, logger, { started, inRelease, imagesDir, cacheDir, buildsDir });
  } finally {
    await releaseLock();
  }
}

/** Where one build works: temp dirs it removes at the end, and the shared dirs it reads and fills. */
interface BuildDirs {
  imagesDir: string;
  cacheDir: string;
  /** Scratch: the root tree, the downloaded .debs, the squashfs. */
  work: string;
  /** The new image directory, renamed into place at the end. */
  staging: string;
  root: string;
  /** mmdebstrap's outputs: kernel.deb, busybox.deb, packages.tsv, kernel.txt. */
  out: string;
}

async function buildLocked(
  o: BuildOptions, logger: Logger,
  c: { started: number; inRelease: string; imagesDir: string; cacheDir: string; buildsDir: string },
): Promise<BuildResult> {
  const { started, inRelease, imagesDir, cacheDir, buildsDir } = c;
  await checkPackagesExist({ mirror: o.mirror, suite: o.suite, names: o.include, cacheDir });
  const work = await mkdtemp(join(buildsDir, `${o.name}-`));
  const staging = await mkdtemp(join(imagesDir, `.${o.name}.tmp-`));
  const d: BuildDirs = { imagesDir, cacheDir, work, staging, root: join(work, 'root'), out: join(work, 'out') };
  logger.info({ event: 'build.start', name: o.name, flavour: o.flavour, suite: o.suite, mirror: o.mirror, work });
  try {
    await prepareRoot(o, logger, d, inRelease);
    logger.info({ event: 'build.step', step: 'kernel' });
    const kernel = await installKernel(join(d.out, 'kernel.deb'), work, d.root);
    await runBuildHooks(o, logger, d.root);
    const assembled = await assembleImage(o, logger, d, kernel.version, kernel.vmlinuz);
    const manifest = await writeManifest(o, d, kernel.version, assembled);
    const final = await swapIntoPlace(d.staging, join(imagesDir, o.name));
    const seconds = Math.round((Date.now() - started) / 100) / 10;
    logger.info({
      event: 'build.done', name: o.name, imageDir: final, seconds, kernelVersion: kernel.version,
      initrdMiB: Math.round(assembled.initrd.size / 104857.6) / 10, minRamMiB: manifest.minRamMiB,
    });
    return { imageDir: final, manifest, seconds };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOSPC' || /No space left on device/.test(String(e.message))) {
      throw new BuildError('no-space', `no space left on device while building in ${o.dataDir}: ${e.message}`);
    }
    throw err;
  } finally {
    await rm(staging, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  }
}

/** The Debian root: from the cache when the same inputs built it before, else mmdebstrap (then cached). */
async function prepareRoot(o: BuildOptions, logger: Logger, d: BuildDirs, inRelease: string): Promise<void> {
  await mkdir(d.out, { recursive: true });
  const packages = packagesFor(o.flavour, o.include);
  const key = await rootKey({ suite: o.suite, mirror: o.mirror, packages, sourceDateEpoch: o.sourceDateEpoch, inRelease });
  if (await restoreRoot(d.cacheDir, key, d.root, d.out)) {
    logger.info({ event: 'build.step', step: 'root restored from cache', key });
    return;
  }
  await debootstrap({
    suite: o.suite, mirror: o.mirror, packages, rootDir: d.root, cacheDir: d.cacheDir, outDir: d.out,
    sourceDateEpoch: o.sourceDateEpoch, logger,
  });
  logger.info({ event: 'build.step', step: 'caching the root', key });
  await storeRoot(d.cacheDir, key, d.root, d.out);
}

/** boot-assets/hooks against the root, then the checks and clean-up that make it safe to ship. */
async function runBuildHooks(o: BuildOptions, logger: Logger, root: string): Promise<void> {
  logger.info({ event: 'build.step', step: 'hooks' });
  await runHooks(root, {
    logger,
    env: { RAMBOOT_FLAVOUR: o.flavour, RAMBOOT_IMAGE: o.name, SOURCE_DATE_EPOCH: String(o.sourceDateEpoch) },
    onProgress: (hook, i, n) => logger.info({ event: 'build.hook', hook, index: i, total: n }),
  });
  await checkRootSafe(root);
  await cleanRoot(root);
}

type Assembled = { initrd: Awaited<ReturnType<typeof assembleInitrd>>; rootBytes: number; vmlinuzBytes: number };

/** initrd.img (busybox /init + the root as squashfs) and vmlinuz into the staging directory. */
async function assembleImage(o: BuildOptions, logger: Logger, d: BuildDirs, kernelVersion: string, vmlinuz: string): Promise<Assembled> {
  const rootBytes = await treeBytes(d.root);
  logger.info({ event: 'build.step', step: 'initrd', rootMiB: Math.round(rootBytes / 1048576) });
  await runOk('dpkg-deb', ['-x', join(d.out, 'busybox.deb'), join(d.work, 'busybox')]);
  const initrd = await assembleInitrd({
    rootDir: d.root,
    busybox: join(d.work, 'busybox', 'bin', 'busybox'),
    modules: await initrdModules(d.root, kernelVersion),
    imageName: o.name,
    rootBytes,
    epoch: o.sourceDateEpoch,
    squashfsFile: join(d.work, 'root.squashfs'),
    outFile: join(d.staging, 'initrd.img'),
  });
  await copyFile(vmlinuz, join(d.staging, 'vmlinuz'));
  return { initrd, rootBytes, vmlinuzBytes: (await stat(join(d.staging, 'vmlinuz'))).size };
}

/** manifest.json: the contract with the server (common/manifest.ts), validated before it is written. */
async function writeManifest(o: BuildOptions, d: BuildDirs, kernelVersion: string, a: Assembled): Promise<ImageManifest> {
  const [kpkg = '', kver = ''] = (await readFile(join(d.out, 'kernel.txt'), 'utf8')).trim().split(' ');
  const manifest = manifestSchema.parse({
    schema: 1,
    name: o.name,
    createdAt: new Date(o.sourceDateEpoch * 1000).toISOString(),
    kernelVersion,
    kernel: 'vmlinuz',
    initrd: ['initrd.img'],
    files: {
      vmlinuz: { sha256: await sha256File(join(d.staging, 'vmlinuz')), size: a.vmlinuzBytes },
      'initrd.img': { sha256: a.initrd.sha256, size: a.initrd.size },
    },
    cmdline: DEFAULT_CMDLINE,
    minRamMiB: a.initrd.ram.minRamMiB,
    packages: [...parsePackages(await readFile(join(d.out, 'packages.tsv'), 'utf8')), { name: kpkg, version: kver }],
    build: {
      design: 'squashfs-in-initrd',
      rootModes: { overlay: 'default: squashfs kept in RAM under a tmpfs overlay', copy: 'ramboot.root=copy: whole root copied into a tmpfs' },
      minRamMiBCopy: Math.ceil(a.initrd.ram.minMemTotalKiBCopy / 1024) + KERNEL_RESERVED_MIB,
      flavour: o.flavour,
      suite: o.suite,
      mirror: o.mirror,
      include: o.include,
      sourceDateEpoch: o.sourceDateEpoch,
      mmdebstrap: { mode: 'root', variant: 'minbase', mergedUsr: 'hook' },
      kernelPackage: `${kpkg}=${kver}`,
      rootBytes: a.rootBytes,
      rootSquashfs: { size: a.initrd.squashfsSize, sha256: a.initrd.squashfsSha256 },
    },
  });
  await writeFile(join(d.staging, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return manifest;
}

/** Renames the finished image over the old one; the previous image stays whole until then. */
async function swapIntoPlace(staging: string, final: string): Promise<string> {
  await chmod(staging, 0o755); // mkdtemp made it 0700; a web server user must be able to read it
  const old = `${staging}.old`;
  let hadOld = false;
  try {
    await rename(final, old);
    hadOld = true;
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT') throw err;
  }
  try {
    await rename(staging, final);
  } catch (err) {
    if (hadOld) await rename(old, final);
    throw err;
  }
  if (hadOld) await rm(old, { recursive: true, force: true });
  return final;
}
