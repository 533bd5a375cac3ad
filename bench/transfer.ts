/**
 * Transfer benchmark (issue 11): `ramboot transfer` (live) against a bare `rsync -aHAX --numeric-ids`
 * run by hand between the same two VMs, in the same run, on the same data:
 *
 *   the source VM of test/lib/source-disk.ts (Debian 12 on /, a /home) plus a generated tree in
 *   /srv/bench: RAMBOOT_BENCH_TRANSFER_SMALL files of 4 KiB (default 10000), 1000 of 64 KiB and
 *   6 of 32 MiB (random data), so both files/s and MB/s mean something.
 *
 *   bare: the target (booted into ramboot) gets a GPT with two ext4 partitions mounted at
 *   /mnt/bench and /mnt/bench/home; the source runs, per filesystem,
 *   `rsync -aHAX --numeric-ids --one-file-system --stats -e "ssh ..." / root@TARGET:/mnt/bench/`
 *   (and /home/), timed around the rsync commands only.
 *   ramboot: `ramboot transfer --from root@SOURCE --to TARGET --after stay --json`; its copy time
 *   (copySeconds of the JSON result) is compared, and its wall time reported beside.
 *
 * Rounds alternate bare, ramboot, bare, ... (RAMBOOT_BENCH_TRANSFER_ROUNDS, default 3); the source's
 * page cache is dropped before each. Runs in the namespace lab of test/lib/transfer-vms.ts (root).
 */
import { loadavg } from 'node:os';
import { readFile } from 'node:fs/promises';
import { createLab, SOURCE_IP, TARGET_IP, TARGET_MAC, TARGET_SERIAL } from '../test/lib/transfer-vms.js';
import { BenchScope } from './scope.js';
import { machineLine, median, progress } from './lib.js';

interface Run {
  kind: 'bare' | 'ramboot';
  bytes: number;
  files: number;
  seconds: number;
  wallSeconds: number;
  load: number;
}

/** Sums "Number of files: N" and "Total file size: B" over rsync --stats outputs. */
export function parseRsyncStats(out: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const m of out.matchAll(/^Number of files: ([\d,.]+)/gm)) files += Number((m[1] ?? '0').replace(/[,.]/g, ''));
  for (const m of out.matchAll(/^Total file size: ([\d,.]+) bytes/gm)) bytes += Number((m[1] ?? '0').replace(/[,.]/g, ''));
  return { files, bytes };
}

const GENERATE = (small: number) => [
  'set -eu',
  'mkdir -p /srv/bench/small /srv/bench/medium /srv/bench/large',
  `cd /srv/bench/small && head -c ${small * 4096} /dev/urandom | split -b 4096 -a 6 - s`,
  'cd /srv/bench/medium && head -c $((1000 * 65536)) /dev/urandom | split -b 65536 -a 4 - m',
  'cd /srv/bench/large && for i in 1 2 3 4 5 6; do head -c 32M /dev/urandom > big$i; done',
  'sync',
  'du -sb /srv/bench | cut -f1; find /srv/bench -type f | wc -l',
].join('\n');

/** Target side of the bare run: a fresh GPT with / and /home filesystems, mounted under /mnt/bench. */
const PREPARE_TARGET = [
  'set -eu',
  'umount -R /mnt/bench 2>/dev/null || true; umount -R /mnt/ramboot-transfer 2>/dev/null || true',
  `dev=$(readlink -f /dev/disk/by-id/virtio-${TARGET_SERIAL})`,
  'wipefs -qa "$dev"; sgdisk -Z "$dev" >/dev/null 2>&1 || true',
  'sgdisk -n 1:2048:+1M -t 1:ef02 -n 2:0:+2600M -t 2:8300 -n 3:0:+800M -t 3:8300 "$dev" >/dev/null',
  'partprobe "$dev" 2>/dev/null || blockdev --rereadpt "$dev" || true; udevadm settle || true',
  // the partition nodes (not the by-id links, which udev makes later) are what mkfs needs
  'i=0; while ! [ -b "${dev}2" ] || ! [ -b "${dev}3" ]; do i=$((i + 1)); [ $i -lt 300 ] || exit 1; sleep 0.2; done',
  'mkfs.ext4 -qF "${dev}2"; mkfs.ext4 -qF "${dev}3"',
  'mkdir -p /mnt/bench && mount "${dev}2" /mnt/bench && mkdir -p /mnt/bench/home && mount "${dev}3" /mnt/bench/home',
].join('\n');

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export async function runTransferBench(): Promise<string> {
  const rounds = Math.max(2, Number(process.env['RAMBOOT_BENCH_TRANSFER_ROUNDS'] ?? 3) || 3);
  const small = Math.max(100, Number(process.env['RAMBOOT_BENCH_TRANSFER_SMALL'] ?? 10000) || 10000);
  const scope = new BenchScope();
  const runs: Run[] = [];
  const failures: string[] = [];
  const started = new Date();
  let dataLine = '';
  try {
    const lab = await createLab(scope, { name: 'bench', progress });
    progress('booting the source (its disk) and the target (ramboot)');
    const [src, tgt] = await Promise.all([lab.bootSource('bench-source'), lab.bootTargetRamboot('bench-target')]);
    progress(`source up in ${src.seconds.toFixed(0)} s, target in ${tgt.seconds.toFixed(0)} s; generating /srv/bench`);
    const gen = (await lab.sshOk(SOURCE_IP, GENERATE(small), lab.knownHosts, 1_800_000)).trim().split('\n');
    dataLine = `generated /srv/bench: ${gen[0]} bytes in ${gen[1]} files`;
    progress(dataLine);
    // The bare run logs in to the target with the test key (registered for the machine) from the
    // source, verifying the target's registry host keys.
    const kh = await readFile(tgt.knownHosts, 'utf8');
    await lab.sshOk(SOURCE_IP, `umask 077; mkdir -p /root/bench-ssh && printf '%s\\n' ${shq(kh.trim())} > /root/bench-ssh/known_hosts`, lab.knownHosts);
    await lab.ns.run(['scp', ...lab.sshArgs(lab.knownHosts), lab.key, `root@${SOURCE_IP}:/root/bench-ssh/key`]);
    const e = 'ssh -i /root/bench-ssh/key -o IdentitiesOnly=yes -o UserKnownHostsFile=/root/bench-ssh/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -o Compression=no -x';
    for (let i = 0; i < rounds; i++) {
      await lab.sshOk(SOURCE_IP, 'sync; echo 3 > /proc/sys/vm/drop_caches', lab.knownHosts);
      const load = loadavg()[0] ?? 0;
      if (i % 2 === 0) {
        progress(`round ${i + 1}: bare rsync`);
        await lab.sshOk(TARGET_IP, PREPARE_TARGET, tgt.knownHosts, 600_000);
        const t0 = Date.now();
        const out = await lab.sshOk(SOURCE_IP, [
          'set -e',
          `rsync -aHAX --numeric-ids --one-file-system --stats -e ${shq(e)} / root@${TARGET_IP}:/mnt/bench/`,
          `rsync -aHAX --numeric-ids --one-file-system --stats -e ${shq(e)} /home/ root@${TARGET_IP}:/mnt/bench/home/`,
        ].join('\n'), lab.knownHosts, 3_600_000);
        const seconds = (Date.now() - t0) / 1000;
        const s = parseRsyncStats(out);
        runs.push({ kind: 'bare', ...s, seconds, wallSeconds: seconds, load });
        await lab.sshOk(TARGET_IP, 'umount -R /mnt/bench', tgt.knownHosts);
      } else {
        progress(`round ${i + 1}: ramboot transfer`);
        // the previous ramboot round set the machine to local; it is still in the RAM OS
        await lab.srv.api('PATCH', `/api/v1/machines/${TARGET_MAC}`, { boot: 'once' });
        const t0 = Date.now();
        const r = await lab.cli(['transfer', '--from', `root@${SOURCE_IP}`, '--to', TARGET_MAC, '--ssh-config', lab.sshConfig, '--disk', `/dev/disk/by-id/virtio-${TARGET_SERIAL}`, '--after', 'stay', '--json'], 3_600_000);
        const wallSeconds = (Date.now() - t0) / 1000;
        if (r.code !== 0) {
          failures.push(`round ${i + 1}: ramboot transfer exited ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
          progress(failures[failures.length - 1] ?? '');
          continue;
        }
        const res = JSON.parse(r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).at(-1) ?? '{}') as { bytes?: number; files?: number; copySeconds?: number };
        runs.push({ kind: 'ramboot', bytes: res.bytes ?? 0, files: res.files ?? 0, seconds: res.copySeconds ?? wallSeconds, wallSeconds, load });
      }
      const last = runs[runs.length - 1]!;
      progress(`${last.kind}: ${(last.bytes / 1e6).toFixed(0)} MB, ${last.files} files in ${last.seconds.toFixed(1)} s (wall ${last.wallSeconds.toFixed(1)} s) = ${(last.bytes / 1e6 / last.seconds).toFixed(1)} MB/s, ${(last.files / last.seconds).toFixed(0)} files/s`);
    }
  } finally {
    await scope.close();
  }
  return report(runs, dataLine, started, failures);
}

function report(runs: Run[], dataLine: string, started: Date, failures: string[]): string {
  const rows = runs.map((r, i) => `| ${i + 1} | ${r.kind} | ${(r.bytes / 1e6).toFixed(0)} | ${r.files} | ${r.seconds.toFixed(1)} | ${r.wallSeconds.toFixed(1)} | ${(r.bytes / 1e6 / r.seconds).toFixed(1)} | ${(r.files / r.seconds).toFixed(0)} | ${r.load.toFixed(1)} |`);
  const mbps = (k: Run['kind']) => median(runs.filter((r) => r.kind === k).map((r) => r.bytes / 1e6 / r.seconds));
  const fps = (k: Run['kind']) => median(runs.filter((r) => r.kind === k).map((r) => r.files / r.seconds));
  const ratio = mbps('ramboot') / mbps('bare');
  const fratio = fps('ramboot') / fps('bare');
  const text = [
    `Run ${started.toISOString()} on ${machineLine()}; ${dataLine}.`,
    '',
    '| round | what | MB | files | copy s | wall s | MB/s | files/s | load (1 min) |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    `Median: ramboot ${mbps('ramboot').toFixed(1)} MB/s, ${fps('ramboot').toFixed(0)} files/s; bare rsync ${mbps('bare').toFixed(1)} MB/s, ${fps('bare').toFixed(0)} files/s.`,
    `Ratio ramboot/bare: ${ratio.toFixed(2)}x MB/s, ${fratio.toFixed(2)}x files/s (goal >= 0.9x): ${ratio >= 0.9 ? 'met' : 'NOT met'}.`,
    ...(failures.length ? ['', 'Failed rounds:', ...failures.map((f) => `- ${f}`)] : []),
    '',
  ].join('\n');
  return text;
}
