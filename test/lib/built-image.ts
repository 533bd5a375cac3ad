import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, symlink, lstat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { spawn } from 'node:child_process';
import { CACHE_DIR, REPO_ROOT } from './paths.js';
import { manifestSchema, type ImageManifest } from '../../common/manifest.js';

/**
 * A ramboot image built by the real `ramboot build`, cached in <repo>/.cache/build-images/<key>/ where
 * the key hashes everything that goes into it (builder sources, boot-assets, flavour, suite, epoch).
 * The apt cache (<data-dir>/cache) is shared between keys, so a changed hook rebuilds without
 * downloading again. Only the current key is kept.
 */
export const TEST_EPOCH = '1700000000'; // fixed: the image is reproducible

export interface BuiltImage {
  dataDir: string;
  imageDir: string;
  manifest: ImageManifest;
  /** True when this call ran the build (false: cache hit). */
  built: boolean;
  buildSeconds?: number;
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  if (!existsSync(dir)) return out;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(p)));
    else if (e.isFile() && !e.name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

export async function imageKey(flavour: string, suite: string): Promise<string> {
  const h = createHash('sha256');
  h.update(`${flavour}\0${suite}\0${TEST_EPOCH}\0`);
  const files = [
    ...(await listFiles(join(REPO_ROOT, 'builder'))),
    ...(await listFiles(join(REPO_ROOT, 'common'))),
    ...(await listFiles(join(REPO_ROOT, 'boot-assets', 'initrd'))),
    ...(await listFiles(join(REPO_ROOT, 'boot-assets', 'hooks'))),
    ...(await listFiles(join(REPO_ROOT, 'boot-assets', 'fixes'))),
  ].sort();
  for (const f of files) {
    h.update(relative(REPO_ROOT, f));
    h.update('\0');
    h.update(await readFile(f));
  }
  return h.digest('hex').slice(0, 16);
}

/** Runs `ramboot build`, streaming its log lines to `onLine`. Rejects on a non-zero exit. */
export function runBuild(args: string[], env: NodeJS.ProcessEnv, onLine?: (l: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'ramboot.js'), 'build', ...args], {
      cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { for (const l of d.split('\n')) if (l) onLine?.(l); });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err = (err + d).slice(-8000); });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`ramboot build exited ${code}: ${err.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
}

export async function builtImage(opts: { flavour?: 'cloud' | 'lean'; suite?: string; onLine?: (l: string) => void } = {}): Promise<BuiltImage> {
  const prebuilt = process.env[opts.flavour === 'lean' ? 'RAMBOOT_TEST_LEAN_IMAGE_DATA_DIR' : 'RAMBOOT_TEST_IMAGE_DATA_DIR'];
  if (prebuilt) {
    // Developer shortcut: boot an image built by hand (`ramboot build --data-dir DIR [--flavour lean]`).
    const imageDir = join(prebuilt, 'images', 'default');
    const manifest = manifestSchema.parse(JSON.parse(await readFile(join(imageDir, 'manifest.json'), 'utf8')));
    return { dataDir: prebuilt, imageDir, manifest, built: false };
  }
  const flavour = opts.flavour ?? 'cloud';
  const suite = opts.suite ?? 'bookworm';
  const key = await imageKey(flavour, suite);
  const base = join(CACHE_DIR, 'build-images');
  const dataDir = join(base, `${flavour}-${suite}-${key}`);
  const imageDir = join(dataDir, 'images', 'default');
  const manifestFile = join(imageDir, 'manifest.json');
  let built = false;
  let buildSeconds: number | undefined;
  if (!existsSync(manifestFile)) {
    await mkdir(base, { recursive: true });
    for (const old of await readdir(base)) {
      if (old.startsWith(`${flavour}-${suite}-`) && old !== `${flavour}-${suite}-${key}`) {
        await rm(join(base, old), { recursive: true, force: true });
      }
    }
    await mkdir(dataDir, { recursive: true });
    const sharedCache = join(CACHE_DIR, 'build-apt-cache');
    await mkdir(sharedCache, { recursive: true });
    const link = join(dataDir, 'cache');
    if (!existsSync(link) && !(await lstat(link).catch(() => null))) await symlink(sharedCache, link);
    const started = Date.now();
    await runBuild(['--data-dir', dataDir, '--flavour', flavour, '--suite', suite],
      { ...process.env, SOURCE_DATE_EPOCH: TEST_EPOCH }, opts.onLine);
    buildSeconds = Math.round((Date.now() - started) / 1000);
    built = true;
  }
  const manifest = manifestSchema.parse(JSON.parse(await readFile(manifestFile, 'utf8')));
  return { dataDir, imageDir, manifest, built, ...(buildSeconds !== undefined ? { buildSeconds } : {}) };
}
