package main

import (
	"flag"
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

// TestMemoryLimit: --memory-limit sets the runtime's soft limit, 0 lifts
// it, a bad size is an error naming the flag, and $GOMEMLIMIT wins over
// the default but not over the flag.
func TestMemoryLimit(t *testing.T) {
	was := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(was) })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	apply := func(args ...string) error {
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		v := fs.String("memory-limit", defaultMemoryLimit, "")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return applyMemoryLimit(fs, *v, log)
	}
	for _, c := range []struct {
		args []string
		want int64
	}{
		{nil, 100 << 20},
		{[]string{"--memory-limit", "1GiB"}, 1 << 30},
		{[]string{"--memory-limit", "64m"}, 64 << 20},
		{[]string{"--memory-limit", "0"}, math.MaxInt64},
	} {
		if err := apply(c.args...); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := debug.SetMemoryLimit(-1); got != c.want {
			t.Errorf("%v: limit %d, want %d", c.args, got, c.want)
		}
	}
	if err := apply("--memory-limit", "lots"); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Errorf("a bad size: %v", err)
	}
	t.Setenv("GOMEMLIMIT", "300MiB")
	debug.SetMemoryLimit(300 << 20)
	if err := apply(); err != nil || debug.SetMemoryLimit(-1) != 300<<20 {
		t.Errorf("$GOMEMLIMIT overridden by the default (err %v)", err)
	}
	if err := apply("--memory-limit", "50MiB"); err != nil || debug.SetMemoryLimit(-1) != 50<<20 {
		t.Errorf("the flag did not win over $GOMEMLIMIT (err %v)", err)
	}
}
