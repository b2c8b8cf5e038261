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
	installation   = "state/installation"
	leaderName     = "leader"
)

// Status sections that are not document kinds.
const (
	// SectionNodes holds per-node status (host reconciler enactment).
	SectionNodes = "nodes"
)

// SpecPrefix is where users' documents live: <prefix>spec/.
func (s *Store) SpecPrefix() string { return s.prefix + specDir }

// SpecKindPrefix is where one kind's documents live: <prefix>spec/<plural>/.
// kind is read as SpecKey reads it.
func (s *Store) SpecKindPrefix(kind string) string {
	return s.SpecPrefix() + pluralOf(kind) + "/"
}

// SpecKey is the key of one document: <prefix>spec/<plural>/<name>. kind may
// be a kind ("VLAN"), its plural ("vlans") or its lowercase form ("vlan");
// an unknown kind is used as given, and ParseSpecKey rejects such keys.
func (s *Store) SpecKey(kind, name string) string {
	return s.SpecKindPrefix(kind) + name
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

// ParseStatusKey splits a key made by StatusKey into its section and name;
// ok is false for keys outside the status tree or with an empty section or
// name.
func (s *Store) ParseStatusKey(key string) (section, name string, ok bool) {
	rest, found := strings.CutPrefix(key, s.StatusPrefix())
	if !found {
		return "", "", false
	}
	section, name, found = strings.Cut(rest, "/")
	if !found || section == "" || name == "" {
		return "", "", false
	}
	return section, name, true
}

// allocationsPrefix holds one folder of chunks per VLAN:
// <prefix>state/allocations/.
func (s *Store) allocationsPrefix() string { return s.prefix + allocationsDir }

// AllocationPrefix holds one VLAN's per-node chunks:
// <prefix>state/allocations/<vlan>/.
func (s *Store) AllocationPrefix(vlan string) string {
	return s.allocationsPrefix() + vlan + "/"
}

// AllocationKey is the chunk a node holds on a VLAN.
func (s *Store) AllocationKey(vlan, node string) string {
	return s.AllocationPrefix(vlan) + node
}

// ScalePrefix holds the services' scale intents: <prefix>state/scale/.
func (s *Store) ScalePrefix() string { return s.prefix + scaleDir }

// ScaleKey holds a service's autoscaled replica count.
func (s *Store) ScaleKey(service string) string { return s.ScalePrefix() + service }

// ParseScaleKey returns the service whose scale intent key is key; ok is
// false for keys outside ScalePrefix, an empty name or a name holding "/".
func (s *Store) ParseScaleKey(key string) (service string, ok bool) {
	return leafOf(key, s.ScalePrefix())
}

// NodePrefix holds the live host reconcilers: <prefix>state/nodes/.
func (s *Store) NodePrefix() string { return s.prefix + nodesDir }

// NodeKey is a host reconciler's liveness key, bound to its session.
func (s *Store) NodeKey(node string) string { return s.NodePrefix() + node }

// ParseNodeKey returns the node whose liveness key is key; ok is false for
// keys outside NodePrefix, an empty node or one holding "/".
func (s *Store) ParseNodeKey(key string) (node string, ok bool) {
	return leafOf(key, s.NodePrefix())
}

// leafOf is key without prefix when that is one non-empty path segment.
func leafOf(key, prefix string) (string, bool) {
	rest, found := strings.CutPrefix(key, prefix)
	if !found || rest == "" || strings.Contains(rest, "/") {
		return "", false
	}
	return rest, true
}

// InstallationKey holds the installation's ID.
func (s *Store) InstallationKey() string { return s.prefix + installation }

// LeaderKey is the managers' leader lock.
func (s *Store) LeaderKey() string { return s.prefix + leaderName }
