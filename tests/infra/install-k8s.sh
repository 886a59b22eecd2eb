#!/usr/bin/env bash
# Kubernetes test infrastructure: builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kwok and helm from Go modules (cached under ${AGENTWORLD_CACHE:-~/.cache/agentworld}/k8s-bin; instant when cached).
# Idempotent. Needs Go >= 1.26 (the polyglot machine has it) and the Go module proxy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"; fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-k8s: Go toolchain not found (need go >= 1.26 to build the Kubernetes binaries)" >&2
  exit 1
fi
exec bash "$here/k8s/build-binaries.sh"
