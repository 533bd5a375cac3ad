import t, { type Test } from 'tap';
import { needExecutables, reportMissing, requirements } from './lib/requirements.js';
import { sourceDiskMissing, SPARSE_FILE, TREE_DIRS } from './lib/source-disk.js';
import type { Qemu } from './lib/qemu.js';
import {
  createLab, fileSha256, SOURCE_IP, SOURCE_MAC, TARGET_IP, TARGET_MAC, TARGET_SERIAL, TINY_SERIAL,
  type TimelineEvent, type TransferLab,
} from './lib/transfer-vms.js';

/**
 * `ramboot transfer` end to end (issue 11), SeaBIOS, QEMU TCG, in a namespace made here, with the real
 * server, the real lean RAM OS and a source VM whose Debian the test installed itself
 * (test/lib/source-disk.ts). One lab, VMs shared between the steps, in this order:
 *
 *   1. the source boots its disk (live), the target PXE-boots ramboot (`once`, a blank 4 GiB disk and a
 *      blank 512 MiB one); the source's tree listing equals the one made at build time.
 *   2. --plan on the tiny disk: refused with the numbers, nothing written anywhere.
 *   3. a wrong target host key (regenerated and sshd restarted, not reported): refused with the
 *      host-key message, nothing written. The keys are put back.
 *   4. live transfer killed (SIGKILL to the CLI's process group) after the first transfer.progress,
 *      then rerun with --after stay: completes (exit 0), the one-time key is gone from the RAM OS's
 *      authorized_keys; the test reboots the target.
 *   5. the target reboots into the copy: hostname, tree listing = the source's, the sparse file still
 *      sparse, fstab by the UUIDs blkid shows (no /dev/ line left), swap active; timeline in order.
 *   6. cold: the source PXE-boots ramboot with its disk, the target again, transfer --from <MAC>:
 *      completes, the target boots the copy again; the source disk is byte-for-byte unchanged.
 */
const REQS = ['root', 'qemu', 'dnsmasq', 'busybox', 'ip', 'tun', 'unshare', 'nsenter', 'setpriv', 'ssh-keygen', 'loop'] as const;
// a cold lean-image build plus a cold source-disk build can take 20 minutes before the boots
t.setTimeout(90 * 60_000);

const TINY_BYTES = 512 * 1024 * 1024;

function names(ev: TimelineEvent[]): string[] {
  return ev.map((e) => e.event);
}

/** Asserts started -> progress -> succeeded in order among the events after `since`. */
function assertStory(t: Test, ev: TimelineEvent[], since: number, who: string): void {
  const n = names(ev.slice(since));
  const started = n.indexOf('transfer.started');
  const progress = n.indexOf('transfer.progress', started + 1);
  const succeeded = n.indexOf('transfer.succeeded', progress + 1);
  t.ok(started >= 0 && progress > started && succeeded > progress, `${who} timeline: transfer.started -> transfer.progress -> transfer.succeeded (${n.filter((x) => x.startsWith('transfer.')).join(', ')})`);
  const p = ev.slice(since).find((e) => e.event === 'transfer.progress');
  t.match(p?.data, { bytes: Number, files: Number }, `${who}: progress events carry bytes and files`);
}

/** The timeline after `since` as "+SECONDS event message" lines (where a slow run spent its time). */
function timelineComment(ev: TimelineEvent[], since: number): string {
  const rest = ev.slice(since);
  const t0 = Date.parse(rest[0]?.time ?? '');
  return rest.filter((e) => e.event !== 'transfer.progress').map((e) => {
    const at = Date.parse(e.time ?? '');
    return `+${Number.isFinite(at - t0) ? ((at - t0) / 1000).toFixed(1) : '?'} ${e.event} ${e.message}`.slice(0, 160);
  }).join('\n');
}

/** Tree listing of TREE_DIRS on `ip`. */
async function treeList(lab: TransferLab, ip: string, knownHosts: string): Promise<string> {
  return lab.sshOk(ip, `/usr/local/bin/tree-sum ${TREE_DIRS.join(' ')}`, knownHosts);
}

/** Lines that differ (for a readable failure). */
function diffLines(a: string, b: string): string {
  const as = new Set(a.split('\n'));
  const bs = new Set(b.split('\n'));
  const out = [...a.split('\n').filter((l) => !bs.has(l)).map((l) => `- ${l}`), ...b.split('\n').filter((l) => !as.has(l)).map((l) => `+ ${l}`)];
  return out.slice(0, 40).join('\n');
}

/** The target disk (or the first `bytes` of it) is all zeros, seen from the RAM OS. */
async function blank(lab: TransferLab, kh: string, serial: string, bytes: number): Promise<boolean> {
  const r = await lab.ssh(TARGET_IP, `cmp -s -n ${bytes} /dev/disk/by-id/virtio-${serial} /dev/zero && echo blank`, kh);
  return r.stdout.trim() === 'blank';
}

/** Checks of the copied system, booted from the target's own disk. */
async function checkCopy(t: Test, lab: TransferLab, sourceList: string, label: string): Promise<void> {
  const kh = lab.copiedKnownHosts;
  t.equal((await lab.sshOk(TARGET_IP, 'hostname', kh)).trim(), lab.source.hostname, `${label}: hostname is the source's`);
  const list = await treeList(lab, TARGET_IP, kh);
  t.ok(list === sourceList, `${label}: tree listing (names, modes, owners, times, contents, hard links, xattrs, ACLs) equals the source's${list === sourceList ? '' : `\n${diffLines(sourceList, list)}`}`);
  const blocks = Number((await lab.sshOk(TARGET_IP, `stat -c %b ${SPARSE_FILE}`, kh)).trim());
  t.ok(blocks > 0 && blocks * 512 < 8 * 1024 * 1024, `${label}: ${SPARSE_FILE} is still sparse (${blocks} blocks of 512 for 64 MiB)`);
  const fstab = await lab.sshOk(TARGET_IP, 'cat /etc/fstab', kh);
  const blkid = await lab.sshOk(TARGET_IP, 'blkid -o export', kh);
  const uuids = new Set([...blkid.matchAll(/^UUID=(\S+)$/gm)].map((m) => m[1]));
  const entries = fstab.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')).map((l) => l.split(/\s+/));
  const byUuid = entries.filter((e) => /^UUID=/.test(e[0] ?? ''));
  t.ok(byUuid.length >= 3, `${label}: fstab names /, /home and swap by UUID:\n${fstab}`);
  t.ok(byUuid.every((e) => uuids.has((e[0] ?? '').slice(5))), `${label}: every fstab UUID exists on the target (blkid: ${[...uuids].join(', ')})`);
  t.notOk(entries.some((e) => /^\/dev\/(vd|sd|hd|nvme|xvd)/.test(e[0] ?? '')), `${label}: no fstab line names a disk by /dev name`);
  t.ok(entries.some((e) => e[1] === '/home'), `${label}: /home is still in fstab`);
  t.match(await lab.sshOk(TARGET_IP, 'findmnt -n -o SOURCE /home', kh), /^\/dev\/vda3\s*$/, `${label}: /home is mounted from the target's third partition`);
  t.match(await lab.sshOk(TARGET_IP, 'swapon --show=NAME,TYPE --noheadings', kh), /partition/, `${label}: swap is active`);
}

/** The CLI's one JSON result line (stdout), or undefined. */
function resultOf(stdout: string): Record<string, unknown> | undefined {
  const line = stdout.trim().split('\n').filter((l) => l.startsWith('{')).at(-1) ?? stdout.trim();
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

async function journey(t: Test): Promise<void> {
  const lab = await createLab(t, { name: 'e2e', progress: (l) => t.comment(l) });
  t.comment(`source disk: ${lab.source.disk}; lean image: ${lab.image.imageDir}`);
  const started = Date.now();
  const secs = () => ((Date.now() - started) / 1000).toFixed(0);

  // 1. both machines up
  const [src, tgt] = await Promise.all([lab.bootSource(), lab.bootTargetRamboot()]);
  t.comment(`source SSH after ${src.seconds.toFixed(0)} s; target (ramboot) SSH after ${tgt.seconds.toFixed(0)} s`);
  const sourceList = await treeList(lab, SOURCE_IP, lab.knownHosts);
  t.ok(sourceList === lab.source.treeList, `the live source's tree listing equals the build's${sourceList === lab.source.treeList ? '' : `\n${diffLines(lab.source.treeList, sourceList)}`}`);
  const ssh = ['--ssh-config', lab.sshConfig];
  // The target has two disks, so --disk auto refuses (by design): name the big one.
  const disk = ['--disk', `/dev/disk/by-id/virtio-${TARGET_SERIAL}`];
  const live = ['transfer', '--from', `root@${SOURCE_IP}`, '--to', TARGET_MAC, ...ssh, '--json'];
  // Each step needs the previous one's machines: stop at the first failing step.
  const step = async (name: string, fn: (t: Test) => Promise<void>): Promise<boolean> => {
    let done = false;
    await t.test(name, async (t) => {
      await fn(t);
      done = t.passing();
    });
    return done;
  };

  // 2. --plan on the tiny disk: refused with the numbers, nothing written
  if (!await step('--plan on a disk too small is refused with the numbers and changes nothing', async (t) => {
    const r = await lab.cli([...live, '--plan', '--disk', `/dev/disk/by-id/virtio-${TINY_SERIAL}`]);
    t.equal(r.code, 1, `exit 1 (stdout ${r.stdout.slice(0, 300)}; stderr ${r.stderr.slice(-300)})`);
    const out = `${r.stdout}\n${r.stderr}`;
    t.match(out, /\d+(\.\d+)?\s*(MiB|GiB|MB|GB|bytes|B)\b/, 'the refusal names sizes');
    t.match(out, /small|fit|needs?|available/i, `says it does not fit: ${out.replace(/\s+/g, ' ').slice(0, 400)}`);
    t.ok(await blank(lab, tgt.knownHosts, TINY_SERIAL, TINY_BYTES), 'the tiny disk is still blank');
    t.ok(await blank(lab, tgt.knownHosts, TARGET_SERIAL, 64 * 1024 * 1024), 'the big disk is still blank');
  })) return;

  // 3. the target's host key changes behind ramboot's back: refused, nothing written
  if (!await step('a wrong target host key is refused before anything is written', async (t) => {
    const before = await lab.eventCount(TARGET_MAC);
    await lab.sshOk(TARGET_IP, 'mkdir -p /root/hostkeys.orig && cp -a /etc/ssh/ssh_host_* /root/hostkeys.orig/ && rm -f /etc/ssh/ssh_host_* && for k in ed25519 ecdsa; do ssh-keygen -q -N \'\' -t $k -f /etc/ssh/ssh_host_${k}_key; done && systemctl restart ssh', tgt.knownHosts);
    const r = await lab.cli([...live, ...disk], 600_000);
    t.equal(r.code, 1, `exit 1 (stderr: ${r.stderr.trim().split('\n').slice(-3).join(' | ')})`);
    t.match(`${r.stdout}\n${r.stderr}`, /host key/i, 'the reason is the host key');
    // ramboot's known_hosts no longer matches (that is the point): this one command trusts the new
    // key blindly only to put the reported keys back.
    const restore = await lab.ns.run(['ssh', '-i', lab.key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR',
      `root@${TARGET_IP}`, `cmp -s -n ${64 * 1024 * 1024} /dev/disk/by-id/virtio-${TARGET_SERIAL} /dev/zero && echo blank; cp -a /root/hostkeys.orig/. /etc/ssh/ && systemctl restart ssh`]);
    t.equal(restore.stdout.trim(), 'blank', 'nothing was written to the target disk');
    await lab.sshOk(TARGET_IP, 'true', tgt.knownHosts);
    const after = names((await lab.timeline(TARGET_MAC)).slice(before));
    t.notOk(after.includes('transfer.started'), `no transfer started on the timeline (${after.join(', ')})`);
  })) return;

  // 4. live transfer, killed midway, rerun
  let sinceTarget = 0;
  if (!await step('live: killed after the first progress event, rerun completes', async (t) => {
    sinceTarget = await lab.eventCount(TARGET_MAC);
    const first = lab.spawnCli('transfer-killed', [...live, ...disk]);
    const p = await Promise.race([
      lab.waitForEvent(TARGET_MAC, 'transfer.progress', sinceTarget, 1_200_000),
      first.exited.then((e) => { throw new Error(`the transfer ended (${JSON.stringify(e)}) before any progress:\n${first.tail(20)}`); }),
    ]);
    t.comment(`first progress: ${p.message}`);
    first.killNow('SIGKILL');
    await first.exited;
    t.pass('CLI killed (SIGKILL to its process group) mid-copy');
    const adminKey = lab.source.pub.split(/\s+/)[1] ?? '';
    const foreign = (text: string) => text.split('\n').filter((l) => l.trim() !== '' && !l.includes(adminKey));
    const leftover = await lab.sshOk(TARGET_IP, 'cat /root/.ssh/authorized_keys', tgt.knownHosts);
    t.comment(`authorized_keys lines on the target other than the admin's after the kill: ${foreign(leftover).length}`);

    // --after stay: the RAM OS's authorized_keys can be read after the rerun; the test reboots.
    const copyStart = Date.now();
    const r = await lab.cli([...live, ...disk, '--after', 'stay'], 1_800_000);
    t.equal(r.code, 0, `rerun exit 0 (stderr: ${r.stderr.trim().split('\n').slice(-4).join(' | ')})`);
    const res = resultOf(r.stdout);
    t.match(res, { ok: true }, 'JSON result ok');
    t.comment(`rerun: ${((Date.now() - copyStart) / 1000).toFixed(0)} s; result ${JSON.stringify(res)}`);
    const keys = await lab.sshOk(TARGET_IP, 'cat /root/.ssh/authorized_keys', tgt.knownHosts);
    t.same(foreign(keys), [], 'no one-time key is left in the target\'s authorized_keys (only the admin\'s key)');
    await lab.ssh(TARGET_IP, 'systemctl reboot --no-block', tgt.knownHosts, 60_000);
    await tgt.vm.waitForExit(600_000);
    t.pass('the target rebooted (QEMU ended: -no-reboot)');
  })) return;

  // 5. the copy boots
  let diskVm: Qemu | undefined;
  if (!await step('the target boots its own disk into the copied system', async (t) => {
    const m = (await lab.srv.api('GET', `/api/v1/machines/${TARGET_MAC}`)).json as { boot: string };
    t.equal(m.boot, 'local', 'the target is set to boot local');
    const b = await lab.bootTargetDisk();
    diskVm = b.vm;
    t.comment(`target disk boot -> SSH (source's host keys) ${b.seconds.toFixed(0)} s`);
    await checkCopy(t, lab, sourceList, 'live');
    const keys = await lab.sshOk(TARGET_IP, 'cat /root/.ssh/authorized_keys', lab.copiedKnownHosts);
    t.equal(keys.trim(), lab.source.pub, 'authorized_keys on the copy is the source\'s (the one-time key is not in it)');
    const ev = await lab.timeline(TARGET_MAC);
    t.comment(`target timeline (live):\n${timelineComment(ev, sinceTarget)}`);
    assertStory(t, ev, sinceTarget, 'target');
    const local = names(ev.slice(sinceTarget));
    t.ok(local.indexOf('ipxe.local') > local.lastIndexOf('transfer.succeeded'), 'after the transfer the next PXE boot was told to boot the disk');
  })) return;

  // the one-time key: the rerun's RAM OS authorized_keys was cleaned before the reboot; the copy has
  // only the source's key (checked above). Now power the copy down for the cold round.
  if (diskVm) await lab.powerOff(diskVm, TARGET_IP, lab.copiedKnownHosts);

  // 6. cold
  if (!await step('cold: both machines in ramboot, transfer --from <source MAC>; the source disk is unchanged', async (t) => {
    await lab.powerOff(src.vm, SOURCE_IP, lab.knownHosts);
    const before = await fileSha256(lab.sourceOverlay);
    const [scold, tcold] = await Promise.all([lab.bootSourceCold(), lab.bootTargetRamboot('transfer-target-2')]);
    t.comment(`cold: source (ramboot) SSH after ${scold.seconds.toFixed(0)} s; target after ${tcold.seconds.toFixed(0)} s`);
    const sinceS = await lab.eventCount(SOURCE_MAC);
    const sinceT = await lab.eventCount(TARGET_MAC);
    const r = await lab.cli(['transfer', '--from', SOURCE_MAC, '--to', TARGET_MAC, ...disk, '--after', 'reboot', ...ssh, '--json'], 1_800_000);
    t.equal(r.code, 0, `cold exit 0 (stderr: ${r.stderr.trim().split('\n').slice(-4).join(' | ')})`);
    t.comment(`cold result ${JSON.stringify(resultOf(r.stdout))}`);
    assertStory(t, await lab.timeline(SOURCE_MAC), sinceS, 'source');
    const evT = await lab.timeline(TARGET_MAC);
    t.comment(`target timeline (cold):\n${timelineComment(evT, sinceT)}`);
    assertStory(t, evT, sinceT, 'target');
    t.notOk(await lab.ssh(SOURCE_IP, 'grep -q " /mnt" /proc/mounts && echo mounted', scold.knownHosts).then((x) => x.stdout.includes('mounted')), 'nothing of the source is left mounted');
    await scold.vm.stop();
    t.equal(await fileSha256(lab.sourceOverlay), before, 'the source disk (its overlay file) is byte-for-byte unchanged');
    await tcold.vm.waitForExit(600_000);
    const b = await lab.bootTargetDisk('transfer-target-disk-2');
    await checkCopy(t, lab, sourceList, 'cold');
    await b.vm.stop();
  })) return;
  t.comment(`transfer e2e total ${secs()} s`);
}

if (requirements(t, REQS) && reportMissing(t, sourceDiskMissing()) && needExecutables(t, [{ exe: 'ssh', pkg: 'openssh-client' }, { exe: 'qemu-img', pkg: 'qemu-utils' }])) {
  t.test('transfer: live (killed + rerun), plan refusal, wrong host key, cold; the copy boots', (t) => journey(t));
}
