#!/usr/bin/env bash
# Makes sure the VM kernel tests can run: qemu-system-x86 is installed and
# Debian's cloud kernel is unpacked (not installed) into a cache outside the
# repository. Idempotent and quiet when both are there.
#
#   SWARMVLAN_VMCACHE   cache directory (default /var/cache/swarmvlan/vmkernel)
#
# The kernel is pinned by package version and the SHA-256 of its .deb. When
# the archive no longer serves the pinned version, the script says so and
# takes the version apt offers for linux-image-cloud-amd64 instead, printing it.
# The cache's "current" link names the unpacked kernel the tests boot.
set -euo pipefail

PIN_PKG=linux-image-6.1.0-57-cloud-amd64
PIN_VERSION=6.1.192-3
PIN_SHA256=4fdd0172a8c3f41a97e92465b2ac1867e1c10d82d7aeed3d26ee7a5d14df1754

CACHE=${SWARMVLAN_VMCACHE:-/var/cache/swarmvlan/vmkernel}

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
	echo "installing qemu-system-x86" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi

# A warm cache: the pinned kernel is unpacked and current.
if [ -e "$CACHE/$PIN_PKG-$PIN_VERSION/.complete" ] && [ "$(readlink "$CACHE/current" 2>/dev/null)" = "$PIN_PKG-$PIN_VERSION" ]; then
	exit 0
fi

# served says whether apt's lists hold version $2 of package $1.
served() { apt-cache show "$1=$2" 2>/dev/null | grep -qx "Version: $2"; }

pkg=$PIN_PKG version=$PIN_VERSION sha=$PIN_SHA256
if ! served "$pkg" "$version"; then
	apt-get update -qq
fi
if ! served "$pkg" "$version"; then
	echo "ensure-vm: $pkg $version is no longer served by the archive" >&2
	pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
	version=$(apt-cache policy "$pkg" | awk '/Candidate:/{print $2; exit}')
	if [ -z "$pkg" ] || [ -z "$version" ] || [ "$version" = "(none)" ]; then
		echo "ensure-vm: apt offers no linux-image-cloud-amd64 kernel either" >&2
		exit 1
	fi
	sha=$(apt-cache show "$pkg=$version" | awk '/^SHA256:/{print $2; exit}')
	echo "ensure-vm: using the candidate $pkg $version (sha256 $sha) instead; pin it in scripts/ensure-vm.sh" >&2
fi

dir=$CACHE/$pkg-$version
if [ ! -e "$dir/.complete" ]; then
	echo "fetching $pkg $version into $dir" >&2
	mkdir -p "$CACHE"
	tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$version")
	deb=$(ls "$tmp"/*.deb)
	got=$(sha256sum "$deb" | awk '{print $1}')
	if [ "$got" != "$sha" ]; then
		echo "ensure-vm: $deb has sha256 $got, want $sha" >&2
		exit 1
	fi
	dpkg-deb -x "$deb" "$tmp/root"
	rm -f "$deb"
	rm -rf "$dir"
	mv "$tmp/root" "$dir"
	touch "$dir/.complete"
fi
ln -sfn "$pkg-$version" "$CACHE/current"
