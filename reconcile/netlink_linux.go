package reconcile

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

// NewHostNet returns a host network reconciler that acts through h, a handle
// from netlink.NewHandle(). Watch subscribes in the process's own network
// namespace; for another namespace use NewHostNetAt.
func NewHostNet(h *netlink.Handle) *HostNet {
	return newHostNet(&netlinkKernel{h: h})
}

// NewHostNetAt returns a host network reconciler for the network namespace
// ns, with its own netlink handle in it and Watch subscribing there. The
// caller keeps ns open while the reconciler is used, and calls Close.
func NewHostNetAt(ns netns.NsHandle) (*HostNet, error) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("host network: netlink handle in namespace %s: %w", ns, err)
	}
	return newHostNet(&netlinkKernel{h: h, ns: &ns, ownHandle: true}), nil
}

// netlinkKernel is the only way the host reconciler reaches the kernel: reads
// observe, writes go through the few methods below, each counted.
type netlinkKernel struct {
	h         *netlink.Handle
	ns        *netns.NsHandle // nil: the process's namespace
	ownHandle bool
	writes    atomic.Int64
}

// netlinkDumpRetries bounds the retries of a dump the kernel interrupted
// because the table changed while it was read (NLM_F_DUMP_INTR).
const netlinkDumpRetries = 5

func (k *netlinkKernel) close() {
	if k.ownHandle {
		k.h.Close()
	}
}

func (k *netlinkKernel) writeCount() int64 { return k.writes.Load() }

// observe reads links, addresses and main-table routes. netlink v1.3 returns
// ErrDumpInterrupted together with partial results; a partial view must not
// be planned on (a missing shim would be made twice, a missing address
// would look deleted), so the whole read is repeated.
func (k *netlinkKernel) observe() (hostObserved, error) {
	var err error
	for range netlinkDumpRetries {
		var have hostObserved
		have, err = k.observeOnce()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return have, err
		}
	}
	return hostObserved{}, fmt.Errorf("dump interrupted %d times in a row: %w", netlinkDumpRetries, err)
}

func (k *netlinkKernel) observeOnce() (hostObserved, error) {
	links, err := k.h.LinkList()
	if err != nil {
		return hostObserved{}, fmt.Errorf("list links: %w", err)
	}
	addrs, err := k.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return hostObserved{}, fmt.Errorf("list addresses: %w", err)
	}
	// Without RT_FILTER_TABLE only the main table is listed.
	routes, err := k.h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return hostObserved{}, fmt.Errorf("list routes: %w", err)
	}
	var have hostObserved
	at := make(map[int]int, len(links))
	for _, l := range links {
		at[l.Attrs().Index] = len(have.Links)
		have.Links = append(have.Links, netlinkHostLink(l))
	}
	for _, a := range addrs {
		i, ok := at[a.LinkIndex]
		if !ok || a.IPNet == nil {
			continue
		}
		if p, ok := netlinkPrefix(a.IPNet); ok {
			have.Links[i].Addrs = append(have.Links[i].Addrs, p)
		}
	}
	for _, r := range routes {
		hr := hostRoute{LinkIndex: r.LinkIndex, Scope: int(r.Scope), Protocol: int(r.Protocol), Priority: r.Priority}
		if r.Dst != nil {
			hr.Dst, _ = netlinkPrefix(r.Dst)
		}
		have.Routes = append(have.Routes, hr)
	}
	return have, nil
}

func netlinkHostLink(l netlink.Link) hostLink {
	a := l.Attrs()
	hl := hostLink{
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
		hl.MacvlanMode = netlinkMacvlanMode(l.Mode)
	}
	return hl
}

func netlinkMacvlanMode(m netlink.MacvlanMode) string {
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

func netlinkPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func netlinkIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// indexOf finds a link's index by name; found is false when there is none.
func (k *netlinkKernel) indexOf(name string) (index int, found bool, err error) {
	l, err := k.h.LinkByName(name)
	if netlinkNotFound(err) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return l.Attrs().Index, true, nil
}

func netlinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

func netlinkRef(index int) netlink.Link {
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}
}

// netlinkVlanLink is the request for a tagged sub-interface: made up, with
// the MTU when one is wanted. The alias is in the request too, but kernels
// apply IFLA_IFALIAS only to existing links, so addVLAN sets it again.
func netlinkVlanLink(name string, parentIndex, id, mtu int, alias string) *netlink.Vlan {
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.ParentIndex = parentIndex
	la.MTU = mtu
	la.Alias = alias
	la.Flags = net.FlagUp
	return &netlink.Vlan{LinkAttrs: la, VlanId: id, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}
}

// netlinkShimLink is the request for a shim: a bridge-mode macvlan, up.
func netlinkShimLink(name string, parentIndex, mtu int, alias string) *netlink.Macvlan {
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.ParentIndex = parentIndex
	la.MTU = mtu
	la.Alias = alias
	la.Flags = net.FlagUp
	return &netlink.Macvlan{LinkAttrs: la, Mode: netlink.MACVLAN_MODE_BRIDGE}
}

// hostErrNo8021Q is returned when the kernel has no 802.1Q link type.
var hostErrNo8021Q = errors.New(hostReasonNo8021Q)

// addLink creates l and marks it. EEXIST is a state: someone made the name
// since it was observed, and the next observation judges that link.
func (k *netlinkKernel) addLink(l netlink.Link) error {
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
		if derr := k.h.LinkDel(l); derr != nil && !netlinkNotFound(derr) {
			return errors.Join(fmt.Errorf("set alias: %w", err), fmt.Errorf("delete unmarked link: %w", derr))
		}
		return fmt.Errorf("set alias: %w", err)
	}
	return nil
}

func (k *netlinkKernel) addVLAN(name string, parentIndex, id, mtu int, alias string) error {
	err := k.addLink(netlinkVlanLink(name, parentIndex, id, mtu, alias))
	// A kernel without the 8021q module answers EOPNOTSUPP ("Unknown device
	// type"); some paths report ENOTSUP, the same errno on Linux.
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) {
		return fmt.Errorf("%w: %w", hostErrNo8021Q, err)
	}
	return err
}

func (k *netlinkKernel) addShim(name string, parentIndex, mtu int, alias string) error {
	return k.addLink(netlinkShimLink(name, parentIndex, mtu, alias))
}

func (k *netlinkKernel) del(index int) error {
	k.writes.Add(1)
	err := k.h.LinkDel(netlinkRef(index))
	if netlinkNotFound(err) {
		return nil
	}
	return err
}

func (k *netlinkKernel) setAlias(index int, alias string) error {
	k.writes.Add(1)
	return k.h.LinkSetAlias(netlinkRef(index), alias)
}

func (k *netlinkKernel) setUp(index int) error {
	k.writes.Add(1)
	return k.h.LinkSetUp(netlinkRef(index))
}

func (k *netlinkKernel) setMTU(index, mtu int) error {
	k.writes.Add(1)
	return k.h.LinkSetMTU(netlinkRef(index), mtu)
}

func (k *netlinkKernel) setPromisc(index int, on bool) error {
	k.writes.Add(1)
	if on {
		return k.h.SetPromiscOn(netlinkRef(index))
	}
	return k.h.SetPromiscOff(netlinkRef(index))
}

func (k *netlinkKernel) addAddr(index int, p netip.Prefix) error {
	k.writes.Add(1)
	err := k.h.AddrAdd(netlinkRef(index), &netlink.Addr{IPNet: netlinkIPNet(p)})
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

func (k *netlinkKernel) delAddr(index int, p netip.Prefix) error {
	k.writes.Add(1)
	err := k.h.AddrDel(netlinkRef(index), &netlink.Addr{IPNet: netlinkIPNet(p)})
	if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// netlinkShimRoute is the route to a chunk through its shim: scope link in
// the main table, like `ip route add <chunk> dev <shim>`.
func netlinkShimRoute(index int, dst netip.Prefix) *netlink.Route {
	return &netlink.Route{LinkIndex: index, Dst: netlinkIPNet(dst), Scope: netlink.SCOPE_LINK, Table: unix.RT_TABLE_MAIN}
}

func (k *netlinkKernel) addRoute(index int, dst netip.Prefix) error {
	k.writes.Add(1)
	err := k.h.RouteAdd(netlinkShimRoute(index, dst))
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

func (k *netlinkKernel) delRoute(index int, dst netip.Prefix, scope, proto, metric int) error {
	k.writes.Add(1)
	r := &netlink.Route{LinkIndex: index, Dst: netlinkIPNet(dst), Scope: netlink.Scope(scope),
		Protocol: netlink.RouteProtocol(proto), Priority: metric, Table: unix.RT_TABLE_MAIN}
	err := k.h.RouteDel(r)
	if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// netlinkRcvBuf is the subscription sockets' receive buffer: room for a
// burst (a dockerd start, a trunk flap) before the kernel drops
// notifications with ENOBUFS.
const netlinkRcvBuf = 1 << 20

// subscribe starts link, address and route subscriptions in the reconciler's
// namespace. Every notification goes to ev; every error, and the end of a
// subscription (the library ends one on ENOBUFS or any receive error), goes
// to lost, as notifications may be missing from then on. Closing done ends
// all three; wg is done once their goroutines have returned.
func (k *netlinkKernel) subscribe(done <-chan struct{}, wg *sync.WaitGroup, rcvbuf int, force bool, ev func(hostEvent), lost func(error)) error {
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{
		Namespace: k.ns, ErrorCallback: lost, ReceiveBufferSize: rcvbuf, ReceiveBufferForceSize: force,
	}); err != nil {
		return fmt.Errorf("subscribe to links: %w", err)
	}
	netlinkDrain(wg, links, lost, func(u netlink.LinkUpdate) {
		a := u.Link.Attrs()
		ev(hostEvent{Kind: hostEventLink, LinkIndex: a.Index, LinkName: a.Name, Alias: a.Alias})
	})
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{
		Namespace: k.ns, ErrorCallback: lost, ReceiveBufferSize: rcvbuf, ReceiveBufferForceSize: force,
	}); err != nil {
		return fmt.Errorf("subscribe to addresses: %w", err)
	}
	netlinkDrain(wg, addrs, lost, func(u netlink.AddrUpdate) {
		ev(hostEvent{Kind: hostEventAddr, LinkIndex: u.LinkIndex})
	})
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{
		Namespace: k.ns, ErrorCallback: lost, ReceiveBufferSize: rcvbuf, ReceiveBufferForceSize: force,
	}); err != nil {
		return fmt.Errorf("subscribe to routes: %w", err)
	}
	netlinkDrain(wg, routes, lost, func(u netlink.RouteUpdate) {
		e := hostEvent{Kind: hostEventRoute, LinkIndex: u.LinkIndex, Table: u.Table}
		if u.Dst != nil {
			e.Dst, _ = netlinkPrefix(u.Dst)
		}
		ev(e)
	})
	return nil
}

// netlinkErrSubscriptionEnded is reported to lost when the library closes a
// subscription's channel.
var netlinkErrSubscriptionEnded = errors.New("netlink subscription ended")

// netlinkDrain reads ch until the library closes it, which it does once done is
// closed or the socket failed, so the library's sender never blocks.
func netlinkDrain[T any](wg *sync.WaitGroup, ch <-chan T, lost func(error), f func(T)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for u := range ch {
			f(u)
		}
		lost(netlinkErrSubscriptionEnded)
	}()
}
