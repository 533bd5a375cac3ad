import t from 'tap';
import { Registry } from './registry.js';
import { MemoryStore } from '../store/memory-store.js';
import { MemoryEventLog } from '../events/event-log.js';
import { ImageStore } from '../images/image-store.js';
import { silentLogger } from '../../common/log.js';
import { parseMac, type Mac } from '../../common/mac.js';
import { machineSpecSchema } from './model.js';

/** A point async code stops at until the test opens it; `reached` resolves when code arrives there. */
class Gate {
  private arrive!: () => void;
  readonly reached = new Promise<void>((r) => { this.arrive = r; });
  open!: () => void;
  private readonly opened = new Promise<void>((r) => { this.open = r; });
  async pass(): Promise<void> {
    this.arrive();
    await this.opened;
  }
}

/** A timeline whose remove() / append() can be held at a gate: a slow disk, made deterministic. */
class GatedEventLog extends MemoryEventLog {
  removeGate: Gate | undefined;
  appendGate: Gate | undefined;
  override async remove(mac: Mac): Promise<void> {
    await this.removeGate?.pass();
    await super.remove(mac);
  }
  override async append(mac: Mac, ev: Parameters<MemoryEventLog['append']>[1]): Promise<void> {
    await this.appendGate?.pass();
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
  const gate = (events.removeGate = new Gate());
  const del = registry.remove(mac);
  await gate.reached; // the record is gone, the timeline removal is under way
  const put = registry.put(mac, spec, false);
  await settle(); // without the per-MAC timeline lock the PUT completes here, and the removal then eats its event
  gate.open();
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
  const gate = (events.appendGate = new Gate());
  const ev = registry.event(mac, { event: 'ipxe.script', level: 'info', message: 'boot request' });
  await gate.reached; // the machine was registered when the event started
  const del = registry.remove(mac);
  await settle(); // without the lock the DELETE finishes here, and the late append recreates the timeline
  gate.open();
  await Promise.all([del, ev]);
  t.notOk(store.has(mac), 'deleted');
  t.same(await events.list(mac), [], 'no events for a machine that is not registered');
});

t.test('deleting an unknown machine: 404, nothing else touched', async (t) => {
  const { registry } = setup();
  await t.rejects(registry.remove(mac), { name: 'RegistryError', kind: 'not-found', message: /is not registered/ });
});

t.test('a session phones home once in its whole lifetime, even when 70 newer ones were minted in the same second', async (t) => {
  const { registry } = setup();
  await registry.put(mac, spec, false);
  // Expiries have a one-second grain: every session here expires in the same second.
  const expiresAt = new Date(Math.floor(Date.now() / 1000 + 3600) * 1000);
  const report = (sessionId: string) => ({ sessionId, sessionExpiresAt: expiresAt, hostKeys: [] });
  t.equal(await registry.phoneHome(mac, report('first-session-000000')), 'accepted');
  for (let i = 0; i < 70; i++) t.equal(await registry.phoneHome(mac, report(`newer-session-${String(i).padStart(6, '0')}`)), 'accepted');
  t.equal(await registry.phoneHome(mac, report('first-session-000000')), 'duplicate', 'dropped from the bounded list, still refused');
  t.equal(await registry.phoneHome(mac, report('newer-session-000069')), 'duplicate', 'one still in the list is refused');
  const later = { sessionId: 'a-later-session-00000', sessionExpiresAt: new Date(expiresAt.getTime() + 1000), hostKeys: [] };
  t.equal(await registry.phoneHome(mac, later), 'accepted', 'a session minted a second later is new');
  const status = (await registry.get(mac))?.status;
  t.equal(status?.usedSessions.length, 64, 'bounded again once a later second was used');
  t.equal(await registry.phoneHome(mac, report('first-session-000000')), 'duplicate', 'the first one still refused (older than the newest used)');
});
