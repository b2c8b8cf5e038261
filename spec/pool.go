package spec

import (
	"fmt"
	"net/netip"
)

// Range plan modes (rangePlan.mode).
const (
	// RangeModeChunks gives every host a chunk of the subnet; Docker's own
	// IPAM hands out addresses from it on that host alone.
	RangeModeChunks = "chunks"
	// RangeModeCluster leases every address from one pool shared by all
	// hosts, through swarmvlan's IPAM plugin.
	RangeModeCluster = "cluster"
)

// IPAMDriver is the name the host role serves its IPAM plugin under
// (/run/docker/plugins/<name>.sock), and the IPAM driver a cluster-mode
// VLAN's config networks name.
const IPAMDriver = "swarmvlan"

// IPAMOptVLAN is the IPAM option (--ipam-opt) naming the VLAN a pool
// belongs to; Docker passes it to RequestPool only.
const IPAMOptVLAN = "io.swarmvlan.vlan"

// RangeMode returns the VLAN's range plan mode, RangeModeChunks when none
// is given.
func (v *VLAN) RangeMode() string {
	if v.Spec.RangePlan.Mode == RangeModeCluster {
		return RangeModeCluster
	}
	return RangeModeChunks
}

// AddressPool is a cluster-mode VLAN's pool: every address of the subnet
// inside rangePlan.pool (the whole subnet without one), minus the network
// and broadcast addresses, the gateway and the excluded ranges. Hosts'
// shim addresses are leased from it like task addresses.
type AddressPool struct {
	Subnet  netip.Prefix
	Gateway netip.Addr // always valid: the document's, else the subnet's first address
	ranges  []netip.Prefix
	exclude []netip.Prefix
}

// Pool computes the VLAN's address pool. It returns the range problems
// Validate would report if the pool cannot be computed.
func (v *VLAN) Pool() (*AddressPool, error) {
	var errs ErrorList
	validateRange(&errs, &v.Spec)
	if len(errs) > 0 {
		return nil, errs
	}
	rp := &v.Spec.RangePlan
	p := &AddressPool{Subnet: netip.MustParsePrefix(v.Spec.Subnet)}
	p.Gateway = p.Subnet.Addr().Next()
	if v.Spec.Gateway != "" {
		p.Gateway = netip.MustParseAddr(v.Spec.Gateway)
	}
	p.ranges = []netip.Prefix{p.Subnet}
	if len(rp.Pool) > 0 {
		p.ranges = mustParsePrefixes(rp.Pool)
	}
	p.exclude = mustParsePrefixes(rp.Exclude)
	return p, nil
}

// Usable reports whether a may be leased: inside the pool, not the
// subnet's network or broadcast address, not the gateway, not excluded.
func (p *AddressPool) Usable(a netip.Addr) bool {
	if !a.Is4() || !p.Subnet.Contains(a) || a == p.Subnet.Addr() || a == lastAddr(p.Subnet) || a == p.Gateway {
		return false
	}
	in := false
	for _, r := range p.ranges {
		if r.Contains(a) {
			in = true
			break
		}
	}
	if !in {
		return false
	}
	for _, x := range p.exclude {
		if x.Contains(a) {
			return false
		}
	}
	return true
}

// Size is how many addresses the pool holds (Usable ones).
func (p *AddressPool) Size() int {
	n := 0
	p.Each(func(netip.Addr) bool { n++; return true })
	return n
}

// Each calls f with every usable address in address order until f returns
// false. Pool ranges are validated to lie inside the subnet, which is at
// most a /8 wide in practice; callers on large pools stop early.
func (p *AddressPool) Each(f func(netip.Addr) bool) {
	seen := map[netip.Prefix]bool{}
	for _, r := range p.ranges {
		r = r.Masked()
		if seen[r] {
			continue
		}
		seen[r] = true
		for a := r.Addr(); a.IsValid() && r.Contains(a); a = a.Next() {
			if p.Usable(a) && !p.coveredEarlier(r, a) {
				if !f(a) {
					return
				}
			}
		}
	}
}

// coveredEarlier reports whether a lies in a pool range listed before r,
// so Each yields it once. Validation refuses overlapping pool entries; this
// keeps Each exact regardless.
func (p *AddressPool) coveredEarlier(r netip.Prefix, a netip.Addr) bool {
	for _, o := range p.ranges {
		if o.Masked() == r {
			return false
		}
		if o.Contains(a) {
			return true
		}
	}
	return false
}

// PoolID is the deterministic ID of a VLAN's pool: every node asks for the
// same network's pool, and each must get the same ID.
func PoolID(vlan string, subnet netip.Prefix) string {
	return fmt.Sprintf("%s/%s", vlan, subnet.Masked())
}

// ParsePoolID splits a PoolID back into its VLAN and subnet.
func ParsePoolID(id string) (vlan string, subnet netip.Prefix, err error) {
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] != '/' {
			continue
		}
		// The subnet holds one slash itself: find the one before it.
		for j := i - 1; j >= 0; j-- {
			if id[j] == '/' {
				subnet, err = netip.ParsePrefix(id[j+1:])
				if err != nil || id[:j] == "" {
					return "", netip.Prefix{}, fmt.Errorf("pool id %q: not <vlan>/<subnet>", id)
				}
				return id[:j], subnet, nil
			}
		}
		break
	}
	return "", netip.Prefix{}, fmt.Errorf("pool id %q: not <vlan>/<subnet>", id)
}
