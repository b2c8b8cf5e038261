package spec

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// ipAddress checks an IPv4 or IPv6 address as /etc/resolv.conf and
// /etc/hosts take it: no zone, no prefix, IPv4 in dotted form (an
// IPv4-mapped IPv6 address is written as the IPv4 address).
func ipAddress(s string) string {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil || a.Zone() != "":
		return fmt.Sprintf("%q is not an IP address such as 10.0.0.2 or fd00::2", s)
	case a.Is6() && strings.Contains(s, "."):
		return fmt.Sprintf("%q: write an IPv4 address in dotted form only", s)
	}
	return ""
}

// resolverOptionRe is a resolv.conf option: a word, optionally with a
// number ("rotate", "ndots:2").
var resolverOptionRe = regexp.MustCompile(`^[A-Za-z0-9_-]+(:[0-9]+)?$`)

func validateDNS(errs *ErrorList, d *DNSConfig) {
	const p = "spec.dns"
	for i, s := range d.Servers {
		if msg := ipAddress(s); msg != "" {
			errs.add(IndexPath(p+".servers", i), msg)
		}
	}
	for i, s := range d.Search {
		if msg := hostname(s); msg != "" {
			errs.add(IndexPath(p+".search", i), strings.Replace(msg, "a hostname", "a domain", 1))
		}
	}
	for i, o := range d.Options {
		if !resolverOptionRe.MatchString(o) {
			errs.add(IndexPath(p+".options", i), fmt.Sprintf("%q is not a resolver option such as ndots:2 or rotate", o))
		}
	}
}

func validateExtraHosts(errs *ErrorList, hosts []string) {
	for i, h := range hosts {
		ip := IndexPath("spec.extraHosts", i)
		// The address may be IPv6 and hold colons; the host cannot.
		name, addr, ok := strings.Cut(h, ":")
		if !ok {
			errs.add(ip, fmt.Sprintf("%q must be host:ip, such as db.local:10.0.0.5", h))
			continue
		}
		if msg := hostname(name); msg != "" {
			errs.add(ip, "host "+msg)
		}
		if msg := ipAddress(addr); msg != "" {
			errs.add(ip, msg)
		}
	}
}

// Hosts returns the extra hosts in the form Swarm stores them, a line of
// /etc/hosts each ("10.0.0.5 db.local" for "db.local:10.0.0.5"), in the
// document's order, as the docker CLI converts --host.
func (s *ServiceSpec) Hosts() []string {
	var out []string
	for _, h := range s.ExtraHosts {
		name, addr, _ := strings.Cut(h, ":")
		out = append(out, addr+" "+name)
	}
	return out
}
