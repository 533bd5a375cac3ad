import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { loadConfig, type ServeFlags } from '../../server/config.js';
import { createLogger } from '../../common/log.js';
import { startRamboot, type Ramboot } from '../../server/serve.js';
import type { LogLine } from './log-line.js';
import type { Teardown } from './teardown.js';


/** A real ramboot server in this process, on 127.0.0.1:0, with its JSON log lines captured. */
export class TestServer {
  logs: LogLine[] = [];
  rb!: Ramboot;
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];

  constructor(
    readonly dataDir: string,
    private readonly flags: ServeFlags,
  ) {}

  get url(): string {
    return this.rb.httpUrl;
  }
  get token(): string {
    return this.rb.apiToken;
  }

  async start(): Promise<void> {
    const sink = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        for (const line of chunk.toString('utf8').split('\n')) {
          if (!line) continue;
          const l = JSON.parse(line) as LogLine;
          this.logs.push(l);
          this.waiters = this.waiters.filter((w) => (w.pred(l) ? (w.resolve(l), false) : true));
        }
        cb();
      },
    });
    const config = loadConfig({ dataDir: this.dataDir, httpListen: '127.0.0.1:0', tftp: false, logLevel: 'debug', ...this.flags }, {}, false);
    this.rb = await startRamboot(config, createLogger({ level: 'debug', destination: sink }));
  }

  async stop(): Promise<void> {
    await this.rb.close();
  }

  /** Resolves on the first log line (past or future) matching pred. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 30_000): Promise<LogLine> {
    const hit = this.logs.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching log line within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({ pred, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  }

  async api(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: unknown; text: string; headers: Headers }> {
    const init: RequestInit = { method, headers: { authorization: `Bearer ${this.token}`, ...headers } };
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
    }
    const res = await fetch(`${this.url}${path}`, init);
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text, headers: res.headers };
  }
}

export async function startTestServer(t: Pick<Teardown, 'teardown'>, flags: ServeFlags = {}, dataDir?: string): Promise<TestServer> {
  const dir = dataDir ?? (await mkdtemp(join(tmpdir(), 'ramboot-srv-')));
  const s = new TestServer(dir, { publicUrl: 'http://ramboot.test:8080', ...flags });
  await s.start();
  t.teardown(async () => {
    await s.stop().catch(() => undefined);
    if (!dataDir) await rm(dir, { recursive: true, force: true });
  });
  return s;
}

/** A fake (not bootable) image with random file contents, for HTTP tests. */
export async function writeFakeImage(dataDir: string, name: string, opts: { minRamMiB?: number; initrdBytes?: number } = {}): Promise<{ files: Record<string, Buffer> }> {
  const dir = join(dataDir, 'images', name);
  await mkdir(dir, { recursive: true });
  const files: Record<string, Buffer> = { vmlinuz: randomBytes(64 * 1024), 'initrd.img': randomBytes(opts.initrdBytes ?? 1024 * 1024) };
  const entries: Record<string, { sha256: string; size: number }> = {};
  for (const [f, data] of Object.entries(files)) {
    await writeFile(join(dir, f), data);
    entries[f] = { sha256: createHash('sha256').update(data).digest('hex'), size: data.length };
  }
  await writeFile(join(dir, 'secret.txt'), 'not listed in the manifest');
  await writeFile(
    join(dir, 'manifest.json'),
    JSON.stringify({ schema: 1, name, kernel: 'vmlinuz', initrd: ['initrd.img'], files: entries, cmdline: 'console=ttyS0,115200', minRamMiB: opts.minRamMiB ?? 512 }),
  );
  return { files };
}
