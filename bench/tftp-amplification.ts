/**
 * `npx tsx bench/tftp-amplification.ts [N]`: what unacknowledged read requests draw from the TFTP
 * server (finding 5 of the hardening issue). N sockets on 127.0.0.2 (default 260) each send one RRQ for
 * a 64 KiB file and never ACK; every packet the server sends back to them is counted until every
 * admitted transfer has ended (no packet and no transfer event for 10 s). Meanwhile a probe on 127.0.0.1 sends one RRQ per second and records
 * whether it got DATA or an ERROR (or nothing). Run once without options (a 22-byte RRQ, answered with
 * DATA 1) and once with `blksize 1432 tsize 0` (answered with an OACK), with the server's defaults.
 * A last run lifts the per-client limit, to show the retransmission budget on its own. Only loopback
 * traffic; the server runs in this process. The options used here exist since finding 5 was fixed; to
 * measure an older server, drop them.
 */
import { makeTempDir } from '../test/lib/temp-dir.js';
import { createSocket, type Socket } from 'node:dgram';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { silentLogger } from '../common/log.js';
import { startTftpServer, type TftpServerOptions, type TftpTransferEvent } from '../server/tftp/server.js';
import {  } from '../test/tftp/support.js';

const N = Number(process.argv[2] ?? 260);
const FILE = 'undionly.kpxe'; // 13 characters: "\0\x01undionly.kpxe\0octet\0" is the 22-byte RRQ of the finding

function rrq(opts: Record<string, string>): Buffer {
  const parts = [FILE, 'octet', ...Object.entries(opts).flat()];
  return Buffer.concat([Buffer.from([0, 1]), ...parts.map((p) => Buffer.from(`${p}\0`, 'latin1'))]);
}

function bound(address: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    s.once('error', reject);
    s.bind({ address, port: 0 }, () => {
      s.off('error', reject);
      s.on('error', () => undefined);
      resolve(s);
    });
  });
}

interface Row {
  label: string;
  requestBytes: number;
  packetsBack: number;
  bytesBack: number;
  lastPacketAfterMs: number;
  lastTransferEndedAfterMs: number;
  probe: string;
  admitted: number;
  refused: number;
  /** Bytes sent per admitted (never acknowledged) transfer, from the server's own transfer events. */
  sentPerAdmitted: number;
  outcomes: string;
}

async function measure(label: string, opts: Record<string, string>, root: string, serverOpts: Partial<TftpServerOptions>): Promise<Row> {
  const events: Array<TftpTransferEvent & { at: number }> = [];
  const lastFloodEventAt = (evs: ReadonlyArray<{ at: number }>): number => evs.reduce((a, e) => Math.max(a, e.at), 0);
  let refused = 0;
  const server = await startTftpServer({
    host: '127.0.0.1', port: 0, root, logger: silentLogger(), onTransfer: (e) => events.push({ ...e, at: performance.now() - t0 }),
    onRefused: (e) => (refused += e.client.address === '127.0.0.2' ? 1 : 0), ...serverOpts,
  });
  const port = server.address().port;
  let t0 = performance.now();
  const flood = await Promise.all(Array.from({ length: N }, () => bound('127.0.0.2')));
  const req = rrq(opts);
  let packetsBack = 0;
  let bytesBack = 0;
  let lastPacketAt = 0;
  t0 = performance.now();
  for (const s of flood) {
    s.on('message', (m) => {
      packetsBack++;
      bytesBack += m.length;
      lastPacketAt = performance.now() - t0;
    });
    s.send(req, port, '127.0.0.1');
  }
  // A well-behaved client asking once a second (a fresh port each time); what it gets back tells
  // whether the flood locked it out.
  const describe = (m: Buffer): string => {
    const op = m.readUInt16BE(0);
    return op === 5 ? `ERROR "${m.toString('latin1', 4, m.length - 1)}"` : op === 3 ? 'DATA' : op === 6 ? 'OACK' : `op ${op}`;
  };
  const probeAnswers: string[] = [];
  for (let sec = 0; sec < 90; sec++) {
    const p = await bound('127.0.0.1');
    let answer = 'nothing';
    p.on('message', (m) => {
      if (answer === 'nothing') answer = describe(m);
    });
    p.send(rrq({}), port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 1000));
    p.close();
    probeAnswers.push(answer);
    // Done once the flood has drawn nothing for 10 s (longer than any silent wait of the server's) and
    // no flooded transfer is left to report.
    const flooded = events.filter((e) => e.client.address === '127.0.0.2');
    const quietFor = performance.now() - t0 - Math.max(lastPacketAt, lastFloodEventAt(flooded));
    if (flooded.length > 0 && quietFor > 10_000) break;
  }
  const floodEvents = events.filter((e) => e.client.address === '127.0.0.2');
  const endedAt = lastFloodEventAt(floodEvents);
  const served = floodEvents.filter((e) => e.outcome !== 'refused');
  await server.close();
  await Promise.all(flood.map((s) => new Promise<void>((r) => s.close(() => r()))));
  // Summarise the probe as runs: "ERROR x 30 s, then DATA".
  const runs: string[] = [];
  for (const a of probeAnswers) {
    const last = runs.at(-1);
    if (last?.startsWith(a + ' x')) runs[runs.length - 1] = `${a} x${Number(last.split(' x').at(-1)) + 1}`;
    else runs.push(`${a} x1`);
  }
  return {
    label,
    requestBytes: req.length,
    packetsBack,
    bytesBack,
    lastPacketAfterMs: Math.round(lastPacketAt),
    lastTransferEndedAfterMs: Math.round(endedAt),
    admitted: served.length,
    refused,
    sentPerAdmitted: served.length ? served.reduce((a, e) => a + e.sentBytes, 0) / served.length : 0,
    outcomes: [...new Set(served.map((e) => e.error ?? e.outcome))].join('; '),
    probe: runs.join(', '),
  };
}

const tmp = await makeTempDir('tftp-amp');
try {
  const root = join(tmp.dir, 'root');
  await (await import('node:fs/promises')).mkdir(root);
  await writeFile(join(root, FILE), Buffer.alloc(64 * 1024, 0x5a));
  const oack = { blksize: '1432', tsize: '0' };
  // The last row lifts the per-client limit to show what the retransmission budget alone does.
  const rows: Array<[string, Record<string, string>, Partial<TftpServerOptions>]> = [
    ['no options (DATA 1 first)', {}, {}],
    ['blksize 1432 tsize 0 (OACK first)', oack, {}],
    ['no options, maxTransfersPerClient 256', {}, { maxTransfersPerClient: 256 }],
  ];
  for (const [label, opts, serverOpts] of rows) {
    const r = await measure(label, opts, root, serverOpts);
    const perReq = r.bytesBack / N;
    process.stdout.write(
      `${r.label}: ${N} RRQs of ${r.requestBytes} bytes -> ${r.packetsBack} packets, ${r.bytesBack} bytes back ` +
        `(${(r.packetsBack / N).toFixed(2)} packets, ${perReq.toFixed(0)} bytes per RRQ, ${(perReq / r.requestBytes).toFixed(1)}x); ` +
        `last packet after ${r.lastPacketAfterMs} ms; last flooded transfer ended after ${r.lastTransferEndedAfterMs} ms; ` +
        `probe from 127.0.0.1, one RRQ a second: ${r.probe}\n` +
        `  admitted ${r.admitted}, dropped by a limit ${r.refused} (the rest never reached the server: its socket buffer overflowed); ` +
        `each admitted transfer sent ${r.sentPerAdmitted.toFixed(0)} bytes (${(r.sentPerAdmitted / r.requestBytes).toFixed(1)}x its request) and ended with: ${r.outcomes}\n`,
    );
  }
} finally {
  await tmp.cleanup();
}
