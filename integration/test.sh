#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the end-to-end tests drive (the stock openconnect client,
# ocproxy, iperf3, curl, nftables) when missing, then runs vet, the unit tests and the end-to-end tests.
# Needs root (apt-get, network namespaces); the server under test still runs unprivileged.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in openconnect:openconnect ocproxy:ocproxy iperf3:iperf3 curl:curl setpriv:util-linux ip:iproute2 nft:nftables \
  ping:iputils-ping sysctl:procps ethtool:ethtool; do
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

go vet ./...
go test -count=1 -timeout 15m ./...
