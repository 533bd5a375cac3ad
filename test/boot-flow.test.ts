import t from 'tap';
import { parse } from 'yaml';
import { makeKeyPair } from './lib/ssh-keys.js';
import { startTestServer } from './lib/in-process-server.js';
import { writeFakeImage } from './lib/in-process-server.js';

const admin = makeKeyPair().pub;
const hostEd = makeKeyPair('ed25519', undefined, 'root@web1').pub;
const hostEc = makeKeyPair('ecdsa', 256, 'root@web1').pub;
const MAC = '52:54:00:aa:bb:01';

/** What cloud-init's phone_home module posts (form-encoded, "N/A" for missing keys). */
function phoneHomeForm(): URLSearchParams {
  return new URLSearchParams({ pub_key_rsa: 'N/A', pub_key_ecdsa: `${hostEc}\n`, pub_key_ed25519: `${hostEd}\n`, instance_id: 'i-1', hostname: 'web1', fqdn: 'web1.example.com' });
}

async function script(url: string, query: string): Promise<string> {
  const r = await fetch(`${url}/ipxe?${query}`);
  t.equal(r.headers.get('content-type'), 'text/plain; charset=utf-8');
  return r.text();
}

t.test('once: script -> NoCloud seed -> phone-home -> local, and only one phone-home per session', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default', { minRamMiB: 512 });
  await s.api('PUT', `/api/v1/machines/${MAC}`, { hostname: 'web1.example.com', sshKeys: [admin], boot: 'once', kernelArgs: 'quiet', userData: { runcmd: ['echo hi'] } });

  const boot = await (await fetch(`${s.url}/boot.ipxe`)).text();
  t.match(boot, /chain --replace --autofree http:\/\/ramboot\.test:8080\/ipxe\?mac=\$\{netX\/mac:hexhyp\}/);

  const sc = await script(s.url, 'mac=52-54-00-aa-bb-01&buildarch=x86_64&platform=pcbios&memsize=2048');
  t.match(sc, /kernel http:\/\/ramboot\.test:8080\/images\/default\/vmlinuz console=ttyS0,115200 quiet BOOTIF=01-52-54-00-aa-bb-01 ds=nocloud-net;s=http:\/\/ramboot\.test:8080\/cloud-init\/52:54:00:aa:bb:01\/[^/\s]+\/ \|\| goto failed/);
  t.match(sc, /initrd --name initrd\.img http:\/\/ramboot\.test:8080\/images\/default\/initrd\.img/);
  const seed = /;s=(\S+\/)/.exec(sc)![1]!;
  const seedPath = new URL(seed).pathname;
  const token = seedPath.split('/')[3]!;
  t.ok(Buffer.from(token.split('.')[1]!, 'base64url').length >= 16, 'session token carries >= 128 random bits');

  const second = await script(s.url, `mac=${MAC}&platform=pcbios&memsize=2048`);
  t.not(/;s=(\S+\/)/.exec(second)![1], seed, 'every script gets its own session');

  const ud = await fetch(`${s.url}${seedPath}user-data`);
  t.equal(ud.status, 200);
  const udText = await ud.text();
  t.match(udText, /^#cloud-config\n/);
  const doc = parse(udText) as Record<string, unknown>;
  t.same(doc['ssh_authorized_keys'], [admin]);
  t.equal(doc['hostname'], 'web1');
  t.same(doc['runcmd'], ['echo hi']);
  t.match(doc['phone_home'], { url: `http://ramboot.test:8080${seedPath}phone-home` });
  for (const f of ['meta-data', 'vendor-data', 'network-config']) t.equal((await fetch(`${s.url}${seedPath}${f}`)).status, 200, f);
  t.match(await (await fetch(`${s.url}${seedPath}meta-data`)).text(), /instance-id: ramboot-525400aabb01-/);

  const ev = await fetch(`${s.url}${seedPath}event`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ event: 'sshd.ready', message: 'listening' }) });
  t.equal(ev.status, 204);
  await fetch(`${s.url}${seedPath}event`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ event: 'os.booted' }) });
  const evBad = await fetch(`${s.url}${seedPath}event`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ event: 'Bad Name!' }) });
  t.equal(evBad.status, 400);

  const ph = await fetch(`${s.url}${seedPath}phone-home`, { method: 'POST', body: phoneHomeForm() });
  t.equal(ph.status, 200);
  const m = (await s.api('GET', `/api/v1/machines/${MAC}`)).json as { boot: string; status: { state: string; hostKeys: string[]; ip: string } };
  t.equal(m.boot, 'local', 'once flipped to local');
  t.equal(m.status.state, 'ready');
  t.equal(m.status.ip, '127.0.0.1');
  t.same(m.status.hostKeys, [hostEd.split(' ').slice(0, 2).join(' '), hostEc.split(' ').slice(0, 2).join(' ')]);
  const kh = await s.api('GET', `/api/v1/machines/${MAC}/known_hosts`);
  t.equal(kh.text, `127.0.0.1,web1.example.com ${hostEd.split(' ').slice(0, 2).join(' ')}\n127.0.0.1,web1.example.com ${hostEc.split(' ').slice(0, 2).join(' ')}\n`);

  const again = await fetch(`${s.url}${seedPath}phone-home`, { method: 'POST', body: phoneHomeForm() });
  t.equal(again.status, 409, 'second phone-home of the session refused');
  const events = ((await s.api('GET', `/api/v1/machines/${MAC}/events`)).json as { events: { event: string; level: string }[] }).events;
  const names = events.map((e) => e.event);
  for (const want of ['ipxe.script', 'cloud-init.user-data', 'os.sshd.ready', 'os.booted', 'phone-home.ready', 'phone-home.duplicate']) t.ok(names.includes(want), `timeline has ${want}`);
  t.notOk(names.includes('os.os.booted'), 'no double prefix');
  t.equal(events.find((e) => e.event === 'phone-home.duplicate')?.level, 'warning');

  t.match(await script(s.url, `mac=${MAC}&platform=pcbios`), /exit 1\n$/, 'after ready the machine boots its local disk: no loop');
  t.notMatch(await script(s.url, `mac=${MAC}&platform=pcbios`), /kernel /);
});

t.test('wrong, foreign or stale tokens get 404 and change nothing', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [admin], boot: 'once' });
  await s.api('PUT', '/api/v1/machines/52:54:00:aa:bb:02', { sshKeys: [admin] });
  const sc = await script(s.url, `mac=${MAC}&platform=pcbios`);
  const token = /cloud-init\/[^/]+\/([^/]+)\//.exec(sc)![1]!;
  const probes = [
    `/cloud-init/${MAC}/not-a-token/user-data`,
    `/cloud-init/52:54:00:aa:bb:02/${token}/user-data`,
    `/cloud-init/${MAC}/${token.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'))}/user-data`,
    `/cloud-init/${MAC}/0.${token.split('.').slice(1).join('.')}/user-data`,
    `/cloud-init/not-a-mac/${token}/user-data`,
    `/cloud-init/${MAC}/${token}/passwd`,
  ];
  for (const p of probes) t.equal((await fetch(`${s.url}${p}`)).status, 404, p);
  const ph = await fetch(`${s.url}/cloud-init/52:54:00:aa:bb:02/${token}/phone-home`, { method: 'POST', body: phoneHomeForm() });
  t.equal(ph.status, 404);
  t.match((await s.api('GET', `/api/v1/machines/${MAC}`)).json, { boot: 'once', status: { state: 'registered' } });
  t.ok(s.logs.some((l) => l.event === 'seed.refused' && l['reason'] === 'bad-signature'), 'refusals are logged');
  t.notOk(s.logs.some((l) => JSON.stringify(l).includes(token)), 'the token never appears in the log');
});

t.test('unknown machines are discovered and told to boot locally; too little RAM is said on the console', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default', { minRamMiB: 1024 });
  const unknown = await script(s.url, 'mac=02:de:ad:be:ef:01&platform=efi&memsize=4096&uuid=1234-abcd&serial=SN%201');
  t.match(unknown, /not registered with ramboot[^]*exit 1\n$/);
  const list = (await s.api('GET', '/api/v1/machines')).json as { machines: { mac: string; discovered: boolean; status: { state: string } }[] };
  t.match(list.machines, [{ mac: '02:de:ad:be:ef:01', discovered: true, status: { state: 'discovered' } }]);
  const ev = (await s.api('GET', '/api/v1/machines/02:de:ad:be:ef:01/events')).json as { events: { event: string; data?: Record<string, unknown> }[] };
  t.match(ev.events[0], { event: 'machine.discovered', data: { platform: 'efi', memsizeMiB: 4096, uuid: '1234-abcd', serial: 'SN 1' } });

  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [admin] });
  const small = await script(s.url, `mac=${MAC}&memsize=768`);
  t.match(small, /NOT BOOTING 52:54:00:aa:bb:01: this machine has 768 MiB of RAM but image default needs 1024 MiB/);
  t.notMatch(small, /kernel /);
  t.match(small, /exit 1\n$/);
  t.match(await script(s.url, `mac=${MAC}&memsize=1024`), /kernel /);
  t.match(await script(s.url, `mac=${MAC}&memsize=lots`), /kernel /, 'unparseable memsize is ignored, not trusted');
  const efi = await script(s.url, `mac=${MAC}&platform=efi`);
  t.match(efi, / initrd=initrd\.img \|\| goto failed/);

  const badMac = await fetch(`${s.url}/ipxe?mac=zz`);
  t.equal(badMac.status, 400);
  const missing = await s.api('PATCH', `/api/v1/machines/${MAC}`, { image: 'default' });
  t.equal(missing.status, 200);
  await s.api('PUT', '/api/v1/machines/52:54:00:aa:bb:03', { sshKeys: [admin] });
  const { rm } = await import('node:fs/promises');
  await rm(`${s.dataDir}/images/default`, { recursive: true });
  await s.waitForLog(() => true);
  let gone = '';
  for (let i = 0; i < 100 && !/not available/.test(gone); i++) {
    gone = await script(s.url, 'mac=52:54:00:aa:bb:03');
    if (!/not available/.test(gone)) await new Promise((r) => setTimeout(r, 100));
  }
  t.match(gone, /NOT BOOTING .*image default is not available on the ramboot server/);
  t.notMatch(gone, /\/images\/|dataDir|\/tmp\//, 'no server paths on the console');
});

t.test('a flood of unknown MACs cannot grow the registry past maxDiscovered', async (t) => {
  const { mkdtemp, writeFile, readdir } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(`${tmpdir()}/ramboot-cap-`);
  await writeFile(`${dir}/ramboot.yaml`, 'unknownMachines:\n  maxDiscovered: 3\n');
  const s = await startTestServer(t, { config: `${dir}/ramboot.yaml` });
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [admin], boot: 'local' });
  for (let i = 0; i < 10; i++) {
    const sc = await script(s.url, `mac=02:00:00:00:01:0${i}`);
    t.match(sc, /exit 1\n$/, 'still answered');
  }
  t.equal((await readdir(`${s.dataDir}/machines`)).length, 4, 'registered machine + 3 discovered');
  t.ok((await readdir(`${s.dataDir}/events`)).length <= 4, 'no timeline files for MACs that were not recorded');
  t.ok(s.logs.some((l) => l.event === 'machine.discover-capped'), 'the cap is logged');
});

t.test('a hostile phone-home cannot inject known_hosts lines; a used session reads no more seed data', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [admin], boot: 'once' });
  const seedPath = new URL(/;s=(\S+\/)/.exec(await script(s.url, `mac=${MAC}`))![1]!).pathname;
  const evil = makeKeyPair().pub;
  const form = new URLSearchParams({ pub_key_ed25519: evil, fqdn: `web1\n@cert-authority * ${evil}\n* ${evil}\n#`, hostname: 'bad host' });
  t.equal((await fetch(`${s.url}${seedPath}phone-home`, { method: 'POST', body: form })).status, 200);
  const m = (await s.api('GET', `/api/v1/machines/${MAC}`)).json as { status: { reportedHostname?: string } };
  t.equal(m.status.reportedHostname, undefined, 'invalid reported host names are dropped');
  const kh = (await s.api('GET', `/api/v1/machines/${MAC}/known_hosts`)).text;
  t.equal(kh.split('\n').filter(Boolean).length, 1, 'one line per key');
  t.match(kh, /^127\.0\.0\.1 ssh-ed25519 \S+\n$/);
  t.notMatch(kh, /@cert-authority|^\*/m);
  t.equal((await fetch(`${s.url}${seedPath}user-data`)).status, 404, 'seed of a session that phoned home is closed');
});

t.test('unknown machines booted by policy get the configured keys', async (t) => {
  const { mkdtemp, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(`${tmpdir()}/ramboot-unknown-`);
  await writeFile(`${dir}/ramboot.yaml`, `unknownMachines:\n  boot: ramboot\n  sshKeys: [${JSON.stringify(admin)}]\n`);
  const s = await startTestServer(t, { config: `${dir}/ramboot.yaml` });
  await writeFakeImage(s.dataDir, 'default');
  const sc = await script(s.url, 'mac=02:00:00:00:02:01');
  t.match(sc, /kernel /, 'policy boots unknown machines');
  const ud = parse(await (await fetch(`${s.url}${new URL(/;s=(\S+\/)/.exec(sc)![1]!).pathname}user-data`)).text()) as Record<string, unknown>;
  t.same(ud['ssh_authorized_keys'], [admin]);
});

t.test('an image whose manifest would inject iPXE commands is refused with a console message', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  const { readFile, writeFile } = await import('node:fs/promises');
  const mf = `${s.dataDir}/images/default/manifest.json`;
  await writeFile(mf, JSON.stringify({ ...JSON.parse(await readFile(mf, 'utf8')), cmdline: 'console=ttyS0 ; shell' }));
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [admin] });
  let sc = '';
  for (let i = 0; i < 100 && !/NOT BOOTING/.test(sc); i++) {
    sc = await script(s.url, `mac=${MAC}`);
    if (!/NOT BOOTING/.test(sc)) await s.waitForLog((l) => l.event === 'images.invalid-manifest', 200).catch(() => undefined);
  }
  t.match(sc, /NOT BOOTING .*image default is not available/);
  t.notMatch(sc, /shell/);
  t.ok(s.logs.some((l) => l.event === 'images.invalid-manifest' && /cmdline contains ";"/.test(String(l['reason']))));
});
