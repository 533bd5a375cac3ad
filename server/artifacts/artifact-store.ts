import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { Logger } from '../../common/log.js';
import { IMAGE_NAME_RE } from '../../common/manifest.js';
import { writeFileAtomic } from '../store/atomic-write.js';
import { KeyedMutex } from '../store/keyed-mutex.js';

/**
 * Deploy artifacts (disk images a machine's deploy names) under <data-dir>/artifacts/:
 *
 *   <name>.json          metadata (name, size, sha256, format, createdAt): the commit point
 *   .blobs/<sha256>      the bytes, content-addressed
 *   .tmp/upload-*        uploads in progress (removed at start-up)
 *
 * An upload streams into a temp file (hashed while written, never held in memory), is fsynced and
 * renamed to its blob, then the metadata is written atomically. Readers only ever see complete
 * artifacts: a cut upload leaves no metadata, and replacing an artifact is one rename of its
 * metadata, so of two concurrent uploads of one name the last to complete wins, whole.
 */

/** Artifact names: the image-name rule (lower-case letters, digits, ".", "_", "-"; max 63). */
export const ARTIFACT_NAME_RE = IMAGE_NAME_RE;
export const ARTIFACT_FORMATS = ['raw', 'zstd', 'xz', 'gzip', 'qcow2'] as const;
export type ArtifactFormat = (typeof ARTIFACT_FORMATS)[number];

export const artifactMetaSchema = z.strictObject({
  name: z.string().regex(ARTIFACT_NAME_RE),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  format: z.enum(ARTIFACT_FORMATS),
  createdAt: z.string(),
});
export type ArtifactMeta = z.infer<typeof artifactMetaSchema>;

export type ArtifactErrorKind = 'invalid-name' | 'not-found' | 'exists' | 'incomplete';

export class ArtifactError extends Error {
  override name = 'ArtifactError';
  constructor(
    readonly kind: ArtifactErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/** Format from the first bytes: compressors' magic numbers and qcow2's "QFI\xfb"; anything else is raw. */
export function detectFormat(head: Buffer): ArtifactFormat {
  const starts = (...bytes: number[]) => bytes.every((b, i) => head[i] === b);
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) return 'zstd';
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return 'xz';
  if (starts(0x1f, 0x8b)) return 'gzip';
  if (starts(0x51, 0x46, 0x49, 0xfb)) return 'qcow2';
  return 'raw';
}

export function artifactNameProblem(name: string): string | undefined {
  return ARTIFACT_NAME_RE.test(name) ? undefined : 'artifact name: 1-63 of lower-case letters, digits, ".", "_", "-", starting with a letter or digit';
}

export interface PutOptions {
  /** If-None-Match: * — refuse when the name exists (checked before and again at commit). */
  createOnly?: boolean;
  /** Content-Length, when the client sent one: fewer bytes means a cut upload. */
  expectedSize?: number;
}

export class ArtifactStore {
  private readonly blobs: string;
  private readonly tmp: string;
  /** Commits and deletes one at a time: a blob is unlinked only when no metadata names it. */
  private readonly lock = new KeyedMutex();

  constructor(
    readonly dir: string,
    private readonly logger: Logger,
  ) {
    this.blobs = join(dir, '.blobs');
    this.tmp = join(dir, '.tmp');
  }

  /** Create the directories and drop uploads a previous run left unfinished. */
  async init(): Promise<void> {
    for (const d of [this.dir, this.blobs, this.tmp]) await mkdir(d, { recursive: true, mode: 0o700 });
    for (const f of await readdir(this.tmp)) {
      await unlink(join(this.tmp, f)).catch(() => undefined);
      this.logger.info({ event: 'artifacts.stale-upload-removed', file: f }, `removed unfinished upload ${f}`);
    }
    // Blobs no metadata names (a crash between blob rename and metadata write) go too.
    await this.lock.run('commit', async () => this.collectGarbage());
  }

  private metaPath(name: string): string {
    return join(this.dir, `${name}.json`);
  }

  blobPath(meta: ArtifactMeta): string {
    return join(this.blobs, meta.sha256);
  }

  async get(name: string): Promise<ArtifactMeta | undefined> {
    if (artifactNameProblem(name)) return undefined;
    let text: string;
    try {
      text = await readFile(this.metaPath(name), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    const parsed = artifactMetaSchema.safeParse(JSON.parse(text));
    if (!parsed.success || parsed.data.name !== name) {
      this.logger.error({ event: 'artifacts.invalid-meta', name }, `metadata of artifact ${name} is invalid; ignoring it`);
      return undefined;
    }
    return parsed.data;
  }

  async has(name: string): Promise<boolean> {
    return (await this.get(name)) !== undefined;
  }

  async list(): Promise<ArtifactMeta[]> {
    const out: ArtifactMeta[] = [];
    for (const f of (await readdir(this.dir)).sort()) {
      if (!f.endsWith('.json') || f.startsWith('.')) continue;
      const m = await this.get(f.slice(0, -'.json'.length));
      if (m) out.push(m);
    }
    return out;
  }

  /**
   * Stream `body` into the artifact `name`. Nothing becomes visible unless the whole body arrived
   * (and matched expectedSize); on any error the temp file is removed and the error rethrown.
   */
  async put(name: string, body: AsyncIterable<Buffer | string>, opts: PutOptions = {}): Promise<{ meta: ArtifactMeta; created: boolean }> {
    const problem = artifactNameProblem(name);
    if (problem) throw new ArtifactError('invalid-name', problem);
    if (opts.createOnly && (await this.has(name))) throw new ArtifactError('exists', `artifact ${name} exists (If-None-Match: *)`);
    const tmp = join(this.tmp, `upload-${randomBytes(8).toString('hex')}`);
    const fh = await open(tmp, 'wx', 0o600);
    const hash = createHash('sha256');
    let size = 0;
    let head = Buffer.alloc(0);
    let closed = false;
    try {
      for await (const chunk of body) {
        const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        if (head.length < 8) head = Buffer.concat([head, buf.subarray(0, 8 - head.length)]);
        hash.update(buf);
        let off = 0;
        while (off < buf.length) off += (await fh.write(buf, off, buf.length - off)).bytesWritten;
        size += buf.length;
      }
      if (opts.expectedSize !== undefined && size !== opts.expectedSize) {
        throw new ArtifactError('incomplete', `upload ended after ${size} of ${opts.expectedSize} bytes`);
      }
      await fh.sync();
      await fh.close();
      closed = true;
      const meta: ArtifactMeta = { name, size, sha256: hash.digest('hex'), format: detectFormat(head), createdAt: new Date().toISOString() };
      const created = await this.lock.run('commit', async () => {
        const before = await this.get(name);
        if (opts.createOnly && before) throw new ArtifactError('exists', `artifact ${name} exists (If-None-Match: *)`);
        await rename(tmp, this.blobPath(meta));
        await fsyncDir(this.blobs);
        await writeFileAtomic(this.metaPath(name), `${JSON.stringify(meta, null, 2)}\n`, 0o600);
        if (before && before.sha256 !== meta.sha256) await this.collectGarbage();
        return !before;
      });
      this.logger.info({ event: 'artifacts.stored', ...meta, created }, `artifact ${name} stored (${size} bytes, ${meta.format})`);
      return { meta, created };
    } catch (e) {
      this.logger.warn({ event: 'artifacts.upload-failed', name, bytes: size, reason: (e as Error).message }, `upload of artifact ${name} failed after ${size} bytes; nothing kept`);
      throw e;
    } finally {
      if (!closed) await fh.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
    }
  }

  async remove(name: string): Promise<void> {
    const problem = artifactNameProblem(name);
    if (problem) throw new ArtifactError('invalid-name', problem);
    await this.lock.run('commit', async () => {
      try {
        await unlink(this.metaPath(name));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ArtifactError('not-found', `no artifact ${name}`);
        throw e;
      }
      await fsyncDir(this.dir);
      await this.collectGarbage();
    });
    this.logger.info({ event: 'artifacts.removed', name }, `artifact ${name} removed`);
  }

  /** Unlink blobs no metadata names. Open readers keep reading an unlinked blob (POSIX). Run under the lock. */
  private async collectGarbage(): Promise<void> {
    const used = new Set((await this.list()).map((m) => m.sha256));
    for (const b of await readdir(this.blobs)) {
      if (!used.has(b)) await unlink(join(this.blobs, b)).catch(() => undefined);
    }
  }

  /** Size of the blob on disk (a sanity check before serving). */
  async blobSize(meta: ArtifactMeta): Promise<number | undefined> {
    return (await stat(this.blobPath(meta)).catch(() => undefined))?.size;
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
