#!/usr/bin/env bash
# Starts a local dev Consul agent (unless one already answers on
# CONSUL_HTTP_ADDR) and runs the reconciler with every role in the foreground.
set -euo pipefail
consul_bin=$1 run_dir=$2 prefix=$3
addr=${CONSUL_HTTP_ADDR:-127.0.0.1:8500}
export CONSUL_HTTP_ADDR=$addr

consul_pid=""
cleanup() { [ -n "$consul_pid" ] && kill "$consul_pid" 2>/dev/null || true; }
trap cleanup EXIT

if ! curl -fsS "http://$addr/v1/status/leader" >/dev/null 2>&1; then
	port=${addr##*:}
	echo "starting a dev Consul agent on $addr (data and log in $run_dir)" >&2
	"$consul_bin" agent -dev -client 127.0.0.1 -bind 127.0.0.1 -http-port "$port" \
		-grpc-port -1 -grpc-tls-port -1 -data-dir "$run_dir/consul" >"$run_dir/consul.log" 2>&1 &
	consul_pid=$!
	for _ in $(seq 1 60); do
		leader=$(curl -fsS "http://$addr/v1/status/leader" 2>/dev/null || true)
		[ -n "$leader" ] && [ "$leader" != '""' ] && break
		sleep 0.5
	done
fi

echo "reconciler: role all, prefix $prefix, Consul $addr; try: bin/reconciler apply -f examples/" >&2
bin/reconciler run --role all --prefix "$prefix" --listen 127.0.0.1:8480
