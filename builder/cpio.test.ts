import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpioBuffer, writeCpio } from './cpio.js';

const entries = [
  { type: 'dir' as const, path: 'etc', mode: 0o755 },
  { type: 'data' as const, path: 'etc/hostname', mode: 0o644, data: Buffer.from('ramboot\n') },
  { type: 'symlink' as const, path: 'etc/link', target: 'hostname' },
  { type: 'char' as const, path: 'console', mode: 0o600, major: 5, minor: 1 },
];

t.test('in-memory and streamed archives are the same bytes, and GNU cpio reads them', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-cpio-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const mem = cpioBuffer(entries, 1_700_000_000);
  const size = await writeCpio(join(dir, 'a.cpio'), entries, 1_700_000_000);
  const file = await readFile(join(dir, 'a.cpio'));
  t.equal(size, file.length);
  t.ok(mem.equals(file), 'identical bytes');
  t.equal(mem.length % 512, 0, 'padded to 512 bytes');
  const listing = execFileSync('cpio', ['-t', '--quiet'], { input: mem }).toString().trim().split('\n');
  t.same(listing, ['etc', 'etc/hostname', 'etc/link', 'console']);
  t.throws(() => cpioBuffer([{ type: 'dir', path: '../x', mode: 0o755 }], 0), /bad entry path/);
  t.throws(() => cpioBuffer([entries[0]!, entries[0]!], 0), /duplicate/);
});
