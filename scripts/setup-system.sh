#!/usr/bin/env bash
# Installs the Debian packages ramboot and its tests need (Debian 12, as root).
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
  echo "setup-system.sh: must run as root (it installs Debian packages)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  ca-certificates curl git \
  qemu-system-x86 qemu-utils ipxe ipxe-qemu ovmf \
  mmdebstrap debian-archive-keyring busybox-static cpio zstd xz-utils squashfs-tools \
  dnsmasq-base tftp-hpa atftp iproute2 iptables \
  openssh-client nginx-light \
  util-linux fdisk e2fsprogs parted \
  shellcheck
# ops: headless browser for the admin page test (test/web-ui.test.ts); systemd-analyze for the unit test
apt-get install -y -q --no-install-recommends chromium systemd
# deploy: the dual-firmware test disk (test/lib/deploy-disk.ts); growpart and pv for the deploy agent's tests
apt-get install -y -q --no-install-recommends mtools syslinux syslinux-common systemd-boot-efi gdisk dosfstools cloud-guest-utils pv
# proxyDHCP: tcpdump captures DHCP in the test namespaces (golden fixtures, "no offer" checks)
apt-get install -y -q --no-install-recommends tcpdump
# transfer (test/lib/source-disk.ts, test/transfer.test.ts): installs the source VM's disk with mmdebstrap,
# sgdisk (gdisk), losetup/partx (util-linux, mount), mkfs.ext4 (e2fsprogs), qemu-img: all installed above.
# transfer: rsync + rrsync (cli/transfer/copy.test.ts runs the real rsync through rrsync, the forced command of the one-time key)
apt-get install -y -q --no-install-recommends rsync python3 attr
# http: a C compiler for the sendfile(2) addon (native/sendfile.c, scripts/build-native.mjs; server/http/file-sender.test.ts)
apt-get install -y -q --no-install-recommends build-essential
