// Package backoff is the one capped, jittered exponential backoff every
// loop that waits uses: the Consul watches and sessions, the work queue's
// per-key retries, the Docker event stream and the netlink subscriptions.
//
// Each pause is drawn from [d/2, d) where d = base·2ⁿ capped at max, so
// loops that fail together spread out (consul-template woke every watch at
// once) and the pause never collapses to zero.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay is the pause before attempt n+1 (n failures so far).
func Delay(base, max time.Duration, n int) time.Duration {
	return jittered(capped(base, max, n), rand.Float64)
}

func capped(base, max time.Duration, n int) time.Duration {
	if base > max {
		base = max
	}
	d := max
	if n < 32 {
		if e := base << n; e > 0 && e < max {
			d = e
		}
	}
	return d
}

func jittered(d time.Duration, r func() float64) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + time.Duration(r()*float64(d/2))
}

// Backoff counts failures of one loop and hands out its pauses; the zero
// value is not usable, use New. It is not safe for concurrent use.
type Backoff struct {
	base, max time.Duration
	attempt   int
	rand      func() float64
}

// New returns a Backoff starting at base and capped at max.
func New(base, max time.Duration) *Backoff {
	return &Backoff{base: base, max: max, rand: rand.Float64}
}

// Next is the pause after one more failure.
func (b *Backoff) Next() time.Duration {
	d := jittered(capped(b.base, b.max, b.attempt), b.rand)
	b.attempt++
	return d
}

// Reset starts again from base, after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Attempts is the number of failures since the last Reset.
func (b *Backoff) Attempts() int { return b.attempt }

// Sleep waits d or until ctx is done, and reports whether the whole wait
// passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
