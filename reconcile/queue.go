// Package reconcile converges Docker, the kernel and Consul's catalog toward
// the documents in Consul KV. A Controller watches the spec prefix, keeps the
// last valid version of every document, and hands keys to reconcilers through
// a work queue; each reconciler observes, plans with a pure function and acts
// only on the difference.
package reconcile

import (
	"context"
	"swarmvlan/state/backoff"
	"sync"
	"time"
)

// Key names one object to reconcile. The queue carries keys, never payloads:
// a reconcile re-reads what it needs, so a lost or doubled trigger is harmless.
type Key struct {
	Kind string
	Name string
}

func (k Key) String() string { return k.Kind + "/" + k.Name }

// Queue is a de-duplicating work queue with per-key exponential backoff. A key
// added while it is being processed is processed again after Done, never by
// two workers at once.
type Queue struct {
	mu         sync.Mutex
	cond       chan struct{} // closed and replaced whenever the queue changes
	order      []Key
	queued     map[Key]bool
	active     map[Key]bool
	dirty      map[Key]bool
	failures   map[Key]int
	timers     map[Key]*time.Timer
	baseDelay  time.Duration
	maxDelay   time.Duration
	shutdown   bool
	onLenMoved func(int)
}

// NewQueue returns a queue whose retry delay starts at base and doubles per
// failure up to max, with jitter.
func NewQueue(base, max time.Duration) *Queue {
	return &Queue{
		cond:      make(chan struct{}),
		queued:    map[Key]bool{},
		active:    map[Key]bool{},
		dirty:     map[Key]bool{},
		failures:  map[Key]int{},
		timers:    map[Key]*time.Timer{},
		baseDelay: base,
		maxDelay:  max,
	}
}

// OnDepth registers a function told the queue depth whenever it changes
// (used for metrics).
func (q *Queue) OnDepth(fn func(int)) {
	q.mu.Lock()
	q.onLenMoved = fn
	q.mu.Unlock()
}

func (q *Queue) signalLocked() {
	close(q.cond)
	q.cond = make(chan struct{})
	if q.onLenMoved != nil {
		q.onLenMoved(len(q.order))
	}
}

// Add queues k now. A pending delayed retry for k is superseded.
func (q *Queue) Add(k Key) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t, ok := q.timers[k]; ok {
		t.Stop()
		delete(q.timers, k)
	}
	q.addLocked(k)
}

func (q *Queue) addLocked(k Key) {
	if q.shutdown {
		return
	}
	if q.active[k] {
		q.dirty[k] = true
		return
	}
	if q.queued[k] {
		return
	}
	q.queued[k] = true
	q.order = append(q.order, k)
	q.signalLocked()
}

// AddAfter queues k after d, unless it is queued sooner by another call.
func (q *Queue) AddAfter(k Key, d time.Duration) {
	if d <= 0 {
		q.Add(k)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown || q.queued[k] {
		return
	}
	if t, ok := q.timers[k]; ok {
		t.Stop()
	}
	q.timers[k] = time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		delete(q.timers, k)
		q.addLocked(k)
	})
}

// Retry queues k after its backoff delay and counts a failure.
func (q *Queue) Retry(k Key) time.Duration {
	q.mu.Lock()
	n := q.failures[k]
	q.failures[k] = n + 1
	q.mu.Unlock()
	d := backoff.Delay(q.baseDelay, q.maxDelay, n)
	q.AddAfter(k, d)
	return d
}

// Forget clears k's failure count after a success.
func (q *Queue) Forget(k Key) {
	q.mu.Lock()
	delete(q.failures, k)
	q.mu.Unlock()
}

// Get blocks until a key is ready or ctx is done.
func (q *Queue) Get(ctx context.Context) (Key, bool) {
	for {
		q.mu.Lock()
		if q.shutdown {
			q.mu.Unlock()
			return Key{}, false
		}
		if len(q.order) > 0 {
			k := q.order[0]
			q.order = q.order[1:]
			delete(q.queued, k)
			q.active[k] = true
			q.signalLocked()
			q.mu.Unlock()
			return k, true
		}
		wait := q.cond
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return Key{}, false
		case <-wait:
		}
	}
}

// Claim marks k processed by the caller, as Get does, if it is neither
// waiting nor being processed; the caller then calls Done. A pass over
// many objects claims each one it records, so that it never races the
// object's own reconcile.
func (q *Queue) Claim(k Key) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown || q.queued[k] || q.active[k] {
		return false
	}
	if _, waiting := q.timers[k]; waiting {
		return false
	}
	q.active[k] = true
	return true
}

// Done marks k processed; if it was added meanwhile, it is queued again.
func (q *Queue) Done(k Key) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.active, k)
	if q.dirty[k] {
		delete(q.dirty, k)
		q.addLocked(k)
	}
}

// Len is the number of keys waiting.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}

// ShutDown stops the queue: Get returns false and pending timers are dropped.
func (q *Queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdown = true
	for k, t := range q.timers {
		t.Stop()
		delete(q.timers, k)
	}
	q.signalLocked()
}
