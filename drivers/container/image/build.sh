#!/usr/bin/env bash
# Builds the container driver's default image, machine/debian-ssh:bookworm:
# Debian bookworm with systemd and sshd, from Debian's packages alone (no
# image registry needed), via the same recipe as the test hosts.
# Usage (as root): bash drivers/container/image/build.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
# The container images only: the qemu tests' VM image is not needed here.
MACHINE_TEST_VM=0 bash integration/hosts/setup.sh
# shellcheck disable=SC1091
. "${MACHINE_TEST_CACHE:-/var/cache/machine-test}/images.env"
docker tag "$MACHINE_TEST_IMAGE_SSH" machine/debian-ssh:bookworm
docker tag "$MACHINE_TEST_IMAGE_DOCKER" machine/debian-docker:bookworm
echo "machine/debian-ssh:bookworm (add --container-image machine/debian-docker:bookworm for Docker preinstalled)" >&2
