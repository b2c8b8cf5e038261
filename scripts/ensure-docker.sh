#!/usr/bin/env bash
# Makes sure the local Docker Engine is running and is a swarm manager.
# Installs Debian's docker.io when no engine is present, and Debian's git (the
# GitOps tests' git server) when it is missing.
set -euo pipefail

if ! docker info >/dev/null 2>&1; then
	if ! command -v dockerd >/dev/null 2>&1; then
		echo "installing docker.io" >&2
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io iproute2 iptables >/dev/null
	fi
	if ! docker info >/dev/null 2>&1; then
		echo "starting dockerd" >&2
		(nohup dockerd >/var/log/dockerd.log 2>&1 &)
		for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
	fi
fi
docker info >/dev/null 2>&1 || { echo "docker engine is not reachable" >&2; exit 1; }

# The GitOps tests serve their repository with Debian's git (git-http-backend).
if ! command -v git >/dev/null 2>&1 || [ ! -x /usr/lib/git-core/git-http-backend ]; then
	echo "installing git" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git >/dev/null
fi

state=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" = "inactive" ]; then
	docker swarm init --advertise-addr 127.0.0.1 >/dev/null
	echo "initialised a single-node swarm on the local engine" >&2
fi
