import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { nativeSendfile, nativeSendfileProblem, sendFile, type SendFileOptions } from './file-sender.js';
import { sendfilePool, stopSendfilePool } from './sendfile-pool.js';

/** Real sockets over loopback, a plain node:http server, the module under test on each response. */

const SIZE = 24 << 20; // larger than loopback's socket buffers: the transfer needs several wake-ups
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const openFds = () => readdirSync('/proc/self/fd').length;

interface Outcome {
  sent: { bytes: number; via: string }[];
  aborted: { reason: string; bytes: number }[];
}

async function fixture(t: Test, extra: Partial<SendFileOptions> = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'file-sender-'));
  const data = randomBytes(SIZE);
  const path = join(dir, 'big.bin');
  await writeFile(path, data);
  const out: Outcome = { sent: [], aborted: [] };
  const server: Server = createServer((req, res) => {
    res.setHeader('ETag', '"abc"');
    sendFile(req, res, path, {
      dotfiles: 'deny',
      onError: (err) => {
        res.statusCode = err.status ?? 500;
        res.end();
      },
      onSent: (bytes, via) => out.sent.push({ bytes, via }),
      onAborted: (reason, bytes) => out.aborted.push({ reason, bytes }),
      ...extra,
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  t.teardown(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  });
  return { data, port, out, server };
}

function get(port: number, headers: Record<string, string> = {}, method = 'GET'): Promise<{ res: IncomingMessage; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/f', method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ res, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const native = nativeSendfile();
if (!native) {
  const why = `sendfile addon unavailable: ${nativeSendfileProblem()}`;
  if (process.env.CI === 'true') t.fail(why);
  else t.comment(`SKIPPING the sendfile path: ${why}`);
}

t.teardown(() => stopSendfilePool());

async function workersReady(): Promise<void> {
  const pool = sendfilePool();
  if (!pool) throw new Error('no sendfile pool (RAMBOOT_SENDFILE_WORKERS=0?)');
  await until('sendfile workers to be ready', () => pool.available, 60_000);
}

for (const mode of ['sendfile-worker', 'sendfile', 'stream'] as const) {
  const noSendfile = mode === 'stream';
  const noWorkers = mode !== 'sendfile-worker';
  const skip = mode !== 'stream' && !native ? 'addon not built' : false;

  t.test(`${mode}: whole file, ranges, 416, 304, HEAD`, { skip }, async (t) => {
    if (!noWorkers) await workersReady();
    const { data, port, out } = await fixture(t, { noSendfile, noWorkers });
    const full = await get(port);
    t.equal(full.res.statusCode, 200);
    t.equal(full.res.headers['content-length'], String(SIZE));
    t.equal(full.body.length, SIZE);
    t.equal(sha(full.body), sha(data), 'same bytes');
    // the client can have its last byte before the server hears back from the kernel (or its worker)
    await until('onSent', () => out.sent.length === 1);
    t.same(out.sent, [{ bytes: SIZE, via: mode }]);

    const part = await get(port, { range: 'bytes=1000-2000999' });
    t.equal(part.res.statusCode, 206);
    t.equal(part.res.headers['content-range'], `bytes 1000-2000999/${SIZE}`);
    t.ok(part.body.equals(data.subarray(1000, 2001000)), 'range bytes');

    const suffix = await get(port, { range: 'bytes=-500' });
    t.equal(suffix.res.statusCode, 206);
    t.ok(suffix.body.equals(data.subarray(SIZE - 500)), 'suffix range bytes');

    const bad = await get(port, { range: `bytes=${SIZE + 10}-` });
    t.equal(bad.res.statusCode, 416);

    const cached = await get(port, { 'if-none-match': '"abc"' });
    t.equal(cached.res.statusCode, 304);
    t.equal(cached.body.length, 0);

    const head = await get(port, {}, 'HEAD');
    t.equal(head.res.statusCode, 200);
    t.equal(head.res.headers['content-length'], String(SIZE));
    t.equal(head.body.length, 0);
    await until('onSent for the ranges', () => out.sent.length >= 3);
    await new Promise((r) => setTimeout(r, 200));
    t.equal(out.sent.length, 3, 'onSent only for bodies');
  });

  t.test(`${mode}: pipelined requests on one connection are answered in order`, { skip }, async (t) => {
    const { data, port } = await fixture(t, { noSendfile, noWorkers });
    // two pipelined requests on one raw connection: both responses complete and in order
    const sock = connect(port, '127.0.0.1');
    sock.write('GET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\nGET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\nConnection: close\r\n\r\n');
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    await new Promise((r) => sock.on('close', r));
    const text = Buffer.concat(chunks);
    const first = text.indexOf(data.subarray(0, 100));
    const second = text.indexOf(data.subarray(100, 200));
    t.ok(first > 0 && second > first, 'both bodies, in order (keep-alive)');
    t.equal(text.toString('latin1').match(/HTTP\/1\.1 206/g)?.length, 2);
  });

  t.test(`${mode}: a client leaving mid-file releases every fd`, { skip }, async (t) => {
    const { port, out } = await fixture(t, { noSendfile, noWorkers });
    await get(port, { range: 'bytes=0-0' }); // warm up lazily opened fds
    await until('the warm-up to be reported', () => out.sent.length === 1);
    const before = openFds();
    const sentBefore = out.sent.length;
    await new Promise<void>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/f', agent: false }, (res) => {
        let got = 0;
        res.on('data', (c: Buffer) => {
          got += c.length;
          if (got > 1 << 20) {
            req.destroy();
            resolve();
          }
        });
      });
      req.on('error', (e) => (e.message.includes('aborted') || e.message.includes('socket hang up') ? undefined : reject(e)));
      req.end();
    });
    await until('the server to release the transfer', () => openFds() <= before);
    t.equal(out.sent.length, sentBefore, 'not reported as sent');
    if (mode !== 'stream') {
      await until('the abort to be reported', () => out.aborted.length === 1);
      t.match(out.aborted[0], { reason: 'client went away' });
    }
    t.ok(openFds() <= before, `open fds back to ${before}`);
  });
}

t.test('sendfile: a stalled client is dropped after stallMs and does not hold up others', { skip: native ? false : 'addon not built' }, async (t) => {
  const { data, port, out } = await fixture(t, { stallMs: 800, noWorkers: true });
  const before = openFds();
  // a client that sends the request and never reads: the socket buffers fill, then nothing moves
  const stalled = connect(port, '127.0.0.1');
  stalled.pause();
  stalled.write('GET /f HTTP/1.1\r\nHost: x\r\n\r\n');
  const closed = new Promise((r) => stalled.on('close', r));
  stalled.on('error', () => undefined);
  const other = await get(port);
  t.equal(sha(other.body), sha(data), 'another client gets the whole file meanwhile');
  await until('the stalled client to be dropped', () => out.aborted.length === 1);
  t.match(out.aborted[0], { reason: /took no data for 800 ms/ });
  stalled.resume();
  await closed;
  await until('fds to be released', () => openFds() <= before + 1);
  stalled.destroy();
  await until('fds to be released', () => openFds() <= before);
  t.pass('released');
});

t.test('sendfile-worker: a stalled client is dropped by the worker; fds in the server are released', { skip: native ? false : 'addon not built' }, async (t) => {
  await workersReady();
  const { data, port, out } = await fixture(t, { stallMs: 800 });
  const before = openFds();
  const stalled = connect(port, '127.0.0.1');
  stalled.pause();
  stalled.on('error', () => undefined);
  stalled.write('GET /f HTTP/1.1\r\nHost: x\r\n\r\n');
  const other = await get(port);
  t.equal(sha(other.body), sha(data), 'another client gets the whole file meanwhile');
  await until('the stalled client to be dropped', () => out.aborted.length === 1);
  t.match(out.aborted[0], { reason: /took no data for 800 ms/ });
  stalled.destroy();
  await until('fds to be released', () => openFds() <= before);
  t.pass('released');
});

t.test('sendfile-worker: a worker killed mid-transfer costs that client its connection; the next request is served', { skip: native ? false : 'addon not built' }, async (t) => {
  await workersReady();
  const pool = sendfilePool()!;
  const { data, port, out } = await fixture(t);
  const pidsBefore = pool.pids();
  // a slow client: reads a little, then stops reading, so the transfer stays in its worker
  const ended = new Promise<string>((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/f', agent: false }, (res) => {
      res.once('data', () => {
        res.pause();
        for (const pid of pool.pids()) process.kill(pid, 'SIGKILL');
        // read on once the server has noticed: the client must then see its connection end early
        void until('the abort to be reported', () => out.aborted.length === 1).then(() => res.resume(), () => res.resume());
      });
      res.on('end', () => resolve('end'));
      res.on('error', () => resolve('error'));
      res.on('aborted', () => resolve('aborted'));
      res.on('close', () => resolve('close'));
    });
    req.on('error', () => resolve('error'));
    req.end();
  });
  t.not(await ended, 'end', 'the client lost its connection');
  t.match(out.aborted[0], { reason: 'client went away' });
  const next = await get(port);
  t.equal(sha(next.body), sha(data), 'the next request gets the whole file');
  await until('workers to be respawned', () => pool.available && pool.pids().every((p) => !pidsBefore.includes(p)), 60_000);
  await until('the previous transfer to be reported', () => out.sent.length === 1);
  const again = await get(port);
  t.equal(sha(again.body), sha(data), 'served by a respawned worker');
  await until('the transfer to be reported', () => out.sent.length === 2);
  t.equal(out.sent[1]?.via, 'sendfile-worker');
});

t.test('sendfile-worker: stopping the pool leaves no worker process', { skip: native ? false : 'addon not built' }, async (t) => {
  await workersReady();
  const pids = sendfilePool()!.pids();
  t.ok(pids.length > 0, 'workers running');
  stopSendfilePool();
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  await until('workers to exit', () => pids.every((p) => !alive(p)));
  t.pass('all gone');
});
