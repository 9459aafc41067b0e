#!/usr/bin/env bash
# Checks the refund protocol model with spin (Debian package `spin`, and a C compiler):
# with every rule, no execution may violate an assertion; without any one rule, spin must
# find a counterexample. Prints one line per run, and the counterexample's assertion.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/refunds.pml" "$work/"
cd "$work"

verify() { # $1: a -D flag or empty; prints pan's verdict line
  spin ${1:+"$1"} -a refunds.pml >/dev/null
  gcc -O2 -w -DSAFETY -DCOLLAPSE -o pan pan.c
  ./pan -m300000 >out.txt 2>&1 || true
}

start=$(date +%s)
verify ""
if ! grep -q "errors: 0" out.txt || grep -q "Search not completed" out.txt; then
  cat out.txt >&2
  echo "model: the protocol with every rule has a counterexample" >&2
  exit 1
fi
states=$(awk '/states, stored/ {print $1; exit}' out.txt)
echo "model: every rule on: no counterexample in $states states ($(( $(date +%s) - start )) s)"

for rule in SERIAL QUIET LEAVE FENCE LEASE LEASE_ANSWER READ SETTLE WINDOW KEEP; do
  verify "-DNO_$rule"
  if ! grep -q "assertion violated" out.txt; then
    cat out.txt >&2
    echo "model: without $rule spin found no counterexample" >&2
    exit 1
  fi
  violated=$(grep -m1 "assertion violated" out.txt | sed -E 's/^pan:1: assertion violated //; s/ \(at depth ([0-9]+)\)/, depth \1/')
  echo "model: without $rule: counterexample: $violated"
done
