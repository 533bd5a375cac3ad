import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../common/log.js';
import type { Teardown } from '../../test/lib/teardown.js';
import { ArtifactError, ArtifactStore, detectFormat } from './artifact-store.js';

async function store(t: Teardown): Promise<ArtifactStore> {
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-artifacts-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const s = new ArtifactStore(join(dir, 'artifacts'), silentLogger());
  await s.init();
  return s;
}

async function* chunks(...parts: (Buffer | Error)[]): AsyncGenerator<Buffer> {
  for (const p of parts) {
    if (p instanceof Error) throw p;
    yield p;
  }
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

t.test('formats are detected from the first bytes', async (t) => {
  t.equal(detectFormat(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0])), 'zstd');
  t.equal(detectFormat(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0])), 'xz');
  t.equal(detectFormat(Buffer.from([0x1f, 0x8b, 8])), 'gzip');
  t.equal(detectFormat(Buffer.from('QFI\xfb\0\0\0\x03', 'latin1')), 'qcow2');
  t.equal(detectFormat(Buffer.from('hello')), 'raw');
  t.equal(detectFormat(Buffer.alloc(0)), 'raw');
});

t.test('put, get, list, replace, remove', async (t) => {
  const s = await store(t);
  const a = Buffer.from([0x28, 0xb5]);
  const b = Buffer.from([0x2f, 0xfd, 1, 2, 3]);
  // the magic split over two chunks is still found
  const { meta, created } = await s.put('disk.zst', chunks(a, b));
  t.ok(created);
  t.match(meta, { name: 'disk.zst', size: 7, sha256: sha(Buffer.concat([a, b])), format: 'zstd' });
  t.same(await readFile(s.blobPath(meta)), Buffer.concat([a, b]));
  t.same((await s.list()).map((m) => m.name), ['disk.zst']);
  const again = await s.put('disk.zst', chunks(Buffer.from('raw bytes')));
  t.notOk(again.created, 'replaced');
  t.equal(again.meta.format, 'raw');
  t.same(await readdir(join(s.dir, '.blobs')), [again.meta.sha256], 'the replaced blob is gone');
  await t.rejects(s.put('disk.zst', chunks(Buffer.from('x')), { createOnly: true }), new ArtifactError('exists', 'artifact disk.zst exists (If-None-Match: *)'));
  await s.remove('disk.zst');
  t.equal(await s.get('disk.zst'), undefined);
  t.same(await readdir(join(s.dir, '.blobs')), []);
  await t.rejects(s.remove('disk.zst'), new ArtifactError('not-found', 'no artifact disk.zst'));
});

t.test('bad names are refused before anything is written', async (t) => {
  const s = await store(t);
  for (const bad of ['', '..', '.hidden', 'a/b', 'UPPER', 'x'.repeat(64), 'a b', '../etc']) {
    await t.rejects(s.put(bad, chunks(Buffer.from('x'))), ArtifactError, JSON.stringify(bad));
  }
  t.same(await readdir(join(s.dir, '.tmp')), []);
  t.same(await s.list(), []);
});

t.test('a cut or short upload leaves nothing visible', async (t) => {
  const s = await store(t);
  await s.put('img', chunks(Buffer.from('old')));
  await t.rejects(s.put('img', chunks(Buffer.from('new, half'), new Error('socket hang up'))), /socket hang up/);
  await t.rejects(s.put('img', chunks(Buffer.from('short')), { expectedSize: 100 }), /ended after 5 of 100 bytes/);
  t.same(await readdir(join(s.dir, '.tmp')), [], 'no temp file left');
  t.equal((await s.get('img'))?.size, 3, 'the old artifact is untouched');
  t.equal((await readdir(join(s.dir, '.blobs'))).length, 1);
});

t.test('start-up removes unfinished uploads and unreferenced blobs', async (t) => {
  const s = await store(t);
  await s.put('keep', chunks(Buffer.from('keep')));
  await writeFile(join(s.dir, '.tmp', 'upload-0123456789abcdef'), 'half');
  await mkdir(join(s.dir, '.blobs'), { recursive: true });
  await writeFile(join(s.dir, '.blobs', 'f'.repeat(64)), 'orphan');
  const s2 = new ArtifactStore(s.dir, silentLogger());
  await s2.init();
  t.same(await readdir(join(s.dir, '.tmp')), []);
  t.same(await readdir(join(s.dir, '.blobs')), [(await s2.get('keep'))?.sha256]);
});

t.test('concurrent uploads of one name: the last to complete wins, whole', async (t) => {
  const s = await store(t);
  let releaseFirst!: () => void;
  const gate = new Promise<void>((r) => (releaseFirst = r));
  async function* slow(): AsyncGenerator<Buffer> {
    yield Buffer.from('first-');
    await gate;
    yield Buffer.from('upload');
  }
  const first = s.put('same', slow());
  const second = await s.put('same', chunks(Buffer.from('second upload')));
  t.equal((await s.get('same'))?.sha256, second.meta.sha256, 'the second completed first and is visible');
  releaseFirst();
  const f = await first;
  const now = await s.get('same');
  t.equal(now?.sha256, f.meta.sha256, 'the first completed last and wins');
  t.same(await readFile(s.blobPath(f.meta), 'utf8'), 'first-upload');
  t.same(await readdir(join(s.dir, '.blobs')), [f.meta.sha256], 'the loser blob is gone');
});
