#!/usr/bin/env bash
# The main job end to end on a fresh Debian machine: install what is needed,
# build machine and its drivers, create a local machine (a systemd + sshd
# container on this machine's Docker engine), let machine provision Docker on
# it over SSH with mutual TLS, and show the ordinary docker CLI talking to it
# through `machine env`.
# Usage: bash integration/demo.sh      (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Docker engine, debootstrap and the container driver's default image
# (built from Debian's packages; no image registry needed).
as_root bash drivers/container/image/build.sh

cargo build --release --locked --workspace --bins
export PATH="$PWD/target/release:$PATH"
export MACHINE_STORAGE_PATH="${MACHINE_STORAGE_PATH:-$(mktemp -d)/store}"
echo "store: $MACHINE_STORAGE_PATH" >&2

set -x
machine driver ls
# No internet here for get.docker.com: install Debian's docker.io package.
machine create -d container --engine-install-method package --engine-label demo=yes dev
machine ls
eval "$(machine env dev)"
docker version --format 'client {{.Client.Version}} -> server {{.Server.Version}} at '"$DOCKER_HOST"
docker info --format '{{.Name}} {{json .Labels}} {{.OperatingSystem}}'
docker volume create demo-volume
docker volume ls
machine ssh dev -- docker volume ls
machine rm -y dev
