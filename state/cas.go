package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"swarmvlan/state/backoff"
	"time"

	"github.com/hashicorp/consul/api"
)

// GetJSON decodes key into into and returns its ModifyIndex, for a later
// CASJSON. found is false (and into untouched) when the key is absent.
func (s *Store) GetJSON(ctx context.Context, key string, into any) (modifyIndex uint64, found bool, err error) {
	pair, _, err := s.client.KV().Get(key, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, false, fmt.Errorf("key %q: read: %w", key, s.denied(OpKVRead, key, err))
	}
	if pair == nil {
		return 0, false, nil
	}
	if err := json.Unmarshal(pair.Value, into); err != nil {
		return pair.ModifyIndex, true, fmt.Errorf("key %q: decode: %w", key, err)
	}
	return pair.ModifyIndex, true, nil
}

// CASJSON writes v as JSON to key if the key's ModifyIndex is still
// modifyIndex; modifyIndex 0 creates the key only if it is absent. It
// returns false when someone else wrote first.
func (s *Store) CASJSON(ctx context.Context, key string, v any, modifyIndex uint64) (bool, error) {
	value, err := json.Marshal(v)
	if err != nil {
		return false, fmt.Errorf("key %q: encode: %w", key, err)
	}
	ok, _, err := s.client.KV().CAS(&api.KVPair{Key: key, Value: value, ModifyIndex: modifyIndex}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("key %q: check-and-set: %w", key, s.denied(OpKVWrite, key, err))
	}
	return ok, nil
}

// Allocation is the chunk of a VLAN's subnet that one node holds. It is
// created with check-and-set and never moved while its node exists.
type Allocation struct {
	// Chunk is the node's range, a CIDR ("172.80.1.0/24").
	Chunk string `json:"chunk"`
	// Node is the swarm node ID.
	Node string `json:"node"`
	// Hostname is the node's hostname when the chunk was allocated.
	Hostname string `json:"hostname,omitempty"`
	// Created is when the chunk was allocated.
	Created time.Time `json:"created"`
	// Left is when the node was seen to have left the swarm: the start of
	// the chunk's quarantine before it may be reused.
	Left *time.Time `json:"left,omitempty"`
}

// Allocations returns a VLAN's allocations and their ModifyIndexes, both
// keyed by node ID. A record that does not decode is an error, not a gap:
// a chunk that seemed free could be handed out twice.
func (s *Store) Allocations(ctx context.Context, vlan string) (map[string]Allocation, map[string]uint64, error) {
	prefix := s.AllocationPrefix(vlan)
	pairs, meta, err := s.client.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err := s.listed(prefix, meta, err); err != nil {
		return nil, nil, fmt.Errorf("vlan %q: list allocations: %w", vlan, err)
	}
	allocs := make(map[string]Allocation, len(pairs))
	indexes := make(map[string]uint64, len(pairs))
	for _, p := range pairs {
		node, ok := leafOf(p.Key, prefix)
		if !ok {
			continue
		}
		var a Allocation
		if err := json.Unmarshal(p.Value, &a); err != nil {
			return nil, nil, fmt.Errorf("vlan %q: allocation %s: decode: %w", vlan, p.Key, err)
		}
		allocs[node] = a
		indexes[node] = p.ModifyIndex
	}
	return allocs, indexes, nil
}

// AllocationVLANs lists the VLANs that hold allocations, by name: the
// folders under state/allocations/, read without their values. A VLAN whose
// document is gone still shows here until its chunks are released, which is
// how a leader finds allocations left behind.
func (s *Store) AllocationVLANs(ctx context.Context) ([]string, error) {
	prefix := s.allocationsPrefix()
	keys, meta, err := s.client.KV().Keys(prefix, "/", (&api.QueryOptions{}).WithContext(ctx))
	if err := s.listed(prefix, meta, err); err != nil {
		return nil, fmt.Errorf("allocations: list %s: %w", prefix, err)
	}
	var vlans []string
	for _, k := range keys {
		// With a separator Consul returns folders with their trailing "/"
		// and keys directly under the prefix without; only folders hold
		// allocations.
		folder, ok := strings.CutSuffix(k, "/")
		if !ok {
			continue
		}
		if vlan, ok := leafOf(folder, prefix); ok {
			vlans = append(vlans, vlan)
		}
	}
	slices.Sort(vlans)
	return vlans, nil
}

// ScaleIntent is the scale API's decision for one service, kept in state/
// so a GitOps sync of the spec does not undo it.
type ScaleIntent struct {
	// Replicas is the count in force.
	Replicas int `json:"replicas"`
	// LastUp and LastDown are when it last went up and down (cooldowns).
	LastUp   time.Time `json:"lastUp,omitzero"`
	LastDown time.Time `json:"lastDown,omitzero"`
	// Reason says why it last changed.
	Reason string `json:"reason,omitempty"`
	// UpdatedBy names who changed it last.
	UpdatedBy string `json:"updatedBy,omitempty"`
}

// ScaleIntent reads a service's scale intent with its ModifyIndex; found is
// false when the service was never scaled.
func (s *Store) ScaleIntent(ctx context.Context, service string) (ScaleIntent, uint64, bool, error) {
	var si ScaleIntent
	idx, found, err := s.GetJSON(ctx, s.ScaleKey(service), &si)
	if err != nil {
		return ScaleIntent{}, 0, false, fmt.Errorf("service %q: scale intent: %w", service, err)
	}
	return si, idx, found, nil
}

// maxScaleTries bounds UpdateScaleIntent's read-modify-write loop. Each
// round at least one contender wins, and the jittered pauses spread the
// rest, so even fifty concurrent updates finish well within it.
const maxScaleTries = 100

// ErrContended is returned when a check-and-set loop lost too many races.
var ErrContended = errors.New("too many concurrent updates")

// UpdateScaleIntent applies fn to a service's scale intent with
// check-and-set, retrying on conflict, so concurrent updates never lose
// one. fn sees the current intent (found false: zero value) and returns the
// new one, or nil to leave it unchanged; it may run several times. The
// intent in force afterwards is returned.
func (s *Store) UpdateScaleIntent(ctx context.Context, service string, fn func(cur *ScaleIntent, found bool) (*ScaleIntent, error)) (ScaleIntent, error) {
	key := s.ScaleKey(service)
	for try := 0; try < maxScaleTries; try++ {
		cur, idx, found, err := s.ScaleIntent(ctx, service)
		if err != nil {
			return ScaleIntent{}, err
		}
		next, err := fn(&cur, found)
		if err != nil {
			return cur, fmt.Errorf("service %q: scale intent: %w", service, err)
		}
		if next == nil {
			return cur, nil
		}
		ok, err := s.CASJSON(ctx, key, next, idx)
		if err != nil {
			return cur, fmt.Errorf("service %q: scale intent: %w", service, err)
		}
		if ok {
			return *next, nil
		}
		// Lost the race: pause a little, longer as the contention persists.
		if !backoff.Sleep(ctx, jitter(time.Duration(min(try+1, 20))*time.Millisecond)) {
			return cur, ctx.Err()
		}
	}
	return ScaleIntent{}, fmt.Errorf("service %q: scale intent: %w (%d tries)", service, ErrContended, maxScaleTries)
}

// ScaleIntents returns every scale intent by service name, in one read.
func (s *Store) ScaleIntents(ctx context.Context) (map[string]ScaleIntent, error) {
	prefix := s.ScalePrefix()
	pairs, meta, err := s.client.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err := s.listed(prefix, meta, err); err != nil {
		return nil, fmt.Errorf("scale intents: list %s: %w", prefix, err)
	}
	out := make(map[string]ScaleIntent, len(pairs))
	for _, p := range pairs {
		service, ok := s.ParseScaleKey(p.Key)
		if !ok {
			continue
		}
		var si ScaleIntent
		if err := json.Unmarshal(p.Value, &si); err != nil {
			return nil, fmt.Errorf("scale intent %s: %w", p.Key, err)
		}
		out[service] = si
	}
	return out, nil
}

// InstallationID returns the ID of the installation this prefix holds,
// creating it on first use (check-and-set, so concurrent managers agree).
// Docker objects carry it, and a leader removes only objects with its own
// installation's ID.
func (s *Store) InstallationID(ctx context.Context) (string, error) {
	kv := s.client.KV()
	for attempt := 0; attempt < 5; attempt++ {
		p, _, err := kv.Get(s.InstallationKey(), (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return "", fmt.Errorf("installation id: read: %w", s.denied(OpKVRead, s.InstallationKey(), err))
		}
		if p != nil && len(p.Value) > 0 {
			return string(p.Value), nil
		}
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		ok, _, err := kv.CAS(&api.KVPair{Key: s.InstallationKey(), Value: []byte(hex.EncodeToString(b)), ModifyIndex: 0}, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return "", fmt.Errorf("installation id: create: %w", s.denied(OpKVWrite, s.InstallationKey(), err))
		}
		if ok {
			return hex.EncodeToString(b), nil
		}
	}
	return "", fmt.Errorf("installation id: %w", ErrContended)
}
