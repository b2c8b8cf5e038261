package spec

import (
	"net/netip"
	"slices"
)

// Plan is a VLAN's address plan: the chunks hosts may be given, in address
// order, and the chunks pinned to particular hosts.
type Plan struct {
	Subnet    netip.Prefix
	Gateway   netip.Addr // invalid (zero) when the VLAN has no gateway
	ChunkBits int
	Chunks    []netip.Prefix
	Pinned    map[string]netip.Prefix
}

// Plan computes the VLAN's address plan: every chunk of rangePlan.chunkPrefix
// size inside the pool (the whole subnet when no pool is given), in address
// order, minus those that overlap an excluded range. It returns the range
// problems Validate would report if the plan cannot be computed.
func (v *VLAN) Plan() (*Plan, error) {
	var errs ErrorList
	validateRange(&errs, &v.Spec)
	if len(errs) > 0 {
		return nil, errs
	}
	rp := &v.Spec.RangePlan
	p := &Plan{
		Subnet:    netip.MustParsePrefix(v.Spec.Subnet),
		ChunkBits: rp.ChunkPrefix,
		Pinned:    make(map[string]netip.Prefix, len(rp.Pinned)),
	}
	if v.Spec.Gateway != "" {
		p.Gateway = netip.MustParseAddr(v.Spec.Gateway)
	}
	pool := []netip.Prefix{p.Subnet}
	if len(rp.Pool) > 0 {
		pool = mustParsePrefixes(rp.Pool)
	}
	p.Chunks = SplitChunks(pool, mustParsePrefixes(rp.Exclude), rp.ChunkPrefix)
	for host, c := range rp.Pinned {
		p.Pinned[host] = netip.MustParsePrefix(c)
	}
	return p, nil
}

func mustParsePrefixes(ss []string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// SplitChunks cuts every pool prefix into prefixes of length bits and
// returns them in address order, without duplicates, leaving out any that
// overlaps an excluded prefix. A pool prefix smaller than a chunk yields
// nothing. The result has 2^(bits-len) entries per pool prefix, so callers
// bound it first (Plan refuses more than MaxChunks).
func SplitChunks(pool []netip.Prefix, exclude []netip.Prefix, bits int) []netip.Prefix {
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	for _, p := range pool {
		if !p.IsValid() || bits < p.Bits() || bits > p.Addr().BitLen() {
			continue
		}
		p = p.Masked()
		for c := netip.PrefixFrom(p.Addr(), bits); p.Contains(c.Addr()); {
			if !seen[c] && overlapping(exclude, c) < 0 {
				seen[c] = true
				out = append(out, c)
			}
			next := lastAddr(c).Next()
			if !next.IsValid() {
				break // the chunk ended at the top of the address space
			}
			c = netip.PrefixFrom(next, bits)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// ShimAddress is the host's own address in its chunk, on the shim interface
// that lets the host reach its containers: the chunk's last address, or the
// one before it when that is the subnet's broadcast address.
func ShimAddress(subnet, chunk netip.Prefix) netip.Addr {
	a := lastAddr(chunk)
	if a == lastAddr(subnet) {
		return a.Prev()
	}
	return a
}

// lastAddr is the highest address in p (the broadcast address of an IPv4
// network).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// TrunkFor returns the trunk interface to use for vlan on this host: the
// host's per-VLAN override, else the host's trunk, else the VLAN's trunk. A
// nil Host (no Host document) uses the VLAN's trunk.
func (h *Host) TrunkFor(vlan *VLAN) string {
	if vlan == nil {
		if h == nil {
			return ""
		}
		return h.Spec.Trunk
	}
	if h != nil {
		if hv, ok := h.Spec.VLANs[vlan.Metadata.Name]; ok && hv.Trunk != "" {
			return hv.Trunk
		}
		if h.Spec.Trunk != "" {
			return h.Spec.Trunk
		}
	}
	return vlan.Spec.Trunk
}
