#!/usr/bin/env bash
# Regenerates sparkplug_b_pb2.py from sparkplug_b.proto.
# protoc comes from a pinned grpcio-tools, a dev tool installed only here:
#   .venv/bin/pip install grpcio-tools==1.85.1     # bundles libprotoc 35.1
# The generated module needs protobuf >= 7.35.1, < 8 at run time (pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-../../../../.venv/bin/python}
"$PY" -m grpc_tools.protoc --proto_path=. --python_out=. sparkplug_b.proto
