#!/usr/bin/env bash
# Builds the reconciler image (deploy/Dockerfile, FROM scratch: no registry
# needed) on the Docker Engine that DOCKER_HOST names (default: the local
# one), tags it IMAGE:TAG and saves it as a tarball that `docker load -i`
# takes, for hosts that get images by copy rather than from a registry.
#
#   VERSION  the version stamped into the binary (default: git describe)
#   COMMIT   the commit stamped into it (default: git rev-parse HEAD)
#   IMAGE    the repository name (default: swarmvlan/reconciler)
#   TAG      the tag (default: VERSION)
#   OUT      the tarball (default: bin/swarmvlan-reconciler-TAG.tar)
#   CA_BUNDLE the CA certificates copied into the image
#            (default: /etc/ssl/certs/ca-certificates.crt)
#
# It prints the image reference and the tarball's path.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
VERSION=${VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo devel)}
COMMIT=${COMMIT:-$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)}
IMAGE=${IMAGE:-swarmvlan/reconciler}
TAG=${TAG:-$VERSION}
OUT=${OUT:-$root/bin/swarmvlan-reconciler-$TAG.tar}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if [ ! -s "$CA_BUNDLE" ] && [ "$CA_BUNDLE" = /etc/ssl/certs/ca-certificates.crt ] && [ "$(id -u)" = 0 ]; then
	echo "installing ca-certificates" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates >/dev/null
fi
[ -s "$CA_BUNDLE" ] || { echo "build-image: CA_BUNDLE $CA_BUNDLE: missing or empty (apt-get install ca-certificates)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
(cd "$root" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false "$GO" build -trimpath \
	-ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT" \
	-o "$ctx/reconciler" ./cmd/reconciler)
cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"
cp "$root/deploy/Dockerfile" "$ctx/Dockerfile"

# The classic builder: it needs no BuildKit (buildx) and pulls nothing for
# FROM scratch.
DOCKER_BUILDKIT=0 docker build -q \
	--label org.opencontainers.image.version="$VERSION" \
	--label org.opencontainers.image.revision="$COMMIT" \
	--label org.opencontainers.image.title="swarmvlan reconciler" \
	-t "$IMAGE:$TAG" "$ctx" >/dev/null
mkdir -p "$(dirname "$OUT")"
docker save -o "$OUT" "$IMAGE:$TAG"
echo "$IMAGE:$TAG"
echo "$OUT"
