#!/usr/bin/env bash
# Build the Kubernetes test binaries (etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kubectl, kwok,
# helm) from Go modules through the module proxy, into a cache outside the clone so re-runs are instant.
#
# k8s.io/kubernetes' go.mod replaces its staging modules (k8s.io/api, ...) with ./staging/src/... paths that the
# module zip lacks; a small build module requires k8s.io/kubernetes and points each staging module at the published
# k8s.io/* v0.Y.Z of the same release. kwok, helm and etcd are required by the same module so minimal version
# selection unifies their dependencies and every shared package compiles once.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.8}"
CACHE="${AGENTWORLD_CACHE:-$HOME/.cache/agentworld}"
BIN_DIR="$CACHE/k8s-bin/${K8S_VERSION}-kwok${KWOK_VERSION}-helm${HELM_VERSION}-etcd${ETCD_VERSION}"
BINARIES=(etcd kube-apiserver kube-scheduler kube-controller-manager kubectl kwok helm)

have_all() { for b in "${BINARIES[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done; [ -s "$BIN_DIR/kwok-stages.yaml" ]; }
if have_all; then echo "k8s binaries cached in $BIN_DIR"; exit 0; fi

command -v go >/dev/null || { echo "go is required to build the Kubernetes test binaries" >&2; exit 1; }
SRC="$CACHE/k8s-build/${K8S_VERSION}"
mkdir -p "$SRC/cmd/etcd" "$BIN_DIR"
export GOFLAGS="-trimpath -mod=mod"
export GOCACHE="${GOCACHE_OVERRIDE:-$CACHE/go-build}"
export CGO_ENABLED=0
start=$(date +%s)

cd "$SRC"
# Same program as etcd's own main.go (go.etcd.io/etcd/v3), built against the etcd server the apiserver is tested with.
cat > cmd/etcd/main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
GO
if [ ! -f go.sum ]; then
  staging_ver="v0.${K8S_VERSION#v1.}"
  modfile=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module agentworld.dev/k8sbuild"
    echo
    echo "go 1.26.0"
    echo
    echo "godebug default=go1.26"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes ${K8S_VERSION}"
    echo "	sigs.k8s.io/kwok ${KWOK_VERSION}"
    echo "	helm.sh/helm/v3 ${HELM_VERSION}"
    echo "	go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
    echo ")"
    echo
    echo "replace ("
    grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$modfile" | awk -v v="$staging_ver" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > go.mod
  go mod tidy
fi
for b in "${BINARIES[@]}"; do
  case "$b" in
    etcd) pkg=./cmd/etcd ;;
    kwok) pkg=sigs.k8s.io/kwok/cmd/kwok ;;
    helm) pkg=helm.sh/helm/v3/cmd/helm ;;
    *) pkg="k8s.io/kubernetes/cmd/$b" ;;
  esac
  [ -x "$BIN_DIR/$b" ] && continue
  # Version stamps (as hack/lib/version.sh sets them): helm checks the chart's kubeVersion against the server's.
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  ver="-X k8s.io/component-base/version.gitVersion=${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=1"
  ver="$ver -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/client-go/pkg/version.gitVersion=${K8S_VERSION}"
  ver="$ver -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${minor}"
  ver="$ver -X k8s.io/component-base/version.gitTreeState=clean"
  if [ "$b" = helm ]; then  # as helm's Makefile: the Kubernetes version `helm template`/`lint` assume
    ver="$ver -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
    for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
      ver="$ver -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=${minor}"
    done
  fi
  t0=$(date +%s)
  go build -ldflags="-s -w $ver" -o "$BIN_DIR/$b.tmp" "$pkg"
  mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
  echo "built $b in $(( $(date +%s) - t0 ))s"
done
# kwok's stage definitions (node initialise, pod ready/complete/delete), shipped in its module's kustomize/ dir.
if [ ! -s "$BIN_DIR/kwok-stages.yaml" ]; then
  kwok_dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for f in node/fast/node-initialize.yaml pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$kwok_dir/kustomize/stage/$f"; echo "---"
  done > "$BIN_DIR/kwok-stages.yaml.tmp"
  mv "$BIN_DIR/kwok-stages.yaml.tmp" "$BIN_DIR/kwok-stages.yaml"
fi
echo "k8s binaries built in $(( $(date +%s) - start ))s into $BIN_DIR"
