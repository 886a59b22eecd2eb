#!/usr/bin/env bash
# Docker engine for tests/docker and `make base-image`: Debian's docker.io + docker-registry, dockerd started by hand
# (no systemd here). Idempotent: installs only what is missing and starts dockerd only if its socket is dead.
set -euo pipefail

CACHE="${AGENTWORLD_CACHE:-$HOME/.cache/agentworld}"
LOG="$CACHE/dockerd.log"
mkdir -p "$CACHE"

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

alive() { timeout 10 docker info >/dev/null 2>&1; }

if alive; then
  echo "dockerd already running ($(docker info --format '{{.ServerVersion}} {{.Driver}}'))"
  exit 0
fi

start() {  # $1 = storage driver; returns 0 once the socket answers
  local driver="$1"
  if [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    kill "$(cat /var/run/docker.pid)" || true
    sleep 2
  fi
  rm -f /var/run/docker.pid
  echo "starting dockerd (storage driver $driver), log $LOG"
  nohup setsid dockerd --storage-driver "$driver" --log-level warn >>"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    alive && return 0
    sleep 0.5
  done
  return 1
}

if ! start overlay2; then
  echo "overlay2 did not come up; falling back to vfs" >&2
  start vfs || { echo "dockerd failed to start; last log lines:" >&2; tail -n 30 "$LOG" >&2; exit 1; }
fi
docker info --format 'dockerd {{.ServerVersion}} storage={{.Driver}} cgroup={{.CgroupDriver}}'
