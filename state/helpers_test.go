package state

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
)

// newAgent starts a real Consul agent for the test.
func newAgent(t testing.TB, opts ...lab.ConsulOption) *lab.ConsulAgent {
	t.Helper()
	if os.Getenv(lab.ConsulEnv) == "" {
		if _, err := lab.ConsulBinary(); err != nil {
			t.Skipf("no consul binary: %v", err)
		}
	}
	return lab.StartConsul(t, opts...)
}

// storeFor returns a store talking to addr.
func storeFor(t testing.TB, addr string) *Store {
	t.Helper()
	s, err := New(Config{Address: addr})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// testCtx is cancelled when the test ends.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// eventually polls cond every 20 ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lossNotYetSeen is l as it is between losing the lock and noticing it:
// same session, context still live. Its writes reach Consul, so they test
// Consul's fence rather than the local check of the context.
func lossNotYetSeen(l *Leadership) *Leadership {
	return &Leadership{store: l.store, sess: l.sess, id: l.id, key: l.key, ctx: context.Background()}
}

// delivery is one call of a watch callback.
type delivery struct {
	pairs api.KVPairs
	index uint64
	at    time.Time
	// requests is the store's request count when the callback ran.
	requests uint64
}

func (d delivery) values() map[string]string {
	m := make(map[string]string, len(d.pairs))
	for _, p := range d.pairs {
		m[p.Key] = string(p.Value)
	}
	return m
}

// runWatch runs WatchPrefix in the background until the test ends and
// returns its deliveries on a channel; the test fails if the watch returns
// anything but the cancellation.
func runWatch(t testing.TB, s *Store, prefix string, opts WatchOptions) <-chan delivery {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan delivery, 1024)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := s.WatchPrefix(ctx, prefix, opts, func(pairs api.KVPairs, index uint64) {
			ch <- delivery{pairs: pairs, index: index, at: time.Now(), requests: s.Requests()}
		})
		if err != context.Canceled {
			t.Errorf("WatchPrefix(%q) returned %v, want context.Canceled", prefix, err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ch
}

// next waits up to d for a delivery matching cond, skipping others.
func next(t testing.TB, ch <-chan delivery, d time.Duration, what string, cond func(delivery) bool) delivery {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case got := <-ch:
			if cond(got) {
				return got
			}
		case <-timeout:
			t.Fatalf("no delivery with %s within %v", what, d)
		}
	}
}

// none asserts no delivery arrives within d.
func none(t testing.TB, ch <-chan delivery, d time.Duration, why string) {
	t.Helper()
	select {
	case got := <-ch:
		t.Fatalf("unexpected delivery at index %d (%v): %s", got.index, got.values(), why)
	case <-time.After(d):
	}
}

func put(t testing.TB, c *api.Client, key, value string) time.Time {
	t.Helper()
	at := time.Now()
	if _, err := c.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return at
}
