#!/usr/bin/env bash
# Fetches or builds the Docker Engines the Engine matrix (e2e/engines) runs
# beside the machine's own (Debian bookworm's 20.10), into a cache outside
# the repository, so a warm machine neither downloads nor builds:
#
#   26.1.5  trixie's docker.io, with the machine's containerd
#   28.5.2  sid's docker.io, with sid's containerd
#   29.8.1  dockerd built from the Go module proxy (tools/dockerd), static
#
# Every Engine uses the machine's runc (sid's needs a newer glibc).
# Packages come from a private apt configuration (its own sources, lists
# and archive under the cache): the machine's sources and installed
# packages stay as they are. Each .deb is pinned by version and SHA-256.
#
# Layout: $SWARMVLAN_ENGINE_CACHE (default /var/cache/swarmvlan/engines)/
# <version>/bin/ holds dockerd (and containerd where the Engine brings its
# own) and <version>/engine.env says what is there; lab.EngineByName reads
# both. An Engine that cannot be had (a pinned package no longer served,
# the proxy away) is reported here by name, its <version>/missing says why,
# and the script goes on with the others and exits 0: the matrix test of
# that Engine then fails with that reason, it is never counted as passed.
# ENGINES="26 28 29" picks the Engines to prepare.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SWARMVLAN_ENGINE_CACHE:-/var/cache/swarmvlan/engines}
wanted=${ENGINES:-26 28 29}
GO=${GO:-go}

# Pins: package=version sha256.
DEB_26_DOCKER="docker.io=26.1.5+dfsg1-9+deb13u1+b1 53ae1a99f15113f0a0d2226808ec0d24ee31b3b87b87ab8ec35be09a1a2ee13b"
DEB_28_DOCKER="docker.io=28.5.2+dfsg4-5 69a59cc77a1fb8ee9ad6859abc2e6de5d76b70887405595c2b1307818fecf682"
DEB_28_CONTAINERD="containerd=2.1.9+ds1-5 2dda86ce7033fd612fc50e136679d8174ccad680eb29cd4611e0d2a1b84cf591"
# Engine 29 is pinned by tools/dockerd/go.mod and go.sum; the module does
# not carry its release number, which the build sets (as moby's own
# scripts do) so that the daemon reports it.
MOBY_29="github.com/moby/moby/v2@v2.0.0-beta.24"

say() { printf 'engines: %s\n' "$*" >&2; }

mkdir -p "$cache" || { say "cannot create $cache"; exit 1; }
began=$SECONDS

# --- private apt ---------------------------------------------------------
apt_dir=$cache/apt
apt_opts=(
	-o "Dir::State=$apt_dir/state"
	-o "Dir::State::status=$apt_dir/state/status"
	-o "Dir::Cache=$apt_dir/cache"
	-o "Dir::Etc::SourceList=$apt_dir/sources.list"
	-o "Dir::Etc::SourceParts=/nonexistent"
	-o "Dir::Etc::Preferences=/nonexistent"
	-o "Dir::Etc::PreferencesParts=/nonexistent"
	-o "APT::Architecture=amd64"
	-o "APT::Architectures=amd64"
	-o "Acquire::Languages=none"
	-o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
	-o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
	-o "APT::Sandbox::User=root"
	-o "Debug::NoLocking=true"
)
# Once per run: the marker files carry this shell's pid ($$ is the same in
# the subshells that call it).
apt_update() {
	[ -f "$apt_dir/updated.$$" ] && return 0
	[ -f "$apt_dir/failed.$$" ] && return 1
	mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial"
	: >"$apt_dir/state/status"
	cat >"$apt_dir/sources.list" <<-'SOURCES'
	deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
	deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
	SOURCES
	local t=$SECONDS
	if apt-get "${apt_opts[@]}" -qq update >"$apt_dir/update.log" 2>&1; then
		say "package lists of trixie and sid fetched in $((SECONDS - t))s"
		touch "$apt_dir/updated.$$"
		return 0
	fi
	say "apt-get update of trixie and sid failed:"
	sed 's/^/engines:   /' "$apt_dir/update.log" >&2
	touch "$apt_dir/failed.$$"
	return 1
}

# fetch_deb "pkg=version sha256" DIR: downloads the pinned .deb into the
# cache's archive (kept, so a rebuilt Engine directory needs no download),
# checks its SHA-256 and unpacks it into DIR.
fetch_deb() {
	local pin=${1% *} sum=${1#* } dir=$2
	local pkg=${pin%%=*} ver=${pin#*=}
	local debs=$cache/debs
	local deb=$debs/${pkg}_${ver//:/%3a}_amd64.deb
	mkdir -p "$debs"
	if [ ! -f "$deb" ] || ! echo "$sum  $deb" | sha256sum -c --status; then
		apt_update || { echo "package lists not fetched (see above)"; return 1; }
		local out
		if ! out=$(cd "$debs" && apt-get "${apt_opts[@]}" -qq download "$pin" 2>&1); then
			if grep -q "not found\|Unable to locate" <<<"$out"; then
				local now
				now=$(apt-cache "${apt_opts[@]}" madison "$pkg" 2>/dev/null |
					awk -F' *[|] *' '{split($3, w, " "); split(w[2], d, "/"); printf "%s%s (%s)", sep, $2, d[1]; sep=", "}')
				echo "$pin is no longer served by trixie or sid (served: ${now:-nothing}); update the pin in scripts/ensure-engines.sh"
			else
				echo "apt-get download $pin: $out"
			fi
			return 1
		fi
		if ! echo "$sum  $deb" | sha256sum -c --status; then
			echo "$pin: SHA-256 $(sha256sum "$deb" | cut -d' ' -f1), pinned $sum"
			rm -f "$deb"
			return 1
		fi
	fi
	dpkg-deb -x "$deb" "$dir" || { echo "dpkg-deb -x $deb failed"; return 1; }
}

# ready DIR PIN: the Engine in DIR was prepared from PIN and is complete.
ready() {
	[ -f "$1/engine.env" ] && grep -qxF "PIN='$2'" "$1/engine.env" && [ -x "$1/bin/dockerd" ]
}

# finish DIR VERSION PIN BINARIES...: checks the binaries run and records
# what the directory holds.
finish() {
	local dir=$1 version=$2 pin=$3
	shift 3
	local v
	v=$("$dir/bin/dockerd" --version 2>&1) || { echo "$dir/bin/dockerd does not run: $v"; return 1; }
	case "$v" in
	*"version $version"*) ;;
	*) echo "$dir/bin/dockerd reports \"$v\", want $version"; return 1 ;;
	esac
	{
		echo "VERSION='$version'"
		echo "PIN='$pin'"
		echo "DOCKERD_VERSION='$v'"
		echo "BINARIES='$*'"
	} >"$dir/engine.env"
}

prepare_26() {
	local dir=$1
	fetch_deb "$DEB_26_DOCKER" "$dir/root" || return 1
	mkdir -p "$dir/bin"
	ln -sfn ../root/usr/sbin/dockerd "$dir/bin/dockerd"
	finish "$dir" 26.1.5 "$DEB_26_DOCKER" dockerd
}

prepare_28() {
	local dir=$1
	fetch_deb "$DEB_28_DOCKER" "$dir/root" || return 1
	fetch_deb "$DEB_28_CONTAINERD" "$dir/root" || return 1
	mkdir -p "$dir/bin"
	for b in sbin/dockerd bin/containerd bin/containerd-shim-runc-v2; do
		ln -sfn "../root/usr/$b" "$dir/bin/${b#*/}"
	done
	finish "$dir" 28.5.2 "$DEB_28_DOCKER $DEB_28_CONTAINERD" dockerd containerd containerd-shim-runc-v2
}

prepare_29() {
	local dir=$1
	mkdir -p "$dir/bin"
	local log=$dir/build.log t=$SECONDS
	# The checksum database is asked nothing: go.sum pins every module.
	if ! (cd "$root/tools/dockerd" && CGO_ENABLED=0 GOFLAGS='-mod=readonly -buildvcs=false' "$GO" build -trimpath \
		-tags 'netgo osusergo static_build nri_no_wasm exclude_graphdriver_btrfs exclude_disk_quota' \
		-ldflags "-X github.com/moby/moby/v2/dockerversion.Version=29.8.1 -X github.com/moby/moby/v2/dockerversion.GitCommit=${MOBY_29#*@}" \
		-o "$dir/bin/dockerd.new" github.com/moby/moby/v2/cmd/dockerd) >"$log" 2>&1; then
		echo "go build of $MOBY_29 failed (last lines of $log):"
		tail -n 15 "$log"
		return 1
	fi
	mv "$dir/bin/dockerd.new" "$dir/bin/dockerd"
	say "Engine 29 built from $MOBY_29 in $((SECONDS - t))s"
	finish "$dir" 29.8.1 "$MOBY_29 $(sha256sum "$root/tools/dockerd/go.sum" | cut -d' ' -f1)" dockerd
}

status=0
for e in $wanted; do
	case $e in
	26) version=26.1.5 pin=$DEB_26_DOCKER ;;
	28) version=28.5.2 pin="$DEB_28_DOCKER $DEB_28_CONTAINERD" ;;
	29) version=29.8.1 pin="$MOBY_29 $(sha256sum "$root/tools/dockerd/go.sum" | cut -d' ' -f1)" ;;
	*) say "unknown Engine $e (known: 26 28 29)"; status=1; continue ;;
	esac
	dir=$cache/$version
	if ready "$dir" "$pin"; then
		rm -f "$dir/missing"
		say "Engine $version ready (cached)"
		continue
	fi
	t=$SECONDS
	rm -rf "$dir/root" "$dir/engine.env"
	mkdir -p "$dir"
	# What prepare_* prints on stdout is why it failed; progress goes to
	# stderr.
	if why=$("prepare_$e" "$dir"); then
		rm -f "$dir/missing"
		say "Engine $version ready (prepared in $((SECONDS - t))s)"
	else
		printf '%s\n' "$why" >"$dir/missing"
		rm -f "$dir/engine.env"
		say "Engine $version NOT AVAILABLE, its matrix tests will fail as not run:"
		sed 's/^/engines:   /' "$dir/missing" >&2
	fi
done
rm -f "$apt_dir"/updated.$$ "$apt_dir"/failed.$$
say "done in $((SECONDS - began))s"
exit "$status"
