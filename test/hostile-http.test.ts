/**
 * 10,000 generated HTTP requests (seeded: the same run every time) against every route of the real
 * server in this process: mutated paths and percent-encoding, wrong methods, random headers
 * (Range, If-Match, Content-Encoding, Content-Type), random and deep bodies, with and without the
 * token. No answer may be a 5xx, nothing may be logged at error level, and afterwards a normal boot
 * (register, script, seed, phone-home, known_hosts) is served correctly.
 */
import t from 'tap';
import { request } from 'node:http';
import { parse } from 'yaml';
import { startTestServer, writeFakeImage } from './lib/in-process-server.js';
import { makeKeyPair } from './lib/ssh-keys.js';
import { prng } from './tftp/impair-relay.js';

const SEED = 20261130;
const COUNT = 10_000;
const MAC = '52:54:00:0f:0f:01';
const key = makeKeyPair().pub;

interface Raw {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

function rawRequest(base: URL, r: Raw): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: base.hostname, port: base.port, method: r.method, path: r.path, headers: r.headers, timeout: 15_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(-1)); // refused by the HTTP parser itself (400 + close) or cut: not a 5xx
    req.end(r.body);
  });
}

function generator(rand: () => number, token: string, seed: string) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const junk = (n: number) => Array.from({ length: n }, () => String.fromCharCode(33 + Math.floor(rand() * 94))).join('');
  const segments = ['', '..', '%2e%2e', '%ff', '%', '%zz', '%00', 'x'.repeat(300), MAC, 'aa:bb', 'ff:ff:ff:ff:ff:ff', 'default', 'vmlinuz', 'initrd.img', 'manifest.json', '%2f', 'a%2fb', '\u00e9', '*'];
  const paths = [
    '/boot.ipxe', `/ipxe?mac=${MAC}`, '/ipxe', `/ipxe?mac=${MAC}&memsize=%ff&platform=${'e'.repeat(100)}`, '/images/default/initrd.img', '/images/default/manifest.json',
    `${seed}user-data`, `${seed}meta-data`, `${seed}phone-home`, `${seed}event`, '/api/v1/machines', `/api/v1/machines/${MAC}`, `/api/v1/machines/${MAC}/events?limit=5`,
    `/api/v1/machines/${MAC}/known_hosts`, '/api/v1/events/stream?mac=zz', '/metrics', '/', '/ui/app.js', '/nope',
  ];
  const mutatePath = (p: string): string => {
    const parts = p.split('/');
    const n = 1 + Math.floor(rand() * 2);
    for (let i = 0; i < n; i++) parts[1 + Math.floor(rand() * Math.max(1, parts.length - 1))] = encodeURI(pick(segments)).replace(/%25/g, rand() < 0.5 ? '%' : '%25');
    return parts.join('/');
  };
  const bodies = (): Buffer | undefined => {
    switch (Math.floor(rand() * 8)) {
      case 0: return undefined;
      case 1: return Buffer.from(JSON.stringify({ sshKeys: [key], hostname: junk(8), kernelArgs: junk(20), userData: { a: junk(5) } }));
      case 2: return Buffer.from(`{"sshKeys":[],"userData":${'{"a":'.repeat(50 + Math.floor(rand() * 3000))}1`);
      case 3: return Buffer.from(junk(200));
      case 4: return Buffer.alloc(Math.floor(rand() * 400_000), 0x20);
      case 5: return Buffer.from(JSON.stringify({ event: junk(10), message: junk(2000) }));
      case 6: return Buffer.from(`pub_key_ed25519=${encodeURIComponent(junk(80))}&fqdn=${junk(30)}`);
      default: return Buffer.from(JSON.stringify([1, 'x', null, { __proto__: { a: 1 } }]));
    }
  };
  return (): Raw => {
    const base = pick(paths);
    const path = rand() < 0.5 ? mutatePath(base) : base;
    const headers: Record<string, string> = {};
    if (rand() < 0.6) headers['authorization'] = rand() < 0.8 ? `Bearer ${token}` : `Bearer ${junk(20)}`;
    if (rand() < 0.5) headers['content-type'] = pick(['application/json', 'application/x-www-form-urlencoded', 'text/plain', 'application/json; charset=latin1', junk(10)]);
    if (rand() < 0.15) headers['content-encoding'] = pick(['gzip', 'deflate', 'br', 'x-nope', 'gzip, gzip']);
    if (rand() < 0.2) headers['range'] = pick(['bytes=0-10', 'bytes=-999999999', 'bytes=5-1', 'bytes=0-1,3-4,5-6', `bytes=${junk(5)}`, 'items=1-2']);
    if (rand() < 0.1) headers['if-match'] = pick(['*', '"x"', junk(10)]);
    if (rand() < 0.1) headers['if-none-match'] = pick(['*', '"x"', 'W/"y"']);
    const method = pick(['GET', 'GET', 'GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS']);
    const body = method === 'GET' || method === 'HEAD' ? undefined : bodies();
    return { method, path, headers, ...(body ? { body } : {}) };
  };
}

t.test('10,000 seeded hostile HTTP requests: no 5xx, no error log, then a normal boot is served', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], boot: 'ramboot' });
  const sc = await (await fetch(`${s.url}/ipxe?mac=${MAC}`)).text();
  const seed = new URL(/;s=(\S+\/)/.exec(sc)![1]!).pathname;
  const next = generator(prng(SEED), s.token, seed);
  const base = new URL(s.url);
  const statuses = new Map<number, number>();
  const fives: string[] = [];
  let i = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (i < COUNT) {
      i++;
      const r = next();
      const status = await rawRequest(base, r);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (status >= 500 && fives.length < 20) fives.push(`${status} ${r.method} ${r.path.slice(0, 120)} ${JSON.stringify(r.headers)}`);
    }
  }));
  t.comment(`statuses: ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}`);
  t.same(fives, [], 'no request got a 5xx');
  const errors = s.logs.filter((l) => l['level'] === 'error' || l['level'] === 'fatal');
  t.same(errors.map((l) => `${String(l.event)} ${String(l.msg)}`).slice(0, 10), [], 'nothing logged at error level');

  // a normal boot, start to end
  const mac = '52:54:00:0f:0f:02';
  const host = makeKeyPair('ed25519', undefined, 'root@after').pub;
  t.equal((await s.api('PUT', `/api/v1/machines/${mac}`, { sshKeys: [key], hostname: 'after', boot: 'once' })).status, 201);
  const script = await (await fetch(`${s.url}/ipxe?mac=${mac}&platform=pcbios`)).text();
  t.match(script, /^kernel http:\/\/ramboot\.test:8080\/images\/default\/vmlinuz /m);
  const seed2 = new URL(/;s=(\S+\/)/.exec(script)![1]!).pathname;
  const ud = parse(await (await fetch(`${s.url}${seed2}user-data`)).text()) as Record<string, unknown>;
  t.same(ud['ssh_authorized_keys'], [key]);
  t.equal((await fetch(`${s.url}/images/default/initrd.img`)).status, 200);
  t.equal((await fetch(`${s.url}${seed2}phone-home`, { method: 'POST', body: new URLSearchParams({ pub_key_ed25519: host }) })).status, 200);
  t.match((await s.api('GET', `/api/v1/machines/${mac}`)).json, { boot: 'local', status: { state: 'ready' } });
  t.match((await s.api('GET', `/api/v1/machines/${mac}/known_hosts`)).text, /^127\.0\.0\.1,after ssh-ed25519 /);
});
