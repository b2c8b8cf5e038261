package state

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// NodeRegistration keeps a host reconciler's liveness key,
// state/nodes/<node>, held by the process's session: the key vanishes when
// the process dies (its session expires) and is put back while the process
// lives, whatever happened to the session.
type NodeRegistration struct {
	store *Store
	sess  *session
	node  string
	key   string

	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	value []byte
	id    string
}

// RegisterNode acquires NodeKey(nodeID) with value and keeps it: it blocks
// until the key is held (while a previous instance's session still holds
// it, until that expires) or ctx is done. ttl is the session TTL (0: the
// store's default); with the default the leader lock shares the session.
func (s *Store) RegisterNode(ctx context.Context, nodeID string, value []byte, ttl time.Duration) (*NodeRegistration, error) {
	if nodeID == "" || strings.Contains(nodeID, "/") {
		return nil, fmt.Errorf("node %q: register: invalid node ID", nodeID)
	}
	m := s.acquireSession(ttl, 0)
	r := &NodeRegistration{
		store: s,
		sess:  m,
		node:  nodeID,
		key:   s.NodeKey(nodeID),
		value: append([]byte(nil), value...),
		done:  make(chan struct{}),
	}
	id, lost, err := s.acquireKey(ctx, m, r.key, r.currentValue)
	if err != nil {
		m.release()
		return nil, fmt.Errorf("node %q: register: %w", nodeID, err)
	}
	r.setID(id)
	mctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.maintain(mctx, id, lost)
	if ctx.Err() != nil {
		// Acquired just as ctx ended: give the key back.
		_ = r.Close()
		return nil, fmt.Errorf("node %q: register: %w", nodeID, ctx.Err())
	}
	return r, nil
}

func (r *NodeRegistration) currentValue() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.value
}

func (r *NodeRegistration) setID(id string) {
	r.mu.Lock()
	r.id = id
	r.mu.Unlock()
}

// Session is the id of the session holding the key ("" while it is being
// registered again).
func (r *NodeRegistration) Session() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.id
}

// maintain watches the key and puts it back whenever it is lost: its session
// was invalidated (the key was then deleted by Consul) or the key was
// deleted or taken by hand.
func (r *NodeRegistration) maintain(ctx context.Context, id string, lost <-chan struct{}) {
	defer close(r.done)
	for {
		wctx, stop := context.WithCancel(ctx)
		go func(lost <-chan struct{}) {
			select {
			case <-lost:
				stop()
			case <-wctx.Done():
			}
		}(lost)
		_ = r.store.watchKey(wctx, r.key, WatchOptions{}, func(pair *api.KVPair, _ uint64) {
			if pair == nil || pair.Session != id {
				stop()
				return
			}
			if v := r.currentValue(); !bytes.Equal(pair.Value, v) {
				// Held, but not what was last written: a snapshot restore
				// put an older value back. Written again (the next
				// answer shows whether it took).
				octx, cancel := context.WithTimeout(wctx, opTimeout)
				_, _, _ = r.store.client.KV().Acquire(&api.KVPair{Key: r.key, Value: v, Session: id}, (&api.WriteOptions{}).WithContext(octx))
				cancel()
			}
		})
		stop()
		if ctx.Err() != nil {
			return
		}
		r.setID("")
		var err error
		id, lost, err = r.store.acquireKey(ctx, r.sess, r.key, r.currentValue)
		if err != nil {
			return
		}
		r.setID(id)
	}
}

// Update replaces the key's value. The value is kept for re-registrations
// even when the write fails.
func (r *NodeRegistration) Update(ctx context.Context, value []byte) error {
	r.mu.Lock()
	r.value = append([]byte(nil), value...)
	id := r.id
	r.mu.Unlock()
	if id == "" {
		return fmt.Errorf("node %q: update: not registered right now; the value is written on re-registration", r.node)
	}
	ok, _, err := r.store.client.KV().Acquire(&api.KVPair{Key: r.key, Value: value, Session: id}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("node %q: update: %w", r.node, r.store.denied(OpKVWrite, r.key, err))
	}
	if !ok {
		return fmt.Errorf("node %q: update: key not held by session %s; the value is written on re-registration", r.node, id)
	}
	return nil
}

// Close stops keeping the key, deletes it if this registration still holds
// it, and lets go of the session (destroyed if nothing else uses it).
func (r *NodeRegistration) Close() error {
	r.cancel()
	<-r.done
	defer r.sess.release()
	id := r.Session()
	if id == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	// Delete only while held by this session, so a key another process
	// registered under the same node ID is left alone.
	ops := api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVCheckSession, Key: r.key, Session: id}},
		{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: r.key}},
	}
	if _, _, _, err := r.store.client.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("node %q: deregister: %w", r.node, err)
	}
	return nil
}

// LiveNodes returns the registered nodes' values by node ID: the keys under
// NodePrefix() that a session holds.
func (s *Store) LiveNodes(ctx context.Context) (map[string][]byte, error) {
	prefix := s.NodePrefix()
	pairs, meta, err := s.client.KV().List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err := s.listed(prefix, meta, err); err != nil {
		return nil, fmt.Errorf("nodes: list %s: %w", prefix, err)
	}
	out := make(map[string][]byte, len(pairs))
	for _, p := range pairs {
		node, ok := s.ParseNodeKey(p.Key)
		if p.Session == "" || !ok {
			continue
		}
		out[node] = p.Value
	}
	return out, nil
}

// NodeReport is the value of state/nodes/<node>: what a host role reports
// about its node, written through its NodeRegistration and read back by the
// leader to label ready nodes. The JSON is the wire format; stored values
// written before this type existed decode into it unchanged.
type NodeReport struct {
	// Hostname is the node's host name.
	Hostname string `json:"hostname"`
	// VLANs is the node's readiness per VLAN, by VLAN name.
	VLANs map[string]NodeVLANReport `json:"vlans"`
	// Updated is when the value was written.
	Updated time.Time `json:"updated"`
	// ConfigNetworks are the node's --config-only networks with a parent
	// interface (macvlan or ipvlan) that swarmvlan did not make: what
	// `reconciler adopt` reads, from any manager, of every node's
	// hand-made setup. The leader's Engine shows only its own node's.
	ConfigNetworks []NodeConfigNetwork `json:"configNetworks,omitempty"`
	// Shims are the macvlan links on those networks' parents that
	// swarmvlan did not make: hand-made shims adopt can take over.
	Shims []NodeShim `json:"shims,omitempty"`
}

// NodeConfigNetwork is one config-only network as its node's Engine
// reports it.
type NodeConfigNetwork struct {
	ID      string            `json:"id"`
	Name    string            `json:"name"`
	Parent  string            `json:"parent"`
	Options map[string]string `json:"options,omitempty"`
	// Subnet, IPRange and Gateway are the network's one address pool;
	// Pools counts the pools (adopt takes over only one).
	Subnet  string            `json:"subnet,omitempty"`
	IPRange string            `json:"ipRange,omitempty"`
	Gateway string            `json:"gateway,omitempty"`
	Aux     map[string]string `json:"aux,omitempty"`
	Pools   int               `json:"pools"`
}

// NodeVLANReport is one VLAN's readiness on a node.
type NodeVLANReport struct {
	// Ready is set once the node's links and config-only network for the
	// VLAN are in place.
	Ready bool `json:"ready"`
	// Reason says why the VLAN is not ready.
	Reason string `json:"reason,omitempty"`
	// Chunk is the node's chunk of the VLAN, empty before it has one.
	Chunk string `json:"chunk,omitempty"`
}

// NodeReports decodes the live node reports among pairs (as a watch of
// NodePrefix delivers them), by node ID. Keys no session holds are not live
// and are left out, as are keys that are not a node's; values that do not
// decode are returned in bad, by node ID, so one broken report does not
// hide the others.
func (s *Store) NodeReports(pairs api.KVPairs) (reports map[string]NodeReport, bad map[string]error) {
	reports = make(map[string]NodeReport, len(pairs))
	for _, p := range pairs {
		node, ok := s.ParseNodeKey(p.Key)
		if p.Session == "" || !ok {
			continue
		}
		var r NodeReport
		if err := json.Unmarshal(p.Value, &r); err != nil {
			if bad == nil {
				bad = make(map[string]error)
			}
			bad[node] = fmt.Errorf("node %q: report: decode: %w", node, err)
			continue
		}
		reports[node] = r
	}
	return reports, bad
}
