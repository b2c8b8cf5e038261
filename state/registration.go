package state

// Meta keys every service registration the host role makes with its local
// Consul agent carries; the leader reads them back from the catalog. A
// registration without MetaTask is not swarmvlan's and is never changed or
// removed.
const (
	// MetaTask is the swarm task ID; its presence marks the
	// registration as swarmvlan's.
	MetaTask = "swarmvlan-task"
	// MetaService is the Service document's name.
	MetaService = "swarmvlan-service"
	// MetaSlot is the task's replica slot (replicated services
	// only; a global service's tasks have none).
	MetaSlot = "swarmvlan-slot"
	// MetaNode is the swarm node ID of the host whose host role
	// made the registration.
	MetaNode = "swarmvlan-node"
	// MetaVLAN is the VLAN whose address is registered.
	MetaVLAN = "swarmvlan-vlan"
	// MetaHost is the host's name, for operators reading the
	// catalog.
	MetaHost = "swarmvlan-host"
	// MetaCheck is a fingerprint of the health check definition.
	// The agent's service listing does not include checks, so the
	// fingerprint is how a changed check is told from an unchanged one
	// without reading every check back.
	MetaCheck = "swarmvlan-check"
)
