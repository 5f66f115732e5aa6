#!/bin/sh
# Generates the Python gRPC stubs the Kamailio bridge imports, from the same
# proto/ the sidecar uses. app_python3 embeds Debian's python3, so use that
# interpreter (and its python3-grpc-tools), not whatever python3 is first on PATH.
set -eu
cd "$(dirname "$0")/.."
PY=${KAMAILIO_PYTHON:-/usr/bin/python3}
out=kamailio/python/gen
mkdir -p "$out"
"$PY" -m grpc_tools.protoc -Iproto --python_out="$out" --grpc_python_out="$out" proto/cpm/pf/v1/pf.proto
# grpc.health.v1, for the bridge's health checks: the proto grpc-health-check
# (the sidecar's health service, an npm dependency) ships, not a copy
health=node_modules/grpc-health-check/proto
"$PY" -m grpc_tools.protoc -I"$health" --python_out="$out" --grpc_python_out="$out" "$health/health/v1/health.proto"
# protoc emits packages as directories without __init__.py; make them importable.
for d in "$out/cpm" "$out/cpm/pf" "$out/cpm/pf/v1" "$out/health" "$out/health/v1"; do : > "$d/__init__.py"; done
