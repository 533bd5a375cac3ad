import { existsSync } from 'node:fs';
import type { Teardown } from './teardown.js';
import { ManagedProcess, type ExitInfo, type WaitOptions } from './process.js';
import { testLogPath } from './paths.js';

/**
 * QEMU for tests: TCG (KVM cannot run guests here), serial console on stdio, under
 * `unshare --pid --fork --kill-child` so QEMU and everything it spawns (guestfwd commands) die with it.
 */
export const DEFAULT_FAIL_PATTERN = /Kernel panic|No bootable device|Could not boot|Exec format error|PXE-E\d\d|Boot Failed/;
export const OVMF_PATH = '/usr/share/ovmf/OVMF.fd';
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const MODEL_RE = /^[a-z0-9-]{1,32}$/;
const FWD_RE = /^[^\n\r\0]{1,512}$/;

interface NicCommon {
  /** e.g. 52:54:00:12:34:56 */
  mac?: string;
  /** QEMU device model (default virtio-net-pci; its option ROM is iPXE). */
  model?: string;
  /** bootindex=N on the device (OVMF needs it to PXE-boot). */
  bootindex?: number;
  /** romfile= on the device; '' disables the option ROM. */
  romfile?: string;
}

export interface UserNic extends NicCommon {
  type: 'user';
  /** DHCP boot file name, e.g. http://10.0.2.2:8080/boot.ipxe */
  bootfile?: string;
  /** Directory slirp serves over its built-in TFTP server. */
  tftp?: string;
  /** restrict=on: the guest cannot reach anything except guestfwd targets. */
  restrict?: boolean;
  /** e.g. 'tcp:10.0.2.100:80-cmd:busybox nc 127.0.0.1 8080' */
  guestfwd?: readonly string[];
  /** e.g. 'tcp:127.0.0.1:2222-:22' */
  hostfwd?: readonly string[];
}

export interface TapNic extends NicCommon {
  type: 'tap';
  /** An existing tap interface in QEMU's network namespace (see netns.ts). */
  ifname: string;
}

export type QemuNic = UserNic | TapNic;

export interface QemuDisk {
  path: string;
  format?: 'raw' | 'qcow2';
  /** Writes go to a temp overlay (the file is not modified). */
  snapshot?: boolean;
  /** Bus: virtio (default), or ide/ahci. */
  interface?: 'virtio' | 'ide';
}

export interface QemuOptions {
  /** Label for messages and the log file name. */
  name?: string;
  /** Guest RAM (default 512 MiB). */
  memoryMiB?: number;
  /** 'bios' = SeaBIOS (default), 'uefi' = OVMF. */
  firmware?: 'bios' | 'uefi';
  kernel?: string;
  initrd?: string;
  append?: string;
  disks?: readonly (string | QemuDisk)[];
  /** NICs; none given -> `-nic none`. */
  nics?: readonly QemuNic[];
  /** `-boot` value, e.g. 'n'. */
  boot?: string;
  smp?: number;
  /** Also unshare the network namespace: the guest's user-mode network then cannot reach host services. */
  isolateNet?: boolean;
  /** Prefix applied to the whole command line, e.g. netns.wrap() to run inside a test namespace. */
  wrap?: (argv: string[]) => string[];
  /** Default fail-fast pattern for waitFor (default DEFAULT_FAIL_PATTERN; null = none). */
  failOn?: RegExp | null;
  /** Extra raw QEMU arguments (test code only). */
  extraArgs?: readonly string[];
  /** Console log file (default .cache/test-logs/<name>-<time>-<pid>.log). */
  logFile?: string;
}

/** Escapes a value for a QEMU -opt list (commas are doubled). */
export function qemuOptValue(v: string): string {
  if (/[\n\r\0]/.test(v)) throw new Error(`bad QEMU option value ${JSON.stringify(v)}`);
  return v.replace(/,/g, ',,');
}

function nicArgs(nic: QemuNic, i: number): string[] {
  const id = `n${i}`;
  let netdev: string;
  if (nic.type === 'user') {
    netdev = `user,id=${id}`;
    if (nic.bootfile !== undefined) netdev += `,bootfile=${qemuOptValue(nic.bootfile)}`;
    if (nic.tftp !== undefined) netdev += `,tftp=${qemuOptValue(nic.tftp)}`;
    if (nic.restrict) netdev += ',restrict=on';
    for (const g of nic.guestfwd ?? []) {
      if (!FWD_RE.test(g)) throw new Error(`bad guestfwd ${JSON.stringify(g)}`);
      netdev += `,guestfwd=${qemuOptValue(g)}`;
    }
    for (const h of nic.hostfwd ?? []) {
      if (!FWD_RE.test(h)) throw new Error(`bad hostfwd ${JSON.stringify(h)}`);
      netdev += `,hostfwd=${qemuOptValue(h)}`;
    }
  } else {
    if (!IFNAME_RE.test(nic.ifname)) throw new Error(`bad tap ifname "${nic.ifname}"`);
    netdev = `tap,id=${id},ifname=${nic.ifname},script=no,downscript=no`;
  }
  const model = nic.model ?? 'virtio-net-pci';
  if (!MODEL_RE.test(model)) throw new Error(`bad NIC model "${model}"`);
  let device = `${model},netdev=${id}`;
  if (nic.mac !== undefined) {
    if (!MAC_RE.test(nic.mac)) throw new Error(`bad MAC "${nic.mac}"`);
    device += `,mac=${nic.mac.toLowerCase()}`;
  }
  if (nic.bootindex !== undefined) {
    if (!Number.isInteger(nic.bootindex) || nic.bootindex < 0) throw new Error(`bad bootindex ${nic.bootindex}`);
    device += `,bootindex=${nic.bootindex}`;
  }
  if (nic.romfile !== undefined) device += `,romfile=${qemuOptValue(nic.romfile)}`;
  return ['-netdev', netdev, '-device', device];
}

function diskArgs(d: string | QemuDisk): string[] {
  const disk: QemuDisk = typeof d === 'string' ? { path: d } : d;
  if (!existsSync(disk.path)) throw new Error(`disk ${disk.path} does not exist`);
  let drive = `file=${qemuOptValue(disk.path)},format=${disk.format ?? 'raw'},if=${disk.interface ?? 'virtio'}`;
  if (disk.snapshot) drive += ',snapshot=on';
  return ['-drive', drive];
}

/** The full command line (unshare + qemu), before `wrap` and the setpriv wrapper. */
export function qemuArgv(opts: QemuOptions): string[] {
  const mem = opts.memoryMiB ?? 512;
  if (!Number.isInteger(mem) || mem < 32 || mem > 65536) throw new Error(`bad memoryMiB ${mem}`);
  const q: string[] = [
    'qemu-system-x86_64',
    '-machine', 'q35,accel=tcg',
    '-m', String(mem),
    '-nographic', '-monitor', 'none', '-serial', 'stdio',
    '-no-reboot',
  ];
  if (opts.smp !== undefined) {
    if (!Number.isInteger(opts.smp) || opts.smp < 1 || opts.smp > 8) throw new Error(`bad smp ${opts.smp}`);
    q.push('-smp', String(opts.smp));
  }
  if (opts.firmware === 'uefi') {
    if (!existsSync(OVMF_PATH)) throw new Error(`${OVMF_PATH} missing (Debian package ovmf)`);
    q.push('-bios', OVMF_PATH);
  }
  if (opts.kernel !== undefined) {
    if (!existsSync(opts.kernel)) throw new Error(`kernel ${opts.kernel} does not exist`);
    q.push('-kernel', opts.kernel);
    if (opts.initrd !== undefined) {
      if (!existsSync(opts.initrd)) throw new Error(`initrd ${opts.initrd} does not exist`);
      q.push('-initrd', opts.initrd);
    }
    if (opts.append !== undefined) q.push('-append', opts.append);
  } else if (opts.initrd !== undefined || opts.append !== undefined) {
    throw new Error('initrd/append need kernel');
  }
  for (const d of opts.disks ?? []) q.push(...diskArgs(d));
  const nics = opts.nics ?? [];
  if (nics.length === 0) q.push('-nic', 'none');
  nics.forEach((nic, i) => q.push(...nicArgs(nic, i)));
  if (opts.boot !== undefined) {
    if (!/^[a-z,=0-9]{1,32}$/.test(opts.boot)) throw new Error(`bad -boot "${opts.boot}"`);
    q.push('-boot', opts.boot);
  }
  q.push(...(opts.extraArgs ?? []));
  const unshare = ['unshare'];
  if (process.getuid?.() !== 0) unshare.push('--user', '--map-root-user');
  unshare.push('--pid', '--fork', '--kill-child');
  if (opts.isolateNet) unshare.push('--net');
  return [...unshare, '--', ...q];
}

export class Qemu {
  readonly name: string;
  readonly proc: ManagedProcess;
  readonly argv: readonly string[];
  private readonly failOn: RegExp | null;

  constructor(opts: QemuOptions = {}) {
    this.name = opts.name ?? 'qemu';
    if (!NAME_RE.test(this.name)) throw new Error(`bad QEMU name "${this.name}"`);
    const base = qemuArgv(opts);
    this.argv = opts.wrap ? opts.wrap(base) : base;
    this.failOn = opts.failOn === undefined ? DEFAULT_FAIL_PATTERN : opts.failOn;
    this.proc = new ManagedProcess({
      name: this.name,
      argv: this.argv,
      logFile: opts.logFile ?? testLogPath(this.name),
    });
  }

  get logFile(): string | undefined {
    return this.proc.logFile;
  }

  /**
   * Resolves on the first console line matching `re` (after the previous match). Rejects on a fail-fast
   * line (DEFAULT_FAIL_PATTERN unless overridden here or in the options; null disables), on QEMU exit,
   * or after `timeoutMs` (default 180 s).
   */
  waitFor(re: RegExp, opts: WaitOptions = {}): Promise<RegExpMatchArray> {
    return this.proc.waitFor(re, {
      timeoutMs: opts.timeoutMs ?? 180_000,
      failOn: opts.failOn === undefined ? this.failOn : opts.failOn,
      fromStart: opts.fromStart ?? false,
      partialLines: opts.partialLines ?? false,
    });
  }

  /** True when any captured console line (still in memory) matches. */
  seen(re: RegExp): boolean {
    const r = new RegExp(re.source, re.flags.replace('g', ''));
    return this.proc.output().split('\n').some((l) => r.test(l));
  }

  /** Resolves when QEMU exits by itself (e.g. guest power-off); rejects after `timeoutMs`. */
  async waitForExit(timeoutMs = 180_000): Promise<ExitInfo> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${this.name}: still running after ${timeoutMs} ms\n${this.proc.tail(30)}`)),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([this.proc.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  output(): string {
    return this.proc.output();
  }

  tail(n = 40): string {
    return this.proc.tail(n);
  }

  /** Kill QEMU and everything in its PID namespace. */
  async stop(): Promise<void> {
    await this.proc.stop(3000);
  }
}


/**
 * Registers `stop` with t.teardown; when the test has failed, prints the tail of the output
 * (and the log file path) as TAP comments first.
 */
export function tieToTest(
  t: Teardown,
  what: { name: string; tail(n?: number): string; stop(): Promise<unknown>; logFile?: string | undefined },
): void {
  t.teardown(async () => {
    if (!t.passing()) {
      t.comment(`--- last console lines of ${what.name}${what.logFile ? ` (full log: ${what.logFile})` : ''} ---`);
      for (const line of what.tail(60).split('\n')) t.comment(line);
    }
    await what.stop();
  });
}

/** Starts QEMU and ties it to the test (stopped at teardown, console tail printed on failure). */
export function startQemu(t: Teardown, opts: QemuOptions = {}): Qemu {
  const vm = new Qemu(opts);
  tieToTest(t, { name: vm.name, tail: (n) => vm.tail(n), stop: () => vm.stop(), logFile: vm.logFile });
  return vm;
}
