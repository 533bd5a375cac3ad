import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isIPv4 } from 'node:net';
import { ManagedProcess } from './process.js';
import { testLogPath } from './paths.js';
import { runOk, type RunResult } from '../../common/run.js';
import type { Teardown } from './teardown.js';

/**
 * An isolated network namespace made by the test (root only): a bridge with an IPv4 address and an
 * IPv6 ULA, a tap enslaved to it for QEMU, and optionally dnsmasq as the site DHCP server.
 *
 * The namespace is held by `unshare --net --pid --fork --kill-child sleep infinity`; everything started
 * with `spawn()`/`wrap()` joins both its network and its PID namespace, so when the holder dies (teardown,
 * or the test process dying: setpriv --pdeathsig) the kernel kills every process in it and the
 * namespace, bridge and tap vanish.
 */
export interface DhcpBoot {
  /** Boot file for DHCP requests from iPXE (user class "iPXE"), e.g. http://10.99.0.1:8080/boot.ipxe */
  ipxe?: string;
  /** TFTP file for BIOS PXE ROMs (default undionly.kpxe); next-server = the bridge address. */
  bios?: string;
  /** TFTP file for UEFI PXE (client-arch 7 or 9; default snponly.efi). */
  efi?: string;
}

export interface NetnsOptions {
  /** Label for logs. */
  name?: string;
  bridge?: string;
  tap?: string;
  /** Bridge IPv4 address (a /24; default 10.99.0.1). DHCP hands out .100-.199 of the same /24. */
  ipv4?: string;
  /** Bridge IPv6 ULA /64 prefix (default fd00:99::); the bridge gets <prefix>1. */
  ula?: string;
  /** Start dnsmasq as the site DHCP server with these boot files (false/undefined: no DHCP server). */
  dhcp?: false | { boot: DhcpBoot; extraArgs?: readonly string[] };
}

const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
const BOOTFILE_RE = /^[A-Za-z0-9._/-]{1,128}$/;
const ULA_RE = /^fd[0-9a-f]{2}(:[0-9a-f]{1,4}){0,3}::$/;

function checkUrl(u: string): string {
  const url = new URL(u);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`iPXE boot URL must be http(s): ${u}`);
  if (/[\s,]/.test(u)) throw new Error(`iPXE boot URL must not contain commas or spaces: ${u}`);
  return u;
}

function nsPid1(holderPid: number): number | undefined {
  try {
    const kids = readFileSync(`/proc/${holderPid}/task/${holderPid}/children`, 'utf8').trim().split(/\s+/);
    const n = Number(kids[0]);
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

export class Netns {
  readonly name: string;
  readonly bridge: string;
  readonly tap: string;
  /** Bridge IPv4 address: the next-server / HTTP address for guests. */
  readonly address: string;
  readonly ula: string;
  private holder: ManagedProcess | undefined;
  private pid1 = 0;
  private readonly procs = new Set<ManagedProcess>();
  private dnsmasqProc: ManagedProcess | undefined;
  private tmp: string | undefined;

  private constructor(opts: NetnsOptions) {
    this.name = opts.name ?? 'netns';
    this.bridge = opts.bridge ?? 'br0';
    this.tap = opts.tap ?? 'tap0';
    this.address = opts.ipv4 ?? '10.99.0.1';
    this.ula = opts.ula ?? 'fd00:99::';
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(this.name)) throw new Error(`bad netns name "${this.name}"`);
    for (const i of [this.bridge, this.tap]) if (!IFNAME_RE.test(i)) throw new Error(`bad interface name "${i}"`);
    if (!isIPv4(this.address)) throw new Error(`bad IPv4 address "${this.address}"`);
    if (!ULA_RE.test(this.ula)) throw new Error(`bad ULA prefix "${this.ula}" (want e.g. fd00:99::)`);
  }

  /** Creates the namespace, bridge, tap (and dnsmasq if asked). Call `destroy()` (or use createNetns). */
  static async create(opts: NetnsOptions = {}): Promise<Netns> {
    const ns = new Netns(opts);
    try {
      await ns.setup(opts);
    } catch (e) {
      await ns.destroy();
      throw e;
    }
    return ns;
  }

  /** The /24 prefix of the bridge address, e.g. "10.99.0". */
  get subnet24(): string {
    return this.address.split('.').slice(0, 3).join('.');
  }

  /** Prefix that runs `argv` inside the namespace (network + PID). For QemuOptions.wrap. */
  wrap = (argv: readonly string[]): string[] => {
    if (this.pid1 === 0) throw new Error('netns not set up');
    return ['nsenter', `--target=${this.pid1}`, '--net', '--pid', '--', ...argv];
  };

  /** Runs a program to completion inside the namespace (no shell). */
  run(argv: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
    const [cmd = '', ...args] = this.wrap(argv);
    return runOk(cmd, args, { timeoutMs });
  }

  /** Resolves once `url` answers from inside the namespace (an HTTP server started there is up). */
  async waitForHttp(url: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.run(['busybox', 'wget', '-q', '-O', '/dev/null', url], 10_000);
        return;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Starts a long-running process inside the namespace; it is stopped by destroy(). */
  spawn(name: string, argv: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ManagedProcess {
    const p = new ManagedProcess({
      name,
      argv: this.wrap(['setpriv', '--pdeathsig', 'KILL', '--', ...argv]),
      logFile: testLogPath(`${this.name}-${name}`),
      ...(opts.env !== undefined ? { env: opts.env } : {}),
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    });
    this.procs.add(p);
    return p;
  }

  /** dnsmasq's process (when started with dhcp options); its output has the DHCP log. */
  get dnsmasq(): ManagedProcess | undefined {
    return this.dnsmasqProc;
  }

  /** Last lines of every process in the namespace (for failure diagnostics). */
  tail(n = 20): string {
    const parts: string[] = [];
    for (const p of this.procs) parts.push(`--- ${p.name} ---\n${p.tail(n)}`);
    return parts.join('\n');
  }

  /** Stops every process, then the holder (which takes the namespace, bridge and tap with it). */
  async destroy(): Promise<void> {
    await Promise.all([...this.procs].map((p) => p.stop(3000)));
    this.procs.clear();
    if (this.holder) await this.holder.stop(3000);
    this.holder = undefined;
    this.pid1 = 0;
    if (this.tmp) await rm(this.tmp, { recursive: true, force: true });
    this.tmp = undefined;
  }

  private async setup(opts: NetnsOptions): Promise<void> {
    this.holder = new ManagedProcess({
      name: `${this.name}-holder`,
      argv: ['unshare', '--net', '--pid', '--fork', '--kill-child', '--', 'sleep', 'infinity'],
    });
    const holderPid = this.holder.pid;
    if (holderPid === undefined) throw new Error('could not start unshare');
    const deadline = Date.now() + 15_000;
    const ourNet = readlinkSync('/proc/self/ns/net');
    for (;;) {
      const pid = nsPid1(holderPid);
      // wait until the child has exec'd sleep inside the new namespace
      if (pid !== undefined && existsSync(`/proc/${pid}/ns/net`)) {
        try {
          const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
          if (comm === 'sleep' && readlinkSync(`/proc/${pid}/ns/net`) !== ourNet) {
            this.pid1 = pid;
            break;
          }
        } catch {
          // raced with exec; retry
        }
      }
      if (this.holder.hasExited) throw new Error(`unshare exited:\n${this.holder.tail()}`);
      if (Date.now() > deadline) throw new Error('namespace holder did not start within 15 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    const br = this.bridge;
    const tap = this.tap;
    const steps: string[][] = [
      ['ip', 'link', 'set', 'lo', 'up'],
      ['ip', 'link', 'add', br, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0'],
      ['ip', 'addr', 'add', `${this.address}/24`, 'dev', br],
      ['ip', '-6', 'addr', 'add', `${this.ula}1/64`, 'dev', br, 'nodad'],
      ['ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap'],
      ['ip', 'link', 'set', tap, 'master', br],
      ['ip', 'link', 'set', tap, 'up'],
      ['ip', 'link', 'set', br, 'up'],
    ];
    for (const s of steps) await this.run(s);
    if (opts.dhcp) await this.startDnsmasq(opts.dhcp.boot, opts.dhcp.extraArgs ?? []);
  }

  /** dnsmasq argv for the site DHCP server (exported for inspection by tests). */
  dnsmasqArgs(boot: DhcpBoot, pidFile: string, extra: readonly string[] = []): string[] {
    const bios = boot.bios ?? 'undionly.kpxe';
    const efi = boot.efi ?? 'snponly.efi';
    for (const f of [bios, efi]) if (!BOOTFILE_RE.test(f)) throw new Error(`bad boot file "${f}"`);
    const net = this.subnet24;
    const args = [
      'dnsmasq',
      '--conf-file=/dev/null',
      '--keep-in-foreground',
      '--log-facility=-',
      '--log-dhcp',
      `--pid-file=${pidFile}`,
      '--leasefile-ro',
      '--port=0',
      '--no-ping',
      '--bind-interfaces',
      `--interface=${this.bridge}`,
      '--dhcp-authoritative',
      `--dhcp-range=${net}.100,${net}.199,255.255.255.0,1h`,
      '--enable-ra',
      `--dhcp-range=${this.ula},ra-only,64`,
      '--dhcp-userclass=set:ipxe,iPXE',
      '--dhcp-option-force=tag:ipxe,encap:175,176,1b',
      '--dhcp-match=set:efi64,option:client-arch,7',
      '--dhcp-match=set:efi64,option:client-arch,9',
    ];
    if (boot.ipxe !== undefined) args.push(`--dhcp-boot=tag:ipxe,${checkUrl(boot.ipxe)}`);
    args.push(`--dhcp-boot=tag:!ipxe,tag:efi64,${efi},,${this.address}`);
    args.push(`--dhcp-boot=tag:!ipxe,tag:!efi64,${bios},,${this.address}`);
    args.push(...extra);
    return args;
  }

  private async startDnsmasq(boot: DhcpBoot, extra: readonly string[]): Promise<void> {
    this.tmp = await mkdtemp(join(tmpdir(), 'ramboot-netns-'));
    const p = this.spawn('dnsmasq', this.dnsmasqArgs(boot, join(this.tmp, 'dnsmasq.pid'), extra));
    this.dnsmasqProc = p;
    await p.waitFor(/DHCP, IP range/, { timeoutMs: 30_000, failOn: /FAILED|failed to|bad |unknown interface|cannot/i });
  }
}

/** Creates a namespace and ties it to the test: destroyed at teardown, process logs printed on failure. */
export async function createNetns(t: Teardown, opts: NetnsOptions = {}): Promise<Netns> {
  const ns = await Netns.create(opts);
  t.teardown(async () => {
    if (!t.passing()) {
      t.comment(`--- last lines of the processes in namespace ${ns.name} ---`);
      for (const line of ns.tail(40).split('\n')) t.comment(line);
    }
    await ns.destroy();
  });
  return ns;
}
