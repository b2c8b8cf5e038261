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

// Source keeps the dashboard's snapshot: one watch of the whole prefix
// and one of the task registrations' checks feed it, each change builds
// one snapshot, encoded once, and every subscriber is told. Its cost in
// Consul requests is those two blocking queries, whatever the number of
// viewers.
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
	}
	s.rebuild()
	return s
}

// Run holds the watches until ctx is done.
func (s *Source) Run(ctx context.Context) error {
	defer close(s.done)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return ignoreCanceled(s.store.WatchPrefix(ctx, s.store.Prefix(), state.WatchOptions{}, func(pairs api.KVPairs, _ uint64) {
			s.SetTree(s.store.Tree(pairs))
		}))
	})
	g.Go(func() error {
		return ignoreCanceled(s.store.WatchTaskChecks(ctx, state.WatchOptions{}, s.SetChecks))
	})
	return g.Wait()
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

// Snapshot returns the current snapshot's JSON and its version.
func (s *Source) Snapshot() ([]byte, uint64) {
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
	return c, func() {
		s.mu.Lock()
		delete(s.subs, c)
		s.mu.Unlock()
	}
}

// Subscribers is the number of open subscriptions.
func (s *Source) Subscribers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}
