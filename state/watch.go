package state

import (
	"context"
	"fmt"
	"math/rand/v2"
	"swarmvlan/state/backoff"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"
)

// Watch defaults.
const (
	// DefaultMinInterval is the steady pace of one watch's blocking
	// queries, a token bucket's refill period: a key flapping a thousand
	// times a second costs at most 20 queries a second (plus the burst).
	DefaultMinInterval = 50 * time.Millisecond
	// DefaultBurst is how many queries a watch may start back to back
	// before the steady pace applies: a change that follows another within
	// milliseconds is still seen at once, and only a storm waits.
	DefaultBurst = 5
	// DefaultWaitTime is how long one blocking query waits for a change. Five
	// minutes (Consul's cap is ten) keeps an idle watch at one request every
	// five minutes.
	DefaultWaitTime = 5 * time.Minute
	// DefaultMaxBackoff caps the pause between retries while Consul is
	// unreachable, so a watch resumes within seconds of Consul's return.
	DefaultMaxBackoff = 10 * time.Second
	// backoffBase is the first pause after an error.
	backoffBase = 200 * time.Millisecond
	// queryGrace is added to a blocking query's wait for the client-side
	// deadline: Consul adds up to wait/16 of jitter itself, and a connection
	// that died silently must not hang the watch for ever.
	queryGrace = 15 * time.Second
)

// WatchOptions tune a blocking watch. The zero value uses the defaults.
type WatchOptions struct {
	// MinInterval is the steady interval between the starts of two
	// queries once the burst is spent; default DefaultMinInterval.
	MinInterval time.Duration
	// Burst is how many queries may start without waiting for
	// MinInterval; default DefaultBurst. Over any window T a watch starts at
	// most Burst + T/MinInterval queries. 1 makes MinInterval a fixed floor
	// between any two queries.
	Burst int
	// WaitTime is how long Consul holds a query open without a change;
	// default DefaultWaitTime.
	WaitTime time.Duration
	// MaxBackoff caps the jittered exponential pause after errors; default
	// DefaultMaxBackoff.
	MaxBackoff time.Duration
	// AllowStale lets any server answer. Off by default: a stale answer can
	// run behind the leader, and a watch that acts on spec must not act on
	// an older view than the one it already acted on.
	AllowStale bool
	// Counters, if set, also counts this watch alone (the store counts every
	// watch in WatchStats).
	Counters *WatchCounters
	// OnReset, if set, is called on the watch's goroutine when the index
	// went backwards (a snapshot restore rolled the prefix back), before
	// the watch fetches its state again.
	OnReset func()

	// observe, if set, sees every query's outcome (nil on success); the
	// leader monitor counts consecutive failures with it.
	observe func(error)
}

func (o WatchOptions) withDefaults() WatchOptions {
	if o.MinInterval <= 0 {
		o.MinInterval = DefaultMinInterval
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.WaitTime <= 0 {
		o.WaitTime = DefaultWaitTime
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	return o
}

// WatchStats are a snapshot of watch counters.
type WatchStats struct {
	// Wakeups counts blocking queries that answered (changed or not).
	Wakeups uint64
	// Deliveries counts calls of the watch's callback.
	Deliveries uint64
	// Errors counts queries that failed.
	Errors uint64
	// Resets counts the times the index went backwards and the watch
	// resynchronised.
	Resets uint64
}

// WatchCounters count what watches do; safe for concurrent use. The zero
// value is ready.
type WatchCounters struct {
	wakeups, deliveries, errors, resets atomic.Uint64
}

// Stats returns the current counts.
func (c *WatchCounters) Stats() WatchStats {
	return WatchStats{
		Wakeups:    c.wakeups.Load(),
		Deliveries: c.deliveries.Load(),
		Errors:     c.errors.Load(),
		Resets:     c.resets.Load(),
	}
}

// indexStep is what to do after a blocking query answered.
type indexStep struct {
	// next is the index the following answer is compared with.
	next uint64
	// wait is the index the following query waits on; 0 asks without
	// blocking.
	wait uint64
	// deliver: the answer is news.
	deliver bool
	// reset: the index went backwards; the answer is dropped and the state
	// fetched again.
	reset bool
}

// nextIndex holds Consul's blocking-query rules. prev is the index of the
// last answer acted on (0 before the first or after a reset), got is the
// index the query returned, and early says the query had waited on an index
// and came back before its wait time without a new index.
//
//   - got 0 is treated as 1: waiting on index 0 would not block, and Consul
//     can answer 0 for an empty table.
//   - prev 0: the first answer (or the first after a reset) is always news.
//   - got > prev: news.
//   - got < prev: the index went backwards (a snapshot restore, a rebuilt
//     cluster): reset, so the next query fetches the current state without
//     blocking and it is delivered as news.
//   - got == prev: nothing to do; wait on it again. But when the answer came
//     early, ask once more without blocking: a snapshot restore wakes blocked
//     queries with the abandoned store's index, and the restored, lower index
//     shows only on a fresh read (otherwise only after the wait time).
func nextIndex(prev, got uint64, early bool) indexStep {
	if got == 0 {
		got = 1
	}
	switch {
	case prev == 0, got > prev:
		return indexStep{next: got, wait: got, deliver: true}
	case got < prev:
		return indexStep{reset: true}
	case early:
		return indexStep{next: prev, wait: 0}
	default:
		return indexStep{next: prev, wait: prev}
	}
}

// jitter returns a duration in [d, 2d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d + rand.N(d)
}

// WatchPrefix calls fn with every pair under prefix: once at the start and
// again whenever the prefix's index changes, never twice for the same index.
// fn runs on the watch's goroutine and the next query starts when it
// returns, so fn must not block for long. Consul being away is never an
// error: the watch backs off (capped, jittered) and carries on. When the
// index goes backwards (a snapshot restore) the watch resyncs and delivers
// the restored data. WatchPrefix returns only ctx.Err(), when ctx is done.
//
// A snapshot restore is seen at once by a query blocked at the time (Consul
// wakes it); a query sent just after a restore waits on the old, higher index
// and sees it when its wait time ends.
//
// A prefix without keys has no index of its own, so Consul answers with the
// whole KV table's index and the watch wakes on any write in KV; fn is
// called once for the empty set, not again until keys appear.
func (s *Store) WatchPrefix(ctx context.Context, prefix string, opts WatchOptions, fn func(pairs api.KVPairs, index uint64)) error {
	var pairs api.KVPairs
	delivered, wasEmpty := false, false
	return s.blockingLoop(ctx, opts,
		func(q *api.QueryOptions) (uint64, error) {
			p, meta, err := s.client.KV().List(prefix, q)
			// A listing with keys left out by ACLs is not delivered: the
			// missing documents would read as deleted.
			if err := s.listed(prefix, meta, err); err != nil {
				return 0, fmt.Errorf("watch %q: list: %w", prefix, err)
			}
			pairs = p
			return meta.LastIndex, nil
		},
		func(index uint64) bool {
			// An empty prefix moves with every write anywhere in KV; an
			// empty set after an empty set is not news.
			if delivered && wasEmpty && len(pairs) == 0 {
				return false
			}
			delivered, wasEmpty = true, len(pairs) == 0
			fn(pairs, index)
			// Not kept while the next query waits: with many keys the
			// listing is most of a watch's memory.
			pairs = nil
			return true
		})
}

// WatchRollback calls onReset whenever the index of what is under prefix
// goes backwards: a snapshot restore put back older values, and whoever
// remembers what it wrote there must read them again. Its queries list
// only the names one level below prefix, so an answer stays small however
// many keys prefix holds; it wakes on every write under prefix, at the
// pace opts allow. It returns only ctx.Err(), when ctx is done.
func (s *Store) WatchRollback(ctx context.Context, prefix string, opts WatchOptions, onReset func()) error {
	opts.OnReset = onReset
	return s.blockingLoop(ctx, opts,
		func(q *api.QueryOptions) (uint64, error) {
			_, meta, err := s.client.KV().Keys(prefix, "/", q)
			if err != nil {
				return 0, fmt.Errorf("watch %q: keys: %w", prefix, s.denied(OpKVRead, prefix, err))
			}
			return meta.LastIndex, nil
		},
		func(uint64) bool { return true })
}

// watchKey is WatchPrefix for one key; pair is nil while the key is absent.
func (s *Store) watchKey(ctx context.Context, key string, opts WatchOptions, fn func(pair *api.KVPair, index uint64)) error {
	var pair *api.KVPair
	return s.blockingLoop(ctx, opts,
		func(q *api.QueryOptions) (uint64, error) {
			p, meta, err := s.client.KV().Get(key, q)
			if err != nil {
				return 0, fmt.Errorf("watch %q: get: %w", key, s.denied(OpKVRead, key, err))
			}
			pair = p
			return meta.LastIndex, nil
		},
		func(index uint64) bool { fn(pair, index); return true })
}

// blockingLoop runs query as a blocking query until ctx is done, applying
// nextIndex to each answer and calling deliver for news; deliver reports
// whether it passed the news on. query keeps what it read for deliver.
// Queries are paced by a token bucket (opts.Burst, then one per
// opts.MinInterval). Errors are counted and retried after a backoff that
// any success resets.
func (s *Store) blockingLoop(ctx context.Context, opts WatchOptions, query func(*api.QueryOptions) (uint64, error), deliver func(index uint64) bool) error {
	opts = opts.withDefaults()
	counters := []*WatchCounters{&s.watches}
	if opts.Counters != nil {
		counters = append(counters, opts.Counters)
	}
	count := func(f func(*WatchCounters)) {
		for _, c := range counters {
			f(c)
		}
	}
	bo := backoff.New(backoffBase, opts.MaxBackoff)
	pace := rate.NewLimiter(rate.Every(opts.MinInterval), opts.Burst)
	var step indexStep
	var lastStart time.Time
	for {
		// Reserve rather than Wait: Wait fails at once, with ctx still
		// live, when ctx's deadline falls before the next token.
		if r := pace.Reserve(); !backoff.Sleep(ctx, r.Delay()) {
			return ctx.Err()
		}
		lastStart = time.Now()
		qctx, cancel := context.WithTimeout(ctx, opts.WaitTime+opts.WaitTime/16+queryGrace)
		q := (&api.QueryOptions{WaitIndex: step.wait, WaitTime: opts.WaitTime, AllowStale: opts.AllowStale}).WithContext(qctx)
		got, err := query(q)
		cancel()
		if opts.observe != nil && ctx.Err() == nil {
			opts.observe(err)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			count(func(c *WatchCounters) { c.errors.Add(1) })
			if !backoff.Sleep(ctx, bo.Next()) {
				return ctx.Err()
			}
			continue
		}
		bo.Reset()
		count(func(c *WatchCounters) { c.wakeups.Add(1) })
		early := step.wait != 0 && time.Since(lastStart) < opts.WaitTime
		step = nextIndex(step.next, got, early)
		if step.reset {
			count(func(c *WatchCounters) { c.resets.Add(1) })
			if opts.OnReset != nil {
				opts.OnReset()
			}
			continue
		}
		if step.deliver && deliver(step.next) {
			count(func(c *WatchCounters) { c.deliveries.Add(1) })
		}
	}
}
