/**
 * One measured PXE boot: a network namespace (bridge + tap + dnsmasq as the site DHCP, as in
 * test/deploy.test.ts), the real server with one image, QEMU under TCG (SeaBIOS + iPXE ROM, or OVMF's
 * own PXE -> snponly.efi -> iPXE), and the admin's real login: GET known_hosts from the API, then
 * `ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=<it>` until it succeeds. Times are seconds
 * from QEMU's start (power-on); the guest's own clock (uptime at login) places the kernel's start.
 */
import { copyFile, link, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk } from '../common/run.js';
import { createNetns } from '../test/lib/netns.js';
import { startQemu } from '../test/lib/qemu.js';
import { startRambootServer } from '../test/lib/ramboot-server.js';
import type { Teardown } from '../test/lib/teardown.js';

const BASE = 'http://10.99.0.1:8080';

export type Firmware = 'bios' | 'uefi';

export interface PxeBootTimes {
  /** Server timeline: the per-MAC script served. */
  script: number;
  /** Server timeline: the last file of the image fetched (the request; the transfer follows). */
  imageFetch: number;
  /** Guest clock placed on the host's: the kernel started. */
  kernel: number;
  /** Console: /init runs (its first line). */
  initStart: number;
  /** Console: /init hands over to systemd. */
  initEnd: number;
  /** Guest: systemd's userspace start (systemd-analyze), on the host's clock. */
  systemd: number;
  /** sshd listening: /init's console line (early SSH), else ssh.service active, on the host's clock. */
  sshd: number;
  /** Server timeline: host-keys.reported (known_hosts is served from then on). */
  hostKeys: number;
  /** The admin's verified login succeeded (ssh StrictHostKeyChecking=yes with the served known_hosts). */
  verifiedSsh: number;
}

export interface PxeBootResult {
  times: PxeBootTimes;
  /** systemd-analyze, critical-chain of ssh.service, blame, unit activation times. */
  analysis: string;
}

interface TimelineEvent { event: string; time?: string; message?: string }

/** Monotonic activation times (s since the kernel started) of the units on the way to SSH. */
const UNITS = [
  'systemd-udev-trigger.service', 'systemd-networkd.service', 'ramboot-ssh-hostkeys.service', 'ssh.service',
  'ramboot-nocloud.service', 'ramboot-report-hostkeys.service', 'ramboot-report-sshd.service',
  'systemd-networkd-wait-online.service', 'cloud-init.service', 'multi-user.target',
];
// systemd-analyze answers only once the boot has finished (cloud-init's stages included).
const GUEST_SCRIPT = [
  'systemctl is-system-running --wait >/dev/null',
  `for u in ${UNITS.join(' ')}; do printf '%s ' $u; systemctl show -p ActiveEnterTimestampMonotonic --value $u; done`,
  'echo ---; systemd-analyze',
  'echo ---; systemd-analyze critical-chain ssh.service ramboot-ssh-hostkeys.service ramboot-nocloud.service ramboot-report-hostkeys.service --no-pager',
  'echo ---; systemd-analyze blame --no-pager | head -n 25',
  'echo ---; dmesg | head -n 400',
  "echo ---; journalctl -b -o short-monotonic --no-pager | grep -v ' kernel: ' | grep -iE 'networkd|dhcp|link|carrier|nocloud|ssh|report|udev' | head -n 150",
].join('; ');

/** Boots `imageDir` once by PXE and measures it. `name` must be short ([a-z0-9-]). */
export async function measurePxeBoot(t: Teardown, o: { name: string; imageDir: string; work: string; firmware: Firmware; mac: string; memoryMiB: number; kernelArgs?: string }): Promise<PxeBootResult> {
  const imgDir = join(o.work, 'data', 'images', 'default');
  await mkdir(imgDir, { recursive: true });
  const manifest = JSON.parse(await readFile(join(o.imageDir, 'manifest.json'), 'utf8')) as { files: Record<string, unknown> };
  for (const f of ['manifest.json', ...Object.keys(manifest.files)]) {
    await link(join(o.imageDir, f), join(imgDir, f)).catch(() => copyFile(join(o.imageDir, f), join(imgDir, f)));
  }
  const key = join(o.work, 'id');
  await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ramboot-bench', '-f', key]);
  const pub = (await readFile(`${key}.pub`, 'utf8')).trim();
  const ns = await createNetns(t, { name: o.name, dhcp: { boot: { ipxe: `${BASE}/boot.ipxe` } } });
  const srv = await startRambootServer(t, { dataDir: join(o.work, 'data'), httpHost: ns.address, httpPort: 8080, publicUrl: BASE, wrap: ns.wrap, name: `ramboot-${o.name}` });
  const put = await srv.api('PUT', `/api/v1/machines/${o.mac}`, { hostname: o.name, sshKeys: [pub], boot: 'ramboot', ...(o.kernelArgs ? { kernelArgs: o.kernelArgs } : {}) });
  if (put.status !== 201) throw new Error(`register: ${put.status} ${put.text}`);

  const started = Date.now();
  const at = (ms: number): number => Math.round((ms - started) / 100) / 10;
  const vm = startQemu(t, {
    name: o.name, firmware: o.firmware, wrap: ns.wrap, memoryMiB: o.memoryMiB, smp: 2,
    nics: [{ type: 'tap', ifname: ns.tap, mac: o.mac, bootindex: 1 }],
    extraArgs: o.firmware === 'uefi' ? ['-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=n'] : [],
  });
  let initStart = NaN;
  let initEnd = NaN;
  void vm.waitFor(/ramboot: \/init/, { timeoutMs: 600_000, fromStart: true }).then(() => { initStart = at(Date.now()); }, () => undefined);
  void vm.waitFor(/ramboot: root in RAM/, { timeoutMs: 600_000, fromStart: true }).then(() => { initEnd = at(Date.now()); }, () => undefined);
  // Early SSH: /init starts sshd itself (images since the early-SSH change), before systemd.
  let sshdEarly = NaN;
  void vm.waitFor(/ramboot: sshd up/, { timeoutMs: 600_000, fromStart: true }).then(() => { sshdEarly = at(Date.now()); }, () => undefined);

  // The admin: known_hosts from the API as soon as it has a key, then a verified login.
  const knownHosts = join(o.work, 'known_hosts');
  const deadline = started + 600_000;
  let ip = '';
  let verifiedAt = 0;
  let last = '';
  let uptime = NaN;
  for (;;) {
    if (Date.now() > deadline) throw new Error(`${o.name}: no verified SSH after 600 s (last: ${last})\n${vm.tail(30)}`);
    if (vm.seen(/Kernel panic|RAMBOOT-FATAL/)) throw new Error(`${o.name}: boot failed\n${vm.tail(30)}`);
    if (!ip) {
      // Each API call runs a client in the namespace (~0.3 s): the poll is about as fine as an admin's.
      const kh = await srv.api('GET', `/api/v1/machines/${o.mac}/known_hosts`);
      if (kh.status === 200 && /ssh-ed25519 /.test(kh.text)) {
        const m = (await srv.api('GET', `/api/v1/machines/${o.mac}`)).json as { status?: { ip?: string } };
        await writeFile(knownHosts, kh.text);
        ip = m.status?.ip ?? '';
      }
    }
    if (ip) {
      const r = await ns.run(['ssh', '-i', key, '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${knownHosts}`,
        '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR', '-o', 'IdentitiesOnly=yes', `root@${ip}`, 'cat /proc/uptime'], 30_000)
        .then((x) => x.stdout, (e: Error) => `failed: ${e.message.split('\n').slice(-2).join(' ')}`);
      if (/^[\d.]+ /.test(r)) {
        verifiedAt = at(Date.now());
        uptime = Number(r.split(' ')[0]);
        break;
      }
      last = r;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  // The analysis waits for the end of the boot; a boot that does not end in time still has its times.
  const guest = await ns.run(['ssh', '-i', key, '-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', `root@${ip}`, GUEST_SCRIPT], 300_000).catch((e: Error) => ({ stdout: `analysis failed: ${e.message.split('\n')[0] ?? ''}` }));
  const lines = guest.stdout.split('\n');
  // The kernel's start on the host clock: the verified login ran `cat /proc/uptime` last, just
  // before it returned (the placement errs late by the ssh exit, well under 0.5 s).
  const kernelHost = started + verifiedAt * 1000 - uptime * 1000;
  const mono = new Map<string, number>();
  for (const l of lines.slice(1, 1 + UNITS.length)) {
    const [u = '', v = ''] = l.trim().split(' ');
    if (/^\d+$/.test(v) && v !== '0') mono.set(u, Number(v) / 1e6);
  }
  const analyze = lines.find((l) => l.startsWith('Startup finished in')) ?? '';
  const kernelS = Number(/in ([\d.]+)s \(kernel\)/.exec(analyze)?.[1] ?? /in (\d+)ms \(kernel\)/.exec(analyze)?.[1] ?? NaN);
  const ev = ((await srv.api('GET', `/api/v1/machines/${o.mac}/events`)).json as { events: TimelineEvent[] }).events;
  const evAt = (name: string, last = false): number => {
    const hits = ev.filter((e) => e.event === name && e.time);
    const e = last ? hits.at(-1) : hits[0];
    return e?.time ? at(Date.parse(e.time)) : NaN;
  };
  const kernel = at(kernelHost);
  const onHost = (s: number | undefined): number => (s === undefined ? NaN : Math.round((kernel + s) * 10) / 10);
  const times: PxeBootTimes = {
    script: evAt('ipxe.script'),
    imageFetch: evAt('image.fetch', true),
    kernel,
    initStart,
    initEnd,
    systemd: onHost(kernelS),
    sshd: Number.isFinite(sshdEarly) ? sshdEarly : onHost(mono.get('ssh.service')),
    hostKeys: evAt('host-keys.reported'),
    verifiedSsh: verifiedAt,
  };
  const unitLines = [...mono.entries()].map(([u, s]) => `${u} active at ${s.toFixed(2)} s (kernel clock)`);
  const timeline = ev.map((e) => `${e.time ? at(Date.parse(e.time)).toFixed(1) : '-'} s ${e.event} ${e.message ?? ''}`);
  const analysis = [...unitLines, '--- server timeline (s from power-on)', ...timeline, ...lines.slice(1 + UNITS.length)].join('\n');
  return { times, analysis };
}
