package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/consul/api"
)

// Keys of the GitOps sync (see README "Keys in Consul").
const (
	// syncMarkerName lives under spec/ so that every spec watch reads it in
	// the same consistent listing as the documents it guards; ParseSpecKey
	// refuses it, so it is never taken for a document, applied or pruned.
	syncMarkerName = ".sync"
	syncStatusName = "status/sync"
	syncTriggerDir = "state/sync/trigger"
)

// SyncHoldMax bounds how long a spec watch holds back the changes it sees
// while a sync is marked in flight: a syncer that died between its
// transactions cannot freeze the reconcilers for longer than this.
const SyncHoldMax = 30 * time.Second

// SyncMarkerKey is the in-flight marker of a sync that spans several
// transactions: <prefix>spec/.sync.
func (s *Store) SyncMarkerKey() string { return s.SpecPrefix() + syncMarkerName }

// SyncStatusKey holds the GitOps sync's record: <prefix>status/sync (one
// segment, so ListStatus, which lists status/<section>/<name>, leaves it
// out).
func (s *Store) SyncStatusKey() string { return s.prefix + syncStatusName }

// SyncTriggerKey is written by any manager that received a push
// notification; the leader's syncer watches it: <prefix>state/sync/trigger.
func (s *Store) SyncTriggerKey() string { return s.prefix + syncTriggerDir }

// SyncMarker says a sync is between its first and last transaction: the
// spec tree may hold a mix of two commits until it is gone.
type SyncMarker struct {
	// Commit is the commit being applied.
	Commit string `json:"commit"`
	// Started is when the first transaction was sent.
	Started time.Time `json:"started"`
	// Txns is how many transactions the sync takes.
	Txns int `json:"txns"`
	// Holder names the leader that wrote it.
	Holder string `json:"holder,omitempty"`
}

// SyncMarkerIn finds the in-flight marker in a listing of the spec prefix
// (as a spec watch delivers it); nil when there is none. A marker that does
// not decode still counts as present.
func (s *Store) SyncMarkerIn(pairs api.KVPairs) *SyncMarker {
	key := s.SyncMarkerKey()
	for _, p := range pairs {
		if p.Key == key {
			var m SyncMarker
			_ = json.Unmarshal(p.Value, &m)
			return &m
		}
	}
	return nil
}

// SyncPlan is what a sync would change in the spec tree, read once: the
// check-and-set operations that make it hold the commit's documents
// exactly, and the marker a previous sync left, if any.
type SyncPlan struct {
	ApplyResult
	// Stored is the spec tree as read: key → value, documents only.
	Stored map[string][]byte
	// Marker is the in-flight marker found, or nil.
	Marker *SyncMarker

	ops api.TxnOps
}

// Empty reports whether the plan changes no document.
func (p *SyncPlan) Empty() bool { return len(p.ops) == 0 }

// PlanSync reads the spec tree and computes the operations that make it
// hold docs and nothing else of the layout (a prune). equal compares a
// stored value with a document's (nil: bytes).
func (s *Store) PlanSync(ctx context.Context, docs []SpecDoc, equal func(stored, doc []byte) bool) (*SyncPlan, error) {
	if err := s.checkDocs(docs); err != nil {
		return nil, err
	}
	if equal == nil {
		equal = bytes.Equal
	}
	prefix := s.SpecPrefix()
	pairs, meta, err := s.client.KV().List(prefix, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err := s.listed(prefix, meta, err); err != nil {
		return nil, fmt.Errorf("sync: read %s: %w", prefix, err)
	}
	p := &SyncPlan{Stored: map[string][]byte{}, Marker: s.SyncMarkerIn(pairs)}
	for _, kv := range pairs {
		if _, _, ok := s.ParseSpecKey(kv.Key); ok {
			p.Stored[kv.Key] = kv.Value
		}
	}
	p.ApplyResult, p.ops = s.planSpec(pairs, docs, equal, true)
	return p, nil
}

// CommitOptions tune CommitSync.
type CommitOptions struct {
	// MaxOps caps the caller's operations per transaction (the fence's
	// check comes on top); 0 or more than MaxTxnOps-1 means MaxTxnOps-1.
	MaxOps int
	// BetweenTxns, if set, runs after each transaction but the last; an
	// error stops the sync there, as a crash would (fault drills, tests).
	BetweenTxns func(done, total int) error
}

// ErrSyncCut is wrapped by CommitSync's error when BetweenTxns stopped it.
var ErrSyncCut = errors.New("sync cut between transactions")

// CommitSync writes plan and the sync record status (JSON at
// SyncStatusKey) in fenced transactions of at most MaxTxnOps operations,
// the fence included, in the plan's order: VLANs, then hosts and services,
// then deletions in the reverse order. A sync that needs more than one
// transaction writes marker in the first and removes it, beside the
// record, in the last, so a reader that sees no marker sees one commit
// whole; a marker left by an earlier cut sync is removed the same way. It
// returns the number of transactions committed. A key changed since the
// plan was read rolls its transaction back (a *TxnError); the marker then
// stays, and the next plan finishes the work.
func (l *Leadership) CommitSync(ctx context.Context, plan *SyncPlan, marker SyncMarker, status any, opts CommitOptions) (int, error) {
	value, err := json.Marshal(status)
	if err != nil {
		return 0, fmt.Errorf("sync: encode status: %w", err)
	}
	maxOps := opts.MaxOps
	if maxOps <= 0 || maxOps > MaxTxnOps-1 {
		maxOps = MaxTxnOps - 1
	}
	markerKey := l.store.SyncMarkerKey()
	record := &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: l.store.SyncStatusKey(), Value: value}}
	clear := &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: markerKey}}

	ops := append(append(api.TxnOps{}, plan.ops...), record)
	if plan.Marker != nil {
		ops = append(ops, clear)
	}
	chunks := TxnChunks(ops, maxOps)
	if len(chunks) > 1 {
		set := &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: markerKey}}
		all := append(api.TxnOps{set}, plan.ops...)
		all = append(all, record, clear)
		chunks = TxnChunks(all, maxOps)
		marker.Txns = len(chunks)
		marker.Started = time.Now().UTC()
		if set.KV.Value, err = json.Marshal(marker); err != nil {
			return 0, fmt.Errorf("sync: encode marker: %w", err)
		}
	}
	for i, chunk := range chunks {
		if err := l.Txn(ctx, chunk); err != nil {
			return i, fmt.Errorf("sync: transaction %d of %d (%d committed before): %w", i+1, len(chunks), i, err)
		}
		if opts.BetweenTxns != nil && i < len(chunks)-1 {
			if err := opts.BetweenTxns(i+1, len(chunks)); err != nil {
				return i + 1, fmt.Errorf("sync: after transaction %d of %d: %w: %w", i+1, len(chunks), ErrSyncCut, err)
			}
		}
	}
	return len(chunks), nil
}

// WriteSyncStatus replaces the sync record (a failed or refused attempt,
// which changes no document), fenced like Txn.
func (l *Leadership) WriteSyncStatus(ctx context.Context, status any) error {
	value, err := json.Marshal(status)
	if err != nil {
		return fmt.Errorf("sync: encode status: %w", err)
	}
	if err := l.Txn(ctx, api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVSet, Key: l.store.SyncStatusKey(), Value: value}}}); err != nil {
		return fmt.Errorf("sync: write status: %w", err)
	}
	return nil
}

// ReadSyncStatus decodes the sync record into into; false when there is
// none yet.
func (s *Store) ReadSyncStatus(ctx context.Context, into any) (bool, error) {
	key := s.SyncStatusKey()
	pair, _, err := s.client.KV().Get(key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("sync: read %s: %w", key, s.denied(OpKVRead, key, err))
	}
	if pair == nil {
		return false, nil
	}
	if err := json.Unmarshal(pair.Value, into); err != nil {
		return true, fmt.Errorf("sync: decode %s: %w", key, err)
	}
	return true, nil
}

// SyncTrigger is a push notification passed to the leader.
type SyncTrigger struct {
	// Ref and Commit are the pushed ref and its new commit, as the hook said.
	Ref    string `json:"ref,omitempty"`
	Commit string `json:"commit,omitempty"`
	// From names the manager that received the hook, and At when.
	From string    `json:"from,omitempty"`
	At   time.Time `json:"at"`
}

// TriggerSync records a push notification for the leader's syncer; any
// manager may write it (unfenced: it changes nothing but the wake-up).
func (s *Store) TriggerSync(ctx context.Context, t SyncTrigger) error {
	key := s.SyncTriggerKey()
	value, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("sync: encode trigger: %w", err)
	}
	if _, err := s.client.KV().Put(&api.KVPair{Key: key, Value: value}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("sync: write %s: %w", key, s.denied(OpKVWrite, key, err))
	}
	return nil
}

// WatchSyncTriggers calls fn for every trigger written after the watch
// started (what was there before is history). It returns when ctx is done.
func (s *Store) WatchSyncTriggers(ctx context.Context, fn func(SyncTrigger)) error {
	key := s.SyncTriggerKey()
	var last uint64
	first := true
	return s.watchKey(ctx, key, WatchOptions{}, func(pair *api.KVPair, _ uint64) {
		var idx uint64
		if pair != nil {
			idx = pair.ModifyIndex
		}
		if first {
			first, last = false, idx
			return
		}
		if pair == nil || idx == last {
			return
		}
		last = idx
		var t SyncTrigger
		_ = json.Unmarshal(pair.Value, &t)
		fn(t)
	})
}
