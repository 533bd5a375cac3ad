/** Debian packages of a ramboot root, by flavour (besides mmdebstrap's minbase set). */
export type Flavour = 'cloud' | 'lean';

/** The system, SSH and networking. */
const BASE = [
  'systemd', 'systemd-sysv', 'udev', 'dbus', 'systemd-resolved', 'kmod', 'iproute2', 'iputils-ping',
  'openssh-server', 'ca-certificates', 'curl', 'less', 'procps', 'psmisc',
];

/** Imaging tools: partition, format, copy, boot loaders for the target disk. */
const IMAGING = [
  'fdisk', 'parted', 'gdisk', 'e2fsprogs', 'xfsprogs', 'dosfstools', 'btrfs-progs', 'lvm2', 'mdadm',
  'cryptsetup-bin', 'rsync', 'zstd', 'xz-utils', 'cloud-guest-utils', 'pv', 'qemu-utils', 'efibootmgr', 'grub2-common', 'grub-pc-bin',
  'grub-efi-amd64-bin',
];

export const FLAVOUR_PACKAGES: Record<Flavour, readonly string[]> = {
  cloud: [...BASE, ...IMAGING, 'cloud-init'],
  lean: [...BASE, ...IMAGING],
};

/** Debian package name (policy 5.6.1), optionally with an =version or /release pin. */
export const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]+(?:=[A-Za-z0-9.+~:-]+|\/[a-z0-9-]+)?$/;

export function packagesFor(flavour: Flavour, include: readonly string[]): string[] {
  return [...new Set([...FLAVOUR_PACKAGES[flavour], ...include])];
}
