#!/usr/bin/env bash
# Installs the example clients' dependencies from PyPI and npm, if they are not there yet:
#   examples/setup.sh python   -> a virtualenv in target/examples/venv
#   examples/setup.sh node     -> examples/node/node_modules (from package-lock.json)
# `cargo test` (tests/polyglot.rs) runs it before each client suite.
set -euo pipefail
cd "$(dirname "$0")/.."
langs=("$@")
[ ${#langs[@]} -gt 0 ] || langs=(python node)
for lang in "${langs[@]}"; do
  case "$lang" in
    python)
      venv=target/examples/venv
      [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check -r examples/python/requirements.txt
      ;;
    node)
      if ! command -v npm >/dev/null; then
        apt-get update -qq && apt-get install -y -qq npm >/dev/null
      fi
      if [ ! -f examples/node/node_modules/.package-lock.json ] ||
         [ examples/node/package-lock.json -nt examples/node/node_modules/.package-lock.json ]; then
        npm ci --prefix examples/node --silent --no-audit --no-fund
      fi
      ;;
    *) echo "usage: $0 [python] [node]" >&2; exit 2 ;;
  esac
done
