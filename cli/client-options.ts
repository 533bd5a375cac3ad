import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';

/**
 * What the deploy and artifacts commands need to talk to the admin API: --server / RAMBOOT_SERVER,
 * --token-file / RAMBOOT_TOKEN_FILE, requests with the Bearer token, and one mapping of failures to
 * messages and exit codes (0 ok, 1 server or other error, 2 usage or validation).
 * (Small on purpose: the shared client of branch `ops`, cli/api-client.ts, can replace it.)
 */

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';
export const DEFAULT_TOKEN_FILE = './var/api-token';

export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface ClientFlags {
  server?: string;
  tokenFile?: string;
}

export function addClientOptions(cmd: Command): Command {
  return cmd
    .option('--server <url>', `ramboot server URL (env RAMBOOT_SERVER; default ${DEFAULT_SERVER})`)
    .option('--token-file <file>', `admin API token file (env RAMBOOT_TOKEN_FILE; default ${DEFAULT_TOKEN_FILE})`);
}

export interface ApiResponse {
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function errorText(r: { text: string; json: unknown }): string {
  const j = r.json;
  if (typeof j === 'object' && j !== null && typeof (j as Record<string, unknown>)['error'] === 'string') return (j as Record<string, string>)['error'] ?? '';
  return r.text.trim().slice(0, 300) || '(no message)';
}

export class ApiClient {
  constructor(
    readonly server: string,
    readonly token: string,
    readonly tokenFile: string,
  ) {}

  /** Why a fetch to the server failed, in words ("connection refused"). */
  static unreachable(server: string, e: unknown): CliError {
    const cause = (e as { cause?: { code?: unknown; message?: unknown } }).cause;
    const why = typeof cause?.code === 'string' ? cause.code : typeof cause?.message === 'string' ? cause.message : (e as Error).message;
    const human = why === 'ECONNREFUSED' ? 'connection refused' : why === 'ENOTFOUND' ? 'host not found' : why;
    return new CliError(`cannot reach ramboot at ${server} (${human})`, 1);
  }

  async request(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiResponse> {
    let res: Response;
    try {
      res = await fetch(`${this.server}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.token}`, accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (e) {
      throw ApiClient.unreachable(this.server, e);
    }
    const text = await res.text();
    const r: ApiResponse = { status: res.status, headers: res.headers, text, json: parseJson(text) };
    if (!res.ok) throw this.httpError(r);
    return r;
  }

  httpError(r: { status: number; text: string; json: unknown }): CliError {
    const msg = errorText(r);
    if (r.status === 401) return new CliError(`the server refused the API token from ${this.tokenFile}: ${msg} (check --token-file or RAMBOOT_TOKEN_FILE)`, 1, 401);
    if (r.status === 400 || r.status === 412 || r.status === 413 || r.status === 415) return new CliError(`invalid request: ${msg}`, 2, r.status);
    if (r.status === 404) return new CliError(msg, 1, 404);
    return new CliError(`server answered ${r.status}: ${msg}`, 1, r.status);
  }
}

/** The client for --server / --token-file, falling back to the environment and the defaults. */
export async function clientFrom(flags: ClientFlags, env: NodeJS.ProcessEnv = process.env): Promise<ApiClient> {
  const serverRaw = flags.server ?? env['RAMBOOT_SERVER'] ?? DEFAULT_SERVER;
  let url: URL;
  try {
    url = new URL(serverRaw);
  } catch {
    throw new CliError(`--server: "${serverRaw}" is not a URL (e.g. ${DEFAULT_SERVER})`, 2);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CliError(`--server: "${serverRaw}" must be an http:// or https:// URL`, 2);
  const tokenFile = flags.tokenFile ?? env['RAMBOOT_TOKEN_FILE'] ?? DEFAULT_TOKEN_FILE;
  let token: string;
  try {
    token = (await readFile(tokenFile, 'utf8')).trim();
  } catch (e) {
    throw new CliError(`cannot read the API token from ${tokenFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (use --token-file or RAMBOOT_TOKEN_FILE)`, 2);
  }
  if (!token) throw new CliError(`the API token file ${tokenFile} is empty`, 2);
  return new ApiClient(url.toString().replace(/\/+$/, ''), token, tokenFile);
}

/** Runs a command body: CliErrors print `ramboot <cmd>: <message>` and set the exit code. */
export async function runCli(name: string, body: () => Promise<number | void>): Promise<void> {
  try {
    const code = await body();
    if (typeof code === 'number') process.exitCode = code;
  } catch (e) {
    if (e instanceof CliError) {
      process.stderr.write(`ramboot ${name}: ${e.message}\n`);
      process.exitCode = e.exitCode;
    } else {
      process.stderr.write(`ramboot ${name}: ${(e as Error).stack ?? String(e)}\n`);
      process.exitCode = 1;
    }
  }
}
