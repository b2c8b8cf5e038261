package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
)

// ErrNotLeader is returned by fenced writes when this process no longer
// holds the leader lock.
var ErrNotLeader = errors.New("not the leader")

// LeaderOptions tune Campaign. The zero value uses the defaults.
type LeaderOptions struct {
	// SessionTTL is the TTL of the session holding the lock; default
	// Config.SessionTTL, else DefaultSessionTTL (10s, Consul's minimum). A
	// leader that dies without resigning is replaced after at most about
	// 2×TTL + LockDelay. Holders in one process that ask for the same TTL
	// and lock delay (the node registration, with defaults) share one
	// session.
	SessionTTL time.Duration
	// LockDelay is the session's lock delay; default Config.LockDelay, else
	// DefaultLockDelay (1s, see there for why it is short).
	LockDelay time.Duration
	// MonitorRetries is how many consecutive failed reads of the leader key
	// a leader tolerates before it gives the lock up. Zero means no limit:
	// the leader then steps down only when it sees the lock lost or when its
	// session could not be renewed for 1.5×TTL, so a Consul restart of a few
	// seconds does not depose it.
	MonitorRetries int
	// Value is stored in the leader key to say who leads (e.g. hostname).
	Value []byte
	// Check, if set, gives the lock a session of its own, bound to
	// serfHealth and to an HTTP check on the local agent against Check.URL
	// (see LeaderCheck), with no TTL: a dead or hung leader is then
	// replaced about LeaderCheckFailures×LeaderCheckInterval plus the lock
	// delay after it stopped answering. SessionTTL is then unused and
	// LockDelay defaults to DefaultLeaderLockDelay.
	Check *LeaderCheck
}

// Fencing of writes outside Consul (Fence). A successor cannot take the
// lock before the lock delay has passed since this session was
// invalidated, which is after the last read that showed it holding the
// lock. So a write that starts within ProofMaxAge of such a read being
// sent and is cut off ProofMaxAge+WriteDeadline after it ends before the
// successor can lead, with fenceMargin to spare.
const (
	// ProofMaxAge (F) is how old the proof of holding the lock may be
	// when a fenced write starts.
	ProofMaxAge = 100 * time.Millisecond
	// fenceMargin is kept between a fenced write's deadline and the
	// earliest moment a successor can take the lock: it covers a request
	// the Engine already received when the call was cut off.
	fenceMargin = 100 * time.Millisecond
	// minFencedLockDelay leaves a fenced write at least 100 ms (WriteDeadline
	// = lock delay - ProofMaxAge - fenceMargin).
	minFencedLockDelay = ProofMaxAge + fenceMargin + 100*time.Millisecond
)

// Leadership is a held leader lock. Everything leader-only runs under
// Context, which is cancelled the moment the lock is lost.
type Leadership struct {
	store *Store
	sess  *session
	id    string
	key   string

	// proofMu serialises the proof reads of Fence; proofSent is when the
	// newest read that showed the lock held was sent.
	proofMu   sync.Mutex
	proofSent time.Time
	// prefetching is set while a Prefetch read is under way.
	prefetching atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	resignOnce sync.Once
	resign     chan struct{}
}

// Campaign blocks until this process holds the lock on LeaderKey() or ctx
// is done. It never gives up because Consul is away: it waits and retries.
// The leadership ends when ctx is done (the lock is then released), on
// Resign, or when the lock is lost.
//
// One store campaigns once at a time: its holders share a session, and a
// second campaign on the same session would simply "win" the lock it
// already holds.
func (s *Store) Campaign(ctx context.Context, opts LeaderOptions) (*Leadership, error) {
	if !s.campaigning.CompareAndSwap(false, true) {
		return nil, errors.New("leader: campaign: this store already campaigns or leads")
	}
	var m *session
	if opts.Check != nil {
		if err := opts.Check.validate(); err != nil {
			s.campaigning.Store(false)
			return nil, fmt.Errorf("leader: campaign: %w", err)
		}
		if opts.LockDelay > 0 && opts.LockDelay < minFencedLockDelay {
			s.campaigning.Store(false)
			return nil, fmt.Errorf("leader: campaign: lock delay %v: at least %v, so that a fenced write has time", opts.LockDelay, minFencedLockDelay)
		}
		m = s.acquireCheckedSession(opts.LockDelay, *opts.Check)
	} else {
		m = s.acquireSession(opts.SessionTTL, opts.LockDelay)
	}
	value := func() []byte { return opts.Value }
	id, lost, err := s.acquireKey(ctx, m, s.LeaderKey(), value)
	if err != nil {
		m.release()
		s.campaigning.Store(false)
		return nil, fmt.Errorf("leader: campaign: %w", err)
	}
	lctx, cancel := context.WithCancel(ctx)
	l := &Leadership{
		store:  s,
		sess:   m,
		id:     id,
		key:    s.LeaderKey(),
		ctx:    lctx,
		cancel: cancel,
		done:   make(chan struct{}),
		resign: make(chan struct{}),
	}
	go l.monitor(lost, opts.MonitorRetries)
	return l, nil
}

// monitor cancels the leadership when the lock is lost.
func (l *Leadership) monitor(lost <-chan struct{}, maxRetries int) {
	defer close(l.done)
	defer l.sess.release()
	defer l.cancel()
	// Cleared before the context ends, so a caller that sees it end may
	// campaign again at once.
	defer l.store.campaigning.Store(false)

	wctx, stop := context.WithCancel(l.ctx)
	defer stop()
	failures := 0
	var seenLost atomic.Bool
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		opts := WatchOptions{observe: func(err error) {
			if err == nil {
				failures = 0
				return
			}
			failures++
			if maxRetries > 0 && failures > maxRetries {
				stop()
			}
		}}
		_ = l.store.watchKey(wctx, l.key, opts, func(pair *api.KVPair, _ uint64) {
			if pair == nil || pair.Session != l.id {
				seenLost.Store(true)
				stop()
			}
		})
	}()
	select {
	case <-lost:
	case <-watchDone:
	case <-l.resign:
	case <-l.ctx.Done():
	}
	stop()
	<-watchDone
	// Still holding the lock unless it was seen lost: let it go so another
	// manager takes over at once instead of after the session expires.
	select {
	case <-lost:
		return
	default:
	}
	if !seenLost.Load() {
		l.release()
	}
}

// release frees the lock. If Consul cannot be told, the session is
// replaced instead, which frees the lock when Consul answers again.
func (l *Leadership) release() {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	_, _, err := l.store.client.KV().Release(&api.KVPair{Key: l.key, Session: l.id}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		l.sess.reportInvalid(l.id)
	}
}

// Context is cancelled the moment the lock is lost or given up; the store
// may then Campaign again.
func (l *Leadership) Context() context.Context { return l.ctx }

// Session is the id of the Consul session holding the lock.
func (l *Leadership) Session() string { return l.id }

// Resign gives the lock up and waits until it is released.
func (l *Leadership) Resign() {
	l.resignOnce.Do(func() { close(l.resign) })
	<-l.done
}

// Leader reads who holds the leader lock: the holder's Value and session.
// Both are empty when nobody leads.
func (s *Store) Leader(ctx context.Context) (holder, session string, err error) {
	pair, _, err := s.client.KV().Get(s.LeaderKey(), (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", "", fmt.Errorf("leader: read %s: %w", s.LeaderKey(), s.denied(OpKVRead, s.LeaderKey(), err))
	}
	if pair == nil || pair.Session == "" {
		return "", "", nil
	}
	return string(pair.Value), pair.Session, nil
}

// WriteDeadline (D) is how long a fenced write may run past ProofMaxAge:
// the lock delay less ProofMaxAge and a 100 ms margin (300 ms with
// DefaultLeaderLockDelay).
func (l *Leadership) WriteDeadline() time.Duration {
	return l.sess.params.lockDelay - ProofMaxAge - fenceMargin
}

// Fence runs write, a leader-only action outside Consul (a Docker call),
// only while this process provably holds the lock, and cuts it off before a
// successor could take the lock. It needs a consistent read of the lock key
// showing this session sent less than ProofMaxAge ago, made now if the last
// is older (so an idle leader makes no requests for it), and gives write a
// context that ends ProofMaxAge+WriteDeadline after that read was sent:
// write starts with at least WriteDeadline left. It returns ErrNotLeader
// when the lock is not (provably) held, and otherwise what write returns.
func (l *Leadership) Fence(ctx context.Context, write func(ctx context.Context) error) error {
	sent, err := l.proof(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithDeadline(ctx, sent.Add(ProofMaxAge+l.WriteDeadline()))
	defer cancel()
	return write(wctx)
}

// Prefetch starts, in the background, the read Fence would make if the
// proof is stale, so that a write expected shortly (after the inspect
// that precedes an update) finds it done instead of waiting for it. The
// proof's meaning is unchanged: a write still starts within ProofMaxAge
// of the read being sent, or Fence reads again.
func (l *Leadership) Prefetch() {
	if l.ctx.Err() != nil || !l.prefetching.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer l.prefetching.Store(false)
		_, _ = l.proof(l.ctx)
	}()
}

// proof returns when a read showing the lock held was sent, less than
// ProofMaxAge ago, reading the lock key (consistently) if need be.
func (l *Leadership) proof(ctx context.Context) (time.Time, error) {
	l.proofMu.Lock()
	defer l.proofMu.Unlock()
	if l.ctx.Err() != nil {
		return time.Time{}, fmt.Errorf("fence: %w", ErrNotLeader)
	}
	if time.Since(l.proofSent) < ProofMaxAge {
		return l.proofSent, nil
	}
	sent := time.Now()
	rctx, cancel := context.WithTimeout(ctx, ProofMaxAge)
	defer cancel()
	pair, _, err := l.store.client.KV().Get(l.key, (&api.QueryOptions{RequireConsistent: true}).WithContext(rctx))
	switch {
	case err != nil:
		return time.Time{}, fmt.Errorf("fence: prove the lock is held: %w: %w", ErrNotLeader, l.store.denied(OpKVRead, l.key, err))
	case pair == nil || pair.Session != l.id:
		return time.Time{}, fmt.Errorf("fence: %w", ErrNotLeader)
	case time.Since(sent) >= ProofMaxAge:
		return time.Time{}, fmt.Errorf("fence: the lock read took %v: %w", time.Since(sent), ErrNotLeader)
	}
	l.proofSent = sent
	return sent, nil
}

// Txn commits ops atomically, fenced: a session check on the leader key
// goes first, so the transaction fails with ErrNotLeader if this process
// has lost the lock, however late the write arrives. Other failures are a
// *TxnError naming the caller's failing ops. At most MaxTxnOps-1 ops fit.
func (l *Leadership) Txn(ctx context.Context, ops api.TxnOps) error {
	if len(ops)+1 > MaxTxnOps {
		return fmt.Errorf("leader txn: %d ops, at most %d fit beside the fence", len(ops), MaxTxnOps-1)
	}
	// An ended leadership writes nothing even if its session holds the lock
	// again: a store's holders share one session, so the store may have
	// campaigned again and won under the same session id, and the fence in
	// Consul cannot tell the two leaderships apart.
	if l.ctx.Err() != nil {
		return fmt.Errorf("leader txn: %w", ErrNotLeader)
	}
	fenced := make(api.TxnOps, 0, len(ops)+1)
	fenced = append(fenced, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCheckSession, Key: l.key, Session: l.id}})
	fenced = append(fenced, ops...)
	ok, resp, _, err := l.store.client.Txn().Txn(fenced, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("leader txn: %w", l.store.denied(OpTxn, l.key, err))
	}
	if ok {
		return nil
	}
	// A refused fence is no proof that the lock is lost: the token lacks
	// key:read on the leader key. Say so rather than ErrNotLeader.
	if err := l.store.deniedTxn(resp, fenced); err != nil {
		return fmt.Errorf("leader txn: %w", err)
	}
	terr := newTxnError(resp, fenced, 1)
	if terr.fenceFailed {
		return fmt.Errorf("leader txn: %w", ErrNotLeader)
	}
	return fmt.Errorf("leader txn: %w", terr)
}

// CAS writes value to key if its ModifyIndex is still modifyIndex (0:
// only if the key does not exist), fenced like Txn. It returns false on a
// check-and-set conflict and ErrNotLeader when this process no longer
// leads.
func (l *Leadership) CAS(ctx context.Context, key string, value []byte, modifyIndex uint64) (bool, error) {
	return l.casOp(ctx, &api.KVTxnOp{Verb: api.KVCAS, Key: key, Value: value, Index: modifyIndex})
}

// Delete removes key if its ModifyIndex is still modifyIndex, fenced like
// Txn; modifyIndex 0 deletes whatever is there. It returns false on a
// check-and-set conflict and ErrNotLeader when this process no longer
// leads.
func (l *Leadership) Delete(ctx context.Context, key string, modifyIndex uint64) (bool, error) {
	op := &api.KVTxnOp{Verb: api.KVDeleteCAS, Key: key, Index: modifyIndex}
	if modifyIndex == 0 {
		op = &api.KVTxnOp{Verb: api.KVDelete, Key: key}
	}
	return l.casOp(ctx, op)
}

func (l *Leadership) casOp(ctx context.Context, op *api.KVTxnOp) (bool, error) {
	err := l.Txn(ctx, api.TxnOps{{KV: op}})
	var terr *TxnError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &terr):
		return false, nil
	default:
		return false, fmt.Errorf("key %q: %w", op.Key, err)
	}
}
