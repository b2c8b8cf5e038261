package state

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/consul/api"
)

// Condition is one aspect of an object's observed state, Kubernetes style.
type Condition struct {
	// Type names the aspect ("Ready", "NetworkCreated").
	Type string `json:"type"`
	// Status is "True" or "False".
	Status string `json:"status"`
	// Reason is a CamelCase word for machines.
	Reason string `json:"reason,omitempty"`
	// Message is for people.
	Message string `json:"message,omitempty"`
}

// Status is what a reconciler records about one object, under
// status/<section>/<name>: for a document the index of the version observed
// and its conditions (Valid first), for every object the last error and the
// reconciler's details.
type Status struct {
	// ObservedIndex is the ModifyIndex of the spec key the status describes.
	ObservedIndex uint64 `json:"observedIndex"`
	// Conditions are the object's observed aspects.
	Conditions []Condition `json:"conditions,omitempty"`
	// LastError is the last reconcile or validation error, if any.
	LastError string `json:"lastError,omitempty"`
	// Details hold kind-specific observations (task IPs, chunks).
	Details json.RawMessage `json:"details,omitempty"`
}

// StatusWriter writes status keys only when their content changes. It
// remembers (a digest of) what it last wrote per key, and on the first
// write of a key compares with what KV holds, so a restarted process does
// not rewrite identical statuses (each rewrite would bump the key's index
// and wake every status watcher). Prime reads a whole section in one
// request instead of one per key. It assumes it is the only writer of the
// keys it writes.
type StatusWriter struct {
	store *Store
	// lead, when set, fences every write and delete (Leadership.Txn).
	lead *Leadership
	mu   sync.Mutex
	last map[string]statusDigest
	// primed are the section prefixes read whole by Prime: a key under one
	// that last does not hold is absent from KV, unless unsure names it
	// (a write or delete whose outcome is unknown).
	primed []string
	unsure map[string]bool
}

// statusDigest identifies a status value: SHA-256, truncated, of its
// compact JSON. A digest instead of the value keeps the writer's memory
// small with many objects.
type statusDigest [16]byte

func digestOf(value []byte) statusDigest {
	sum := sha256.Sum256(value)
	return statusDigest(sum[:16])
}

// NewStatusWriter returns a writer with an empty memory. Its writes are not
// fenced: it is for the host role, whose status keys are its node's own.
func (s *Store) NewStatusWriter() *StatusWriter {
	return &StatusWriter{store: s, last: make(map[string]statusDigest), unsure: map[string]bool{}}
}

// Prime reads every status key of section (status/<section>/) in one
// request and remembers what each holds, so that the first Write of each
// key compares with memory instead of reading the key. A failed read
// leaves the writer as it was (each first Write then reads its key).
func (w *StatusWriter) Prime(ctx context.Context, section string) error {
	prefix := w.store.StatusPrefix() + section + "/"
	pairs, meta, err := w.store.client.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err := w.store.listed(prefix, meta, err); err != nil {
		return fmt.Errorf("status: list %s: %w", prefix, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range pairs {
		if _, known := w.last[p.Key]; !known && !w.unsure[p.Key] {
			w.last[p.Key] = digestOf(compactJSON(p.Value))
		}
	}
	w.primed = append(w.primed, prefix)
	return nil
}

// known reports what the writer knows of key: its digest, absent from KV
// (ok with present false), or nothing (ok false: KV must be read).
// Reset drops everything the writer knows of what is in KV (after a
// snapshot restore put older statuses back): each next write reads its
// key first, until Prime reads a section whole again.
func (w *StatusWriter) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = map[string]statusDigest{}
	w.unsure = map[string]bool{}
	w.primed = nil
}

// Names are the names with a status in section as far as the writer
// knows: read by Prime or written since and not deleted, or written or
// deleted with an unknown outcome.
func (w *StatusWriter) Names(section string) []string {
	prefix := w.store.StatusKey(section, "")
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	add := func(key string) {
		if name, ok := strings.CutPrefix(key, prefix); ok && name != "" {
			out = append(out, name)
		}
	}
	for key := range w.last {
		add(key)
	}
	for key := range w.unsure {
		if _, dup := w.last[key]; !dup {
			add(key)
		}
	}
	sort.Strings(out)
	return out
}

func (w *StatusWriter) known(key string) (d statusDigest, present, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if d, present := w.last[key]; present {
		return d, true, true
	}
	if w.unsure[key] {
		return d, false, false
	}
	for _, p := range w.primed {
		if strings.HasPrefix(key, p) {
			return d, false, true
		}
	}
	return d, false, false
}

// NewStatusWriter returns a writer whose writes and deletes are fenced like
// Txn: once this leadership is lost they fail with ErrNotLeader and change
// nothing, so a deposed leader cannot overwrite what its successor
// records. Make one per leadership: its memory of what it wrote is only
// good while nobody else writes, which ends when the lock is lost.
func (l *Leadership) NewStatusWriter() *StatusWriter {
	w := l.store.NewStatusWriter()
	w.lead = l
	return w
}

// Write stores st (JSON-encoded) at StatusKey(section, name) unless that key
// already holds the same JSON. It reports whether it wrote.
func (w *StatusWriter) Write(ctx context.Context, section, name string, st any) (bool, error) {
	key := w.store.StatusKey(section, name)
	value, err := json.Marshal(st)
	if err != nil {
		return false, fmt.Errorf("status %s: encode: %w", key, err)
	}
	digest := digestOf(value)
	prev, present, known := w.known(key)
	if !known {
		pair, _, err := w.store.client.KV().Get(key, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return false, fmt.Errorf("status %s: read: %w", key, w.store.denied(OpKVRead, key, err))
		}
		if pair != nil {
			prev, present = digestOf(compactJSON(pair.Value)), true
		}
	}
	if present && prev == digest {
		w.remember(key, digest)
		return false, nil
	}
	if err := w.put(ctx, key, value); err != nil {
		// Forget the key: whether the write landed is unknown, so the next
		// Write must look at KV again.
		w.forget(key, true)
		return false, fmt.Errorf("status %s: write: %w", key, err)
	}
	w.remember(key, digest)
	return true, nil
}

// Delete removes a status key.
func (w *StatusWriter) Delete(ctx context.Context, section, name string) error {
	key := w.store.StatusKey(section, name)
	if err := w.delete(ctx, key); err != nil {
		w.forget(key, true)
		return fmt.Errorf("status %s: delete: %w", key, err)
	}
	w.forget(key, false)
	return nil
}

func (w *StatusWriter) put(ctx context.Context, key string, value []byte) error {
	if w.lead != nil {
		return w.lead.Txn(ctx, api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVSet, Key: key, Value: value}}})
	}
	_, err := w.store.client.KV().Put(&api.KVPair{Key: key, Value: value}, (&api.WriteOptions{}).WithContext(ctx))
	return w.store.denied(OpKVWrite, key, err)
}

func (w *StatusWriter) delete(ctx context.Context, key string) error {
	if w.lead != nil {
		return w.lead.Txn(ctx, api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: key}}})
	}
	_, err := w.store.client.KV().Delete(key, (&api.WriteOptions{}).WithContext(ctx))
	return w.store.denied(OpKVWrite, key, err)
}

func (w *StatusWriter) remember(key string, d statusDigest) {
	w.mu.Lock()
	w.last[key] = d
	delete(w.unsure, key)
	w.mu.Unlock()
}

// forget drops what the writer knows of key: after a delete (unsure
// false: the key is gone), or after a write or delete whose outcome is
// unknown (unsure: the next Write reads the key again).
func (w *StatusWriter) forget(key string, unsure bool) {
	w.mu.Lock()
	delete(w.last, key)
	if unsure {
		w.unsure[key] = true
	} else {
		delete(w.unsure, key)
	}
	w.mu.Unlock()
}

// compactJSON returns b without insignificant space, so a status written by
// another tool with indentation compares equal to the same content; b is
// returned as is if it is not JSON.
func compactJSON(b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

// ReadStatus decodes StatusKey(section, name) into into; false if absent.
func (s *Store) ReadStatus(ctx context.Context, section, name string, into any) (bool, error) {
	key := s.StatusKey(section, name)
	pair, _, err := s.client.KV().Get(key, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("status %s: read: %w", key, s.denied(OpKVRead, key, err))
	}
	if pair == nil {
		return false, nil
	}
	if err := json.Unmarshal(pair.Value, into); err != nil {
		return true, fmt.Errorf("status %s: decode: %w", key, err)
	}
	return true, nil
}

// ListStatus returns every status record as section → name → JSON.
func (s *Store) ListStatus(ctx context.Context) (map[string]map[string]json.RawMessage, error) {
	prefix := s.StatusPrefix()
	pairs, meta, err := s.client.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err := s.listed(prefix, meta, err); err != nil {
		return nil, fmt.Errorf("status: list %s: %w", prefix, err)
	}
	out := make(map[string]map[string]json.RawMessage)
	for _, p := range pairs {
		section, name, ok := s.ParseStatusKey(p.Key)
		if !ok {
			continue
		}
		if out[section] == nil {
			out[section] = make(map[string]json.RawMessage)
		}
		out[section][name] = json.RawMessage(p.Value)
	}
	return out, nil
}
