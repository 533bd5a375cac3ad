import type { Plan } from '../../../cli/transfer/types.js';

/** A Plan for tests: the E2E source (GPT, BIOS boot, ext4 root, ext4 /home, swap) on a 4 GiB target. */
export function gptPlan(): Plan {
  const MiB = 1024 * 1024;
  const part = (number: number, start: number, size: number, type: string, role: Plan['partitions'][number]['role'], name: string | null) => ({
    number, device: `/dev/vda${number}`, startSector: start / 512, sizeSectors: size / 512, startBytes: start, sizeBytes: size, type, name, attrs: [] as string[],
    bootable: false, role, added: false, source: { device: `/dev/vda${number}`, sizeBytes: size }, sizing: 'scaled' as const,
  });
  return {
    kind: 'plan',
    schema: 1,
    source: { hostname: 'srcvm', mode: 'live', bootMode: 'bios', disk: { device: '/dev/vda', requested: '/dev/vda', sizeBytes: 3072 * MiB, sectorSize: 512, byId: [] } },
    target: { hostname: 'ramboot', bootMode: 'bios', disk: { device: '/dev/vda', requested: 'auto', sizeBytes: 4096 * MiB, sectorSize: 512, byId: [] } },
    table: 'gpt',
    partitions: [
      part(1, 1 * MiB, 1 * MiB, '21686148-6449-6E6F-744E-656564454649', 'bios-boot', 'bios'),
      part(2, 2 * MiB, 2400 * MiB, '0FC63DAF-8483-4772-8E79-3D69D8477DE4', 'data', "root 'fs'"),
      part(3, 2402 * MiB, 1200 * MiB, '0FC63DAF-8483-4772-8E79-3D69D8477DE4', 'data', null),
      part(4, 3602 * MiB, 256 * MiB, '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F', 'swap', null),
    ],
    filesystems: [
      { device: '/dev/vda2', type: 'ext4', uuid: '11111111-2222-3333-4444-555555555555', label: 'root', version: '1.0', mountpoint: '/', sourceDevice: '/dev/vda2', added: false, sourceSizeBytes: 1800 * MiB, usedBytes: 900 * MiB, minBytes: 1000 * MiB, sizeBytes: 2400 * MiB },
      { device: '/dev/vda3', type: 'ext4', uuid: '66666666-7777-8888-9999-000000000000', label: null, version: '1.0', mountpoint: '/home', sourceDevice: '/dev/vda3', added: false, sourceSizeBytes: 900 * MiB, usedBytes: 100 * MiB, minBytes: 200 * MiB, sizeBytes: 1200 * MiB },
      { device: '/dev/vda4', type: 'swap', uuid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', label: null, version: null, mountpoint: null, sourceDevice: '/dev/vda4', added: false, sourceSizeBytes: 256 * MiB, usedBytes: null, minBytes: 0, sizeBytes: 256 * MiB },
    ],
    lvm: [],
    mounts: [
      { mountpoint: '/', device: '/dev/vda2', vfstype: 'ext4' },
      { mountpoint: '/home', device: '/dev/vda3', vfstype: 'ext4' },
    ],
    copies: [
      { mountpoint: '/', sourceDevice: '/dev/vda2', sourcePath: '/', sourceFsType: 'ext4', targetDevice: '/dev/vda2', usedBytes: 900 * MiB },
      { mountpoint: '/home', sourceDevice: '/dev/vda3', sourcePath: '/home', sourceFsType: 'ext4', targetDevice: '/dev/vda3', usedBytes: 100 * MiB },
    ],
    swap: [{ device: '/dev/vda4', uuid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', label: null, sizeBytes: 256 * MiB }],
    boot: { mode: 'bios', table: 'gpt', disk: '/dev/vda', biosBoot: { device: '/dev/vda1', added: false }, esp: null },
    cannotCarry: [],
    notes: [],
    totals: { sourceDiskBytes: 3072 * MiB, targetDiskBytes: 4096 * MiB, usedBytes: 1000 * MiB, plannedBytes: 3858 * MiB, scale: 1.33 },
    hash: 'ab'.repeat(32),
  };
}
