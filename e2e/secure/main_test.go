package secure

import (
	"testing"

	"swarmvlan/e2e/bed"
)

// TestMain builds the reconciler once (bed.Main); every test runs it as
// users run it: as a process configured by flags and the CONSUL_*
// variables.
func TestMain(m *testing.M) { bed.Main(m) }
