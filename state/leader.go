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
}

// Leadership is a held leader lock. Everything leader-only runs under
// Context, which is cancelled the moment the lock is lost.
type Leadership struct {
	store *Store
	sess  *session
	id    string
	key   string

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
	m := s.acquireSession(opts.SessionTTL, opts.LockDelay)
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
