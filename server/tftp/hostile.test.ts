/**
 * Hostile input: 10,000 random and mutated packets, write requests, traversal names, symlinks out,
 * oversized/truncated packets, duplicate ACKs (Sorcerer's Apprentice), silent and aborting clients.
 * The server runs in this process: a crash fails the test.
 */
import t, { type Test } from 'tap';
import { mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger } from '../../common/log.js';
import { startTftpServer, type TftpServer, type TftpServerOptions, type TftpTransferEvent } from './server.js';
import {
  clientArgv,
  makeRandomFile,
  runClient,
  sha256File,
  CLIENT_TOOLS,
} from '../../test/tftp/support.js';
import { prng } from '../../test/tftp/impair-relay.js';
import { ack, errCode, opcode, Peer, rrq } from '../../test/tftp/peer.js';
import { makeTempDir } from '../../test/lib/temp-dir.js';
import { needExecutables } from '../../test/lib/requirements.js';

async function setup(t: Pick<Test, 'teardown'>, extra: Partial<TftpServerOptions> = {}, host = '127.0.0.1') {
  const tmp = await makeTempDir('tftp-hostile');
  t.teardown(tmp.cleanup);
  const root = join(tmp.dir, 'root');
  await mkdir(join(root, 'sub'), { recursive: true });
  await writeFile(join(tmp.dir, 'secret.txt'), 'secret\n');
  const ok = await makeRandomFile(root, 'ok.bin', 64 * 1024 + 100);
  await writeFile(join(root, 'sub', 'inner.txt'), 'inner\n');
  await symlink('/etc/passwd', join(root, 'leak'));
  await symlink('../secret.txt', join(root, 'up'));
  await symlink('ok.bin', join(root, 'alias.bin'));
  const events: TftpTransferEvent[] = [];
  const server: TftpServer = await startTftpServer({
    host, port: 0, root, logger: silentLogger(), onTransfer: (e) => events.push(e), giveUpMs: 1500, ...extra,
  });
  t.teardown(() => server.close());
  return { root, ok, server, events, port: server.address().port };
}

t.test('refuses writes, traversal, symlinks out, bad modes; answers malformed packets', async (t) => {
  const { root, port, events } = await setup(t);
  const peer = new Peer();
  t.teardown(() => peer.close());
  const cases: Array<[string, Buffer, number]> = [
    ['WRQ', rrq('new.bin', 'octet', {}, 2), 2],
    ['WRQ over an existing file', rrq('ok.bin', 'octet', {}, 2), 2],
    ['../', rrq('../secret.txt'), 2],
    ['nested ../', rrq('sub/../../secret.txt'), 2],
    ['absolute', rrq('/etc/passwd'), 2],
    ['absolute inside root', rrq(`${root}/ok.bin`), 2],
    ['percent-encoded ../', rrq('%2e%2e/secret.txt'), 2],
    ['percent-encoded slash', rrq('..%2fsecret.txt'), 2],
    ['backslash', rrq('..\\secret.txt'), 2],
    ['dot segment', rrq('./ok.bin'), 2],
    ['hidden file', rrq('.ok.bin'), 2],
    ['empty name', rrq(''), 2],
    ['symlink to /etc/passwd', rrq('leak'), 2],
    ['symlink to ../', rrq('up'), 2],
    ['directory', rrq('sub'), 1],
    ['missing file', rrq('nope.bin'), 1],
    ['mail mode', rrq('ok.bin', 'mail'), 4],
    ['truncated request (no NUL)', Buffer.from('\0\x01ok.bin\0octet', 'latin1'), 4],
    ['option without value', rrq('ok.bin', 'octet', { blksize: '1024' }).subarray(0, -5), 4],
    ['oversized request', Buffer.concat([rrq('ok.bin'), Buffer.alloc(3000, 0x41), Buffer.from([0])]), 4],
    ['control byte in name', rrq('ok\x01.bin'), 4],
  ];
  for (const [label, pkt, code] of cases) {
    const before = peer.replies.length;
    peer.send(pkt, port);
    const got = await peer.until((r) => r.length > before, 5000);
    const reply = peer.replies[before];
    t.ok(got && reply, `${label}: answered`);
    if (reply) t.equal(errCode(reply.msg), code, `${label}: ERROR ${code}`, { reply: reply.msg.toString('latin1') });
  }
  // Stray DATA/ACK/ERROR/OACK, unknown opcodes and runts to the listen port are dropped silently.
  const before = peer.replies.length;
  for (const op of [3, 4, 5, 6, 9, 0x101]) peer.send(Buffer.from([op >> 8, op & 0xff, 0, 1, 0]), port);
  for (const runt of [[], [1], [0, 1], [0, 1, 0]]) peer.send(Buffer.from(runt), port);
  peer.send(rrq('sub/inner.txt'), port); // ordering marker: this one is answered
  await peer.until((r) => r.length > before, 5000);
  t.equal(opcode(peer.replies[before]!.msg), 3, 'stray packets got no answer; the next RRQ got DATA');
  t.same(await readdir(root).then((l) => l.sort()), ['alias.bin', 'leak', 'ok.bin', 'sub', 'up'], 'nothing was written');
  t.ok(events.filter((e) => e.outcome === 'refused').length >= 16, 'refusals are reported as transfer events');
});

t.test('a symlink inside the root is served; option names are case-insensitive', async (t) => {
  const { port, ok } = await setup(t);
  const peer = new Peer();
  t.teardown(() => peer.close());
  peer.send(rrq('alias.bin', 'OCTET', { BlkSize: '1024', TSIZE: '0', WindowSize: '2', bogus: 'x', timeout: '0' }), port);
  t.ok(await peer.until((r) => r.length > 0), 'answered');
  const oack = peer.replies[0]!;
  t.equal(opcode(oack.msg), 6, 'OACK');
  const fields = oack.msg.subarray(2).toString('latin1').split('\0').slice(0, -1);
  t.same(fields, ['blksize', '1024', 'tsize', String(ok.size), 'windowsize', '2'], 'accepted options echoed, bad/unknown ones dropped');
});

t.test("duplicate ACKs do not multiply DATA (Sorcerer's Apprentice)", async (t) => {
  const { port, events } = await setup(t, { initialRtoMs: 3000, minRtoMs: 3000, maxRtoMs: 3000 });
  const peer = new Peer();
  t.teardown(() => peer.close());
  peer.send(rrq('ok.bin'), port);
  const blocks = Math.floor((64 * 1024 + 100) / 512) + 1;
  for (let b = 1; b <= blocks; b++) {
    t.ok(await peer.until((r) => r.some((x) => opcode(x.msg) === 3 && x.msg.readUInt16BE(2) === b)), `DATA ${b}`, { diagnostic: false });
    const from = peer.replies.find((x) => opcode(x.msg) === 3)!.port;
    // Every ACK three times: a naive server answers each with a DATA and the traffic grows.
    for (let i = 0; i < 3; i++) peer.send(ack(b), from);
  }
  await peer.until((r) => r.length > blocks, 300); // give stray duplicates a moment to show up
  const data = peer.replies.filter((x) => opcode(x.msg) === 3);
  t.equal(data.length, blocks, `exactly one DATA per block (${blocks}) despite 3x ACKs`);
  await peer.until(() => events.length > 0, 3000);
  t.match(events[0], { outcome: 'ok', retransmits: 0, bytes: 64 * 1024 + 100 });
});

t.test('a new request from the same port after a lost final ACK is served at once', async (t) => {
  const { port, events } = await setup(t, { initialRtoMs: 3000, minRtoMs: 3000, maxRtoMs: 3000, giveUpMs: 20_000 });
  const peer = new Peer();
  t.teardown(() => peer.close());
  peer.send(rrq('sub/inner.txt'), port); // one block
  t.ok(await peer.until((r) => r.length > 0), 'DATA 1 of the first file');
  const started = Date.now();
  peer.send(rrq('alias.bin'), port); // its final ACK "lost": the client moves on from the same port
  t.ok(await peer.until((r) => r.length > 1, 2000), 'the second request is answered without waiting for a timeout');
  t.equal(opcode(peer.replies[1]!.msg), 3, 'DATA');
  t.not(peer.replies[1]!.port, peer.replies[0]!.port, 'from a new transfer port');
  t.ok(Date.now() - started < 2000);
  t.match(events[0], { file: 'sub/inner.txt', outcome: 'error', error: /final ACK lost/ });
});

t.test('transfer sockets bind the listen address, not 0.0.0.0', async (t) => {
  const { port } = await setup(t, {}, '127.0.0.2');
  const peer = new Peer();
  t.teardown(() => peer.close());
  peer.send(rrq('ok.bin'), port, '127.0.0.2');
  t.ok(await peer.until((r) => r.length > 0));
  t.equal(peer.replies[0]!.address, '127.0.0.2', 'DATA comes from the listen address');
  t.not(peer.replies[0]!.port, port, 'from a fresh transfer port');
});

t.test('a silent client times out, an aborting client ends the transfer', async (t) => {
  const { port, events } = await setup(t, { giveUpMs: 1000, initialRtoMs: 100 });
  const silent = new Peer();
  t.teardown(() => silent.close());
  silent.send(rrq('ok.bin'), port);
  t.ok(await silent.until(() => events.length > 0, 10_000), 'transfer ended');
  t.match(events[0], { outcome: 'timeout', bytes: 0 });
  t.ok(events[0]!.retransmits > 0, 'it retransmitted before giving up');
  t.ok(silent.replies.length < 20, `bounded retransmissions (${silent.replies.length})`);

  const aborting = new Peer();
  t.teardown(() => aborting.close());
  aborting.send(rrq('ok.bin'), port);
  t.ok(await aborting.until((r) => r.length > 0));
  aborting.send(Buffer.from('\0\x05\0\0client gave up\0', 'latin1'), aborting.replies[0]!.port);
  t.ok(await aborting.until(() => events.length > 1, 5000));
  t.match(events[1], { outcome: 'error', error: /client gave up/ });
});

t.test('10,000 random and mutated packets, then a normal transfer still works', async (t) => {
  if (!needExecutables(t, [CLIENT_TOOLS.atftp])) return;
  const { port, ok, root } = await setup(t, { giveUpMs: 1000 });
  const rnd = prng(0x7f7f_2026);
  const int = (n: number): number => Math.floor(rnd() * n);
  const seeds = [
    rrq('ok.bin'), rrq('ok.bin', 'netascii', { blksize: '1468', tsize: '0', windowsize: '16' }), rrq('sub/inner.txt', 'octet', { timeout: '1' }),
    rrq('ok.bin', 'octet', {}, 2), ack(1), Buffer.from('\0\x05\0\x01x\0'), rrq('../../etc/passwd'),
  ];
  const peers = Array.from({ length: 8 }, () => new Peer());
  t.teardown(() => Promise.all(peers.map((p) => p.close())));
  const kinds: Record<string, number> = {};
  for (let i = 0; i < 10_000; i++) {
    let pkt: Buffer;
    const kind = int(6);
    switch (kind) {
      case 0: // pure noise, any length up to the UDP payload size that fits loopback comfortably
        pkt = Buffer.from(Array.from({ length: int(rnd() < 0.05 ? 65000 : 600) }, () => int(256)));
        break;
      case 1: { // bit flips
        pkt = Buffer.from(seeds[int(seeds.length)]!);
        for (let k = 0, m = 1 + int(6); k < m && pkt.length > 0; k++) {
          const at = int(pkt.length);
          pkt[at] = (pkt[at] as number) ^ (1 << int(8));
        }
        break;
      }
      case 2: // truncation
        pkt = seeds[int(seeds.length)]!.subarray(0, int(seeds[int(seeds.length)]!.length));
        break;
      case 3: // garbage appended
        pkt = Buffer.concat([seeds[int(seeds.length)]!, Buffer.from(Array.from({ length: int(2000) }, () => int(256)))]);
        break;
      case 4: // valid opcode, random body
        pkt = Buffer.concat([Buffer.from([0, 1 + int(7)]), Buffer.from(Array.from({ length: int(100) }, () => int(256)))]);
        break;
      default: // oversized options list
        pkt = rrq('ok.bin', 'octet', Object.fromEntries(Array.from({ length: 1 + int(200) }, (_, k) => [`o${k}`, 'x'.repeat(int(20))])));
    }
    kinds[kind] = (kinds[kind] ?? 0) + 1;
    peers[i % peers.length]!.send(pkt, port);
    if (i % 200 === 199) await new Promise((r) => setImmediate(r)); // let the server breathe; drops are fine
  }
  t.comment(`packet kinds sent: ${JSON.stringify(kinds)}`);
  const local = join(root, '..', 'after-fuzz.bin');
  const r = await runClient(clientArgv({ client: 'atftp', host: '127.0.0.1', port, remote: 'ok.bin', local, blksize: 1468, windowsize: 4 }), 60_000);
  t.equal(await sha256File(local).catch(() => 'missing'), ok.sha256, 'atftp fetch after the fuzz is intact', { stderr: r.stderr });
  t.same((await readdir(root)).sort(), ['alias.bin', 'leak', 'ok.bin', 'sub', 'up'], 'no file was created by the fuzz');
});
