package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// StatusRollbackPace is the default least time between two looks of a
// controller at the status tree's index (see Controller.Run): its watch
// wakes on every status write, so this bounds what it costs while many
// are written.
const StatusRollbackPace = 10 * time.Second

// StatusRollbackWait is how long that watch's query waits for a change: a
// restore that lands between two of its queries (the next one then waits
// on the higher index from before it) is seen within this.
const StatusRollbackWait = 2 * time.Minute

// Reconciler converges one kind of object. Reconcile is level-triggered: it
// reads what it needs (doc is the version in force, nil once the document is
// deleted), acts only on the difference and reports an Outcome.
type Reconciler interface {
	Reconcile(ctx context.Context, k Key, doc *Doc) Outcome
}

// ReconcilerFunc adapts a function to Reconciler.
type ReconcilerFunc func(ctx context.Context, k Key, doc *Doc) Outcome

// Reconcile implements Reconciler.
func (f ReconcilerFunc) Reconcile(ctx context.Context, k Key, doc *Doc) Outcome {
	return f(ctx, k, doc)
}

// Controller runs the reconcilers of one role against the view: it feeds
// changed keys to a queue, runs workers, and writes each object's status.
type Controller struct {
	Store   *state.Store
	View    *View
	Log     *slog.Logger
	Workers int
	// Resync is the period of the full pass that catches drift no event
	// announces.
	Resync time.Duration
	// Periodic are synthetic keys (passes over many objects) queued at start
	// and on every resync.
	Periodic []Key
	// Batched are kinds whose objects a Periodic pass reconciles in one go
	// (one Docker list instead of one call per object), at start and on
	// every resync: the pass records each object it converged with Settle
	// and queues the others for their own reconcile.
	Batched []string
	// PrimeStatus are status sections the status writer reads whole (one
	// request each) at the start of Run, so that the first write of each
	// object's status compares with memory instead of reading its key.
	PrimeStatus []string
	// OnReconcile, when set, observes every reconcile (metrics).
	OnReconcile func(kind string, d time.Duration, err error)
	// Keys, when set, lists the keys of the first pass and of every resync
	// instead of the view's documents. A controller of synthetic keys (the
	// host agent's) sets it: it must not reconcile spec keys, whose status
	// is the leader's to write.
	Keys func() []Key
	// StatusOf, when set, names where the status of a synthetic key is
	// written (status/<section>/<name>); the reconcile's Details,
	// Conditions and error go there as for a document, without the Valid
	// condition, and an outcome without Details writes nothing. Keys it
	// does not name have no status.
	StatusOf func(k Key) (section, name string, ok bool)
	// StatusWriter, when set, makes the status writer of each Run; the
	// leader's is fenced by its leadership, so a deposed leader writes no
	// status. Default: the store's unfenced writer.
	StatusWriter func() *state.StatusWriter
	// OnQueueDepth, when set, is told the work queue's depth whenever it
	// changes, and 0 when Run returns (metrics).
	OnQueueDepth func(depth int)
	// RollbackPace is the least time between two looks at the status
	// tree's index (see Run); default StatusRollbackPace. A host role,
	// whose statuses only the dashboard reads, looks less often than the
	// leader.
	RollbackPace time.Duration

	mu          sync.Mutex
	polls       map[Key]int // consecutive Poll outcomes per key
	reconcilers map[string]Reconciler
	queue       *Queue
	status      *state.StatusWriter
}

// Register sets the reconciler of a kind. Kinds without one only get their
// validity recorded in status.
func (c *Controller) Register(kind string, r Reconciler) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reconcilers == nil {
		c.reconcilers = map[string]Reconciler{}
	}
	c.reconcilers[kind] = r
}

// Enqueue asks for k to be reconciled (from events, other reconcilers).
func (c *Controller) Enqueue(k Key) {
	c.mu.Lock()
	q := c.queue
	c.mu.Unlock()
	if q != nil {
		q.Add(k)
	}
}

// EnqueueKind asks for every known object of kind to be reconciled.
func (c *Controller) EnqueueKind(kind string) {
	for _, k := range c.View.Keys() {
		if k.Kind == kind {
			c.Enqueue(k)
		}
	}
}

// Run processes keys until ctx is done (for a leader, ctx is the leadership
// context). Every key in the view is reconciled once at start, and again on
// every Resync; changes arrive through Enqueue.
func (c *Controller) Run(ctx context.Context) error {
	select {
	case <-c.View.Synced():
	case <-ctx.Done():
		return nil
	}
	q := NewQueue(200*time.Millisecond, 2*time.Minute)
	if c.OnQueueDepth != nil {
		q.OnDepth(c.OnQueueDepth)
		defer c.OnQueueDepth(0)
	}
	c.mu.Lock()
	c.queue = q
	if c.StatusWriter != nil {
		c.status = c.StatusWriter()
	} else if c.status == nil {
		c.status = c.Store.NewStatusWriter()
	}
	status := c.status
	c.mu.Unlock()
	defer func() {
		q.ShutDown()
		c.mu.Lock()
		c.queue = nil
		c.mu.Unlock()
	}()
	for _, section := range c.PrimeStatus {
		if err := status.Prime(ctx, section); err != nil && ctx.Err() == nil {
			// Each first write then reads its own key.
			c.Log.Warn("read statuses", "section", section, "err", err)
		}
	}
	c.resyncAll(q, status)
	workers := c.Workers
	if workers <= 0 {
		workers = 4
	}
	resync := c.Resync
	if resync <= 0 {
		resync = 5 * time.Minute
	}
	g, ctx := errgroup.WithContext(ctx)
	for i := 0; i < workers; i++ {
		g.Go(func() error {
			for {
				k, ok := q.Get(ctx)
				if !ok {
					return nil
				}
				c.process(ctx, q, k)
				q.Done(k)
			}
		})
	}
	// A snapshot restore can put back statuses older than those written
	// since, while the writer's memory says they are current (it writes
	// only on change): when the status tree's index goes backwards, the
	// writer forgets, reads the sections again and everything is looked
	// at, so each status that differs is written again.
	rolled := make(chan struct{}, 1)
	if c.Store != nil && (len(c.PrimeStatus) > 0 || c.StatusOf != nil) {
		pace := c.RollbackPace
		if pace <= 0 {
			pace = StatusRollbackPace
		}
		g.Go(func() error {
			c.Store.WatchRollback(ctx, c.Store.StatusPrefix(), state.WatchOptions{MinInterval: pace, Burst: 1, WaitTime: max(StatusRollbackWait, pace)}, func() {
				select {
				case rolled <- struct{}{}:
				default:
				}
			})
			return nil
		})
	}
	g.Go(func() error {
		t := time.NewTicker(resync)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				c.resyncAll(q, status)
			case <-rolled:
				c.Log.Info("the status tree's index went backwards (a snapshot restore, or Consul reaping the marks of deleted keys): reading the statuses again")
				status.Reset()
				for _, section := range c.PrimeStatus {
					if err := status.Prime(ctx, section); err != nil && ctx.Err() == nil {
						c.Log.Warn("read statuses", "section", section, "err", err)
					}
				}
				c.resyncAll(q, status)
			}
		}
	})
	<-ctx.Done()
	q.ShutDown()
	return g.Wait()
}

// resyncAll queues every object, or its kind's batch pass, and every
// object of a primed status section whose status outlived its document.
func (c *Controller) resyncAll(q *Queue, status *state.StatusWriter) {
	batched := map[string]bool{}
	for _, k := range c.Batched {
		batched[k] = true
	}
	for _, k := range c.keys() {
		if _, invalid := c.View.Invalid(k); !batched[k.Kind] || invalid {
			q.Add(k)
		}
	}
	for _, k := range c.Periodic {
		q.Add(k)
	}
	// A document deleted while no leader ran, or whose deletion a
	// deposed leader never reconciled, is in no listing's changes: its
	// key is queued here, its reconcile finds no document (the view is
	// synced) and its status goes.
	for _, section := range c.PrimeStatus {
		kind := spec.KindForPlural(section)
		if kind == "" {
			continue
		}
		for _, name := range status.Names(section) {
			k := Key{Kind: kind, Name: name}
			_, present := c.View.Get(k)
			_, invalid := c.View.Invalid(k)
			if !present && !invalid && !strings.Contains(name, "/") {
				q.Add(k)
			}
		}
	}
}

func (c *Controller) keys() []Key {
	if c.Keys != nil {
		return c.Keys()
	}
	return c.View.Keys()
}

func (c *Controller) process(ctx context.Context, q *Queue, k Key) {
	start := time.Now()
	doc, _ := c.View.Get(k)
	bad, invalid := c.View.Invalid(k)
	c.mu.Lock()
	r := c.reconcilers[k.Kind]
	c.mu.Unlock()

	out := Done()
	if r != nil && (doc != nil || !invalid) {
		out = r.Reconcile(ctx, k, doc)
	} else if doc == nil && !invalid {
		out = Gone()
	}
	if c.OnReconcile != nil {
		c.OnReconcile(k.Kind, time.Since(start), out.err)
	}
	if ctx.Err() != nil {
		return // leadership lost or shutting down: write nothing more
	}
	if err := c.writeStatus(ctx, k, doc, bad, out); err != nil {
		c.Log.Warn("write status", "object", k.String(), "err", err)
		q.Retry(k)
		return
	}
	switch out.exit {
	case exitRetry:
		d := q.Retry(k)
		c.Log.Warn("reconcile", "object", k.String(), "err", out.err, "retry_in", d.Round(time.Millisecond))
	case exitTerminal:
		// Not retried with backoff: the document must change (its watch
		// queues it), or what it refers to appear (an event or the resync
		// queues it).
		q.Forget(k)
		c.requeueDelay(k, out)
		c.Log.Warn("reconcile refused", "object", k.String(), "err", out.err)
	case exitRequeue, exitPoll:
		q.Forget(k)
		q.AddAfter(k, c.requeueDelay(k, out))
	default:
		q.Forget(k)
		c.requeueDelay(k, out)
	}
}

// Settle records out as the outcome of k, converged by a pass over many
// objects from the version of its document at index: its status is
// written (when it changed) as its own reconcile would write it. It does
// nothing, and reports false, when k is queued or being reconciled, or
// its document moved on since index: its own reconcile then records it.
func (c *Controller) Settle(ctx context.Context, k Key, index uint64, out Outcome) (bool, error) {
	c.mu.Lock()
	q, status := c.queue, c.status
	c.mu.Unlock()
	if q == nil || !q.Claim(k) {
		return false, nil
	}
	defer q.Done(k)
	doc, _ := c.View.Get(k)
	bad, _ := c.View.Invalid(k)
	if doc == nil || doc.ModifyIndex != index || ctx.Err() != nil {
		return false, nil
	}
	if err := c.writeStatusWith(ctx, status, k, doc, bad, out); err != nil {
		q.Add(k)
		return false, err
	}
	q.Forget(k)
	c.requeueDelay(k, out)
	return true, nil
}

// requeueDelay is the wait before looking at k again: RequeueAfter, doubled
// for every consecutive Poll outcome of k, capped at two minutes.
func (c *Controller) requeueDelay(k Key, out Outcome) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if out.exit != exitPoll {
		delete(c.polls, k)
		return out.after
	}
	if c.polls == nil {
		c.polls = map[Key]int{}
	}
	n := c.polls[k]
	c.polls[k] = n + 1
	d := out.after
	for i := 0; i < n && d < 2*time.Minute; i++ {
		d *= 2
	}
	return min(d, 2*time.Minute)
}

func (c *Controller) writeStatus(ctx context.Context, k Key, doc *Doc, bad *DocError, out Outcome) error {
	return c.writeStatusWith(ctx, c.status, k, doc, bad, out)
}

func (c *Controller) writeStatusWith(ctx context.Context, status *state.StatusWriter, k Key, doc *Doc, bad *DocError, out Outcome) error {
	section := spec.Plural(k.Kind)
	if section == "" {
		// A synthetic key: a pass over many objects has no status of its
		// own; the host agent's keys have one where StatusOf says.
		return c.writeSyntheticStatus(ctx, status, k, out)
	}
	if out.exit == exitGone && bad == nil {
		return status.Delete(ctx, section, k.Name)
	}
	st := state.Status{Conditions: append([]state.Condition(nil), out.Conditions...)}
	var lastErrs []error
	valid := state.Condition{Type: "Valid", Status: "True"}
	if bad != nil {
		st.ObservedIndex = bad.ModifyIndex
		valid = state.Condition{Type: "Valid", Status: "False", Reason: "Invalid", Message: bad.Err.Error()}
		if doc != nil {
			valid.Message += fmt.Sprintf("\n(the last valid version, index %d, stays in force)", doc.ModifyIndex)
		}
		lastErrs = append(lastErrs, bad.Err)
	} else if doc != nil {
		st.ObservedIndex = doc.ModifyIndex
	}
	st.Conditions = append([]state.Condition{valid}, st.Conditions...)
	if out.err != nil {
		lastErrs = append(lastErrs, out.err)
	}
	if len(lastErrs) > 0 {
		st.LastError = errors.Join(lastErrs...).Error()
	}
	if out.Details != nil {
		b, err := json.Marshal(out.Details)
		if err != nil {
			return fmt.Errorf("%s: encode status: %w", k, err)
		}
		st.Details = b
	}
	_, err := status.Write(ctx, section, k.Name, st)
	return err
}

func (c *Controller) writeSyntheticStatus(ctx context.Context, status *state.StatusWriter, k Key, out Outcome) error {
	if c.StatusOf == nil || out.Details == nil {
		return nil
	}
	section, name, ok := c.StatusOf(k)
	if !ok {
		return nil
	}
	st := state.Status{Conditions: append([]state.Condition(nil), out.Conditions...)}
	if out.err != nil {
		st.LastError = out.err.Error()
	}
	b, err := json.Marshal(out.Details)
	if err != nil {
		return fmt.Errorf("%s: encode status: %w", k, err)
	}
	st.Details = b
	_, err = status.Write(ctx, section, name, st)
	return err
}

// WatchSpec keeps view in step with the spec prefix and passes the keys each
// update changed to onChange. It returns when ctx is done.
//
// While a GitOps sync is marked in flight (state.SyncMarkerKey: the spec
// tree may hold part of one commit and part of the next) the view is not
// updated: it moves from one whole commit to the next when the marker goes.
// The hold lasts at most state.SyncHoldMax from when this watch first saw
// the marker, so a syncer that died mid-sync cannot freeze the view.
func WatchSpec(ctx context.Context, store *state.Store, view *View, opts state.WatchOptions, onChange func([]Key), log *slog.Logger) error {
	h := &syncHold{max: state.SyncHoldMax}
	apply := func(pairs api.KVPairs) {
		// The listing that first syncs the view is no change to act on:
		// every controller starts with a pass over the whole view once it
		// is synced (a batched kind's pass over all its objects), and
		// queuing each key as well would have a new leader reconcile
		// thousands of services one by one beside that pass.
		first := true
		select {
		case <-view.Synced():
			first = false
		default:
		}
		ks := view.Sync(pairs)
		if n := view.Held(); n > 0 {
			log.Warn("spec prefix read empty; keeping documents in force", "documents", n)
		}
		for _, k := range ks {
			if e, bad := view.Invalid(k); bad {
				log.Warn("invalid document", "object", k.String(), "index", e.ModifyIndex, "err", e.Err)
			}
		}
		if len(ks) > 0 && !first {
			onChange(ks)
		}
	}
	defer h.stop()
	return store.WatchPrefix(ctx, store.SpecPrefix(), opts, func(pairs api.KVPairs, index uint64) {
		h.deliver(pairs, store.SyncMarkerIn(pairs), apply, log)
	})
}

// syncHold holds spec listings back while a sync is in flight, up to max.
type syncHold struct {
	max time.Duration

	mu      sync.Mutex
	since   time.Time   // when the marker was first seen; zero: no hold
	pending api.KVPairs // the newest listing held back
	timer   *time.Timer // delivers pending when the bound passes
	expired bool        // the bound passed for the marker in force
}

// deliver passes pairs to apply unless marker is set and the hold is within
// its bound; a held listing is applied when the bound passes, unless a
// newer listing came first.
func (h *syncHold) deliver(pairs api.KVPairs, marker *state.SyncMarker, apply func(api.KVPairs), log *slog.Logger) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if marker == nil {
		if !h.since.IsZero() {
			log.Info("sync finished; spec changes in force", "held", time.Since(h.since).Round(time.Millisecond))
		}
		h.reset()
		apply(pairs)
		return
	}
	if h.expired {
		apply(pairs)
		return
	}
	if h.since.IsZero() {
		h.since = time.Now()
		log.Info("sync in flight; holding spec changes back", "commit", marker.Commit, "max", h.max)
		h.timer = time.AfterFunc(h.max, func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.since.IsZero() || h.expired {
				return
			}
			h.expired = true
			log.Warn("sync still in flight after the bound; applying the spec as it is", "held", time.Since(h.since).Round(time.Millisecond))
			if h.pending != nil {
				apply(h.pending)
				h.pending = nil
			}
		})
	}
	h.pending = pairs
}

func (h *syncHold) reset() {
	if h.timer != nil {
		h.timer.Stop()
	}
	h.since, h.pending, h.timer, h.expired = time.Time{}, nil, nil, false
}

func (h *syncHold) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.reset()
}
