import t, { type Test } from 'tap';
import { copyFile, link, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runOk } from '../common/run.js';
import { builtImage, type BuiltImage } from './lib/built-image.js';
import { buildDeployDisk, deployDiskMissing } from './lib/deploy-disk.js';
import { createNetns, type Netns } from './lib/netns.js';
import { qemuOptValue, startQemu, type Qemu } from './lib/qemu.js';
import { startRambootServer, type LogLine, type RambootServer } from './lib/ramboot-server.js';
import { needExecutables, reportMissing, requirements } from './lib/requirements.js';
import { tempDir } from './lib/temp-dir.js';

/**
 * Deploy end to end, in a network namespace made here (bridge + tap + dnsmasq as the site DHCP),
 * QEMU under TCG, the real server and the real lean RAM OS (built once per run by its inputs):
 *
 *   journey (SeaBIOS and OVMF): register `once` with a deploy of an uploaded artifact (the
 *   dual-firmware test disk, zstd), power on with a blank virtio disk -> PXE -> RAM OS -> the agent
 *   deploys -> deploy.succeeded -> once flipped to local -> the agent reboots (QEMU runs with
 *   -no-reboot, so the test powers the VM on again with the same disk) -> PXE asks again, gets
 *   `exit 1` -> the firmware boots the deployed disk, which prints its marker.
 *
 *   failures (SeaBIOS, one booted VM, two disks): auto with two disks fails listing both; a disk too
 *   small is refused before anything is written; a wrong sha256 fails at verify; none flips the
 *   machine and SSH stays up throughout.
 */

const BASE = 'http://10.99.0.1:8080';
const FILES = 'http://10.99.0.1:8081';
const BIN = fileURLToPath(new URL('../bin/ramboot.js', import.meta.url));
const MARKER = 'RAMBOOT-DEPLOYED-DISK-OK';
const MARKER_RE = new RegExp(`${MARKER} cmdline=(.*)$`);
const REQS = ['root', 'qemu', 'ovmf', 'dnsmasq', 'busybox', 'ip', 'tun', 'unshare', 'nsenter', 'setpriv', 'ssh-keygen'] as const;
// A cold image build can take 15 minutes before the boots.
t.setTimeout(45 * 60_000);

interface Shared {
  image: BuiltImage;
  /** The test disk, zstd-compressed (what is uploaded as the artifact). */
  zst: string;
  zstSha256: string;
}

interface TimelineEvent {
  event: string;
  message: string;
  data?: Record<string, unknown>;
}

/** Data dir with the built image (hard links: no 100 MB copy), a key pair, the netns, the server, the artifact. */
async function setup(t: Test, shared: Shared, name: string): Promise<{ ns: Netns; srv: RambootServer; key: string; pub: string; work: string }> {
  const work = tempDir(t, `deploy-${name}`);
  const imgDir = join(work, 'data', 'images', 'default');
  await mkdir(imgDir, { recursive: true });
  for (const f of ['manifest.json', ...Object.keys(shared.image.manifest.files)]) {
    await link(join(shared.image.imageDir, f), join(imgDir, f)).catch(() => copyFile(join(shared.image.imageDir, f), join(imgDir, f)));
  }
  await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ramboot-deploy-test', '-f', join(work, 'id')]);
  const pub = (await readFile(join(work, 'id.pub'), 'utf8')).trim();
  const ns = await createNetns(t, { name: `deploy-${name}`, dhcp: { boot: { ipxe: `${BASE}/boot.ipxe` } } });
  const srv = await startRambootServer(t, { dataDir: join(work, 'data'), httpHost: ns.address, httpPort: 8080, publicUrl: BASE, wrap: ns.wrap, name: `ramboot-deploy-${name}` });
  // The artifact goes up through the CLI, as an admin would upload it.
  const up = await ns.run([process.execPath, BIN, 'artifacts', 'upload', shared.zst, '--name', 'disk.zst', '--json', '--server', BASE, '--token-file', srv.tokenFile], 120_000);
  t.match(JSON.parse(up.stdout), { name: 'disk.zst', format: 'zstd', sha256: shared.zstSha256 }, 'artifact uploaded with the CLI');
  return { ns, srv, key: join(work, 'id'), pub, work };
}

function ssh(ns: Netns, key: string, ip: string, cmd: string): Promise<{ stdout: string }> {
  return ns.run(['ssh', '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR', `root@${ip}`, cmd], 120_000);
}

async function timeline(srv: RambootServer, mac: string): Promise<TimelineEvent[]> {
  return ((await srv.api('GET', `/api/v1/machines/${mac}/events`)).json as { events: TimelineEvent[] }).events;
}

/** OVMF: NIC first, then the disk (it drops boot options QEMU's order does not name); no PXEv6 detour. */
function firmwareArgs(firmware: 'bios' | 'uefi'): string[] {
  return firmware === 'uefi' ? ['-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=n'] : [];
}

function diskArgs(path: string, id: string, bootindex: number | undefined, serial: string): string[] {
  return ['-drive', `if=none,id=${id},format=raw,file=${qemuOptValue(path)}`, '-device', `virtio-blk-pci,drive=${id},serial=${serial}${bootindex !== undefined ? `,bootindex=${bootindex}` : ''}`];
}

function powerOn(t: Test, ns: Netns, name: string, firmware: 'bios' | 'uefi', mac: string, memoryMiB: number, disks: string[], failOn?: RegExp | null): Qemu {
  return startQemu(t, {
    name,
    firmware,
    wrap: ns.wrap,
    memoryMiB,
    smp: 2,
    nics: [{ type: 'tap', ifname: ns.tap, mac, bootindex: 1 }],
    extraArgs: [...disks, ...firmwareArgs(firmware)],
    ...(failOn !== undefined ? { failOn } : {}),
  });
}

async function journey(t: Test, shared: Shared, firmware: 'bios' | 'uefi'): Promise<void> {
  const mac = firmware === 'bios' ? '52:54:00:de:91:01' : '52:54:00:de:91:02';
  const { ns, srv, key, pub, work } = await setup(t, shared, `journey-${firmware}`);
  const put = await srv.api('PUT', `/api/v1/machines/${mac}`, { hostname: `deploy-${firmware}`, sshKeys: [pub], boot: 'once', deploy: { artifact: 'disk.zst', after: 'reboot' } });
  t.equal(put.status, 201, `machine registered with a deploy: ${put.text.slice(0, 200)}`);
  const id = (put.json as { deploy: { id: string } }).deploy.id;
  const disk = join(work, 'target.raw');
  await runOk('qemu-img', ['create', '-q', '-f', 'raw', disk, '256M']);
  const memoryMiB = Math.max(shared.image.manifest.minRamMiB, 1024);
  const disks = diskArgs(disk, 'd0', 2, 'RBTARGET');

  const started = Date.now();
  const secs = () => ((Date.now() - started) / 1000).toFixed(1);
  const vm = powerOn(t, ns, `deploy-${firmware}-1`, firmware, mac, memoryMiB, disks);
  const ready = await srv.waitForLog((l) => l['event'] === 'phone-home.ready' && l['mac'] === mac, 600_000);
  const ip = String(ready['ip'] ?? '');
  t.match(ip, /^10\.99\.0\.\d+$/, 'phoned home from its DHCP address');
  t.equal((await ssh(ns, key, ip, 'echo ssh-ok')).stdout.trim(), 'ssh-ok', 'SSH with the seed key');
  const sshAt = secs();
  t.comment(`${firmware}: power-on -> SSH ${sshAt} s`);
  t.equal(((await srv.api('GET', `/api/v1/machines/${mac}`)).json as { boot: string }).boot, 'once', 'phone-home does not flip a machine that has a deploy');

  const done = await srv.waitForLog((l) => (l['event'] === 'deploy.succeeded' || l['event'] === 'deploy.failed') && l['mac'] === mac, 600_000);
  t.equal(done['event'], 'deploy.succeeded', `deploy ended: ${JSON.stringify(done)}`);
  const deployedAt = secs();
  t.comment(`${firmware}: power-on -> deploy.succeeded ${deployedAt} s`);
  const m = (await srv.api('GET', `/api/v1/machines/${mac}`)).json as { boot: string; status: { deploy?: Record<string, unknown> } };
  t.equal(m.boot, 'local', 'deploy.succeeded flipped once to local');
  t.match(m.status.deploy, { id, state: 'succeeded', finishedAt: String });

  // after: reboot. QEMU runs with -no-reboot: the reboot ends it, and the test powers the VM on again.
  await vm.waitForExit(300_000);
  const second = Date.now();
  const vm2 = powerOn(t, ns, `deploy-${firmware}-2`, firmware, mac, memoryMiB, disks, /Kernel panic/);
  const booted = await vm2.waitFor(MARKER_RE, { timeoutMs: 600_000 });
  const diskAt = ((Date.now() - second) / 1000).toFixed(1);
  t.match(booted[1] ?? '', firmware === 'bios' ? /ramboot\.loader=syslinux/ : /ramboot\.loader=systemd-boot/, `${firmware}: the deployed disk booted by itself`);
  t.comment(`${firmware}: second power-on -> deployed disk's marker ${diskAt} s (total ${secs()} s)`);
  await vm2.waitForExit(120_000).catch(() => undefined);

  const ev = await timeline(srv, mac);
  const names = ev.map((e) => e.event);
  const sshdReady = (ev as (TimelineEvent & { time?: string })[]).find((e) => e.event === 'os.sshd.ready')?.time;
  if (sshdReady) t.comment(`${firmware}: power-on -> sshd.ready event ${((Date.parse(sshdReady) - started) / 1000).toFixed(1)} s`);
  // the whole story, in order
  const story = ['api.registered', 'ipxe.script', 'phone-home.ready', 'deploy.started', 'artifact.fetch', 'deploy.succeeded', 'ipxe.local'];
  let at = -1;
  for (const want of story) {
    const i = names.indexOf(want, at + 1);
    t.ok(i > at, `timeline: ${want} after the previous step`);
    if (i > at) at = i;
  }
  t.notOk(names.includes('deploy.failed'), 'no failure on the timeline');
  const stages = ev.filter((e) => e.event.startsWith('deploy.')).map((e) => String(e.data?.['stage'] ?? ''));
  t.comment(`${firmware}: deploy stages reported: ${stages.join(' -> ')}`);
  const ORDER = ['select-disk', 'fetch', 'write', 'verify', 'partition', 'grow', 'fix', 'finish'];
  const idx = stages.map((s) => ORDER.indexOf(s));
  t.ok(idx.every((v, i) => v >= 0 && (i === 0 || v >= (idx[i - 1] ?? 0))), `stages are known and in order: ${stages.join(', ')}`);
  t.equal(stages[0], 'select-disk');
  t.equal(stages.at(-1), 'finish');
  t.ok(ev.every((e) => !e.event.startsWith('deploy.') || e.data?.['id'] === id), 'every deploy event names the attempt');
  t.match(ev.find((e) => e.event === 'ipxe.local')?.message ?? '', /local/, 'the second PXE boot was told to boot the disk');
}

async function failures(t: Test, shared: Shared): Promise<void> {
  const mac = '52:54:00:de:91:03';
  const { ns, srv, key, pub, work } = await setup(t, shared, 'failures');
  // The same test disk over plain HTTP, for a deploy by URL (with a wrong sha256).
  const www = join(work, 'www');
  await mkdir(www);
  await link(shared.zst, join(www, 'disk.img.zst')).catch(() => copyFile(shared.zst, join(www, 'disk.img.zst')));
  ns.spawn('httpd', ['busybox', 'httpd', '-f', '-p', '10.99.0.1:8081', '-h', www]);
  await ns.waitForHttp(`${FILES}/disk.img.zst`);

  const put = await srv.api('PUT', `/api/v1/machines/${mac}`, { hostname: 'deploy-failures', sshKeys: [pub], boot: 'once', deploy: { artifact: 'disk.zst' } });
  t.equal(put.status, 201, `machine registered with a deploy: ${put.text.slice(0, 200)}`);
  let id = (put.json as { deploy: { id: string } }).deploy.id;
  const small = join(work, 'small.raw');
  const big = join(work, 'big.raw');
  await runOk('qemu-img', ['create', '-q', '-f', 'raw', small, '32M']);
  await runOk('qemu-img', ['create', '-q', '-f', 'raw', big, '256M']);
  powerOn(t, ns, 'deploy-failures', 'bios', mac, Math.max(shared.image.manifest.minRamMiB, 1024), [...diskArgs(small, 'd0', undefined, 'RBSMALL'), ...diskArgs(big, 'd1', undefined, 'RBBIG')]);
  const failedOf = (attempt: string) => srv.waitForLog((l) => l['event'] === 'deploy.failed' && l['mac'] === mac && l['id'] === attempt, 600_000);
  const lastFailure = async (attempt: string): Promise<TimelineEvent | undefined> => (await timeline(srv, mac)).find((e) => e.event === 'deploy.failed' && e.data?.['id'] === attempt);

  // 1. auto with two disks: refused, naming both
  await failedOf(id);
  const auto = await lastFailure(id);
  t.match(auto, { data: { stage: 'select-disk' }, message: /2 disks.*\/dev\/vd[ab].*\/dev\/vd[ab]/ }, `auto with two disks: ${auto?.message}`);
  const ready = await srv.waitForLog((l) => l['event'] === 'phone-home.ready' && l['mac'] === mac, 600_000);
  const ip = String(ready['ip'] ?? '');
  t.equal((await ssh(ns, key, ip, 'echo ssh-ok')).stdout.trim(), 'ssh-ok', 'SSH up after the failure');

  // 2. the small disk (32 MiB) for a 64 MiB image: refused before anything is written
  const p2 = await srv.api('PATCH', `/api/v1/machines/${mac}`, { deploy: { artifact: 'disk.zst', disk: { serial: 'RBSMALL' } } });
  id = (p2.json as { deploy: { id: string } }).deploy.id;
  await ssh(ns, key, ip, 'systemctl restart --no-block ramboot-deploy');
  await failedOf(id);
  const tooSmall = await lastFailure(id);
  t.match(tooSmall, { data: { stage: 'select-disk' }, message: /larger than/ }, `disk too small: ${tooSmall?.message}`);
  t.equal((await ssh(ns, key, ip, 'cmp -s /dev/disk/by-id/virtio-RBSMALL /dev/zero -n 33554432 && echo untouched')).stdout.trim(), 'untouched', 'nothing was written to the small disk');

  // 3. a wrong sha256: fails at verify
  const p3 = await srv.api('PATCH', `/api/v1/machines/${mac}`, { deploy: { url: `${FILES}/disk.img.zst`, sha256: '0'.repeat(64), disk: { serial: 'RBBIG' } } });
  id = (p3.json as { deploy: { id: string } }).deploy.id;
  await ssh(ns, key, ip, 'systemctl restart --no-block ramboot-deploy');
  await failedOf(id);
  const badSum = await lastFailure(id);
  t.match(badSum, { data: { stage: 'verify' } }, `wrong sha256: ${badSum?.message}`);

  const m = (await srv.api('GET', `/api/v1/machines/${mac}`)).json as { boot: string; status: { deploy?: Record<string, unknown> } };
  t.equal(m.boot, 'once', 'no failure flipped the machine');
  t.match(m.status.deploy, { id, state: 'failed', stage: 'verify' });
  t.equal((await ssh(ns, key, ip, 'echo still-up')).stdout.trim(), 'still-up', 'SSH still up after three failed deploys');
  const names = (await timeline(srv, mac)).map((e) => e.event);
  t.equal(names.filter((n) => n === 'deploy.failed').length, 3, 'three failures on the timeline');
  t.notOk(names.includes('deploy.succeeded'));
}

if (requirements(t, REQS) && reportMissing(t, deployDiskMissing()) && needExecutables(t, [{ exe: 'zstd', pkg: 'zstd' }, { exe: 'ssh', pkg: 'openssh-client' }, { exe: 'qemu-img', pkg: 'qemu-utils' }])) {
  let shared: Shared | undefined;
  t.before(async () => {
    const image = await builtImage({ flavour: 'lean', onLine: (l) => (/"event":"build\.(start|done|step)"/.test(l) ? t.comment(`lean: ${l.slice(0, 160)}`) : undefined) });
    t.comment(`lean image: ${image.imageDir} (${image.built ? `built in ${image.buildSeconds} s` : 'cached'})`);
    const raw = await buildDeployDisk({ marker: MARKER });
    const dir = tempDir(t, 'deploy-artifact');
    const zst = join(dir, 'disk.img.zst');
    await runOk('zstd', ['-q', '-T0', '-19', '-o', zst, raw]);
    const sum = (await runOk('sha256sum', [zst])).stdout.split(' ')[0] ?? '';
    shared = { image, zst, zstSha256: sum };
  });
  const need = (): Shared => {
    if (!shared) throw new Error('setup failed');
    return shared;
  };
  t.test('BIOS journey: PXE -> RAM OS -> deploy -> local -> the deployed disk boots', (t) => journey(t, need(), 'bios'));
  t.test('UEFI journey: PXE -> RAM OS -> deploy -> local (exit 1) -> the deployed disk boots', (t) => journey(t, need(), 'uefi'));
  t.test('failures: two disks with auto, disk too small, wrong sha256; never flipped, SSH stays up', (t) => failures(t, need()));
}
