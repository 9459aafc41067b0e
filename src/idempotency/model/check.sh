#!/usr/bin/env bash
# Checks the protocol models with spin (Debian package `spin`, and a C compiler): with every
# rule, no execution may violate an assertion; without any one rule, spin must find a
# counterexample. Prints one line per run, and the counterexample's assertion.
#   refunds.pml        the refund protocol on a provider without an idempotency key
#   notifications.pml  the order of states: final refunds, cancellation stages, freshness
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here"/*.pml "$work/"
cd "$work"

verify() { # $1: the model; $2: a -D flag or empty; leaves pan's verdict in out.txt
  spin ${2:+"$2"} -a "$1" >/dev/null
  gcc -O2 -w -DSAFETY -DCOLLAPSE -o pan pan.c
  ./pan -m300000 >out.txt 2>&1 || true
}

check() { # $1: the model; then its rules
  local model=$1
  shift
  local start
  start=$(date +%s)
  verify "$model" ""
  if ! grep -q "errors: 0" out.txt || grep -q "Search not completed" out.txt; then
    cat out.txt >&2
    echo "$model: the model with every rule has a counterexample" >&2
    exit 1
  fi
  states=$(awk '/states, stored/ {print $1; exit}' out.txt)
  echo "$model: every rule on: no counterexample in $states states ($(( $(date +%s) - start )) s)"
  for rule in "$@"; do
    verify "$model" "-DNO_$rule"
    if ! grep -q "assertion violated" out.txt; then
      cat out.txt >&2
      echo "$model: without $rule spin found no counterexample" >&2
      exit 1
    fi
    violated=$(grep -m1 "assertion violated" out.txt | sed -E 's/^pan:1: assertion violated //; s/ \(at depth ([0-9]+)\)/, depth \1/')
    echo "$model: without $rule: counterexample: $violated"
  done
}

check refunds.pml SERIAL QUIET LEAVE FENCE LEASE LEASE_ANSWER READ SETTLE WINDOW KEEP
check notifications.pml FINAL STAGE FRESH KEEP
