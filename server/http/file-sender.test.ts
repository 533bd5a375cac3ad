import { createHash, randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { nativeSendfile, nativeSendfileProblem, sendFile, type SendFileOptions } from './file-sender.js';

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

for (const mode of ['sendfile', 'stream'] as const) {
  const noSendfile = mode === 'stream';
  const skip = mode === 'sendfile' && !native ? 'addon not built' : false;

  t.test(`${mode}: whole file, ranges, 416, 304, HEAD`, { skip }, async (t) => {
    const { data, port, out } = await fixture(t, { noSendfile });
    const full = await get(port);
    t.equal(full.res.statusCode, 200);
    t.equal(full.res.headers['content-length'], String(SIZE));
    t.equal(full.body.length, SIZE);
    t.equal(sha(full.body), sha(data), 'same bytes');
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
    t.equal(out.sent.length, 3, 'onSent only for bodies');
  });

  t.test(`${mode}: keep-alive connection serves the next request after a body`, { skip }, async (t) => {
    const { data, port } = await fixture(t, { noSendfile });
    // two pipelined requests on one raw connection: both responses complete and in order
    const sock = connect(port, '127.0.0.1');
    sock.write('GET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\nGET /f HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\nConnection: close\r\n\r\n');
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    await new Promise((r) => sock.on('close', r));
    const text = Buffer.concat(chunks);
    const first = text.indexOf(data.subarray(0, 100));
    const second = text.indexOf(data.subarray(100, 200));
    t.ok(first > 0 && second > first, 'both bodies, in order');
    t.equal(text.toString('latin1').match(/HTTP\/1\.1 206/g)?.length, 2);
  });

  t.test(`${mode}: a client leaving mid-file releases every fd`, { skip }, async (t) => {
    const { port, out } = await fixture(t, { noSendfile });
    await get(port, { range: 'bytes=0-0' }); // warm up lazily opened fds
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
    if (mode === 'sendfile') {
      await until('the abort to be reported', () => out.aborted.length === 1);
      t.match(out.aborted[0], { reason: 'client went away' });
    }
    t.ok(openFds() <= before, `open fds back to ${before}`);
  });
}

t.test('sendfile: a stalled client is dropped after stallMs and does not hold up others', { skip: native ? false : 'addon not built' }, async (t) => {
  const { data, port, out } = await fixture(t, { stallMs: 800 });
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
