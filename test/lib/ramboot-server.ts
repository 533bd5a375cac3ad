import { randomBytes } from 'node:crypto';
import type { LogLine } from './log-line.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { ManagedProcess } from './process.js';
import { REPO_ROOT, testLogPath } from './paths.js';
import { runOk } from '../../common/run.js';
import { tieToTest } from './qemu.js';
import type { Teardown } from './teardown.js';

/**
 * The real server (`node bin/ramboot.js serve`) for end-to-end tests: started with a known admin token,
 * ready once it logs `{"event":"http.listening"}`, stopped at teardown.
 */
export interface RambootServerOptions {
  dataDir: string;
  /** Address for --http-listen (default 127.0.0.1). */
  httpHost?: string;
  /** Port for --http-listen (default: a free one; retried on EADDRINUSE). */
  httpPort?: number;
  /** --public-url, or a function of the chosen port. */
  publicUrl: string | ((port: number) => string);
  /** --tftp-listen ADDR:PORT; omitted -> --no-tftp. */
  tftpListen?: string;
  ipxeDir?: string;
  /** Extra CLI flags (test code only). */
  extraArgs?: readonly string[];
  /** e.g. netns.wrap: run the server inside a test network namespace. */
  wrap?: (argv: string[]) => string[];
  env?: NodeJS.ProcessEnv;
  name?: string;
  /** Startup timeout (default 60 s). */
  startTimeoutMs?: number;
}

export interface ApiResponse {
  status: number;
  text: string;
  /** Parsed JSON body, or undefined when the body is not JSON. */
  json: unknown;
}

export type { LogLine };

// Runs inside a namespace when the server is not reachable from the test process. Fixed script; the
// request comes in as argv, never as code.
const NS_FETCH_SCRIPT = `
const [method, url, token, body] = process.argv.slice(1);
const headers = { authorization: 'Bearer ' + token };
if (body) headers['content-type'] = 'application/json';
const r = await fetch(url, { method, headers, body: body || undefined });
process.stdout.write(JSON.stringify({ status: r.status, text: await r.text() }));
`;

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export class RambootServer {
  readonly proc: ManagedProcess;
  readonly port: number;
  readonly host: string;
  readonly publicUrl: string;
  readonly token: string;
  readonly tokenFile: string;
  private readonly wrap: ((argv: string[]) => string[]) | undefined;
  private readonly parsed: LogLine[] = [];

  constructor(p: ManagedProcess, host: string, port: number, publicUrl: string, token: string, tokenFile: string, wrap?: (argv: string[]) => string[]) {
    this.proc = p;
    this.host = host;
    this.port = port;
    this.publicUrl = publicUrl;
    this.token = token;
    this.tokenFile = tokenFile;
    this.wrap = wrap;
    for (const line of p.output().split('\n')) this.addLine(line);
    p.onLine((line) => this.addLine(line));
  }

  /** Base URL the test process uses (the listen address). */
  get url(): string {
    return `http://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
  }

  /** JSON log lines seen so far. */
  logs(): LogLine[] {
    return [...this.parsed];
  }

  /** Resolves with the first log line (from the start) for which `pred` is true. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 60_000): Promise<LogLine> {
    const hit = this.parsed.find(pred);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const off = this.proc.onLine((line) => {
        const l = parseJson(line);
        if (l && typeof l === 'object' && pred(l as LogLine)) {
          clearTimeout(timer);
          off();
          resolve(l as LogLine);
        }
      });
      const timer = setTimeout(() => {
        off();
        reject(new Error(`server: no matching log line within ${timeoutMs} ms\n${this.proc.tail(20)}`));
      }, timeoutMs);
      void this.proc.exited.then(() => {
        clearTimeout(timer);
        off();
        reject(new Error(`server exited while waiting for a log line\n${this.proc.tail(20)}`));
      });
    });
  }

  /** Admin API call with the Bearer token. `path` starts with /api/. */
  async api(method: string, path: string, body?: unknown): Promise<ApiResponse> {
    if (!path.startsWith('/')) throw new Error(`api path must start with /: ${path}`);
    const payload = body === undefined ? '' : JSON.stringify(body);
    let status: number;
    let text: string;
    if (this.wrap) {
      const [cmd = '', ...args] = this.wrap([process.execPath, '--input-type=module', '-e', NS_FETCH_SCRIPT, method, `${this.url}${path}`, this.token, payload]);
      const { stdout } = await runOk(cmd, args);
      const r = JSON.parse(stdout) as { status: number; text: string };
      status = r.status;
      text = r.text;
    } else {
      const headers: Record<string, string> = { authorization: `Bearer ${this.token}` };
      if (payload !== '') headers['content-type'] = 'application/json';
      const r = await fetch(`${this.url}${path}`, { method, headers, ...(payload !== '' ? { body: payload } : {}) });
      status = r.status;
      text = await r.text();
    }
    return { status, text, json: parseJson(text) };
  }

  tail(n = 40): string {
    return this.proc.tail(n);
  }

  async stop(): Promise<void> {
    await this.proc.stop(5000);
  }

  private addLine(line: string): void {
    if (!line.startsWith('{')) return;
    const l = parseJson(line);
    if (l && typeof l === 'object' && !Array.isArray(l)) this.parsed.push(l as LogLine);
  }
}

async function startOnce(opts: RambootServerOptions, port: number, token: string, tokenFile: string): Promise<RambootServer> {
  const host = opts.httpHost ?? '127.0.0.1';
  const publicUrl = typeof opts.publicUrl === 'function' ? opts.publicUrl(port) : opts.publicUrl;
  const args = [
    process.execPath,
    join(REPO_ROOT, 'bin', 'ramboot.js'),
    'serve',
    '--data-dir', opts.dataDir,
    '--http-listen', `${host.includes(':') ? `[${host}]` : host}:${port}`,
    '--public-url', publicUrl,
    '--api-token-file', tokenFile,
  ];
  if (opts.tftpListen !== undefined) args.push('--tftp-listen', opts.tftpListen);
  else args.push('--no-tftp');
  if (opts.ipxeDir !== undefined) args.push('--ipxe-dir', opts.ipxeDir);
  args.push(...(opts.extraArgs ?? []));
  const name = opts.name ?? 'ramboot-server';
  const proc = new ManagedProcess({
    name,
    argv: opts.wrap ? opts.wrap(args) : args,
    cwd: REPO_ROOT,
    env: opts.env ?? process.env,
    logFile: testLogPath(name),
  });
  try {
    await proc.waitFor(/"event":"http\.listening"/, {
      timeoutMs: opts.startTimeoutMs ?? 60_000,
      failOn: /"level":"fatal"|EADDRINUSE/,
      fromStart: true,
    });
  } catch (e) {
    await proc.stop(2000);
    throw e;
  }
  return new RambootServer(proc, host, port, publicUrl, token, tokenFile, opts.wrap);
}

/** Starts the server (no t: the caller stops it). */
export async function launchRambootServer(opts: RambootServerOptions): Promise<RambootServer> {
  const token = randomBytes(24).toString('hex');
  const tokenFile = join(opts.dataDir, 'test-api-token');
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  const attempts = opts.httpPort === undefined ? 3 : 1;
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    const port = opts.httpPort ?? (await freePort(opts.wrap ? '127.0.0.1' : (opts.httpHost ?? '127.0.0.1')));
    try {
      return await startOnce(opts, port, token, tokenFile);
    } catch (e) {
      last = e;
      if (!/EADDRINUSE/.test(String(e))) throw e;
    }
  }
  throw last;
}

/** Starts the server and ties it to the test (stopped at teardown, its log tail printed on failure). */
export async function startRambootServer(t: Teardown, opts: RambootServerOptions): Promise<RambootServer> {
  const srv = await launchRambootServer(opts);
  tieToTest(t, { name: srv.proc.name, tail: (n) => srv.tail(n), stop: () => srv.stop(), logFile: srv.proc.logFile });
  return srv;
}
