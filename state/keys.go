package state

import (
	"strings"

	"swarmvlan/spec"
)

// Key layout under the prefix (see DESIGN.md's KV table). Spec and status
// are separate trees so a reconciler that watches spec/ is not woken by its
// own status writes.
const (
	specDir        = "spec/"
	statusDir      = "status/"
	allocationsDir = "state/allocations/"
	scaleDir       = "state/scale/"
	nodesDir       = "state/nodes/"
	leaderName     = "leader"
)

// Status sections that are not document kinds.
const (
	// SectionNodes holds per-node status (host reconciler enactment).
	SectionNodes = "nodes"
)

// SpecPrefix is where users' documents live: <prefix>spec/.
func (s *Store) SpecPrefix() string { return s.prefix + specDir }

// SpecKey is the key of one document: <prefix>spec/<plural>/<name>. kind may
// be a kind ("VLAN"), its plural ("vlans") or its lowercase form ("vlan");
// an unknown kind is used as given, and ParseSpecKey rejects such keys.
func (s *Store) SpecKey(kind, name string) string {
	return s.SpecPrefix() + pluralOf(kind) + "/" + name
}

func pluralOf(kind string) string {
	if p := spec.Plural(spec.KindForPlural(kind)); p != "" {
		return p
	}
	return kind
}

// ParseSpecKey splits a key made by SpecKey into its kind ("VLAN") and name.
// ok is false for keys outside the spec tree, with an unknown plural, an
// empty name or a name holding "/".
func (s *Store) ParseSpecKey(key string) (kind, name string, ok bool) {
	rest, found := strings.CutPrefix(key, s.SpecPrefix())
	if !found {
		return "", "", false
	}
	plural, name, found := strings.Cut(rest, "/")
	if !found || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	kind = spec.KindForPlural(plural)
	if kind == "" || spec.Plural(kind) != plural {
		return "", "", false
	}
	return kind, name, true
}

// StatusPrefix is where reconcilers record observed state: <prefix>status/.
func (s *Store) StatusPrefix() string { return s.prefix + statusDir }

// StatusKey is <prefix>status/<section>/<name>; section is a plural such as
// "vlans", "services", "hosts" or "nodes".
func (s *Store) StatusKey(section, name string) string {
	return s.StatusPrefix() + section + "/" + name
}

// AllocationPrefix holds one VLAN's per-node chunks:
// <prefix>state/allocations/<vlan>/.
func (s *Store) AllocationPrefix(vlan string) string {
	return s.prefix + allocationsDir + vlan + "/"
}

// AllocationKey is the chunk a node holds on a VLAN.
func (s *Store) AllocationKey(vlan, node string) string {
	return s.AllocationPrefix(vlan) + node
}

// ScaleKey holds a service's autoscaled replica count.
func (s *Store) ScaleKey(service string) string { return s.prefix + scaleDir + service }

// NodePrefix holds the live host reconcilers: <prefix>state/nodes/.
func (s *Store) NodePrefix() string { return s.prefix + nodesDir }

// NodeKey is a host reconciler's liveness key, bound to its session.
func (s *Store) NodeKey(node string) string { return s.NodePrefix() + node }

// LeaderKey is the managers' leader lock.
func (s *Store) LeaderKey() string { return s.prefix + leaderName }
