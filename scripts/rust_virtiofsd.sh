#!/usr/bin/env bash
# Runs Rust virtiofsd 1.13 (the `virtiofsd` package of Debian trixie) on Debian 12.
#
# The binary is linked against glibc 2.39, newer than bookworm's 2.36. So this script unpacks
# trixie's virtiofsd and the few libraries it links (libc6, libseccomp2, libcap-ng0, libgcc-s1)
# into a private directory, and starts it through trixie's own dynamic loader with a private
# library path. Nothing on the system is installed or changed; apt only reads its own private
# sources.list and lists directory.
#
# Usage:
#   scripts/rust_virtiofsd.sh --version
#   scripts/rust_virtiofsd.sh --socket-path S --shared-dir DIR --sandbox none --cache auto
#   scripts/rust_virtiofsd.sh --fetch-only    # make sure it is unpacked; print the directory
#
# The daemon must be run with `--sandbox none` (its namespace sandbox would re-exec
# /proc/self/exe, which here is the loader, not virtiofsd).
#
# Directory: $RUST_VIRTIOFSD_DIR, else ${VIRTIOFSD_CACHE:-<project>/.cache}/rust-virtiofsd.
set -euo pipefail

project=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
dir=${RUST_VIRTIOFSD_DIR:-${VIRTIOFSD_CACHE:-$project/.cache}/rust-virtiofsd}
root=$dir/root
libdir=$root/usr/lib/x86_64-linux-gnu
loader=$libdir/ld-linux-x86-64.so.2
daemon=$root/usr/libexec/virtiofsd

unpacked() {
  [[ -x $daemon && -e $loader ]]
}

fetch() {
  mkdir -p "$dir"
  # One fetch at a time, even when several test processes start together.
  exec 9>"$dir/.lock"
  flock 9
  if unpacked; then return 0; fi

  mkdir -p "$dir/lists/partial" "$dir/archives/partial"
  echo 'deb http://deb.debian.org/debian trixie main' >"$dir/sources.list"
  local apt=(apt-get -q
    -o "Dir::Etc::sourcelist=$dir/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$dir/lists"
    -o "Dir::Cache::archives=$dir/archives"
    -o "APT::Sandbox::User=root")
  "${apt[@]}" update >&2
  rm -f "$dir"/archives/*.deb
  (cd "$dir/archives" && "${apt[@]}" download virtiofsd libc6 libseccomp2 libcap-ng0 libgcc-s1 >&2)

  # Unpack beside the final place, then swap it in, so a half-unpacked tree is never used.
  rm -rf "$root.new"
  mkdir -p "$root.new"
  local deb
  for deb in "$dir"/archives/*.deb; do
    dpkg -x "$deb" "$root.new"
  done
  rm -rf "$root"
  mv "$root.new" "$root"
  exec 9>&-
}

if ! unpacked; then
  fetch
fi

if [[ ${1:-} == --fetch-only ]]; then
  echo "$dir"
  exit 0
fi

exec "$loader" --library-path "$libdir" "$daemon" "$@"
