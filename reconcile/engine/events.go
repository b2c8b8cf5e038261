package engine

import (
	"context"
	"swarmvlan/state/backoff"
	"time"

	"github.com/docker/docker/api/types/events"
)

// EventResync is the Type of the event Events emits after it
// reconnects: events may have been missed while the stream was down, so
// the receiver should re-read everything it watches.
const EventResync = "resync"

// Event is one Docker event, or a resync marker.
type Event struct {
	Type   string // service, network, node, container, ... or EventResync
	Action string // create, update, remove, start, die, ...
	ID     string // the object's ID
	// Name is the object's name where Docker reports one.
	Name       string
	Attributes map[string]string
	Time       time.Time
}

// Reconnect backoff of Events; variables so tests can shorten them.
var (
	eventsBackoffMin = 250 * time.Millisecond
	eventsBackoffMax = 30 * time.Second
	// eventsStable is how long a stream must have lived for its end to
	// count as a fresh failure rather than part of a flapping series.
	eventsStable = 10 * time.Second
)

// Events streams Docker events of the given types (all types when
// none are given) until ctx is done, then closes the channel. A broken
// stream is reopened with capped, jittered exponential backoff, and every
// successful reconnect first emits a EventResync event.
func Events(ctx context.Context, d Docker, types ...string) <-chan Event {
	out := make(chan Event, 64)
	go eventsLoop(ctx, d, types, out)
	return out
}

func eventsLoop(ctx context.Context, d Docker, types []string, out chan<- Event) {
	defer close(out)
	f := Filter()
	for _, t := range types {
		f.Add("type", t)
	}
	send := func(ev Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	bo := backoff.New(eventsBackoffMin, eventsBackoffMax)
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
			if !send(Event{Type: EventResync, Time: time.Now()}) {
				cancel()
				return
			}
		}
		if opened && !eventsPump(ctx, msgs, errc, send, bo) {
			cancel()
			return
		}
		cancel()
		if time.Since(start) >= eventsStable {
			bo.Reset()
		}
		resync = true
		if !backoff.Sleep(ctx, bo.Next()) {
			return
		}
	}
}

// eventsPump forwards one stream until it breaks (true) or ctx is
// done (false). A delivered event proves the stream healthy and resets the
// backoff.
func eventsPump(ctx context.Context, msgs <-chan events.Message, errc <-chan error, send func(Event) bool, bo *backoff.Backoff) bool {
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
			bo.Reset()
			if !send(eventFrom(m)) {
				return false
			}
		}
	}
}

func eventFrom(m events.Message) Event {
	ev := Event{
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
