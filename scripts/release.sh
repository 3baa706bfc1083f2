#!/bin/sh
# Builds the release artefacts into dist/ (or $OUT): static binaries (CGO_ENABLED=0, no libc needed) for
# linux/amd64 and linux/arm64 with the version stamped, and their SHA-256 sums.
#
#   scripts/release.sh [VERSION]        VERSION defaults to `git describe --tags --always --dirty`, else "dev"
#   OUT=/tmp/rel PLATFORMS="linux/amd64" scripts/release.sh
#
# `ocgate version` of a built binary prints VERSION, and, when built from a git checkout, the VCS revision.
set -eu
cd "$(dirname "$0")/.."
version=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
out=${OUT:-dist}
platforms=${PLATFORMS:-"linux/amd64 linux/arm64"}
# The revision is stamped from git when this is a checkout (the go command's own VCS stamping misses worktrees
# and is off under GOFLAGS=-buildvcs=false).
revision=$(git rev-parse HEAD 2>/dev/null || true)
if [ -n "$revision" ] && [ -n "$(git status --porcelain 2>/dev/null)" ]; then revision="$revision-modified"; fi
mkdir -p "$out"
for p in $platforms; do
	os=${p%/*} arch=${p#*/}
	bin="$out/ocgate-$version-$os-$arch"
	echo "building $bin"
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -buildvcs=false \
		-ldflags "-s -w -X main.version=$version -X main.revision=$revision" -o "$bin" ./cmd/ocgate
done
(cd "$out" && sha256sum ocgate-"$version"-* > "SHA256SUMS-$version" && cat "SHA256SUMS-$version")
