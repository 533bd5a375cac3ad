/**
 * Runs INSIDE a fresh network namespace (started by loss.test.ts under `unshare --net --pid --fork
 * --kill-child`): impairs loopback, serves the loss fixtures, runs the loss cells, prints one JSON line.
 * Not a test on its own.
 */
import { readFile } from 'node:fs/promises';
import { silentLogger } from '../../common/log.js';
import { runOk } from '../../common/run.js';
import { makeTempDir } from '../lib/temp-dir.js';
import { startTftpServer } from '../../server/tftp/server.js';
import { LOSS_CELLS, makeLossFiles, runCells } from './support.js';


/**
 * Refuses to touch loopback outside a fresh network namespace: run directly (say, by a test runner
 * given the whole directory), the rules below would impair the host's loopback for everyone.
 */
async function assertFreshNetns(): Promise<void> {
  const dev = await readFile('/proc/self/net/dev', 'utf8');
  const ifaces = dev.split('\n').slice(2).map((l) => l.split(':')[0]?.trim() ?? '').filter(Boolean);
  if (ifaces.some((i) => i !== 'lo')) {
    throw new Error(`refusing to impair loopback: not in a fresh network namespace (interfaces: ${ifaces.join(', ')}); loss.test.ts starts this file under unshare --net`);
  }
}

async function impair(): Promise<string> {
  await assertFreshNetns();
  await runOk('ip', ['link', 'set', 'lo', 'up']);
  try {
    await runOk('tc', ['qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'loss', '5%', 'duplicate', '5%', 'reorder', '10%', 'delay', '1ms']);
    return 'tc netem loss 5% duplicate 5% reorder 10% delay 1ms';
  } catch {
    // This kernel has no sch_netem (CONFIG_NET_SCH_NETEM unset): netfilter does loss and duplication.
    await runOk('iptables', ['-A', 'INPUT', '-i', 'lo', '-p', 'udp', '-m', 'statistic', '--mode', 'random', '--probability', '0.05', '-j', 'DROP']);
    await runOk('iptables', ['-t', 'mangle', '-A', 'OUTPUT', '-o', 'lo', '-p', 'udp', '-m', 'statistic', '--mode', 'random', '--probability', '0.05', '-j', 'TEE', '--gateway', '127.0.0.1']);
    return 'iptables: 5% of UDP dropped on input, 5% duplicated (TEE) on output (no netem in this kernel)';
  }
}

async function counters(): Promise<string> {
  try {
    const a = await runOk('iptables', ['-L', 'INPUT', '-n', '-v', '-x']);
    const b = await runOk('iptables', ['-t', 'mangle', '-L', 'OUTPUT', '-n', '-v', '-x']);
    return (a.stdout + b.stdout).split('\n').filter((l) => /DROP|TEE/.test(l)).map((l) => l.trim().replace(/\s+/g, ' ')).join(' | ');
  } catch {
    const q = await runOk('tc', ['-s', 'qdisc', 'show', 'dev', 'lo']);
    return q.stdout.replace(/\s+/g, ' ');
  }
}

const impairment = await impair();
const tmp = await makeTempDir('tftp-netns');
try {
  const { root, out, want } = await makeLossFiles(tmp.dir);
  let retransmits = 0;
  let worst = 0;
  const server = await startTftpServer({
    host: '127.0.0.1', port: 0, root, logger: silentLogger(),
    onTransfer: (e) => {
      retransmits += e.retransmits;
      if (e.outcome === 'ok' && e.bytes > 0) worst = Math.max(worst, (e.sentBytes - e.bytes) / e.bytes);
    },
  });
  const results = await runCells('127.0.0.1', server.address().port, LOSS_CELLS, want, out, 120_000, true);
  await server.close();
  process.stdout.write(`${JSON.stringify({ impairment, results, counters: await counters(), retransmits, worstResendRatio: worst.toFixed(2) })}\n`);
} finally {
  await tmp.cleanup();
}
