package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Lease kinds.
const (
	// LeaseTask is an address Docker asked the node's IPAM plugin for: a
	// container's endpoint on the VLAN.
	LeaseTask = "task"
	// LeaseShim is the host's own shim address on the VLAN.
	LeaseShim = "shim"
)

// Lease is one address of a cluster-mode VLAN, held by one node. It is
// created with check-and-set (a second node asking for the same address
// loses) and changes hands only through quarantine: released, it stays
// under its key with Released set until the VLAN's quarantine has passed.
type Lease struct {
	// Address is the leased address ("10.5.0.7").
	Address string `json:"address"`
	// Node is the swarm node ID of the owner; Hostname its hostname then.
	Node     string `json:"node"`
	Hostname string `json:"hostname,omitempty"`
	// Kind is LeaseTask or LeaseShim.
	Kind string `json:"kind"`
	// Created is when the lease was taken.
	Created time.Time `json:"created"`
	// Released is when the owner released the address (or the leader, for a
	// node gone from the swarm): the start of its quarantine. Nil while held.
	Released *time.Time `json:"released,omitempty"`
	// Service and Slot name the sticky slot the address belongs to, when
	// it was taken for one; a release keeps them so the slot's next task
	// gets the address again.
	Service string `json:"service,omitempty"`
	Slot    int    `json:"slot,omitempty"`
	// ReservedFor is the node ID the leader reserved a released sticky
	// address for: the node its slot's next task is assigned to. No other
	// node takes it meanwhile.
	ReservedFor string `json:"reservedFor,omitempty"`
	// FreshFor is set on the lease of a sticky slot's task that got a
	// fresh address: the slot's own address, which was not free for it
	// (the documented fallback, shown by the dashboard).
	FreshFor string `json:"freshFor,omitempty"`
}

// Held reports whether the lease is in force (not released).
func (l Lease) Held() bool { return l.Released == nil }

// Free reports whether the address may be taken again at now: released
// and out of its quarantine.
func (l Lease) Free(now time.Time, quarantine time.Duration) bool {
	return l.Released != nil && !now.Before(l.Released.Add(quarantine))
}

// LeaseEntry is a lease with the ModifyIndex a check-and-set needs.
type LeaseEntry struct {
	Lease
	ModifyIndex uint64
}

// ErrLeaseTaken is returned by TakeLease when another writer got there
// first.
var ErrLeaseTaken = errors.New("lease taken by another writer")

// leasesDir holds one folder of leases per cluster-mode VLAN.
const leasesDir = "state/leases/"

// LeasePrefix holds one VLAN's leases: <prefix>state/leases/<vlan>/.
func (s *Store) LeasePrefix(vlan string) string { return s.prefix + leasesDir + vlan + "/" }

// LeaseKey is the lease of one address.
func (s *Store) LeaseKey(vlan string, addr netip.Addr) string {
	return s.LeasePrefix(vlan) + addr.String()
}

// Leases returns a VLAN's leases by address. A record that does not decode
// is an error, not a gap: an address that seemed free could be handed out
// twice.
func (s *Store) Leases(ctx context.Context, vlan string) (map[netip.Addr]LeaseEntry, error) {
	prefix := s.LeasePrefix(vlan)
	pairs, _, err := s.client.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("vlan %q: list leases: %w", vlan, s.denied(OpKVRead, prefix, err))
	}
	out := make(map[netip.Addr]LeaseEntry, len(pairs))
	for _, p := range pairs {
		leaf := strings.TrimPrefix(p.Key, prefix)
		addr, err := netip.ParseAddr(leaf)
		if err != nil {
			return nil, fmt.Errorf("vlan %q: lease key %q: not an address", vlan, p.Key)
		}
		var l Lease
		if err := json.Unmarshal(p.Value, &l); err != nil {
			return nil, fmt.Errorf("vlan %q: lease %s: decode: %w", vlan, addr, err)
		}
		out[addr] = LeaseEntry{Lease: l, ModifyIndex: p.ModifyIndex}
	}
	return out, nil
}

// LeaseVLANs lists the VLANs that have leases.
func (s *Store) LeaseVLANs(ctx context.Context) ([]string, error) {
	prefix := s.prefix + leasesDir
	keys, _, err := s.client.KV().Keys(prefix, "/", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list lease vlans: %w", s.denied(OpKVRead, prefix, err))
	}
	var out []string
	for _, k := range keys {
		if v := strings.TrimSuffix(strings.TrimPrefix(k, prefix), "/"); v != "" && strings.HasSuffix(k, "/") {
			out = append(out, v)
		}
	}
	return out, nil
}

// TakeLease writes l for addr if the key's ModifyIndex is still
// modifyIndex (0: only if absent). ErrLeaseTaken says another writer won.
func (s *Store) TakeLease(ctx context.Context, vlan string, addr netip.Addr, l Lease, modifyIndex uint64) error {
	l.Address = addr.String()
	ok, err := s.CASJSON(ctx, s.LeaseKey(vlan, addr), l, modifyIndex)
	if err != nil {
		return err
	}
	if !ok {
		return ErrLeaseTaken
	}
	return nil
}

// ReleaseLease starts the quarantine of the lease of addr held by node:
// it stays under its key, Released set, until the quarantine has passed.
// A release by another node than the owner is refused; a lease already
// released or absent is left as it is (Docker repeats releases).
func (s *Store) ReleaseLease(ctx context.Context, vlan string, addr netip.Addr, node string, now time.Time) error {
	key := s.LeaseKey(vlan, addr)
	for range 3 {
		var l Lease
		idx, found, err := s.GetJSON(ctx, key, &l)
		if err != nil {
			return err
		}
		if !found || !l.Held() || l.Kind == LeaseShim {
			// A shim's lease is the host role's, never Docker's to end.
			return nil
		}
		if l.Node != node {
			return fmt.Errorf("vlan %q: release %s: leased to node %s (%s), not to this node %s", vlan, addr, l.Node, l.Hostname, node)
		}
		l.Released = &now
		ok, err := s.CASJSON(ctx, key, l, idx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("vlan %q: release %s: the lease kept changing", vlan, addr)
}

// DeleteLease removes the lease of addr if it is unchanged since
// modifyIndex: the end of a quarantine, when nothing should remember the
// address any more.
func (s *Store) DeleteLease(ctx context.Context, vlan string, addr netip.Addr, modifyIndex uint64) (bool, error) {
	key := s.LeaseKey(vlan, addr)
	ok, _, err := s.client.KV().DeleteCAS(&api.KVPair{Key: key, ModifyIndex: modifyIndex}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("key %q: delete: %w", key, s.denied(OpKVWrite, key, err))
	}
	return ok, nil
}

// UpdateLease rewrites the lease of addr with f's change if it is
// unchanged since modifyIndex; false says another writer won.
func (s *Store) UpdateLease(ctx context.Context, vlan string, addr netip.Addr, l Lease, modifyIndex uint64) (bool, error) {
	l.Address = addr.String()
	return s.CASJSON(ctx, s.LeaseKey(vlan, addr), l, modifyIndex)
}

// LeaseValue encodes a lease for a fenced leader write (Leadership.CAS).
func LeaseValue(l Lease) ([]byte, error) { return json.Marshal(l) }

// addLease sorts one pair under the leases folder into t.Leases.
func (t *Tree) addLease(s *Store, p *api.KVPair) error {
	vlan, leaf, ok := strings.Cut(strings.TrimPrefix(p.Key, s.prefix+leasesDir), "/")
	if !ok || vlan == "" || strings.Contains(leaf, "/") {
		return nil
	}
	addr, err := netip.ParseAddr(leaf)
	if err != nil {
		return fmt.Errorf("lease key: not an address")
	}
	var l Lease
	if err := json.Unmarshal(p.Value, &l); err != nil {
		return err
	}
	if t.Leases[vlan] == nil {
		t.Leases[vlan] = map[netip.Addr]Lease{}
	}
	t.Leases[vlan][addr] = l
	return nil
}

// LeasesRoot is the parent of every VLAN's LeasePrefix, for a watch of
// all leases.
func (s *Store) LeasesRoot() string { return s.prefix + leasesDir }

// DecodeLeases sorts a listing of LeasesRoot (as a watch delivers it) into
// each VLAN's leases by address. Keys that are not a lease and values that
// do not decode are left out and returned as errors.
func (s *Store) DecodeLeases(pairs api.KVPairs) (map[string]map[netip.Addr]LeaseEntry, []error) {
	out := map[string]map[netip.Addr]LeaseEntry{}
	var bad []error
	root := s.LeasesRoot()
	for _, p := range pairs {
		vlan, leaf, ok := strings.Cut(strings.TrimPrefix(p.Key, root), "/")
		if !ok || vlan == "" || !strings.HasPrefix(p.Key, root) {
			continue
		}
		addr, err := netip.ParseAddr(leaf)
		if err != nil {
			bad = append(bad, fmt.Errorf("lease key %q: not an address", p.Key))
			continue
		}
		var l Lease
		if err := json.Unmarshal(p.Value, &l); err != nil {
			bad = append(bad, fmt.Errorf("vlan %q: lease %s: decode: %w", vlan, addr, err))
			continue
		}
		if out[vlan] == nil {
			out[vlan] = map[netip.Addr]LeaseEntry{}
		}
		out[vlan][addr] = LeaseEntry{Lease: l, ModifyIndex: p.ModifyIndex}
	}
	return out, bad
}
