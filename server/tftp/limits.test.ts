/**
 * Finding 5 of the hardening issue: unacknowledged read requests from one address used to take the
 * whole transfer pool ("server busy" for everyone for ~30 s) and drew ~185x their size in
 * retransmissions. Here: per-client and global transfer limits, and the retransmission budget.
 * Flooding sockets bind 127.0.0.2 / .3 / .4 (all of 127/8 is loopback on Linux); real clients fetch
 * from 127.0.0.1.
 */
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { silentLogger } from '../../common/log.js';
import { startTftpServer, type TftpRefusedEvent, type TftpServerOptions, type TftpTransferEvent } from './server.js';
import {
  clientArgv,
  makeRandomFile,
  runClient,
  sha256File,
  CLIENT_TOOLS,
  type ClientName,
} from '../../test/tftp/support.js';
import { ack, errCode, opcode, Peer, rrq, waitFor } from '../../test/tftp/peer.js';
import { RESEND_FILE_FACTOR, RESEND_WINDOWS } from './read-request.js';
import { TransferTable } from './transfer-table.js';
import { makeTempDir } from '../../test/lib/temp-dir.js';
import { needExecutables } from '../../test/lib/requirements.js';

const FILE_BYTES = 256 * 1024 + 17;

async function setup(t: Pick<Test, 'teardown'>, extra: Partial<TftpServerOptions> = {}) {
  const tmp = await makeTempDir('tftp-limits');
  t.teardown(tmp.cleanup);
  const root = join(tmp.dir, 'root');
  const out = join(tmp.dir, 'out');
  await mkdir(root);
  await mkdir(out);
  const file = await makeRandomFile(root, 'ok.bin', FILE_BYTES);
  const events: TftpTransferEvent[] = [];
  const refused: TftpRefusedEvent[] = [];
  const server = await startTftpServer({
    host: '127.0.0.1', port: 0, root, logger: silentLogger(),
    onTransfer: (e) => events.push(e), onRefused: (e) => refused.push(e), ...extra,
  });
  t.teardown(() => server.close());
  return { out, file, events, refused, port: server.address().port };
}

/**
 * `n` sockets on `host`, each sending one RRQ and never ACKing. Sent as one burst; a request the
 * kernel dropped (the listen socket's buffer overflows) is sent again until every socket is accounted
 * for: answered, or reported to onRefused. Returns the peers that were answered and the ones refused.
 */
async function flood(
  t: Pick<Test, 'teardown'>, n: number, host: string, port: number, refused: readonly TftpRefusedEvent[], req = rrq('ok.bin'),
): Promise<{ peers: Peer[]; answered: Peer[]; dropped: Peer[]; requestBytes: number }> {
  const peers = Array.from({ length: n }, () => new Peer(host));
  t.teardown(() => Promise.all(peers.map((p) => p.close())));
  await Promise.all(peers.map((p) => p.ready()));
  const isRefused = (p: Peer): boolean => refused.some((r) => r.client.address === host && r.client.port === p.port);
  const accounted = (p: Peer): boolean => p.replies.length > 0 || isRefused(p);
  let requestBytes = 0;
  for (let round = 0; round < 20; round++) {
    const todo = peers.filter((p) => !accounted(p));
    if (todo.length === 0) break;
    for (const p of todo) {
      p.send(req, port);
      requestBytes += req.length;
    }
    await waitFor(() => peers.every(accounted), 1000);
  }
  return { peers, answered: peers.filter((p) => p.replies.length > 0), dropped: peers.filter(isRefused), requestBytes };
}

t.test('finding 5: slot accounting per address and in total', async (t) => {
  const table = new TransferTable<string>({ maxTransfers: 3, maxTransfersPerClient: 2 });
  const c = (address: string, port: number): string => TransferTable.key({ address, port });
  t.equal(table.reserve(c('10.0.0.1', 1), '10.0.0.1'), null);
  t.equal(table.reserve(c('10.0.0.1', 2), '10.0.0.1'), null);
  t.equal(table.reserve(c('10.0.0.1', 3), '10.0.0.1'), 'per-client limit', 'a third from one address');
  t.equal(table.reserve(c('10.0.0.2', 1), '10.0.0.2'), null);
  t.equal(table.reserve(c('10.0.0.3', 1), '10.0.0.3'), 'server limit', 'a fourth in all');
  t.equal(table.get(c('10.0.0.1', 1)), null, 'a placeholder until attached');
  table.attach(c('10.0.0.1', 1), 'transfer');
  t.same(table.transfers(), ['transfer'], 'only attached transfers are listed');
  table.remove(c('10.0.0.1', 1));
  table.remove(c('10.0.0.1', 1)); // twice: no effect
  t.equal(table.countFor('10.0.0.1'), 1);
  t.equal(table.size, 2);
  t.equal(table.reserve(c('10.0.0.3', 1), '10.0.0.3'), null, 'a freed slot is free for any address');
  t.throws(() => table.reserve(c('10.0.0.3', 1), '10.0.0.3'), 'one slot per TID');
  t.equal(new TransferTable({ maxTransfers: 1, maxTransfersPerClient: 8 }).reserve('k', 'a'), null);
});

t.test('finding 5: one address flooding RRQs cannot lock out other clients', async (t) => {
  const clients: ClientName[] = ['tftp-hpa', 'atftp'];
  if (!needExecutables(t, clients.map((c) => CLIENT_TOOLS[c]))) return;
  // Long first-reply timers keep the flood's transfers alive for the whole test (defaults otherwise).
  const { out, file, events, refused, port } = await setup(t, { initialRtoMs: 20_000, maxRtoMs: 20_000 });
  const f = await flood(t, 300, '127.0.0.2', port, refused);
  t.equal(f.answered.length, 8, 'the flooding address got its 8 transfers (maxTransfersPerClient default)');
  t.equal(f.dropped.length, 292, 'every other request from it was refused');
  t.ok(refused.every((r) => r.reason === 'per-client limit' && r.client.address === '127.0.0.2'), 'refused for the per-client limit', { first: refused[0] });
  t.ok(f.dropped.every((p) => p.replies.length === 0), 'refused requests got no answer at all');

  // While the flood goes on (every socket repeating its RRQ every ~200 ms, 30 sockets every 20 ms:
  // all 300 at once would overflow the listen socket's receive buffer and drop the clients' requests
  // in the kernel, which only makes them wait for their own retry), real clients on 127.0.0.1 fetch the file.
  let flooding = true;
  const again = (async () => {
    for (let i = 0; flooding; i = (i + 30) % f.peers.length) {
      for (const p of f.peers.slice(i, i + 30)) p.send(rrq('ok.bin'), port);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  for (const client of clients) {
    const local = join(out, `${client}.bin`);
    const argv = clientArgv(client === 'atftp'
      ? { client, host: '127.0.0.1', port, remote: 'ok.bin', local, blksize: 1432, windowsize: 4 } // as OVMF asks
      : { client, host: '127.0.0.1', port, remote: 'ok.bin', local });
    const r = await runClient(argv, 60_000);
    t.equal(await sha256File(local).catch(() => 'missing'), file.sha256, `${client} on 127.0.0.1 fetched the file intact during the flood (${r.ms} ms)`, { stderr: r.stderr });
  }
  flooding = false;
  await again;
  const floodEnded = events.filter((e) => e.client.address === '127.0.0.2');
  t.same(floodEnded, [], 'the flood still held its slots while the clients were served');
  t.ok(events.filter((e) => e.client.address === '127.0.0.1').every((e) => e.outcome === 'ok'), 'the clients\' transfers are ok');
});

t.test('finding 5: the global limit is shared, and a refused client gets in once a slot is free', async (t) => {
  // Long timers: the flood's transfers stay until their clients end them below.
  const { refused, events, port } = await setup(t, { maxTransfers: 16, maxTransfersPerClient: 8, initialRtoMs: 20_000, maxRtoMs: 20_000 });
  const a = await flood(t, 20, '127.0.0.2', port, refused);
  const b = await flood(t, 20, '127.0.0.3', port, refused);
  t.equal(a.answered.length, 8, '127.0.0.2: 8 transfers');
  t.equal(b.answered.length, 8, '127.0.0.3: 8 transfers, the pool (16) is full');
  const late = new Peer('127.0.0.4');
  t.teardown(() => late.close());
  await late.ready();
  late.send(rrq('ok.bin'), port);
  t.ok(await waitFor(() => refused.some((r) => r.client.address === '127.0.0.4'), 5000), 'a third address is refused');
  t.match(refused.find((r) => r.client.address === '127.0.0.4'), { reason: 'server limit', clientTransfers: 0, transfers: 16 });
  // 127.0.0.2's clients give up (ERROR to their transfer ports); then the third address is served.
  for (const p of a.answered) p.send(Buffer.from('\0\x05\0\0gave up\0', 'latin1'), p.replies[0]!.port);
  t.ok(await waitFor(() => events.filter((e) => e.client.address === '127.0.0.2').length === 8, 10_000), '127.0.0.2\'s transfers ended');
  t.ok(events.every((e) => e.outcome === 'error' && /gave up/.test(e.error ?? '')), 'on the clients\' ERROR');
  late.send(rrq('ok.bin'), port);
  t.ok(await late.until((r) => r.length > 0, 5000), 'the retried request is answered');
  t.equal(opcode(late.replies[0]!.msg), 3, 'with DATA: the refused request before it got no ERROR');
});

t.test('finding 5: unacknowledged RRQs draw a bounded number of bytes (no amplification)', async (t) => {
  // Short timers: each unanswered first reply is resent once after 50 ms, then the transfer waits
  // maxRtoMs (300 ms) in silence and ends. Enough per-client slots to admit every request.
  const n = 40;
  const opts = { initialRtoMs: 50, maxRtoMs: 300, maxTransfersPerClient: n };
  const plain = rrq('ok.bin');
  for (const [label, req, maxRatio] of [
    [`no options: DATA 1 (516 bytes) for a ${plain.length}-byte RRQ`, plain, (2 * 516) / plain.length],
    ['blksize 1432 + tsize, as iPXE asks: an OACK', rrq('ok.bin', 'octet', { blksize: '1432', tsize: '0' }), 2],
  ] as const) {
    const { events, refused, port } = await setup(t, opts);
    const f = await flood(t, n, '127.0.0.2', port, refused, req);
    t.equal(f.answered.length, n, `${label}: all ${n} admitted`);
    t.ok(await waitFor(() => events.length === n, 10_000), `${label}: every transfer ended`);
    const sent = events.reduce((s, e) => s + e.sentBytes, 0);
    const received = (): number => f.peers.reduce((s, p) => s + p.replies.reduce((a, r) => a + r.msg.length, 0), 0);
    t.ok(await waitFor(() => received() === sent, 5000), `${label}: the flood received all ${sent} bytes the server reports sending`);
    const packets = f.peers.reduce((s, p) => s + p.replies.length, 0);
    t.equal(packets, 2 * n, `${label}: two packets per request (the reply and one retransmission)`);
    t.ok(received() <= maxRatio * f.requestBytes, `${label}: ${received()} bytes back for ${f.requestBytes} sent (${(received() / f.requestBytes).toFixed(1)}x, at most ${maxRatio.toFixed(1)}x)`);
    t.ok(events.every((e) => e.outcome === 'timeout' && /after 1 retransmission/.test(e.error ?? '') && e.retransmits === 1), `${label}: each ended on its budget, not the 30 s give-up`, { first: events[0] });
    t.ok(events.every((e) => e.durationMs < 5000), `${label}: and quickly (longest ${Math.max(...events.map((e) => e.durationMs))} ms)`);
  }
});

t.test('finding 5: a peer that stops ACKing mid-transfer draws a bounded number of resends', async (t) => {
  const { events, port } = await setup(t, { initialRtoMs: 20, minRtoMs: 20, maxRtoMs: 100, windowRetransmits: 3 });
  const peer = new Peer();
  t.teardown(() => peer.close());
  peer.send(rrq('ok.bin', 'octet', { blksize: '1024', windowsize: '4' }), port);
  t.ok(await peer.until((r) => r.length > 0), 'OACK');
  const tid = peer.replies[0]!.port;
  peer.send(ack(0), tid);
  t.ok(await peer.until((r) => r.filter((x) => opcode(x.msg) === 3).length >= 4), 'first window');
  peer.send(ack(4), tid); // then silence
  t.ok(await waitFor(() => events.length > 0, 10_000), 'the transfer ended');
  t.match(events[0], { outcome: 'timeout', error: /window after 3 retransmission/, retransmits: 12, bytes: 4 * 1024 });
  t.equal(peer.replies.filter((x) => opcode(x.msg) === 3).length, 4 + 4 + 3 * 4, 'the second window was sent once and resent 3 times');
});

t.test('finding 5: a peer ACKing one block at a time inside each window runs into the byte budget', async (t) => {
  // Each ACK inside the window makes the server resend the rest of it: 63 resent blocks per block
  // delivered at windowsize 64. The byte budget (8 times the file plus 16 windows) ends that.
  const { events, port } = await setup(t, { initialRtoMs: 5000, minRtoMs: 5000, maxRtoMs: 5000 });
  const peer = new Peer();
  t.teardown(() => peer.close());
  peer.send(rrq('ok.bin', 'octet', { blksize: '512', windowsize: '64' }), port);
  t.ok(await peer.until((r) => r.length > 0), 'OACK');
  const tid = peer.replies[0]!.port;
  let acked = 0;
  peer.send(ack(0), tid);
  while (events.length === 0 && acked < 600) {
    const seen = peer.replies.length;
    if (!(await peer.until((r) => r.length > seen || events.length > 0, 5000))) break;
    await peer.until(() => false, 5); // let the rest of the window arrive
    if (events.length > 0 || peer.replies.some((x) => opcode(x.msg) === 5)) break;
    peer.send(ack(++acked), tid);
  }
  t.ok(await waitFor(() => events.length > 0, 5000), 'the transfer ended');
  const budget = RESEND_FILE_FACTOR * FILE_BYTES + RESEND_WINDOWS * 516 * 64;
  t.match(events[0], { outcome: 'error', error: /retransmission budget spent/ });
  t.ok(events[0]!.sentBytes <= FILE_BYTES + 516 * 64 + budget + 516 * 64, `sent ${events[0]!.sentBytes} bytes, within the file + the budget (${budget})`);
  t.ok(acked < 600, `stopped after ${acked} one-block ACKs`);
  t.ok(await peer.until((r) => r.some((x) => opcode(x.msg) === 5), 5000), 'the peer (it did ACK) is told');
  t.equal(errCode(peer.replies.at(-1)!.msg), 0, 'with ERROR 0, the last packet it got');
});
