#!/usr/bin/env bash
# The main job end to end on a fresh Debian machine, as far as the project
# goes today: build machine and its drivers, list the drivers, create
# machines through the plugin protocol, list and inspect them, and print the
# environment for the docker client.
# Usage: bash integration/demo.sh      (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v cc >/dev/null; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential ca-certificates
fi

cargo build --release --locked --workspace --bins
export PATH="$PWD/target/release:$PATH"
export MACHINE_STORAGE_PATH="${MACHINE_STORAGE_PATH:-$(mktemp -d)/store}"
echo "store: $MACHINE_STORAGE_PATH" >&2

set -x
machine driver ls
machine create -d none --url tcp://127.0.0.1:2376 --engine-label env=demo dev
machine create -d fault spare
machine stop spare
machine ls
machine ls --filter state=Running --format 'table {{.Name}}\t{{.DriverName}}\t{{.URL}}'
machine inspect -f '{{.DriverName}} {{.Driver.IPAddress}}' dev
machine env dev
machine rm -y dev spare
