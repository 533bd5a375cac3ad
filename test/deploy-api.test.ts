import t from 'tap';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeKeyPair } from './lib/ssh-keys.js';
import { startTestServer, writeFakeImage, type TestServer } from './lib/in-process-server.js';

const key = makeKeyPair().pub;
const MAC = '52:54:00:de:00:01';
const ZSTD = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.from('not really zstd')]);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function upload(s: TestServer, name: string, body: Buffer | string, headers: Record<string, string> = {}): Promise<{ status: number; json: unknown; headers: Headers }> {
  const r = await fetch(`${s.url}/api/v1/artifacts/${name}`, { method: 'PUT', body, headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/octet-stream', ...headers } });
  const text = await r.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, json, headers: r.headers };
}

/** A boot session's seed path for MAC (what the iPXE script puts on the kernel line). */
async function seedPath(s: TestServer, mac = MAC): Promise<string> {
  const sc = await (await fetch(`${s.url}/ipxe?mac=${mac}&platform=pcbios&memsize=4096`)).text();
  const m = /;s=(\S+\/)/.exec(sc);
  if (!m?.[1]) throw new Error(`no seed in script: ${sc}`);
  return new URL(m[1]).pathname;
}

async function status(s: TestServer, seed: string, body: unknown): Promise<number> {
  const r = await fetch(`${s.url}${seed}deploy/status`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  await r.text();
  return r.status;
}

async function events(s: TestServer, mac = MAC): Promise<{ event: string; level: string; message: string; data?: Record<string, unknown> }[]> {
  return ((await s.api('GET', `/api/v1/machines/${mac}/events`)).json as { events: { event: string; level: string; message: string; data?: Record<string, unknown> }[] }).events;
}

t.test('artifacts API: upload, list, get, create-only, bad names, delete', async (t) => {
  const s = await startTestServer(t);
  t.equal((await fetch(`${s.url}/api/v1/artifacts`)).status, 401, 'token needed');
  const up = await upload(s, 'disk.zst', ZSTD);
  t.equal(up.status, 201);
  t.match(up.json, { name: 'disk.zst', size: ZSTD.length, sha256: sha(ZSTD), format: 'zstd' });
  t.equal(up.headers.get('etag'), `"${sha(ZSTD)}"`);
  // a JSON content type does not make it a JSON body: bytes are bytes
  const json = await upload(s, 'cfg.json', '{"a":1}', { 'content-type': 'application/json' });
  t.equal(json.status, 201);
  t.match(json.json, { size: 7, format: 'raw' });
  t.equal((await upload(s, 'disk.zst', 'replaced')).status, 200, 'replace');
  t.equal((await upload(s, 'disk.zst', 'again', { 'if-none-match': '*' })).status, 412, 'If-None-Match: * is create-only');
  t.equal((await upload(s, 'new', 'x', { 'if-none-match': '*' })).status, 201);
  t.equal((await upload(s, 'x', 'x', { 'if-none-match': '"abc"' })).status, 400);
  for (const bad of ['UPPER', '.hidden', 'a%2fb', 'x'.repeat(64), 'sp%20ace', '-dash']) {
    const r = await upload(s, bad, 'x');
    t.equal(r.status, 400, `bad name ${bad}`);
    t.match(r.json, { error: /artifact name/ });
  }
  t.equal((await upload(s, '..', 'x')).status, 404, '".." never reaches the store (URL normalised to /api/v1)');
  const list = (await s.api('GET', '/api/v1/artifacts')).json as { artifacts: { name: string; size: number; sha256: string; format: string }[] };
  t.same(list.artifacts.map((a) => a.name), ['cfg.json', 'disk.zst', 'new']);
  t.match((await s.api('GET', '/api/v1/artifacts/disk.zst')).json, { name: 'disk.zst', size: 8, format: 'raw' });
  t.equal((await s.api('GET', '/api/v1/artifacts/nope')).status, 404);

  await writeFakeImage(s.dataDir, 'default');
  t.equal((await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], deploy: { artifact: 'new' } })).status, 201);
  const del = await s.api('DELETE', '/api/v1/artifacts/new');
  t.equal(del.status, 409, 'refused while a deploy names it');
  t.match(del.json, { error: new RegExp(MAC) });
  t.equal((await s.api('PATCH', `/api/v1/machines/${MAC}`, { deploy: null })).status, 200);
  t.equal((await s.api('DELETE', '/api/v1/artifacts/new')).status, 204);
  t.equal((await s.api('DELETE', '/api/v1/artifacts/new')).status, 404);
});

t.test('an upload cut off midway leaves nothing visible; concurrent uploads of one name: last complete wins', async (t) => {
  const s = await startTestServer(t);
  const u = new URL(s.url);
  // announce 10 MiB, send 1 MiB, then drop the connection
  await new Promise<void>((resolve) => {
    const req = request({ host: u.hostname, port: u.port, method: 'PUT', path: '/api/v1/artifacts/cut', headers: { authorization: `Bearer ${s.token}`, 'content-length': String(10 << 20) } });
    req.on('error', () => resolve());
    req.write(Buffer.alloc(1 << 20, 1), () => setImmediate(() => req.destroy()));
    req.on('close', () => resolve());
  });
  await s.waitForLog((l) => l.event === 'artifacts.upload-failed' && l['name'] === 'cut');
  t.equal((await s.api('GET', '/api/v1/artifacts/cut')).status, 404, 'no artifact');
  t.same(await readdir(join(s.dataDir, 'artifacts', '.tmp')), [], 'no temp file');
  t.same(await readdir(join(s.dataDir, 'artifacts', '.blobs')), [], 'no blob');

  const bodies = Array.from({ length: 6 }, (_, i) => Buffer.alloc(256 * 1024 + i, i + 1));
  const results = await Promise.all(bodies.map((b) => upload(s, 'same', b)));
  t.same(results.map((r) => r.status).sort(), [200, 200, 200, 200, 200, 201], 'all complete; one created it');
  const meta = (await s.api('GET', '/api/v1/artifacts/same')).json as { sha256: string; size: number };
  const winner = bodies.find((b) => sha(b) === meta.sha256);
  t.ok(winner, 'the stored artifact is one of the uploads, whole');
  t.equal(meta.size, winner?.length);
  t.same(await readdir(join(s.dataDir, 'artifacts', '.blobs')), [meta.sha256], 'only the winner is kept');
});

t.test('a 2 GiB upload streams with bounded memory', async (t) => {
  const s = await startTestServer(t);
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-big-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'big.img');
  const SIZE = 2 * 1024 ** 3;
  await writeFile(file, 'RAMBOOT-BIG');
  await truncate(file, SIZE); // sparse: 2 GiB of (mostly) zeros
  global.gc?.();
  const base = process.memoryUsage().rss;
  let peak = base;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  const u = new URL(s.url);
  const started = Date.now();
  const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method: 'PUT', path: '/api/v1/artifacts/big', headers: { authorization: `Bearer ${s.token}`, 'content-length': String(SIZE), 'content-type': 'application/octet-stream' } }, (r) => {
      let body = '';
      r.on('data', (c: Buffer) => (body += c.toString()));
      r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    createReadStream(file, { highWaterMark: 1 << 20 }).pipe(req);
  });
  clearInterval(sampler);
  t.equal(res.status, 201, res.body);
  const meta = JSON.parse(res.body) as { size: number; sha256: string };
  t.equal(meta.size, SIZE);
  const want = createHash('sha256');
  for await (const c of createReadStream(file, { highWaterMark: 4 << 20 })) want.update(c as Buffer);
  t.equal(meta.sha256, want.digest('hex'), 'sha256 computed while writing');
  const grewMiB = (peak - base) / 2 ** 20;
  t.comment(`2 GiB upload in ${Date.now() - started} ms; RSS grew by ${grewMiB.toFixed(0)} MiB (server and client in this process)`);
  t.ok(grewMiB < 256, `RSS stays bounded (grew ${grewMiB.toFixed(0)} MiB)`);
});

t.test('deploy field: validation, attempt ids, artifact must exist, null clears', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  const sum = 'a'.repeat(64);
  const bad: [unknown, RegExp][] = [
    [{ artifact: 'missing' }, /no artifact "missing"/],
    [{}, /either artifact or url/],
    [{ artifact: 'x', url: 'http://h/x', sha256: sum }, /either artifact or url/],
    [{ url: 'http://h/x' }, /needs its sha256/],
    [{ url: 'ftp://h/x', sha256: sum }, /http/],
    [{ url: 'http://h/a b', sha256: sum }, /url/],
    [{ url: 'http://h/x', sha256: 'ABC' }, /sha256/],
    [{ url: 'http://h/x', sha256: sum, disk: '/dev/sda' }, /disk/],
    [{ url: 'http://h/x', sha256: sum, disk: '/dev/disk/by-id/..' }, /disk/],
    [{ url: 'http://h/x', sha256: sum, disk: '/dev/disk/by-id/a/../../b' }, /disk/],
    [{ url: 'http://h/x', sha256: sum, disk: {} }, /serial, model or minSizeGiB/],
    [{ url: 'http://h/x', sha256: sum, disk: { serial: 'a"b' } }, /quotes/],
    [{ url: 'http://h/x', sha256: sum, after: 'halt' }, /after|Invalid/],
    [{ url: 'http://h/x', sha256: sum, grow: 'yes' }, /grow|boolean/],
    [{ url: 'http://h/x', sha256: sum, id: 'mine' }, /id|Unrecognized|unknown/i],
  ];
  for (const [deploy, why] of bad) {
    const r = await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], deploy });
    t.equal(r.status, 400, JSON.stringify(deploy));
    t.match(r.json, { error: why }, JSON.stringify(deploy));
  }
  t.equal((await s.api('GET', `/api/v1/machines/${MAC}`)).status, 404, 'refused PUTs created nothing');

  const put = await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], deploy: { url: 'https://images.example/disk.raw.zst', sha256: sum, disk: { serial: 'S1', minSizeGiB: 10 } } });
  t.equal(put.status, 201);
  const d1 = (put.json as { deploy: { id: string } }).deploy;
  t.match(d1, { url: 'https://images.example/disk.raw.zst', sha256: sum, disk: { serial: 'S1', minSizeGiB: 10 }, after: 'reboot', grow: false, id: /^[A-Za-z0-9_-]{8,}$/ });
  await upload(s, 'img', ZSTD);
  const p1 = await s.api('PATCH', `/api/v1/machines/${MAC}`, { deploy: { artifact: 'img', disk: '/dev/disk/by-path/pci-0000:00:04.0', after: 'stay', grow: true } });
  t.equal(p1.status, 200);
  const d2 = (p1.json as { deploy: { id: string } }).deploy;
  t.not(d2.id, d1.id, 'a new attempt id');
  const p2 = await s.api('PATCH', `/api/v1/machines/${MAC}`, { deploy: { artifact: 'img', disk: '/dev/disk/by-path/pci-0000:00:04.0', after: 'stay', grow: true } });
  t.not((p2.json as { deploy: { id: string } }).deploy.id, d2.id, 'the same deploy set again is a new attempt');
  t.equal((await s.api('PATCH', `/api/v1/machines/${MAC}`, { hostname: 'h1' })).json && ((await s.api('GET', `/api/v1/machines/${MAC}`)).json as { deploy: { id: string } }).deploy.id, (p2.json as { deploy: { id: string } }).deploy.id, 'other changes keep the attempt');
  const cleared = await s.api('PATCH', `/api/v1/machines/${MAC}`, { deploy: null });
  t.notOk((cleared.json as Record<string, unknown>)['deploy'], 'null clears it');
});

t.test('seed endpoints: deploy document, artifact bytes with Range, status reports, 409s, flip to local', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  const body = Buffer.concat([ZSTD, Buffer.alloc(100_000, 7)]);
  await upload(s, 'disk.zst', body);
  await upload(s, 'other', 'x');
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], boot: 'once' });
  const seed = await seedPath(s);
  t.equal((await fetch(`${s.url}${seed}deploy`)).status, 204, 'no deploy: 204');
  t.equal((await fetch(`${s.url}${seed.replace(/\/[^/]+\/$/, '/bogus.token/')}deploy`)).status, 404, 'bad token: 404');

  const set = await s.api('PATCH', `/api/v1/machines/${MAC}`, { deploy: { artifact: 'disk.zst', disk: { model: 'QEMU HARDDISK' }, grow: true } });
  const id = (set.json as { deploy: { id: string } }).deploy.id;
  const docRes = await fetch(`${s.url}${seed}deploy`);
  t.equal(docRes.status, 200);
  t.equal(docRes.headers.get('cache-control'), 'no-store');
  const doc = (await docRes.json()) as { id: string; source: { url: string } };
  t.same(doc, {
    id,
    source: { url: `http://ramboot.test:8080${seed}artifacts/disk.zst`, sha256: sha(body), size: body.length, format: 'zstd' },
    disk: { model: 'QEMU HARDDISK' },
    after: 'reboot',
    grow: true,
  });

  const art = await fetch(`${s.url}${seed}artifacts/disk.zst`);
  t.equal(art.status, 200);
  t.equal(art.headers.get('etag'), `"${sha(body)}"`);
  t.equal(art.headers.get('content-length'), String(body.length));
  t.same(Buffer.from(await art.arrayBuffer()), body);
  const part = await fetch(`${s.url}${seed}artifacts/disk.zst`, { headers: { range: 'bytes=1000-' } });
  t.equal(part.status, 206, 'Range resumes');
  t.same(Buffer.from(await part.arrayBuffer()), body.subarray(1000));
  const stale = await fetch(`${s.url}${seed}artifacts/disk.zst`, { headers: { range: 'bytes=1000-', 'if-range': '"0000"' } });
  t.equal(stale.status, 200, 'If-Range with another ETag: the whole file');
  await stale.arrayBuffer();
  const head = await fetch(`${s.url}${seed}artifacts/disk.zst`, { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.headers.get('content-length'), String(body.length));
  t.equal((await fetch(`${s.url}${seed}artifacts/other`)).status, 404, 'only the artifact the deploy names');
  t.equal((await fetch(`${s.url}${seed}artifacts/..%2fapi-token`)).status, 404);

  t.equal(await status(s, seed, { id, state: 'bogus' }), 400);
  t.equal(await status(s, seed, { id, state: 'started', extra: 1 }), 400);
  t.equal(await status(s, seed, { id: 'someotherattempt', state: 'started' }), 409, 'not the current attempt');
  t.equal(await status(s, seed, { id, state: 'started', stage: 'select-disk', message: 'deploy started', bytes: 0, total: null, rateBps: 0, etaSeconds: null, seconds: 0, disk: '' }), 204);
  t.equal(await status(s, seed, { id, state: 'progress', stage: 'write', bytes: 100, total: 1000, rateBps: 50, etaSeconds: 18, seconds: 2, disk: '/dev/vda' }), 204);
  t.equal(await status(s, seed, { id, state: 'progress', stage: 'write', bytes: 200, total: 1000, rateBps: 50, etaSeconds: 16, seconds: 4, disk: '/dev/vda' }), 204, 'too soon: accepted, not recorded');
  t.equal((await s.api('GET', `/api/v1/machines/${MAC}`)).json && ((await s.api('GET', `/api/v1/machines/${MAC}`)).json as { boot: string }).boot, 'once', 'not flipped yet');
  t.equal(await status(s, seed, { id, state: 'succeeded', stage: 'finish', bytes: 1000, total: 1000, seconds: 9, disk: '/dev/vda' }), 204);
  t.equal(await status(s, seed, { id, state: 'succeeded', stage: 'finish' }), 409, 'a finished attempt cannot be reported again');
  t.equal(await status(s, seed, { id, state: 'failed', stage: 'verify' }), 409);
  const m = (await s.api('GET', `/api/v1/machines/${MAC}`)).json as { boot: string; status: { deploy: Record<string, unknown> } };
  t.equal(m.boot, 'local', 'succeeded flips once to local');
  t.match(m.status.deploy, { id, state: 'succeeded', bytes: 1000, seconds: 9, finishedAt: /^\d{4}-/ });
  const ev = await events(s);
  const names = ev.map((e) => e.event).filter((n) => n.startsWith('deploy.') || n === 'artifact.fetch');
  t.same(names.filter((n) => n.startsWith('deploy.')), ['deploy.started', 'deploy.progress', 'deploy.succeeded']);
  t.ok(names.includes('artifact.fetch'), 'artifact fetches are on the timeline');
  t.match(ev.find((e) => e.event === 'deploy.progress')?.data, { id, stage: 'write', bytes: 100, total: 1000, percent: 10, rateBps: 50, etaSeconds: 18, disk: '/dev/vda' });
  t.match(await (await fetch(`${s.url}/ipxe?mac=${MAC}&platform=efi`)).text(), /exit 1\n$/, 'local now');
});

t.test('failed deploy: not flipped, recorded; phone-home does not flip a machine with a deploy', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  await upload(s, 'img', ZSTD);
  const put = await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], boot: 'once', deploy: { artifact: 'img' } });
  const id = (put.json as { deploy: { id: string } }).deploy.id;
  const seed = await seedPath(s);
  const ph = await fetch(`${s.url}${seed}phone-home`, { method: 'POST', body: new URLSearchParams({ hostname: 'h' }) });
  t.equal(ph.status, 200);
  t.equal(((await s.api('GET', `/api/v1/machines/${MAC}`)).json as { boot: string }).boot, 'once', 'phone-home leaves once alone when a deploy is assigned');
  t.equal((await fetch(`${s.url}${seed}deploy`)).status, 200, 'the deploy is still served after phone-home');
  t.equal((await fetch(`${s.url}${seed}user-data`)).status, 404, 'NoCloud data is not');
  t.equal(await status(s, seed, { id, state: 'failed', stage: 'verify', message: 'sha256 mismatch: got 00, want 11' }), 204);
  const m = (await s.api('GET', `/api/v1/machines/${MAC}`)).json as { boot: string; status: { deploy: Record<string, unknown> } };
  t.equal(m.boot, 'once', 'failed: not flipped');
  t.match(m.status.deploy, { id, state: 'failed', stage: 'verify', message: /sha256 mismatch/ });
  t.match((await events(s)).find((e) => e.event === 'deploy.failed'), { level: 'error', message: /failed at verify: sha256 mismatch/ });
  t.equal(await status(s, seed, { id, state: 'started' }), 409, 'a failed attempt is over');
  const again = await s.api('PATCH', `/api/v1/machines/${MAC}`, { deploy: { artifact: 'img' } });
  const id2 = (again.json as { deploy: { id: string } }).deploy.id;
  t.equal(await status(s, seed, { id: id2, state: 'started' }), 204, 'setting the deploy again starts a new attempt');
});

t.test('two concurrent terminal reports of one attempt: exactly one is accepted', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  await upload(s, 'img', ZSTD);
  const put = await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], boot: 'once', deploy: { artifact: 'img' } });
  const id = (put.json as { deploy: { id: string } }).deploy.id;
  const seed = await seedPath(s);
  const codes = await Promise.all([
    status(s, seed, { id, state: 'succeeded', stage: 'finish' }),
    status(s, seed, { id, state: 'failed', stage: 'verify' }),
    status(s, seed, { id, state: 'succeeded', stage: 'finish' }),
  ]);
  t.same([...codes].sort(), [204, 409, 409], `one wins: ${codes.join(', ')}`);
  const ev = (await events(s)).filter((e) => e.event === 'deploy.succeeded' || e.event === 'deploy.failed');
  t.equal(ev.length, 1, 'one terminal event on the timeline');
  const m = (await s.api('GET', `/api/v1/machines/${MAC}`)).json as { boot: string; status: { deploy: { state: string } } };
  t.equal(m.boot, m.status.deploy.state === 'succeeded' ? 'local' : 'once', 'the record agrees with the winner');
});
