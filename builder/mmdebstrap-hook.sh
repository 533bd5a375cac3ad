#!/bin/sh
# mmdebstrap hooks of `ramboot build`. Called as: mmdebstrap-hook.sh setup|customize ROOT
# Paths come from the environment (set by builder/mmdebstrap.ts), never from a command string:
#   RAMBOOT_CACHE  <data-dir>/cache/apt  (archives/ and lists/ kept between builds)
#   RAMBOOT_OUT    build work dir that receives kernel.deb, busybox.deb and kernel.txt
set -eu
step=$1
root=$2
: "${RAMBOOT_CACHE:?}" "${RAMBOOT_OUT:?}"

# Copy files from $1 to $2 that $2 lacks (hard link when on the same filesystem).
fill() {
  for f in "$1"/*; do
    [ -f "$f" ] || continue
    t="$2/$(basename "$f")"
    [ -e "$t" ] && continue
    ln "$f" "$t" 2>/dev/null || cp -p "$f" "$t"
  done
}

case "$step" in
setup)
  mkdir -p "$RAMBOOT_CACHE/archives" "$RAMBOOT_CACHE/lists" \
    "$root/var/cache/apt/archives/partial" "$root/var/lib/apt/lists/partial"
  fill "$RAMBOOT_CACHE/archives" "$root/var/cache/apt/archives"
  fill "$RAMBOOT_CACHE/lists" "$root/var/lib/apt/lists"
  ;;
customize)
  # The kernel is not installed (no initramfs-tools run, no /boot in the root): download it
  # and busybox-static, and hand both .debs to the builder.
  echo "I: ramboot: downloading the kernel and busybox-static" >&2
  # apt from outside the chroot (host DNS; the root's resolv.conf may point at resolved).
  export APT_CONFIG="${MMDEBSTRAP_APT_CONFIG:?}"
  apt-get install --download-only -q -y --no-install-recommends \
    linux-image-amd64 busybox-static >&2
  kpkg=$(apt-cache depends linux-image-amd64 \
    | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
  [ -n "$kpkg" ] || { echo "E: ramboot: cannot resolve linux-image-amd64" >&2; exit 1; }
  kver=$(apt-cache show --no-all-versions "$kpkg" | sed -n 's/^Version: //p' | head -n 1)
  bver=$(apt-cache show --no-all-versions busybox-static | sed -n 's/^Version: //p' | head -n 1)
  arch=$(chroot "$root" dpkg --print-architecture)
  enc() { echo "$1" | sed 's/:/%3a/g'; }
  kdeb="$root/var/cache/apt/archives/${kpkg}_$(enc "$kver")_${arch}.deb"
  bdeb="$root/var/cache/apt/archives/busybox-static_$(enc "$bver")_${arch}.deb"
  [ -f "$kdeb" ] || { echo "E: ramboot: kernel package missing: $kdeb" >&2; exit 1; }
  [ -f "$bdeb" ] || { echo "E: ramboot: busybox-static package missing: $bdeb" >&2; exit 1; }
  mkdir -p "$RAMBOOT_OUT"
  cp "$kdeb" "$RAMBOOT_OUT/kernel.deb"
  cp "$bdeb" "$RAMBOOT_OUT/busybox.deb"
  printf '%s %s\n' "$kpkg" "$kver" > "$RAMBOOT_OUT/kernel.txt"
  # Package list with versions, for the manifest.
  dpkg-query --admindir="$root/var/lib/dpkg" -W -f '${Package}\t${Version}\n' > "$RAMBOOT_OUT/packages.tsv"
  fill "$root/var/cache/apt/archives" "$RAMBOOT_CACHE/archives"
  for f in "$root"/var/lib/apt/lists/*; do
    [ -f "$f" ] || continue
    case "$f" in *lock) continue ;; esac
    t="$RAMBOOT_CACHE/lists/$(basename "$f")"
    [ "$f" -ef "$t" ] && continue
    cp -p "$f" "$t.new" && mv -f "$t.new" "$t"
  done
  ;;
*)
  echo "E: ramboot: unknown hook step $step" >&2
  exit 2
  ;;
esac
