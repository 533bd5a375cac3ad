import { readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command, CommanderError } from 'commander';

/**
 * The admin API client every client command shares (machines, deploy, artifacts, transfer): where
 * the server is (--server / RAMBOOT_SERVER), the token (--token-file / RAMBOOT_TOKEN_FILE), requests
 * with the Bearer header, and one mapping of failures to messages and exit codes:
 * 0 ok, 1 server or other error, 2 usage or validation.
 */

export const DEFAULT_SERVER = 'http://127.0.0.1:8080';
export const DEFAULT_TOKEN_FILE = './var/api-token';

export type ExitCode = 1 | 2;

/** A failure to report to the user as `ramboot <command>: <message>` with its exit code. */
export class CliError extends Error {
  override name = 'CliError';
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    /** HTTP status when the server answered. */
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface ClientFlags {
  server?: string;
  tokenFile?: string;
}

/** Adds --server and --token-file to a command (and its subcommands read them via optsWithGlobals). */
export function addClientOptions(cmd: Command): Command {
  return cmd
    .option('--server <url>', `ramboot server URL (env RAMBOOT_SERVER; default ${DEFAULT_SERVER})`)
    .option('--token-file <file>', `admin API token file (env RAMBOOT_TOKEN_FILE; default ${DEFAULT_TOKEN_FILE})`);
}

/**
 * Usage errors (unknown option, missing argument) exit 2 instead of commander's 1; help exits 0.
 * Call on a command before adding its subcommands: they inherit it.
 */
export function usageExitCodes(cmd: Command): Command {
  return cmd.exitOverride((err: CommanderError) => {
    process.exit(err.exitCode === 0 ? 0 : 2);
  });
}

export interface ApiResponse {
  status: number;
  headers: Headers;
  text: string;
  json: unknown;
}

export interface RequestOptions {
  body?: unknown;
  headers?: Record<string, string>;
  /** Statuses returned to the caller instead of thrown (e.g. 404 when absence is an answer). */
  allow?: readonly number[];
  /** Further statuses reported as an invalid request (exit 2), e.g. 412 for If-None-Match: *. */
  invalid?: readonly number[];
}

export interface StreamRequestOptions extends Omit<RequestOptions, 'body'> {
  /** The body's length in bytes (sent as content-length). */
  length: number;
  /** Content type of the body (default application/octet-stream). */
  contentType?: string;
  /** Transforms the body passes through on its way (e.g. a byte counter for a progress bar). */
  through?: readonly Transform[];
}

/** The message of an API error body ({"error": "..."}), or its text. */
function errorText(r: { text: string; json: unknown }): string {
  const j = r.json;
  if (typeof j === 'object' && j !== null && typeof (j as Record<string, unknown>)['error'] === 'string') return (j as Record<string, string>)['error']!;
  return r.text.trim().slice(0, 300) || '(no message)';
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export class ApiClient {
  constructor(
    /** Base URL without a trailing slash. */
    readonly server: string,
    private readonly token: string,
    readonly tokenFile: string,
  ) {}

  /** Why a request to `server` failed, in words ("connection refused"), as a CliError. */
  static unreachable(server: string, e: unknown): CliError {
    const cause = (e as { cause?: { code?: unknown; message?: unknown } }).cause;
    const why = typeof cause?.code === 'string' ? cause.code : typeof cause?.message === 'string' ? cause.message : (e as Error).message;
    const human = why === 'ECONNREFUSED' ? 'connection refused' : why === 'ENOTFOUND' ? 'host not found' : why;
    return new CliError(`cannot reach ramboot at ${server} (${human})`, 1);
  }

  /** fetch with the token; a server that cannot be reached becomes a CliError. */
  async raw(method: string, path: string, init: { body?: string; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
    try {
      return await fetch(`${this.server}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...(init.headers ?? {}) },
        ...(init.body !== undefined ? { body: init.body } : {}),
        ...(init.signal ? { signal: init.signal } : {}),
      });
    } catch (e) {
      if ((e as Error).name === 'AbortError') throw e;
      throw ApiClient.unreachable(this.server, e);
    }
  }

  /** A request whose non-2xx answers (other than `allow`) become CliErrors with the server's message. */
  async request(method: string, path: string, opts: RequestOptions = {}): Promise<ApiResponse> {
    const headers: Record<string, string> = { accept: 'application/json', ...(opts.headers ?? {}) };
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers['content-type'] = 'application/json';
    }
    const res = await this.raw(method, path, { headers, ...(body !== undefined ? { body } : {}) });
    const text = await res.text();
    const r: ApiResponse = { status: res.status, headers: res.headers, text, json: parseJson(text) };
    if (res.ok || opts.allow?.includes(res.status)) return r;
    throw this.httpError(r, opts.invalid);
  }

  /** Adds an event to a machine's timeline (POST /api/v1/machines/{mac}/events); returns the stored event. */
  async postEvent(mac: string, ev: { event: string; message: string; level?: 'info' | 'warning' | 'error'; data?: Record<string, unknown> }): Promise<unknown> {
    return (await this.request('POST', `/api/v1/machines/${encodeURIComponent(mac)}/events`, { body: ev })).json;
  }

  /**
   * Like request, but streams `body` (e.g. a file being uploaded) instead of sending JSON. An early
   * answer (401, 400, 412) ends the upload: its status is what counts, not the broken pipe.
   */
  async requestStream(method: string, path: string, body: Readable, opts: StreamRequestOptions): Promise<ApiResponse> {
    const url = new URL(`${this.server}${path}`);
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.token}`,
      'content-type': opts.contentType ?? 'application/octet-stream',
      'content-length': String(opts.length),
      accept: 'application/json',
      ...(opts.headers ?? {}),
    };
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(url, { method, headers }, resolve);
      req.on('error', (e) => reject(ApiClient.unreachable(this.server, Object.assign(new Error(e.message), { cause: e }))));
      pipeline([body, ...(opts.through ?? []), req]).catch(() => undefined);
    });
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const status = res.statusCode ?? 0;
    const h = new Headers();
    for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v);
    const r: ApiResponse = { status, headers: h, text, json: parseJson(text) };
    if ((status >= 200 && status < 300) || opts.allow?.includes(status)) return r;
    throw this.httpError(r, opts.invalid);
  }

  /** The CliError for a failed answer; `invalid` adds statuses reported as an invalid request (exit 2). */
  httpError(r: { status: number; text: string; json: unknown }, invalid: readonly number[] = []): CliError {
    const msg = errorText(r);
    if (invalid.includes(r.status)) return new CliError(`invalid request: ${msg}`, 2, r.status);
    switch (r.status) {
      case 401:
        return new CliError(`the server refused the API token from ${this.tokenFile}: ${msg} (check --token-file or RAMBOOT_TOKEN_FILE)`, 1, 401);
      case 400:
      case 413:
      case 415:
        return new CliError(`invalid request: ${msg}`, 2, r.status);
      case 404:
        return new CliError(msg, 1, 404);
      default:
        return new CliError(`server answered ${r.status}: ${msg}`, 1, r.status);
    }
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
  if (url.search || url.hash || url.username || url.password) throw new CliError(`--server: "${serverRaw}" must not carry a query, fragment or credentials`, 2);
  const tokenFile = flags.tokenFile ?? env['RAMBOOT_TOKEN_FILE'] ?? DEFAULT_TOKEN_FILE;
  let token: string;
  try {
    token = (await readFile(tokenFile, 'utf8')).trim();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(`cannot read the API token file ${tokenFile}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message} (use --token-file or RAMBOOT_TOKEN_FILE)`, 2);
  }
  if (!/^\S+$/.test(token)) throw new CliError(`the API token file ${tokenFile} is empty or holds more than one word`, 2);
  return new ApiClient(url.href.replace(/\/+$/, ''), token, tokenFile);
}

/**
 * Runs a command's body: a number it returns is the exit code; a CliError is printed as
 * `ramboot <name>: <message>` and sets the exit code; anything else is a bug and propagates.
 */
export async function runCli(name: string, body: () => Promise<number | void>): Promise<void> {
  try {
    const code = await body();
    if (typeof code === 'number') process.exitCode = code;
  } catch (e) {
    if (e instanceof CliError) {
      process.stderr.write(`ramboot ${name}: ${e.message}\n`);
      process.exitCode = e.exitCode;
      return;
    }
    throw e;
  }
}
