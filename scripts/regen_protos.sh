#!/usr/bin/env bash
# Regenerates the committed protobuf gencode. Needs the `codegen` dependency group
# (grpcio-tools 1.85.1 bundles libprotoc 35.1; mypy-protobuf writes --strict-clean stubs).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
"$py" -m grpc_tools.protoc -Isrc \
  --python_out=src --mypy_out=src \
  src/mvds_node/sync/proto/mvds.proto src/mvds_node/remotelog/proto/*.proto
