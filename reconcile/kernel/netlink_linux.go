package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// New returns the kernel adapter acting through h, a handle from
// netlink.NewHandle(); Subscribe listens in the process's own network
// namespace. h stays the caller's.
func New(h *netlink.Handle) *Netlink {
	return &Netlink{h: h}
}

// Open returns the kernel adapter with a netlink handle of its own in the
// process's network namespace; Close releases it. The handle speaks
// rtnetlink only: the adapter needs nothing else, and a kernel whose XFRM or
// netfilter netlink is a module not loaded (nothing to autoload it) would
// refuse a handle that asks for those too.
func Open() (*Netlink, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return &Netlink{h: h, ownHandle: true}, nil
}

// NewAt returns the kernel adapter for the network namespace ns, with its
// own netlink handle in it and Subscribe listening there. The caller keeps
// ns open while the adapter is used, and calls Close. Like Open's, the
// handle speaks rtnetlink only.
func NewAt(ns netns.NsHandle) (*Netlink, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in namespace %s: %w", ns, err)
	}
	return &Netlink{h: h, ns: &ns, ownHandle: true}, nil
}

// Netlink is the only way the host reconciler reaches the kernel: reads
// observe, writes go through the few methods below, each counted.
type Netlink struct {
	h         *netlink.Handle
	ns        *netns.NsHandle // nil: the process's namespace
	ownHandle bool
	writes    atomic.Int64
}

// dumpRetries bounds the retries of a dump the kernel interrupted
// because the table changed while it was read (NLM_F_DUMP_INTR).
const dumpRetries = 5

// Close releases the handle NewAt opened; a handle given to New stays the caller's.
func (k *Netlink) Close() {
	if k.ownHandle {
		k.h.Close()
	}
}

// WriteCount is the number of netlink writes made so far.
func (k *Netlink) WriteCount() int64 { return k.writes.Load() }

// Observe reads links, addresses and main-table routes. netlink v1.3 returns
// ErrDumpInterrupted together with partial results; a partial view must not
// be planned on (a missing shim would be made twice, a missing address
// would look deleted), so the whole read is repeated.
func (k *Netlink) Observe() (Observed, error) {
	var err error
	for range dumpRetries {
		var have Observed
		have, err = k.observeOnce()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return have, err
		}
	}
	return Observed{}, fmt.Errorf("dump interrupted %d times in a row: %w", dumpRetries, err)
}

func (k *Netlink) observeOnce() (Observed, error) {
	links, err := k.h.LinkList()
	if err != nil {
		return Observed{}, fmt.Errorf("list links: %w", err)
	}
	addrs, err := k.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return Observed{}, fmt.Errorf("list addresses: %w", err)
	}
	// Without RT_FILTER_TABLE only the main table is listed.
	routes, err := k.h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return Observed{}, fmt.Errorf("list routes: %w", err)
	}
	var have Observed
	at := make(map[int]int, len(links))
	for _, l := range links {
		at[l.Attrs().Index] = len(have.Links)
		have.Links = append(have.Links, linkOf(l))
	}
	for _, a := range addrs {
		i, ok := at[a.LinkIndex]
		if !ok || a.IPNet == nil {
			continue
		}
		if p, ok := PrefixOf(a.IPNet); ok {
			have.Links[i].Addrs = append(have.Links[i].Addrs, p)
		}
	}
	for _, r := range routes {
		hr := Route{LinkIndex: r.LinkIndex, Scope: int(r.Scope), Protocol: int(r.Protocol), Priority: r.Priority}
		if r.Dst != nil {
			hr.Dst, _ = PrefixOf(r.Dst)
		}
		have.Routes = append(have.Routes, hr)
	}
	return have, nil
}

func linkOf(l netlink.Link) Link {
	a := l.Attrs()
	hl := Link{
		Index:       a.Index,
		Name:        a.Name,
		Kind:        l.Type(),
		Alias:       a.Alias,
		ParentIndex: a.ParentIndex,
		Up:          a.Flags&net.FlagUp != 0,
		// Attrs().Promisc is the kernel's promiscuity counter, which a
		// macvlan child on a lower device without unicast filtering (veth)
		// raises too; IFF_PROMISC in the link's flags is the switch a user
		// (or this reconciler) set, as `ip link` shows it.
		Promisc: a.RawFlags&unix.IFF_PROMISC != 0,
		MTU:     a.MTU,
	}
	switch l := l.(type) {
	case *netlink.Vlan:
		hl.VlanID = l.VlanId
	case *netlink.Macvlan:
		hl.MacvlanMode = macvlanMode(l.Mode)
	case *netlink.IPVlan:
		hl.IpvlanMode = ipvlanMode(l.Mode)
	}
	return hl
}

func ipvlanMode(m netlink.IPVlanMode) string {
	switch m {
	case netlink.IPVLAN_MODE_L2:
		return "l2"
	case netlink.IPVLAN_MODE_L3:
		return "l3"
	case netlink.IPVLAN_MODE_L3S:
		return "l3s"
	}
	return fmt.Sprintf("mode %d", m)
}

func macvlanMode(m netlink.MacvlanMode) string {
	switch m {
	case netlink.MACVLAN_MODE_PRIVATE:
		return "private"
	case netlink.MACVLAN_MODE_VEPA:
		return "vepa"
	case netlink.MACVLAN_MODE_BRIDGE:
		return "bridge"
	case netlink.MACVLAN_MODE_PASSTHRU:
		return "passthru"
	case netlink.MACVLAN_MODE_SOURCE:
		return "source"
	}
	return fmt.Sprintf("mode %d", m)
}

// PrefixOf is n as a netip.Prefix; false when n holds no valid address.
func PrefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// IPNet is p as the net package spells it.
func IPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// IndexOf finds a link's index by name; found is false when there is none.
func (k *Netlink) IndexOf(name string) (index int, found bool, err error) {
	l, err := k.h.LinkByName(name)
	if notFound(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return l.Attrs().Index, true, nil
}

func notFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

func ref(index int) netlink.Link {
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
}

// VLANRequest is the request for a tagged sub-interface: made up, with
// the MTU when one is wanted. The alias is in the request too, but kernels
// apply IFLA_IFALIAS only to existing links, so addVLAN sets it again.
func VLANRequest(name string, parentIndex, id, mtu int, alias string) *netlink.Vlan {
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.ParentIndex = parentIndex
	la.MTU = mtu
	la.Alias = alias
	la.Flags = net.FlagUp
	return &netlink.Vlan{LinkAttrs: la, VlanId: id, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}
}

// ShimRequest is the request for a shim: a bridge-mode macvlan, up.
func ShimRequest(name string, parentIndex, mtu int, alias string) *netlink.Macvlan {
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.ParentIndex = parentIndex
	la.MTU = mtu
	la.Alias = alias
	la.Flags = net.FlagUp
	return &netlink.Macvlan{LinkAttrs: la, Mode: netlink.MACVLAN_MODE_BRIDGE}
}

// IPvlanShimRequest is the request for the shim of an ipvlan VLAN: an ipvlan
// link in the containers' mode ("l2" or "l3"), up. A lower device's ipvlan
// links all share one mode, and a lower device with ipvlan links takes no
// macvlan ones, so the shim is an ipvlan sibling of the containers'.
func IPvlanShimRequest(name string, parentIndex, mtu int, mode, alias string) (*netlink.IPVlan, error) {
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.ParentIndex = parentIndex
	la.MTU = mtu
	la.Alias = alias
	la.Flags = net.FlagUp
	l := &netlink.IPVlan{LinkAttrs: la}
	switch mode {
	case "l2":
		l.Mode = netlink.IPVLAN_MODE_L2
	case "l3":
		l.Mode = netlink.IPVLAN_MODE_L3
	default:
		return nil, fmt.Errorf("ipvlan mode %q is not l2 or l3", mode)
	}
	return l, nil
}

// ErrNo8021Q is returned when the kernel has no 802.1Q link type.
var ErrNo8021Q = errors.New(ReasonNo8021Q)

// addLink creates l and marks it. EEXIST is a state: someone made the name
// since it was observed, and the next observation judges that link.
func (k *Netlink) addLink(l netlink.Link) error {
	k.writes.Add(1)
	err := k.h.LinkAdd(l)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return err
	}
	k.writes.Add(1)
	if err := k.h.LinkSetAlias(l, l.Attrs().Alias); err != nil {
		// Unmarked, the link would look foreign for ever; take it back.
		k.writes.Add(1)
		if derr := k.h.LinkDel(l); derr != nil && !notFound(derr) {
			return errors.Join(fmt.Errorf("set alias: %w", err), fmt.Errorf("delete unmarked link: %w", derr))
		}
		return fmt.Errorf("set alias: %w", err)
	}
	return nil
}

// AddVLAN creates the tagged sub-interface name on the parent, marked with alias; ErrNo8021Q when the kernel lacks 802.1Q.
func (k *Netlink) AddVLAN(name string, parentIndex, id, mtu int, alias string) error {
	err := k.addLink(VLANRequest(name, parentIndex, id, mtu, alias))
	// A kernel without the 8021q module answers EOPNOTSUPP ("Unknown device
	// type"); some paths report ENOTSUP, the same errno on Linux.
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) {
		return fmt.Errorf("%w: %w", ErrNo8021Q, err)
	}
	return err
}

// AddShim creates a bridge-mode macvlan shim on the parent, marked with alias.
func (k *Netlink) AddShim(name string, parentIndex, mtu int, alias string) error {
	return k.addLink(ShimRequest(name, parentIndex, mtu, alias))
}

// AddIPvlanShim creates an ipvlan shim in mode ("l2" or "l3") on the parent, marked with alias.
func (k *Netlink) AddIPvlanShim(name string, parentIndex, mtu int, mode, alias string) error {
	l, err := IPvlanShimRequest(name, parentIndex, mtu, mode, alias)
	if err != nil {
		return err
	}
	return k.addLink(l)
}

// Del deletes a link; one already gone is no error.
func (k *Netlink) Del(index int) error {
	k.writes.Add(1)
	err := k.h.LinkDel(ref(index))
	if notFound(err) {
		return nil
	}
	return err
}

// SetAlias sets a link's alias.
func (k *Netlink) SetAlias(index int, alias string) error {
	k.writes.Add(1)
	return k.h.LinkSetAlias(ref(index), alias)
}

// SetUp brings a link administratively up.
func (k *Netlink) SetUp(index int) error {
	k.writes.Add(1)
	return k.h.LinkSetUp(ref(index))
}

// SetMTU sets a link's MTU.
func (k *Netlink) SetMTU(index, mtu int) error {
	k.writes.Add(1)
	return k.h.LinkSetMTU(ref(index), mtu)
}

// SetPromisc switches a link's promiscuous mode.
func (k *Netlink) SetPromisc(index int, on bool) error {
	k.writes.Add(1)
	if on {
		return k.h.SetPromiscOn(ref(index))
	}
	return k.h.SetPromiscOff(ref(index))
}

// AddAddr adds an address; one already there is no error.
func (k *Netlink) AddAddr(index int, p netip.Prefix) error {
	k.writes.Add(1)
	err := k.h.AddrAdd(ref(index), &netlink.Addr{IPNet: IPNet(p)})
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// DelAddr removes an address; one already gone is no error.
func (k *Netlink) DelAddr(index int, p netip.Prefix) error {
	k.writes.Add(1)
	err := k.h.AddrDel(ref(index), &netlink.Addr{IPNet: IPNet(p)})
	if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// ShimRouteRequest is the route to a chunk through its shim: scope link in
// the main table, like `ip route add <chunk> dev <shim>`.
func ShimRouteRequest(index int, dst netip.Prefix) *netlink.Route {
	return &netlink.Route{LinkIndex: index, Dst: IPNet(dst), Scope: netlink.SCOPE_LINK, Table: unix.RT_TABLE_MAIN}
}

// AddRoute adds the scope-link route to dst through the link; one already there is no error.
func (k *Netlink) AddRoute(index int, dst netip.Prefix) error {
	k.writes.Add(1)
	err := k.h.RouteAdd(ShimRouteRequest(index, dst))
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// DelRoute removes a main-table route; one already gone is no error.
func (k *Netlink) DelRoute(index int, dst netip.Prefix, scope, proto, metric int) error {
	k.writes.Add(1)
	r := &netlink.Route{LinkIndex: index, Dst: IPNet(dst), Scope: netlink.Scope(scope),
		Protocol: netlink.RouteProtocol(proto), Priority: metric, Table: unix.RT_TABLE_MAIN}
	err := k.h.RouteDel(r)
	if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// RcvBuf is the subscription sockets' receive buffer: room for a
// burst (a dockerd start, a trunk flap) before the kernel drops
// notifications with ENOBUFS.
const RcvBuf = 1 << 20

// Subscribe starts link, address and route subscriptions in the reconciler's
// namespace. Every notification goes to ev; every error, and the end of a
// subscription (the library ends one on ENOBUFS or any receive error), goes
// to lost, as notifications may be missing from then on. Closing done ends
// all three; wg is done once their goroutines have returned.
func (k *Netlink) Subscribe(done <-chan struct{}, wg *sync.WaitGroup, rcvbuf int, force bool, ev func(Event), lost func(error)) error {
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{
		Namespace: k.ns, ErrorCallback: lost, ReceiveBufferSize: rcvbuf, ReceiveBufferForceSize: force,
	}); err != nil {
		return fmt.Errorf("subscribe to links: %w", err)
	}
	drain(wg, links, lost, func(u netlink.LinkUpdate) {
		a := u.Link.Attrs()
		ev(Event{Kind: EventLink, LinkIndex: a.Index, LinkName: a.Name, Alias: a.Alias})
	})
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{
		Namespace: k.ns, ErrorCallback: lost, ReceiveBufferSize: rcvbuf, ReceiveBufferForceSize: force,
	}); err != nil {
		return fmt.Errorf("subscribe to addresses: %w", err)
	}
	drain(wg, addrs, lost, func(u netlink.AddrUpdate) {
		ev(Event{Kind: EventAddr, LinkIndex: u.LinkIndex})
	})
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{
		Namespace: k.ns, ErrorCallback: lost, ReceiveBufferSize: rcvbuf, ReceiveBufferForceSize: force,
	}); err != nil {
		return fmt.Errorf("subscribe to routes: %w", err)
	}
	drain(wg, routes, lost, func(u netlink.RouteUpdate) {
		e := Event{Kind: EventRoute, LinkIndex: u.LinkIndex, Table: u.Table}
		if u.Dst != nil {
			e.Dst, _ = PrefixOf(u.Dst)
		}
		ev(e)
	})
	return nil
}

// errSubscriptionEnded is reported to lost when the library closes a
// subscription's channel.
var errSubscriptionEnded = errors.New("netlink subscription ended")

// drain reads ch until the library closes it, which it does once done is
// closed or the socket failed, so the library's sender never blocks.
func drain[T any](wg *sync.WaitGroup, ch <-chan T, lost func(error), f func(T)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for u := range ch {
			f(u)
		}
		lost(errSubscriptionEnded)
	}()
}
