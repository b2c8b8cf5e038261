// Package ipam tests rangePlan.mode cluster end to end on three lab hosts,
// each dockerd in a mount namespace of its own so that it sees only its
// own host's IPAM plugin socket: one /26 for every host, addresses leased
// in Consul by swarmvlan's IPAM plugin, against what mode chunks can place
// on the same /26. The harness is e2e/bed.
package ipam
