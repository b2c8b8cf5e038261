package state

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/hashicorp/consul/api"
)

// SectionTasks holds per-node task reports: each host role's running task
// containers with their addresses, status/tasks/<node ID>.
const SectionTasks = "tasks"

// Tree is one listing of the whole prefix (a watch of Prefix() delivers
// it) sorted into what the key layout says each key is: the documents'
// raw pairs, the statuses, the allocations, the live node reports, the
// scale intents and the leader lock's holder. It is what a dashboard
// shows, read from KV alone, so any manager can serve it.
type Tree struct {
	// Spec holds the pairs under SpecPrefix, for a reconcile.View.
	Spec api.KVPairs
	// Statuses is section -> name -> status.
	Statuses map[string]map[string]Status
	// Allocations is VLAN -> node ID -> allocation.
	Allocations map[string]map[string]Allocation
	// Leases is VLAN -> address -> lease, for VLANs in mode cluster.
	Leases map[string]map[netip.Addr]Lease
	// Nodes are the live node reports by node ID (keys a session holds).
	Nodes map[string]NodeReport
	// Scale is the scale intents by service.
	Scale map[string]ScaleIntent
	// Leader is the leader lock's holder (its value, the manager's node
	// name); empty when nobody leads.
	Leader string
	// Sync is the GitOps sync's record (SyncStatusKey) as stored; nil
	// when no sync has run.
	Sync []byte
	// Problems name the keys whose values do not decode.
	Problems []string
}

// Tree sorts pairs, a listing of Prefix(), into a Tree.
func (s *Store) Tree(pairs api.KVPairs) Tree {
	t := Tree{
		Statuses:    map[string]map[string]Status{},
		Allocations: map[string]map[string]Allocation{},
		Leases:      map[string]map[netip.Addr]Lease{},
		Nodes:       map[string]NodeReport{},
		Scale:       map[string]ScaleIntent{},
	}
	bad := func(key string, err error) {
		t.Problems = append(t.Problems, fmt.Sprintf("%s: decode: %v", key, err))
	}
	var nodePairs api.KVPairs
	for _, p := range pairs {
		switch {
		case strings.HasPrefix(p.Key, s.SpecPrefix()):
			t.Spec = append(t.Spec, p)
		case p.Key == s.LeaderKey():
			if p.Session != "" {
				t.Leader = string(p.Value)
			}
		case p.Key == s.SyncStatusKey():
			t.Sync = p.Value
		case strings.HasPrefix(p.Key, s.StatusPrefix()):
			section, name, ok := s.ParseStatusKey(p.Key)
			if !ok {
				continue
			}
			var st Status
			if err := json.Unmarshal(p.Value, &st); err != nil {
				bad(p.Key, err)
				continue
			}
			if t.Statuses[section] == nil {
				t.Statuses[section] = map[string]Status{}
			}
			t.Statuses[section][name] = st
		case strings.HasPrefix(p.Key, s.allocationsPrefix()):
			vlan, node, ok := strings.Cut(strings.TrimPrefix(p.Key, s.allocationsPrefix()), "/")
			if !ok || vlan == "" || node == "" || strings.Contains(node, "/") {
				continue
			}
			var a Allocation
			if err := json.Unmarshal(p.Value, &a); err != nil {
				bad(p.Key, err)
				continue
			}
			if t.Allocations[vlan] == nil {
				t.Allocations[vlan] = map[string]Allocation{}
			}
			t.Allocations[vlan][node] = a
		case strings.HasPrefix(p.Key, s.prefix+leasesDir):
			if err := t.addLease(s, p); err != nil {
				bad(p.Key, err)
			}
		case strings.HasPrefix(p.Key, s.NodePrefix()):
			nodePairs = append(nodePairs, p)
		case strings.HasPrefix(p.Key, s.ScalePrefix()):
			name, ok := s.ParseScaleKey(p.Key)
			if !ok {
				continue
			}
			var si ScaleIntent
			if err := json.Unmarshal(p.Value, &si); err != nil {
				bad(p.Key, err)
				continue
			}
			t.Scale[name] = si
		}
	}
	reports, broken := s.NodeReports(nodePairs)
	t.Nodes = reports
	for _, err := range broken {
		t.Problems = append(t.Problems, err.Error())
	}
	return t
}

// Check states, worst last.
const (
	CheckPassing  = api.HealthPassing
	CheckWarning  = api.HealthWarning
	CheckCritical = api.HealthCritical
)

// registrationIDPrefix starts the Consul service ID of every task
// registration (see host.RegistrationServiceID).
const registrationIDPrefix = "swarmvlan-"

// WatchTaskChecks calls fn with the health of every task registration in
// the datacenter, by Consul service ID: the worst state of the checks of
// that ID ("passing", "warning" or "critical"). It is one blocking query
// on the datacenter's check states, so its cost does not grow with the
// number of readers of what fn keeps. Consul being away is not an error;
// like WatchPrefix it returns only ctx.Err().
func (s *Store) WatchTaskChecks(ctx context.Context, opts WatchOptions, fn func(map[string]string)) error {
	var checks api.HealthChecks
	return s.blockingLoop(ctx, opts,
		func(q *api.QueryOptions) (uint64, error) {
			q.Filter = `ServiceID != ""`
			c, meta, err := s.client.Health().State(api.HealthAny, q)
			if err != nil {
				return 0, fmt.Errorf("watch checks: %w", s.denied(OpCatalogRead, "check states", err))
			}
			checks = c
			return meta.LastIndex, nil
		},
		func(uint64) bool {
			fn(worstChecks(checks))
			return true
		})
}

// worstChecks is the worst check state per swarmvlan registration ID.
func worstChecks(checks api.HealthChecks) map[string]string {
	rank := map[string]int{CheckPassing: 1, CheckWarning: 2, CheckCritical: 3}
	out := map[string]string{}
	for _, c := range checks {
		if !strings.HasPrefix(c.ServiceID, registrationIDPrefix) {
			continue
		}
		if rank[c.Status] > rank[out[c.ServiceID]] {
			out[c.ServiceID] = c.Status
		}
	}
	return out
}
