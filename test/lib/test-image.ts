import { createHash } from 'node:crypto';
import { readFile, mkdir, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { IMAGE_NAME_RE, manifestSchema, type ImageManifest } from '../../common/manifest.js';
import { buildBusyboxInitrd, type BusyboxInitrdOptions } from './busybox-initrd.js';
import { ensureTestKernel } from './test-kernel.js';

/**
 * Writes a bootable test image: <dataDir>/images/<name>/{vmlinuz,initrd.img,manifest.json}, the
 * manifest valid under `manifestSchema` (sha256 + size of each file).
 */
export interface TestImageOptions {
  /** Kernel to copy (default: the cached Debian cloud kernel from test-kernel.ts). */
  kernelPath?: string;
  /** Initrd bytes (default: the busybox initrd built with `initrd` options). */
  initrdData?: Buffer;
  /** Options for the default busybox initrd. */
  initrd?: BusyboxInitrdOptions;
  /** Kernel command line in the manifest (default `console=ttyS0,115200 panic=-1`). */
  cmdline?: string;
  /** minRamMiB in the manifest (default 256). */
  minRamMiB?: number;
}

export interface TestImage {
  dir: string;
  manifest: ImageManifest;
  kernelPath: string;
  initrdPath: string;
}

export const DEFAULT_TEST_CMDLINE = 'console=ttyS0,115200 panic=-1';

function digest(data: Buffer): { sha256: string; size: number } {
  return { sha256: createHash('sha256').update(data).digest('hex'), size: data.length };
}

async function writeAtomic(path: string, data: Buffer | string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

export async function writeTestImage(dataDir: string, name: string, opts: TestImageOptions = {}): Promise<TestImage> {
  if (!IMAGE_NAME_RE.test(name)) throw new Error(`bad image name "${name}"`);
  const kernel = await readFile(opts.kernelPath ?? (await ensureTestKernel()));
  const initrd = opts.initrdData ?? buildBusyboxInitrd(opts.initrd);
  const manifest = manifestSchema.parse({
    schema: 1,
    name,
    createdAt: new Date(0).toISOString(),
    kernel: 'vmlinuz',
    initrd: ['initrd.img'],
    files: { 'vmlinuz': digest(kernel), 'initrd.img': digest(initrd) },
    cmdline: opts.cmdline ?? DEFAULT_TEST_CMDLINE,
    minRamMiB: opts.minRamMiB ?? 256,
    packages: [],
    build: { by: 'test/lib/test-image.ts' },
  });
  const dir = join(dataDir, 'images', name);
  await mkdir(dir, { recursive: true });
  const kernelPath = join(dir, 'vmlinuz');
  const initrdPath = join(dir, 'initrd.img');
  await writeAtomic(kernelPath, kernel);
  await writeAtomic(initrdPath, initrd);
  // manifest last: a watcher never sees a manifest whose files are missing
  await writeAtomic(join(dir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return { dir, manifest, kernelPath, initrdPath };
}
