import t from 'tap';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { negotiate } from './options.js';
import { encodeError, encodeOack, parseAck, parseError, parseRequest } from './packet.js';
import { checkName, openServedFile, toNetascii } from './resolve.js';
import {  } from '../../test/tftp/support.js';
import { makeTempDir } from '../../test/lib/temp-dir.js';

const LIMITS = { maxBlksize: 65464, maxWindowsize: 64, maxWindowBytes: 65536 };
const req = (...parts: string[]): Buffer => Buffer.concat([Buffer.from([0, 1]), ...parts.map((p) => Buffer.from(`${p}\0`, 'latin1'))]);

t.test('parseRequest', async (t) => {
  const r = parseRequest(req('a/b.efi', 'OcTeT', 'BLKSIZE', '1432', 'tsize', '0', 'blksize', '99'));
  t.ok(r.ok);
  if (r.ok) {
    t.equal(r.value.filename, 'a/b.efi');
    t.equal(r.value.mode, 'octet', 'mode is case-insensitive');
    t.same([...r.value.options], [['blksize', '1432'], ['tsize', '0']], 'names lower-cased, first duplicate wins');
  }
  for (const [label, buf] of [
    ['short', Buffer.from([0, 1, 0])],
    ['no mode', req('x')],
    ['unterminated', Buffer.from('\0\x01x\0octet', 'latin1')],
    ['odd options', req('x', 'octet', 'blksize')],
    ['binary in name', Buffer.concat([Buffer.from([0, 1, 0xff, 0]), Buffer.from('octet\0')])],
    ['not a request', Buffer.from([0, 4, 0, 1])],
    ['too long', req('x'.repeat(2000), 'octet')],
  ] as const) t.notOk(parseRequest(buf).ok, label);
});

t.test('ACK / ERROR / OACK encoding', async (t) => {
  t.equal(parseAck(Buffer.from([0, 4, 0xff, 0xfe])), 65534);
  t.equal(parseAck(Buffer.from([0, 3, 0, 1])), null);
  t.equal(parseAck(Buffer.from([0, 4, 0])), null);
  t.same(parseError(encodeError(1, 'file not found\n\x01')), { code: 1, message: 'file not found??' });
  t.same(parseError(Buffer.from([0, 5, 0, 8, 0x41])), { code: 8, message: 'A' }, 'unterminated message tolerated');
  t.same(encodeOack([['blksize', '1432'], ['tsize', '7']]), Buffer.from('\0\x06blksize\x001432\0tsize\x007\0', 'latin1'));
});

t.test('negotiate', async (t) => {
  const n = (o: Record<string, string>, size = 1000) => negotiate(new Map(Object.entries(o)), size, LIMITS);
  t.same(n({}), { blksize: 512, windowsize: 1, timeoutSec: null, oack: [] }, 'no options: no OACK');
  t.same(n({ blksize: '1432', tsize: '0' }).oack, [['blksize', '1432'], ['tsize', '1000']]);
  t.equal(n({ blksize: '99999' }).blksize, 65464, 'blksize capped at the RFC 2348 maximum');
  t.same(n({ blksize: '7' }).oack, [], 'blksize below 8 ignored');
  t.same(n({ blksize: 'abc', windowsize: '-1', timeout: '0' }).oack, [], 'malformed values ignored');
  t.same(n({ timeout: '3' }), { blksize: 512, windowsize: 1, timeoutSec: 3, oack: [['timeout', '3']] });
  t.same(n({ timeout: '256' }).oack, [], 'timeout above 255 ignored');
  t.same(n({ windowsize: '16', blksize: '8192' }).oack, [['windowsize', '8'], ['blksize', '8192']], 'window capped to 64 KiB bursts');
  t.equal(n({ windowsize: '1000' }).windowsize, 64, 'windowsize capped');
  t.same(n({ multicast: '', rollover: '0' }).oack, [], 'unsupported options ignored');
});

t.test('checkName refuses anything that could leave the root', async (t) => {
  for (const ok of ['undionly.kpxe', 'qemu/efi-e1000.rom', 'a_b-c+d~e.1']) t.ok(checkName(ok).ok, ok);
  for (const bad of ['', '/etc/passwd', '../x', 'a/../../x', 'a//b', 'a/', '.hidden', 'a/.', '%2e%2e/x', 'a\\b', 'C:x', 'a b', 'x'.repeat(256)]) {
    t.notOk(checkName(bad).ok, JSON.stringify(bad));
  }
});

t.test('openServedFile', async (t) => {
  const tmp = await makeTempDir('tftp-resolve');
  t.teardown(tmp.cleanup);
  const root = join(tmp.dir, 'root');
  await mkdir(join(root, 'd'), { recursive: true });
  await mkdir(join(tmp.dir, 'extra'));
  await writeFile(join(root, 'f.bin'), 'abc');
  await writeFile(join(tmp.dir, 'extra', 'g.bin'), 'g');
  await writeFile(join(tmp.dir, 'outside'), 'secret');
  await symlink('../outside', join(root, 'out'));
  await symlink('../extra/g.bin', join(root, 'g.bin'));
  const open = async (name: string, extra: string[] = []) => {
    const r = await openServedFile(root, extra, name);
    if (r.ok) await r.file.handle.close();
    return r.ok ? { ok: true, size: r.file.size } : { ok: false, code: r.code };
  };
  t.same(await open('f.bin'), { ok: true, size: 3 });
  t.same(await open('missing'), { ok: false, code: 1 });
  t.same(await open('d'), { ok: false, code: 1 }, 'directories are not files');
  t.same(await open('out'), { ok: false, code: 2 }, 'symlink out of the root refused');
  t.same(await open('g.bin'), { ok: false, code: 2 }, 'symlink into another tree refused by default');
  t.same(await open('g.bin', [join(tmp.dir, 'extra')]), { ok: true, size: 1 }, '... allowed when that tree is a symlink root');
});

t.test('netascii conversion', async (t) => {
  t.same(toNetascii(Buffer.from('a\nb\rc\r\n')), Buffer.from('a\r\nb\r\0c\r\0\r\n', 'latin1'));
  const plain = Buffer.from('no line ends');
  t.equal(toNetascii(plain), plain, 'unchanged data is not copied');
});
