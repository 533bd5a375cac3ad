# shellcheck shell=sh
# Helpers shared by the build-time hooks (boot-assets/hooks/NN-name).
# A hook is called as `NN-name ROOT`. It sources this file and calls `hook_init "$@"`.
# Every write goes through these helpers: they refuse any path whose parent directory resolves
# outside ROOT (an absolute symlink inside the tree, such as /var/run -> /run, would otherwise
# make a hook write to the build host), and they replace a final symlink instead of following it.
# Writes are content-compared, so a second run changes nothing (hooks are idempotent).

set -eu

HOOK_NAME=${0##*/}
HOOKS_DIR=$(realpath -- "$0")
HOOKS_DIR=${HOOKS_DIR%/*}
# shellcheck disable=SC2034 # used by the hooks that source this file
HOOK_FILES="$HOOKS_DIR/files"

die() {
  printf '%s: error: %s\n' "$HOOK_NAME" "$*" >&2
  exit 1
}

say() {
  printf '%s: %s\n' "$HOOK_NAME" "$*"
}

hook_init() {
  [ "$#" -eq 1 ] || die "usage: $HOOK_NAME ROOT (got $# arguments)"
  case $1 in
    /*) ;;
    *) die "ROOT must be an absolute path: '$1'" ;;
  esac
  [ -d "$1" ] || die "ROOT is not a directory: '$1'"
  ROOT=$(realpath -- "$1")
  [ "$ROOT" != / ] || die "refusing to run against the host root /"
}

# inside REL: REL (absolute, relative to ROOT) must have its parent inside ROOT.
inside() {
  case $1 in
    /*) ;;
    *) die "internal: path must start with /: '$1'" ;;
  esac
  case $1 in
    */../* | */.. | */./* | */.) die "internal: path must be normalised: '$1'" ;;
  esac
  _parent=$(realpath -m -- "$ROOT${1%/*}")
  case $_parent in
    "$ROOT" | "$ROOT"/*) ;;
    *) die "refusing to write $1: its directory resolves outside the root ($_parent)" ;;
  esac
}

# write_file MODE REL: write stdin to REL with MODE, only if content or mode differ.
write_file() {
  _mode=$1 _rel=$2
  inside "$_rel"
  _dir=$ROOT${_rel%/*}
  [ -d "$_dir" ] || mkdir -p -- "$_dir"
  _tmp=$(mktemp "$_dir/.ramboot-hook.XXXXXX")
  cat >"$_tmp"
  chmod "$_mode" "$_tmp"
  # Keep the owner and group of a file we replace (/etc/shadow is root:shadow).
  if [ -f "$ROOT$_rel" ] && [ ! -L "$ROOT$_rel" ]; then
    chown --reference="$ROOT$_rel" -- "$_tmp"
  fi
  if [ -f "$ROOT$_rel" ] && [ ! -L "$ROOT$_rel" ] && cmp -s -- "$_tmp" "$ROOT$_rel" &&
    [ "$(stat -c %a -- "$ROOT$_rel")" = "${_mode#0}" ]; then
    rm -f -- "$_tmp"
    return 0
  fi
  # rename(2) replaces a symlink itself, never its target.
  mv -f -- "$_tmp" "$ROOT$_rel"
}

# copy_file MODE SRC REL: install a file shipped in boot-assets into the root.
copy_file() {
  [ -f "$2" ] || die "missing asset: $2"
  write_file "$1" "$3" <"$2"
}

# symlink TARGET REL: make REL a symlink to TARGET (TARGET is interpreted inside the booted OS).
symlink() {
  inside "$2"
  [ -d "$ROOT${2%/*}" ] || mkdir -p -- "$ROOT${2%/*}"
  if [ -L "$ROOT$2" ] && [ "$(readlink -- "$ROOT$2")" = "$1" ]; then
    return 0
  fi
  if [ -d "$ROOT$2" ] && [ ! -L "$ROOT$2" ]; then
    die "refusing to replace directory $2 with a symlink"
  fi
  ln -sfn -- "$1" "$ROOT$2"
}

# remove REL...: delete files (or symlinks) inside ROOT; missing ones are fine.
remove() {
  for _r in "$@"; do
    inside "$_r"
    rm -f -- "$ROOT$_r"
  done
}

# System unit helpers (the same links `systemctl enable/mask` would make, without running systemctl).
UNIT_DIR=/etc/systemd/system

mask_unit() {
  for _u in "$@"; do
    symlink /dev/null "$UNIT_DIR/$_u"
  done
}

# enable_unit UNIT TARGET [UNIT_PATH]: UNIT_PATH defaults to /lib/systemd/system/UNIT.
enable_unit() {
  symlink "${3:-/lib/systemd/system/$1}" "$UNIT_DIR/$2.wants/$1"
}
