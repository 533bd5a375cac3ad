import t from 'tap';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { manifestSchema } from '../../common/manifest.js';
import { requirements } from './requirements.js';
import { ensureTestKernel } from './test-kernel.js';
import { writeTestImage } from './test-image.js';

function isBzImage(b: Buffer): boolean {
  return b.length > 0x206 && b.toString('latin1', 0x202, 0x206) === 'HdrS';
}

t.test('ensureTestKernel: two concurrent callers, one cache entry, a real bzImage', async (t) => {
  if (!requirements(t, ['apt-get', 'dpkg'])) return;
  const cache = await mkdtemp(join(tmpdir(), 'ramboot-kernel-cache-'));
  t.teardown(() => rm(cache, { recursive: true, force: true }));
  const [a, b] = await Promise.all([ensureTestKernel(cache), ensureTestKernel(cache)]);
  t.equal(a, b, 'both callers get the same path');
  t.ok(isBzImage(await readFile(a)), 'vmlinuz is a bzImage');
  t.same(readdirSync(cache).filter((n) => n.startsWith('.tmp-')), [], 'no temp dirs left');
  t.equal(await ensureTestKernel(cache), a, 'cached on the next call');
});

t.test('writeTestImage writes a manifest valid under manifestSchema with correct digests', async (t) => {
  if (!requirements(t, ['busybox', 'apt-get', 'dpkg'])) return;
  const dataDir = await mkdtemp(join(tmpdir(), 'ramboot-test-image-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const img = await writeTestImage(dataDir, 'test', { minRamMiB: 300, cmdline: 'console=ttyS0,115200 panic=-1 x=@IMAGE_URL@' });
  const raw: unknown = JSON.parse(await readFile(join(dataDir, 'images', 'test', 'manifest.json'), 'utf8'));
  const m = manifestSchema.parse(raw);
  t.equal(m.name, 'test');
  t.equal(m.minRamMiB, 300);
  t.equal(m.cmdline, 'console=ttyS0,115200 panic=-1 x=@IMAGE_URL@');
  t.same(Object.keys(m.files).sort(), ['initrd.img', 'vmlinuz']);
  for (const [name, entry] of Object.entries(m.files)) {
    const data = await readFile(join(img.dir, name));
    t.equal(entry.size, data.length, `${name} size`);
    t.equal(entry.sha256, createHash('sha256').update(data).digest('hex'), `${name} sha256`);
  }
  t.ok(isBzImage(await readFile(img.kernelPath)), 'kernel is a bzImage');
  const cpio = gunzipSync(await readFile(img.initrdPath));
  t.equal(cpio.toString('latin1', 0, 6), '070701', 'initrd is a gzip newc cpio');
  t.ok(cpio.includes(Buffer.from('TRAILER!!!')), 'cpio has a trailer');
  t.notOk(readdirSync(img.dir).some((n) => n.includes('.tmp-')), 'no temp files left');
  await t.rejects(writeTestImage(dataDir, '../evil', { kernelPath: img.kernelPath }), /bad image name/);
  t.notOk(existsSync(join(dataDir, 'evil')), 'nothing written for a bad name');
  t.equal(typeof (await ensureTestKernel()), 'string');
});
