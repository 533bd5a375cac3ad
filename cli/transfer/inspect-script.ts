/**
 * The script that reads a machine in one SSH round trip: `ssh HOST sh -s -- MODE` with INSPECT_SCRIPT on
 * stdin. It is a fixed text (no user strings); MODE (`live` or `cold`) is its only argument. It runs under
 * dash on Debian, copes with missing tools (each command's exit code is reported; a missing one is 127),
 * and prints sections that inspect.ts parses:
 *
 *   @@ramboot-inspect 1 MODE
 *   @@ramboot-inspect-begin NAME
 *   <stdout of the command>
 *   @@ramboot-inspect-stderr NAME
 *   <at most 2000 bytes of its stderr>
 *   @@ramboot-inspect-end NAME RC
 *
 * Cold mode (a machine booted into the ramboot RAM OS) activates LVM volume groups (no metadata write),
 * mounts each ext2/3/4, xfs, btrfs and vfat filesystem read-only under a mktemp -d (`ro,noload` for ext,
 * `ro,norecovery` for xfs, `ro,rescue=nologreplay` for btrfs: no journal replay, nothing written), measures
 * its used bytes with df, prints any etc/fstab it holds, and unmounts it. Live mode mounts nothing: used
 * bytes come from findmnt on the mounted filesystems, the fstab is the running /etc/fstab.
 * (The text holds no "$" + "{": it is a JS template literal.)
 * The temp dir (and a mount left by an interrupted run) is removed on exit.
 */
export const INSPECT_SCRIPT_VERSION = 1;

export const INSPECT_SCRIPT = String.raw`
main() {
  LC_ALL=C; export LC_ALL
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH
  mode=
  if [ $# -ge 1 ]; then mode=$1; fi
  case $mode in
    live|cold) ;;
    *) echo "ramboot-inspect: mode must be live or cold" >&2; exit 2 ;;
  esac
  work=$(mktemp -d /tmp/ramboot-inspect.XXXXXX) || { echo "ramboot-inspect: mktemp failed" >&2; exit 1; }
  mounted=
  trap cleanup EXIT
  trap 'exit 130' INT TERM HUP
  printf '@@ramboot-inspect 1 %s\n' "$mode"

  sec hostname cat /proc/sys/kernel/hostname
  sec kernel uname -r
  sec firmware firmware
  if [ "$mode" = cold ] && have vgchange; then sec vgchange vgchange -ay; fi
  if have udevadm; then udevadm settle --timeout=15 </dev/null >/dev/null 2>&1; fi
  sec lsblk lsblk -J -b -O
  sec blkid blkid -c /dev/null -o export
  for d in /sys/block/*; do
    n=$(basename "$d")
    case $n in loop*|ram*|zram*|sr*|fd*|dm-*|md*|nbd*|'*') continue ;; esac
    sec "sfdisk /dev/$n" sfdisk --json "/dev/$n"
  done
  sec links links
  sec findmnt findmnt -J -l -b -o SOURCE,TARGET,FSTYPE,OPTIONS,SIZE,USED,AVAIL
  sec swaps cat /proc/swaps
  if [ -r /proc/mdstat ]; then sec mdstat cat /proc/mdstat; fi
  if have lvm; then
    sec pvs lvm pvs --reportformat json --units b --nosuffix -o pv_name,vg_name,pv_uuid,pv_size,pv_free
    sec vgs lvm vgs --reportformat json --units b --nosuffix -o vg_name,vg_uuid,vg_size,vg_free,vg_extent_size
    sec lvs lvm lvs --reportformat json --units b --nosuffix -o vg_name,lv_name,lv_uuid,lv_size,lv_attr,segtype,lv_path,lv_dm_path
  fi
  if [ "$mode" = live ]; then
    if [ -r /etc/fstab ]; then sec "fstab /etc/fstab" cat /etc/fstab; fi
  else
    cold_filesystems
  fi
  printf '@@ramboot-inspect-done\n'
}

have() { command -v "$1" >/dev/null 2>&1; }

firmware() { if [ -d /sys/firmware/efi ]; then echo uefi; else echo bios; fi; }

links() {
  for l in /dev/disk/by-id/* /dev/disk/by-path/*; do
    if [ -L "$l" ]; then printf '%s\t%s\n' "$l" "$(readlink -f "$l")"; fi
  done
  return 0
}

sec() {
  name=$1; shift
  "$@" </dev/null >"$work/out" 2>"$work/err"; rc=$?
  printf '@@ramboot-inspect-begin %s\n' "$name"
  cat "$work/out"
  printf '\n@@ramboot-inspect-stderr %s\n' "$name"
  head -c 2000 "$work/err"
  printf '\n@@ramboot-inspect-end %s %s\n' "$name" "$rc"
}

cold_filesystems() {
  lsblk -lnp -o PATH,FSTYPE,MOUNTPOINT </dev/null >"$work/devs" 2>/dev/null || return 0
  mkdir "$work/m" || return 0
  while read -r dev fstype mnt; do
    case $dev in /dev/loop*|/dev/zram*|/dev/ram*|/dev/sr*) continue ;; esac
    case $fstype in
      ext2|ext3|ext4) opts=ro,noload ;;
      xfs) opts=ro,norecovery ;;
      btrfs) opts=ro,rescue=nologreplay ;;
      vfat) opts=ro ;;
      *) continue ;;
    esac
    if [ -n "$mnt" ]; then
      # Already mounted (not by us): measure it where it is, mount nothing.
      sec "usage $dev" df -B1 --output=size,used,avail "$mnt"
      fstabs "$dev" "$mnt"
      continue
    fi
    if mount -t "$fstype" -o "$opts" "$dev" "$work/m" </dev/null >"$work/merr" 2>&1; then
      mounted=1
      sec "usage $dev" df -B1 --output=size,used,avail "$work/m"
      fstabs "$dev" "$work/m"
      if umount "$work/m" </dev/null >"$work/merr" 2>&1; then
        mounted=
      else
        sec "umount-failed $dev" cat "$work/merr"
        return 0
      fi
    else
      sec "mount-failed $dev" cat "$work/merr"
    fi
  done <"$work/devs"
}

fstabs() {
  for f in etc/fstab @/etc/fstab @rootfs/etc/fstab; do
    if [ -f "$2/$f" ]; then sec "fstab $1:/$f" cat "$2/$f"; fi
  done
  # The system's own name (cold: the RAM OS's hostname is not the source system's).
  for f in etc/hostname @/etc/hostname @rootfs/etc/hostname; do
    if [ -f "$2/$f" ]; then sec "etc-hostname $1:/$f" head -c 256 "$2/$f"; fi
  done
}

cleanup() {
  if [ -n "$mounted" ]; then umount "$work/m" 2>/dev/null || umount -l "$work/m" 2>/dev/null; fi
  # Files one by one and rmdir, never a recursive removal: a mount that would not go away must not be walked.
  rm -f "$work/out" "$work/err" "$work/merr" "$work/devs"
  rmdir "$work/m" 2>/dev/null
  rmdir "$work" 2>/dev/null
}

main "$@"
`;

export type InspectMode = 'live' | 'cold';

/** The remote command (argv for ssh after the host) that runs INSPECT_SCRIPT fed on stdin. */
export function inspectRemoteCommand(mode: InspectMode): string {
  if (mode !== 'live' && mode !== 'cold') throw new Error(`inspect mode must be live or cold, not ${String(mode)}`);
  return `sh -s -- ${mode}`;
}
