import { spawn, type ChildProcess } from 'node:child_process';
import { cpus } from 'node:os';

export function machineLine(): string {
  return `${cpus().length} x ${cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}, ${process.platform}`;
}

export function progress(msg: string): void {
  process.stderr.write(`[bench] ${new Date().toISOString().slice(11, 19)} ${msg}\n`);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Spawn a long-running process and resolve once `ready` matches its output. */
export function startProcess(cmd: string, args: string[], ready: RegExp, opts: { cwd?: string; timeoutMs?: number } = {}): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`${cmd} did not become ready within ${opts.timeoutMs ?? 120000} ms:\n${out.slice(-2000)}`));
    }, opts.timeoutMs ?? 120_000);
    const onData = (c: Buffer) => {
      out += c.toString();
      if (ready.test(out)) {
        clearTimeout(timer);
        p.stdout?.removeAllListeners('data');
        p.stderr?.removeAllListeners('data');
        p.stdout?.resume();
        p.stderr?.resume();
        resolve(p);
      }
      if (out.length > 1e6) out = out.slice(-1e5);
    };
    p.stdout?.on('data', onData);
    p.stderr?.on('data', onData);
    p.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited (${code}) before it was ready:\n${out.slice(-2000)}`));
    });
  });
}

export async function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    p.once('exit', () => resolve());
    p.kill('SIGTERM');
    setTimeout(() => p.kill('SIGKILL'), 5000).unref();
  });
}
