import { spawn } from 'node:child_process';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  cwd?: string;
  /** Added to (undefined: removed from) the inherited environment. */
  env?: Record<string, string | undefined>;
  /** Called with every complete stderr line (progress parsing). */
  onStderrLine?: (line: string) => void;
  /** Keep at most this many bytes of stderr/stdout (tail). */
  keep?: number;
  /** Kill the program (SIGKILL) after this long; it then counts as failed. */
  timeoutMs?: number;
}

/**
 * The one way ramboot runs a program: an argument vector, never a shell. `run` reports the exit
 * code and never throws on a non-zero exit; `runOk` throws with the stderr tail.
 */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const keep = opts.keep ?? 256 * 1024;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: Object.fromEntries(Object.entries({ ...process.env, ...(opts.env ?? {}) })
        .filter((e): e is [string, string] => e[1] !== undefined)),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let partial = '';
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
      stderr += `\n(killed after ${opts.timeoutMs} ms)`;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout = (stdout + d).slice(-keep);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-keep);
      if (opts.onStderrLine) {
        partial += d;
        const lines = partial.split('\n');
        partial = lines.pop() ?? '';
        for (const l of lines) opts.onStderrLine(l);
      }
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (partial && opts.onStderrLine) opts.onStderrLine(partial);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

/** Runs a program and throws with its stderr tail when it fails. */
export async function runOk(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-5).join(' | ')}`);
  }
  return r;
}
