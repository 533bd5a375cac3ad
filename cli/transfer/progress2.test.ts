import { readFileSync } from 'node:fs';
import t from 'tap';
import { parseProgress2 } from './progress2.js';

t.test('real rsync --info=progress2 output (captured from rsync on this host)', async (t) => {
  const raw = readFileSync(new URL('./fixtures/rsync-progress2-host-3.5.0.raw', import.meta.url), 'utf8');
  const lines = raw.split(/\r|\n/).filter((l) => l.trim());
  const parsed = lines.map(parseProgress2);
  t.ok(parsed.every((p) => p !== undefined), 'every line parses');
  const last = parsed.at(-1)!;
  t.equal(last.bytes, 1_455_113_224);
  t.equal(last.percent, 100);
  t.equal(last.final, true);
  t.equal(last.totalFiles, 43);
  t.equal(last.checked, 43);
  t.equal(last.transferred, 42);
  let prev = 0;
  for (const p of parsed) {
    t.ok(p!.bytes >= prev, 'bytes never go back');
    prev = p!.bytes;
  }
});

t.test('fields and units', async (t) => {
  t.same(parseProgress2('    315,845,600  21%   60.71MB/s    0:00:04 (xfr#1, to-chk=41/43)'), {
    bytes: 315_845_600, percent: 21, rate: Math.round(60.71 * 1024 * 1024), seconds: 4, final: true, transferred: 1, totalFiles: 43, checked: 2,
  });
  t.same(parseProgress2('         32,768   0%    0.00kB/s    0:00:00  '), { bytes: 32768, percent: 0, rate: 0, seconds: 0, final: false });
  t.equal(parseProgress2('  1,000   5%    1.50GB/s    1:02:03')!.seconds, 3723);
  t.equal(parseProgress2('  1,000   5%    1.50GB/s    1:02:03')!.rate, Math.round(1.5 * 1024 ** 3));
  t.equal(parseProgress2('  1,000   5%  999.00kB/s    0:00:01 (xfr#3, ir-chk=10/20)')!.checked, 10);
  for (const junk of ['', 'sending incremental file list', 'home/user/file', 'rsync error: some files could not be transferred (code 23)', '12 34']) {
    t.equal(parseProgress2(junk), undefined, JSON.stringify(junk));
  }
});
