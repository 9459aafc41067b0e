#!/usr/bin/env bash
# What the test suite needs beyond Rust, provisioned when it is missing. `cargo test` calls it
# (tests/common/provision.rs); it can also be run by hand. Every step holds one lock
# (target/provision.lock), so test binaries running in parallel never run apt, dpkg or a
# download at the same moment.
#
#   tests/provision.sh promtool     prints the path of promtool: the one on PATH, or the Debian
#                                   package prometheus's, unpacked under target/provision (no
#                                   server is installed or started; no root needed when apt's
#                                   package lists are there)
#   tests/provision.sh libfaketime  prints the path of libfaketime.so.1: the system's, or the
#                                   Debian package libfaketime's, unpacked under target/provision
#   tests/provision.sh postgres     prints the folder of PostgreSQL's server binaries (initdb,
#                                   pg_ctl, postgres), installing Debian's postgresql if missing
#   tests/provision.sh debian PKG.. installs the Debian packages that are missing
#   tests/provision.sh command CMD PKG
#                                   prints the path of command CMD, installing Debian package
#                                   PKG when CMD is not on PATH
#
# Installing a Debian package needs root; unpacking one needs apt's package lists (root runs
# `apt-get update` when they are empty or stale).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target/provision"
exec 9>"$target/provision.lock"
flock 9

say() { echo "provision: $*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }

apt_update() {
  is_root || { say "apt's package lists are needed: run 'apt-get update' as root"; exit 1; }
  say "apt-get update"
  apt-get update -qq >&2
}

lists_present() { compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; }

# Installs the Debian packages among "$@" that are not installed.
debian() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  is_root || { say "missing Debian packages (install them as root): ${missing[*]}"; exit 1; }
  say "apt-get install ${missing[*]}"
  lists_present || apt_update
  # Nothing the packages install is started here (no service is wanted; a chroot has no init).
  local policy=/usr/sbin/policy-rc.d made=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made=1; fi
  local ok=0
  for _ in 1 2; do
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
      ok=1; break
    fi
    apt_update  # stale lists name versions the mirror no longer has
  done
  [ "$made" = 0 ] || rm -f "$policy"
  [ "$ok" = 1 ] || { say "could not install ${missing[*]}"; exit 1; }
}

# Unpacks Debian package $1 (not installed: only its files) under target/provision/$1.
unpacked() {
  local pkg=$1 dir="$target/provision/$1"
  if [ ! -f "$dir/.done" ]; then
    rm -rf "$dir" && mkdir -p "$dir/deb"
    lists_present || apt_update
    if ! (cd "$dir/deb" && apt-get download "$pkg" >/dev/null 2>&1); then
      apt_update
      (cd "$dir/deb" && apt-get download "$pkg" >&2)
    fi
    dpkg-deb -x "$dir"/deb/*.deb "$dir/root"
    rm -rf "$dir/deb"
    touch "$dir/.done"
  fi
  echo "$dir/root"
}

case "${1:-}" in
  promtool)
    if command -v promtool >/dev/null; then
      command -v promtool
    else
      echo "$(unpacked prometheus)/usr/bin/promtool"
    fi
    ;;
  libfaketime)
    for lib in /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 \
               /usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1 \
               /usr/lib/faketime/libfaketime.so.1; do
      [ -e "$lib" ] && { echo "$lib"; exit 0; }
    done
    find "$(unpacked libfaketime)" -name libfaketime.so.1 | head -1
    ;;
  postgres)
    find_bin() { { ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | tail -1; }
    bin=$(find_bin)
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
      # The tests start clusters of their own; the package's is not started (policy-rc.d).
      debian postgresql
      bin=$(find_bin)
    fi
    # initdb refuses to run as root: the tests run the server as the user postgres.
    if is_root && ! id postgres >/dev/null 2>&1; then
      say "root needs the user postgres to run PostgreSQL"; exit 1
    fi
    echo "$bin"
    ;;
  command)
    # A program file on PATH (type -P: never a shell builtin such as kill).
    type -P "$2" >/dev/null || debian "$3"
    type -P "$2" || { say "$2 is not on PATH after installing $3"; exit 1; }
    ;;
  debian)
    shift
    debian "$@"
    ;;
  *)
    echo "usage: $0 promtool | libfaketime | postgres | command CMD PKG | debian PKG..." >&2
    exit 2
    ;;
esac
