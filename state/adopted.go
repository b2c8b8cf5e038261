package state

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/consul/api"
)

// adoptedDir holds the Docker objects taken over from a hand-made setup by
// `reconciler adopt`, by Docker ID. Docker cannot label a network after it
// is made, so these records are what marks such a network (and a service
// until its labels are set) as swarmvlan's.
const adoptedDir = "state/adopted/"

// Kinds of adopted objects, the key segment after state/adopted/.
const (
	AdoptedNetworks = "networks"
	AdoptedServices = "services"
	AdoptedShims    = "shims"
)

// Roles of an adopted network.
const (
	AdoptedConfigNetwork = "config"
	AdoptedSwarmNetwork  = "swarm"
)

// AdoptedNetwork records one network taken over as it is: a node's
// --config-only network or the swarm network made from them.
type AdoptedNetwork struct {
	// ID is the Docker network ID (also the key's last segment).
	ID string `json:"id"`
	// Name is the network's Docker name.
	Name string `json:"name"`
	// VLAN is the VLAN document that describes it.
	VLAN string `json:"vlan"`
	// Role is AdoptedConfigNetwork or AdoptedSwarmNetwork.
	Role string `json:"role"`
	// Node is the swarm node ID of a config network ("" for the swarm one).
	Node string `json:"node,omitempty"`
	// Hostname is that node's hostname.
	Hostname string `json:"hostname,omitempty"`
}

// AdoptedService records one service taken over as it is.
type AdoptedService struct {
	// ID is the Swarm service ID (also the key's last segment).
	ID string `json:"id"`
	// Name is the service's Swarm name.
	Name string `json:"name"`
	// Service is the Service document that describes it.
	Service string `json:"service"`
	// SpecHash is the document's spec.AdoptionHash when it was written at
	// adoption: while the document hashes the same, the leader leaves the
	// service's TaskTemplate as it was made (see reconcile/cluster).
	SpecHash string `json:"specHash"`
}

// AdoptedShim records a node's hand-made shim taken over for a VLAN: the
// host role keeps the link, its address and its route to the node's chunk
// rather than making a shim of its own.
type AdoptedShim struct {
	// VLAN is the VLAN document the shim serves.
	VLAN string `json:"vlan"`
	// Node is the swarm node ID; Hostname its hostname.
	Node     string `json:"node"`
	Hostname string `json:"hostname,omitempty"`
	// Name is the shim's link name on the node.
	Name string `json:"name"`
	// Addr is the shim's address, kept as the host's address on the VLAN.
	Addr string `json:"addr"`
}

// AdoptedShimID is the key segment of a shim record: "<vlan>.<node ID>"
// (a VLAN name is a DNS label, without dots).
func AdoptedShimID(vlan, node string) string { return vlan + "." + node }

// NodeShim is a macvlan link on the parent of a hand-made config network
// that swarmvlan did not make, as its node's host role reports it: what
// `reconciler adopt` reads to take a hand-made shim over.
type NodeShim struct {
	Name   string `json:"name"`
	Parent string `json:"parent"`
	// Mode is the macvlan mode ("bridge" for a shim).
	Mode string `json:"mode"`
	// Addrs are its addresses (without the kernel's link-local ones);
	// Routes the main-table destinations routed through it (without the
	// kernel's own), both as prefixes.
	Addrs  []string `json:"addrs,omitempty"`
	Routes []string `json:"routes,omitempty"`
}

// AdoptedPrefix holds every adoption record: <prefix>state/adopted/.
func (s *Store) AdoptedPrefix() string { return s.prefix + adoptedDir }

// AdoptedKey is the record of one adopted object:
// <prefix>state/adopted/<kind>/<id>.
func (s *Store) AdoptedKey(kind, id string) string {
	return s.prefix + adoptedDir + kind + "/" + id
}

// PutAdopted writes the records of adopted objects in transactions of at
// most MaxTxnOps operations.
func (s *Store) PutAdopted(ctx context.Context, nets []AdoptedNetwork, svcs []AdoptedService, shims []AdoptedShim) error {
	var ops api.TxnOps
	add := func(key string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("key %q: encode: %w", key, err)
		}
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: key, Value: b}})
		return nil
	}
	for _, n := range nets {
		if err := add(s.AdoptedKey(AdoptedNetworks, n.ID), n); err != nil {
			return err
		}
	}
	for _, sv := range svcs {
		if err := add(s.AdoptedKey(AdoptedServices, sv.ID), sv); err != nil {
			return err
		}
	}
	for _, sh := range shims {
		if err := add(s.AdoptedKey(AdoptedShims, AdoptedShimID(sh.VLAN, sh.Node)), sh); err != nil {
			return err
		}
	}
	for _, chunk := range TxnChunks(ops, MaxTxnOps) {
		ok, resp, _, err := s.client.Txn().Txn(chunk, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("adopted: write: %w", s.denied(OpKVWrite, s.prefix+adoptedDir, err))
		}
		if !ok {
			return fmt.Errorf("adopted: write refused: %v", resp.Errors)
		}
	}
	return nil
}

// AdoptedNetworksList returns the adopted networks by Docker ID.
func (s *Store) AdoptedNetworksList(ctx context.Context) (map[string]AdoptedNetwork, error) {
	out := map[string]AdoptedNetwork{}
	err := s.listAdopted(ctx, AdoptedNetworks, func(b []byte) (string, error) {
		var n AdoptedNetwork
		err := json.Unmarshal(b, &n)
		out[n.ID] = n
		return n.ID, err
	})
	return out, err
}

// AdoptedServicesList returns the adopted services by Swarm service ID.
func (s *Store) AdoptedServicesList(ctx context.Context) (map[string]AdoptedService, error) {
	out := map[string]AdoptedService{}
	err := s.listAdopted(ctx, AdoptedServices, func(b []byte) (string, error) {
		var sv AdoptedService
		err := json.Unmarshal(b, &sv)
		out[sv.ID] = sv
		return sv.ID, err
	})
	return out, err
}

// AdoptedShimsList returns the adopted shims by AdoptedShimID.
func (s *Store) AdoptedShimsList(ctx context.Context) (map[string]AdoptedShim, error) {
	out := map[string]AdoptedShim{}
	err := s.listAdopted(ctx, AdoptedShims, func(b []byte) (string, error) {
		var sh AdoptedShim
		err := json.Unmarshal(b, &sh)
		id := AdoptedShimID(sh.VLAN, sh.Node)
		out[id] = sh
		return id, err
	})
	return out, err
}

func (s *Store) listAdopted(ctx context.Context, kind string, decode func([]byte) (string, error)) error {
	prefix := s.prefix + adoptedDir + kind + "/"
	pairs, meta, err := s.client.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err := s.listed(prefix, meta, err); err != nil {
		return fmt.Errorf("adopted %s: list: %w", kind, err)
	}
	for _, p := range pairs {
		id, ok := leafOf(p.Key, prefix)
		if !ok {
			continue
		}
		got, err := decode(p.Value)
		if err != nil || got != id {
			return fmt.Errorf("adopted %s: %s: record does not decode or names another ID", kind, p.Key)
		}
	}
	return nil
}
