#!/usr/bin/env bash
# Installs the example clients' dependencies, if they are not there yet:
#   examples/setup.sh python   -> a virtualenv in target/examples/venv (PyPI)
#   examples/setup.sh node     -> examples/node/node_modules (npm, from package-lock.json)
#   examples/setup.sh go       -> Debian's Go 1.19, grpc-go 1.33, protoc-gen-go 1.3, genproto
#   examples/setup.sh java     -> Debian's grpc-java 1.41, protobuf-java 3.21, netty, junit4
# go and java also install protoc (Debian) and buf (npm, target/examples/buf), which generate
# their stubs with proto/buf.gen.go.yaml and proto/buf.gen.java.yaml.
# `cargo test` (tests/polyglot.rs) runs it before each client suite, and the suites run in
# parallel: one run at a time holds target/examples/setup.lock, and Debian packages go through
# tests/provision.sh, which holds the suite's provisioning lock.
set -euo pipefail
cd "$(dirname "$0")/.."
langs=("$@")
[ ${#langs[@]} -gt 0 ] || langs=(python node go java)
mkdir -p target/examples
exec 8>target/examples/setup.lock
flock 8

# Debian packages, installed when one of them is missing.
debian() {
  bash tests/provision.sh debian "$@"
}

# buf, from npm, in target/examples/buf.
buf() {
  command -v npm >/dev/null || debian npm
  if [ ! -x target/examples/buf/node_modules/.bin/buf ]; then
    mkdir -p target/examples/buf
    npm install --prefix target/examples/buf --silent --no-audit --no-fund @bufbuild/buf@1
  fi
}
for lang in "${langs[@]}"; do
  case "$lang" in
    python)
      venv=target/examples/venv
      command -v python3 >/dev/null || debian python3
      # Debian's python3 has no venv (nor ensurepip) without python3-venv.
      python3 -c 'import ensurepip, venv' 2>/dev/null || debian python3-venv
      [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check -r examples/python/requirements.txt
      ;;
    node)
      command -v npm >/dev/null || debian npm
      if [ ! -f examples/node/node_modules/.package-lock.json ] ||
         [ examples/node/package-lock.json -nt examples/node/node_modules/.package-lock.json ]; then
        npm ci --prefix examples/node --silent --no-audit --no-fund
      fi
      ;;
    go)
      debian golang-go golang-google-grpc-dev golang-goprotobuf-dev protoc-gen-go-1-3 \
        golang-google-genproto-dev protobuf-compiler
      buf
      ;;
    java)
      command -v javac >/dev/null || debian default-jdk-headless
      debian libgrpc-java protobuf-compiler-grpc-java-plugin libprotobuf-java libnetty-java \
        libguava-java libperfmark-java libgoogle-gson-java libgeronimo-annotation-1.3-spec-java \
        junit4 protobuf-compiler
      buf
      ;;
    *) echo "usage: $0 [python] [node] [go] [java]" >&2; exit 2 ;;
  esac
done
