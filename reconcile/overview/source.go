package overview

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"swarmvlan/reconcile"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// maxChanges is how many status changes the activity feed keeps.
const maxChanges = 100

// IdleAfter is how long the dashboard's watches run on after the last
// request for a snapshot while no page is subscribed.
var IdleAfter = time.Minute

// Source keeps the dashboard's snapshot: one watch of the whole prefix
// and one of the task registrations' checks feed it, each change builds
// one snapshot, encoded once, and every subscriber is told. Its cost in
// Consul requests is those two blocking queries, whatever the number of
// viewers. The watches run only while the dashboard is looked at (a page
// subscribed, or a snapshot asked for in the last IdleAfter): an unwatched
// dashboard holds no copy of the KV tree and rebuilds nothing, which at
// thousands of services is most of a manager's memory and a third of its
// CPU. The activity feed is kept across idle periods; changes made while
// nobody looked are not in it.
type Source struct {
	store   *state.Store
	manager string
	log     *slog.Logger
	now     func() time.Time
	// view decodes the documents from the prefix's listing, so a snapshot
	// never mixes documents and statuses of two different reads.
	view *reconcile.View

	mu      sync.Mutex
	tree    state.Tree
	synced  bool
	checks  map[string]string
	cur     *Overview
	encoded []byte
	version uint64
	feed    []Change
	subs    map[chan struct{}]struct{}
	// asked is when a snapshot was last asked for; demand wakes Run.
	asked  time.Time
	demand chan struct{}
	// syncedc is closed at the first listing after the watches start.
	syncedc chan struct{}
	// done is closed when Run returns, which ends the event streams so the
	// HTTP server can shut down.
	done chan struct{}
}

// NewSource returns a source for the managers' dashboard; manager is this
// process's node name.
func NewSource(store *state.Store, manager string, log *slog.Logger) *Source {
	if log == nil {
		log = slog.Default()
	}
	s := &Source{
		store: store, manager: manager, log: log, now: time.Now,
		view: reconcile.NewView(store.SpecPrefix()),
		subs: map[chan struct{}]struct{}{},
		done: make(chan struct{}),

		demand:  make(chan struct{}, 1),
		syncedc: make(chan struct{}),
	}
	s.rebuild()
	return s
}

// Run holds the watches, while the dashboard is looked at, until ctx is
// done.
func (s *Source) Run(ctx context.Context) error {
	defer close(s.done)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.demand:
		}
		if s.idle() {
			continue // asked for before the last idle stop
		}
		if err := s.watch(ctx); err != nil || ctx.Err() != nil {
			return err
		}
		s.reset()
	}
}

// watch runs the watches until ctx is done or the dashboard is idle.
func (s *Source) watch(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	g.Go(func() error {
		return ignoreCanceled(s.store.WatchPrefix(ctx, s.store.Prefix(), state.WatchOptions{}, func(pairs api.KVPairs, _ uint64) {
			s.SetTree(s.store.Tree(pairs))
		}))
	})
	g.Go(func() error {
		return ignoreCanceled(s.store.WatchTaskChecks(ctx, state.WatchOptions{}, s.SetChecks))
	})
	g.Go(func() error {
		t := time.NewTicker(IdleAfter / 4)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if s.idle() {
					stop()
					return nil
				}
			}
		}
	})
	return g.Wait()
}

// idle reports whether nobody looked at the dashboard for IdleAfter.
func (s *Source) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs) == 0 && s.now().Sub(s.asked) >= IdleAfter
}

// reset drops what the watches fed, once they stopped.
func (s *Source) reset() {
	s.view = reconcile.NewView(s.store.SpecPrefix())
	s.mu.Lock()
	s.tree, s.synced, s.checks, s.cur = state.Tree{}, false, nil, nil
	s.syncedc = make(chan struct{})
	s.mu.Unlock()
	s.rebuild()
}

// want records that the dashboard is looked at, and wakes Run.
func (s *Source) want() {
	s.mu.Lock()
	s.asked = s.now()
	s.mu.Unlock()
	select {
	case s.demand <- struct{}{}:
	default:
	}
}

// Watching reports whether the watches run (the dashboard is looked at).
func (s *Source) Watching() bool {
	return !s.idle()
}

// WaitSynced asks for the snapshot and waits until it holds a listing of
// KV, ctx is done or wait has passed.
func (s *Source) WaitSynced(ctx context.Context, wait time.Duration) {
	s.want()
	s.mu.Lock()
	c := s.syncedc
	s.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-c:
	case <-ctx.Done():
	case <-t.C:
	}
}

func ignoreCanceled(err error) error {
	if err == context.Canceled {
		return nil
	}
	return err
}

// SetTree takes a new listing of KV and publishes the snapshot it makes.
func (s *Source) SetTree(t state.Tree) {
	s.view.Sync(t.Spec)
	s.mu.Lock()
	if !s.synced {
		close(s.syncedc)
	}
	s.tree, s.synced = t, true
	s.mu.Unlock()
	s.rebuild()
}

// SetChecks takes the registrations' check states and publishes the
// snapshot they make.
func (s *Source) SetChecks(checks map[string]string) {
	s.mu.Lock()
	s.checks = checks
	s.mu.Unlock()
	s.rebuild()
}

func (s *Source) rebuild() {
	in := Input{Manager: s.manager, Now: s.now()}
	for _, d := range s.view.List(spec.KindVLAN) {
		in.VLANs = append(in.VLANs, d.Object.(*spec.VLAN))
	}
	for _, d := range s.view.List(spec.KindService) {
		in.Services = append(in.Services, d.Object.(*spec.Service))
	}
	for _, d := range s.view.List(spec.KindHost) {
		in.Hosts = append(in.Hosts, d.Object.(*spec.Host))
	}
	for _, k := range s.view.Keys() {
		if e, bad := s.view.Invalid(k); bad {
			in.Invalid = append(in.Invalid, e.Err.Error())
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in.Tree, in.Synced, in.Checks = s.tree, s.synced, s.checks
	o := Build(in)
	if ch := changes(s.cur, o); len(ch) > 0 {
		s.feed = append(ch, s.feed...)
		if len(s.feed) > maxChanges {
			s.feed = s.feed[:maxChanges]
		}
	}
	o.Activity.Changes = append(o.Activity.Changes, s.feed...)
	b, err := json.Marshal(o)
	if err != nil {
		s.log.Warn("dashboard: encode snapshot", "err", err)
		return
	}
	s.cur, s.encoded = o, b
	s.version++
	for c := range s.subs {
		select {
		case c <- struct{}{}:
		default: // already told; it reads the newest snapshot
		}
	}
}

// Snapshot returns the current snapshot's JSON and its version, and
// records that the dashboard is looked at.
func (s *Source) Snapshot() ([]byte, uint64) {
	s.want()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.encoded, s.version
}

// Subscribe returns a channel that receives a token whenever a new
// snapshot is out (several changes may fold into one token), and the
// function that ends the subscription.
func (s *Source) Subscribe() (<-chan struct{}, func()) {
	c := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[c] = struct{}{}
	s.mu.Unlock()
	s.want()
	return c, func() {
		s.mu.Lock()
		delete(s.subs, c)
		s.asked = s.now()
		s.mu.Unlock()
	}
}

// Subscribers is the number of open subscriptions.
func (s *Source) Subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}
