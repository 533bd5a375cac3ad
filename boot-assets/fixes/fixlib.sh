# shellcheck shell=sh
# Helpers shared by the fix scripts (NN-name), run by ramboot-fix as `NN-name TARGET`.
# Writes stay inside TARGET: a directory that resolves outside it (an absolute symlink in the
# imaged tree would point into the running ramboot OS) is refused, and a file is replaced by
# rename, so a symlink in its place is replaced rather than followed.
set -eu

FIX_NAME=$(basename -- "$0")

die() {
  printf '%s: error: %s\n' "$FIX_NAME" "$*" >&2
  exit 1
}
say() {
  printf '%s: %s\n' "$FIX_NAME" "$*"
}

fix_init() {
  [ "$#" -eq 1 ] || die "usage: $FIX_NAME TARGET"
  case $1 in /*) ;; *) die "TARGET must be absolute: '$1'" ;; esac
  [ -d "$1" ] || die "TARGET is not a directory: '$1'"
  TARGET=$(realpath -- "$1")
  [ "$TARGET" != / ] || die "refusing to fix /"
}

# inside REL: the directory of REL (relative to TARGET) must resolve inside TARGET.
inside() {
  _parent=$(realpath -m -- "$TARGET$(dirname -- "$1")")
  case $_parent in
    "$TARGET" | "$TARGET"/*) ;;
    *) die "refusing to touch $1: its directory resolves outside the target ($_parent)" ;;
  esac
}

# replace_file REL MODE: write stdin to REL if the content differs (keeps owner; MODE if new).
replace_file() {
  inside "$1"
  _dir=$(dirname -- "$TARGET$1")
  mkdir -p -- "$_dir"
  _tmp=$(mktemp "$_dir/.ramboot-fix.XXXXXX")
  cat >"$_tmp"
  if [ -f "$TARGET$1" ] && [ ! -L "$TARGET$1" ]; then
    if cmp -s -- "$_tmp" "$TARGET$1"; then
      rm -f -- "$_tmp"
      return 0
    fi
    chmod --reference="$TARGET$1" -- "$_tmp"
    chown --reference="$TARGET$1" -- "$_tmp"
  else
    chmod "$2" -- "$_tmp"
  fi
  mv -f -- "$_tmp" "$TARGET$1"
}

# symlink_in TARGETPATH REL
symlink_in() {
  inside "$2"
  mkdir -p -- "$(dirname -- "$TARGET$2")"
  if [ -L "$TARGET$2" ] && [ "$(readlink -- "$TARGET$2")" = "$1" ]; then return 0; fi
  if [ -d "$TARGET$2" ] && [ ! -L "$TARGET$2" ]; then die "refusing to replace directory $2"; fi
  ln -sfn -- "$1" "$TARGET$2"
}
