// Package restart holds the end-to-end tests of parts of the cluster that
// go away and come back: dockerd restarted and a host rebooted (networks,
// kernel state and tasks come back on their own chunks), and every Consul
// server down for a minute (nothing is removed meanwhile, a change
// converges afterwards). The harness is e2e/bed.
package restart
