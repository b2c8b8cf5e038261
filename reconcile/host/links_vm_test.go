package host

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"swarmvlan/lab/vmtest"
	"swarmvlan/reconcile/kernel"
	"swarmvlan/spec"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// hostVM runs this package's TestVM tests on a kernel with 802.1Q,
// bonding and ipvlan: this machine's, in a fresh network namespace, when it
// has them, Debian's cloud kernel under qemu otherwise.
var hostVM = vmtest.New(vmtest.Config{Kinds: []string{"veth", "vlan", "bond", "macvlan", "ipvlan"}})

// hostTestBond makes a bond with one veth slave (whose peer, slave+"p",
// stands for the switch port) in h's namespace, all up.
func hostTestBond(t *testing.T, h *netlink.Handle, name, slave string) netlink.Link {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	bond := netlink.NewLinkBond(la)
	bond.Mode = netlink.BOND_MODE_ACTIVE_BACKUP
	if err := h.LinkAdd(bond); err != nil {
		t.Fatalf("add bond %s: %v", name, err)
	}
	b, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	s := hostTestVeth(t, h, slave, slave+"p", false)
	if err := h.LinkSetMasterByIndex(s, b.Attrs().Index); err != nil {
		t.Fatalf("enslave %s to %s: %v", slave, name, err)
	}
	for _, n := range []string{name, slave, slave + "p"} {
		if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: n}}); err != nil {
			t.Fatalf("set %s up: %v", n, err)
		}
	}
	if b, err = h.LinkByName(name); err != nil {
		t.Fatal(err)
	}
	return b
}

// hostTestForeignVLAN makes an 802.1Q link without our alias, up: what an
// operator or Docker's driver makes.
func hostTestForeignVLAN(t *testing.T, h *netlink.Handle, name string, parent netlink.Link, id int) netlink.Link {
	t.Helper()
	if err := h.LinkAdd(kernel.VLANRequest(name, parent.Attrs().Index, id, 0, "")); err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	return l
}

// hostTestContainer makes a container's interface the way Docker's driver
// does: a child of parent (a macvlan in bridge mode or an ipvlan in
// ipvlanMode) moved into a fresh namespace as eth0 with addr (a prefix),
// serving "hello" on port 8080. It returns the container's namespace.
func hostTestContainer(t *testing.T, h *netlink.Handle, parent netlink.Link, driver, ipvlanMode, addr string) netns.NsHandle {
	t.Helper()
	ctrNS, hc := hostTestNS(t)
	la := netlink.NewLinkAttrs()
	la.Name, la.ParentIndex = "ctr0", parent.Attrs().Index
	var l netlink.Link = &netlink.Macvlan{LinkAttrs: la, Mode: netlink.MACVLAN_MODE_BRIDGE}
	if driver == spec.DriverIPvlan {
		mode := netlink.IPVLAN_MODE_L2
		if ipvlanMode == "l3" {
			mode = netlink.IPVLAN_MODE_L3
		}
		l = &netlink.IPVlan{LinkAttrs: la, Mode: mode}
	}
	if err := h.LinkAdd(l); err != nil {
		t.Fatalf("add container link on %s: %v", parent.Attrs().Name, err)
	}
	c, err := h.LinkByName("ctr0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetNsFd(c, int(ctrNS)); err != nil {
		t.Fatal(err)
	}
	if c, err = hc.LinkByName("ctr0"); err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := hc.AddrAdd(c, a); err != nil {
		t.Fatal(err)
	}
	if err := hc.LinkSetUp(c); err != nil {
		t.Fatal(err)
	}
	if driver == spec.DriverIPvlan && ipvlanMode == "l3" {
		// As Docker sets it up for ipvlan l3: everything through eth0.
		if err := hc.RouteAdd(&netlink.Route{LinkIndex: c.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}}); err != nil {
			t.Fatalf("container default route: %v", err)
		}
	}
	var ln net.Listener
	hostTestIn(t, ctrNS, func() { ln, err = net.Listen("tcp", net.JoinHostPort(a.IP.String(), "8080")) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello")
			c.Close()
		}
	}()
	return ctrNS
}

// hostTestDial connects from ns to addr:8080 and returns the local address
// used, or why it failed.
func hostTestDial(t *testing.T, ns netns.NsHandle, addr string, timeout time.Duration) (string, error) {
	t.Helper()
	var local, reply string
	var err error
	hostTestIn(t, ns, func() {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", net.JoinHostPort(addr, "8080"), timeout); err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		local = c.LocalAddr().(*net.TCPAddr).IP.String()
		var b []byte
		b, err = io.ReadAll(c)
		reply = string(b)
	})
	if err == nil && reply != "hello" {
		err = fmt.Errorf("reply %q", reply)
	}
	return local, err
}

// hostTestSubDrifts are changes to a tagged VLAN's sub-interface.
var hostTestSubDrifts = []hostTestDrift{
	{"sub-interface deleted", func(h *netlink.Handle, v VLAN) error {
		l, err := h.LinkByName(spec.SubInterfaceName(v.Trunk, v.ID))
		if err != nil {
			return err
		}
		return h.LinkDel(l) // the shim goes with it
	}},
	{"sub-interface down", func(h *netlink.Handle, v VLAN) error {
		l, err := h.LinkByName(spec.SubInterfaceName(v.Trunk, v.ID))
		if err != nil {
			return err
		}
		return h.LinkSetDown(l)
	}},
	{"sub-interface mtu changed", func(h *netlink.Handle, v VLAN) error {
		l, err := h.LinkByName(spec.SubInterfaceName(v.Trunk, v.ID))
		if err != nil {
			return err
		}
		return h.LinkSetMTU(l, v.MTU-200) // lowers the shim's too
	}},
	{"sub-interface promiscuous off", func(h *netlink.Handle, v VLAN) error {
		l, err := h.LinkByName(spec.SubInterfaceName(v.Trunk, v.ID))
		if err != nil {
			return err
		}
		return h.SetPromiscOff(l)
	}},
}

// hostTestRepairs applies each drift to v in turn and checks that the
// kernel is back as want says: after one Ensure, or (watch) through the
// netlink subscription alone.
func hostTestRepairs(t *testing.T, h *netlink.Handle, hn *Net, want []VLAN, v VLAN, drifts []hostTestDrift, watch bool, still func(t *testing.T)) {
	t.Helper()
	for _, d := range drifts {
		t.Run(d.name, func(t *testing.T) {
			before := hn.writes()
			if err := d.drift(h, v); err != nil {
				t.Fatalf("drift: %v", err)
			}
			if !watch {
				if hostTestCheck(h, v) == nil {
					t.Fatal("drift left no trace")
				}
				hostTestEnsure(t, hn, want)
			}
			hostTestEventually(t, 5*time.Second, "repair", func() error {
				if hn.writes() == before {
					return errors.New("no repair written")
				}
				for _, w := range want {
					if err := hostTestCheck(h, w); err != nil {
						return fmt.Errorf("%s: %w", w.Name, err)
					}
				}
				return nil
			})
			still(t)
		})
	}
}

// TestVMHostNetVLANSubInterface converges a tagged VLAN on a veth trunk.
func TestVMHostNetVLANSubInterface(t *testing.T) {
	hostVM.Run(t, func(t *testing.T) {
		ns, h := hostTestNS(t)
		if !hostTestHas8021Q(t, h) {
			t.Fatal("no 802.1Q on this kernel")
		}
		hostTestVeth(t, h, "trk0", "trk0p", true)
		v := VLAN{Name: "vlan40", Trunk: "trk0", ID: 40, MTU: 1400, Promiscuous: true, HostAccess: true,
			Chunk: netip.MustParsePrefix("10.40.1.0/24"), ShimAddr: netip.MustParseAddr("10.40.1.255")}
		hn := hostTestNew(t, ns)
		st := hostTestEnsure(t, hn, []VLAN{v})
		if !st["vlan40"].Ready || st["vlan40"].Parent != "trk0.40" {
			t.Errorf("status %+v", st["vlan40"])
		}
		if err := hostTestCheck(h, v); err != nil {
			t.Fatal(err)
		}
		before := hn.writes()
		hostTestEnsure(t, hn, []VLAN{v})
		if n := hn.writes() - before; n != 0 {
			t.Errorf("converged Ensure made %d writes", n)
		}
		hostTestEnsure(t, hn, nil)
		if links, routes := hostTestOwned(t, h, v.Chunk); len(links) != 0 || len(routes) != 0 {
			t.Errorf("left behind: %v %v", links, routes)
		}
	})
}

// TestVMHostNetSeedBond is the seed's shape: bond0 (a bond with a veth
// slave), vlan40 on bond0.40 with an MTU, promiscuous, with its shim, and
// vlan41 on bond0.41 beside it; a foreign bond0.42 and a foreign macvlan on
// bond0 must come through everything unchanged.
func TestVMHostNetSeedBond(t *testing.T) {
	hostVM.Run(t, func(t *testing.T) {
		ns, h := hostTestNS(t)
		bond := hostTestBond(t, h, "bond0", "eth1")
		f42 := hostTestForeignVLAN(t, h, "bond0.42", bond, 42)
		hostTestMacvlan(t, h, "fm0", bond, "10.40.1.7/16")
		hostTestMacvlan(t, h, "fm42", f42, "")
		foreign := map[string]hostTestLinkSnap{}
		for _, n := range []string{"bond0.42", "fm0", "fm42"} {
			foreign[n] = hostTestSnap(t, h, n)
		}
		checkForeign := func(t *testing.T) {
			t.Helper()
			for n, want := range foreign {
				if got := hostTestSnap(t, h, n); got != want {
					t.Errorf("foreign %s changed:\n got %+v\nwant %+v", n, got, want)
				}
			}
		}
		v40 := VLAN{Name: "vlan40", Trunk: "bond0", ID: 40, MTU: 1400, Promiscuous: true, HostAccess: true, Mode: "bridge",
			Chunk: netip.MustParsePrefix("172.80.1.0/24"), ShimAddr: netip.MustParseAddr("172.80.1.255")}
		v41 := VLAN{Name: "vlan41", Trunk: "bond0", ID: 41, Promiscuous: true, HostAccess: true,
			Chunk: netip.MustParsePrefix("172.81.2.0/24"), ShimAddr: netip.MustParseAddr("172.81.2.255")}
		want := []VLAN{v40, v41}
		hn := hostTestNew(t, ns)

		t.Run("create", func(t *testing.T) {
			st := hostTestEnsure(t, hn, want)
			for _, v := range want {
				p := spec.SubInterfaceName(v.Trunk, v.ID)
				if got := st[v.Name]; got != (NetStatus{Parent: p, Link: "ok", Shim: "ok", Route: "ok", Ready: true}) {
					t.Errorf("%s status %+v", v.Name, got)
				}
				if err := hostTestCheck(h, v); err != nil {
					t.Errorf("%s: %v", v.Name, err)
				}
			}
			sub, err := h.LinkByName("bond0.40")
			if err != nil {
				t.Fatal(err)
			}
			if sub.Attrs().MTU != 1400 || !hostTestPromisc(sub) || sub.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("bond0.40: mtu %d, promiscuous %v, flags %v", sub.Attrs().MTU, hostTestPromisc(sub), sub.Attrs().Flags)
			}
			checkForeign(t)
		})

		t.Run("converged pass makes no writes", func(t *testing.T) {
			before := hn.writes()
			hostTestEnsure(t, hn, want)
			if n := hn.writes() - before; n != 0 {
				t.Errorf("converged Ensure made %d netlink writes", n)
			}
		})

		drifts := append(append([]hostTestDrift{}, hostTestSubDrifts...), hostTestDrifts...)
		t.Run("drift repaired by Ensure", func(t *testing.T) {
			hostTestRepairs(t, h, hn, want, v40, drifts, false, checkForeign)
		})
		t.Run("drift repaired through Watch", func(t *testing.T) {
			hostTestWatchLoop(t, hn, want)
			hostTestRepairs(t, h, hn, want, v40, drifts, true, checkForeign)
		})

		t.Run("vlan41 removed, vlan40 untouched", func(t *testing.T) {
			keep := hostTestSnap(t, h, "bond0.40")
			hostTestEnsure(t, hn, []VLAN{v40})
			for _, n := range []string{"bond0.41", "sv-vlan41"} {
				if _, err := h.LinkByName(n); err == nil {
					t.Errorf("%s left behind", n)
				}
			}
			if got := hostTestSnap(t, h, "bond0.40"); got != keep {
				t.Errorf("bond0.40 changed:\n got %+v\nwant %+v", got, keep)
			}
			if err := hostTestCheck(h, v40); err != nil {
				t.Error(err)
			}
			checkForeign(t)
		})

		t.Run("all removed", func(t *testing.T) {
			hostTestEnsure(t, hn, nil)
			for _, chunk := range []netip.Prefix{v40.Chunk, v41.Chunk} {
				if links, routes := hostTestOwned(t, h, chunk); len(links) != 0 || len(routes) != 0 {
					t.Errorf("left behind: links %v, routes %v", links, routes)
				}
			}
			b, err := h.LinkByName("bond0")
			if err != nil {
				t.Fatal(err)
			}
			if hostTestPromisc(b) {
				t.Error("bond0 still promiscuous although this reconciler switched it on")
			}
			checkForeign(t)
		})
	})
}

// hostTestTagged counts the frames with 802.1Q tag id that arrive on the
// link name in h's namespace while send runs. The tag is read as the kernel
// reports it to packet sockets (PACKET_AUXDATA: stripped on receive), or
// from the frame when it is still inline.
func hostTestTagged(t *testing.T, ns netns.NsHandle, name string, id int, send func()) int {
	t.Helper()
	var fd int
	var err error
	hostTestIn(t, ns, func() {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(hostTestHtons(unix.ETH_P_ALL)))
	})
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	defer unix.Close(fd)
	ifi, err := hostTestIfIndex(t, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: hostTestHtons(unix.ETH_P_ALL), Ifindex: ifi}); err != nil {
		t.Fatalf("bind to %s: %v", name, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}); err != nil {
		t.Fatal(err)
	}
	send()
	n := 0
	buf, oob := make([]byte, 65536), make([]byte, 1024)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		m, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, 0)
		if err != nil {
			break
		}
		if m >= 16 && binary.BigEndian.Uint16(buf[12:]) == unix.ETH_P_8021Q && int(binary.BigEndian.Uint16(buf[14:])&0xfff) == id {
			n++
			continue
		}
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			continue
		}
		for _, c := range cmsgs {
			if c.Header.Level != unix.SOL_PACKET || c.Header.Type != unix.PACKET_AUXDATA || len(c.Data) < int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
				continue
			}
			aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&c.Data[0]))
			if aux.Status&unix.TP_STATUS_VLAN_VALID != 0 && int(aux.Vlan_tci&0xfff) == id {
				n++
			}
		}
	}
	return n
}

func hostTestHtons(v uint16) uint16 { return v<<8 | v>>8 }

func hostTestIfIndex(t *testing.T, ns netns.NsHandle, name string) (int, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return l.Attrs().Index, nil
}

// TestVMHostNetSeedTraffic sends real traffic over the seed's shape: a
// container's macvlan on bond0.40 is reached from the host through the
// shim, and not without it; what the container sends off the host leaves
// on the bond's slave tagged 40.
func TestVMHostNetSeedTraffic(t *testing.T) {
	hostVM.Run(t, func(t *testing.T) {
		ns, h := hostTestNS(t)
		hostTestBond(t, h, "bond0", "eth1")
		// The host's own address on the VLAN's subnet: without the shim it
		// routes the chunk out of the bond, from which a macvlan child of
		// bond0.40 is unreachable.
		v := VLAN{Name: "vlan40", Trunk: "bond0", ID: 40, Promiscuous: true, Mode: "bridge",
			Chunk: netip.MustParsePrefix("172.80.1.0/24"), ShimAddr: netip.MustParseAddr("172.80.1.255")}
		hn := hostTestNew(t, ns)
		hostTestEnsure(t, hn, []VLAN{v})
		sub, err := h.LinkByName("bond0.40")
		if err != nil {
			t.Fatal(err)
		}
		ctrNS := hostTestContainer(t, h, sub, spec.DriverMacvlan, "", "172.80.1.10/16")
		b, err := h.LinkByName("bond0")
		if err != nil {
			t.Fatal(err)
		}
		hostAddr, _ := netlink.ParseAddr("172.80.0.1/16")
		if err := h.AddrAdd(b, hostAddr); err != nil {
			t.Fatal(err)
		}
		for _, s := range []struct {
			name       string
			hostAccess bool
		}{
			{"without host access the container is unreachable", false},
			{"through the shim the host reaches the container", true},
			{"host access off again: unreachable again", false},
		} {
			t.Run(s.name, func(t *testing.T) {
				v.HostAccess = s.hostAccess
				hostTestEnsure(t, hn, []VLAN{v})
				if err := hostTestCheck(h, v); err != nil {
					t.Fatal(err)
				}
				local, err := hostTestDial(t, ns, "172.80.1.10", time.Second)
				if !s.hostAccess {
					if err == nil {
						t.Fatalf("container reached from %s without the shim", local)
					}
					return
				}
				if err != nil {
					t.Fatalf("container not reached through the shim: %v", err)
				}
				if local != v.ShimAddr.String() {
					t.Errorf("host connected from %s, want the shim's %s", local, v.ShimAddr)
				}
			})
		}
		t.Run("frames leave the bond's slave tagged 40", func(t *testing.T) {
			// The peer of the slave is the switch port: what the container
			// sends to an address off the host crosses it.
			n := hostTestTagged(t, ns, "eth1p", 40, func() {
				hostTestDial(t, ctrNS, "172.80.9.9", 300*time.Millisecond)
			})
			if n == 0 {
				t.Fatal("no frame tagged 40 on eth1p")
			}
			t.Logf("%d frames tagged 40 on the slave's peer", n)
			if m := hostTestTagged(t, ns, "eth1p", 41, func() {
				hostTestDial(t, ctrNS, "172.80.9.9", 300*time.Millisecond)
			}); m != 0 {
				t.Errorf("%d frames tagged 41", m)
			}
		})
		hostTestEnsure(t, hn, nil)
	})
}

// TestVMHostNetIPvlan converges ipvlan VLANs in l2 and in l3 mode on
// bond0.40: the shim is an ipvlan in the VLAN's mode (a macvlan cannot
// share the parent with the containers' ipvlan links), and through it the
// host reaches an ipvlan container, and not without it.
func TestVMHostNetIPvlan(t *testing.T) {
	hostVM.Run(t, func(t *testing.T) {
		for _, mode := range []string{"l2", "l3"} {
			t.Run(mode, func(t *testing.T) {
				ns, h := hostTestNS(t)
				hostTestBond(t, h, "bond0", "eth1")
				v := VLAN{Name: "vlan40", Trunk: "bond0", ID: 40, MTU: 1450, Promiscuous: true, HostAccess: true,
					Driver: spec.DriverIPvlan, Mode: mode,
					Chunk: netip.MustParsePrefix("172.80.1.0/24"), ShimAddr: netip.MustParseAddr("172.80.1.255")}
				hn := hostTestNew(t, ns)
				st := hostTestEnsure(t, hn, []VLAN{v})
				if !st["vlan40"].Ready {
					t.Fatalf("status %+v", st["vlan40"])
				}
				if err := hostTestCheck(h, v); err != nil {
					t.Fatal(err)
				}
				sub, err := h.LinkByName("bond0.40")
				if err != nil {
					t.Fatal(err)
				}
				hostTestContainer(t, h, sub, spec.DriverIPvlan, mode, "172.80.1.10/16")
				la := netlink.NewLinkAttrs()
				la.Name, la.ParentIndex = "mv0", sub.Attrs().Index
				if err := h.LinkAdd(&netlink.Macvlan{LinkAttrs: la, Mode: netlink.MACVLAN_MODE_BRIDGE}); err == nil {
					t.Error("the kernel took a macvlan beside ipvlan links: a macvlan shim would do")
				} else {
					t.Logf("a macvlan on a parent with ipvlan links: %v", err)
				}

				before := hn.writes()
				hostTestEnsure(t, hn, []VLAN{v})
				if n := hn.writes() - before; n != 0 {
					t.Errorf("converged Ensure made %d writes", n)
				}
				local, err := hostTestDial(t, ns, "172.80.1.10", 2*time.Second)
				if err != nil {
					t.Fatalf("ipvlan %s container not reached through the shim: %v", mode, err)
				}
				if local != v.ShimAddr.String() {
					t.Errorf("host connected from %s, want the shim's %s", local, v.ShimAddr)
				}
				hostTestRepairs(t, h, hn, []VLAN{v}, v, hostTestDrifts[:3], false, func(*testing.T) {})

				off := v
				off.HostAccess = false
				hostTestEnsure(t, hn, []VLAN{off})
				if local, err := hostTestDial(t, ns, "172.80.1.10", time.Second); err == nil {
					t.Errorf("container reached from %s without the shim", local)
				}
				hostTestEnsure(t, hn, nil)
				if links, routes := hostTestOwned(t, h, v.Chunk); len(links) != 0 || len(routes) != 0 {
					t.Errorf("left behind: links %v, routes %v", links, routes)
				}
			})
		}
	})
}

// TestVMHostNetParentsChange moves a VLAN to another bond, changes its MTU
// live, brings a trunk that is down up, and reports a missing one without
// touching the other VLANs.
func TestVMHostNetParentsChange(t *testing.T) {
	hostVM.Run(t, func(t *testing.T) {
		ns, h := hostTestNS(t)
		hostTestBond(t, h, "bond0", "eth1")
		hostTestBond(t, h, "bond1", "eth2")
		v := VLAN{Name: "vlan40", Trunk: "bond0", ID: 40, MTU: 1400, Promiscuous: true, HostAccess: true,
			Chunk: netip.MustParsePrefix("172.80.1.0/24"), ShimAddr: netip.MustParseAddr("172.80.1.255")}
		other := VLAN{Name: "vlan50", Trunk: "bond1", ID: 50, Promiscuous: true, HostAccess: true,
			Chunk: netip.MustParsePrefix("172.90.1.0/24"), ShimAddr: netip.MustParseAddr("172.90.1.255")}
		hn := hostTestNew(t, ns)
		hostTestEnsure(t, hn, []VLAN{v, other})

		t.Run("trunk replaced: bond0 to bond1", func(t *testing.T) {
			moved := v
			moved.Trunk = "bond1"
			st := hostTestEnsure(t, hn, []VLAN{moved, other})
			if got := st["vlan40"]; !got.Ready || got.Parent != "bond1.40" {
				t.Errorf("status %+v", got)
			}
			if err := hostTestCheck(h, moved); err != nil {
				t.Fatal(err)
			}
			if _, err := h.LinkByName("bond0.40"); err == nil {
				t.Error("bond0.40 left behind")
			}
			b0, err := h.LinkByName("bond0")
			if err != nil {
				t.Fatal(err)
			}
			if hostTestPromisc(b0) {
				t.Error("bond0 left promiscuous")
			}
			if err := hostTestCheck(h, other); err != nil {
				t.Error(err)
			}
			v = moved
		})

		t.Run("mtu changed live", func(t *testing.T) {
			for _, mtu := range []int{1450, 1300} {
				v.MTU = mtu
				hostTestEnsure(t, hn, []VLAN{v, other})
				if err := hostTestCheck(h, v); err != nil {
					t.Errorf("mtu %d: %v", mtu, err)
				}
			}
		})

		t.Run("trunk down is brought up", func(t *testing.T) {
			b1, err := h.LinkByName("bond1")
			if err != nil {
				t.Fatal(err)
			}
			if err := h.LinkSetDown(b1); err != nil {
				t.Fatal(err)
			}
			hostTestEnsure(t, hn, []VLAN{v, other})
			for _, w := range []VLAN{v, other} {
				if err := hostTestCheck(h, w); err != nil {
					t.Errorf("%s: %v", w.Name, err)
				}
			}
		})

		t.Run("missing trunk reported, other VLANs untouched", func(t *testing.T) {
			snaps := map[string]hostTestLinkSnap{}
			for _, n := range []string{"bond1.40", "sv-vlan40", "bond1.50", "sv-vlan50"} {
				snaps[n] = hostTestSnap(t, h, n)
			}
			lost := VLAN{Name: "vlan60", Trunk: "bond9", ID: 60, HostAccess: true,
				Chunk: netip.MustParsePrefix("172.60.1.0/24"), ShimAddr: netip.MustParseAddr("172.60.1.255")}
			before := hn.writes()
			st := hostTestEnsure(t, hn, []VLAN{v, other, lost})
			if n := hn.writes() - before; n != 0 {
				t.Errorf("%d writes for a VLAN whose trunk is missing", n)
			}
			if got := st["vlan60"]; got.Ready || got.Link != "trunk bond9 not found" {
				t.Errorf("vlan60 status %+v", got)
			}
			for _, n := range []string{"vlan40", "vlan50"} {
				if !st[n].Ready {
					t.Errorf("%s status %+v", n, st[n])
				}
			}
			for n, want := range snaps {
				if got := hostTestSnap(t, h, n); got != want {
					t.Errorf("%s changed:\n got %+v\nwant %+v", n, got, want)
				}
			}
		})
		hostTestEnsure(t, hn, nil)
	})
}

// TestVMHostNetDockerMadeSubInterface leaves bond0.40 as Docker's macvlan
// driver leaves it when the network's parent was missing (an 802.1Q link
// without our alias, up, a container's macvlan on it): the host agent uses
// it, puts its shim on it, never changes or deletes it.
func TestVMHostNetDockerMadeSubInterface(t *testing.T) {
	hostVM.Run(t, func(t *testing.T) {
		ns, h := hostTestNS(t)
		bond := hostTestBond(t, h, "bond0", "eth1")
		sub := hostTestForeignVLAN(t, h, "bond0.40", bond, 40)
		hostTestContainer(t, h, sub, spec.DriverMacvlan, "", "172.80.1.10/16")
		v := VLAN{Name: "vlan40", Trunk: "bond0", ID: 40, MTU: 1400, Promiscuous: true, HostAccess: true,
			Chunk: netip.MustParsePrefix("172.80.1.0/24"), ShimAddr: netip.MustParseAddr("172.80.1.255")}
		hn := hostTestNew(t, ns)
		st := hostTestEnsure(t, hn, []VLAN{v})
		if got := st["vlan40"]; got != (NetStatus{Parent: "bond0.40", Link: "ok", Shim: "ok", Route: "ok", Ready: true}) {
			t.Errorf("status %+v", got)
		}
		after := hostTestSnap(t, h, "bond0.40")
		if after.Index != sub.Attrs().Index || after.Alias != "" || after.MTU != 1500 || !after.Promisc {
			t.Errorf("bond0.40 after Ensure: %+v (index %d before)", after, sub.Attrs().Index)
		}
		shim, err := h.LinkByName("sv-vlan40")
		if err != nil {
			t.Fatal(err)
		}
		if shim.Attrs().ParentIndex != sub.Attrs().Index || shim.Attrs().MTU != 1400 {
			t.Errorf("shim on %d with mtu %d", shim.Attrs().ParentIndex, shim.Attrs().MTU)
		}
		if local, err := hostTestDial(t, ns, "172.80.1.10", 2*time.Second); err != nil || local != "172.80.1.255" {
			t.Errorf("container through the shim on Docker's bond0.40: from %s: %v", local, err)
		}
		before := hn.writes()
		hostTestEnsure(t, hn, []VLAN{v})
		if n := hn.writes() - before; n != 0 {
			t.Errorf("converged Ensure made %d writes", n)
		}
		hostTestEnsure(t, hn, nil)
		got := hostTestSnap(t, h, "bond0.40")
		if got.Index != after.Index || got.Alias != "" {
			t.Errorf("bond0.40 replaced or marked: %+v", got)
		}
		if _, err := h.LinkByName("sv-vlan40"); err == nil {
			t.Error("shim left behind")
		}
		if got.Promisc {
			t.Error("bond0.40 left promiscuous although this reconciler switched it on")
		}
	})
}
