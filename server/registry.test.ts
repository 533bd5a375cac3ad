import t from 'tap';
import { Registry } from './registry.js';
import { MemoryStore } from './store/memory-store.js';
import { MemoryEventLog } from './events/event-log.js';
import { ImageStore } from './images/image-store.js';
import { silentLogger } from './log.js';
import { parseMac, type Mac } from './mac.js';
import { machineSpecSchema } from './machines/model.js';

/** A timeline whose remove() / append() wait at gates the test opens: a slow disk, made deterministic. */
class GatedEventLog extends MemoryEventLog {
  gate: Promise<void> | undefined;
  removing: (() => void) | undefined;
  appendGate: Promise<void> | undefined;
  appending: (() => void) | undefined;
  override async remove(mac: Mac): Promise<void> {
    this.removing?.();
    if (this.gate) await this.gate;
    await super.remove(mac);
  }
  override async append(mac: Mac, ev: Parameters<MemoryEventLog['append']>[1]): Promise<void> {
    this.appending?.();
    if (this.appendGate) await this.appendGate;
    await super.append(mac, ev);
  }
}

/** Lets in-memory async work run as far as it can (no timers: a few turns of the event loop). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
}

function setup(): { registry: Registry; events: GatedEventLog; store: MemoryStore } {
  const store = new MemoryStore();
  const events = new GatedEventLog();
  const registry = new Registry(store, events, new ImageStore('/nonexistent-ramboot-images', silentLogger()), silentLogger(), 100);
  return { registry, events, store };
}

const mac = parseMac('52:54:00:aa:bb:01');
const spec = machineSpecSchema.parse({ sshKeys: [] });

t.test('a PUT while a DELETE is still removing the timeline keeps the new machine\'s events', async (t) => {
  const { registry, events, store } = setup();
  await registry.put(mac, spec, false);
  let open!: () => void;
  events.gate = new Promise<void>((r) => { open = r; });
  const removing = new Promise<void>((r) => { events.removing = r; });
  const del = registry.remove(mac);
  await removing; // the record is gone, the timeline removal is under way
  const put = registry.put(mac, spec, false);
  await settle(); // without the per-MAC timeline lock the PUT completes here, and the removal then eats its event
  open();
  await del;
  const { created } = await put;
  t.ok(created, 'registered again');
  t.ok(store.has(mac));
  const names = (await events.list(mac)).map((e) => e.event);
  t.same(names, ['api.registered'], 'the new registration is in the timeline, nothing of the old one');
});

t.test('a boot event being written when a DELETE comes leaves no timeline for the deleted machine', async (t) => {
  const { registry, events, store } = setup();
  await registry.put(mac, spec, false);
  let open!: () => void;
  events.appendGate = new Promise<void>((r) => { open = r; });
  const appending = new Promise<void>((r) => { events.appending = r; });
  const ev = registry.event(mac, { event: 'ipxe.script', level: 'info', message: 'boot request' });
  await appending; // the machine was registered when the event started
  const del = registry.remove(mac);
  await settle(); // without the lock the DELETE finishes here, and the late append recreates the timeline
  open();
  await Promise.all([del, ev]);
  t.notOk(store.has(mac), 'deleted');
  t.same(await events.list(mac), [], 'no events for a machine that is not registered');
});

t.test('deleting an unknown machine: 404, nothing else touched', async (t) => {
  const { registry } = setup();
  await t.rejects(registry.remove(mac), { name: 'HttpError', message: /is not registered/ });
});
