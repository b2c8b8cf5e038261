#!/usr/bin/env bash
# Runs the passes of `make test` one after another and prints, at the end,
# the wall time of every Go test package and of every pass, so the README's
# time budget can be checked against each run.
#
#   scripts/test-times.sh LOGDIR NAME=COMMAND...
#
# Each COMMAND (a go test run, or a make target that runs one) is run with
# bash, its output shown and kept in LOGDIR/NAME.log. The passes stop at the
# first one that fails; the summary is printed all the same (also when the
# run is interrupted), and the exit status is that of the failed pass.
#
# Package times are go test's own (the `ok  pkg  12.3s` and `FAIL  pkg
# 12.3s` lines: the test binary's run, without compiling and linking it);
# pass times are wall clock, builds included.
set -uo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 LOGDIR NAME=COMMAND..." >&2
	exit 2
fi
logdir=$1
shift
mkdir -p "$logdir"

names=()
results=()
begins=()
walls=()

mmss() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

summary() {
	[ ${#names[@]} -gt 0 ] || return 0
	echo
	echo "== time per package (go test's figure for each test binary; packages run one at a time) =="
	for i in "${!names[@]}"; do
		awk -v pass="${names[$i]}" -F'\t' '
			# go test prints "ok  \tPKG\t12.3s", "FAIL\tPKG\t12.3s" or
			# "FAIL\tPKG [build failed]" once a package is done.
			/^(ok  |FAIL)\t/ {
				res = ($1 ~ /^ok/) ? "ok" : "FAIL"
				pkg = $2; t = "-"
				if (NF >= 3 && $3 ~ /^[0-9.]+s/) {
					s = $3; sub(/s.*/, "", s); s = int(s + 0.5)
					t = sprintf("%dm%02ds", s / 60, s % 60)
				} else if (pkg ~ / \[/) {
					t = substr(pkg, index(pkg, " [") + 1); pkg = substr(pkg, 1, index(pkg, " [") - 1)
				}
				printf "  %-6s %-4s  %-34s %8s\n", pass, res, pkg, t
			}' "$logdir/${names[$i]}.log"
	done
	echo "== time per pass (wall clock, compiling and linking included) =="
	total=0
	for i in "${!names[@]}"; do
		# A pass cut short by a signal has not recorded its time yet.
		if [ "${results[$i]}" = run ]; then
			walls[i]=$((SECONDS - begins[i]))
			results[i]=cut
		fi
		printf '  %-6s %-4s  %8s\n' "${names[$i]}" "${results[$i]}" "$(mmss "${walls[$i]}")"
		total=$((total + walls[i]))
	done
	printf '  %-12s  %8s\n' "total" "$(mmss "$total")"
}

trap summary EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

status=0
for pass in "$@"; do
	name=${pass%%=*}
	cmd=${pass#*=}
	begin=$SECONDS
	names+=("$name")
	results+=("run")
	begins+=("$begin")
	walls+=(0)
	echo "$cmd"
	bash -c "$cmd" 2>&1 | tee "$logdir/$name.log"
	status=${PIPESTATUS[0]}
	last=$((${#names[@]} - 1))
	walls[last]=$((SECONDS - begin))
	if [ "$status" -ne 0 ]; then
		results[last]="FAIL"
		break
	fi
	results[last]="ok"
done
exit "$status"
