package main

import (
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/docker/go-units"
)

// defaultMemoryLimit keeps a leader over 10,000 services under 128 MB of
// RSS: its live heap is about 16 MB between passes, and a pass over every
// service needs some 100 MB for a moment (the Engine's service list and
// the wanted specs), which the runtime would otherwise keep.
const defaultMemoryLimit = "100MiB"

// applyMemoryLimit sets the runtime's soft memory limit from --memory-limit
// (0: none). $GOMEMLIMIT, read by the runtime itself, is left in force
// unless the flag was given.
func applyMemoryLimit(fs *flag.FlagSet, value string, log *slog.Logger) error {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "memory-limit" })
	if !given && os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	n, err := units.RAMInBytes(value)
	if err != nil || n < 0 {
		return fmt.Errorf("--memory-limit: %q is not a size such as 100MiB or 1GiB (0 for none)", value)
	}
	if n == 0 {
		n = math.MaxInt64
	}
	debug.SetMemoryLimit(n)
	if n != math.MaxInt64 {
		log.Debug("memory limit", "bytes", n)
	}
	return nil
}
