// Package engines is the Engine matrix: the walkthrough, a dockerd
// restart, a host reboot and the leader kill (the scenarios of
// e2e/walkthrough, e2e/restart and e2e/failover, from e2e/bed) on every
// Docker Engine users run, one lab cluster per Engine: Debian bookworm's
// 20.10 (the machine's own), trixie's 26.1.5, sid's 28.5.2 and 29.8.1 built
// from the Go module proxy, the last three prepared by
// scripts/ensure-engines.sh. A failure names the Engine
// (TestEngines/Engine29/walkthrough). An Engine that is not there fails as
// not run, with the reason the script recorded; it is never a pass.
package engines
