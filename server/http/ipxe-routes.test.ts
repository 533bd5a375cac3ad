import t, { type Test } from 'tap';
import express from 'express';
import type { AddressInfo } from 'node:net';
import { silentLogger } from '../../common/log.js';
import { parseMac, type Mac } from '../../common/mac.js';
import { FakeBooter } from '../../test/lib/fake-booter.js';
import { BootScripts } from '../boot/boot-scripts.js';
import type { BootDecision } from '../boot/booter.js';
import { RenderCache } from '../boot/render-cache.js';
import { SessionMinter } from '../boot/sessions.js';
import type { NewEvent } from '../events/event-log.js';
import { machineRecordSchema } from '../machines/model.js';
import { ipxeRouter } from './ipxe-routes.js';

const MAC = parseMac('52:54:00:12:34:56');
const machine = machineRecordSchema.parse({ mac: MAC, sshKeys: [], hostname: 'web1', kernelArgs: 'quiet' });
const image = {
  name: 'default', dir: '/nonexistent',
  manifest: { schema: 1 as const, name: 'default', kernel: 'vmlinuz', initrd: ['initrd.img'], cmdline: 'console=ttyS0', minRamMiB: 256, packages: [], build: {},
    files: { vmlinuz: { sha256: 'a'.repeat(64), size: 1 }, 'initrd.img': { sha256: 'b'.repeat(64), size: 1 } } },
};

async function serve(t: Test, decide: (mac: Mac) => BootDecision) {
  const booter = new FakeBooter((req) => decide(req.mac));
  const events: { mac: Mac; ev: NewEvent }[] = [];
  const served: BootDecision['kind'][] = [];
  const cache = new RenderCache();
  t.teardown(() => cache.close());
  const sessions = new SessionMinter(Buffer.alloc(32, 7), 3600);
  const publicUrl = () => 'http://10.0.0.1:8080';
  const app = express().use(ipxeRouter({
    booter, scripts: new BootScripts({ cache, sessions, imagesVersion: () => 1, publicUrl }), logger: silentLogger(), publicUrl,
    record: async (mac, ev) => void events.push({ mac, ev }),
    onScript: (d) => void served.push(d.kind),
  }));
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  t.teardown(() => new Promise((r) => server.close(r)));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { booter, events, served, sessions, get: async (q: string) => { const res = await fetch(`${base}/ipxe?${q}`); return { status: res.status, text: await res.text() }; } };
}

t.test('the handler hands the firmware facts to the Booter and renders what it decides', async (t) => {
  const s = await serve(t, () => ({ kind: 'ramboot', mode: 'once', image, machine }));
  const r = await s.get('mac=52-54-00-12-34-56&platform=efi&buildarch=x86_64&memsize=2048&uuid=ABCD-1&serial=SN%201&junk=1');
  t.equal(r.status, 200);
  t.match(s.booter.asked, [{ mac: MAC, facts: { platform: 'efi', buildarch: 'x86_64', memsizeMiB: 2048, uuid: 'abcd-1', serial: 'SN 1', ip: /127\.0\.0\.1/ } }]);
  t.match(r.text, /kernel http:\/\/10\.0\.0\.1:8080\/images\/default\/vmlinuz console=ttyS0 quiet BOOTIF=01-52-54-00-12-34-56 ds=nocloud-net;s=http:\/\/10\.0\.0\.1:8080\/cloud-init\/52:54:00:12:34:56\/([^/]+)\/ initrd=initrd\.img/);
  const token = /cloud-init\/[^/]+\/([^/]+)\//.exec(r.text)?.[1] ?? '';
  t.ok(s.sessions.verify(MAC, token).ok, 'a live boot session is minted into the script');
  const again = await s.get('mac=52:54:00:12:34:56&platform=efi&buildarch=x86_64&memsize=2048');
  t.not(/cloud-init\/[^/]+\/([^/]+)\//.exec(again.text)?.[1], token, 'every script gets its own session');
  t.match(s.events.map((e) => e.ev.event), ['ipxe.script', 'ipxe.script']);
});

t.test('local and refuse decisions become exit scripts and their events', async (t) => {
  let next: BootDecision = { kind: 'local', reason: 'is set to boot from its local disk', machine };
  const s = await serve(t, () => next);
  t.match((await s.get(`mac=${MAC}`)).text, /boot from its local disk[^]*exit 1\n$/);
  next = { kind: 'refuse', reason: 'this machine has 100 MiB of RAM', detail: 'detail for the admin' };
  const refused = await s.get(`mac=${MAC}&memsize=100`);
  t.match(refused.text, /NOT BOOTING 52:54:00:12:34:56: this machine has 100 MiB of RAM/);
  t.notMatch(refused.text, /detail for the admin/, 'the detail stays on the server');
  t.notMatch(refused.text, /kernel /);
  t.match(s.events.map((e) => [e.ev.event, e.ev.message]), [['ipxe.local', /local disk/], ['ipxe.refused', 'detail for the admin']]);
});

t.test('a bad MAC is answered 400 without asking the Booter', async (t) => {
  const s = await serve(t, () => ({ kind: 'local', reason: 'x' }));
  for (const q of ['mac=zz', '', 'mac=52:54:00:12:34:56&mac=52:54:00:12:34:57']) t.equal((await s.get(q)).status, 400, q || '(no mac)');
  t.same(s.booter.asked, []);
  t.same(s.events, []);
});

t.test('the script hook sees the decision the script carries out: a command line too long is a refusal', async (t) => {
  const long = { ...machine, kernelArgs: 'x'.repeat(2040) };
  let next: BootDecision = { kind: 'ramboot', mode: 'ramboot', image, machine };
  const s = await serve(t, () => next);
  await s.get(`mac=${MAC}`);
  next = { kind: 'ramboot', mode: 'ramboot', image, machine: long };
  t.match((await s.get(`mac=${MAC}`)).text, /NOT BOOTING .*kernel command line would be too long/);
  t.same(s.served, ['ramboot', 'refuse'], 'counted as served, not as the Booter first decided');
});
