#!/usr/bin/env bash
# Makes a runnable machine-driver-pyhello in OUT: generates the gRPC stubs
# from machine's .proto files into OUT/gen, copies pyhello.py there, and
# writes the launcher OUT/machine-driver-pyhello, which runs pyhello.py with
# PYTHON and the stubs. Nothing generated is kept in the repository.
#
# Usage: build.sh OUT [PYTHON]
#   PYTHON  a Python 3.11+ with requirements.txt installed (default: python3);
#           integration/python-env.sh makes one:
#             bash examples/python-driver/build.sh /tmp/pyhello "$(bash integration/python-env.sh)"
# Then: machine driver info /tmp/pyhello/machine-driver-pyhello
#       machine driver install --path /tmp/pyhello/machine-driver-pyhello
set -euo pipefail

die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

{ [ $# -ge 1 ] && [ $# -le 2 ]; } || die "usage: build.sh OUT [PYTHON]"
here=$(cd "$(dirname "$0")" && pwd)
protos=$(cd "$here/../../proto/proto" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
python=${2:-python3}
# The launcher names the interpreter by absolute path, so it works from
# the store's drivers directory and without the venv being activated.
if [[ $python != /* ]]; then
  python=$(command -v "$python") || die "no $2 on PATH"
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$python is older than Python 3.11"
"$python" -c 'import grpc, grpc_tools, grpc_health' 2>/dev/null \
  || die "$python lacks grpcio, grpcio-tools or grpcio-health-checking: pip install -r $here/requirements.txt"

rm -rf "$out/gen"
mkdir -p "$out/gen"
"$python" -m grpc_tools.protoc -I "$protos" \
  --python_out="$out/gen" --grpc_python_out="$out/gen" \
  machine/driver/v1/driver.proto plugin/controller.proto
cp "$here/pyhello.py" "$out/pyhello.py"

# Single quotes inside a path, for the sh script below.
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
cat >"$out/machine-driver-pyhello.tmp" <<EOF
#!/bin/sh
# machine-driver-pyhello, written by examples/python-driver/build.sh.
# exec: the driver process is the Python interpreter itself, so machine's
# signals and its stdin pipe reach it directly. pyhello.py finds the stubs
# in gen/ beside it. -B: write no bytecode next to the stubs.
exec $(q "$python") -B $(q "$out/pyhello.py") "\$@"
EOF
chmod 0755 "$out/machine-driver-pyhello.tmp"
mv "$out/machine-driver-pyhello.tmp" "$out/machine-driver-pyhello"
printf '%s\n' "$out/machine-driver-pyhello"
