package reconcile

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/docker/docker/api/types/events"
)

// DockerEventResync is the Type of the event DockerEvents emits after it
// reconnects: events may have been missed while the stream was down, so
// the receiver should re-read everything it watches.
const DockerEventResync = "resync"

// DockerEvent is one Docker event, or a resync marker.
type DockerEvent struct {
	Type   string // service, network, node, container, ... or DockerEventResync
	Action string // create, update, remove, start, die, ...
	ID     string // the object's ID
	// Name is the object's name where Docker reports one.
	Name       string
	Attributes map[string]string
	Time       time.Time
}

// Reconnect backoff of DockerEvents; variables so tests can shorten them.
var (
	dockerEventsBackoffMin = 250 * time.Millisecond
	dockerEventsBackoffMax = 30 * time.Second
	// dockerEventsStable is how long a stream must have lived for its end to
	// count as a fresh failure rather than part of a flapping series.
	dockerEventsStable = 10 * time.Second
)

// DockerEvents streams Docker events of the given types (all types when
// none are given) until ctx is done, then closes the channel. A broken
// stream is reopened with capped, jittered exponential backoff, and every
// successful reconnect first emits a DockerEventResync event.
func DockerEvents(ctx context.Context, d Docker, types ...string) <-chan DockerEvent {
	out := make(chan DockerEvent, 64)
	go dockerEventsLoop(ctx, d, types, out)
	return out
}

func dockerEventsLoop(ctx context.Context, d Docker, types []string, out chan<- DockerEvent) {
	defer close(out)
	f := dockerFilter()
	for _, t := range types {
		f.Add("type", t)
	}
	send := func(ev DockerEvent) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	backoff := dockerEventsBackoffMin
	resync := false
	for ctx.Err() == nil {
		start := time.Now()
		streamCtx, cancel := context.WithCancel(ctx)
		msgs, errc := d.Events(streamCtx, f)
		// The client reports a refused subscription before it returns, so
		// an error already waiting means the stream never opened.
		opened := true
		select {
		case <-errc:
			opened = false
		default:
		}
		if opened && resync {
			if !send(DockerEvent{Type: DockerEventResync, Time: time.Now()}) {
				cancel()
				return
			}
		}
		if opened && !dockerEventsPump(ctx, msgs, errc, send, &backoff) {
			cancel()
			return
		}
		cancel()
		if time.Since(start) >= dockerEventsStable {
			backoff = dockerEventsBackoffMin
		}
		resync = true
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(backoff*2, dockerEventsBackoffMax)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// dockerEventsPump forwards one stream until it breaks (true) or ctx is
// done (false). A delivered event proves the stream healthy and resets the
// backoff.
func dockerEventsPump(ctx context.Context, msgs <-chan events.Message, errc <-chan error, send func(DockerEvent) bool, backoff *time.Duration) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case <-errc:
			return true
		case m, ok := <-msgs:
			if !ok {
				return true
			}
			*backoff = dockerEventsBackoffMin
			if !send(dockerEventFrom(m)) {
				return false
			}
		}
	}
}

func dockerEventFrom(m events.Message) DockerEvent {
	ev := DockerEvent{
		Type:       string(m.Type),
		Action:     string(m.Action),
		ID:         m.Actor.ID,
		Name:       m.Actor.Attributes["name"],
		Attributes: m.Actor.Attributes,
	}
	switch {
	case m.TimeNano != 0:
		ev.Time = time.Unix(0, m.TimeNano)
	case m.Time != 0:
		ev.Time = time.Unix(m.Time, 0)
	}
	return ev
}
