#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs what the tests
# need, checks formatting and lints, builds once and runs every test.
# Usage: bash integration/test.sh      (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages the tests need: the shells whose `machine env` output the
# tests run through a real interpreter (PowerShell is not in Debian, so its
# test says SKIPPED), ps for reports of leftover processes, a real OpenSSH
# server for the SSH client's tests, openssl to read certificates, and sshfs
# (with fuse3's fusermount3) for `machine mount`.
# Docker, debootstrap, QEMU and the test-host and VM images come from
# hosts/setup.sh.
PACKAGES=(ca-certificates procps zsh ksh fish tcsh emacs-nox openssh-server openssl sshfs)
export MACHINE_TEST_REQUIRE_SHELLS=sh,bash,dash,zsh,ksh,fish,tcsh,csh,emacs
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

log "test hosts: Docker engine and images"
as_root bash integration/hosts/setup.sh
# Test hosts are removed by each test; this catches any a crash left.
trap 'as_root bash integration/hosts/cleanup.sh >/dev/null 2>&1 || true' EXIT

log "Python for the Python driver's tests (grpcio from PyPI, cached venv)"
MACHINE_TEST_PYTHON=$(as_root bash integration/python-env.sh)
export MACHINE_TEST_PYTHON

export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "doc tests"
cargo test --workspace --doc --locked

# Last, so the runner's summary closes the output.
log "build and run the tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
