/**
 * The UDP server, for real: 10,000 seeded mutations of the captured packets (plus random junk,
 * truncations and oversized datagrams) thrown at ports 67 and 4011, then a normal request that must
 * still be answered correctly and fast; bind/close behaviour and SO_REUSEADDR coexistence.
 *
 * The whole test runs in a fresh network namespace with only loopback (the file re-executes itself
 * under `unshare --net`): a mutated ciaddr or giaddr makes the server unicast to an arbitrary
 * address, and that must never leave this machine. In the namespace such sends fail with ENETUNREACH.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../../common/log.js';
import type { BootDecision } from '../boot/booter.js';
import type { MachineRecord } from '../machines/model.js';
import { FakeBooter } from '../../test/lib/fake-booter.js';
import { findExecutable, isCI } from '../../test/lib/requirements.js';
import { prng } from '../../test/tftp/impair-relay.js';
import { describeRequest, parsePacket, OPT, DHCPOFFER } from './packet.js';
import { startDhcpProxy, type DhcpProxy, type DhcpProxyOptions } from './server.js';
import { fixtures, withAddr } from './testdata/fixtures.js';

const CHILD_ENV = 'RAMBOOT_DHCP_NETNS_CHILD';
const SEED = 20261130;
const COUNT = 10_000;

interface Received {
  msg: Buffer;
  address: string;
  port: number;
}

class Client {
  readonly got: Received[] = [];
  private waiters: Array<() => void> = [];
  private constructor(readonly sock: Socket) {
    sock.on('message', (msg, r) => {
      this.got.push({ msg, address: r.address, port: r.port });
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static async bind(address: string, port: number): Promise<Client> {
    const s = createSocket({ type: 'udp4', reuseAddr: true });
    await new Promise<void>((resolve) => s.bind(port, address, () => resolve()));
    s.setBroadcast(true);
    return new Client(s);
  }
  send(buf: Buffer, port: number, address = '127.0.0.1'): Promise<void> {
    return new Promise((resolve) => this.sock.send(buf, port, address, () => resolve()));
  }
  async waitFor(pred: (r: Received) => boolean, ms: number): Promise<Received | undefined> {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = this.got.find(pred);
      if (hit) return hit;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => (clearTimeout(timer), resolve()));
      });
    }
  }
  close(): void {
    this.sock.close();
  }
}

const machine = { mac: 'x' } as unknown as MachineRecord;
const RAMBOOT = (): BootDecision => ({ kind: 'ramboot', mode: 'ramboot', image: { name: 'test', dir: '/x', manifest: {} } as never, machine });

function capturedLogger(): { lines: Array<Record<string, unknown>>; logger: ReturnType<typeof createLogger> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { lines, logger: createLogger({ level: 'debug', destination: sink }) };
}

async function proxy(t: Test, extra: Partial<DhcpProxyOptions> = {}): Promise<{ srv: DhcpProxy; lines: Array<Record<string, unknown>>; booter: FakeBooter }> {
  const { lines, logger } = capturedLogger();
  const booter = new FakeBooter(RAMBOOT);
  const srv = await startDhcpProxy({
    booter,
    logger,
    serverIp: '127.0.0.1',
    ipxeScriptUrl: 'http://127.0.0.1:8080/boot.ipxe',
    httpBootUrl: (ip) => `http://${ip}:8080/ipxe/ipxe.efi`,
    ...extra,
  });
  t.teardown(() => srv.close());
  return { srv, lines, booter };
}

/** One mutation of `base` (or fresh junk), deterministic for a given PRNG state. */
function mutate(rand: () => number, base: Buffer): Buffer {
  const n = (k: number): number => Math.floor(rand() * k);
  const kind = n(8);
  let b = Buffer.from(base);
  switch (kind) {
    case 0: // flip 1-8 random bytes anywhere
      for (let i = n(8) + 1; i > 0; i--) b[n(b.length)] = n(256);
      break;
    case 1: // flip bytes in the options area
      for (let i = n(4) + 1; i > 0; i--) b[240 + n(b.length - 240)] = n(256);
      break;
    case 2: // truncate
      b = b.subarray(0, n(b.length));
      break;
    case 3: // append junk (sometimes past the size limit)
      b = Buffer.concat([b, Buffer.from(Array.from({ length: n(rand() < 0.1 ? 2000 : 64) + 1 }, () => n(256)))]);
      break;
    case 4: // a bad length byte on some option
      {
        let i = 240;
        const stops: number[] = [];
        while (i + 1 < b.length && b[i] !== 255) {
          if (b[i] === 0) { i++; continue; }
          stops.push(i + 1);
          i += 2 + b[i + 1]!;
        }
        if (stops.length > 0) b[stops[n(stops.length)]!] = n(256);
      }
      break;
    case 5: // overload with random contents in file/sname
      b[240] = 52; b[241] = 1; b[242] = n(5);
      for (let i = 44; i < 236; i++) if (rand() < 0.3) b[i] = n(256);
      break;
    case 6: // pure junk of random length
      b = Buffer.from(Array.from({ length: n(600) }, () => n(256)));
      break;
    default: // the cookie, op, hlen
      b[[0, 2, 236, 237, 238, 239][n(6)]!] = n(256);
  }
  return b;
}

function runInNamespace(): void {
  t.test('10,000 mutated packets: no crash, no reply to garbage, then a normal request is answered', async (t) => {
    const { lines, srv } = await proxy(t);
    const client = await Client.bind('0.0.0.0', 68);
    t.teardown(() => client.close());
    const bases = fixtures().map((f) => Buffer.from(f.hex, 'hex'));
    const rand = prng(SEED);
    /** xid -> whether the packet would parse (only those may be answered). */
    const sentValid = new Map<number, boolean>();
    let valid = 0;
    for (let i = 0; i < COUNT; i++) {
      const b = mutate(rand, bases[Math.floor(rand() * bases.length)]!);
      // a unique xid per packet, so every reply is traced to what caused it
      const xid = 0x10000000 + i;
      if (b.length >= 8) b.writeUInt32BE(xid, 4);
      const p = parsePacket(b);
      const ok = p.ok && describeRequest(p.value).ok;
      if (ok) valid++;
      sentValid.set(xid, ok);
      await client.send(b, rand() < 0.7 ? 67 : 4011);
      // the server runs in this process: let it read its socket now and then, so the kernel's
      // receive buffer never overflows and every packet is really processed
      if (i % 16 === 15) await new Promise((r) => setImmediate(r));
    }
    t.comment(`${COUNT} packets sent (seed ${SEED}), ${valid} still well-formed after mutation`);
    // then a normal request, answered correctly within the 2 s iPXE allows
    const normal = withAddr(Buffer.from(fixtures().find((f) => f.name === 'uefi-edk2-pxe-discover')!.hex, 'hex'), 12, '127.0.0.1');
    normal.writeUInt32BE(0xfeedf00d, 4);
    // the server may still be working through the flood: wait for it to be answered
    const sentAt = Date.now();
    await client.send(normal, 67);
    const reply = await client.waitFor((r) => r.msg.length >= 8 && r.msg.readUInt32BE(4) === 0xfeedf00d, 20_000);
    t.ok(reply, `the normal request was answered after the flood (${Date.now() - sentAt} ms)`);
    const p = reply ? parsePacket(reply.msg) : undefined;
    t.match(p, { ok: true, value: { op: 2, yiaddr: '0.0.0.0', siaddr: '127.0.0.1', file: 'snponly.efi' } }, 'a correct proxy OFFER');
    if (p?.ok) t.equal(p.value.options.get(OPT.MESSAGE_TYPE)?.[0], DHCPOFFER);
    // a fresh one, timed on a quiet server
    normal.writeUInt32BE(0xfeedf00e, 4);
    const t0 = Date.now();
    await client.send(normal, 67);
    const quick = await client.waitFor((r) => r.msg.length >= 8 && r.msg.readUInt32BE(4) === 0xfeedf00e, 2000);
    t.ok(quick, 'answered within 2 s');
    t.ok(Date.now() - t0 < 500, `answered in ${Date.now() - t0} ms`);

    const fromGarbage = client.got.filter((r) => r.msg.length >= 8 && sentValid.get(r.msg.readUInt32BE(4)) === false);
    t.equal(fromGarbage.length, 0, 'no reply to any packet that does not parse');
    const unknown = client.got.filter((r) => r.msg.length < 8 || (!sentValid.has(r.msg.readUInt32BE(4)) && r.msg.readUInt32BE(4) >>> 0 !== 0xfeedf00d && r.msg.readUInt32BE(4) >>> 0 !== 0xfeedf00e));
    t.equal(unknown.length, 0, 'no reply that cannot be traced to a request');
    t.ok(client.got.every((r) => parsePacket(r.msg).ok), 'every reply parses');
    const bad = lines.filter((l) => l['event'] === 'dhcp.bad_packet');
    t.equal(bad.length, COUNT - valid, `every malformed packet reached the server and was logged (${bad.length})`);
    t.ok(bad.every((l) => l['level'] === 'debug'), '... all at debug');
    t.notOk(lines.some((l) => l['event'] === 'dhcp.handler_failed'), 'no handler failure');
    t.ok(srv.address().dhcp === 67, 'still bound');
  });

  t.test('bind, address(), close() frees the ports; SO_REUSEADDR lets a site DHCP server share port 67', async (t) => {
    // a DHCP server on the same host that sets SO_REUSEADDR (busybox udhcpd does) binds 0.0.0.0:67 first
    const site = await Client.bind('0.0.0.0', 67);
    t.teardown(() => site.close());
    const { srv } = await proxy(t);
    t.same(srv.address(), { address: '0.0.0.0', serverIp: '127.0.0.1', dhcp: 67, pxe: 4011 });
    const client = await Client.bind('0.0.0.0', 68);
    t.teardown(() => client.close());
    const d = Buffer.from(fixtures().find((f) => f.name === 'bios-undionly-discover')!.hex, 'hex');
    d.writeUInt32BE(0x0badcafe, 4);
    // a DISCOVER as the firmware sends it: broadcast, ciaddr 0 (the reply is the limited broadcast,
    // which leaves through the interface of serverIp: lo here). Sent from a socket bound to an
    // address, or the namespace, having no default route, has no route for 255.255.255.255.
    const tx = await Client.bind('127.0.0.1', 0);
    t.teardown(() => tx.close());
    await tx.send(d, 67, '255.255.255.255');
    const r = await client.waitFor((x) => x.msg.readUInt32BE(4) === 0x0badcafe, 3000);
    t.ok(r, 'the broadcast DISCOVER got a broadcast OFFER');
    t.match(r && parsePacket(r.msg), { ok: true, value: { file: 'http://127.0.0.1:8080/boot.ipxe' } }, 'undionly (iPXE) gets the script');
    t.ok(await site.waitFor((x) => x.msg.readUInt32BE(4) === 0x0badcafe, 3000), 'the site server\'s socket got the DISCOVER too');
    await srv.close();
    const again = await proxy(t);
    t.equal(again.srv.address().dhcp, 67, 'ports free again after close()');
  });

  t.test('option checks', async (t) => {
    const { logger } = capturedLogger();
    const base = { booter: new FakeBooter(RAMBOOT), logger, ipxeScriptUrl: 'http://127.0.0.1/boot.ipxe', ports: { dhcp: 0, pxe: 0 } };
    await t.rejects(startDhcpProxy({ ...base }), /serverIp \(or interface\) is required/);
    await t.rejects(startDhcpProxy({ ...base, interface: 'nonexistent0' }), /no IPv4 address/);
    await t.rejects(startDhcpProxy({ ...base, serverIp: '10.1.2.3' }), /is serverIp an address of this host/);
    await t.rejects(startDhcpProxy({ ...base, serverIp: '127.0.0.1', bootFiles: { bios: 'a b' } }), /printable/);
    await t.rejects(startDhcpProxy({ ...base, serverIp: '127.0.0.1', httpBootUrl: 'ftp://x' }), /http\(s\) URL/);
    const viaIface = await startDhcpProxy({ ...base, interface: 'lo' });
    t.equal(viaIface.address().serverIp, '127.0.0.1', 'serverIp from the interface');
    await viaIface.close();
  });
}

if (process.env[CHILD_ENV] !== '1') {
  // Parent: re-run this file inside a new network namespace (root, or an unprivileged user namespace).
  t.test('proxyDHCP server tests in a private network namespace', async (t) => {
    const missing = ['unshare', 'ip'].filter((x) => !findExecutable(x));
    if (missing.length > 0) {
      if (isCI()) t.fail(`missing ${missing.join(', ')}`);
      else t.pass(`!!!!! SKIPPING: ${missing.join(', ')} not found`, { skip: true });
      return;
    }
    const userns = process.getuid?.() === 0 ? [] : ['--user', '--map-root-user'];
    const argv = ['unshare', ...userns, '--net', '--', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', process.execPath, ...process.execArgv, fileURLToPath(import.meta.url)];
    const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, [CHILD_ENV]: '1', TAP: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    if (code !== 0 && /^unshare: /m.test(out) && !/^\s*(not )?ok /m.test(out)) {
      // no namespace for us (no root and no unprivileged user namespaces): skip loudly, fail under CI
      const why = `cannot create a network namespace: ${out.trim().split('\n')[0]}`;
      if (isCI()) t.fail(why);
      else t.pass(`!!!!! SKIPPING: ${why}`, { skip: why });
      return;
    }
    for (const line of out.split('\n').filter((l) => /^\s*(not ok|ok|#)/.test(l))) t.comment(line);
    if (code !== 0) t.comment(out.slice(-6000));
    t.equal(code, 0, 'the namespaced run passed');
    t.notMatch(out, /^\s*not ok/m, 'no failing assertion in it');
  });
} else {
  runInNamespace();
}
