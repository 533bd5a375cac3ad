import { spawn, type ChildProcess } from 'node:child_process';

/**
 * SSH for `ramboot transfer`: `ssh` is spawned with an argument vector (never a local shell); the
 * command the remote shell runs is one string built by shJoin from values that were validated
 * first, every one of them single-quoted. Scripts go on stdin (`sh -s -- ARGS`).
 */

/** One word for a POSIX shell: single-quoted, with embedded single quotes as '\''. */
export function shQuote(s: string): string {
  if (s.includes('\0')) throw new Error('a shell word cannot contain a NUL byte');
  if (/^[A-Za-z0-9_@%+:,./-]+$/.test(s)) return s;
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** A command line for the remote shell: every argument quoted, joined by spaces. */
export function shJoin(args: readonly string[]): string {
  if (args.length === 0) throw new Error('empty command');
  return args.map(shQuote).join(' ');
}

/** The remote host key is not the one ramboot (or the admin's known_hosts) has: never accepted. */
export class HostKeyError extends Error {
  override name = 'HostKeyError';
}

/** A remote command failed (non-zero exit, or could not connect). */
export class RemoteError extends Error {
  override name = 'RemoteError';
  constructor(
    message: string,
    readonly code: number,
    readonly stderr: string,
  ) {
    super(message);
  }
}

export interface SshEndpoint {
  /** What the user calls it in messages: "target 52:54:00:..", "source root@host". */
  label: string;
  host: string;
  user: string;
  /** Registry-known machine: a file holding its known_hosts (StrictHostKeyChecking=yes, nothing else trusted). */
  knownHostsFile?: string;
  /** --ssh-config (ssh -F). */
  config?: string;
  /** --identity (ssh -i). */
  identity?: string;
  connectTimeoutS?: number;
}

/** The ssh options (before the destination) for an endpoint. */
export function sshOptions(ep: SshEndpoint): string[] {
  const a: string[] = [];
  if (ep.config) a.push('-F', ep.config);
  if (ep.identity) a.push('-i', ep.identity, '-o', 'IdentitiesOnly=yes');
  a.push('-o', 'BatchMode=yes', '-o', `ConnectTimeout=${ep.connectTimeoutS ?? 20}`, '-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=4');
  if (ep.knownHostsFile) {
    a.push(
      '-o', 'StrictHostKeyChecking=yes',
      '-o', `UserKnownHostsFile=${ep.knownHostsFile}`,
      '-o', 'GlobalKnownHostsFile=/dev/null',
      '-o', 'UpdateHostKeys=no',
      '-o', 'CheckHostIP=no',
    );
  }
  a.push('-l', ep.user);
  return a;
}

/** The full ssh argument vector running `remoteCommand` (one string for the remote shell). */
export function sshArgs(ep: SshEndpoint, remoteCommand: string): string[] {
  return [...sshOptions(ep), '--', ep.host, remoteCommand];
}

export interface ExecOptions {
  /** Written to the remote command's stdin (e.g. a script for `sh -s`). */
  stdin?: string;
  onStdoutLine?: (line: string) => void;
  /** Lines of stderr; `\r` ends a line too (rsync progress). */
  onStderrLine?: (line: string) => void;
  /** Also split stdout on `\r` (rsync --info=progress2 writes its progress to stdout). */
  crIsNewline?: boolean;
  timeoutMs?: number;
  /** Keep at most this many bytes of stdout / stderr (the tail). */
  keep?: number;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** What a stage needs of a machine: run a command or a script there. Tests give a fake. */
export interface Remote {
  readonly label: string;
  /** Runs argv (quoted) in the remote shell. Never throws for a non-zero exit (except a host-key refusal). */
  exec(argv: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Runs a POSIX sh script sent on stdin with these arguments. */
  script(body: string, args: readonly string[], opts?: Omit<ExecOptions, 'stdin'>): Promise<ExecResult>;
}

const HOST_KEY_CHANGED = /REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed|host key for .* has changed|No \S+ host key is known for/i;

/** Throws HostKeyError when ssh's stderr says the host key was refused. */
export function checkHostKey(label: string, code: number, stderr: string, registry: boolean): void {
  if (code === 255 && HOST_KEY_CHANGED.test(stderr)) {
    throw new HostKeyError(
      registry
        ? `the ${label}'s SSH host key does not match the one it reported to ramboot: refusing`
        : `the ${label}'s SSH host key is not the one in your known_hosts (or is unknown there): refusing`,
    );
  }
}

/** Splits a stream of text into lines (by \n, and \r when asked), calling `each` for complete ones. */
export class LineSplitter {
  private partial = '';
  constructor(
    private readonly each: (line: string) => void,
    private readonly cr = false,
  ) {}
  push(chunk: string): void {
    this.partial += chunk;
    const parts = this.partial.split(this.cr ? /\r\n|\r|\n/ : /\n/);
    this.partial = parts.pop() ?? '';
    for (const p of parts) this.each(p);
  }
  end(): void {
    if (this.partial) this.each(this.partial);
    this.partial = '';
  }
}

const running = new Set<ChildProcess>();

/** Stops every program spawnLines started that is still running (on SIGINT/SIGTERM, before cleanup). */
export function killRunning(): void {
  for (const c of running) c.kill('SIGTERM');
}

/** Spawns a program (argv, no shell) with optional stdin, line callbacks and a timeout. */
export function spawnLines(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  const keep = opts.keep ?? 256 * 1024;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, [...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    running.add(child);
    let stdout = '';
    let stderr = '';
    const out = opts.onStdoutLine ? new LineSplitter(opts.onStdoutLine, opts.crIsNewline) : undefined;
    const err = opts.onStderrLine ? new LineSplitter(opts.onStderrLine, true) : undefined;
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
      stderr += `\n(killed after ${Math.round(opts.timeoutMs! / 1000)} s)`;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout = (stdout + d).slice(-keep);
      out?.push(d);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-keep);
      err?.push(d);
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.stdin ?? '');
    child.on('error', (e) => {
      running.delete(child);
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      running.delete(child);
      clearTimeout(timer);
      out?.end();
      err?.end();
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

/** A machine reached with the system's `ssh`. */
export class SshRemote implements Remote {
  constructor(readonly ep: SshEndpoint) {}

  get label(): string {
    return this.ep.label;
  }

  async exec(argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const r = await spawnLines('ssh', sshArgs(this.ep, shJoin(argv)), opts);
    checkHostKey(this.ep.label, r.code, r.stderr, !!this.ep.knownHostsFile);
    return r;
  }

  script(body: string, args: readonly string[], opts: Omit<ExecOptions, 'stdin'> = {}): Promise<ExecResult> {
    return this.exec(['sh', '-s', '--', ...args], { ...opts, stdin: body });
  }
}

/** The last few lines of a command's stderr, on one line. */
export function tail(stderr: string, lines = 3): string {
  return stderr.trim().split('\n').map((l) => l.trim()).filter(Boolean).slice(-lines).join(' | ').slice(0, 500);
}

/** Runs argv remotely; a non-zero exit throws RemoteError "WHAT failed on LABEL (exit N): stderr". */
export async function execOk(remote: Remote, argv: readonly string[], what: string, opts: ExecOptions = {}): Promise<ExecResult> {
  const r = await remote.exec(argv, opts);
  if (r.code !== 0) throw new RemoteError(`${what} failed on the ${remote.label} (exit ${r.code}${r.code === 255 ? ': ssh could not connect or was cut' : ''}): ${tail(r.stderr) || '(no message)'}`, r.code, r.stderr);
  return r;
}

/** Runs a script remotely; a non-zero exit throws RemoteError. */
export async function scriptOk(remote: Remote, body: string, args: readonly string[], what: string, opts: Omit<ExecOptions, 'stdin'> = {}): Promise<ExecResult> {
  const r = await remote.script(body, args, opts);
  if (r.code !== 0) throw new RemoteError(`${what} failed on the ${remote.label} (exit ${r.code}${r.code === 255 ? ': ssh could not connect or was cut' : ''}): ${tail(r.stderr) || '(no message)'}`, r.code, r.stderr);
  return r;
}
