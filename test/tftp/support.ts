/** Shared pieces of the TFTP tests: fixture files, real client command lines, sha256, requirements. */
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findExecutable, isCI, type RequirementTest } from '../lib/requirements.js';

export interface Fixture {
  path: string;
  sha256: string;
  size: number;
}

/** Writes `size` random bytes to `dir/name` and returns its sha256. */
export async function makeRandomFile(dir: string, name: string, size: number): Promise<Fixture> {
  const path = join(dir, name);
  const h = createHash('sha256');
  const f = await open(path, 'w', 0o644);
  try {
    const chunk = 1 << 20;
    for (let off = 0; off < size; off += chunk) {
      const b = randomBytes(Math.min(chunk, size - off));
      h.update(b);
      await f.write(b);
    }
  } finally {
    await f.close();
  }
  return { path, sha256: h.digest('hex'), size };
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('error', reject)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')));
  });
}

export interface ClientRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a client without a shell; never rejects (the caller checks the file it wrote). */
export function runClient(argv: readonly string[], timeoutMs: number): Promise<ClientRun> {
  const [cmd, ...args] = argv;
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(cmd as string, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr).slice(-4000), ms: Date.now() - started });
    });
  });
}

export type ClientName = 'tftp-hpa' | 'atftp' | 'busybox' | 'curl';

export interface Fetch {
  client: ClientName;
  host: string;
  port: number;
  remote: string;
  local: string;
  blksize?: number;
  windowsize?: number;
  /** tftp-hpa only: 'binary' (default) or 'netascii'. */
  mode?: 'binary' | 'netascii';
  /** atftp only: its retransmission timeout in seconds (default 5). */
  clientTimeoutSec?: number;
}

/** The command line that makes `client` fetch `remote` into `local`. */
export function clientArgv(f: Fetch): string[] {
  const port = String(f.port);
  switch (f.client) {
    case 'tftp-hpa':
      return ['tftp', '-m', f.mode ?? 'binary', f.host, port, '-c', 'get', f.remote, f.local];
    case 'atftp': {
      const opts: string[] = [];
      if (f.blksize) opts.push('--option', `blksize ${f.blksize}`);
      if (f.windowsize) opts.push('--option', `windowsize ${f.windowsize}`);
      if (f.clientTimeoutSec) opts.push('--tftp-timeout', String(f.clientTimeoutSec));
      return ['atftp', ...opts, '-g', '-r', f.remote, '-l', f.local, f.host, port];
    }
    case 'busybox':
      return ['busybox', 'tftp', ...(f.blksize ? ['-b', String(f.blksize)] : []), '-g', '-r', f.remote, '-l', f.local, f.host, port];
    case 'curl':
      return ['curl', '-sS', '--fail', ...(f.blksize ? ['--tftp-blksize', String(f.blksize)] : []), '-o', f.local, `tftp://${f.host}:${port}/${f.remote}`];
  }
}

export const CLIENT_TOOLS: Record<ClientName, { exe: string; pkg: string }> = {
  'tftp-hpa': { exe: 'tftp', pkg: 'tftp-hpa' },
  atftp: { exe: 'atftp', pkg: 'atftp' },
  busybox: { exe: 'busybox', pkg: 'busybox-static' },
  curl: { exe: 'curl', pkg: 'curl' },
};

/** Like test/lib/requirements for executables: skip loudly outside CI, fail under CI=true. */
export interface Cell {
  client: ClientName;
  remote: string;
  blksize?: number;
  windowsize?: number;
  clientTimeoutSec?: number;
}

export interface CellResult {
  label: string;
  ok: boolean;
  ms: number;
  exit: number | null;
  stderr: string;
  /** Runs needed (>1 only after atftp aborted on a duplicated OACK, see ATFTP_DUP_OACK). */
  attempts: number;
}

/**
 * atftp aborts with "unexpected OACK" when the network hands it the OACK twice (RFC 2347 wants a
 * duplicate ignored or re-ACKed). No server can prevent a network duplicate, so under impairment such a
 * run is repeated (at most twice more) and the attempt count is reported.
 */
export const ATFTP_DUP_OACK = /unexpected OACK/;

export function cellLabel(c: Cell): string {
  return `${c.client} ${c.remote}${c.blksize ? ` blksize ${c.blksize}` : ''}${c.windowsize ? ` windowsize ${c.windowsize}` : ''}`;
}

/**
 * Runs each cell's client against host:port, one after another, and checks sha256 against `want`.
 * With `retryDupOack`, an atftp run that died on a duplicated OACK is repeated (at most twice more).
 */
export async function runCells(
  host: string, port: number, cells: readonly Cell[], want: Record<string, string>, outDir: string, timeoutMs: number,
  retryDupOack = false,
): Promise<CellResult[]> {
  const results: CellResult[] = [];
  let n = 0;
  for (const c of cells) {
    for (let attempt = 1; ; attempt++) {
      const local = join(outDir, `${n++}-${c.remote}`);
      const r = await runClient(clientArgv({ ...c, host, port, local }), timeoutMs);
      const got = await sha256File(local).catch(() => 'missing');
      const ok = got === want[c.remote];
      if (!ok && retryDupOack && c.client === 'atftp' && ATFTP_DUP_OACK.test(r.stderr) && attempt < 3) continue;
      results.push({ label: cellLabel(c), ok, ms: r.ms, exit: r.code, stderr: r.stderr.slice(-500), attempts: attempt });
      break;
    }
  }
  return results;
}

/** The transfers every loss scenario runs: windowsize 1/4/16 with atftp, plus the plain clients. */
// atftp ignores repeated duplicates until its own timer fires (see server.ts maxRtoMs), so when both its
// ACK and its one "extra" ACK are lost it waits out its timeout: 1 s here instead of 5 keeps the test short.
export const LOSS_CELLS: readonly Cell[] = [
  { client: 'atftp', remote: 'mid.bin', blksize: 1468, windowsize: 1, clientTimeoutSec: 1 },
  { client: 'atftp', remote: 'mid.bin', blksize: 1468, windowsize: 4, clientTimeoutSec: 1 },
  { client: 'atftp', remote: 'mid.bin', blksize: 1468, windowsize: 16, clientTimeoutSec: 1 },
  { client: 'atftp', remote: 'mid.bin', blksize: 512, windowsize: 16, clientTimeoutSec: 1 },
  { client: 'atftp', remote: 'mid.bin', blksize: 8192, windowsize: 4, clientTimeoutSec: 1 },
  { client: 'tftp-hpa', remote: 'small.bin' },
  { client: 'busybox', remote: 'small.bin', blksize: 1432 },
  { client: 'curl', remote: 'small.bin', blksize: 1432 },
];
export const LOSS_FILES = { 'mid.bin': 2 * 1024 * 1024 + 3, 'small.bin': 512 * 1024 - 1 };

/** `<dir>/root` holding the LOSS_FILES (random bytes), an empty `<dir>/out`, and each file's sha256. */
export async function makeLossFiles(dir: string): Promise<{ root: string; out: string; want: Record<string, string> }> {
  const root = join(dir, 'root');
  const out = join(dir, 'out');
  await mkdir(root);
  await mkdir(out);
  const want: Record<string, string> = {};
  for (const [name, size] of Object.entries(LOSS_FILES)) want[name] = (await makeRandomFile(root, name, size)).sha256;
  return { root, out, want };
}
