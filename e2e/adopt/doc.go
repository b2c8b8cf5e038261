// Package adopt is `reconciler adopt` end to end, on lab hosts: the manual
// recipe done by hand with the Docker API (a config-only macvlan network
// with its own range on each of three hosts, a swarm network made
// --config-from it, a 3-replica service on it), then the dry run, the
// takeover (no network re-created, no task restarted, every status
// ready), a scale request and a fourth host joining; and a hand-made plan
// with overlapping ranges, which adopt refuses. The harness is e2e/bed.
package adopt
