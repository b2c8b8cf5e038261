package chaos

import (
	"testing"

	"swarmvlan/e2e/bed"
)

func TestMain(m *testing.M) { bed.Main(m) }
