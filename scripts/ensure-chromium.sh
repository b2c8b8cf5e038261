#!/usr/bin/env bash
# Makes sure the dashboard's browser tests can run: Debian's headless-capable
# chromium is installed. Idempotent and quiet when it is there.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
	exit 0
fi
echo "installing chromium" >&2
if ! apt-cache show chromium >/dev/null 2>&1; then
	apt-get update -qq
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
