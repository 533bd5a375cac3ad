// The deploy test disk (deploy-disk.ts) boots from a virtio disk with both firmwares: SeaBIOS via
// gptmbr.bin + syslinux, OVMF via systemd-boot at the removable-media path.
import t from 'tap';
import { existsSync, statSync } from 'node:fs';
import { buildDeployDisk, deployDiskMissing, DEPLOY_DISK_MARKER_FILE } from './deploy-disk.js';
import { missingRequirements, reportMissing } from './requirements.js';
import { qemuOptValue, startQemu } from './qemu.js';
import { run } from './run.js';
import { tempDir } from './temp-dir.js';

const MARKER = 'RAMBOOT-DEPLOY-DISK-OK';

function ready(t: Parameters<typeof reportMissing>[0], uefi: boolean): boolean {
  const reqs = ['qemu', 'busybox', 'unshare', 'setpriv', 'apt-get', 'dpkg', ...(uefi ? (['ovmf'] as const) : [])] as const;
  return reportMissing(t, [...missingRequirements(reqs), ...deployDiskMissing()]);
}

t.test('the image: GPT, ESP with the legacy-bootable attribute, gptmbr in the MBR, files on the FAT; cached', async (t) => {
  if (!ready(t, false)) return;
  const img = await buildDeployDisk({ marker: MARKER, sizeMiB: 64 });
  t.equal(statSync(img).size, 64 * 1024 * 1024);
  t.equal(await buildDeployDisk({ marker: MARKER, sizeMiB: 64 }), img, 'same inputs: the cached file');
  const info = (await run(['sgdisk', '-i', '1', img])).stdout;
  t.match(info, /EFI system partition/);
  t.match(info, /Attribute flags: 0000000000000004/, 'legacy BIOS bootable (bit 2)');
  t.match((await run(['sgdisk', '-v', img])).stdout, /No problems found/);
  const dir = (await run(['mdir', '-/', '-a', '-b', '-i', `${img}@@1048576`, '::'])).stdout;
  for (const f of ['EFI/BOOT/BOOTX64.EFI', 'loader/entries/deploy.conf', 'vmlinuz', 'initrd.img', 'syslinux.cfg', 'ldlinux.sys', 'ldlinux.c32', DEPLOY_DISK_MARKER_FILE]) {
    t.match(dir, `::/${f}\n`, f);
  }
  const marker = (await run(['mtype', '-i', `${img}@@1048576`, `::${DEPLOY_DISK_MARKER_FILE}`])).stdout;
  t.equal(marker.trim(), MARKER);
  // Concurrent builds of a new key: both succeed, one file.
  const cacheDir = tempDir(t, 'deploy-disk-cache');
  const [a, b] = await Promise.all([buildDeployDisk({ marker: 'RACE', sizeMiB: 40, cacheDir }), buildDeployDisk({ marker: 'RACE', sizeMiB: 40, cacheDir })]);
  t.equal(a, b);
  t.ok(existsSync(a));
  await t.rejects(buildDeployDisk({ marker: 'x; reboot', sizeMiB: 64 }), /bad deploy disk marker/);
  await t.rejects(buildDeployDisk({ marker: 'OK', sizeMiB: 8 }), /bad deploy disk size/);
});

for (const firmware of ['bios', 'uefi'] as const) {
  t.test(`${firmware}: the disk boots to the marker from a virtio disk (${firmware === 'bios' ? 'SeaBIOS, syslinux' : 'OVMF, systemd-boot'})`, async (t) => {
    if (!ready(t, firmware === 'uefi')) return;
    const img = await buildDeployDisk({ marker: MARKER, sizeMiB: 64 });
    // bootindex on the disk: OVMF without persistent variables only tries what QEMU's boot order
    // names (netboot-facts.md). snapshot=on: the cached image is never written.
    const vm = startQemu(t, {
      name: `deploy-disk-${firmware}`,
      firmware,
      memoryMiB: 256,
      extraArgs: ['-drive', `if=none,id=d0,format=raw,snapshot=on,file=${qemuOptValue(img)}`, '-device', 'virtio-blk-pci,drive=d0,bootindex=1'],
    });
    const loader = firmware === 'bios' ? 'syslinux' : 'systemd-boot';
    const m = await vm.waitFor(new RegExp(`${MARKER} cmdline=(.*)$`), { timeoutMs: 300_000 });
    t.match(m[1] ?? '', new RegExp(`(^| )ramboot\\.loader=${loader}( |$)`), `booted through ${loader}`);
    const exit = await vm.waitForExit(120_000);
    t.equal(exit.code, 0, 'the initrd powered the guest off');
  });
}
