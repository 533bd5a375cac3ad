import { spawn } from 'node:child_process';
import { startQemu, type Qemu } from './qemu.js';
import type { Teardown } from './teardown.js';

export interface SshResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** One ssh command as root on the guest (no shell on our side; the remote side runs `cmd`). */
export function sshCommand(port: number, key: string, cmd: string, timeoutMs = 120_000): Promise<SshResult> {
  return new Promise((resolve) => {
    const child = spawn('ssh', [
      '-i', key, '-p', String(port),
      '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
      '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR', '-o', 'IdentitiesOnly=yes',
      'root@127.0.0.1', cmd,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 255, stdout, stderr });
    });
  });
}

export interface BootSshOptions {
  name: string;
  kernel: string;
  initrd: string;
  append: string;
  memoryMiB: number;
  mac: string;
  disk?: string;
  sshPort: number;
  key: string;
  /** Hard limit for SSH to accept the key (default 600 s: TCG on a shared, loaded machine). */
  timeoutMs?: number;
}

/**
 * Boots QEMU (user-mode network, SSH forwarded to 127.0.0.1:sshPort) and retries SSH with `key` until
 * it is accepted: no fixed sleeps, fails fast if QEMU exits or the console shows a panic / RAMBOOT-FATAL.
 */
export async function bootAndSsh(t: Teardown, o: BootSshOptions): Promise<{ vm: Qemu; seconds: number }> {
  const started = Date.now();
  const vm = startQemu(t, {
    name: o.name,
    memoryMiB: o.memoryMiB,
    smp: 2,
    kernel: o.kernel,
    initrd: o.initrd,
    append: o.append,
    nics: [{ type: 'user', mac: o.mac, hostfwd: [`tcp:127.0.0.1:${o.sshPort}-:22`], romfile: '' }],
    ...(o.disk ? { disks: [{ path: o.disk, format: 'raw' as const }] } : {}),
  });
  const deadline = started + (o.timeoutMs ?? 600_000);
  let exited = false;
  void vm.proc.exited.then(() => { exited = true; });
  let last = '';
  for (;;) {
    if (exited) throw new Error(`${o.name}: QEMU exited before SSH came up\n${vm.tail(30)}`);
    if (vm.seen(/Kernel panic|RAMBOOT-FATAL/)) throw new Error(`${o.name}: boot failed\n${vm.tail(30)}`);
    if (Date.now() > deadline) throw new Error(`${o.name}: SSH not accepting the key after ${o.timeoutMs ?? 600_000} ms (last: ${last})\n${vm.tail(30)}`);
    const r = await sshCommand(o.sshPort, o.key, 'true', 20_000);
    if (r.code === 0) return { vm, seconds: Math.round((Date.now() - started) / 100) / 10 };
    last = r.stderr.trim().split('\n').slice(-1)[0] ?? '';
    // A refused connection returns at once: pace the retries (a poll interval, not a wait for readiness;
    // short, so the time measured is the guest's, not the poll's).
    await new Promise((r) => setTimeout(r, 250));
  }
}
