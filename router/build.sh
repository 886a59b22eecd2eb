#!/usr/bin/env bash
# Builds agentworld-router (the gateway's Go data plane) into ${AGENTWORLD_CACHE:-~/.cache/agentworld}/bin, once
# per source: instant when the sources have not changed. Needs Go >= 1.26 and the Go module proxy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then export PATH="/usr/local/go/bin:$PATH"; fi
command -v go >/dev/null 2>&1 || { echo "router/build.sh: Go toolchain not found (need go >= 1.26)" >&2; exit 1; }
out="${AGENTWORLD_CACHE:-$HOME/.cache/agentworld}/bin"
digest="$(cat "$here"/go.mod "$here"/go.sum "$here"/*.go | sha256sum | cut -c1-16)"
if [ -x "$out/agentworld-router" ] && [ "$(cat "$out/agentworld-router.src" 2>/dev/null)" = "$digest" ]; then
  exit 0
fi
mkdir -p "$out"
(cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out/agentworld-router.tmp" .)
mv "$out/agentworld-router.tmp" "$out/agentworld-router"
echo "$digest" > "$out/agentworld-router.src"
echo "built $out/agentworld-router"
