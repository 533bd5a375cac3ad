import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { tryParseMac } from '../common/mac.js';
import { addClientOptions, clientFrom, CliError, runCli, usageExitCodes, type ApiClient, type ClientFlags } from './api-client.js';
import { formatBytes, formatDuration, ProgressBar } from './progress.js';
import { copyWithOneTimeKey, type CopyProgress } from './transfer/copy.js';
import { Timelines, type TimelineMachine, type TransferStep } from './transfer/events.js';
import { afterAction, finishTarget } from './transfer/finish.js';
import { inspectMachine, makePlan, planText } from './transfer/planning.js';
import { HostKeyError, killRunning, RemoteError, SshRemote, type Remote, type SshEndpoint } from './transfer/ssh.js';
import { StageError } from './transfer/stage-error.js';
import { applyPlan, PlanError, unmountTarget } from './transfer/target.js';
import { isRefusal, type Plan, type PlanRefusal } from './transfer/types.js';

/**
 * `ramboot transfer --from SOURCE --to TARGET-MAC`: a running machine (live) or a registered
 * machine booted into ramboot (cold) copied onto a target booted into ramboot: inspect both, plan,
 * partition + format + mount the target (resuming a run of the same plan), rsync source -> target
 * with a one-time key, fix + boot loader + initramfs, target set to boot local, then --after.
 * Exit 0 done (or --plan printed), 1 failed (one line: stage and why), 2 bad usage.
 */

interface TransferFlags extends ClientFlags {
  from?: string;
  to?: string;
  plan?: boolean;
  disk?: string;
  after?: string;
  json?: boolean;
  sshConfig?: string;
  identity?: string;
}

const AFTER = ['reboot', 'poweroff', 'stay'] as const;
type After = (typeof AFTER)[number];
const DISK_RE = /^\/dev\/[A-Za-z0-9][A-Za-z0-9._+:@=-]*(\/[A-Za-z0-9._+:@=-]+)*$/;
const HOST_RE = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$/;
const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

export type SourceSpec = { mode: 'cold'; mac: string } | { mode: 'live'; user: string; host: string };

/** --from: a MAC (cold) or [user@]host (live; user defaults to root). */
export function parseSource(v: string): SourceSpec {
  const mac = tryParseMac(v);
  if (mac && /^[0-9a-f:.-]+$/i.test(v) && !/^[0-9.]+$/.test(v)) return { mode: 'cold', mac };
  const at = v.lastIndexOf('@');
  const user = at >= 0 ? v.slice(0, at) : 'root';
  let host = at >= 0 ? v.slice(at + 1) : v;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (!USER_RE.test(user)) throw new CliError(`--from: "${user}" is not a user name`, 2);
  if (!(HOST_RE.test(host) || isIP(host) !== 0)) throw new CliError(`--from: "${v}" is neither root@HOST, HOST nor a MAC address`, 2);
  return { mode: 'live', user, host };
}

export interface TransferOptions {
  source: SourceSpec;
  targetMac: string;
  disk: string;
  after: After;
  planOnly: boolean;
  json: boolean;
  sshConfig?: string;
  identity?: string;
}

async function readable(flag: string, f: string): Promise<void> {
  try {
    await access(f, constants.R_OK);
  } catch {
    throw new CliError(`${flag}: cannot read ${f}`, 2);
  }
}

/** Flags -> options; exit 2 on anything wrong, before any request. */
export async function optionsFromFlags(f: TransferFlags): Promise<TransferOptions> {
  if (!f.from) throw new CliError('--from SOURCE is required (root@HOST, HOST or a MAC)', 2);
  if (!f.to) throw new CliError('--to TARGET-MAC is required', 2);
  const targetMac = tryParseMac(f.to);
  if (!targetMac) throw new CliError(`--to: "${f.to}" is not a MAC address`, 2);
  const source = parseSource(f.from);
  if (source.mode === 'cold' && source.mac === targetMac) throw new CliError('--from and --to are the same machine', 2);
  const disk = f.disk ?? 'auto';
  if (disk !== 'auto' && (!DISK_RE.test(disk) || disk.split('/').some((s) => s === '..' || s === '.'))) {
    throw new CliError(`--disk: "${disk}": use auto, /dev/disk/by-id/..., /dev/disk/by-path/... or /dev/NAME`, 2);
  }
  const after = (f.after ?? 'reboot') as After;
  if (!AFTER.includes(after)) throw new CliError(`--after must be one of ${AFTER.join(', ')}`, 2);
  if (f.sshConfig) await readable('--ssh-config', f.sshConfig);
  if (f.identity) await readable('--identity', f.identity);
  return {
    source, targetMac, disk, after, planOnly: !!f.plan, json: !!f.json,
    ...(f.sshConfig ? { sshConfig: f.sshConfig } : {}),
    ...(f.identity ? { identity: f.identity } : {}),
  };
}

interface MachineView {
  mac: string;
  boot: string;
  ip: string;
  knownHosts: string;
}

/** A registered machine booted into ramboot, with its address and the host keys it reported. */
export async function ramOsMachine(client: ApiClient, mac: string, role: 'source' | 'target'): Promise<MachineView> {
  const r = await client.request('GET', `/api/v1/machines/${mac}`, { allow: [404] });
  if (r.status === 404) throw new StageError('connect', `the ${role} ${mac} is not registered with ramboot`);
  const m = r.json as { boot?: string; status?: { ip?: string; hostKeys?: string[] } };
  const ip = m.status?.ip;
  if (!ip || isIP(ip) === 0) throw new StageError('connect', `the ${role} ${mac} has not reported an address: is it booted into ramboot?`);
  if (!m.status?.hostKeys?.length) throw new StageError('connect', `the ${role} ${mac} has not reported its SSH host keys: is it booted into ramboot (and is sshd up)?`);
  const kh = await client.request('GET', `/api/v1/machines/${mac}/known_hosts`);
  if (!kh.text.trim()) throw new StageError('connect', `ramboot has no known_hosts for the ${role} ${mac}`);
  return { mac, boot: m.boot ?? '', ip, knownHosts: kh.text };
}

/**
 * The machine runs the ramboot RAM OS (root in RAM, ramboot-fix and rrsync there). A machine's `boot`
 * says nothing here: `once` turns `local` as soon as the RAM OS phones home.
 */
export const RAM_OS_CHECK = 'test -x /usr/local/sbin/ramboot-fix || exit 3; case $(findmnt -n -o FSTYPE /) in overlay|tmpfs|ramfs|rootfs) exit 0 ;; esac; exit 4';

async function checkRamOs(remote: Remote, role: 'source' | 'target', mac: string): Promise<void> {
  const r = await remote.exec(['sh', '-c', RAM_OS_CHECK], { timeoutMs: 120_000 });
  if (r.code === 0) return;
  if (r.code === 255) throw new StageError('connect', `cannot reach the ${role} ${mac} over SSH: ${r.stderr.trim().split('\n').at(-1) ?? ''}`);
  throw new StageError('connect', `the ${role} ${mac} is not running the ramboot RAM OS (${r.code === 3 ? 'no ramboot-fix' : 'its root is on a disk'}): boot it into ramboot first (boot once)`);
}

/** Runs `body` with cleanup that also happens on SIGINT/SIGTERM (then exit 130/143). */
class Cleanup {
  private readonly fns: { what: string; fn: () => Promise<void> }[] = [];
  private running: Promise<void> | undefined;
  onError: (msg: string) => void = () => undefined;
  add(what: string, fn: () => Promise<void>): void {
    this.fns.push({ what, fn });
  }
  run(): Promise<void> {
    this.running ??= (async () => {
      for (const { what, fn } of this.fns.reverse()) {
        try {
          await fn();
        } catch (e) {
          this.onError(`cleanup: ${what}: ${(e as Error).message}`);
        }
      }
    })();
    return this.running;
  }
}

interface Ui {
  info(msg: string): void;
  warn(msg: string): void;
  step(step: TransferStep, msg: string): void;
  progress(p: CopyProgress): void;
  progressDone(): void;
}

function makeUi(json: boolean): Ui {
  const bar = new ProgressBar();
  const line = (o: Record<string, unknown>): void => void process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...o })}\n`);
  if (json) {
    let last = 0;
    return {
      info: (message) => line({ type: 'info', message }),
      warn: (message) => line({ type: 'warning', message }),
      step: (step, message) => line({ type: 'step', step, message }),
      progress: (p) => {
        if (Date.now() - last < 1000) return;
        last = Date.now();
        line({ type: 'progress', ...p });
      },
      progressDone: () => undefined,
    };
  }
  return {
    info: (m) => {
      bar.done();
      process.stderr.write(`${m}\n`);
    },
    warn: (m) => {
      bar.done();
      process.stderr.write(`WARNING: ${m}\n`);
    },
    step: (s, m) => {
      bar.done();
      process.stderr.write(`[${s}] ${m}\n`);
    },
    progress: (p) =>
      bar.update({
        label: `copy ${p.mountpoint} ${p.files} files`,
        bytes: p.totalBytes > 0 ? Math.round((p.totalBytes * p.percent) / 100) : p.bytes,
        ...(p.totalBytes > 0 ? { total: p.totalBytes } : {}),
        rateBps: p.rate,
        ...(p.etaSeconds !== undefined ? { etaSeconds: p.etaSeconds } : {}),
      }),
    progressDone: () => bar.done(),
  };
}

export async function transfer(client: ApiClient, o: TransferOptions): Promise<number> {
  const ui = makeUi(o.json);
  const cleanup = new Cleanup();
  cleanup.onError = (m) => ui.warn(m);
  const localDir = await mkdtemp(join(tmpdir(), 'ramboot-transfer-kh-'));
  cleanup.add('local temp dir', () => rm(localDir, { recursive: true, force: true }));
  let stage: StageError['stage'] = 'connect';
  let timelines: Timelines | undefined;
  let target: Remote | undefined;
  let planned: Plan | undefined;
  let refusal: PlanRefusal | undefined;
  let interrupted: NodeJS.Signals | undefined;
  // A signal stops the running ssh/rsync; the transfer then unwinds through its cleanups (key
  // removed from both sides) and reports transfer.failed. A second signal exits at once.
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) process.exit(sig === 'SIGINT' ? 130 : 143);
    interrupted = sig;
    ui.warn(`${sig}: stopping; cleaning up (again to exit at once)`);
    killRunning();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const t0 = Date.now();
  try {
    // --- who is who
    const tm = await ramOsMachine(client, o.targetMac, 'target');
    const common = { ...(o.sshConfig ? { config: o.sshConfig } : {}), ...(o.identity ? { identity: o.identity } : {}) };
    const tkh = join(localDir, 'target_known_hosts');
    await writeFile(tkh, tm.knownHosts, { mode: 0o600 });
    target = new SshRemote({ label: `target`, host: tm.ip, user: 'root', knownHostsFile: tkh, ...common });
    let source: Remote;
    let sourceName: string;
    const machines: TimelineMachine[] = [];
    if (o.source.mode === 'cold') {
      const sm = await ramOsMachine(client, o.source.mac, 'source');
      const skh = join(localDir, 'source_known_hosts');
      await writeFile(skh, sm.knownHosts, { mode: 0o600 });
      source = new SshRemote({ label: 'source', host: sm.ip, user: 'root', knownHostsFile: skh, ...common });
      sourceName = o.source.mac;
      machines.push({ mac: o.source.mac, role: 'source', peer: o.targetMac });
    } else {
      const ep: SshEndpoint = { label: 'source', host: o.source.host, user: o.source.user, ...common };
      source = new SshRemote(ep);
      sourceName = `${o.source.user}@${o.source.host}`;
    }
    machines.push({ mac: o.targetMac, role: 'target', peer: sourceName });
    timelines = new Timelines((mac, body) => client.postEvent(mac, body), machines, (m) => ui.warn(m));
    const tl = timelines;
    await Promise.all([checkRamOs(target, 'target', o.targetMac), ...(o.source.mode === 'cold' ? [checkRamOs(source, 'source', o.source.mac)] : [])]);
    const step = async (s: TransferStep, msg: string): Promise<void> => {
      stage = s;
      ui.step(s, msg);
      if (!o.planOnly) await tl.step(s, msg);
    };

    // --- inspect + plan (nothing changes anywhere)
    await step('inspect', `reading the source ${sourceName} (${o.source.mode}) and the target ${o.targetMac}`);
    const [srcInv, tgtInv] = await Promise.all([inspectMachine(source, o.source.mode), inspectMachine(target, 'cold')]);
    for (const w of srcInv.warnings ?? []) ui.warn(`source: ${w}`);
    await step('plan', 'planning the target disk');
    const p = makePlan(srcInv, tgtInv, { disk: o.disk });
    if (o.planOnly) {
      if (o.json) process.stdout.write(`${JSON.stringify(p, null, 2)}\n`);
      else process.stdout.write(planText(p));
      return isRefusal(p) ? 1 : 0;
    }
    if (isRefusal(p)) {
      refusal = p;
      if (!o.json) process.stderr.write(planText(p));
      throw new StageError('plan', p.reason);
    }
    planned = p;
    if (!o.json) process.stderr.write(planText(p));
    await tl.emit('transfer.planned', `plan ${p.hash.slice(0, 12)}: ${p.partitions.length} partitions on ${p.target.disk.device} (${formatBytes(p.totals.usedBytes)} to copy)`, { plan: p.hash, disk: p.target.disk.device, usedBytes: p.totals.usedBytes });
    const rsyncCheck = await source.exec(['sh', '-c', 'command -v rsync']);
    if (rsyncCheck.code !== 0) throw new StageError('copy', 'rsync is not installed on the source (it runs the copy): install it there first (e.g. apt-get install rsync)');
    await tl.emit('transfer.started', `transfer from ${sourceName} to ${o.targetMac} started`, { source: sourceName, target: o.targetMac, mode: o.source.mode });

    // --- target disk
    stage = 'partition';
    const applied = await applyPlan(target, p, {
      source: srcInv,
      targetInventory: tgtInv,
      log: (m) => ui.info(m),
      onStage: (s, resumed) => void step(s, resumed ? 'mounting the filesystems made by an earlier run' : s === 'partition' ? `partitioning ${p.target.disk.device}` : s === 'format' ? 'making the filesystems' : 'mounting the filesystems'),
    });
    const t = target;
    cleanup.add('unmounting the target', () => unmountTarget(t).catch(() => undefined));

    // --- copy
    await step('copy', applied.resumed ? 'copying (resuming: only what is missing or changed)' : 'copying');
    const copied = await copyWithOneTimeKey(source, target, p, {
      targetIp: tm.ip,
      targetKnownHosts: tm.knownHosts,
      log: (m) => ui.info(m),
      warn: (m) => ui.warn(m),
      onProgress: (cp) => {
        ui.progress(cp);
        tl.progress(cp);
      },
    });
    ui.progressDone();
    await tl.flush();
    for (const w of copied.warnings) ui.warn(w);

    // --- finish
    await finishTarget(target, p, {
      onStep: (s2) => void step(s2, s2 === 'fix' ? 'ramboot-fix on the copied system' : s2 === 'initramfs' ? 'checking the initramfs for the target\'s drivers' : s2 === 'bootloader' ? `installing the boot loader (${p.boot.mode})` : 'unmounting'),
      note: (m) => ui.info(m),
      warn: (m) => {
        ui.warn(m);
        void tl.emit('transfer.step', `warning: ${m}`, { step: stage, warning: m }, 'warning');
      },
    });
    stage = 'finish';
    await client.request('PATCH', `/api/v1/machines/${o.targetMac}`, { body: { boot: 'local' } });
    const seconds = (Date.now() - t0) / 1000;
    const mbPerSecond = copied.seconds > 0 ? Math.round((copied.bytes / 1e6 / copied.seconds) * 100) / 100 : 0;
    const result = { kind: 'result', ok: true, source: sourceName, target: o.targetMac, disk: p.target.disk.device, plan: p.hash, resumed: applied.resumed, bytes: copied.bytes, files: copied.files, seconds: Math.round(seconds), copySeconds: Math.round(copied.seconds), mbPerSecond, after: o.after, warnings: copied.warnings };
    await tl.emit('transfer.succeeded', `transferred ${formatBytes(copied.bytes)}, ${copied.files} files in ${formatDuration(seconds)} (${mbPerSecond} MB/s); boot set to local; next: ${o.after}`, { bytes: copied.bytes, files: copied.files, seconds: Math.round(seconds), mbPerSecond });
    if (o.after !== 'stay') await afterAction(target, o.after);
    if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else process.stdout.write(`transferred ${sourceName} to ${o.targetMac} (${p.target.disk.device}): ${formatBytes(copied.bytes)}, ${copied.files} files in ${formatDuration(seconds)} (${mbPerSecond} MB/s); boot local; ${o.after}\n`);
    return 0;
  } catch (e) {
    ui.progressDone();
    const reason = interrupted ? `interrupted by ${interrupted}` : e instanceof HostKeyError || e instanceof StageError || e instanceof RemoteError || e instanceof PlanError || e instanceof CliError ? e.message : (e as Error).message;
    const st = e instanceof StageError ? e.stage : stage;
    if (e instanceof HostKeyError) stage = 'connect';
    await timelines?.flush().catch(() => undefined);
    if (!o.planOnly) await timelines?.emit('transfer.failed', `transfer failed at ${st}: ${reason}`, { stage: st, reason });
    if (o.json) process.stdout.write(`${JSON.stringify({ kind: 'result', ok: false, stage: st, reason, ...(refusal ? { refusal } : {}) })}\n`);
    throw new CliError(`${st}: ${reason}`, 1);
  } finally {
    await cleanup.run();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export function registerTransferCommand(program: Command): void {
  const cmd = program
    .command('transfer')
    .description("copy a machine (live over SSH, or cold: a registered MAC booted into ramboot) onto a target booted into ramboot: partition, format, rsync, fix, boot loader; then the target boots its disk")
    .requiredOption('--from <source>', 'root@HOST or HOST (live: your SSH keys and known_hosts) or a MAC (cold: a machine booted into ramboot)')
    .requiredOption('--to <mac>', 'the target machine (registered, booted into ramboot)')
    .option('--plan', 'print the plan and stop (nothing is changed anywhere)')
    .option('--disk <disk>', 'target disk: auto (the only non-removable disk), /dev/disk/by-id/..., /dev/disk/by-path/... or /dev/NAME', 'auto')
    .option('--after <action>', 'reboot | poweroff | stay', 'reboot')
    .option('--json', 'the plan or the result as one JSON document on stdout; progress as JSON lines on stderr')
    .option('--ssh-config <file>', 'ssh configuration file for every ssh (ssh -F)')
    .option('--identity <file>', 'your SSH private key (ssh -i)');
  usageExitCodes(cmd);
  addClientOptions(cmd).action(async (flags: TransferFlags) => {
    await runCli('transfer', async () => {
      const o = await optionsFromFlags(flags);
      const client = await clientFrom(flags);
      return transfer(client, o);
    });
  });
}
