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
