import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import NodeCache from 'node-cache';
import type { Logger } from '../../common/log.js';
import { describeZodError } from '../../common/zod-error.js';
import { IMAGE_FILE_RE, IMAGE_NAME_RE, manifestSchema, type ImageManifest } from '../../common/manifest.js';

export interface LoadedImage {
  name: string;
  dir: string;
  manifest: ImageManifest;
}

export type ImageLookup = { ok: true; image: LoadedImage } | { ok: false; reason: string };

/** Reads <images>/<name>/manifest.json, caches it, and drops the cache when anything in the image dir changes. */
export class ImageStore {
  private cache = new NodeCache({ stdTTL: 0, useClones: false });
  private watcher: FSWatcher | undefined;
  private generation = 0;

  constructor(
    readonly dir: string,
    private readonly logger: Logger,
  ) {}

  /** Changes whenever any image changes: part of rendered-script cache keys. */
  get version(): number {
    return this.generation;
  }

  async watch(): Promise<void> {
    const w = watch(this.dir, { ignoreInitial: true, depth: 1 });
    const drop = (path: string) => {
      const rel = path.slice(this.dir.length).split('/').filter(Boolean);
      const name = rel[0];
      if (name) this.cache.del(name);
      this.generation++;
    };
    w.on('all', (_ev, path) => drop(path));
    w.on('error', (e: unknown) => this.logger.error({ event: 'images.watch-error', err: e }, 'watching images dir failed'));
    await new Promise<void>((resolve) => w.once('ready', () => resolve()));
    this.watcher = w;
  }

  async lookup(name: string): Promise<ImageLookup> {
    if (!IMAGE_NAME_RE.test(name)) return { ok: false, reason: `"${name.slice(0, 64)}" is not a valid image name` };
    const hit = this.cache.get<ImageLookup>(name);
    if (hit) return hit;
    const res = await this.load(name);
    // only found images are cached: names that do not exist must not grow memory
    if (res.ok) this.cache.set(name, res);
    return res;
  }

  private async load(name: string): Promise<ImageLookup> {
    const dir = join(this.dir, name);
    const path = join(dir, 'manifest.json');
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        return { ok: false, reason: `image "${name}" does not exist (no ${path}; build it with: ramboot build --name ${name})` };
      }
      return { ok: false, reason: `image "${name}": cannot read ${path}: ${(e as Error).message}` };
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      return this.invalid(name, path, `not valid JSON: ${(e as Error).message}`);
    }
    const parsed = manifestSchema.safeParse(json);
    if (!parsed.success) return this.invalid(name, path, describeZodError(parsed.error));
    if (parsed.data.name !== name) return this.invalid(name, path, `manifest name "${parsed.data.name}" does not match its directory "${name}"`);
    return { ok: true, image: { name, dir, manifest: parsed.data } };
  }

  private invalid(name: string, path: string, reason: string): ImageLookup {
    this.logger.error({ event: 'images.invalid-manifest', image: name, file: path, reason }, `image ${name} has an invalid manifest: ${reason}`);
    return { ok: false, reason: `image "${name}" has an invalid manifest: ${reason}` };
  }

  /** Absolute path of a file the image's manifest lists, or undefined. Safe by construction. */
  filePath(image: LoadedImage, file: string): { path: string; sha256: string; size: number } | undefined {
    if (!IMAGE_FILE_RE.test(file)) return undefined;
    if (!Object.hasOwn(image.manifest.files, file)) return undefined;
    const entry = image.manifest.files[file];
    if (!entry) return undefined;
    return { path: join(image.dir, file), sha256: entry.sha256, size: entry.size };
  }

  async close(): Promise<void> {
    await this.watcher?.close();
    this.cache.flushAll();
  }
}
