/**
 * Loss, duplication and reordering: every transfer completes with the right sha256 at windowsize 1, 4
 * and 16. Two impairment paths:
 *  - kernel: a network namespace made here (unshare) whose loopback drops 5% of UDP packets and
 *    duplicates 5% (iptables statistic DROP / TEE); `tc netem` is used instead when the kernel has it.
 *  - relay: a seeded userspace relay between client and server: 5% loss, 5% duplication, 10% reordered,
 *    each direction (runs without root, and gives reordering, which iptables cannot).
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '../../common/log.js';
import { needExecutables, requirements } from '../../test/lib/requirements.js';
import { startTftpServer, type TftpTransferEvent } from './server.js';
import { ImpairRelay } from '../../test/tftp/impair-relay.js';
import {
  CLIENT_TOOLS,
  LOSS_CELLS,
  makeLossFiles,
  runCells,
  type CellResult,
} from '../../test/tftp/support.js';
import { makeTempDir } from '../../test/lib/temp-dir.js';

const CLIENTS = Object.values(CLIENT_TOOLS);
/** The largest (bytes sent - file size) / file size over the ok transfers: what loss cost in resends. */
function worstResendRatio(events: readonly TftpTransferEvent[]): string {
  const worst = events.filter((e) => e.outcome === 'ok' && e.bytes > 0).reduce((w, e) => Math.max(w, (e.sentBytes - e.bytes) / e.bytes), 0);
  return worst.toFixed(2);
}
const retried = (r: CellResult): string => (r.attempts > 1 ? `, attempt ${r.attempts}: atftp aborted on a network-duplicated OACK before` : '');

t.test('userspace relay: 5% loss, 5% duplication, 10% reordering each way', async (t) => {
  if (!needExecutables(t, CLIENTS)) return;
  const tmp = await makeTempDir('tftp-loss');
  t.teardown(tmp.cleanup);
  const { root, out, want } = await makeLossFiles(tmp.dir);
  const events: TftpTransferEvent[] = [];
  const server = await startTftpServer({ host: '127.0.0.1', port: 0, root, logger: silentLogger(), onTransfer: (e) => events.push(e) });
  t.teardown(() => server.close());
  const relay = await ImpairRelay.start('127.0.0.1', server.address().port, { loss: 0.05, duplicate: 0.05, reorder: 0.1, reorderDelayMs: 3, seed: 2026 });
  t.teardown(() => relay.close());
  const results = await runCells('127.0.0.1', relay.port, LOSS_CELLS, want, out, 120_000, true);
  for (const r of results) t.ok(r.ok, `${r.label}: sha256 matches (${r.ms} ms${retried(r)})`, { exit: r.exit, stderr: r.stderr });
  t.comment(`relay: ${JSON.stringify(relay.stats)}`);
  t.ok(relay.stats.dropped > 50 && relay.stats.duplicated > 50 && relay.stats.reordered > 50, 'the relay really impaired the traffic');
  t.comment(`worst resend ratio (bytes resent / file size): ${worstResendRatio(events)}`);
  const retrans = events.reduce((a, e) => a + e.retransmits, 0);
  t.ok(retrans > 0, `server recovered by retransmitting (${retrans} blocks)`);
});

const RUNNER = fileURLToPath(new URL('../../test/tftp/loss-netns-runner.ts', import.meta.url));

t.test('kernel impairment in a network namespace: 5% loss + 5% duplication on loopback', async (t) => {
  if (!requirements(t, ['root', 'unshare', 'ip'])) return;
  if (!needExecutables(t, [...CLIENTS, { exe: 'iptables', pkg: 'iptables' }])) return;
  const child = spawn('unshare', ['--net', '--pid', '--fork', '--kill-child', '--mount-proc', process.execPath, '--import', 'tsx', RUNNER], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearTimeout(timer);
  t.equal(code, 0, 'runner exited cleanly', { stderr: stderr.slice(-3000) });
  const line = stdout.trim().split('\n').at(-1) ?? '';
  let report: { impairment: string; results: CellResult[]; counters: string; retransmits: number; worstResendRatio: string } | undefined;
  try {
    report = JSON.parse(line) as typeof report;
  } catch {
    t.fail('runner printed no JSON report', { stdout: stdout.slice(-2000), stderr: stderr.slice(-2000) });
    return;
  }
  if (!report) return;
  t.comment(`impairment: ${report.impairment}`);
  t.comment(report.counters);
  t.comment(`worst resend ratio (bytes resent / file size): ${report.worstResendRatio}`);
  for (const r of report.results) t.ok(r.ok, `${r.label}: sha256 matches (${r.ms} ms${retried(r)})`, { exit: r.exit, stderr: r.stderr });
  t.ok(report.retransmits > 0, `server recovered by retransmitting (${report.retransmits} blocks)`);
});
