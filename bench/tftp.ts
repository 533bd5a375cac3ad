/**
 * TFTP benchmark (issue "TFTP server"): the same 100 MiB file fetched by the same client (atftp) over
 * loopback from `ramboot serve` (its TFTP server, own process) and from Debian's `in.tftpd` (tftpd-hpa,
 * unpacked with apt-get download + dpkg -x into .cache/, never installed), blksize 512/1468/8192 x
 * windowsize 1/4/16, median of 5, runs interleaved so machine load hits both columns alike.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { machineLine, median, progress, startProcess, stopProcess } from './lib.js';
import { makeRandomFile, sha256File } from '../test/tftp/support.js';

const run = promisify(execFile);
const REPO = new URL('../', import.meta.url).pathname;
const CACHE = join(REPO, '.cache');
const HPA_DIR = join(CACHE, 'tftpd-hpa');
const FIXTURE_DIR = join(CACHE, 'bench-tftp');
const FILE = 'bench-100MiB.bin';
const SIZE = 100 * 1024 * 1024;
const BLKSIZES = [512, 1468, 8192];
const WINDOWS = [1, 4, 16];
const REPS = Number(process.env['RAMBOOT_BENCH_TFTP_REPS'] ?? 5);

function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** in.tftpd and the libwrap it links against, unpacked (not installed: the package starts a service). */
async function ensureTftpdHpa(): Promise<{ bin: string; libDir: string }> {
  const bin = join(HPA_DIR, 'root', 'usr', 'sbin', 'in.tftpd');
  const libDir = join(HPA_DIR, 'root', 'usr', 'lib', 'x86_64-linux-gnu');
  if (!existsSync(bin) || !existsSync(join(libDir, 'libwrap.so.0'))) {
    await mkdir(HPA_DIR, { recursive: true });
    progress('downloading tftpd-hpa and libwrap0 (apt-get download)');
    await run('apt-get', ['download', 'tftpd-hpa', 'libwrap0'], { cwd: HPA_DIR });
    for (const deb of (await readdir(HPA_DIR)).filter((f) => f.endsWith('.deb'))) {
      await run('dpkg', ['-x', join(HPA_DIR, deb), join(HPA_DIR, 'root')]);
    }
  }
  return { bin, libDir };
}

async function ensureFixture(): Promise<{ dir: string; sha256: string }> {
  await mkdir(FIXTURE_DIR, { recursive: true });
  const path = join(FIXTURE_DIR, FILE);
  const st = await stat(path).catch(() => undefined);
  if (st?.size !== SIZE) {
    progress(`writing ${FILE}`);
    await makeRandomFile(FIXTURE_DIR, FILE, SIZE);
  }
  // in.tftpd drops to user nobody after chroot: the file must be world-readable.
  await chmod(FIXTURE_DIR, 0o755);
  await chmod(path, 0o644);
  return { dir: FIXTURE_DIR, sha256: await sha256File(path) };
}

async function startRamboot(root: string, port: number, dataDir: string): Promise<ChildProcess> {
  return startProcess(
    process.execPath,
    [join(REPO, 'bin', 'ramboot.js'), 'serve', '--data-dir', dataDir, '--http-listen', '127.0.0.1:0',
      '--public-url', 'http://127.0.0.1:1/', '--tftp-listen', `127.0.0.1:${port}`, '--ipxe-dir', root],
    /"event":"tftp.listening"/,
  );
}

/** in.tftpd in the foreground on a high port; it chroots to `root` and runs as nobody. */
async function startHpa(hpa: { bin: string; libDir: string }, root: string, port: number): Promise<ChildProcess> {
  const p = spawn(hpa.bin, ['-L', '-s', root, '-u', 'nobody', '-a', `127.0.0.1:${port}`], {
    env: { ...process.env, LD_LIBRARY_PATH: hpa.libDir },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  // No readiness line: poll with a request for a missing file until an ERROR packet comes back.
  for (let i = 0; ; i++) {
    if (p.exitCode !== null) throw new Error(`in.tftpd exited with ${p.exitCode}`);
    const r = await run('atftp', ['--tftp-timeout', '1', '-g', '-r', 'no-such-file', '-l', '/dev/null', '127.0.0.1', String(port)], { timeout: 10_000 })
      .then((x) => x.stderr, (e: { stderr?: string }) => e.stderr ?? '');
    if (/error received from server/i.test(r)) break;
    if (i > 30) throw new Error('in.tftpd does not answer');
  }
  return p;
}

async function fetchOnce(port: number, blksize: number, windowsize: number, local: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  await run('atftp', ['--option', `blksize ${blksize}`, '--option', `windowsize ${windowsize}`, '-g', '-r', FILE, '-l', local, '127.0.0.1', String(port)], { timeout: 300_000 });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const st = await stat(local);
  if (st.size !== SIZE) throw new Error(`short transfer: ${st.size} bytes`);
  return s;
}

export async function runTftpBench(): Promise<string> {
  for (const exe of ['atftp', 'apt-get', 'dpkg']) {
    await run('which', [exe]).catch(() => {
      throw new Error(`${exe} is needed for the TFTP benchmark`);
    });
  }
  if (process.getuid?.() !== 0) return 'not run: in.tftpd needs root to chroot before it drops to user nobody.\n';
  const hpa = await ensureTftpdHpa();
  const fixture = await ensureFixture();
  const work = await mkdtemp(join(tmpdir(), 'ramboot-bench-tftp-'));
  const local = join(work, 'out.bin');
  const [rPort, hPort] = [await freeUdpPort(), await freeUdpPort()];
  const ramboot = await startRamboot(fixture.dir, rPort, join(work, 'data'));
  const tftpd = await startHpa(hpa, fixture.dir, hPort);
  const rows: string[] = [];
  try {
    // One checked transfer from each first: both serve the right bytes.
    for (const [name, port] of [['ramboot', rPort], ['tftpd-hpa', hPort]] as const) {
      await fetchOnce(port, 1468, 1, local);
      const got = await sha256File(local);
      if (got !== fixture.sha256) throw new Error(`${name} served wrong bytes (sha256 ${got})`);
    }
    for (const b of BLKSIZES) {
      for (const w of WINDOWS) {
        const r: number[] = [];
        const h: number[] = [];
        for (let i = 0; i < REPS; i++) {
          // alternate who goes first so drifting machine load hits both alike
          const order = i % 2 === 0 ? ['r', 'h'] : ['h', 'r'];
          for (const o of order) (o === 'r' ? r : h).push(await fetchOnce(o === 'r' ? rPort : hPort, b, w, local));
        }
        const rm_ = 100 / median(r);
        const hm = 100 / median(h);
        progress(`blksize ${b} windowsize ${w}: ramboot ${rm_.toFixed(1)} MiB/s, tftpd-hpa ${hm.toFixed(1)} MiB/s`);
        rows.push(`| ${b} | ${w} | ${rm_.toFixed(1)} | ${hm.toFixed(1)} | ${(rm_ / hm).toFixed(2)} |`);
      }
    }
  } finally {
    await stopProcess(ramboot);
    await stopProcess(tftpd);
    await rm(work, { recursive: true, force: true });
  }
  return [
    `100 MiB file, atftp client, loopback, median of ${REPS} runs per cell, runs interleaved (ramboot, tftpd-hpa`,
    'alternating first). ramboot = `ramboot serve --tftp-listen` in its own process; tftpd-hpa = Debian\'s',
    '`in.tftpd` 5.2 (`-L -s DIR -u nobody`, unpacked, not installed). Machine: ' + machineLine() + '.',
    '',
    'tftpd-hpa 5.2 does not implement RFC 7440 (windowsize): it ignores the option and runs lock-step, so its',
    'windowsize 4/16 cells are windowsize-1 transfers. ramboot caps a window at 64 KiB (blksize 8192: windowsize 8).',
    '',
    '| blksize | windowsize | ramboot MiB/s | tftpd-hpa MiB/s | ratio |',
    '|---:|---:|---:|---:|---:|',
    ...rows,
    '',
  ].join('\n');
}

// `tsx bench/tftp.ts` runs this section alone.
if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(await runTftpBench());
}
