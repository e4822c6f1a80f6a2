#!/usr/bin/env bash
# Packages a built driver binary as a release asset that
# `machine driver install github.com/OWNER/REPO` accepts, and (re)writes the
# release's SHA256SUMS.
#
# Usage: dist.sh BINARY VERSION OS ARCH
#   BINARY   the built driver, named machine-driver-NAME
#   VERSION  the release's version, with or without a leading v (a tag works)
#   OS       linux, darwin or windows
#   ARCH     amd64 or arm64
# Environment:
#   DIST_DIR  where the assets go (default: dist)
#   PROTOCOL  the plugin protocol version to name the archive for; when
#             unset, the newest the binary speaks, read from
#             `BINARY --version` (which needs a binary this machine can run)
#
# Writes DIST_DIR/machine-driver-NAME_VERSION_pPROTOCOL_OS_ARCH.tar.gz, with
# the binary alone at the archive's root (mode 0755), then writes
# DIST_DIR/SHA256SUMS anew over every archive in DIST_DIR, in `sha256sum`
# format. Run it once per platform; the last run's SHA256SUMS covers all.
set -euo pipefail

die() { printf 'dist.sh: %s\n' "$*" >&2; exit 1; }

[ $# -eq 4 ] || die "usage: dist.sh BINARY VERSION OS ARCH"
binary=$1 version=${2#v} os=$3 arch=$4
dist=${DIST_DIR:-dist}

[ -f "$binary" ] || die "$binary: no such file"
file=$(basename "$binary")
name=${file#machine-driver-}
{ [ "$name" != "$file" ] && [ -n "$name" ]; } || die "$file: a driver binary is named machine-driver-NAME"
case $name in
  .*|*[!A-Za-z0-9._-]*) die "$file: NAME may hold only letters, digits, '-', '_' and '.', and may not start with '.'" ;;
esac
# Semantic version, as the installer reads it from the asset name.
[[ $version =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$ ]] \
  || die "version '$version' is not a semantic version (1.2.3 or 1.2.3-rc.1)"
case $os in linux|darwin|windows) ;; *) die "OS '$os' is not linux, darwin or windows" ;; esac
case $arch in amd64|arm64) ;; *) die "ARCH '$arch' is not amd64 or arm64" ;; esac

# The binary says which protocol it speaks and which version it is:
#   machine-driver-hello 0.1.0 (protocol 1)
# An asset whose name promises another version or protocol than the binary
# has is refused by the installer after download, so catch it here.
if [ -z "${PROTOCOL:-}" ] || [ -x "$binary" ]; then
  if said=$("$binary" --version 2>/dev/null); then
    [[ $said =~ ^machine-driver-[^\ ]+\ ([^\ ]+)\ \(protocol\ ([0-9,]+)\)$ ]] \
      || die "$binary --version printed '$said', not 'machine-driver-$name VERSION (protocol N)'"
    [ "${BASH_REMATCH[1]}" = "$version" ] \
      || die "$binary is version ${BASH_REMATCH[1]}, not $version: tag the release v${BASH_REMATCH[1]}, or bump the version in Cargo.toml"
    spoken=${BASH_REMATCH[2]}
    if [ -n "${PROTOCOL:-}" ]; then
      # A binary that speaks several (1,2) may be published once per
      # protocol, as PROTOCOL=1 and PROTOCOL=2 archives.
      [[ ,$spoken, == *,"$PROTOCOL",* ]] \
        || die "PROTOCOL=$PROTOCOL, but $binary speaks protocol $spoken"
    else
      PROTOCOL=$(tr ',' '\n' <<<"$spoken" | sort -n | tail -n 1)
    fi
  elif [ -z "${PROTOCOL:-}" ]; then
    die "cannot run $binary --version (built for another platform?); set PROTOCOL"
  fi
fi
[[ $PROTOCOL =~ ^[0-9]+$ ]] || die "PROTOCOL '$PROTOCOL' is not a number"

asset=machine-driver-${name}_${version}_p${PROTOCOL}_${os}_${arch}.tar.gz
mkdir -p "$dist"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$binary" "$stage/$file"
chmod 0755 "$stage/$file"
# Owner root and a fixed time keep the archive free of the builder's user
# name and reproducible for the same binary. GNU tar on Linux; bsdtar
# (macOS) takes other spellings.
if tar --version 2>/dev/null | grep -q 'GNU tar'; then
  tar -C "$stage" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - "$file"
else
  tar -C "$stage" --uid 0 --gid 0 -cf - "$file"
fi | gzip -n -9 >"$stage/$asset"
mv "$stage/$asset" "$dist/$asset"

# SHA256SUMS over every archive here, sorted, in the format `sha256sum -c`
# checks: "<64 hex digits>  <file name>".
if command -v sha256sum >/dev/null; then sum() { sha256sum "$@"; }; else sum() { shasum -a 256 "$@"; }; fi
(
  cd "$dist"
  shopt -s nullglob
  archives=(machine-driver-*.tar.gz)
  sum "${archives[@]}" >SHA256SUMS.tmp
  mv SHA256SUMS.tmp SHA256SUMS
)
printf '%s\n' "$dist/$asset"
