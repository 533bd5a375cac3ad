import { copyFile, link, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, runOk, type RunResult } from '../../common/run.js';
import { builtImage, type BuiltImage } from './built-image.js';
import { createNetns, type Netns } from './netns.js';
import type { ManagedProcess } from './process.js';
import { qemuOptValue, startQemu, type Qemu } from './qemu.js';
import { startRambootServer, type RambootServer } from './ramboot-server.js';
import { sourceDisk, type SourceDisk } from './source-disk.js';
import type { Teardown } from './teardown.js';
import { tempDir } from './temp-dir.js';

/**
 * Two VMs for `ramboot transfer`, in one network namespace made here (bridge 10.99.0.1, dnsmasq as the
 * site DHCP with the iPXE boot options, as test/deploy.test.ts), the real server serving the lean RAM OS:
 *
 *   SOURCE (SOURCE_MAC, pinned to SOURCE_IP by dnsmasq): boots the Debian of test/lib/source-disk.ts
 *   from a copy-on-write overlay of the cached disk (every lab starts from the pristine disk); root
 *   logs in with the disk's test key, host keys known from the disk (no trust on first use). Or, cold,
 *   PXE-boots ramboot (registered `once`) with the same overlay attached.
 *   TARGET (TARGET_MAC, pinned to TARGET_IP): registered `once` with the test key, PXE-boots ramboot
 *   with a blank 4 GiB disk (serial TARGET_SERIAL, boot index 2) and a blank 512 MiB disk (TINY_SERIAL)
 *   for the "too small" refusal; later powered on again to boot its own disk (QEMU runs with
 *   -no-reboot: a reboot ends it).
 *
 * Everything is tied to the test: VMs, server and namespace are stopped at teardown, also on failure.
 */
export const BASE = 'http://10.99.0.1:8080';
export const SOURCE_MAC = '52:54:00:7a:11:01';
export const SOURCE_IP = '10.99.0.10';
export const TARGET_MAC = '52:54:00:7a:11:02';
export const TARGET_IP = '10.99.0.11';
export const TARGET_SERIAL = 'RBTARGET';
export const TINY_SERIAL = 'RBTINY';
export const BIN = fileURLToPath(new URL('../../bin/ramboot.js', import.meta.url));
const BOOT_TIMEOUT_MS = 900_000;

export interface TimelineEvent {
  event: string;
  message: string;
  time?: string;
  data?: Record<string, unknown>;
}

export interface LabOptions {
  name: string;
  /** Target's main disk (default 4096 MiB) and its tiny second disk (default 512 MiB). */
  targetMiB?: number;
  tinyMiB?: number;
  progress?: (line: string) => void;
}

export class TransferLab {
  /** Known_hosts for the CLI: the source's host keys at SOURCE_IP (from the disk build). */
  readonly knownHosts: string;
  /** ssh config the CLI gets with --ssh-config: the test key, knownHosts, strict checking. */
  readonly sshConfig: string;
  /** Known_hosts naming TARGET_IP with the source's keys: the copied system carries them. */
  readonly copiedKnownHosts: string;
  readonly sourceOverlay: string;
  readonly targetDisk: string;
  readonly tinyDisk: string;
  readonly memoryMiB: number;

  constructor(
    readonly t: Teardown,
    readonly ns: Netns,
    readonly srv: RambootServer,
    readonly work: string,
    readonly source: SourceDisk,
    readonly image: BuiltImage,
  ) {
    this.knownHosts = join(work, 'known_hosts');
    this.sshConfig = join(work, 'ssh_config');
    this.copiedKnownHosts = join(work, 'copied_known_hosts');
    this.sourceOverlay = join(work, 'source.qcow2');
    this.targetDisk = join(work, 'target.raw');
    this.tinyDisk = join(work, 'tiny.raw');
    this.memoryMiB = Math.max(image.manifest.minRamMiB, 1024);
  }

  get key(): string {
    return this.source.key;
  }

  /** ssh options for a host whose keys are in `knownHosts` (verified, never accepted on first use). */
  sshArgs(knownHosts: string): string[] {
    return ['-i', this.key, '-o', 'IdentitiesOnly=yes', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes',
      '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR'];
  }

  /** One command as root on `ip` (from inside the namespace); never throws, returns the exit code. */
  ssh(ip: string, cmd: string, knownHosts: string, timeoutMs = 300_000): Promise<RunResult> {
    const [c = '', ...a] = this.ns.wrap(['ssh', ...this.sshArgs(knownHosts), `root@${ip}`, cmd]);
    return run(c, a, { timeoutMs });
  }

  /** The same, throwing with stderr on a non-zero exit. */
  async sshOk(ip: string, cmd: string, knownHosts: string, timeoutMs = 300_000): Promise<string> {
    const r = await this.ssh(ip, cmd, knownHosts, timeoutMs);
    if (r.code !== 0) throw new Error(`ssh ${ip} ${JSON.stringify(cmd)} exited ${r.code}: ${r.stderr.trim().slice(-600)}`);
    return r.stdout;
  }

  /** `ramboot ARGS --server BASE --token-file F` inside the namespace, to completion (exit code kept). */
  cli(args: readonly string[], timeoutMs = 1_800_000): Promise<RunResult> {
    const [c = '', ...a] = this.ns.wrap([process.execPath, BIN, ...args, '--server', BASE, '--token-file', this.srv.tokenFile]);
    return run(c, a, { timeoutMs });
  }

  /** The same as a process the test can kill (its whole process group: the CLI and its ssh children). */
  spawnCli(name: string, args: readonly string[]): ManagedProcess {
    return this.ns.spawn(name, [process.execPath, BIN, ...args, '--server', BASE, '--token-file', this.srv.tokenFile]);
  }

  async timeline(mac: string): Promise<TimelineEvent[]> {
    const r = await this.srv.api('GET', `/api/v1/machines/${mac}/events`);
    if (r.status !== 200) throw new Error(`timeline of ${mac}: HTTP ${r.status} ${r.text.slice(0, 200)}`);
    return (r.json as { events: TimelineEvent[] }).events;
  }

  /** The registry's known_hosts for `mac`, written to a file (what the test trusts for a RAM-OS boot). */
  async registryKnownHosts(mac: string): Promise<string> {
    const r = await this.srv.api('GET', `/api/v1/machines/${mac}/known_hosts`);
    if (r.status !== 200 || r.text.trim() === '') throw new Error(`known_hosts of ${mac}: HTTP ${r.status} "${r.text.slice(0, 200)}"`);
    const f = join(this.work, `known_hosts-${mac.replace(/:/g, '')}`);
    await writeFile(f, r.text);
    return f;
  }

  /** Registers `mac` to boot ramboot once, with the test key. */
  async registerOnce(mac: string, hostname: string): Promise<void> {
    const r = await this.srv.api('PUT', `/api/v1/machines/${mac}`, { hostname, sshKeys: [this.source.pub], boot: 'once' });
    if (r.status !== 200 && r.status !== 201) throw new Error(`register ${mac}: HTTP ${r.status} ${r.text.slice(0, 300)}`);
  }

  /** Retries `ssh true` until it succeeds; fails fast when the VM exits or panics. */
  async waitForSsh(vm: Qemu, ip: string, knownHosts: string, timeoutMs = BOOT_TIMEOUT_MS): Promise<number> {
    const started = Date.now();
    let exited = false;
    void vm.proc.exited.then(() => { exited = true; });
    let last = '';
    for (;;) {
      if (exited) throw new Error(`${vm.name}: QEMU exited before SSH came up at ${ip}\n${vm.tail(30)}`);
      if (vm.seen(/Kernel panic|You are in emergency mode|Give root password for maintenance/)) throw new Error(`${vm.name}: boot failed (panic or emergency mode)\n${vm.tail(40)}`);
      if (Date.now() - started > timeoutMs) throw new Error(`${vm.name}: no SSH at ${ip} after ${timeoutMs} ms (last: ${last})\n${vm.tail(30)}`);
      const r = await this.ssh(ip, 'true', knownHosts, 30_000);
      if (r.code === 0) return (Date.now() - started) / 1000;
      last = r.stderr.trim().split('\n').slice(-1)[0] ?? '';
      // A refused connection returns at once: pace the retries (a poll interval, not a wait for readiness).
      await new Promise((res) => setTimeout(res, 1000));
    }
  }

  /** The source VM booting its own disk (the overlay); resolves once root logs in with verified host keys. */
  async bootSource(name = 'transfer-source'): Promise<{ vm: Qemu; seconds: number }> {
    const vm = startQemu(this.t, {
      name,
      memoryMiB: 768,
      smp: 2,
      wrap: this.ns.wrap,
      nics: [{ type: 'tap', ifname: 'tap1', mac: SOURCE_MAC }],
      extraArgs: diskArgs(this.sourceOverlay, 'qcow2', 's0', 'RBSOURCE', 1),
      failOn: /Kernel panic/,
    });
    return { vm, seconds: await this.waitForSsh(vm, SOURCE_IP, this.knownHosts) };
  }

  /**
   * The source VM PXE-booting ramboot (cold mode) with its disk attached: registered `once`, NIC first.
   * Resolves with the registry's known_hosts once SSH answers with those keys.
   */
  async bootSourceCold(name = 'transfer-source-cold'): Promise<{ vm: Qemu; knownHosts: string; seconds: number }> {
    await this.registerOnce(SOURCE_MAC, 'transfer-source');
    const since = await this.eventCount(SOURCE_MAC);
    const vm = startQemu(this.t, {
      name,
      memoryMiB: this.memoryMiB,
      smp: 2,
      wrap: this.ns.wrap,
      nics: [{ type: 'tap', ifname: 'tap1', mac: SOURCE_MAC, bootindex: 1 }],
      extraArgs: diskArgs(this.sourceOverlay, 'qcow2', 's0', 'RBSOURCE', 2),
    });
    const started = Date.now();
    const knownHosts = await this.waitForRamboot(vm, SOURCE_MAC, SOURCE_IP, since);
    return { vm, knownHosts, seconds: (Date.now() - started) / 1000 };
  }

  /** The target VM PXE-booting ramboot (registered `once` first unless `register` is false). */
  async bootTargetRamboot(name = 'transfer-target', register = true): Promise<{ vm: Qemu; knownHosts: string; seconds: number }> {
    if (register) await this.registerOnce(TARGET_MAC, 'transfer-target');
    const since = await this.eventCount(TARGET_MAC);
    const vm = this.startTarget(name, []);
    const started = Date.now();
    const knownHosts = await this.waitForRamboot(vm, TARGET_MAC, TARGET_IP, since);
    return { vm, knownHosts, seconds: (Date.now() - started) / 1000 };
  }

  /**
   * The target powered on again after the transfer rebooted it: PXE first (ramboot answers `exit 1`
   * for a `local` machine), then SeaBIOS boots the disk. SSH is verified with the source's host keys,
   * which the copy carries.
   */
  async bootTargetDisk(name = 'transfer-target-disk'): Promise<{ vm: Qemu; seconds: number }> {
    const vm = this.startTarget(name, [], /Kernel panic/);
    return { vm, seconds: await this.waitForSsh(vm, TARGET_IP, this.copiedKnownHosts) };
  }

  /** Shuts a VM down from inside (clean unmount) and waits for QEMU to end. */
  async powerOff(vm: Qemu, ip: string, knownHosts: string): Promise<void> {
    await this.ssh(ip, 'systemctl poweroff --no-block', knownHosts, 60_000);
    await vm.waitForExit(300_000);
  }

  private startTarget(name: string, extra: string[], failOn?: RegExp): Qemu {
    return startQemu(this.t, {
      name,
      memoryMiB: this.memoryMiB,
      smp: 2,
      wrap: this.ns.wrap,
      nics: [{ type: 'tap', ifname: 'tap0', mac: TARGET_MAC, bootindex: 1 }],
      extraArgs: [...diskArgs(this.targetDisk, 'raw', 'd0', TARGET_SERIAL, 2), ...diskArgs(this.tinyDisk, 'raw', 'd1', TINY_SERIAL, undefined), ...extra],
      ...(failOn !== undefined ? { failOn } : {}),
    });
  }

  /** Waits for host keys reported after the first `since` timeline events, then SSH with those keys. */
  private async waitForRamboot(vm: Qemu, mac: string, ip: string, since: number): Promise<string> {
    let exited = false;
    void vm.proc.exited.then(() => { exited = true; });
    // The early host-keys report (cloud flavour) or the phone-home (both flavours) carry the keys.
    await this.waitForEvent(mac, ['host-keys.reported', 'phone-home.ready'], since, BOOT_TIMEOUT_MS, () => {
      if (exited) throw new Error(`${vm.name}: QEMU exited before the RAM OS reported its host keys\n${vm.tail(30)}`);
    });
    const kh = await this.registryKnownHosts(mac);
    await this.waitForSsh(vm, ip, kh);
    return kh;
  }

  /** Number of events on `mac`'s timeline now (0 for an unknown machine). */
  async eventCount(mac: string): Promise<number> {
    const r = await this.srv.api('GET', `/api/v1/machines/${mac}/events`);
    return r.status === 200 ? (r.json as { events: unknown[] }).events.length : 0;
  }

  /**
   * Resolves with the first `name` event after the first `since` events of `mac`'s timeline. The
   * timeline is read from the API every second (events are recorded there, not logged); `check` may
   * throw to stop early (a VM that died).
   */
  async waitForEvent(mac: string, name: string | readonly string[], since: number, timeoutMs: number, check?: () => void): Promise<TimelineEvent> {
    const wanted: readonly string[] = typeof name === 'string' ? [name] : name;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      check?.();
      const r = await this.srv.api('GET', `/api/v1/machines/${mac}/events`);
      if (r.status === 200) {
        const hit = (r.json as { events: TimelineEvent[] }).events.slice(since).find((e) => wanted.includes(e.event));
        if (hit) return hit;
      }
      if (Date.now() > deadline) throw new Error(`no ${wanted.join(' / ')} event for ${mac} within ${timeoutMs} ms`);
      await new Promise((res) => setTimeout(res, 1000));
    }
  }
}

function diskArgs(path: string, format: 'raw' | 'qcow2', id: string, serial: string, bootindex: number | undefined): string[] {
  return ['-drive', `if=none,id=${id},format=${format},file=${qemuOptValue(path)}`,
    '-device', `virtio-blk-pci,drive=${id},serial=${serial}${bootindex !== undefined ? `,bootindex=${bootindex}` : ''}`];
}

/**
 * The lab: source disk (cached build), lean image (cached build), a data dir with the image linked in,
 * the namespace (a second tap for the source VM), the server, the disks, the ssh config files.
 */
export async function createLab(t: Teardown, opts: LabOptions): Promise<TransferLab> {
  const progress = opts.progress ?? (() => undefined);
  const [source, image] = await Promise.all([
    sourceDisk({ progress }),
    builtImage({ flavour: 'lean', onLine: (l) => (/"event":"build\.(start|done|step)"/.test(l) ? progress(`lean: ${l.slice(0, 160)}`) : undefined) }),
  ]);
  const work = tempDir(t, `transfer-${opts.name}`);
  const imgDir = join(work, 'data', 'images', 'default');
  await mkdir(imgDir, { recursive: true });
  for (const f of ['manifest.json', ...Object.keys(image.manifest.files)]) {
    await link(join(image.imageDir, f), join(imgDir, f)).catch(() => copyFile(join(image.imageDir, f), join(imgDir, f)));
  }
  const ns = await createNetns(t, {
    name: `transfer-${opts.name}`,
    dhcp: { boot: { ipxe: `${BASE}/boot.ipxe` }, extraArgs: [`--dhcp-host=${SOURCE_MAC},${SOURCE_IP}`, `--dhcp-host=${TARGET_MAC},${TARGET_IP}`] },
  });
  // A second tap on the bridge for the source VM (tap0 is the target's).
  for (const s of [['ip', 'tuntap', 'add', 'dev', 'tap1', 'mode', 'tap'], ['ip', 'link', 'set', 'tap1', 'master', ns.bridge], ['ip', 'link', 'set', 'tap1', 'up']]) await ns.run(s);
  const srv = await startRambootServer(t, { dataDir: join(work, 'data'), httpHost: ns.address, httpPort: 8080, publicUrl: BASE, wrap: ns.wrap, name: `ramboot-transfer-${opts.name}` });
  const lab = new TransferLab(t, ns, srv, work, source, image);
  await writeFile(lab.knownHosts, source.hostKeys.map((k) => `${SOURCE_IP} ${k}\n`).join(''));
  await writeFile(lab.copiedKnownHosts, source.hostKeys.map((k) => `${TARGET_IP} ${k}\n`).join(''));
  await writeFile(lab.sshConfig, [
    'Host *',
    `  IdentityFile ${source.key}`,
    '  IdentitiesOnly yes',
    `  UserKnownHostsFile ${lab.knownHosts}`,
    '  StrictHostKeyChecking yes',
    '  BatchMode yes',
    '  ConnectTimeout 10',
    '  LogLevel ERROR',
    '',
  ].join('\n'));
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', source.disk, '-F', 'qcow2', lab.sourceOverlay]);
  await runOk('qemu-img', ['create', '-q', '-f', 'raw', lab.targetDisk, `${opts.targetMiB ?? 4096}M`]);
  await runOk('qemu-img', ['create', '-q', '-f', 'raw', lab.tinyDisk, `${opts.tinyMiB ?? 512}M`]);
  return lab;
}

/** sha256 of a file (the source overlay before/after a cold transfer). */
export async function fileSha256(path: string): Promise<string> {
  return (await runOk('sha256sum', [path])).stdout.split(' ')[0] ?? '';
}

/** The test key's public half as a line (for messages). */
export async function readPub(path: string): Promise<string> {
  return (await readFile(`${path}.pub`, 'utf8')).trim();
}
