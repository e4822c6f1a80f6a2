#!/usr/bin/env bash
# Makes (or reuses) the Python environment the Python example driver's tests
# run with, and prints the path of its python on stdout, for
#   export MACHINE_TEST_PYTHON="$(bash integration/python-env.sh)"
#
# The environment is a venv at $MACHINE_TEST_CACHE/python-<key> (default
# cache /var/cache/machine-test), where <key> is a hash of
# examples/python-driver/requirements.txt: a changed requirements file gets
# a new venv, an unchanged one reuses the last. It holds exactly the pinned
# packages, installed from PyPI as wheels (nothing is compiled).
#
# Needs python3 (3.11 or later) with the venv module. Debian ships that
# module apart (python3-venv); when `python3 -m venv` fails and this runs
# as root, it installs python3-venv with apt-get and tries again.
# Progress goes to stderr; stdout is only the path.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'python-env: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

requirements=examples/python-driver/requirements.txt
cache=${MACHINE_TEST_CACHE:-/var/cache/machine-test}
key=$(sha256sum "$requirements" | cut -c1-16)
venv=$cache/python-$key
python=$venv/bin/python
# Written last, so a venv whose install broke off is made again.
stamp=$venv/.complete

# The imports the driver and build.sh need; a venv whose interpreter went
# away (python3 upgraded, pyenv version removed) fails this and is remade.
works() {
  [ -f "$stamp" ] && "$python" -c 'import grpc, grpc_tools.protoc, grpc_health.v1.health, google.protobuf' 2>/dev/null
}

if works; then
  printf '%s\n' "$python"
  exit 0
fi

as_root_apt() {
  if [ "$(id -u)" != 0 ]; then
    die "$* is needed; run this as root, or install it with: sudo apt-get install -y $*"
  fi
  log "installing $* from Debian"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

command -v python3 >/dev/null || as_root_apt python3 python3-venv
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$(python3 --version 2>&1) is too old: the Python driver needs 3.11 or later"

mkdir -p "$cache" || die "cannot make $cache; set MACHINE_TEST_CACHE to a writable directory"
# One maker at a time: test runs in parallel would otherwise race on pip.
exec 9>"$cache/python-env.lock"
if command -v flock >/dev/null; then flock 9; fi
if works; then
  printf '%s\n' "$python"
  exit 0
fi

rm -rf "$venv"
log "making $venv with $(python3 --version 2>&1)"
if ! python3 -m venv "$venv" >&2; then
  # Debian's python3 lacks ensurepip until python3-venv is installed.
  rm -rf "$venv"
  as_root_apt python3-venv
  python3 -m venv "$venv" >&2 || die "python3 -m venv $venv failed"
fi
log "installing $requirements"
"$python" -m pip install --disable-pip-version-check --no-input --quiet \
  --only-binary=:all: -r "$requirements" >&2 \
  || die "pip could not install $requirements (are wheels published for $("$python" --version 2>&1)?)"
touch "$stamp"
works || die "$venv was made, but its python cannot import grpc, grpc_tools and grpc_health"
printf '%s\n' "$python"
