// Package ipam is swarmvlan's IPAM plugin: Docker's remote IPAM protocol
// (the legacy plugin API on a unix socket under /run/docker/plugins/),
// served by the host role of every node, handing out the addresses of
// cluster-mode VLANs from one pool shared by every host. Each address is a
// lease in Consul (state.Lease), taken with check-and-set through the
// node's local agent, so two nodes never hand out the same address.
//
// What Docker does, which the handlers are shaped by: every node calls
// RequestPool for the same network, so the pool ID is deterministic and
// ReleasePool frees nothing; every node requests the gateway, which is
// shared and never leased; the plugin is never told the container, task or
// slot; --ipam-opt reaches RequestPool only, so the pool ID carries the
// VLAN; dockerd holds the container's lock while it calls the plugin, so
// the plugin never calls back into the Engine, and every Consul call it
// makes has a deadline of ConsulTimeout.
package ipam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"time"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// ContentType is the media type of the plugin protocol's bodies.
const ContentType = "application/vnd.docker.plugins.v1.2+json"

// SocketDir is where Docker discovers plugins by their socket.
const SocketDir = "/run/docker/plugins"

// SocketPath is the plugin's socket, named after the driver.
var SocketPath = filepath.Join(SocketDir, spec.IPAMDriver+".sock")

// ConsulTimeout bounds every Consul call of a request: dockerd holds the
// container's lock meanwhile (Consul's own lock hold is 7 s).
const ConsulTimeout = 2 * time.Second

// addressSpace is the one address space the plugin offers.
const addressSpace = "swarmvlan"

// gatewayRequest is the RequestAddress option value Docker sends when it
// asks for the network's gateway (netlabel.RequestAddressType).
const (
	optRequestAddressType = "RequestAddressType"
	gatewayRequest        = "com.docker.network.gateway"
)

// Leases is what the plugin needs of the state layer.
type Leases interface {
	Leases(ctx context.Context, vlan string) (map[netip.Addr]state.LeaseEntry, error)
	TakeLease(ctx context.Context, vlan string, addr netip.Addr, l state.Lease, modifyIndex uint64) error
	ReleaseLease(ctx context.Context, vlan string, addr netip.Addr, node string, now time.Time) error
	UpdateLease(ctx context.Context, vlan string, addr netip.Addr, l state.Lease, modifyIndex uint64) (bool, error)
}

// Config is what the plugin needs.
type Config struct {
	Leases Leases
	// VLAN returns the VLAN document in force by name.
	VLAN func(name string) (*spec.VLAN, bool)
	// VLANs lists the VLAN documents in force.
	VLANs func() []*spec.VLAN
	// Sticky reports whether the Swarm service of that name is in force
	// with addresses: sticky (nil: any service may be); only such a
	// service's released address is waited for (see StickyWait).
	Sticky func(service string) bool
	// Identity is this node's swarm ID and hostname; empty until known.
	Identity func() (nodeID, hostname string)
	Log      *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Plugin serves the IPAM protocol.
type Plugin struct {
	cfg   Config
	stats Stats
}

// Stats counts what the plugin did since it started.
type Stats struct {
	Requests, Leased, Released, Failed, Conflicts atomic.Uint64
}

// New returns a plugin.
func New(cfg Config) *Plugin {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Plugin{cfg: cfg}
}

// Stats returns the plugin's counters.
func (p *Plugin) Stats() *Stats { return &p.stats }

// The protocol's bodies (moby's libnetwork/ipams/remote/api).
type (
	capabilitiesResponse struct {
		RequiresMACAddress    bool
		RequiresRequestReplay bool
	}
	addressSpacesResponse struct {
		LocalDefaultAddressSpace  string
		GlobalDefaultAddressSpace string
	}
	requestPoolRequest struct {
		AddressSpace string
		Pool         string
		SubPool      string
		Options      map[string]string
		V6           bool
	}
	requestPoolResponse struct {
		PoolID string
		Pool   string
		Data   map[string]string
	}
	releasePoolRequest struct {
		PoolID string
	}
	requestAddressRequest struct {
		PoolID  string
		Address string
		Options map[string]string
	}
	requestAddressResponse struct {
		Address string
		Data    map[string]string
	}
	releaseAddressRequest struct {
		PoolID  string
		Address string
	}
	errorResponse struct {
		Err string
	}
)

// Handler returns the protocol's HTTP handler.
func (p *Plugin) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string][]string{"Implements": {"IpamDriver"}})
	})
	mux.HandleFunc("POST /IpamDriver.GetCapabilities", func(w http.ResponseWriter, r *http.Request) {
		reply(w, capabilitiesResponse{})
	})
	mux.HandleFunc("POST /IpamDriver.GetDefaultAddressSpaces", func(w http.ResponseWriter, r *http.Request) {
		reply(w, addressSpacesResponse{LocalDefaultAddressSpace: addressSpace, GlobalDefaultAddressSpace: addressSpace})
	})
	handle(mux, p, "RequestPool", p.requestPool)
	handle(mux, p, "ReleasePool", func(_ context.Context, req releasePoolRequest) (struct{}, error) {
		// Every node holds the pool of the same network: releasing it on
		// one frees nothing.
		return struct{}{}, nil
	})
	handle(mux, p, "RequestAddress", p.requestAddress)
	handle(mux, p, "ReleaseAddress", p.releaseAddress)
	return mux
}

// handle registers one IpamDriver method: the body decoded into Req, the
// result or {"Err": …} with status 500, which Docker reports as the
// plugin's error (in the task's status for a container's address).
func handle[Req, Resp any](mux *http.ServeMux, p *Plugin, method string, f func(context.Context, Req) (Resp, error)) {
	mux.HandleFunc("POST /IpamDriver."+method, func(w http.ResponseWriter, r *http.Request) {
		p.stats.Requests.Add(1)
		var req Req
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			fail(w, fmt.Errorf("swarmvlan ipam: %s: decode request: %w", method, err))
			return
		}
		resp, err := f(r.Context(), req)
		if err != nil {
			p.stats.Failed.Add(1)
			p.cfg.Log.Warn("ipam request refused", "method", method, "request", fmt.Sprintf("%+v", req), "err", err)
			fail(w, err)
			return
		}
		reply(w, resp)
	})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", ContentType)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(http.StatusInternalServerError)
	_ = json.NewEncoder(w).Encode(errorResponse{Err: err.Error()})
}

// clusterVLAN returns the cluster-mode VLAN named vlan with its pool.
func (p *Plugin) clusterVLAN(vlan string) (*spec.VLAN, *spec.AddressPool, error) {
	v, ok := p.cfg.VLAN(vlan)
	if !ok {
		return nil, nil, fmt.Errorf("swarmvlan ipam: vlan %q: no such VLAN document in force", vlan)
	}
	if v.RangeMode() != spec.RangeModeCluster {
		return nil, nil, fmt.Errorf("swarmvlan ipam: vlan %q: rangePlan.mode is %s, not cluster", vlan, v.RangeMode())
	}
	pool, err := v.Pool()
	if err != nil {
		return nil, nil, fmt.Errorf("swarmvlan ipam: vlan %q: %w", vlan, err)
	}
	return v, pool, nil
}

func (p *Plugin) requestPool(_ context.Context, req requestPoolRequest) (requestPoolResponse, error) {
	if req.V6 {
		return requestPoolResponse{}, errors.New("swarmvlan ipam: IPv6 pools are not supported")
	}
	vlan := req.Options[spec.IPAMOptVLAN]
	if vlan == "" {
		// No option: the VLAN whose subnet the pool is.
		for _, v := range p.cfg.VLANs() {
			if v.RangeMode() == spec.RangeModeCluster && v.Spec.Subnet == req.Pool {
				vlan = v.Metadata.Name
				break
			}
		}
		if vlan == "" {
			return requestPoolResponse{}, fmt.Errorf("swarmvlan ipam: pool %q: no cluster-mode VLAN has this subnet (and no %s option)", req.Pool, spec.IPAMOptVLAN)
		}
	}
	_, pool, err := p.clusterVLAN(vlan)
	if err != nil {
		return requestPoolResponse{}, err
	}
	if req.Pool != "" && req.Pool != pool.Subnet.String() {
		return requestPoolResponse{}, fmt.Errorf("swarmvlan ipam: vlan %q: pool %s asked, the VLAN's subnet is %s", vlan, req.Pool, pool.Subnet)
	}
	if req.SubPool != "" {
		return requestPoolResponse{}, fmt.Errorf("swarmvlan ipam: vlan %q: an ip-range (%s) has no meaning in cluster mode", vlan, req.SubPool)
	}
	return requestPoolResponse{PoolID: spec.PoolID(vlan, pool.Subnet), Pool: pool.Subnet.String(), Data: map[string]string{}}, nil
}

// poolOf resolves a pool ID to its VLAN and pool, checking the VLAN's
// subnet is still the one the pool was made for.
func (p *Plugin) poolOf(id string) (string, *spec.VLAN, *spec.AddressPool, error) {
	vlan, subnet, err := spec.ParsePoolID(id)
	if err != nil {
		return "", nil, nil, fmt.Errorf("swarmvlan ipam: %w", err)
	}
	v, pool, err := p.clusterVLAN(vlan)
	if err != nil {
		return "", nil, nil, err
	}
	if pool.Subnet != subnet {
		return "", nil, nil, fmt.Errorf("swarmvlan ipam: vlan %q: pool %s is no longer the VLAN's subnet %s", vlan, subnet, pool.Subnet)
	}
	return vlan, v, pool, nil
}

func (p *Plugin) identity() (string, string, error) {
	node, hostname := p.cfg.Identity()
	if node == "" {
		return "", "", errors.New("swarmvlan ipam: this node's swarm identity is not known yet")
	}
	return node, hostname, nil
}

func cidr(a netip.Addr, pool *spec.AddressPool) string {
	return netip.PrefixFrom(a, pool.Subnet.Bits()).String()
}

func (p *Plugin) requestAddress(ctx context.Context, req requestAddressRequest) (requestAddressResponse, error) {
	vlan, v, pool, err := p.poolOf(req.PoolID)
	if err != nil {
		return requestAddressResponse{}, err
	}
	var want netip.Addr
	if req.Address != "" {
		if want, err = netip.ParseAddr(req.Address); err != nil {
			return requestAddressResponse{}, fmt.Errorf("swarmvlan ipam: vlan %q: address %q: %w", vlan, req.Address, err)
		}
	}
	if req.Options[optRequestAddressType] == gatewayRequest || (want.IsValid() && want == pool.Gateway) {
		// Every node asks for the gateway; it is shared and never leased.
		return requestAddressResponse{Address: cidr(pool.Gateway, pool), Data: map[string]string{}}, nil
	}
	node, hostname, err := p.identity()
	if err != nil {
		return requestAddressResponse{}, err
	}
	quarantine := quarantineOf(v)
	ctx, cancel := context.WithTimeout(ctx, ConsulTimeout)
	defer cancel()
	lease := state.Lease{Node: node, Hostname: hostname, Kind: state.LeaseTask, Created: p.cfg.Now().UTC()}
	if want.IsValid() {
		if err := p.takeExact(ctx, vlan, pool, want, lease, quarantine); err != nil {
			return requestAddressResponse{}, err
		}
		p.stats.Leased.Add(1)
		return requestAddressResponse{Address: cidr(want, pool), Data: map[string]string{}}, nil
	}
	have := p.awaitReservation(ctx, vlan, node)
	a, err := p.takeAny(ctx, vlan, pool, lease, quarantine, have)
	if err != nil {
		return requestAddressResponse{}, err
	}
	p.stats.Leased.Add(1)
	return requestAddressResponse{Address: cidr(a, pool), Data: map[string]string{}}, nil
}

// consulErr says the lease store could not be asked: the request fails at
// once, and Swarm retries the task.
func consulErr(vlan, verb string, err error) error {
	return fmt.Errorf("swarmvlan ipam: vlan %q: %s: consul unreachable, no address handed out: %w", vlan, verb, err)
}

// takeExact leases a named address: an address this node already holds
// is handed back (Docker replays requests after a restart); one another
// node holds, or in quarantine, is refused.
func (p *Plugin) takeExact(ctx context.Context, vlan string, pool *spec.AddressPool, a netip.Addr, lease state.Lease, quarantine time.Duration) error {
	if !pool.Usable(a) {
		return fmt.Errorf("swarmvlan ipam: vlan %q: %s is not in the VLAN's pool", vlan, a)
	}
	have, err := p.cfg.Leases.Leases(ctx, vlan)
	if err != nil {
		return consulErr(vlan, "read leases", err)
	}
	var idx uint64
	if e, ok := have[a]; ok {
		sticky := lease.Service != "" && e.Service == lease.Service && e.Slot == lease.Slot
		switch {
		case e.Held() && e.Node == lease.Node:
			return nil
		case e.Held():
			return fmt.Errorf("swarmvlan ipam: vlan %q: %s is leased to node %s (%s)", vlan, a, e.Node, e.Hostname)
		case !sticky && !e.Free(p.cfg.Now(), quarantine):
			return fmt.Errorf("swarmvlan ipam: vlan %q: %s is in quarantine since %s", vlan, a, e.Released.Format(time.RFC3339))
		}
		idx = e.ModifyIndex
	}
	if err := p.cfg.Leases.TakeLease(ctx, vlan, a, lease, idx); err != nil {
		if errors.Is(err, state.ErrLeaseTaken) {
			p.stats.Conflicts.Add(1)
			return fmt.Errorf("swarmvlan ipam: vlan %q: %s was leased by another node meanwhile", vlan, a)
		}
		return consulErr(vlan, "take lease", err)
	}
	return nil
}

// takeAny leases a free address: one never leased or out of quarantine,
// picked at random among the free ones so that nodes starting many tasks
// at once rarely race for the same key. A lost race is tried again with
// the leases read afresh. first, when not nil, is a read just made.
func (p *Plugin) takeAny(ctx context.Context, vlan string, pool *spec.AddressPool, lease state.Lease, quarantine time.Duration, first map[netip.Addr]state.LeaseEntry) (netip.Addr, error) {
	for attempt := 0; ; attempt++ {
		have := first
		first = nil
		if have == nil {
			var err error
			if have, err = p.cfg.Leases.Leases(ctx, vlan); err != nil {
				return netip.Addr{}, consulErr(vlan, "read leases", err)
			}
		}
		if a, e, ok := reservedFor(have, lease.Node); ok {
			// The one sticky address reserved for this node: the task
			// starting is its slot's (see the README for when this holds).
			l := lease
			l.Service, l.Slot = e.Service, e.Slot
			err := p.cfg.Leases.TakeLease(ctx, vlan, a, l, e.ModifyIndex)
			if err == nil {
				p.cfg.Log.Info("sticky address", "vlan", vlan, "address", a, "service", e.Service, "slot", e.Slot)
				return a, nil
			}
			if !errors.Is(err, state.ErrLeaseTaken) {
				return netip.Addr{}, consulErr(vlan, "take lease", err)
			}
			continue
		}
		free := FreeAddresses(pool, have, p.cfg.Now(), quarantine)
		if len(free) == 0 {
			return netip.Addr{}, fmt.Errorf("swarmvlan ipam: vlan %q: pool %s exhausted: %d addresses, all leased or in quarantine", vlan, pool.Subnet, pool.Size())
		}
		// A few tries per read: most lost races are lost to one other node.
		for range 3 {
			e := free[rand.IntN(len(free))]
			err := p.cfg.Leases.TakeLease(ctx, vlan, e.Addr, lease, e.ModifyIndex)
			if err == nil {
				return e.Addr, nil
			}
			if !errors.Is(err, state.ErrLeaseTaken) {
				return netip.Addr{}, consulErr(vlan, "take lease", err)
			}
			p.stats.Conflicts.Add(1)
			if ctx.Err() != nil {
				return netip.Addr{}, consulErr(vlan, "take lease", ctx.Err())
			}
		}
	}
}

// StickyWait bounds how long a request for any address waits for the
// leader to reserve a sticky slot's address that was released within
// StickyRecent and is reserved for no node yet: the starting task may be
// that slot's replacement, assigned to this node a moment ago (a restart
// delay shorter than the leader's pass). dockerd holds the container's
// lock meanwhile, so the wait is short; past it the task gets a fresh
// address, as without the wait.
var (
	StickyWait   = time.Second
	StickyRecent = 10 * time.Second
)

// stickyWaitPoll is how often the wait reads the leases again.
const stickyWaitPoll = 100 * time.Millisecond

// awaitReservation waits, at most StickyWait, while a recently released
// sticky address is reserved for no node and none is reserved for this
// one, and returns its last read of the leases. It reads through ctx (the
// request's Consul deadline); a failed read ends the wait with nil, and
// the take that follows reads again and reports the error.
func (p *Plugin) awaitReservation(ctx context.Context, vlan, node string) map[netip.Addr]state.LeaseEntry {
	wait, cancel := context.WithTimeout(ctx, StickyWait)
	defer cancel()
	for waited := false; ; waited = true {
		have, err := p.cfg.Leases.Leases(ctx, vlan)
		if err != nil {
			return nil
		}
		if _, _, ok := reservedFor(have, node); ok || !awaitingReservation(have, p.cfg.Now(), p.cfg.Sticky) {
			if waited {
				p.cfg.Log.Info("sticky wait over", "vlan", vlan, "reserved_here", ok)
			}
			return have
		}
		select {
		case <-wait.Done():
			p.cfg.Log.Info("sticky wait: no reservation for this node in time", "vlan", vlan, "waited", StickyWait)
			return have
		case <-time.After(stickyWaitPoll):
		}
	}
}

// awaitingReservation reports whether an address of a sticky service
// (sticky: nil is any) released within StickyRecent before now is
// reserved for no node: a service removed, or no longer sticky, has no
// slot to come back. Pure.
func awaitingReservation(have map[netip.Addr]state.LeaseEntry, now time.Time, sticky func(string) bool) bool {
	for _, e := range have {
		if !e.Held() && e.Service != "" && e.ReservedFor == "" && now.Sub(*e.Released) < StickyRecent && (sticky == nil || sticky(e.Service)) {
			return true
		}
	}
	return false
}

// reservedFor returns the released sticky lease reserved for node, when
// there is exactly one: with two, the plugin cannot tell which of the two
// starting tasks is asking (Docker does not say), so neither is used.
func reservedFor(have map[netip.Addr]state.LeaseEntry, node string) (netip.Addr, state.LeaseEntry, bool) {
	var out netip.Addr
	var entry state.LeaseEntry
	n := 0
	for a, e := range have {
		if !e.Held() && e.ReservedFor == node && e.Service != "" {
			out, entry = a, e
			n++
		}
	}
	return out, entry, n == 1
}

// FreeCandidate is an address that may be leased and the ModifyIndex its
// check-and-set must name (0: no key yet).
type FreeCandidate struct {
	Addr        netip.Addr
	ModifyIndex uint64
}

// FreeAddresses lists the pool's addresses that may be leased at now:
// never leased, or released and out of quarantine. Sticky leases released
// by their slot's task stay reserved for that slot through quarantine
// (and no longer after it). Pure.
func FreeAddresses(pool *spec.AddressPool, have map[netip.Addr]state.LeaseEntry, now time.Time, quarantine time.Duration) []FreeCandidate {
	var out []FreeCandidate
	pool.Each(func(a netip.Addr) bool {
		e, ok := have[a]
		switch {
		case !ok:
			out = append(out, FreeCandidate{Addr: a})
		case e.Free(now, quarantine) && e.ReservedFor == "":
			out = append(out, FreeCandidate{Addr: a, ModifyIndex: e.ModifyIndex})
		}
		return true
	})
	return out
}

func (p *Plugin) releaseAddress(ctx context.Context, req releaseAddressRequest) (struct{}, error) {
	vlan, _, pool, err := p.poolOf(req.PoolID)
	if err != nil {
		return struct{}{}, err
	}
	a, err := netip.ParseAddr(req.Address)
	if err != nil {
		if pfx, perr := netip.ParsePrefix(req.Address); perr == nil {
			a, err = pfx.Addr(), nil
		} else {
			return struct{}{}, fmt.Errorf("swarmvlan ipam: vlan %q: address %q: %w", vlan, req.Address, err)
		}
	}
	if a == pool.Gateway {
		return struct{}{}, nil
	}
	node, _, err := p.identity()
	if err != nil {
		return struct{}{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, ConsulTimeout)
	defer cancel()
	if err := p.cfg.Leases.ReleaseLease(ctx, vlan, a, node, p.cfg.Now().UTC()); err != nil {
		return struct{}{}, fmt.Errorf("swarmvlan ipam: %w", err)
	}
	p.stats.Released.Add(1)
	return struct{}{}, nil
}

// quarantineOf is the VLAN's quarantine (validated; the default when it
// cannot be read).
func quarantineOf(v *spec.VLAN) time.Duration {
	d, err := time.ParseDuration(string(v.Spec.RangePlan.Quarantine))
	if err != nil {
		d, _ = time.ParseDuration(string(spec.DefaultQuarantine))
	}
	return d
}
