/**
 * HTTP benchmarks (issue "netboot HTTP server"):
 *  1. per-MAC iPXE script requests/s and p99 with 10,000 registered machines (autocannon);
 *  2. streaming a 200 MiB initrd to 1 and 50 concurrent clients, ramboot vs nginx on loopback.
 * The server under test runs in its own process; the load generator is this process (+ curl).
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { runOk } from '../common/run.js';
import { freePort } from '../test/lib/free-port.js';
import { machineLine, median, progress, startProcess, stopProcess } from './lib.js';

const REPO = new URL('../', import.meta.url).pathname;
const MACHINES = 10_000;
const FILE_MIB = 200;

function macOf(i: number): string {
  const h = (0x020000000000 + i).toString(16).padStart(12, '0');
  return h.match(/../g)!.join(':');
}

async function writeDataDir(dir: string): Promise<void> {
  await mkdir(join(dir, 'machines'), { recursive: true });
  await mkdir(join(dir, 'images', 'default'), { recursive: true });
  const key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbvL8ighYfs//yjv8WiwyMRXYzjUB//TJzEvlr+OWle bench';
  const now = new Date().toISOString();
  for (let i = 0; i < MACHINES; i++) {
    const mac = macOf(i);
    const rec = { mac, hostname: `node${i}`, sshKeys: [key], boot: i % 2 ? 'ramboot' : 'once', image: 'default', kernelArgs: '', userData: {}, discovered: false, createdAt: now, updatedAt: now, revision: 1 };
    await writeFile(join(dir, 'machines', `${mac.replaceAll(':', '-')}.json`), JSON.stringify(rec));
  }
  progress(`wrote ${MACHINES} machine files`);
  // a 200 MiB initrd (random: incompressible) + small kernel
  const initrd = join(dir, 'images', 'default', 'initrd.img');
  const hash = createHash('sha256');
  await new Promise<void>((resolve, reject) => {
    const ws = createWriteStream(initrd);
    ws.on('error', reject);
    let left = FILE_MIB;
    const chunk = randomBytes(1 << 20);
    const write = () => {
      while (left > 0) {
        left--;
        chunk.writeUInt32LE(left, 0);
        hash.update(chunk);
        if (!ws.write(chunk)) return void ws.once('drain', write);
      }
      ws.end(resolve);
    };
    write();
  });
  const kernel = randomBytes(8 << 20);
  await writeFile(join(dir, 'images', 'default', 'vmlinuz'), kernel);
  const manifest = {
    schema: 1, name: 'default', kernel: 'vmlinuz', initrd: ['initrd.img'],
    files: { vmlinuz: { sha256: createHash('sha256').update(kernel).digest('hex'), size: kernel.length }, 'initrd.img': { sha256: hash.digest('hex'), size: FILE_MIB << 20 } },
    cmdline: 'console=ttyS0,115200', minRamMiB: 512,
  };
  await writeFile(join(dir, 'images', 'default', 'manifest.json'), JSON.stringify(manifest));
}

async function scriptBench(url: string): Promise<autocannon.Result> {
  let n = 0;
  return autocannon({
    url,
    connections: 50,
    duration: 15,
    requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/ipxe?mac=${macOf(n++ % MACHINES)}&platform=pcbios&buildarch=x86_64&memsize=4096` }) }],
  });
}

/** Download `url` with `clients` concurrent curl processes; aggregate MiB/s (total bytes / wall time). */
async function streamBench(url: string, clients: number): Promise<number> {
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      const { stdout } = await runOk('curl', ['-sf', '-o', '/dev/null', '-w', '%{size_download}', url]);
      if (Number(stdout) !== FILE_MIB << 20) throw new Error(`short download from ${url}: ${stdout} bytes`);
    }),
  );
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  return (clients * FILE_MIB) / secs;
}

async function startNginx(root: string, port: number, work: string) {
  const conf = join(work, 'nginx.conf');
  await writeFile(
    conf,
    `${process.getuid?.() === 0 ? "user root; " : ""}daemon off; worker_processes auto; pid ${work}/nginx.pid; error_log ${work}/nginx-error.log;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; client_body_temp_path ${work}/tmp; proxy_temp_path ${work}/tmp;
  fastcgi_temp_path ${work}/tmp; uwsgi_temp_path ${work}/tmp; scgi_temp_path ${work}/tmp;
  server { listen 127.0.0.1:${port}; root ${root}; } }\n`,
  );
  await mkdir(join(work, 'tmp'), { recursive: true });
  const p = spawn('nginx', ['-c', conf, '-p', work], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/vmlinuz`, { method: 'HEAD' });
      if (r.ok) return p;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  p.kill('SIGKILL');
  throw new Error('nginx did not start');
}

export async function runHttpBench(): Promise<string> {
  const work = await mkdtemp(join(tmpdir(), 'ramboot-bench-'));
  try {
    progress(`preparing ${MACHINES} machines and a ${FILE_MIB} MiB initrd in ${work}`);
    await writeDataDir(join(work, 'data'));
    const port = await freePort();
    const t0 = Date.now();
    const server = await startProcess(
      'node',
      [join(REPO, 'bin/ramboot.js'), 'serve', '--data-dir', join(work, 'data'), '--http-listen', `127.0.0.1:${port}`, '--public-url', `http://127.0.0.1:${port}`, '--no-tftp'],
      /"event":"http.listening"/,
      { cwd: REPO },
    );
    const startMs = Date.now() - t0;
    const rss = Number((await runOk('ps', ['-o', 'rss=', '-p', String(server.pid)])).stdout.trim()) / 1024;
    progress(`ramboot up with ${MACHINES} machines in ${startMs} ms, RSS ${rss.toFixed(0)} MiB`);
    let out = '';
    try {
      progress('per-MAC script load: 50 connections, 15 s');
      const s = await scriptBench(`http://127.0.0.1:${port}`);
      progress('streaming 200 MiB from ramboot: 1 client (x3), 50 clients');
      const url = `http://127.0.0.1:${port}/images/default/initrd.img`;
      const nginxPort = await freePort();
      const nginx = await startNginx(join(work, 'data', 'images', 'default'), nginxPort, work);
      const nurl = `http://127.0.0.1:${nginxPort}/initrd.img`;
      const r1: number[] = [];
      const n1: number[] = [];
      for (let i = 0; i < 3; i++) {
        r1.push(await streamBench(url, 1));
        n1.push(await streamBench(nurl, 1));
      }
      const r50 = await streamBench(url, 50);
      const n50 = await streamBench(nurl, 50);
      await stopProcess(nginx);
      out += `### HTTP: per-MAC iPXE scripts (${MACHINES} registered machines)\n\n`;
      out += `Server start with ${MACHINES} machine files: ${startMs} ms (includes Node/tsx start), RSS after start ${rss.toFixed(0)} MiB.\n\n`;
      out += `| connections | requests | errors/non-2xx | req/s (mean) | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|\n`;
      out += `| 50 | ${s.requests.total} | ${s.errors}/${s.non2xx} | ${s.requests.average.toFixed(0)} | ${s.latency.p50} | ${s.latency.p99} | ${s.latency.max} |\n\n`;
      out += `Every request renders (or takes from cache) a ramboot script, mints a boot session token and appends a timeline event.\n\n`;
      out += `### HTTP: streaming a ${FILE_MIB} MiB initrd, ramboot vs nginx (same file, same run, loopback)\n\n`;
      out += `| clients | ramboot MiB/s | nginx MiB/s | ratio |\n|---|---|---|---|\n`;
      out += `| 1 (median of 3) | ${median(r1).toFixed(0)} | ${median(n1).toFixed(0)} | ${(median(r1) / median(n1)).toFixed(2)}x |\n`;
      out += `| 50 (aggregate) | ${r50.toFixed(0)} | ${n50.toFixed(0)} | ${(r50 / n50).toFixed(2)}x |\n\n`;
      out += `Clients are \`curl -o /dev/null\` processes on the same 2-core machine, so client CPU competes with the server.\n`;
    } finally {
      await stopProcess(server);
    }
    return out;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export { machineLine };
