#!/usr/bin/env bash
# Removes every test host container (label machine-test=1) with its volumes:
# the shell twin of machine_integration::hosts::remove_all_test_hosts, for
# cleanup traps after test processes that were killed before their hosts'
# Drop ran. Does nothing when Docker is not there.
set -euo pipefail
command -v docker >/dev/null 2>&1 || exit 0
docker info >/dev/null 2>&1 || exit 0
ids=$(docker ps --all --quiet --filter label=machine-test=1)
if [ -n "$ids" ]; then
  # shellcheck disable=SC2086
  docker rm --force --volumes $ids >/dev/null
  echo "removed $(wc -w <<<"$ids") test host container(s)" >&2
fi

# Machines the container driver made for test stores (temporary stores under
# /tmp/machine-test-*) that a killed test did not remove.
for id in $(docker ps --all --quiet --filter label=io.machine.store); do
  store=$(docker inspect --format '{{index .Config.Labels "io.machine.store"}}' "$id")
  case "$store" in
    /tmp/machine-test-*)
      vols=$(docker inspect --format '{{range .Mounts}}{{if .Name}}{{.Name}} {{end}}{{end}}' "$id")
      docker rm --force --volumes "$id" >/dev/null
      # shellcheck disable=SC2086
      [ -z "$vols" ] || docker volume rm --force $vols >/dev/null 2>&1 || true
      ;;
  esac
done
