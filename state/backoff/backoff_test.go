package backoff

import (
	"testing"
	"time"
)

func TestBackoffIsCappedAndJittered(t *testing.T) {
	base, limit := 200*time.Millisecond, 3*time.Second
	// ceiling[i] is the pause's upper bound at attempt i: doubling, capped.
	ceiling := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3 * time.Second, 3 * time.Second, 3 * time.Second}
	for _, tc := range []struct {
		name string
		r    float64
		want func(d time.Duration) time.Duration
	}{
		{"lowest draw is half the ceiling", 0, func(d time.Duration) time.Duration { return d / 2 }},
		{"highest draw approaches the ceiling", 0.999999, func(d time.Duration) time.Duration { return d/2 + time.Duration(0.999999*float64(d/2)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := New(base, limit)
			b.rand = func() float64 { return tc.r }
			for i, d := range ceiling {
				if got := b.Next(); got != tc.want(d) {
					t.Errorf("attempt %d: pause %v, want %v", i, got, tc.want(d))
				}
			}
			b.Reset()
			if got := b.Next(); got != tc.want(ceiling[0]) {
				t.Errorf("after reset: pause %v, want %v", got, tc.want(ceiling[0]))
			}
		})
	}
	t.Run("real draws stay in bounds and differ", func(t *testing.T) {
		seen := map[time.Duration]bool{}
		for i := 0; i < 200; i++ {
			b := New(base, limit)
			for range 10 {
				b.Next()
			}
			d := b.Next()
			if d < limit/2 || d >= limit {
				t.Fatalf("capped pause %v outside [%v, %v)", d, limit/2, limit)
			}
			seen[d] = true
		}
		if len(seen) < 100 {
			t.Errorf("200 capped pauses took only %d distinct values: not jittered", len(seen))
		}
	})
	t.Run("many attempts do not overflow", func(t *testing.T) {
		b := New(base, limit)
		for i := 0; i < 1000; i++ {
			if d := b.Next(); d <= 0 || d > limit {
				t.Fatalf("attempt %d: pause %v", i, d)
			}
		}
	})
}

func TestDelayCappedAndJittered(t *testing.T) {
	for _, tc := range []struct {
		n        int
		min, max time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 100 * time.Millisecond, 200 * time.Millisecond},
		{5, 1600 * time.Millisecond, 3200 * time.Millisecond},
		{30, 5 * time.Second, 10 * time.Second},
		{1000, 5 * time.Second, 10 * time.Second},
	} {
		seen := map[time.Duration]bool{}
		for i := 0; i < 50; i++ {
			d := Delay(100*time.Millisecond, 10*time.Second, tc.n)
			if d < tc.min || d >= tc.max {
				t.Fatalf("Delay(n=%d) = %v, want in [%v,%v)", tc.n, d, tc.min, tc.max)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Fatalf("Delay(n=%d) has no jitter", tc.n)
		}
	}
}
