package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
)

// dockerEventsNext receives one event or fails after a deadline.
func dockerEventsNext(t *testing.T, ch <-chan engine.Event) engine.Event {
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
	return engine.Event{}
}

// TestDockerEventsReconnect checks that a refused subscription and a broken
// stream are both retried, that each reconnect emits a resync, and that the
// channel closes when the context ends.
func TestDockerEventsReconnect(t *testing.T) {
	engine.FastEventsForTest(t)
	f := enginetest.NewFake()
	var mu sync.Mutex
	attempt := 0
	f.EventsFunc = func(ctx context.Context) (<-chan events.Message, <-chan error) {
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
	ch := engine.Events(ctx, f, "service")

	first := dockerEventsNext(t, ch)
	if first.Type != "service" || first.Action != "update" || first.ID != "svc1" || first.Name != "web" || first.Time.UnixNano() != 42 {
		t.Errorf("first event %+v", first)
	}
	if ev := dockerEventsNext(t, ch); ev.Type != engine.EventResync {
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

// dockerTestProxy is a unix-socket proxy in front of the engine whose
// connections a test can cut, to break an event stream the way a daemon
// restart or a network fault does.
type dockerTestProxy struct {
	sock  string
	mu    sync.Mutex
	conns []net.Conn
}

func dockerTestStartProxy(t *testing.T, target string) *dockerTestProxy {
	t.Helper()
	p := &dockerTestProxy{sock: filepath.Join(t.TempDir(), "docker.sock")}
	ln, err := net.Listen("unix", p.sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

// cut closes every connection through the proxy.
func (p *dockerTestProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestDockerEventsRealEngine streams network events from the real engine
// through a proxy, cuts the stream, and checks that engine.Events
// reconnects, emits a resync, and delivers events again.
func TestDockerEventsRealEngine(t *testing.T) {
	_, cli := enginetest.Engine(t)
	proxy := dockerTestStartProxy(t, "/var/run/docker.sock")
	d, err := engine.New("unix://" + proxy.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	suffix := enginetest.Suffix(t)
	var created []string
	t.Cleanup(func() {
		for _, id := range created {
			if err := cli.NetworkRemove(context.Background(), id); err != nil && !engine.IsNotFound(err) {
				t.Errorf("cleanup: network %s: %v", id, err)
			}
		}
	})

	ch := engine.Events(ctx, d, "network")
	// awaitCreate creates config-only networks (cheap, touching nothing)
	// until the stream delivers the create event of one of them: the
	// subscription is asynchronous, so the first may predate it.
	awaitCreate := func(what string) {
		t.Helper()
		names := map[string]bool{}
		deadline := time.After(30 * time.Second)
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				name := fmt.Sprintf("svtev%s-%d", suffix, len(created))
				resp, err := cli.NetworkCreate(ctx, name, network.CreateOptions{ConfigOnly: true, Labels: map[string]string{spec.LabelManaged: "true"}})
				if err != nil {
					t.Fatal(err)
				}
				created = append(created, resp.ID)
				names[name] = true
			case ev, ok := <-ch:
				if !ok {
					t.Fatal("event channel closed")
				}
				if ev.Type == engine.EventResync {
					t.Fatalf("%s: unexpected resync", what)
				}
				if ev.Type == "network" && ev.Action == "create" && names[ev.Name] {
					return
				}
			case <-deadline:
				t.Fatalf("%s: no create event within 30s", what)
			}
		}
	}
	awaitCreate("first stream")

	proxy.cut()
	deadline := time.After(30 * time.Second)
	for resynced := false; !resynced; {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("event channel closed after a cut")
			}
			resynced = ev.Type == engine.EventResync
		case <-deadline:
			t.Fatal("no resync within 30s of the cut")
		}
	}
	awaitCreate("after reconnect")
	if n := d.Calls()["Events"]; n < 2 {
		t.Errorf("%d DockerEvents calls, want a reconnect", n)
	}

	cancel()
	for range ch {
		// Drain until engine.Events closes the channel on cancel.
	}
}
