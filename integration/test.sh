#!/usr/bin/env bash
# The whole test suite, on a fresh machine, and what CI runs (.ci/run): installs what the end-to-end tests drive
# (the stock openconnect client, ocproxy, iperf3, curl, nftables...) when missing, then runs vet, staticcheck, the
# unit tests under the race detector, a few seconds of each fuzz target, and the end-to-end tests.
# Needs root (apt-get, network namespaces); the server under test still runs unprivileged. Without root,
# `go test ./...` runs the unit tests and skips the end-to-end package.
set -euo pipefail
cd "$(dirname "$0")/.."

# staticcheck, pinned: the release that supports the Go version in go.mod.
STATICCHECK=honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME=${FUZZTIME:-5s}

need=()
for tool in openconnect:openconnect ocproxy:ocproxy iperf3:iperf3 curl:curl setpriv:util-linux ip:iproute2 ss:iproute2 \
  nft:nftables ping:iputils-ping sysctl:procps ethtool:ethtool freeradius:freeradius openssl:openssl \
  systemd-analyze:systemd getent:libc-bin haproxy:haproxy redis-server:redis-server; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: missing ${need[*]}; run as root (or install them) first" >&2
    exit 1
  fi
  echo "test.sh: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step() { echo "== $*" >&2; }

step "go vet"
go vet ./...
go vet -tags pprof ./cmd/ocgate # the profiler build (cmd/ocgate/pprof.go)

step "staticcheck ($STATICCHECK)"
go run "$STATICCHECK" ./...

step "unit tests with the race detector (all packages outside integration/)"
go test -count=1 -race -timeout 10m $(go list ./... | grep -v '^ocgate/integration')

# The load generator's tests need no root but measure throughput through a real server: under the race detector
# on a busy 2-core machine the 1-second bulk runs moved no upload bytes, so they run without it.
step "load generator tests (integration/loadgen, no root needed)"
go test -count=1 -timeout 10m ./integration/loadgen/... ./integration/internal/... ./integration/testtarget

step "fuzz targets, $FUZZTIME each"
FUZZTIME="$FUZZTIME" bash integration/fuzz.sh

step "end-to-end tests (./integration)"
go test -count=1 -timeout 15m ./integration
