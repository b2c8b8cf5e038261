// Package walkthrough is the README's walkthrough as an end-to-end test:
// the VLAN and a web service applied with `reconciler apply` on three lab
// hosts, then every part of the result checked on every host (chunks and
// allocations, the swarm network, task spread and addresses, Consul, the
// kernel side, statuses). The harness is e2e/bed.
package walkthrough
