package walkthrough

import (
	"testing"

	"swarmvlan/e2e/bed"
)

// TestSeedWalkthrough is the README's walkthrough on three hosts: the VLAN
// and a web service of 6 replicas (at most 2 per node) applied with
// `reconciler apply`, then every part of the result checked on every host
// (bed.CheckWalkthrough).
func TestSeedWalkthrough(t *testing.T) {
	b := bed.New(t, 3, 3)
	b.CheckWalkthrough(b.Seed())
}
