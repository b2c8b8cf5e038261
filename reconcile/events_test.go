package reconcile

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
)

// dockerEventsFast shortens the reconnect backoff for a test.
func dockerEventsFast(t *testing.T) {
	t.Helper()
	minB, maxB, stable := dockerEventsBackoffMin, dockerEventsBackoffMax, dockerEventsStable
	dockerEventsBackoffMin, dockerEventsBackoffMax, dockerEventsStable = time.Millisecond, 10*time.Millisecond, time.Hour
	t.Cleanup(func() { dockerEventsBackoffMin, dockerEventsBackoffMax, dockerEventsStable = minB, maxB, stable })
}

// dockerEventsNext receives one event or fails after a deadline.
func dockerEventsNext(t *testing.T, ch <-chan DockerEvent) DockerEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("event channel closed")
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return DockerEvent{}
}

// TestDockerEventsReconnect checks that a refused subscription and a broken
// stream are both retried, that each reconnect emits a resync, and that the
// channel closes when the context ends.
func TestDockerEventsReconnect(t *testing.T) {
	dockerEventsFast(t)
	f := newDockerFake()
	var mu sync.Mutex
	attempt := 0
	f.events = func(ctx context.Context) (<-chan events.Message, <-chan error) {
		mu.Lock()
		attempt++
		n := attempt
		mu.Unlock()
		msgs := make(chan events.Message)
		errc := make(chan error, 1)
		switch n {
		case 2:
			// The engine refuses the subscription.
			errc <- errors.New("connection refused")
			return msgs, errc
		case 1, 3:
			go func() {
				m := events.Message{Type: events.ServiceEventType, Action: events.ActionUpdate,
					Actor: events.Actor{ID: "svc" + string(rune('0'+n)), Attributes: map[string]string{"name": "web"}}, TimeNano: 42}
				select {
				case msgs <- m:
				case <-ctx.Done():
					return
				}
				if n == 1 {
					// Then the stream breaks.
					errc <- errors.New("unexpected EOF")
				}
			}()
		}
		return msgs, errc
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := DockerEvents(ctx, f, "service")

	first := dockerEventsNext(t, ch)
	if first.Type != "service" || first.Action != "update" || first.ID != "svc1" || first.Name != "web" || first.Time.UnixNano() != 42 {
		t.Errorf("first event %+v", first)
	}
	if ev := dockerEventsNext(t, ch); ev.Type != DockerEventResync {
		t.Errorf("after a reconnect got %+v, want a resync", ev)
	}
	if ev := dockerEventsNext(t, ch); ev.ID != "svc3" {
		t.Errorf("after the resync got %+v, want svc3's event", ev)
	}
	cancel()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("channel not closed after cancel")
		}
	}
}
