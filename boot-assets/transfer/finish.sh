#!/bin/sh
# finish.sh ROOT DISK BOOTMODE ESP HOSTNAME: step 5 of `ramboot transfer`, run on the target (the
# ramboot RAM OS) over SSH as `sh -s -- ARGS` with this file on stdin. The copied system is mounted
# on ROOT (its /boot, /boot/efi... too); DISK is the target disk; BOOTMODE bios or uefi; ESP the
# ESP's mount point in the copied system ("-": none); HOSTNAME the name to give it ("-": keep).
#   fix        ramboot-fix on ROOT (fstab to the new devices by UUID, resume, net rules, serial
#              getty, hostname)
#   initramfs  the modules the target's disk needs (its sysfs driver chain) added to the copied
#              initramfs when a copied kernel has them but its initramfs lacks them; a loud warning
#              when a copied kernel has no such module at all
#   bootloader GRUB for the target's firmware: the copied system's own grub-install and
#              update-grub in a chroot; without them the RAM OS's GRUB with --boot-directory
# Protocol on stdout: "@@step NAME", "@@note TEXT", "@@warn TEXT", "@@failed STAGE TEXT" (then exit 1).
# Everything else goes to stderr. Bind mounts under ROOT are removed at exit.
set -u
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LC_ALL=C
export PATH LC_ALL

[ "$#" -eq 5 ] || { echo "@@failed fix usage: finish.sh ROOT DISK BOOTMODE ESP HOSTNAME"; exit 1; }
root=$1 disk=$2 bootmode=$3 esp=$4 host=$5
FIX=${RAMBOOT_FIX:-/usr/local/sbin/ramboot-fix}

step() { echo "@@step $1"; }
note() { echo "@@note $*"; echo "finish: $*" >&2; }
warn() { echo "@@warn $*"; echo "finish: WARNING: $*" >&2; }
fail() {
  _f_stage=$1
  shift
  echo "@@failed $_f_stage $*"
  exit 1
}
lastline() { tail -n 3 "$1" | tr '\n' ' ' | cut -c 1-400; }

work=$(mktemp -d /tmp/ramboot-finish.XXXXXX) || fail fix "mktemp failed"
binds=''
cleanup() {
  for _c_m in $binds; do umount -- "$_c_m" 2>/dev/null || umount -l -- "$_c_m" 2>/dev/null || true; done
  rm -rf -- "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

case $root in /?*) ;; *) fail fix "ROOT must be an absolute path" ;; esac
[ -d "$root/etc" ] || fail fix "$root/etc is missing: the copied root is not mounted on $root"
[ -b "$disk" ] || fail bootloader "$disk is not a block device"

# ---------------------------------------------------------------------------------------------
step fix
resume_conf=$root/etc/initramfs-tools/conf.d/resume
resume_before=$(cat -- "$resume_conf" 2>/dev/null || true)
if [ "$host" = - ]; then
  "$FIX" "$root" >"$work/fix.out" 2>&1
else
  "$FIX" --hostname "$host" "$root" >"$work/fix.out" 2>&1
fi
fix_rc=$?
sed 's/^/finish: /' "$work/fix.out" >&2
[ "$fix_rc" -eq 0 ] || fail fix "ramboot-fix failed: $(lastline "$work/fix.out")"
resume_after=$(cat -- "$resume_conf" 2>/dev/null || true)

# ---------------------------------------------------------------------------------------------
# A chroot of the copied system with /dev, /proc, /sys (and efivars on UEFI) of the RAM OS.
bind() {
  [ -d "$1" ] || return 0
  mkdir -p -- "$root$1" 2>/dev/null || true
  mount --bind -- "$1" "$root$1" || return 1
  binds="$root$1 $binds"
}
for _b in /dev /dev/pts /proc /sys /run; do bind "$_b" || fail bootloader "cannot bind $_b into $root"; done
if [ "$bootmode" = uefi ] && [ -d /sys/firmware/efi/efivars ]; then
  mount -t efivarfs efivarfs "$root/sys/firmware/efi/efivars" 2>/dev/null && binds="$root/sys/firmware/efi/efivars $binds"
fi
in_root() { chroot "$root" /usr/bin/env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
# shellcheck disable=SC2016 # $1 of the inner sh
has_in_root() { in_root sh -c 'command -v "$1"' sh "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
step initramfs
# The kernel modules between the target disk and the PCI root (virtio_blk, nvme, ahci, ...).
dev=$(readlink -f -- "$disk")
mods=''
p=$(readlink -f -- "/sys/class/block/${dev##*/}/device" 2>/dev/null || true)
while [ -n "$p" ] && [ "$p" != / ] && [ "$p" != /sys ] && [ "$p" != /sys/devices ]; do
  if [ -e "$p/driver/module" ]; then
    m=$(basename -- "$(readlink -f -- "$p/driver/module")")
    case " $mods " in *" $m "*) ;; *) mods="$mods $m" ;; esac
  fi
  p=$(dirname -- "$p")
done
mods=${mods# }
note "the target disk needs the modules: ${mods:-none (built into the kernel)}"
need_rebuild=0
[ "$resume_before" = "$resume_after" ] || need_rebuild=1
kernels=0
for kdir in "$root"/lib/modules/*/; do
  [ -d "$kdir" ] || continue
  kv=$(basename -- "$kdir")
  [ -f "$root/boot/vmlinuz-$kv" ] || continue
  kernels=$((kernels + 1))
  initrd=/boot/initrd.img-$kv
  if [ -f "$root$initrd" ] && has_in_root lsinitramfs; then
    in_root lsinitramfs "$initrd" >"$work/initrd.list" 2>/dev/null || : >"$work/initrd.list"
  else
    : >"$work/initrd.list"
    [ -f "$root$initrd" ] || need_rebuild=1
  fi
  for m in $mods; do
    alt=$(printf '%s' "$m" | tr _ -)
    if grep -Eq "/($m|$alt)\.ko" "$kdir/modules.builtin" 2>/dev/null; then continue; fi
    if ! grep -Eq "/($m|$alt)\.ko(\.(xz|zst|gz))?:" "$kdir/modules.dep" 2>/dev/null; then
      warn "the copied kernel $kv has no module $m, which the target disk needs: it may not boot on this machine"
      continue
    fi
    if [ -s "$work/initrd.list" ] && grep -Eq "/($m|$alt)\.ko(\.(xz|zst|gz))?$" "$work/initrd.list"; then continue; fi
    note "the initramfs of $kv lacks $m: adding it"
    mkdir -p -- "$root/etc/initramfs-tools"
    if ! grep -qx -- "$m" "$root/etc/initramfs-tools/modules" 2>/dev/null; then
      printf '%s\n' "$m" >>"$root/etc/initramfs-tools/modules"
    fi
    need_rebuild=1
  done
done
[ "$kernels" -gt 0 ] || warn "no kernel (/boot/vmlinuz-VERSION with /lib/modules/VERSION) in the copied system"
if [ "$need_rebuild" -eq 1 ] && [ "$kernels" -gt 0 ]; then
  if has_in_root update-initramfs; then
    note "rebuilding the initramfs (update-initramfs -u -k all)"
    in_root update-initramfs -u -k all >"$work/initramfs.out" 2>&1 || fail initramfs "update-initramfs failed: $(lastline "$work/initramfs.out")"
    sed 's/^/finish: /' "$work/initramfs.out" >&2
  else
    warn "the copied system has no update-initramfs: its initramfs is left as it is"
  fi
fi

# ---------------------------------------------------------------------------------------------
step bootloader
udevadm settle --timeout=30 >/dev/null 2>&1 || true # /dev/disk/by-uuid for grub-mkconfig's root=UUID=
case $bootmode in
  bios) gtarget=i386-pc ;;
  uefi) gtarget=x86_64-efi ;;
  *) fail bootloader "unknown boot mode $bootmode" ;;
esac
if [ "$bootmode" = uefi ]; then
  [ "$esp" != - ] || fail bootloader "UEFI boot without an ESP"
  mountpoint -q -- "$root$esp" || fail bootloader "the ESP is not mounted on $root$esp"
fi
own=0
if has_in_root grub-install && [ -d "$root/usr/lib/grub/$gtarget" ]; then own=1; fi
if [ "$own" -eq 1 ]; then
  note "grub-install ($gtarget) of the copied system"
  if [ "$bootmode" = bios ]; then
    in_root grub-install --target=i386-pc --recheck "$disk" >"$work/grub.out" 2>&1 || fail bootloader "grub-install failed: $(lastline "$work/grub.out")"
  else
    in_root grub-install --target=x86_64-efi --efi-directory="$esp" --bootloader-id=debian --recheck >"$work/grub.out" 2>&1 ||
      warn "grub-install with an NVRAM entry failed ($(lastline "$work/grub.out")): relying on the removable path"
    in_root grub-install --target=x86_64-efi --efi-directory="$esp" --removable --no-nvram >"$work/grub.out" 2>&1 || fail bootloader "grub-install --removable failed: $(lastline "$work/grub.out")"
  fi
  sed 's/^/finish: /' "$work/grub.out" >&2
else
  note "the copied system has no grub-install for $gtarget: installing the RAM OS's GRUB with --boot-directory"
  mkdir -p -- "$root/boot"
  if [ "$bootmode" = bios ]; then
    grub-install --target=i386-pc --boot-directory="$root/boot" --recheck "$disk" >"$work/grub.out" 2>&1 || fail bootloader "grub-install failed: $(lastline "$work/grub.out")"
  else
    grub-install --target=x86_64-efi --boot-directory="$root/boot" --efi-directory="$root$esp" --removable --no-nvram >"$work/grub.out" 2>&1 || fail bootloader "grub-install failed: $(lastline "$work/grub.out")"
  fi
fi
if has_in_root update-grub; then
  in_root update-grub >"$work/update-grub.out" 2>&1 || fail bootloader "update-grub failed: $(lastline "$work/update-grub.out")"
elif has_in_root grub-mkconfig; then
  in_root grub-mkconfig -o /boot/grub/grub.cfg >"$work/update-grub.out" 2>&1 || fail bootloader "grub-mkconfig failed: $(lastline "$work/update-grub.out")"
elif [ ! -f "$root/boot/grub/grub.cfg" ]; then
  # A minimal menu: the newest kernel, the root by UUID.
  root_uuid=$(findmnt -n -o UUID -- "$root")
  boot_uuid=$(findmnt -n -o UUID -T "$root/boot")
  prefix=/boot
  [ "$(findmnt -n -o TARGET -T "$root/boot")" = "$root" ] || prefix=''
  kv=$(for k in "$root"/boot/vmlinuz-*; do [ -f "$k" ] && basename -- "$k"; done | sed 's/^vmlinuz-//' | sort -V | tail -n 1)
  [ -n "$kv" ] || fail bootloader "no kernel in $root/boot to boot"
  {
    echo "set timeout=3"
    echo "search --no-floppy --fs-uuid --set=root $boot_uuid"
    echo "menuentry 'Linux $kv' {"
    echo "  linux $prefix/vmlinuz-$kv root=UUID=$root_uuid ro"
    [ ! -f "$root/boot/initrd.img-$kv" ] || echo "  initrd $prefix/initrd.img-$kv"
    echo "}"
  } >"$root/boot/grub/grub.cfg"
  note "wrote a minimal grub.cfg for $kv"
fi
sync
echo "@@done"
