#!/usr/bin/env bash
# A newcomer's fresh machine: builds a Debian 12 root with debootstrap (minbase, plus
# ca-certificates), copies in only this machine's Rust toolchain (rustup's, as a newcomer installs
# it) and the network's CA certificates, clones this repository into it, and runs there, as
# root, the README's commands exactly as printed: the prerequisites line, the command that starts
# the gateway (checked by a health call, then stopped with Ctrl-C's signal), and the test command.
# Prints each step's time and the test count.
#
#   bash .ci/fresh-machine.sh            (as root; about 14 minutes on 2 cores)
#
# The root is target/fresh-machine/root, made anew at each run; FRESH_KEEP=1 keeps it after the
# run. The log of the test command is target/fresh-machine/test.log.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work="$repo/target/fresh-machine"
root="$work/root"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
[ "$(id -u)" = 0 ] || { echo "run as root (debootstrap, chroot, mounts)" >&2; exit 1; }

steps=()
t0=$(date +%s)
step_start=$t0
step() {
  local now; now=$(date +%s)
  steps+=("$(printf '%-58s %5ss' "$1" $((now - step_start)))")
  echo "== $1: $((now - step_start)) s"
  step_start=$now
}

unmount_all() {
  # Deepest first; lazily, so a process still holding a mount cannot block the cleanup.
  grep -o " $root[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
}
# The processes running in the fresh root.
in_root_pids() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && echo "${p#/proc/}"
  done
  return 0
}
cleanup() {
  for p in $(in_root_pids); do kill -9 "$p" 2>/dev/null || true; done
  unmount_all
  if [ "${FRESH_KEEP:-0}" != 1 ] && ! grep -q " $root" /proc/mounts; then
    rm -rf --one-file-system "$root"
  fi
}
trap cleanup EXIT

if [ -d "$root" ]; then
  unmount_all
  grep -q " $root" /proc/mounts && { echo "$root is still mounted" >&2; exit 1; }
  rm -rf --one-file-system "$root"
fi
mkdir -p "$work"
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
step "host: debootstrap installed"

debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -20 "$work/debootstrap.log" >&2; exit 1; }
step "debootstrap: Debian 12 minbase + ca-certificates"

# Rust as rustup installs it: ~/.cargo/bin and ~/.rustup with the default toolchain (no crates,
# no registry cache).
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
toolchain=$(rustup default | awk '{print $1}')
mkdir -p "$root/root/.cargo" "$root/root/.rustup/toolchains"
cp -a "$cargo_home/bin" "$root/root/.cargo/"
cp -a "$rustup_home/settings.toml" "$root/root/.rustup/"
cp -a "$(readlink -f "$rustup_home/toolchains/$toolchain")" "$root/root/.rustup/toolchains/$toolchain"
[ -d "$rustup_home/update-hashes" ] && cp -a "$rustup_home/update-hashes" "$root/root/.rustup/"
# The network's own certificate authorities (this network's TLS egress), as on every machine
# here, and where the tools that do not read the system's store (pip, Node.js) are told to find
# them: the same variables and pip.conf as this machine. A machine on an open network needs none.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
ca_env=()
for v in SSL_CERT_FILE NODE_EXTRA_CA_CERTS PIP_CERT REQUESTS_CA_BUNDLE CURL_CA_BUNDLE GIT_SSL_CAINFO; do
  [ -n "${!v:-}" ] && ca_env+=("$v=${!v}")
done
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/hosts "$root/etc/hosts"
# The clone a newcomer makes (with its history: the rollout test builds the previous release).
git clone -q "$repo" "$root/root/paygate"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
step "toolchain ($toolchain), CA certificates and the clone copied in"

# Runs a shell command in the fresh root, as root, in the clone, with rustup's environment only.
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 USER=root "${ca_env[@]}" \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /root/paygate && $1"
}
# The README's block marked <!-- ci: NAME -->, exactly as printed.
readme_block() {
  awk -v m="<!-- ci: $1 -->" '$0==m {f=1; next} f && /^```/ {if (n++) exit; next} f {print}' README.md
}

prereq=$(readme_block prerequisites)
start_cmd=$(readme_block start)
test_cmd=$(readme_block test)
[ -n "$prereq" ] && [ -n "$start_cmd" ] && [ -n "$test_cmd" ] ||
  { echo "README.md lacks a marked prerequisites, start or test block" >&2; exit 1; }
echo "prerequisites: $prereq"
in_root "$prereq" >"$work/prerequisites.log" 2>&1 || { tail -20 "$work/prerequisites.log" >&2; exit 1; }
step "README prerequisites: $prereq"

echo "start: $start_cmd"
in_root "$start_cmd" >"$work/start.log" 2>&1 &
dev_pid=$!
for _ in $(seq 1800); do
  grep -q "Stop with Ctrl-C" "$work/start.log" && break
  kill -0 $dev_pid 2>/dev/null || break
  sleep 0.5
done
grep -q "Stop with Ctrl-C" "$work/start.log" || { tail -30 "$work/start.log" >&2; exit 1; }
in_root "target/debug/paygate healthcheck" || { echo "the gateway does not answer its health check" >&2; exit 1; }
step "README start command: built, started, answers its health check"
# Ctrl-C: SIGINT to the gateway (cargo run has exec'd it).
for p in $(in_root_pids); do
  case "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" in
    "target/debug/paygate dev"*) kill -INT "$p" ;;
  esac
done
wait $dev_pid || { echo "the start command did not exit cleanly on Ctrl-C's signal" >&2; tail -20 "$work/start.log" >&2; exit 1; }
dev_pid=

echo "test: $test_cmd"
status=0
in_root "$test_cmd" >"$work/test.log" 2>&1 || status=$?
passed=$(grep -o '^test result: [a-zA-Z]*\. [0-9]* passed' "$work/test.log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -o '; [0-9]* failed' "$work/test.log" | awk '{s+=$2} END {print s+0}')
binaries=$(grep -c '^test result:' "$work/test.log" || true)
step "README test command ($passed passed, $failed failed, $binaries test binaries)"

echo
echo "fresh Debian 12 machine: the README's commands as printed"
printf '  %s\n' "${steps[@]}"
echo "  total $(( $(date +%s) - t0 )) s; test command exit status $status"
if [ "$status" != 0 ]; then
  grep -E '^(failures:|---- |test .* FAILED|error)' "$work/test.log" | head -40 >&2
  tail -30 "$work/test.log" >&2
  exit 1
fi
