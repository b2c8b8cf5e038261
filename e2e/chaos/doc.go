// Package chaos is a seeded random run of faults over a lab cluster of
// five hosts (three managers), with invariants checked throughout: a
// nemesis kills and restarts reconcilers (the leader more often) and
// dockerds, cuts hosts off the others, writes bursts of valid and invalid
// documents, sends concurrent scale requests at the bounds, stops Consul
// servers (one, then a majority), crashes and boots hosts and restores
// Consul snapshots, while a monitor reads every host's Docker Engine and
// Consul each second and fails the test, printing the seed and the
// schedule so far, when a safety rule breaks or a liveness bound is
// exceeded. SWARMVLAN_CHAOS_SEED and SWARMVLAN_CHAOS_DURATION set the
// seed and the time faults are injected for (`make chaos`); without them
// a short run of a fixed seed. The harness is e2e/bed.
package chaos
