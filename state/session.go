package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"swarmvlan/state/backoff"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Session defaults.
const (
	// DefaultSessionTTL is Consul's minimum session TTL. Consul invalidates
	// a session only after twice its TTL without a renewal, so renewing once
	// per TTL is safe and costs 0.1 request/s, which keeps an idle daemon
	// (this plus a few five-minute blocking queries) under 0.2 request/s.
	DefaultSessionTTL = 10 * time.Second
	// DefaultLockDelay is the pause Consul imposes before a lock held by an
	// invalidated session can be taken again. Consul's default of 15s only
	// delays a new leader after a crash; what keeps a deposed leader harmless
	// is the session check in every leader write (Leadership.Txn), so a short
	// delay that merely lets in-flight writes of the old holder land first
	// is enough.
	DefaultLockDelay = time.Second
	// minSessionTTL and maxSessionTTL are Consul's bounds.
	minSessionTTL = 10 * time.Second
	maxSessionTTL = 24 * time.Hour
	// opTimeout bounds single non-blocking requests made on cleanup paths,
	// where no caller context applies.
	opTimeout = 5 * time.Second
)

// sessionParams identify a shared session: holders that ask for the same
// TTL and lock delay (with defaults, all of them) share one session. A
// session bound to a leader check has no TTL and is never shared.
type sessionParams struct {
	ttl, lockDelay time.Duration
	// check, when its URL is set, binds the session to serfHealth and to a
	// leader check on the local agent instead of a TTL.
	check LeaderCheck
}

func (s *Store) sessionParams(ttl, lockDelay time.Duration) sessionParams {
	if ttl <= 0 {
		ttl = s.cfg.SessionTTL
	}
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	ttl = min(max(ttl, minSessionTTL), maxSessionTTL)
	if lockDelay <= 0 {
		lockDelay = s.cfg.LockDelay
	}
	if lockDelay <= 0 {
		lockDelay = DefaultLockDelay
	}
	return sessionParams{ttl: ttl, lockDelay: lockDelay}
}

// session is the process's Consul session, shared by the leader lock and the
// node registration so that the process pays for one renewal per TTL. It is
// created on first use, renewed by a hand-written loop once per TTL
// (session.RenewPeriodic renews every TTL/2, twice the cost), re-created when
// Consul invalidates it, and destroyed when its last holder lets go. Keys it
// holds are deleted when it is invalidated (Behavior delete), so a dead
// process's node key vanishes and its leader key frees.
type session struct {
	store  *Store
	params sessionParams
	// checkID is the leader check of a check-bound session ("" for a TTL
	// session).
	checkID string

	invalid chan string // ids a holder saw Consul reject
	cancel  context.CancelFunc
	done    chan struct{}

	mu    sync.Mutex
	refs  int
	id    string
	lost  chan struct{} // closed when id stops being valid
	ready chan struct{} // closed when a new id is published
}

// acquireSession returns the shared session for the given parameters,
// starting it if this is its first holder. Every call must be paired with
// release.
func (s *Store) acquireSession(ttl, lockDelay time.Duration) *session {
	p := s.sessionParams(ttl, lockDelay)
	s.sessionMu.Lock()
	defer s.sessionMu.Unlock()
	if m := s.sessions[p]; m != nil {
		m.mu.Lock()
		m.refs++
		m.mu.Unlock()
		return m
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &session{
		store:   s,
		params:  p,
		invalid: make(chan string, 1),
		cancel:  cancel,
		done:    make(chan struct{}),
		refs:    1,
		ready:   make(chan struct{}),
	}
	s.sessions[p] = m
	go m.run(ctx)
	return m
}

// acquireCheckedSession starts a session of its own for the leader lock,
// bound to serfHealth and to a leader check registered for it alone (see
// LeaderCheck). It has no TTL, so it costs no renewals. Pair with release.
func (s *Store) acquireCheckedSession(lockDelay time.Duration, c LeaderCheck) *session {
	if lockDelay <= 0 {
		lockDelay = DefaultLeaderLockDelay
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &session{
		store:   s,
		params:  sessionParams{lockDelay: lockDelay, check: c},
		checkID: newLeaderCheckID(c.Owner),
		invalid: make(chan string, 1),
		cancel:  cancel,
		done:    make(chan struct{}),
		refs:    1,
		ready:   make(chan struct{}),
	}
	go m.run(ctx)
	return m
}

// release drops one holder; the last one stops the renewal loop and
// destroys the session, which deletes the keys it still holds.
func (m *session) release() {
	s := m.store
	s.sessionMu.Lock()
	m.mu.Lock()
	m.refs--
	last := m.refs == 0
	m.mu.Unlock()
	if last && s.sessions[m.params] == m {
		delete(s.sessions, m.params)
	}
	s.sessionMu.Unlock()
	if last {
		m.cancel()
		<-m.done
	}
}

// current waits until a valid session exists and returns its id and a
// channel closed when that id is lost.
func (m *session) current(ctx context.Context) (string, <-chan struct{}, error) {
	for {
		m.mu.Lock()
		id, lost, ready := m.id, m.lost, m.ready
		m.mu.Unlock()
		if id != "" {
			return id, lost, nil
		}
		select {
		case <-ctx.Done():
			return "", nil, ctx.Err()
		case <-m.done:
			return "", nil, errors.New("consul session: closed")
		case <-ready:
		}
	}
}

// reportInvalid tells the loop that Consul rejected id (for example an
// acquire answered "invalid session"), so it is replaced now rather than at
// the next renewal.
func (m *session) reportInvalid(id string) {
	select {
	case m.invalid <- id:
	default:
	}
}

func (m *session) run(ctx context.Context) {
	defer close(m.done)
	maxWait := m.params.ttl / 2
	if m.checkID != "" {
		maxWait = DefaultMaxBackoff / 2
		// Deregistered last, after the session is destroyed: removing the
		// check first would invalidate the session and impose the lock
		// delay on a lock just released.
		defer func() { _ = m.store.deregisterLeaderCheck(context.Background(), m.checkID) }()
	}
	bo := backoff.New(backoffBase, maxWait)
	var stale string
	for ctx.Err() == nil {
		// A session given up because it could not be renewed may still be
		// alive in Consul (a restarted server resets TTL timers); destroy it
		// so the keys it holds free up for the new one.
		if stale != "" {
			if err := m.destroy(ctx, stale); err != nil {
				backoff.Sleep(ctx, bo.Next())
				continue
			}
			stale = ""
		}
		sent := time.Now()
		id, err := m.create(ctx)
		if err != nil {
			backoff.Sleep(ctx, bo.Next())
			continue
		}
		bo.Reset()
		m.publish(id)
		var gone bool
		if m.checkID != "" {
			gone = m.watchChecked(ctx, id)
		} else {
			gone = m.keepAlive(ctx, id, sent)
		}
		m.retire()
		if !gone {
			stale = id
		}
	}
	if stale != "" {
		_ = m.destroy(context.Background(), stale)
	}
}

func (m *session) create(ctx context.Context) (string, error) {
	host, _ := os.Hostname()
	entry := &api.SessionEntry{
		Name:      fmt.Sprintf("swarmvlan %s pid %d", host, os.Getpid()),
		TTL:       m.params.ttl.String(),
		LockDelay: m.params.lockDelay,
		Behavior:  api.SessionBehaviorDelete,
	}
	if m.checkID != "" {
		// Registered (passing) before every create: Consul refuses a
		// session against a critical or unknown check, and an agent that
		// restarted may have lost it.
		if err := m.store.registerLeaderCheck(ctx, m.checkID, m.params.check); err != nil {
			return "", fmt.Errorf("consul session: %w", err)
		}
		entry.Name = fmt.Sprintf("swarmvlan leader %s pid %d", host, os.Getpid())
		entry.TTL = ""
		entry.NodeChecks = []string{serfHealth, m.checkID}
	}
	id, _, err := m.store.client.Session().Create(entry, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("consul session: create: %w", m.store.denied(OpSessionCreate, entry.Name, err))
	}
	return id, nil
}

func (m *session) destroy(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := m.store.client.Session().Destroy(id, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("consul session %s: destroy: %w", id, m.store.denied(OpSessionDestroy, id, err))
	}
	return nil
}

func (m *session) publish(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.id = id
	m.lost = make(chan struct{})
	close(m.ready)
}

func (m *session) retire() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.id = ""
	close(m.lost)
	m.ready = make(chan struct{})
}

// keepAlive renews id once per TTL until it is lost or ctx is done. It
// reports whether Consul said the session is gone (true) or whether it was
// given up without that proof (false: ctx done, or no renewal succeeded for
// 1.5×TTL). Consul invalidates a session 2×TTL after its last renewal, so
// giving up at 1.5×TTL makes a holder that cannot reach Consul stop before
// another process can take its locks. Times are taken when requests are
// sent, which is no later than when Consul handled them. created is when
// the create request was sent.
func (m *session) keepAlive(ctx context.Context, id string, created time.Time) bool {
	ttl := m.params.ttl
	deadline := created.Add(ttl * 3 / 2)
	bo := backoff.New(backoffBase, ttl/4)
	timer := time.NewTimer(ttl)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case bad := <-m.invalid:
			if bad == id {
				return false
			}
			continue
		case <-timer.C:
		}
		rctx, cancel := context.WithTimeout(ctx, ttl/2)
		start := time.Now()
		entry, _, err := m.store.client.Session().Renew(id, (&api.WriteOptions{}).WithContext(rctx))
		cancel()
		// A refused renewal (403) is an error like Consul being away, not
		// "gone": the session may well live, and the holder keeps it until
		// the deadline as it would through an outage.
		err = m.store.denied(OpSessionRenew, id, err)
		switch {
		case err == nil && entry == nil:
			return true
		case err == nil:
			bo.Reset()
			deadline = start.Add(ttl * 3 / 2)
			timer.Reset(ttl)
		default:
			left := time.Until(deadline)
			if left <= 0 {
				return false
			}
			timer.Reset(min(bo.Next(), left))
		}
	}
}

// watchChecked waits, with a blocking query on the session, until Consul
// invalidates id (a bound check turned critical, or it was destroyed) or
// a holder reports it invalid, or ctx is done. It reports whether Consul
// said the session is gone, as keepAlive does. A check-bound session needs
// no renewals; Consul being away only makes the query retry.
func (m *session) watchChecked(ctx context.Context, id string) bool {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for {
			select {
			case <-wctx.Done():
				return
			case bad := <-m.invalid:
				if bad == id {
					stop()
					return
				}
			}
		}
	}()
	var entry *api.SessionEntry
	gone := false
	_ = m.store.blockingLoop(wctx, WatchOptions{},
		func(q *api.QueryOptions) (uint64, error) {
			e, meta, err := m.store.client.Session().Info(id, q)
			if err != nil {
				return 0, fmt.Errorf("consul session %s: info: %w", id, err)
			}
			entry = e
			return meta.LastIndex, nil
		},
		func(uint64) bool {
			if entry == nil {
				gone = true
				stop()
			}
			return false
		})
	return gone
}

// acquireKey loops until key is acquired by the current session of m (or
// ctx is done), waiting with a blocking query while another session holds
// it. It returns the session's id and the channel closed when that session
// is lost. Consul being away only makes it wait.
func (s *Store) acquireKey(ctx context.Context, m *session, key string, value func() []byte) (string, <-chan struct{}, error) {
	kv := s.client.KV()
	bo := backoff.New(backoffBase, DefaultMaxBackoff)
	var step indexStep
	var lastStart time.Time
	for {
		id, lost, err := m.current(ctx)
		if err != nil {
			return "", nil, err
		}
		if !backoff.Sleep(ctx, DefaultMinInterval-time.Since(lastStart)) {
			return "", nil, ctx.Err()
		}
		lastStart = time.Now()
		// Wait (blocking) while another session holds the key; the first
		// read, and the read after a lost race, do not block. The wait is
		// answered by the local server (stale): a consistent query is held
		// by the Consul leader, and one held by a leader that was cut off
		// hangs until the RPC connection's keepalive fails (10-40 s),
		// long after the other servers elected a new leader and freed the
		// key. The acquire itself is a write, decided by the leader.
		pair, meta, err := kv.Get(key, (&api.QueryOptions{WaitIndex: step.wait, WaitTime: DefaultWaitTime, AllowStale: true}).WithContext(ctx))
		err = s.denied(OpKVRead, key, err)
		if err != nil {
			if ctx.Err() != nil {
				return "", nil, ctx.Err()
			}
			backoff.Sleep(ctx, bo.Next())
			continue
		}
		bo.Reset()
		early := step.wait != 0 && time.Since(lastStart) < DefaultWaitTime
		step = nextIndex(step.next, meta.LastIndex, early)
		if step.reset {
			continue
		}
		if pair != nil && pair.Session != "" && pair.Session != id {
			continue
		}
		// The key is free (or ours): whatever the acquire answers, the next
		// read must not block, since the key may not change again.
		step.wait = 0
		ok, _, err := kv.Acquire(&api.KVPair{Key: key, Value: value(), Session: id}, (&api.WriteOptions{}).WithContext(ctx))
		err = s.denied(OpKVWrite, key, err)
		switch {
		case err == nil && ok:
			// Even if ctx ended meanwhile: the caller must know it holds
			// the key so that it lets go of it.
			return id, lost, nil
		case ctx.Err() != nil:
			return "", nil, ctx.Err()
		case err != nil:
			if isInvalidSession(err) {
				m.reportInvalid(id)
			}
			backoff.Sleep(ctx, bo.Next())
		default:
			// The key was free but Consul refused: the previous holder's
			// lock delay is running, or another campaigner won the race.
			// Look again soon: Consul does not say when the delay ends, and
			// a new leader should start within a fraction of it.
			backoff.Sleep(ctx, jitter(m.params.lockDelay/8))
		}
	}
}

// isInvalidSession reports whether Consul rejected a request because the
// session it names does not exist (any more).
func isInvalidSession(err error) bool {
	return err != nil && strings.Contains(err.Error(), "invalid session")
}
