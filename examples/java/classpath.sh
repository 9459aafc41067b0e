#!/usr/bin/env bash
# Prints the class path for the Java examples: Debian's jars (libgrpc-java, libprotobuf-java,
# libnetty-java, libguava-java, libperfmark-java, libgoogle-gson-java; the javax.annotation
# that grpc-java's generated stubs name, from libgeronimo-annotation-1.3-spec-java; junit4 for
# the suite),
# then any paths given as arguments.
set -euo pipefail
jars=(
  grpc-api grpc-context grpc-core grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub
  protobuf guava perfmark-api gson
  netty-buffer netty-codec netty-codec-http netty-codec-http2 netty-codec-socks netty-common
  netty-handler netty-handler-proxy netty-resolver netty-transport
  geronimo-annotation-1.3-spec junit4 hamcrest-core
)
cp=""
for jar in "${jars[@]}"; do
  [ -f "/usr/share/java/$jar.jar" ] || { echo "missing /usr/share/java/$jar.jar: run examples/setup.sh java" >&2; exit 1; }
  cp="$cp${cp:+:}/usr/share/java/$jar.jar"
done
for extra in "$@"; do cp="$cp:$extra"; done
echo "$cp"
