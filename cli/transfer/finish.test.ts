import { spawnSync } from 'node:child_process';
import t from 'tap';
import { assetPath } from '../../common/assets.js';
import { findExecutable, isCI } from '../../test/lib/requirements.js';
import { finishArgs, FinishProtocol } from './finish.js';
import { gptPlan } from '../../test/lib/transfer/plan-fixture.js';
import type { TransferStep } from './events.js';

t.test('finish.sh arguments from the plan: root, disk, firmware, ESP, the source hostname', async (t) => {
  const plan = gptPlan();
  t.same(finishArgs(plan), ['/mnt/ramboot-transfer', '/dev/vda', 'bios', '-', 'srcvm']);
  plan.boot = { ...plan.boot, mode: 'uefi', esp: { device: '/dev/vda1', mountpoint: '/boot/efi', added: true } };
  plan.source.hostname = 'bad host;name';
  t.same(finishArgs(plan), ['/mnt/ramboot-transfer', '/dev/vda', 'uefi', '/boot/efi', '-'], 'an odd hostname is kept as it is, never passed on');
  plan.boot.esp!.mountpoint = '/boot/../efi';
  t.throws(() => finishArgs(plan), { name: 'StageError', stage: 'bootloader' } as unknown as Error);
});

t.test("finish.sh's stdout protocol", async (t) => {
  const steps: TransferStep[] = [];
  const notes: string[] = [];
  const warns: string[] = [];
  const p = new FinishProtocol({ onStep: (s) => steps.push(s), note: (m) => notes.push(m), warn: (m) => warns.push(m) });
  for (const l of ['@@step fix', 'noise', '@@step initramfs', '@@note the initramfs of 6.1.0-9 lacks virtio_blk: adding it', '@@warn the copied kernel 5.10 has no module nvme', '@@step bootloader', '@@step reboot', '@@done']) p.line(l);
  t.same(steps, ['fix', 'initramfs', 'bootloader'], 'only known steps');
  t.same(notes, ['the initramfs of 6.1.0-9 lacks virtio_blk: adding it']);
  t.same(warns, ['the copied kernel 5.10 has no module nvme']);
  t.ok(p.done);
  t.equal(p.failed, undefined);
  p.line('@@failed bootloader grub-install failed: cannot find EFI directory');
  t.same(p.failed, { stage: 'bootloader', reason: 'grub-install failed: cannot find EFI directory' });
});

t.test('the remote scripts pass shellcheck (POSIX sh)', async (t) => {
  if (!findExecutable('shellcheck')) {
    if (isCI()) t.fail('shellcheck missing under CI=true');
    else t.pass('skipped: shellcheck missing', { skip: true });
    return;
  }
  const r = spawnSync('shellcheck', ['-s', 'sh', assetPath('transfer', 'finish.sh')], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stdout);
});

t.test('finish.sh refuses bad usage without touching anything', async (t) => {
  const r = spawnSync('sh', ['-s', '--', '/nonexistent-root', '/dev/null', 'bios', '-', '-'], { input: spawnSync('cat', [assetPath('transfer', 'finish.sh')], { encoding: 'utf8' }).stdout, encoding: 'utf8' });
  t.equal(r.status, 1);
  t.match(r.stdout, /^@@failed fix \/nonexistent-root\/etc is missing/m);
  const u = spawnSync('sh', ['-s', '--', 'only-one'], { input: 'x', encoding: 'utf8' });
  t.not(u.status, 0);
});
