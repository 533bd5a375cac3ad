/**
 * HTTP benchmarks (issue "netboot HTTP server"):
 *  1. per-MAC iPXE script requests/s and p99 with 10,000 registered machines (autocannon);
 *  2. streaming a 200 MiB image file and deploy artifact to 1 and 50 concurrent clients: ramboot with
 *     sendfile(2), ramboot's JS stream path and nginx (sendfile on), interleaved, on loopback.
 * The server under test runs in its own process; the load generator is this process (+ curl).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, link, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { loadavg, tmpdir } from 'node:os';
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

/** A ramboot server for the streaming comparison: its base URL, admin token and process. */
interface BenchServer {
  url: string;
  token: string;
  proc: ChildProcess;
}

async function startServer(dataDir: string, env: Record<string, string> = {}): Promise<BenchServer> {
  const port = await freePort();
  const token = randomBytes(24).toString('hex');
  const tokenFile = join(dataDir, 'bench-api-token');
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env); // startProcess passes this process's environment on
  try {
    const proc = await startProcess(
      'node',
      [join(REPO, 'bin/ramboot.js'), 'serve', '--data-dir', dataDir, '--http-listen', `127.0.0.1:${port}`, '--public-url', `http://127.0.0.1:${port}`, '--api-token-file', tokenFile, '--no-tftp'],
      /"event":"http.listening"/,
      { cwd: REPO },
    );
    return { url: `http://127.0.0.1:${port}`, token, proc };
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

async function admin(s: BenchServer, method: string, path: string, body?: unknown): Promise<unknown> {
  const r = await fetch(`${s.url}${path}`, { method, headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return r.status === 204 ? undefined : r.json();
}

/**
 * The deploy artifact as a booted machine fetches it: upload `file` as artifact `bench-disk`, name it
 * in machine `mac`'s deploy, mint a boot session (the iPXE script) and follow the deploy document's URL.
 */
async function artifactUrl(s: BenchServer, file: string, mac: string): Promise<{ url: string; sha256: string }> {
  const u = new URL(`${s.url}/api/v1/artifacts/bench-disk`);
  await new Promise<void>((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method: 'PUT', path: u.pathname, headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/octet-stream', 'content-length': String(FILE_MIB << 20) } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 201 || res.statusCode === 200 ? resolve() : reject(new Error(`artifact upload: ${res.statusCode}`))));
    });
    req.on('error', reject);
    createReadStream(file).pipe(req);
  });
  await admin(s, 'PATCH', `/api/v1/machines/${mac}`, { deploy: { artifact: 'bench-disk' } });
  const script = await (await fetch(`${s.url}/ipxe?mac=${mac}&platform=pcbios&buildarch=x86_64&memsize=4096`)).text();
  const seed = /;s=(\S+\/)/.exec(script)?.[1];
  if (!seed) throw new Error(`no seed URL in the boot script of ${mac}`);
  const doc = (await (await fetch(`${seed}deploy`)).json()) as { source: { url: string; sha256: string } };
  return { url: doc.source.url, sha256: doc.source.sha256 };
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

async function findFile(dir: string, name: string): Promise<string> {
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name === name) return join(e.parentPath, e.name);
  }
  throw new Error(`${name} not found under ${dir}`);
}

const STREAM_ROUNDS = Number(process.env.BENCH_STREAM_ROUNDS ?? 3);
type Server = 'workers' | 'inproc' | 'js' | 'nginx';
const SERVERS: Server[] = ['workers', 'inproc', 'js', 'nginx'];

/** A second ramboot server for a variant of the file path: its own small data dir with the same image and bench machine. */
async function variantServer(work: string, name: string, env: Record<string, string>): Promise<BenchServer> {
  const data = join(work, 'data');
  const dir = join(work, `data-${name}`);
  await mkdir(join(dir, 'images', 'default'), { recursive: true });
  await mkdir(join(dir, 'machines'), { recursive: true });
  for (const f of ['initrd.img', 'vmlinuz', 'manifest.json']) await link(join(data, 'images', 'default', f), join(dir, 'images', 'default', f));
  const machineFile = `${macOf(0).replaceAll(':', '-')}.json`;
  await copyFile(join(data, 'machines', machineFile), join(dir, 'machines', machineFile));
  return startServer(dir, env);
}

/**
 * Streaming: an image file and a deploy artifact (the same 200 MiB of random bytes), 1 and 50
 * concurrent curl clients, interleaved, medians, from:
 *   workers  ramboot as shipped: sendfile(2) in worker processes (N = cores)
 *   inproc   ramboot with sendfile(2) in the server process (RAMBOOT_SENDFILE_WORKERS=0)
 *   js       ramboot's JS stream path, 1 MiB reads (RAMBOOT_SENDFILE=0; what ramboot did before)
 *   nginx    Debian's nginx, sendfile on, worker_processes auto
 */
async function streamingSection(work: string, main: BenchServer): Promise<string> {
  const data = join(work, 'data');
  const initrd = join(data, 'images', 'default', 'initrd.img');
  const mac = macOf(0);
  const inproc = await variantServer(work, 'inproc', { RAMBOOT_SENDFILE_WORKERS: '0' });
  const js = await variantServer(work, 'js', { RAMBOOT_SENDFILE: '0' });
  let nginx: ChildProcess | undefined;
  try {
    progress('uploading the 200 MiB artifact to each server, minting boot sessions');
    const art = await artifactUrl(main, initrd, mac);
    const inprocArt = await artifactUrl(inproc, initrd, mac);
    const jsArt = await artifactUrl(js, initrd, mac);
    const root = join(work, 'nginx-root');
    await mkdir(root);
    await link(initrd, join(root, 'initrd.img'));
    await link(join(data, 'images', 'default', 'vmlinuz'), join(root, 'vmlinuz'));
    await link(await findFile(data, art.sha256), join(root, 'artifact.bin'));
    const nginxPort = await freePort();
    nginx = await startNginx(root, nginxPort, work);
    const nurl = `http://127.0.0.1:${nginxPort}`;
    const urls: Record<'image' | 'artifact', Record<Server, string>> = {
      image: { workers: `${main.url}/images/default/initrd.img`, inproc: `${inproc.url}/images/default/initrd.img`, js: `${js.url}/images/default/initrd.img`, nginx: `${nurl}/initrd.img` },
      artifact: { workers: art.url, inproc: inprocArt.url, js: jsArt.url, nginx: `${nurl}/artifact.bin` },
    };
    // warm-up: page cache, and the first file request starts ramboot's sendfile workers
    progress('warm-up');
    for (let i = 0; i < 2; i++) for (const f of Object.values(urls)) for (const u of Object.values(f)) await streamBench(u, 1);
    const results = new Map<string, number[]>();
    const add = (k: string, v: number) => results.set(k, [...(results.get(k) ?? []), v]);
    const loadBefore = loadavg();
    for (const clients of [1, 50]) {
      for (let round = 0; round < STREAM_ROUNDS; round++) {
        for (const file of ['image', 'artifact'] as const) {
          for (const srv of SERVERS) {
            progress(`${file}, ${clients} client(s), round ${round + 1}/${STREAM_ROUNDS}: ${srv}`);
            add(`${file}/${clients}/${srv}`, await streamBench(urls[file][srv], clients));
          }
        }
      }
    }
    const loadAfter = loadavg();
    const m = (file: string, clients: number, srv: Server) => median(results.get(`${file}/${clients}/${srv}`) ?? [0]);
    let out = `### HTTP: streaming a ${FILE_MIB} MiB file, ramboot vs nginx (same bytes, same run, loopback)\n\n`;
    out += `Median of ${STREAM_ROUNDS} interleaved runs each; MiB/s = total bytes / wall time (aggregate for 50 clients). `;
    out += `Load average (1/5/15 min) before: ${loadBefore.map((x) => x.toFixed(2)).join(' ')}, after: ${loadAfter.map((x) => x.toFixed(2)).join(' ')}.\n\n`;
    out += `| file | clients | ramboot (sendfile workers) | ramboot (sendfile, 1 process) | ramboot (JS stream) | nginx | workers / nginx | 1 process / nginx | JS / nginx |\n|---|---|---|---|---|---|---|---|---|\n`;
    for (const clients of [1, 50]) {
      for (const file of ['image', 'artifact'] as const) {
        const [w, i, j, n] = SERVERS.map((srv) => m(file, clients, srv)) as [number, number, number, number];
        out += `| ${file} | ${clients} | ${w.toFixed(0)} | ${i.toFixed(0)} | ${j.toFixed(0)} | ${n.toFixed(0)} | ${(w / n).toFixed(2)}x | ${(i / n).toFixed(2)}x | ${(j / n).toFixed(2)}x |\n`;
      }
    }
    out += `\nAll runs (MiB/s, in run order):\n\n`;
    for (const [k, v] of results) out += `- ${k}: ${v.map((x) => x.toFixed(0)).join(', ')}\n`;
    out += `\nimage = \`GET /images/default/initrd.img\`; artifact = \`GET <seed>/artifacts/bench-disk\` with the machine's live boot session token (the URL of its deploy document). `;
    out += `Clients are \`curl -o /dev/null\` processes on the same machine, so client CPU competes with the servers.\n`;
    return out;
  } finally {
    if (nginx) await stopProcess(nginx);
    await stopProcess(js.proc);
    await stopProcess(inproc.proc);
  }
}

export async function runHttpBench(): Promise<string> {
  const work = await mkdtemp(join(tmpdir(), 'ramboot-bench-'));
  try {
    progress(`preparing ${MACHINES} machines and a ${FILE_MIB} MiB initrd in ${work}`);
    await writeDataDir(join(work, 'data'));
    const t0 = Date.now();
    const server = await startServer(join(work, 'data'));
    const startMs = Date.now() - t0;
    const rss = Number((await runOk('ps', ['-o', 'rss=', '-p', String(server.proc.pid)])).stdout.trim()) / 1024;
    progress(`ramboot up with ${MACHINES} machines in ${startMs} ms, RSS ${rss.toFixed(0)} MiB`);
    let out = '';
    try {
      if (process.env.BENCH_HTTP_ONLY !== 'streaming') {
        progress('per-MAC script load: 50 connections, 15 s');
        const s = await scriptBench(server.url);
        out += `### HTTP: per-MAC iPXE scripts (${MACHINES} registered machines)\n\n`;
        out += `Server start with ${MACHINES} machine files: ${startMs} ms (includes Node/tsx start), RSS after start ${rss.toFixed(0)} MiB.\n\n`;
        out += `| connections | requests | errors/non-2xx | req/s (mean) | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|\n`;
        out += `| 50 | ${s.requests.total} | ${s.errors}/${s.non2xx} | ${s.requests.average.toFixed(0)} | ${s.latency.p50} | ${s.latency.p99} | ${s.latency.max} |\n\n`;
        out += `Every request renders (or takes from cache) a ramboot script, mints a boot session token and appends a timeline event.\n\n`;
      }
      out += await streamingSection(work, server);
    } finally {
      await stopProcess(server.proc);
    }
    return out;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export { machineLine };
