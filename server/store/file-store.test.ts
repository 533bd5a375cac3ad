import t, { type Test } from 'tap';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../common/log.js';
import type { Mac } from '../../common/mac.js';
import { machineRecordSchema, type MachineRecord } from '../machines/model.js';
import { FileStore } from './file-store.js';
import { MemoryStore } from './memory-store.js';
import type { MachineStore } from './store.js';

const mac = 'aa:bb:cc:dd:ee:01' as Mac;
const rec = (hostname: string, revision = 1): MachineRecord => machineRecordSchema.parse({ mac, hostname, revision });

type TapT = Test;

async function tmp(t: TapT): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'ramboot-store-'));
  t.teardown(() => rm(d, { recursive: true, force: true }));
  return d;
}

/** The contract every MachineStore implementation must meet. */
async function contract(t: TapT, store: MachineStore): Promise<void> {
  const seen: string[] = [];
  store.onChange((m) => seen.push(m));
  t.equal(store.get(mac), undefined);
  await store.update(mac, () => rec('a'));
  t.equal(store.get(mac)?.hostname, 'a');
  t.equal(store.count(), 1);
  await t.rejects(store.update(mac, () => {
    throw new Error('validation failed');
  }), /validation failed/);
  t.equal(store.get(mac)?.hostname, 'a', 'a throwing updater changes nothing');
  const unchanged = await store.update(mac, () => undefined);
  t.equal(unchanged?.hostname, 'a');
  // read-modify-write is serialised: 50 concurrent increments all land
  await Promise.all(Array.from({ length: 50 }, () => store.update(mac, (c) => ({ ...c!, revision: c!.revision + 1 }))));
  t.equal(store.get(mac)?.revision, 51);
  const copy = store.get(mac)!;
  copy.hostname = 'mutated';
  t.equal(store.get(mac)?.hostname, 'a', 'callers get copies');
  await store.update(mac, () => null);
  t.equal(store.get(mac), undefined);
  t.ok(seen.length >= 52, 'listeners told of every change');
}

t.test('MemoryStore meets the contract', async (t) => contract(t, new MemoryStore()));

t.test('FileStore meets the contract and writes atomically', async (t) => {
  const dir = await tmp(t);
  const store = await FileStore.open({ dir, logger: silentLogger(), watch: false });
  t.teardown(() => store.close());
  await contract(t, store);
  await store.update(mac, () => rec('kept', 7));
  t.same(await readdir(dir), ['aa-bb-cc-dd-ee-01.json'], 'no temp files left behind');
  const onDisk = JSON.parse(await readFile(join(dir, 'aa-bb-cc-dd-ee-01.json'), 'utf8')) as MachineRecord;
  t.equal(onDisk.hostname, 'kept');
  const reopened = await FileStore.open({ dir, logger: silentLogger(), watch: false });
  t.equal(reopened.get(mac)?.revision, 7, 'data survives reopening');
  await reopened.close();
});

t.test('FileStore: a crash before rename leaves the old record; stray temp files and bad files are ignored', async (t) => {
  const dir = await tmp(t);
  const s1 = await FileStore.open({ dir, logger: silentLogger(), watch: false });
  await s1.update(mac, () => rec('old'));
  await s1.close();
  // what a crash mid-write leaves: a partial temp file next to the intact record
  await writeFile(join(dir, '.aa-bb-cc-dd-ee-01.json.123abc.tmp'), '{"mac":"aa:bb:cc:dd:ee:01","hostna');
  await writeFile(join(dir, 'aa-bb-cc-dd-ee-02.json'), '{ truncated');
  await writeFile(join(dir, 'notes.txt'), 'hello');
  const lines: string[] = [];
  const { pino } = await import('pino');
  const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
  const s2 = await FileStore.open({ dir, logger, watch: false });
  t.equal(s2.get(mac)?.hostname, 'old');
  t.equal(s2.count(), 1);
  t.ok(lines.some((l) => /aa-bb-cc-dd-ee-02\.json/.test(l) && /not valid JSON/.test(l)), 'bad file logged with the reason');
  await s2.close();
});

t.test('finding 4: with 10,000 files, hand deletions and edits are all caught (watcher or rescan), fast create+delete included', async (t) => {
  const dir = await tmp(t);
  const macOf = (i: number) => `02:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` as Mac;
  const fileOf = (m: Mac) => join(dir, `${m.replaceAll(':', '-')}.json`);
  for (let i = 0; i < 10_000; i++) {
    const m = macOf(i);
    await writeFile(fileOf(m), JSON.stringify(machineRecordSchema.parse({ mac: m, hostname: `h${i}` })));
  }
  const store = await FileStore.open({ dir, logger: silentLogger(), rescanMs: 200 });
  t.teardown(() => store.close());
  t.equal(store.count(), 10_000, 'all loaded');
  const { unlink } = await import('node:fs/promises');
  for (let i = 0; i < 100; i++) await unlink(fileOf(macOf(i)));
  for (let i = 100; i < 200; i++) await writeFile(fileOf(macOf(i)), JSON.stringify(machineRecordSchema.parse({ mac: macOf(i), hostname: `edited${i}` })));
  // made and deleted at once: the watcher may never see it, the store must not keep it
  const flash = macOf(20_000);
  await store.update(flash, () => machineRecordSchema.parse({ mac: flash, hostname: 'flash' }));
  await unlink(fileOf(flash));
  const settled = () => store.count() === 9_900 && store.get(macOf(150))?.hostname === 'edited150' && !store.has(flash);
  for (let i = 0; i < 300 && !settled(); i++) await new Promise((r) => setTimeout(r, 100));
  t.equal(store.count(), 9_900, 'deletions caught');
  t.equal(store.has(macOf(5)), false);
  t.equal(store.get(macOf(199))?.hostname, 'edited199', 'edits caught');
  t.notOk(store.has(flash), 'a file deleted right after the API made it is not served');
});
