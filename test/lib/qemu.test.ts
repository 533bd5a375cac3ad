import t from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirements } from './requirements.js';
import { ensureTestKernel } from './test-kernel.js';
import { buildBusyboxInitrd, DEFAULT_INITRD_MARKER } from './busybox-initrd.js';
import { startQemu } from './qemu.js';

// Self-test of the harness: the real Debian kernel + busybox initrd booted directly (-kernel/-initrd).

t.test('busybox initrd is deterministic', async (t) => {
  if (!requirements(t, ['busybox'])) return;
  const a = buildBusyboxInitrd({ marker: 'X-1', extraLines: ['echo hi'] });
  const b = buildBusyboxInitrd({ marker: 'X-1', extraLines: ['echo hi'] });
  t.ok(a.equals(b), 'same options -> same bytes');
  t.notOk(a.equals(buildBusyboxInitrd({ marker: 'X-2' })), 'marker changes the bytes');
  t.throws(() => buildBusyboxInitrd({ marker: 'bad marker"; reboot' }), /bad initrd marker/);
});

t.test('direct kernel boot reaches the initrd marker with our cmdline', async (t) => {
  if (!requirements(t, ['qemu', 'busybox', 'unshare', 'setpriv', 'apt-get', 'dpkg'])) return;
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-qemu-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const kernel = await ensureTestKernel();
  const initrd = join(dir, 'initrd.img');
  await writeFile(initrd, buildBusyboxInitrd({ extraLines: ['echo "EXTRA-LINE-RAN $((6*7))"'] }));

  const vm = startQemu(t, {
    name: 'qemu-selftest',
    kernel,
    initrd,
    append: 'console=ttyS0,115200 panic=-1 ramboot.selftest=hello-42',
    memoryMiB: 256,
  });
  const m = await vm.waitFor(new RegExp(`${DEFAULT_INITRD_MARKER} cmdline=(.*)$`), { timeoutMs: 240_000 });
  const cmdline = m[1] ?? '';
  t.match(cmdline, /(^| )ramboot\.selftest=hello-42( |$)/, 'custom cmdline arrived in /proc/cmdline');
  t.match(cmdline, /console=ttyS0,115200/);
  await vm.waitFor(/EXTRA-LINE-RAN 42/, { timeoutMs: 60_000 });
  const exit = await vm.waitForExit(120_000);
  t.equal(exit.code, 0, 'guest powered off, QEMU exited cleanly');
});

t.test('fail-fast: a kernel panic rejects waitFor early', async (t) => {
  if (!requirements(t, ['qemu', 'busybox', 'unshare', 'setpriv', 'apt-get', 'dpkg'])) return;
  const kernel = await ensureTestKernel();
  // no initrd and no root: the kernel panics (VFS: Unable to mount root fs)
  const vm = startQemu(t, {
    name: 'qemu-panic',
    kernel,
    append: 'console=ttyS0,115200 panic=-1',
    memoryMiB: 256,
  });
  const started = Date.now();
  await t.rejects(vm.waitFor(/THIS-MARKER-NEVER-APPEARS/, { timeoutMs: 240_000 }), /Kernel panic/);
  t.ok(Date.now() - started < 240_000, 'rejected before the timeout');
});
