/**
 * The hardening issue's findings, one test each (named after the finding), against the real server
 * in this process (test/lib/in-process-server.ts) or as a child process where a crash is the point.
 */
import t from 'tap';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { startTestServer, writeFakeImage, type TestServer } from './lib/in-process-server.js';
import { launchRambootServer } from './lib/ramboot-server.js';
import { makeKeyPair } from './lib/ssh-keys.js';
import { tempDir } from './lib/temp-dir.js';

const key = makeKeyPair().pub;
const hostKey = makeKeyPair('ed25519', undefined, 'root@x').pub;
const MAC = '52:54:00:00:00:01';
const fileOf = (s: TestServer, mac = MAC) => join(s.dataDir, 'machines', `${mac.replaceAll(':', '-')}.json`);

/** A fresh boot session: the seed path from a served script. */
async function seedPath(s: TestServer, mac = MAC): Promise<string> {
  const sc = await (await fetch(`${s.url}/ipxe?mac=${mac}&platform=pcbios`)).text();
  const m = /;s=(\S+\/)/.exec(sc);
  if (!m) throw new Error(`no seed in script: ${sc}`);
  return new URL(m[1]!).pathname;
}

const phoneHome = (s: TestServer, path: string, fields: Record<string, string> = {}) =>
  fetch(`${s.url}${path}phone-home`, { method: 'POST', body: new URLSearchParams({ pub_key_ed25519: hostKey, hostname: 'x', ...fields }) });

t.test('finding 1: deep JSON is refused before anything is written; one bad record never breaks listing or start-up', async (t) => {
  const s = await startTestServer(t);
  const deep = `{"sshKeys":[],"userData":${'{"a":'.repeat(2000)}1${'}'.repeat(2001)}`;
  const r = await s.api('PUT', `/api/v1/machines/${MAC}`, deep);
  t.equal(r.status, 400);
  t.match(r.json, { error: /nested deeper than 32 levels/ });
  const medium = `{"sshKeys":[],"userData":${'{"a":'.repeat(40)}1${'}'.repeat(41)}`;
  t.equal((await s.api('PUT', `/api/v1/machines/${MAC}`, medium)).status, 400, 'depths past the limit but small enough to parse are refused too');
  t.same(await readdir(join(s.dataDir, 'machines')), [], 'nothing was written');
  t.equal((await s.api('GET', '/api/v1/machines')).status, 200, 'listing still works');

  // the same record written by hand: listed as broken, start-up and every other machine unaffected
  await s.api('PUT', '/api/v1/machines/52:54:00:00:00:02', { sshKeys: [key] });
  await writeFile(fileOf(s), `{"mac":"${MAC}","sshKeys":[],"userData":${'{"a":'.repeat(5000)}1${'}'.repeat(5001)}`);
  await s.stop();
  await s.start();
  const list = (await s.api('GET', '/api/v1/machines')).json as { machines: { mac: string }[]; broken: { mac: string; reason: string }[] };
  t.same(list.machines.map((m) => m.mac), ['52:54:00:00:00:02'], 'the good machine is served');
  t.match(list.broken, [{ mac: MAC, reason: /nested deeper/ }]);
  t.match(await (await fetch(`${s.url}/ipxe?mac=52:54:00:00:00:02`)).text(), /#!ipxe/);
});

t.test('finding 2: a typo in a hand edit never turns the machine into a stranger', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], hostname: 'precious', userData: { packages: ['htop'] } });
  const typo = (await readFile(fileOf(s), 'utf8')).replace('"precious"', '"precious",,');
  await writeFile(fileOf(s), typo);
  await s.stop();
  await s.start();
  const sc = await (await fetch(`${s.url}/ipxe?mac=${MAC}`)).text();
  t.match(sc, /NOT BOOTING .*record on the ramboot server is damaged/, 'refused with a reason, not discovered');
  t.equal(await readFile(fileOf(s), 'utf8'), typo, 'the admin\'s file is untouched');
  t.ok(s.logs.some((l) => l.event === 'ipxe.refused' && /not valid JSON/.test(String(l['reason']))), 'the log says why');
  t.notOk(s.logs.some((l) => l.event === 'machine.discovered'), 'never discovered');
  const got = await s.api('GET', `/api/v1/machines/${MAC}`);
  t.equal(got.status, 409);
  t.match(got.json, { error: /is invalid \(not valid JSON/ });
  // the admin fixes it with a PUT: the bad file is kept in quarantine
  t.equal((await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], hostname: 'precious' })).status, 201);
  const kept = await readdir(join(s.dataDir, 'machines', 'quarantine'));
  t.equal(kept.length, 1);
  t.equal(await readFile(join(s.dataDir, 'machines', 'quarantine', kept[0]!), 'utf8'), typo, 'the invalid file is kept as it was');
  t.same(((await s.api('GET', '/api/v1/machines')).json as { broken: unknown[] }).broken, [], 'no longer broken');
});

t.test('finding 3: a booting machine cannot put a name of its choosing into known_hosts', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], hostname: 'web1.example.com' });
  t.equal((await phoneHome(s, await seedPath(s), { fqdn: 'github.com', hostname: 'github' })).status, 200);
  const kh = (await s.api('GET', `/api/v1/machines/${MAC}/known_hosts`)).text;
  t.notMatch(kh, /github/, 'the reported name is not trusted');
  t.match(kh, /^127\.0\.0\.1,web1\.example\.com ssh-ed25519 /, 'registered name and seen address only');
  t.match((await s.api('GET', `/api/v1/machines/${MAC}`)).json, { status: { reportedHostname: 'github.com' } }, 'stored as reported');
  await s.api('PUT', '/api/v1/machines/52:54:00:00:00:03', { sshKeys: [key] });
  await phoneHome(s, await seedPath(s, '52:54:00:00:00:03'), { fqdn: 'github.com' });
  t.match((await s.api('GET', '/api/v1/machines/52:54:00:00:00:03/known_hosts')).text, /^127\.0\.0\.1 ssh-ed25519 /, 'no registered name: the address only');
});

t.test('finding 4: reload cannot miss a change', async (t) => {
  const s = await startTestServer(t);
  const machines = join(s.dataDir, 'machines');
  // created through the API, deleted by hand at once
  t.equal((await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key] })).status, 201);
  await rm(fileOf(s));
  await s.waitForLog((l) => l.event === 'store.removed' && l['mac'] === MAC);
  t.equal((await s.api('GET', `/api/v1/machines/${MAC}`)).status, 404, 'a file deleted right after its creation is not served');
  t.match(await (await fetch(`${s.url}/ipxe?mac=${MAC}`)).text(), /not registered/);
  // the folder removed: reads keep working from memory, writes recreate it
  await s.api('PUT', '/api/v1/machines/52:54:00:00:00:05', { sshKeys: [key] });
  await rm(machines, { recursive: true });
  t.equal((await s.api('PUT', '/api/v1/machines/52:54:00:00:00:06', { sshKeys: [key] })).status, 201, 'PUT while the folder is missing');
  t.equal((await fetch(`${s.url}/ipxe?mac=52:54:00:00:00:06`)).status, 200, '/ipxe while the folder is missing');
  // removed and made again (rm -rf machines && mkdir machines): memory follows the disk, hand edits work
  await rm(machines, { recursive: true });
  await mkdir(machines);
  await s.waitForLog((l) => l.event === 'store.removed' && l['mac'] === '52:54:00:00:00:06');
  await writeFile(join(machines, '52-54-00-00-00-07.json'), JSON.stringify({ mac: '52:54:00:00:00:07', sshKeys: [key], hostname: 'byhand' }));
  await s.waitForLog((l) => l.event === 'store.reloaded' && l['mac'] === '52:54:00:00:00:07');
  t.match((await s.api('GET', '/api/v1/machines/52:54:00:00:00:07')).json, { hostname: 'byhand' }, 'a hand edit in the new folder is picked up');
  t.same(((await s.api('GET', '/api/v1/machines')).json as { machines: { mac: string }[] }).machines.map((m) => m.mac), ['52:54:00:00:00:07']);
});

t.test('finding 6: bad percent-encoding and bodies that do not decode answer 400 with a reason, no stack', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  for (const path of ['/images/default/%ff', '/cloud-init/%ff/x/user-data', '/cloud-init/52:54:00:00:00:01/%ff/meta-data']) {
    const r = await fetch(`${s.url}${path}`);
    t.equal(r.status, 400, path);
    t.match(await r.text(), /invalid percent-encoding/);
  }
  t.equal((await s.api('GET', '/api/v1/machines/%ff')).status, 400);
  const gz = await s.api('PUT', `/api/v1/machines/${MAC}`, Buffer.from('not gzip at all').toString('latin1'), { 'content-encoding': 'gzip' });
  t.equal(gz.status, 400, 'gzip that does not decode');
  t.match(gz.json, { error: /does not decode/ });
  const br = await fetch(`${s.url}/api/v1/machines/${MAC}`, { method: 'PUT', headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json', 'content-encoding': 'x-unknown' }, body: '{}' });
  t.equal(br.status, 415, 'unknown encoding');
  const ok = await fetch(`${s.url}/api/v1/machines/${MAC}`, { method: 'PUT', headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: gzipSync(JSON.stringify({ sshKeys: [key] })) });
  t.equal(ok.status, 201, 'gzip that decodes is fine');
  t.notOk(s.logs.some((l) => l['level'] === 'error'), 'nothing logged at error level');
  t.notOk(s.logs.some((l) => JSON.stringify(l).includes('    at ')), 'no stack traces in the log');
});

t.test('finding 7: a kill -9 loop loses no acknowledged write and leaves no temp files', async (t) => {
  const dataDir = tempDir(t, 'kill9');
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const acked = new Map<string, number>();
  for (let round = 0; round < 6; round++) {
    const srv = await launchRambootServer({ dataDir, publicUrl: 'http://ramboot.test:8080', name: `kill9-${round}` });
    try {
      let stop = false;
      const writers = Array.from({ length: 4 }, async (_, w) => {
        for (let i = 0; !stop; i++) {
          const mac = `02:00:00:00:0${w}:${(i % 16).toString(16).padStart(2, '0')}`;
          const rev = round * 1000 + i;
          const r = await srv.api('PUT', `/api/v1/machines/${mac}`, { sshKeys: [key], hostname: `h${rev}`, userData: { round: rev, pad: 'x'.repeat(2000) } }).catch(() => undefined);
          if (r && (r.status === 200 || r.status === 201)) acked.set(mac, rev);
        }
      });
      await new Promise((r) => setTimeout(r, 150 + rand() * 600)); // a random point in the write stream (this is the test's input, not a wait for an event)
      srv.proc.killNow('SIGKILL');
      stop = true;
      await Promise.all(writers);
      await srv.proc.exited;
    } finally {
      await srv.stop();
    }
  }
  const srv = await launchRambootServer({ dataDir, publicUrl: 'http://ramboot.test:8080', name: 'kill9-final' });
  t.teardown(() => srv.stop());
  const names = await readdir(join(dataDir, 'machines'));
  t.same(names.filter((n) => n.endsWith('.tmp')), [], 'no temp files after the restart');
  const list = (await srv.api('GET', '/api/v1/machines')).json as { machines: { mac: string; hostname: string; userData: { round: number } }[]; broken: unknown[] };
  t.same(list.broken, [], 'every file valid');
  t.ok(acked.size > 0, `${acked.size} machines written`);
  for (const [mac, rev] of acked) {
    const m = list.machines.find((x) => x.mac === mac);
    t.ok(m && m.userData.round >= rev, `${mac}: acknowledged write ${rev} present (found ${m?.userData.round})`);
  }
});

t.test('hardening (also): kernelArgs and the whole command line are checked the way the kernel reads them', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  for (const [args, re] of [['"root=/dev/sda1"', /root=/], ['x="a b', /unclosed double quote/], ['foo="ds=nocloud"', undefined], ['"BOOTIF=x"', /BOOTIF/]] as const) {
    const r = await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], kernelArgs: args });
    if (re) {
      t.equal(r.status, 400, args);
      t.match(r.json, { error: re });
    } else t.equal(r.status, 201, `${args}: a quoted value that only contains a managed word is fine`);
  }
  const long = 'x'.repeat(2000);
  const r = await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], kernelArgs: long });
  t.equal(r.status, 400, 'image line + kernelArgs + what ramboot adds would pass 2048');
  t.match(r.json, { error: /kernel command line would be \d+ characters/ });
  t.equal((await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], kernelArgs: 'x'.repeat(1500) })).status, 200);
  // the image's own line grows after the PUT: refused at render time, with the reason on the server
  const manifestPath = join(s.dataDir, 'images', 'default', 'manifest.json');
  const manifest = JSON.parse(await readFile(manifestPath, 'utf8')) as { cmdline: string };
  await writeFile(manifestPath, JSON.stringify({ ...manifest, cmdline: `${manifest.cmdline} ${'y'.repeat(600)}` }));
  await s.waitForLog(() => true);
  let sc = '';
  for (let i = 0; i < 100 && !/too long/.test(sc); i++) {
    sc = await (await fetch(`${s.url}/ipxe?mac=${MAC}`)).text();
    if (!/too long/.test(sc)) await new Promise((r) => setTimeout(r, 100));
  }
  t.match(sc, /NOT BOOTING .*kernel command line would be too long/);
  t.notMatch(sc, /^kernel /m);
});

t.test('hardening (also): a session phones home at most once in its whole lifetime', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key] });
  const first = await seedPath(s);
  t.equal((await phoneHome(s, first)).status, 200);
  for (let i = 0; i < 70; i++) t.equal((await phoneHome(s, await seedPath(s))).status, 200);
  t.equal((await phoneHome(s, first)).status, 409, 'the first session is still refused after 70 newer ones');
});

t.test('hardening (also): a flood of unauthenticated requests cannot evict the admin\'s and the OS\'s events', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key] });
  const seed = await seedPath(s);
  await fetch(`${s.url}${seed}event`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ event: 'sshd.ready' }) });
  const t0 = Date.now();
  await Promise.all(Array.from({ length: 600 }, () => fetch(`${s.url}/ipxe?mac=${MAC}`).then((r) => r.text())));
  // The budget is a burst of 30 plus 20 a minute: on a slow machine the flood takes long enough
  // for the bucket to refill a little, so the bound counts the time it took.
  const bound = 30 + Math.ceil(((Date.now() - t0) * 20) / 60_000) + 1;
  const names = ((await s.api('GET', `/api/v1/machines/${MAC}/events`)).json as { events: { event: string }[] }).events.map((e) => e.event);
  t.ok(names.includes('api.registered'), 'the admin\'s event is still there');
  t.ok(names.includes('os.sshd.ready'), 'the OS\'s event is still there');
  const scripts = names.filter((n) => n === 'ipxe.script').length;
  t.ok(scripts <= bound, `flood events bounded (${scripts} of 600 requests; bound ${bound})`);
});

t.test('hardening (also): HTTP details: suffix ranges, If-None-Match, 413 texts, MACs, file checks', async (t) => {
  const s = await startTestServer(t);
  const { files } = await writeFakeImage(s.dataDir, 'default');
  const size = files['initrd.img']!.length;
  const r = await fetch(`${s.url}/images/default/initrd.img`, { headers: { range: `bytes=-${size * 2}` } });
  t.equal(r.status, 206, 'a suffix longer than the file is the whole file (RFC 9110)');
  t.equal(r.headers.get('content-range'), `bytes 0-${size - 1}/${size}`);
  t.equal(Buffer.from(await r.arrayBuffer()).length, size);

  t.equal((await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key] }, { 'if-none-match': '*' })).status, 201, 'If-None-Match: * creates');
  const again = await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], hostname: 'changed' }, { 'if-none-match': '*' });
  t.equal(again.status, 412, 'If-None-Match: * on an existing machine is refused');
  t.notOk((await s.api('GET', `/api/v1/machines/${MAC}`)).json && ((await s.api('GET', `/api/v1/machines/${MAC}`)).json as { hostname?: string }).hostname, 'unchanged');

  const seed = await seedPath(s);
  const big = await fetch(`${s.url}${seed}phone-home`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ x: 'y'.repeat(70_000) }) });
  t.equal(big.status, 413);
  t.match(await big.text(), /larger than 64 KiB/, 'the limit of this endpoint, not the API\'s');

  for (const bad of ['ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '00:00:00:00:00:00']) {
    t.equal((await fetch(`${s.url}/ipxe?mac=${bad}`)).status, 400, `/ipxe ${bad}`);
    t.equal((await s.api('PUT', `/api/v1/machines/${bad}`, { sshKeys: [key] })).status, 400, `PUT ${bad}`);
  }

  // a file changed on disk behind the manifest's back is refused, with a clear log line
  const initrd = join(s.dataDir, 'images', 'default', 'initrd.img');
  const damaged = Buffer.from(files['initrd.img']!);
  damaged[100] = damaged[100]! ^ 0xff;
  await writeFile(initrd, damaged);
  const bad = await fetch(`${s.url}/images/default/initrd.img`);
  t.equal(bad.status, 503);
  t.ok(s.logs.some((l) => l.event === 'images.file-mismatch' && /sha256 on disk/.test(String(l['reason']))), 'logged with the reason');
  await writeFile(initrd, files['initrd.img']!);
  t.equal((await fetch(`${s.url}/images/default/initrd.img`)).status, 200, 'restored: served again');
});

t.test('hardening (also): a world-readable session-secret is refused like the token', async (t) => {
  const dataDir = tempDir(t, 'secret-mode');
  const s = await startTestServer(t, {}, dataDir);
  await s.stop();
  await chmod(join(dataDir, 'session-secret'), 0o644);
  await t.rejects(s.start(), /session secret .*session-secret has mode 644: it must not be readable by group\/others/);
});

t.test('hardening (also): header timeout and connection cap', async (t) => {
  const s = await startTestServer(t, { httpHeadersTimeout: '1000', httpMaxConnections: '16' });
  const u = new URL(s.url);
  // a client that never finishes its headers is cut off
  const slow = connect(Number(u.port), u.hostname);
  slow.write('GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n');
  const closed = await new Promise<string>((resolve) => {
    let got = '';
    slow.on('data', (d) => (got += d.toString()));
    slow.on('close', () => resolve(got));
  });
  t.match(closed, /^(HTTP\/1\.1 408|)/, 'closed (408 or plain close) after the headers timeout');
  // more connections than the cap: the extra ones are closed, the server keeps serving afterwards
  const socks = await Promise.all(Array.from({ length: 40 }, () => new Promise<import('node:net').Socket>((resolve) => {
    const c = connect(Number(u.port), u.hostname, () => resolve(c));
    c.on('error', () => undefined);
  })));
  const closedCount = await new Promise<number>((resolve) => {
    let n = 0;
    const timer = setTimeout(() => resolve(n), 2000);
    for (const c of socks) c.on('close', () => { if (++n >= 40 - 16) { clearTimeout(timer); resolve(n); } });
  });
  t.ok(closedCount >= 40 - 16, `${closedCount} connections over the cap were closed`);
  for (const c of socks) c.destroy();
  // the server notices the closed sockets on its own time: ask until it answers (bounded)
  let status = 0;
  for (let i = 0; i < 50 && status !== 200; i++) {
    status = await fetch(`${s.url}/boot.ipxe`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status, () => 0);
    if (status !== 200) await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(status, 200, 'still serving');
});
