package spec

// Labels every Docker object swarmvlan creates carries. Objects without
// LabelManaged=true are never changed or removed.
const (
	LabelManaged = "io.swarmvlan.managed"
	// LabelOwner names the installation (its ID in Consul KV) that made a
	// service; the leader removes only services of its own installation, so
	// a reconciler pointed at another or an empty Consul never sweeps away a
	// swarm's services.
	LabelOwner    = "io.swarmvlan.owner"
	LabelKind     = "io.swarmvlan.kind"
	LabelName     = "io.swarmvlan.name"
	LabelSpecHash = "io.swarmvlan.spec-hash"
	// LabelDriver records the driver a config-only network was made for:
	// Docker stores config-only networks with the "null" driver, so the
	// driver cannot be read back from the network itself.
	LabelDriver = "io.swarmvlan.driver"
	// LabelIPAM records the address configuration a config-only network
	// was made with (subnet, ip-range, gateway, aux addresses): Engine 29
	// reports a config-only network's IPAM as null although it is in force,
	// so what can be read back on every Engine is the label.
	LabelIPAM = "io.swarmvlan.ipam"
	// LabelIPAMDriver records the IPAM driver of a cluster-mode VLAN's
	// config-only network (absent: Docker's default), for the same reason.
	LabelIPAMDriver = "io.swarmvlan.ipam-driver"
)

// NodeLabelPrefix starts the node label the leader sets to NodeLabelReady on
// nodes where a VLAN is ready (io.swarmvlan.vlan.<vlan>=ready); every
// service on a VLAN carries a placement constraint on it, so Swarm never
// schedules a task on a node that lacks the VLAN's config network (moby
// #33437).
const NodeLabelPrefix = "io.swarmvlan.vlan."

// NodeLabelReady is the value of a readiness label.
const NodeLabelReady = "ready"

// NodeReadyConstraint is the placement constraint that keeps a service's
// tasks on nodes where vlan is ready.
func NodeReadyConstraint(vlan string) string {
	return "node.labels." + NodeLabelPrefix + vlan + "==" + NodeLabelReady
}

// OwnerLabels are the ownership labels of the Docker objects made for a
// document.
func OwnerLabels(kind, name string) map[string]string {
	return map[string]string{
		LabelManaged: "true",
		LabelKind:    kind,
		LabelName:    name,
	}
}

// Managed reports whether labels mark a Docker object as swarmvlan's.
func Managed(labels map[string]string) bool {
	return labels[LabelManaged] == "true"
}
