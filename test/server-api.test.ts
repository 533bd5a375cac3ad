import t from 'tap';
import { existsSync } from 'node:fs';
import { readFile, writeFile, unlink } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { makeKeyPair } from './lib/ssh-keys.js';
import { startTestServer, writeFakeImage, type TestServer } from './lib/in-process-server.js';

const key = makeKeyPair().pub;
const key2 = makeKeyPair('ecdsa', 256).pub;
const MAC = 'aa:bb:cc:00:11:22';
const machineFile = (s: TestServer, mac = MAC) => join(s.dataDir, 'machines', `${mac.replaceAll(':', '-')}.json`);

/** GET with a raw, un-normalised path (fetch would resolve "..", "%2e%2e"). */
function rawGet(base: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET', headers }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('admin API needs the token', async (t) => {
  const s = await startTestServer(t);
  const none = await fetch(`${s.url}/api/v1/machines`);
  t.equal(none.status, 401);
  t.match(none.headers.get('www-authenticate') ?? '', /Bearer/);
  const wrong = await fetch(`${s.url}/api/v1/machines`, { headers: { authorization: 'Bearer nope' } });
  t.equal(wrong.status, 401);
  t.match(await wrong.json(), { error: /invalid API token/ });
  const ok = await s.api('GET', '/api/v1/machines');
  t.equal(ok.status, 200);
  t.same(ok.json, { machines: [], broken: [] });
  const stat = await import('node:fs/promises').then((f) => f.stat(join(s.dataDir, 'api-token')));
  t.equal(stat.mode & 0o777, 0o600, 'generated token file is 0600');
});

t.test('register, read, replace, patch, delete', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  const put = await s.api('PUT', '/api/v1/machines/AA-BB-CC-00-11-22', { hostname: 'Web1', sshKeys: [key], boot: 'once', image: 'default', kernelArgs: 'quiet', userData: { packages: ['htop'] } });
  t.equal(put.status, 201);
  t.match(put.json, { mac: MAC, hostname: 'web1', boot: 'once', image: 'default', kernelArgs: 'quiet', revision: 1, discovered: false, status: { state: 'registered' } });
  const etag1 = put.headers.get('etag') ?? '';
  t.match(etag1, /^"[A-Za-z0-9_-]{22}"$/, 'strong ETag');
  const onDisk = JSON.parse(await readFile(machineFile(s), 'utf8')) as Record<string, unknown>;
  t.equal(onDisk['mac'], MAC, 'stored lower-case with colons');

  for (const notation of ['aabb.cc00.1122', 'AABBCC001122', 'aa:bb:cc:00:11:22']) {
    const g = await s.api('GET', `/api/v1/machines/${notation}`);
    t.equal(g.status, 200, notation);
  }
  const list = await s.api('GET', '/api/v1/machines');
  t.equal((list.json as { machines: unknown[] }).machines.length, 1);

  const rep = await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key2] });
  const etag2 = rep.headers.get('etag') ?? '';
  t.not(etag2, etag1, 'ETag changes with the record');
  t.equal(rep.status, 200);
  t.match(rep.json, { revision: 2, boot: 'ramboot', image: 'default' });
  t.notOk((rep.json as Record<string, unknown>)['hostname'], 'PUT replaces the whole spec');

  const stale = await s.api('PATCH', `/api/v1/machines/${MAC}`, { hostname: 'x' }, { 'if-match': etag1 });
  t.equal(stale.status, 412, 'If-Match with an old ETag is refused');
  const patched = await s.api('PATCH', `/api/v1/machines/${MAC}`, { hostname: 'db1', boot: 'local' }, { 'if-match': etag2 });
  t.equal(patched.status, 200);
  t.match(patched.json, { hostname: 'db1', boot: 'local', sshKeys: [key2], revision: 3 });
  t.equal((await s.api('PATCH', `/api/v1/machines/${MAC}`, { hostname: 'x' }, { 'if-match': `W/${patched.headers.get('etag')}` })).status, 412, 'weak tags never match If-Match');
  const unset = await s.api('PATCH', `/api/v1/machines/${MAC}`, { hostname: null });
  t.notOk((unset.json as Record<string, unknown>)['hostname'], 'null removes a field');
  t.equal((await s.api('PATCH', '/api/v1/machines/00:00:00:00:00:01', { boot: 'local' })).status, 404);

  const ev = await s.api('GET', `/api/v1/machines/${MAC}/events`);
  t.match((ev.json as { events: { event: string }[] }).events.map((e) => e.event), ['api.registered', 'api.replaced', 'api.updated', 'api.updated']);

  t.equal((await s.api('DELETE', `/api/v1/machines/${MAC}`)).status, 204);
  t.equal((await s.api('GET', `/api/v1/machines/${MAC}`)).status, 404);
  t.equal((await s.api('DELETE', `/api/v1/machines/${MAC}`)).status, 404);
  await t.rejects(readFile(machineFile(s)), { code: 'ENOENT' }, 'file removed');
});

t.test('bad input: clear error, nothing changes', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  t.equal((await s.api('PUT', `/api/v1/machines/${MAC}`, { hostname: 'web1', sshKeys: [key] })).status, 201);
  const before = await readFile(machineFile(s), 'utf8');
  const cases: [string, string, unknown, number, RegExp, Record<string, string>?][] = [
    ['invalid MAC', '/api/v1/machines/aa:bb:cc', { sshKeys: [key] }, 400, /not a MAC address/],
    ['traversal as MAC', '/api/v1/machines/..%2f..%2fetc', { sshKeys: [key] }, 400, /not a MAC address/],
    ['malformed JSON', `/api/v1/machines/${MAC}`, '{"sshKeys": [', 400, /not valid JSON/],
    ['JSON array', `/api/v1/machines/${MAC}`, '[]', 400, /JSON object/],
    ['unknown field', `/api/v1/machines/${MAC}`, { sshKeys: [key], colour: 'red' }, 400, /unknown field.*colour/],
    ['wrong type', `/api/v1/machines/${MAC}`, { sshKeys: [key], hostname: 42 }, 400, /hostname/],
    ['missing sshKeys', `/api/v1/machines/${MAC}`, { hostname: 'x' }, 400, /sshKeys/],
    ['bad hostname', `/api/v1/machines/${MAC}`, { sshKeys: [key], hostname: 'under_score' }, 400, /RFC 1123/],
    ['bad ssh key', `/api/v1/machines/${MAC}`, { sshKeys: [`ssh-ed25519 ${Buffer.from(key.split(' ')[1]!, 'base64').subarray(0, 30).toString('base64')}`] }, 400, /sshKeys\.0: .*truncated/],
    ['ssh key not base64', `/api/v1/machines/${MAC}`, { sshKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA'] }, 400, /sshKeys\.0: .*base64/],
    ['unknown image', `/api/v1/machines/${MAC}`, { sshKeys: [key], image: 'nosuch' }, 400, /image.*does not exist/],
    ['image traversal', `/api/v1/machines/${MAC}`, { sshKeys: [key], image: '../../etc' }, 400, /image/],
    ['kernelArgs injection', `/api/v1/machines/${MAC}`, { sshKeys: [key], kernelArgs: 'a\nshell' }, 400, /kernelArgs/],
    ['kernelArgs iPXE separator', `/api/v1/machines/${MAC}`, { sshKeys: [key], kernelArgs: 'quiet ; shell' }, 400, /kernelArgs contains ";"/],
    ['kernelArgs iPXE or', `/api/v1/machines/${MAC}`, { sshKeys: [key], kernelArgs: 'quiet || shell' }, 400, /kernelArgs contains "\|\|"/],
    ['kernelArgs iPXE comment', `/api/v1/machines/${MAC}`, { sshKeys: [key], kernelArgs: 'quiet #rest' }, 400, /kernelArgs .*"#"/],
    ['__proto__ key', `/api/v1/machines/${MAC}`, `{"sshKeys":[${JSON.stringify(key)}],"userData":{"__proto__":{"x":1}}}`, 400, /userData\.__proto__/],
    ['body over 256 KiB', `/api/v1/machines/${MAC}`, { sshKeys: [key], userData: { big: 'x'.repeat(300 * 1024) } }, 413, /256 KiB/],
    ['not JSON content type', `/api/v1/machines/${MAC}`, 'hostname=x', 415, /JSON/, { 'content-type': 'application/x-www-form-urlencoded' }],
  ];
  for (const [name, path, body, status, re, headers] of cases) {
    const r = await s.api('PUT', path, body, headers);
    t.equal(r.status, status, `${name}: status`);
    t.match((r.json as { error?: string })?.error ?? '', re, `${name}: message`);
  }
  const patchBad = await s.api('PATCH', `/api/v1/machines/${MAC}`, { boot: 'sometimes' });
  t.equal(patchBad.status, 400);
  t.equal(await readFile(machineFile(s), 'utf8'), before, 'the stored file is byte-for-byte unchanged');
  t.match((await s.api('GET', `/api/v1/machines/${MAC}`)).json, { hostname: 'web1', revision: 1 });
  t.equal((await s.api('GET', '/api/v1/nothing')).status, 404);
  const health = await s.api('GET', '/api/v1/machines');
  t.equal(health.status, 200, 'server keeps serving');
});

t.test('restart keeps machines, token and boot sessions', async (t) => {
  const first = await startTestServer(t);
  const dir = first.dataDir;
  await writeFakeImage(dir, 'default');
  await first.api('PUT', `/api/v1/machines/${MAC}`, { hostname: 'web1', sshKeys: [key] });
  const script = await (await fetch(`${first.url}/ipxe?mac=${MAC}`)).text();
  const seed = /s=(http\S+\/)/.exec(script)?.[1] ?? '';
  const token = first.token;
  await first.stop();
  const second = await startTestServer(t, {}, dir);
  t.equal(second.token, token, 'token file reused');
  t.match((await second.api('GET', `/api/v1/machines/${MAC}`)).json, { hostname: 'web1', sshKeys: [key] });
  const path = new URL(seed).pathname;
  const ud = await fetch(`${second.url}${path}user-data`);
  t.equal(ud.status, 200, 'a session minted before the restart still works');
});

t.test('hand edits are picked up; corrupt files are ignored with a reason', async (t) => {
  const s = await startTestServer(t);
  await s.api('PUT', `/api/v1/machines/${MAC}`, { hostname: 'web1', sshKeys: [key] });
  const file = machineFile(s);
  const rec = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  await writeFile(file, JSON.stringify({ ...rec, hostname: 'edited', boot: 'local' }, null, 2));
  await s.waitForLog((l) => l.event === 'store.reloaded' && l['mac'] === MAC);
  t.match((await s.api('GET', `/api/v1/machines/${MAC}`)).json, { hostname: 'edited', boot: 'local' });
  t.match(await (await fetch(`${s.url}/ipxe?mac=${MAC}`)).text(), /exit 1\n$/, 'hand edit changes the boot script (cache invalidated)');

  await writeFile(file, '{"mac": "aa:bb:cc:00:11:22", "hostname": "trunc');
  const bad = await s.waitForLog((l) => l.event === 'store.invalid-file');
  t.match(bad['reason'], /not valid JSON/);
  await writeFile(file, JSON.stringify({ ...rec, hostname: 'bad_host' }));
  await s.waitForLog((l) => l.event === 'store.invalid-file' && /hostname/.test(String(l['reason'])));
  t.match((await s.api('GET', `/api/v1/machines/${MAC}`)).json, { hostname: 'edited' }, 'last good version keeps serving');

  const other = join(s.dataDir, 'machines', '02-00-00-00-00-01.json');
  await writeFile(other, JSON.stringify({ mac: '02:00:00:00:00:01', sshKeys: [key], hostname: 'byhand' }));
  await s.waitForLog((l) => l.event === 'store.reloaded' && l['mac'] === '02:00:00:00:00:01');
  t.match((await s.api('GET', '/api/v1/machines/02:00:00:00:00:01')).json, { hostname: 'byhand', boot: 'ramboot' });
  const mismatch = join(s.dataDir, 'machines', '02-00-00-00-00-02.json');
  await writeFile(mismatch, JSON.stringify({ mac: '02:00:00:00:00:09', sshKeys: [] }));
  await s.waitForLog((l) => l.event === 'store.invalid-file' && /does not match the file name/.test(String(l['reason'])));
  const brokenOne = await s.api('GET', '/api/v1/machines/02:00:00:00:00:02');
  t.equal(brokenOne.status, 409, 'an invalid file is not a machine, and not a stranger either');
  t.match(brokenOne.json, { error: /02-00-00-00-00-02\.json is invalid \("mac" field .* does not match the file name/ });
  t.match(((await s.api('GET', '/api/v1/machines')).json as { broken: unknown[] }).broken, [{ mac: '02:00:00:00:00:02', reason: /does not match the file name/ }], 'listed as broken with the reason');
  await unlink(other);
  await s.waitForLog((l) => l.event === 'store.removed');
  t.equal((await s.api('GET', '/api/v1/machines/02:00:00:00:00:01')).status, 404);
});

t.test('concurrent writes to one MAC never lose an update or corrupt the file', async (t) => {
  const s = await startTestServer(t);
  await s.api('PUT', `/api/v1/machines/${MAC}`, { hostname: 'h0', sshKeys: [key] });
  const N = 40;
  const results = await Promise.all(
    Array.from({ length: N }, (_, i) =>
      i % 2 ? s.api('PUT', `/api/v1/machines/${MAC}`, { hostname: `h${i}`, sshKeys: [key] }) : s.api('PATCH', `/api/v1/machines/${MAC}`, { kernelArgs: `n=${i}` }),
    ),
  );
  t.ok(results.every((r) => r.status === 200), 'all succeeded');
  const revisions = results.map((r) => (r.json as { revision: number }).revision).sort((a, b) => a - b);
  t.same(revisions, Array.from({ length: N }, (_, i) => i + 2), 'every update applied exactly once, in some order');
  const disk = JSON.parse(await readFile(machineFile(s), 'utf8')) as { revision: number };
  t.equal(disk.revision, N + 1, 'file holds the last revision and parses');
});

t.test('images: manifest files only, Range, HEAD, strong ETag, no traversal', async (t) => {
  const s = await startTestServer(t);
  const { files } = await writeFakeImage(s.dataDir, 'default');
  const initrd = files['initrd.img']!;
  const sha = (await import('node:crypto')).createHash('sha256').update(initrd).digest('hex');
  const full = await fetch(`${s.url}/images/default/initrd.img`);
  t.equal(full.status, 200);
  t.equal(full.headers.get('content-length'), String(initrd.length));
  t.equal(full.headers.get('etag'), `"${sha}"`, 'strong ETag is the sha256');
  t.ok(Buffer.from(await full.arrayBuffer()).equals(initrd), 'bytes match');
  const head = await fetch(`${s.url}/images/default/initrd.img`, { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.headers.get('content-length'), String(initrd.length));
  const part = await fetch(`${s.url}/images/default/initrd.img`, { headers: { range: 'bytes=1000-1999' } });
  t.equal(part.status, 206);
  t.equal(part.headers.get('content-range'), `bytes 1000-1999/${initrd.length}`);
  t.ok(Buffer.from(await part.arrayBuffer()).equals(initrd.subarray(1000, 2000)));
  // raw request: fetch() adds Cache-Control: no-cache to conditional requests
  t.equal((await rawGet(s.url, '/images/default/initrd.img', { 'if-none-match': `"${sha}"` })).status, 304);
  t.equal((await rawGet(s.url, '/images/default/initrd.img', { 'if-none-match': '"other"' })).status, 200);
  const ifRangeStale = await fetch(`${s.url}/images/default/initrd.img`, { headers: { range: 'bytes=0-9', 'if-range': '"other"' } });
  t.equal(ifRangeStale.status, 200, 'If-Range with another ETag gets the whole file');
  await ifRangeStale.arrayBuffer();

  for (const path of [
    '/images/default/secret.txt',
    '/images/default/manifest.json',
    '/images/nosuch/vmlinuz',
    '/images/default/../default/secret.txt',
    '/images/%2e%2e/%2e%2e/etc/passwd',
    '/images/default/%2e%2e%2fsecret.txt',
    '/images/default/..%2f..%2f..%2fetc%2fpasswd',
    '/images/default/%2fetc%2fpasswd',
    '/images//etc/passwd',
    '/images/default/.hidden',
  ]) {
    const r = await rawGet(s.url, path);
    t.ok(r.status === 404 || r.status === 400, `${path} -> ${r.status}`);
    t.notMatch(r.body, /root:|not listed in the manifest/, `${path} leaks nothing`);
  }
});

t.test('review fixes: ETag after delete+recreate, hand edit right before an API write, file modes, 412/416 on images', async (t) => {
  const s = await startTestServer(t);
  const { files } = await writeFakeImage(s.dataDir, 'default');
  const a = await s.api('PUT', `/api/v1/machines/${MAC}`, { hostname: 'alpha', sshKeys: [key] });
  const etagA = a.headers.get('etag') ?? '';
  await s.api('DELETE', `/api/v1/machines/${MAC}`);
  const b = await s.api('PUT', `/api/v1/machines/${MAC}`, { hostname: 'bravo', sshKeys: [key] });
  t.not(b.headers.get('etag'), etagA, 'a recreated machine has a new ETag');
  t.equal((await s.api('PATCH', `/api/v1/machines/${MAC}`, { kernelArgs: 'x' }, { 'if-match': etagA })).status, 412, 'stale ETag from the deleted machine is refused');

  const { stat } = await import('node:fs/promises');
  t.equal((await stat(machineFile(s))).mode & 0o777, 0o600, 'machine file is 0600 (userData may hold secrets)');
  t.equal((await stat(join(s.dataDir, 'machines'))).mode & 0o777, 0o700);

  // a hand edit immediately followed by an API write: the write must build on the edit
  const rec = JSON.parse(await readFile(machineFile(s), 'utf8')) as Record<string, unknown>;
  await writeFile(machineFile(s), JSON.stringify({ ...rec, hostname: 'handedit' }));
  const p = await s.api('PATCH', `/api/v1/machines/${MAC}`, { kernelArgs: 'quiet2' });
  t.match(p.json, { hostname: 'handedit', kernelArgs: 'quiet2' }, 'hand edit kept');
  t.match(JSON.parse(await readFile(machineFile(s), 'utf8')), { hostname: 'handedit', kernelArgs: 'quiet2' });

  const size = files['initrd.img']!.length;
  t.equal((await rawGet(s.url, '/images/default/initrd.img', { range: `bytes=${size + 10}-` })).status, 416, 'unsatisfiable range');
  t.equal((await rawGet(s.url, '/images/default/initrd.img', { 'if-match': '"nope"' })).status, 412, 'If-Match mismatch');

  // images that do not exist are not cached: one built later is served at once
  t.equal((await rawGet(s.url, '/images/later/vmlinuz')).status, 404);
  await writeFakeImage(s.dataDir, 'later');
  t.equal((await rawGet(s.url, '/images/later/vmlinuz')).status, 200);
  t.notOk(s.logs.some((l) => l.event === 'http.error'), 'no request was a server error');
});

t.test('client events: a transfer reports onto a registered machine\'s timeline; nothing else can be forged', async (t) => {
  const s = await startTestServer(t);
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], boot: 'once' });
  const path = `/api/v1/machines/${MAC}/events`;
  const ok = await s.api('POST', path, { event: 'transfer.progress', message: 'copy 10/100 MiB', data: { role: 'target', bytes: 10, totalBytes: 100, percent: 10, peer: 'root@src' } });
  t.equal(ok.status, 201);
  t.match(ok.json, { event: 'transfer.progress', level: 'info', message: 'copy 10/100 MiB', data: { bytes: 10 } });
  const failed = await s.api('POST', path, { event: 'transfer.failed', message: 'copy failed', data: { stage: 'copy', reason: 'rsync exit 23' } });
  t.match(failed.json, { level: 'error' }, 'a failure is an error unless the client says otherwise');

  const tl = (await s.api('GET', path)).json as { events: { event: string }[] };
  t.same(tl.events.map((e) => e.event).filter((e) => e.startsWith('transfer.')), ['transfer.progress', 'transfer.failed'], 'both on the timeline, in order');

  const bad: [unknown, RegExp][] = [
    [{ event: 'deploy.succeeded', message: 'x' }, /event must be one of transfer\.planned/],
    [{ event: 'os.ready', message: 'x' }, /event must be one of/],
    [{ event: 'transfer.step', message: '' }, /message must not be empty/],
    [{ event: 'transfer.step', message: 'x'.repeat(501) }, /longer than 500/],
    [{ event: 'transfer.step', message: 'x', data: { nested: { deep: 1 } } }, /data/],
    [{ event: 'transfer.step', message: 'x', data: { 'bad key': 1 } }, /identifiers/],
    [{ event: 'transfer.step', message: 'x', extra: 1 }, /extra|unrecognized/i],
  ];
  for (const [body, re] of bad) {
    const r = await s.api('POST', path, body);
    t.equal(r.status, 400, JSON.stringify(body).slice(0, 60));
    t.match(r.json, { error: re });
  }
  const unknown = await s.api('POST', '/api/v1/machines/aa:bb:cc:00:11:99/events', { event: 'transfer.step', message: 'x' });
  t.equal(unknown.status, 404, 'an unregistered MAC has no timeline to add to');
  t.equal(existsSync(join(s.dataDir, 'events', 'aa-bb-cc-00-11-99.jsonl')), false, 'and none is made for it');
  const noToken = await fetch(`${s.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ event: 'transfer.step', message: 'x' }) });
  t.equal(noToken.status, 401, 'the admin token is required');
  const after = (await s.api('GET', path)).json as { events: { event: string }[] };
  t.equal(after.events.filter((e) => e.event.startsWith('transfer.')).length, 2, 'refused events left nothing behind');
});
