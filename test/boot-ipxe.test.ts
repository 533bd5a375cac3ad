import t, { type Test } from 'tap';
import { tempDir } from './lib/temp-dir.js';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirements } from './lib/requirements.js';
import { writeTestImage } from './lib/test-image.js';
import { DEFAULT_INITRD_MARKER } from './lib/busybox-initrd.js';
import { startQemu } from './lib/qemu.js';
import { startRambootServer, type RambootServer } from './lib/ramboot-server.js';
import { runOk } from '../common/run.js';

// End to end against the real server: QEMU (SeaBIOS + its iPXE NIC ROM, user-mode network) fetches
// /boot.ipxe, the per-MAC script, the kernel and initrd, and the busybox initrd prints /proc/cmdline.

const MAC = '52:54:00:12:34:56';
const MARKER_RE = new RegExp(`${DEFAULT_INITRD_MARKER} cmdline=(.*)$`);
const REQS = ['qemu', 'busybox', 'unshare', 'setpriv', 'apt-get', 'dpkg', 'ssh-keygen'] as const;

function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

async function sshPublicKey(dir: string): Promise<string> {
  const key = join(dir, 'id_ed25519');
  await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ramboot-test', '-f', key]);
  return (await readFile(`${key}.pub`, 'utf8')).trim();
}

async function registerMachine(t: Test, srv: RambootServer, sshKey: string): Promise<void> {
  const res = await srv.api('PUT', `/api/v1/machines/${MAC}`, {
    hostname: 'boot-test-1',
    sshKeys: [sshKey],
    boot: 'ramboot',
    image: 'test',
  });
  const ok = res.status === 200 || res.status === 201;
  t.ok(ok, `PUT machine -> ${res.status}`);
  // no point booting a VM for minutes when registration failed
  if (!ok) throw new Error(`PUT /api/v1/machines/${MAC} -> ${res.status} ${res.text.slice(0, 500)}`);
}

/** Server + test image + registered machine. */
async function setup(t: Test, publicUrl: string | ((port: number) => string)): Promise<RambootServer> {
  const dataDir = tempDir(t, 'boot-ipxe');
  await writeTestImage(dataDir, 'test', { minRamMiB: 256 });
  const srv = await startRambootServer(t, { dataDir, publicUrl });
  await registerMachine(t, srv, await sshPublicKey(tempDir(t, 'boot-key')));
  return srv;
}

async function commentEvents(t: Test, srv: RambootServer): Promise<void> {
  const ev = await srv.api('GET', `/api/v1/machines/${MAC}/events`);
  t.comment(`events (${ev.status}): ${ev.text.slice(0, 2000)}`);
}

t.test('iPXE boots a registered machine (ramboot), then stops booting it once switched to local', async (t) => {
  if (!requirements(t, [...REQS])) return;
  const srv = await setup(t, (port) => `http://10.0.2.2:${port}`);
  const publicUrl = srv.publicUrl;

  await t.test('boot: ramboot -> per-MAC script, kernel and initrd over HTTP', async (t) => {
    const vm = startQemu(t, {
      name: 'boot-ipxe-ramboot',
      memoryMiB: 512,
      nics: [{ type: 'user', mac: MAC, bootfile: `${publicUrl}/boot.ipxe` }],
    });
    const m = await vm.waitFor(MARKER_RE, { timeoutMs: 300_000 });
    const cmdline = m[1] ?? '';
    t.comment(`guest /proc/cmdline: ${cmdline}`);
    t.match(cmdline, new RegExp(`ds=nocloud-net;s=${esc(publicUrl)}/cloud-init/${esc(MAC)}/`), 'per-MAC NoCloud seed on the cmdline');
    t.match(cmdline, /console=ttyS0,115200/, 'image cmdline from the manifest');
    t.match(cmdline, new RegExp(`BOOTIF=01-${MAC.replace(/:/g, '-')}( |$)`), 'BOOTIF of the booting NIC');
    await vm.waitForExit(120_000);
    await commentEvents(t, srv);
  });

  await t.test('boot: ramboot on UEFI (OVMF + the NIC\'s iPXE EFI ROM) -> initrd= on the cmdline', async (t) => {
    if (!requirements(t, ['ovmf'])) return;
    const vm = startQemu(t, {
      name: 'boot-ipxe-ramboot-uefi',
      firmware: 'uefi',
      memoryMiB: 512,
      // OVMF ignores -boot n: the NIC needs a bootindex
      nics: [{ type: 'user', mac: MAC, bootindex: 1, bootfile: `${publicUrl}/boot.ipxe` }],
    });
    const m = await vm.waitFor(MARKER_RE, { timeoutMs: 300_000 });
    const cmdline = m[1] ?? '';
    t.comment(`guest /proc/cmdline: ${cmdline}`);
    t.match(cmdline, new RegExp(`ds=nocloud-net;s=${esc(publicUrl)}/cloud-init/${esc(MAC)}/`), 'per-MAC NoCloud seed on the cmdline');
    t.match(cmdline, /(^| )initrd=initrd\.img( |$)/, 'EFI boot names the initrd on the kernel line');
    await vm.waitForExit(120_000);
  });

  await t.test('boot: local -> iPXE exits, the BIOS moves on, no kernel', async (t) => {
    const res = await srv.api('PATCH', `/api/v1/machines/${MAC}`, { boot: 'local' });
    t.equal(res.status, 200, 'PATCH boot=local');
    if (res.status !== 200) throw new Error(`PATCH -> ${res.status} ${res.text.slice(0, 500)}`);
    const vm = startQemu(t, {
      name: 'boot-ipxe-local',
      memoryMiB: 512,
      nics: [{ type: 'user', mac: MAC, bootfile: `${publicUrl}/boot.ipxe` }],
      // here "No bootable device" is the expected outcome, the kernel/marker is the failure
      failOn: new RegExp(`Linux version|${DEFAULT_INITRD_MARKER}|Kernel panic`),
    });
    // SeaBIOS tries the (empty) disk and CD before the NIC ROM: only what follows iPXE counts
    await vm.waitFor(/iPXE .*starting execution/, { timeoutMs: 300_000 });
    await vm.waitFor(new RegExp(`${esc(publicUrl)}/boot\\.ipxe\\.\\.\\. ok`), { timeoutMs: 300_000 });
    t.pass('iPXE fetched the boot script');
    await vm.waitFor(/No bootable device|Boot failed/, { timeoutMs: 300_000 });
    t.pass('iPXE exited and the BIOS moved on');
    t.notOk(vm.seen(new RegExp(DEFAULT_INITRD_MARKER)), 'initrd marker never appeared');
    t.notOk(vm.seen(/Linux version/), 'no kernel started');
    t.notOk(vm.seen(/\/images\/test\/vmlinuz/), 'the kernel was not even fetched');
    await commentEvents(t, srv);
  });
});

t.test('locked-down network: restrict=on, server only reachable through guestfwd at 10.0.2.100', async (t) => {
  if (!requirements(t, [...REQS])) return;
  const srv = await setup(t, 'http://10.0.2.100');
  const vm = startQemu(t, {
    name: 'boot-ipxe-restricted',
    memoryMiB: 512,
    nics: [
      {
        type: 'user',
        mac: MAC,
        restrict: true,
        guestfwd: [`tcp:10.0.2.100:80-cmd:busybox nc 127.0.0.1 ${srv.port}`],
        bootfile: 'http://10.0.2.100/boot.ipxe',
      },
    ],
  });
  const m = await vm.waitFor(MARKER_RE, { timeoutMs: 300_000 });
  const cmdline = m[1] ?? '';
  t.comment(`guest /proc/cmdline: ${cmdline}`);
  t.match(cmdline, new RegExp(`ds=nocloud-net;s=http://10\\.0\\.2\\.100/cloud-init/${esc(MAC)}/`), 'seed URL uses the public URL');
  await vm.waitForExit(120_000);
});
