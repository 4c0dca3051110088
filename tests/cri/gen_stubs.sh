#!/bin/sh
# Generate the Python gRPC stubs of the CRI API (runtime.v1) into DIR with
# Debian's python3-grpc-tools, from the same proto the server is built from.
# The stubs are generated when needed, never committed.
#   tests/cri/gen_stubs.sh DIR
set -eu
out=${1:?usage: gen_stubs.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
proto=$here/../../crates/cri/proto
mkdir -p "$out"
/usr/bin/python3 -m grpc_tools.protoc -I "$proto" --python_out="$out" --grpc_python_out="$out" "$proto/api.proto"
test -s "$out/api_pb2.py" && test -s "$out/api_pb2_grpc.py"
