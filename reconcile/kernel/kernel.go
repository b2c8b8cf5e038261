// Package kernel is the adapter to the kernel's network state: the only
// code that imports netlink. It reads links, addresses and routes as plain
// values, makes the few changes the host reconciler plans, and relays
// netlink notifications.
package kernel

import "net/netip"

// ReasonNo8021Q is the status reason when the kernel cannot make 802.1Q
// links; it is part of the status contract, so spelled once.
const ReasonNo8021Q = "kernel lacks 802.1Q (vlan) support"

// The kernel's RT_TABLE_MAIN, RT_SCOPE_LINK and RTPROT_KERNEL, spelled here
// so planners build without netlink.
const (
	TableMain   = 254
	ScopeLink   = 253
	ProtoKernel = 2
)

// Observed is the kernel state the planner needs, as plain values.
type Observed struct {
	Links  []Link
	Routes []Route // main table only
	// PromiscSet names the trunks (links the host reconciler does not own)
	// whose promiscuous mode it switched on; only those it may switch off
	// again. The kernel does not know it: the reconciler fills it in.
	PromiscSet map[string]bool
}

// Link is one observed link.
type Link struct {
	Index       int
	Name        string
	Kind        string // "veth", "vlan", "macvlan", …
	Alias       string
	ParentIndex int
	VlanID      int    // Kind "vlan"
	MacvlanMode string // Kind "macvlan": "bridge", "private", …
	IpvlanMode  string // Kind "ipvlan": "l2", "l3", "l3s"
	Up          bool   // administratively up (IFF_UP)
	Promisc     bool   // IFF_PROMISC as set by a user, not the kernel's counter
	MTU         int
	Addrs       []netip.Prefix
}

// Route is one observed route in the main table.
type Route struct {
	LinkIndex int
	Dst       netip.Prefix
	Scope     int
	Protocol  int
	Priority  int
}

// Event is one netlink notification, as plain values.
type Event struct {
	Kind      EventKind
	LinkIndex int
	LinkName  string       // link events
	Alias     string       // link events
	Dst       netip.Prefix // route events
	Table     int          // route events
}

// EventKind says what an Event is about.
type EventKind int

// The kinds of Event.
const (
	EventLink EventKind = iota
	EventAddr
	EventRoute
)
