#!/usr/bin/env bash
# Prepares this machine for the end-to-end tests that provision real hosts
# over SSH (integration/src/hosts.rs): installs Docker and debootstrap from
# Debian, starts dockerd when no daemon answers, and builds two local images
# that run systemd and sshd as container "hosts":
#
#   machine-test/debian-ssh:<key>     Debian bookworm, sshd, user `tester`
#   machine-test/debian-docker:<key>  the same plus Debian's docker.io,
#                                     installed but not started at boot
#
# and, for the qemu driver's tests, a virtual machine image built from the
# Docker image's root filesystem plus a kernel and cloud-init:
#
#   $MACHINE_TEST_CACHE/vm-<key>/{vmlinuz,initrd.img,disk.qcow2}
#
# It has no boot loader: the tests boot it directly (-kernel/-initrd), with
# a NoCloud seed from the driver giving it its user, key and hostname.
# MACHINE_TEST_VM=0 skips it.
#
# No image registry is reachable here, so the images are made from a
# debootstrap root filesystem and `docker import`ed. Each root filesystem is
# kept as a tarball under $MACHINE_TEST_CACHE (default /var/cache/machine-test),
# named by a hash of the recipe that defines it (the recipe functions below and
# their package lists): change a recipe and its key changes; rerun after the
# Docker state was lost and the image is re-imported from the tarball in
# seconds. The image names end up in $MACHINE_TEST_CACHE/images.env, which the
# Rust harness reads.
#
# Usage (as root; idempotent, safe to run concurrently):
#   bash integration/hosts/setup.sh
# Timings of each step go to stderr.
set -euo pipefail

CACHE=${MACHINE_TEST_CACHE:-/var/cache/machine-test}
DOCKERD_LOG=/var/log/machine-test-dockerd.log
SUITE=bookworm
MIRROR=http://deb.debian.org/debian

# Packages of this machine that the harness needs.
HOST_PACKAGES=(docker.io debootstrap openssh-client ca-certificates procps iproute2 util-linux tar coreutils e2fsprogs)

# Packages of the SSH image, on top of debootstrap's minbase variant.
SSH_IMAGE_PACKAGES=openssh-server,openssh-sftp-server,systemd-sysv,dbus,iproute2,sudo,ca-certificates,curl,procps,netbase,less
# Packages the Docker image adds.
DOCKER_IMAGE_PACKAGES=(docker.io)
# Packages the VM image adds to the Docker image's, and its disk size.
VM_IMAGE_PACKAGES=(linux-image-amd64 cloud-init)
VM_DISK_SIZE=4G

# ---------------------------------------------------------------------------

say() { printf '[hosts/setup] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%6.1f s", b - a }'; }
# timed LABEL CMD...: runs CMD and reports how long it took. Under `set -e`
# a failing CMD ends the script; the EXIT trap then names the step.
STEP=
timed() {
  local label=$1 start
  shift
  STEP=$label
  start=$(now)
  "$@"
  say "$(printf '%-34s %s' "$label" "$(elapsed "$start")")"
  STEP=
}

[ "$(id -u)" = 0 ] || die "run as root (it installs packages, runs dockerd and debootstrap)"

# --- host packages ----------------------------------------------------------

install_host_packages() {
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# QEMU for the qemu driver's tests. On this project's machines qemu-utils
# may come from bookworm-backports while qemu-system-x86 is only in
# bookworm, and the two must match (they share qemu-system-common's
# parts): when the plain install fails, both come from bookworm.
install_qemu() {
  if command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null; then
    return 0
  fi
  say "installing qemu-system-x86 and qemu-utils"
  apt-get update -qq
  local apt=(env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq --no-install-recommends)
  "${apt[@]}" qemu-system-x86 qemu-utils >/dev/null 2>&1 \
    || "${apt[@]}" --allow-downgrades qemu-system-x86 "qemu-utils/$SUITE" >/dev/null
  command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null
}

# --- Docker daemon ----------------------------------------------------------

start_dockerd() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  local dockerd
  dockerd=$(command -v dockerd || true)
  [ -n "$dockerd" ] || die "no dockerd after installing docker.io"
  say "starting dockerd (log: $DOCKERD_LOG)"
  # Detached from this script's session so it outlives it.
  # Without fd 9: the daemon would hold setup's lock for its whole life,
  # and every later run of this script would wait on it forever.
  setsid "$dockerd" >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
  local i
  for ((i = 0; i < 60; i++)); do
    if docker info >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 $! 2>/dev/null && ! pgrep -x dockerd >/dev/null; then
      break
    fi
    sleep 1
  done
  say "dockerd did not answer \`docker info\`; last lines of $DOCKERD_LOG:"
  tail -n 30 "$DOCKERD_LOG" >&2 || true
  die "no Docker daemon"
}

# --- the test hosts' network ---------------------------------------------

NETWORK=machine-test
BRIDGE=machine-test0

# A bridge network of the test hosts' own, so they do not depend on (or
# disturb) docker0. Should its bridge interface have vanished (seen once on
# a shared machine: docker0 deleted under a running dockerd, and every
# `docker run` failed with "could not find bridge"), it is made anew here,
# which for the default bridge would need a daemon restart.
ensure_network() {
  if docker network inspect "$NETWORK" >/dev/null 2>&1; then
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
      return 0
    fi
    say "network $NETWORK lost its bridge $BRIDGE; making it anew"
    docker network rm "$NETWORK" >/dev/null \
      || die "cannot remove network $NETWORK (containers still attached? bash $(dirname "$0")/cleanup.sh)"
  fi
  docker network create --driver bridge --label machine-test=1 \
    --opt com.docker.network.bridge.name="$BRIDGE" "$NETWORK" >/dev/null
}

# --- recipes ----------------------------------------------------------------
# Everything that defines an image lives in its recipe function (plus the
# package variables above); the cache key hashes their text.

# recipe_ssh DIR: a bootable (systemd) Debian root filesystem in DIR.
recipe_ssh() {
  local dir=$1
  debootstrap --variant=minbase --include="$SSH_IMAGE_PACKAGES" "$SUITE" "$dir" "$MIRROR" >"$dir.debootstrap.log" 2>&1 \
    || { tail -n 30 "$dir.debootstrap.log" >&2; return 1; }
  rm -f "$dir.debootstrap.log"

  # Package lists, so `apt-get install docker.io` works inside a host at once.
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$dir/etc/apt/sources.list"
  chroot "$dir" apt-get update -qq

  # A test user with passwordless sudo; root logs in with keys only.
  chroot "$dir" useradd --create-home --shell /bin/bash tester
  printf 'tester ALL=(ALL) NOPASSWD:ALL\n' >"$dir/etc/sudoers.d/tester"
  chmod 0440 "$dir/etc/sudoers.d/tester"
  install -d -m 0700 "$dir/root/.ssh"
  install -d -m 0700 "$dir/home/tester/.ssh"
  chroot "$dir" chown tester:tester /home/tester/.ssh
  cat >"$dir/etc/ssh/sshd_config.d/machine-test.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
EOF

  # Every host makes its own host key at boot (the image ships none). Only
  # ed25519, the key machine pins: `ssh-keygen -A` would also make an RSA
  # key, over a CPU-second per boot, which five hosts booting at once feel.
  rm -f "$dir"/etc/ssh/ssh_host_*
  printf 'HostKey /etc/ssh/ssh_host_ed25519_key\n' >"$dir/etc/ssh/sshd_config.d/10-machine-test.conf"
  cat >"$dir/etc/systemd/system/machine-test-hostkeys.service" <<'EOF'
[Unit]
Description=Generate the SSH host key
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
[Install]
WantedBy=multi-user.target
EOF
  chroot "$dir" systemctl enable ssh.service machine-test-hostkeys.service >/dev/null 2>&1

  # Docker bind-mounts /etc/hostname and /etc/hosts; files that are mount
  # points cannot be replaced (hostnamectl, sed -i: "Device or resource
  # busy"). Early at boot, before anything could use them, turn them into
  # plain files with the same content, as on a real machine.
  cat >"$dir/usr/local/sbin/machine-test-etc-files" <<'EOF'
#!/bin/sh
for f in /etc/hostname /etc/hosts; do
  if grep -q " $f " /proc/self/mountinfo; then
    content=$(cat "$f") && umount "$f" && printf '%s\n' "$content" >"$f"
  fi
done
exit 0
EOF
  chmod 0755 "$dir/usr/local/sbin/machine-test-etc-files"
  cat >"$dir/etc/systemd/system/machine-test-etc-files.service" <<'EOF'
[Unit]
Description=Make /etc/hostname and /etc/hosts plain files
DefaultDependencies=no
Before=sysinit.target systemd-hostnamed.service dbus.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/machine-test-etc-files
[Install]
WantedBy=sysinit.target
EOF
  chroot "$dir" systemctl enable machine-test-etc-files.service >/dev/null 2>&1

  # Units that cannot work in a container: keep the boot free of failures.
  # And units a Docker host in a container has no use for, which five hosts
  # booting at once on two cores feel: logind (login seats and sessions; it
  # also sits on the path to sshd at boot) and the utmp records. dbus stays:
  # runc's systemd cgroup driver talks to systemd through it.
  chroot "$dir" systemctl mask \
    systemd-remount-fs.service getty@tty1.service console-getty.service \
    systemd-firstboot.service sys-kernel-config.mount sys-kernel-debug.mount \
    sys-kernel-tracing.mount dev-hugepages.mount \
    systemd-logind.service systemd-update-utmp.service \
    systemd-update-utmp-runlevel.service >/dev/null 2>&1

  # Each container gets its own machine id; docker provides hostname,
  # hosts and resolv.conf.
  : >"$dir/etc/machine-id"
  rm -f "$dir/var/lib/dbus/machine-id"
  : >"$dir/etc/resolv.conf"
  printf 'debian\n' >"$dir/etc/hostname"
  chroot "$dir" apt-get clean
}

# chroot_install DIR PACKAGE...: installs Debian packages into the root
# filesystem in DIR, with /proc and /dev mounted and no service started.
chroot_install() {
  local dir=$1
  shift
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod 0755 "$dir/usr/sbin/policy-rc.d"
  mount -t proc proc "$dir/proc"
  mount --rbind /dev "$dir/dev"
  mount --make-rslave "$dir/dev"
  MOUNTED+=("$dir/dev" "$dir/proc")
  chroot "$dir" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >"$dir.apt.log" 2>&1 \
    || { tail -n 30 "$dir.apt.log" >&2; return 1; }
  rm -f "$dir.apt.log"
  chroot "$dir" apt-get clean
  unmount_all
  rm -f "$dir/usr/sbin/policy-rc.d"
  : >"$dir/etc/resolv.conf"
}

# recipe_docker DIR: DIR holds the SSH image's root filesystem; add docker.io.
recipe_docker() {
  local dir=$1
  chroot_install "$dir" "${DOCKER_IMAGE_PACKAGES[@]}"
  # dockerd does not start at boot: provisioning writes its TLS config and
  # then enables and starts it, so it starts once, with that config,
  # instead of starting with the defaults and being restarted a second
  # later. That is a CPU-second saved per host, which five hosts booting at
  # once on two cores feel.
  # containerd, which docker.service pulls in, likewise.
  chroot "$dir" systemctl disable docker.service docker.socket containerd.service >/dev/null 2>&1
  test -x "$dir/usr/sbin/dockerd"
  # The drop-in provisioning writes for this dockerd (machine-cli,
  # provision::engine::static_dropin), so provisioning finds it current and
  # needs no `systemctl daemon-reload`; dockerd's options go to the
  # environment file it names. The container test checks that no reload
  # happened.
  mkdir -p "$dir/etc/systemd/system/docker.service.d"
  cat >"$dir/etc/systemd/system/docker.service.d/10-machine.conf" <<'UNIT'
# Written by machine. dockerd's options are in /etc/docker/machine.env, read at every start.
[Service]
EnvironmentFile=/etc/docker/machine.env
ExecStart=
ExecStart=/usr/sbin/dockerd $MACHINE_DOCKERD_ARGS
UNIT
}

# recipe_vm DIR: DIR holds the Docker image's root filesystem; make it a
# VM's: a kernel and initrd (copied out next to DIR, for direct boot),
# cloud-init reading only NoCloud, systemd-networkd doing DHCP on the
# virtio NIC, and the units the container image masked unmasked.
recipe_vm() {
  local dir=$1
  chroot_install "$dir" "${VM_IMAGE_PACKAGES[@]}"

  # logind included: it turns the ACPI power button into a shutdown, which
  # the qemu driver's stop relies on.
  chroot "$dir" systemctl unmask \
    systemd-remount-fs.service getty@tty1.service console-getty.service \
    systemd-firstboot.service sys-kernel-config.mount sys-kernel-debug.mount \
    sys-kernel-tracing.mount dev-hugepages.mount \
    systemd-logind.service systemd-update-utmp.service \
    systemd-update-utmp-runlevel.service >/dev/null 2>&1
  chroot "$dir" systemctl disable machine-test-etc-files.service >/dev/null 2>&1
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$dir/etc/fstab"
  printf '[Match]\nName=en* eth*\n[Network]\nDHCP=yes\n' >"$dir/etc/systemd/network/80-machine-test.network"
  chroot "$dir" systemctl enable systemd-networkd.service >/dev/null 2>&1
  printf 'datasource_list: [ NoCloud, None ]\nnetwork: {config: disabled}\n' \
    >"$dir/etc/cloud/cloud.cfg.d/90-machine-test.cfg"
  # The kernel and initrd, for -kernel/-initrd.
  local kernel initrd
  kernel=$(ls "$dir"/boot/vmlinuz-* | tail -n 1)
  initrd=$(ls "$dir"/boot/initrd.img-* | tail -n 1)
  cp "$kernel" "$dir.vmlinuz"
  cp "$initrd" "$dir.initrd.img"
  test -s "$dir.vmlinuz" && test -s "$dir.initrd.img"
}

# --- building ---------------------------------------------------------------

MOUNTED=()
WORK=
unmount_all() {
  local m
  for m in "${MOUNTED[@]}"; do
    umount -R "$m" 2>/dev/null || umount -lR "$m" 2>/dev/null || true
  done
  MOUNTED=()
}
WORK_TMPFS=
# Builds happen in a tmpfs when one can be mounted: dpkg's many fsyncs cost
# nothing there, and removing the build is an unmount instead of deleting
# a gigabyte of small files (a minute on a disk mounted with `discard`).
make_work() {
  [ -z "$WORK" ] || return 0
  WORK=$(mktemp -d "$CACHE/build.XXXXXX")
  if mount -t tmpfs -o size=8g,mode=0700 machine-test-build "$WORK" 2>/dev/null; then
    WORK_TMPFS=1
  else
    say "no tmpfs for the build; building on disk in $WORK"
  fi
}
remove_work() {
  unmount_all
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    # Never follow a bind mount that is somehow still there.
    if grep -q " $WORK/" /proc/mounts; then
      say "leaving $WORK: still mounted"
      return 0
    fi
    if [ -n "$WORK_TMPFS" ]; then
      umount "$WORK" && WORK_TMPFS=
    fi
    [ -n "$WORK_TMPFS" ] || rm -rf --one-file-system "$WORK"
  fi
  WORK=
}
cleanup() {
  local rc=$?
  [ "$rc" = 0 ] || [ -z "$STEP" ] || say "FAILED during: $STEP (exit $rc)"
  remove_work
}
trap cleanup EXIT

key_of() { sha256sum | cut -c1-16; }

SSH_KEY=$( { declare -f recipe_ssh; echo "$SUITE $MIRROR $SSH_IMAGE_PACKAGES"; } | key_of)
DOCKER_KEY=$( { echo "$SSH_KEY"; declare -f chroot_install recipe_docker; echo "${DOCKER_IMAGE_PACKAGES[*]}"; } | key_of)
SSH_IMAGE=machine-test/debian-ssh:$SSH_KEY
DOCKER_IMAGE=machine-test/debian-docker:$DOCKER_KEY
VM_KEY=$( { echo "$DOCKER_KEY"; declare -f recipe_vm; echo "${VM_IMAGE_PACKAGES[*]} $VM_DISK_SIZE"; } | key_of)
VM_DIR=$CACHE/vm-$VM_KEY
SSH_TAR=$CACHE/debian-ssh-$SSH_KEY.tar
DOCKER_TAR=$CACHE/debian-docker-$DOCKER_KEY.tar

pack() { # pack DIR TAR: an atomic tarball of DIR
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$1" -cf "$2.part" .
  mv "$2.part" "$2"
}
unpack() { # unpack TAR DIR
  mkdir -p "$2"
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$2" -xpf "$1"
}

build_ssh_tar() {
  make_work
  : "${WORK:?no build directory}"
  rm -rf --one-file-system "$WORK/ssh"
  recipe_ssh "$WORK/ssh"
  pack "$WORK/ssh" "$SSH_TAR"
  rm -rf --one-file-system "$WORK/ssh"
}
build_docker_tar() {
  make_work
  : "${WORK:?no build directory}"
  rm -rf --one-file-system "$WORK/docker"
  unpack "$SSH_TAR" "$WORK/docker"
  recipe_docker "$WORK/docker"
  pack "$WORK/docker" "$DOCKER_TAR"
}
build_vm() {
  make_work
  : "${WORK:?no build directory}"
  rm -rf --one-file-system "$WORK/vm" "$VM_DIR.part"
  unpack "$DOCKER_TAR" "$WORK/vm"
  recipe_vm "$WORK/vm"
  mkdir -p "$VM_DIR.part"
  mv "$WORK/vm.vmlinuz" "$VM_DIR.part/vmlinuz"
  mv "$WORK/vm.initrd.img" "$VM_DIR.part/initrd.img"
  # An ext4 filesystem made from the directory: no loop device or mount.
  truncate -s "$VM_DISK_SIZE" "$WORK/vm.raw"
  mkfs.ext4 -q -L root -d "$WORK/vm" "$WORK/vm.raw"
  rm -rf --one-file-system "$WORK/vm"
  qemu-img convert -O qcow2 "$WORK/vm.raw" "$VM_DIR.part/disk.qcow2"
  rm -f "$WORK/vm.raw"
  mv "$VM_DIR.part" "$VM_DIR"
}
import() { # import TAR IMAGE
  docker import \
    --change 'CMD ["/sbin/init"]' \
    --change 'ENV container=docker' \
    --change 'LABEL machine-test.image=1' \
    "$1" "$2" >/dev/null
}
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

main() {
  local total
  total=$(now)
  mkdir -p "$CACHE"
  # One at a time (parallel test runs may call this together).
  exec 9>"$CACHE/.lock"
  flock 9

  timed "host packages" install_host_packages
  [ "${MACHINE_TEST_VM:-1}" = 0 ] || timed "qemu" install_qemu
  timed "docker daemon" start_dockerd
  timed "docker network" ensure_network

  if [ ! -s "$SSH_TAR" ]; then
    say "building $SSH_IMAGE's root filesystem (debootstrap, a few minutes)"
    timed "debootstrap + configure (ssh)" build_ssh_tar
  fi
  if ! have_image "$SSH_IMAGE"; then
    timed "docker import (ssh)" import "$SSH_TAR" "$SSH_IMAGE"
  fi

  if [ ! -s "$DOCKER_TAR" ]; then
    say "building $DOCKER_IMAGE's root filesystem (apt-get install docker.io)"
    timed "install docker.io (docker)" build_docker_tar
  fi
  if ! have_image "$DOCKER_IMAGE"; then
    timed "docker import (docker)" import "$DOCKER_TAR" "$DOCKER_IMAGE"
  fi

  if [ "${MACHINE_TEST_VM:-1}" != 0 ] && [ ! -s "$VM_DIR/disk.qcow2" ]; then
    command -v qemu-img >/dev/null || die "no qemu-img (package qemu-utils) to build the VM image"
    say "building the VM image $VM_DIR (kernel, cloud-init, ext4 disk)"
    timed "vm image" build_vm
  fi

  if [ -n "$WORK" ]; then
    timed "remove build directory" remove_work
  fi

  # Tarballs and images of older recipes are dead weight.
  local f image
  for f in "$CACHE"/debian-ssh-*.tar "$CACHE"/debian-docker-*.tar; do
    [ -e "$f" ] || continue
    [ "$f" = "$SSH_TAR" ] || [ "$f" = "$DOCKER_TAR" ] || { say "removing stale $f"; rm -f "$f"; }
  done
  for f in "$CACHE"/vm-*; do
    [ -e "$f" ] || continue
    [ "$f" = "$VM_DIR" ] || { say "removing stale $f"; rm -rf --one-file-system "$f"; }
  done
  for image in $(docker images --filter label=machine-test.image=1 --format '{{.Repository}}:{{.Tag}}'); do
    [ "$image" = "$SSH_IMAGE" ] || [ "$image" = "$DOCKER_IMAGE" ] \
      || { say "removing stale image $image"; docker rmi "$image" >/dev/null 2>&1 || say "($image is still in use)"; }
  done

  {
    printf 'MACHINE_TEST_IMAGE_SSH=%s\nMACHINE_TEST_IMAGE_DOCKER=%s\n' "$SSH_IMAGE" "$DOCKER_IMAGE"
    [ ! -s "$VM_DIR/disk.qcow2" ] || printf 'MACHINE_TEST_VM_DIR=%s\n' "$VM_DIR"
  } >"$CACHE/images.env.part"
  mv "$CACHE/images.env.part" "$CACHE/images.env"

  say "$(printf '%-34s %s' total "$(elapsed "$total")")"
  cat "$CACHE/images.env"
}

main "$@"
