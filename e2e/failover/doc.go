// Package failover holds the end-to-end tests of losing a part of the
// cluster for good: the leading reconciler killed in the middle of creating
// services (another manager takes over, every service exists once), and a
// worker crashed (Swarm runs its tasks elsewhere, Consul follows, the
// leader removes the lost node's entries). The harness is e2e/bed.
package failover
