import t, { type Test } from 'tap';
import { mkdtemp, readFile, rm, stat, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Mac } from '../../common/mac.js';
import { FileEventLog, MemoryEventLog, type EventLog } from './event-log.js';

const mac = '02:00:00:00:00:01' as Mac;

async function contract(t: Test, log: EventLog): Promise<void> {
  t.same(await log.list(mac), []);
  await log.append(mac, { event: 'os.a', level: 'info', message: 'first' });
  await log.append(mac, { event: 'os.b', level: 'warning', message: 'second', data: { x: 1 } });
  const all = await log.list(mac);
  t.same(all.map((e) => [e.event, e.level, e.message]), [['os.a', 'info', 'first'], ['os.b', 'warning', 'second']]);
  t.match(all[0]?.time, /^\d{4}-\d\d-\d\dT/);
  t.same((await log.list(mac, 1)).map((e) => e.event), ['os.b'], 'limit keeps the newest');
  t.same(await log.list(mac, 0), []);
  await log.remove(mac);
  t.same(await log.list(mac), []);
}

t.test('memory event log', async (t) => contract(t, new MemoryEventLog()));

t.test('file event log: contract, trimming, torn last line', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-events-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const log = new FileEventLog(dir);
  await log.init();
  await contract(t, log);
  const big = 'x'.repeat(600);
  for (let i = 0; i < 1000; i++) await log.append(mac, { event: 'os.e', level: 'info', message: `${i} ${big}` });
  const file = join(dir, '02-00-00-00-00-01.jsonl');
  t.ok((await stat(file)).size <= 256 * 1024 + 1024, 'file stays bounded');
  const kept = await log.list(mac, 10_000);
  t.ok(kept.length >= 150 && kept.length <= 500, `kept ${kept.length} newest events`);
  t.match(kept.at(-1)?.message, /^999 /, 'newest kept');
  await appendFile(file, '{"time":"2026-01-01T00:00:00Z","event":"torn"');
  const after = await log.list(mac, 10_000);
  t.equal(after.length, kept.length, 'a torn last line (crash mid-append) is skipped');
  await writeFile(file, '');
  t.same(await log.list(mac), []);
  t.equal(await readFile(file, 'utf8'), '');
});
