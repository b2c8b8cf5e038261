package ipam

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"swarmvlan/state"
)

// Server serves the plugin on its socket while this node has a
// cluster-mode VLAN, and leases the host's shim addresses. The socket is
// made only when needed, so an installation without cluster-mode VLANs
// leaves /run/docker/plugins alone.
type Server struct {
	p    *Plugin
	path string

	mu      sync.Mutex
	srv     *http.Server
	done    chan struct{}
	lastErr error
}

// NewServer returns a server of p on the socket at path.
func NewServer(p *Plugin, path string) *Server { return &Server{p: p, path: path} }

// Plugin returns the served plugin.
func (s *Server) Plugin() *Plugin { return s.p }

// Ensure serves the socket when on and stops serving when not; it does
// nothing when that already holds. A stale socket of an earlier run is
// replaced.
func (s *Server) Ensure(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case on && s.srv != nil:
		return nil
	case !on && s.srv == nil:
		return nil
	case !on:
		s.stopLocked()
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
		s.lastErr = fmt.Errorf("ipam plugin: %w", err)
		return s.lastErr
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.lastErr = fmt.Errorf("ipam plugin: remove stale socket %s: %w", s.path, err)
		return s.lastErr
	}
	l, err := net.Listen("unix", s.path)
	if err != nil {
		s.lastErr = fmt.Errorf("ipam plugin: listen on %s: %w", s.path, err)
		return s.lastErr
	}
	srv := &http.Server{Handler: s.p.Handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	s.srv, s.done, s.lastErr = srv, done, nil
	s.p.cfg.Log.Info("ipam plugin serving", "socket", s.path)
	return nil
}

func (s *Server) stopLocked() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
	_ = os.Remove(s.path)
	s.srv, s.done = nil, nil
	s.p.cfg.Log.Info("ipam plugin stopped", "socket", s.path)
}

// Serving reports whether the socket is served, or why not.
func (s *Server) Serving() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil, s.lastErr
}

// Close stops serving.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.stopLocked()
	}
}

// ShimAddress returns this host's shim address on a cluster-mode VLAN: the
// address it already holds as a shim lease, else the highest free address
// of the pool, leased now. The shim's lease is the host's own: Docker
// never sees the address, and it ends only with the node (the leader
// frees the leases of nodes removed from the swarm).
func (s *Server) ShimAddress(ctx context.Context, vlan string) (netip.Addr, error) {
	p := s.p
	v, pool, err := p.clusterVLAN(vlan)
	if err != nil {
		return netip.Addr{}, err
	}
	node, hostname, err := p.identity()
	if err != nil {
		return netip.Addr{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, ConsulTimeout)
	defer cancel()
	have, err := p.cfg.Leases.Leases(ctx, vlan)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vlan %q: shim address: %w", vlan, err)
	}
	var mine []netip.Addr
	for a, e := range have {
		if e.Held() && e.Kind == state.LeaseShim && e.Node == node {
			mine = append(mine, a)
		}
	}
	if len(mine) > 0 {
		slices.SortFunc(mine, netip.Addr.Compare)
		return mine[0], nil
	}
	free := FreeAddresses(pool, have, p.cfg.Now(), quarantineOf(v))
	for i := len(free) - 1; i >= 0; i-- {
		l := state.Lease{Node: node, Hostname: hostname, Kind: state.LeaseShim, Created: p.cfg.Now().UTC()}
		err := p.cfg.Leases.TakeLease(ctx, vlan, free[i].Addr, l, free[i].ModifyIndex)
		if err == nil {
			return free[i].Addr, nil
		}
		if !errors.Is(err, state.ErrLeaseTaken) {
			return netip.Addr{}, fmt.Errorf("vlan %q: shim address: %w", vlan, err)
		}
	}
	return netip.Addr{}, fmt.Errorf("vlan %q: shim address: pool %s exhausted", vlan, pool.Subnet)
}

// LeaseGrace is how old a task lease must be before GC may release it for
// want of an endpoint: Docker asks for the address before the endpoint
// exists, and a container may be between a restart's stop and start.
var LeaseGrace = 2 * time.Minute

// GC releases, through quarantine, this node's task leases on vlan that
// no endpoint on this node holds (have: the addresses of its containers on
// the VLAN, as the Engine reports them) and that are older than
// LeaseGrace: a release Docker's call never delivered (the plugin was
// away) does not leak for long. Only this node's own leases are touched,
// and only from what its own Engine reports: a partitioned node's
// containers may still be on the VLAN, so a session or a node seen down
// never frees anything here.
func (s *Server) GC(ctx context.Context, vlan string, have []netip.Addr) (int, error) {
	p := s.p
	node, _, err := p.identity()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, ConsulTimeout)
	defer cancel()
	leases, err := p.cfg.Leases.Leases(ctx, vlan)
	if err != nil {
		return 0, fmt.Errorf("vlan %q: lease gc: %w", vlan, err)
	}
	now := p.cfg.Now()
	n := 0
	for _, a := range Orphans(leases, node, have, now, LeaseGrace) {
		if err := p.cfg.Leases.ReleaseLease(ctx, vlan, a, node, now.UTC()); err != nil {
			return n, fmt.Errorf("vlan %q: lease gc: %w", vlan, err)
		}
		p.cfg.Log.Info("lease released: no endpoint holds it", "vlan", vlan, "address", a)
		n++
	}
	return n, nil
}

// Orphans lists node's task leases in force that no address in have holds
// and that are older than grace. Pure.
func Orphans(leases map[netip.Addr]state.LeaseEntry, node string, have []netip.Addr, now time.Time, grace time.Duration) []netip.Addr {
	held := map[netip.Addr]bool{}
	for _, a := range have {
		held[a] = true
	}
	var out []netip.Addr
	for a, e := range leases {
		if e.Held() && e.Node == node && e.Kind == state.LeaseTask && !held[a] && now.Sub(e.Created) >= grace {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// SlotRef names a replicated service's task slot.
type SlotRef struct {
	Service string
	Slot    int
}

// Annotate records, on this node's leases of vlan, the sticky slot each
// address serves (slots: address -> slot of the running task holding it),
// so that the slot's next task can get the address again. A slot that got
// a fresh address no longer claims its old one, and its new lease says
// which one it missed (FreshFor).
func (s *Server) Annotate(ctx context.Context, vlan string, slots map[netip.Addr]SlotRef) error {
	p := s.p
	node, _, err := p.identity()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, ConsulTimeout)
	defer cancel()
	have, err := p.cfg.Leases.Leases(ctx, vlan)
	if err != nil {
		return fmt.Errorf("vlan %q: sticky slots: %w", vlan, err)
	}
	// The slots' released addresses: a slot whose task holds another one
	// got a fresh address.
	released := map[SlotRef]netip.Addr{}
	for a, e := range have {
		if !e.Held() && e.Service != "" {
			released[SlotRef{e.Service, e.Slot}] = a
		}
	}
	held := map[SlotRef]netip.Addr{}
	for a, ref := range slots {
		held[ref] = a
		e, ok := have[a]
		if !ok || !e.Held() || e.Node != node || (e.Service == ref.Service && e.Slot == ref.Slot) {
			continue
		}
		l := e.Lease
		l.Service, l.Slot = ref.Service, ref.Slot
		if old, ok := released[ref]; ok && old != a {
			l.FreshFor = old.String()
		}
		if _, err := p.cfg.Leases.UpdateLease(ctx, vlan, a, l, e.ModifyIndex); err != nil {
			return fmt.Errorf("vlan %q: sticky slot of %s: %w", vlan, a, err)
		}
	}
	for a, e := range have {
		ref := SlotRef{e.Service, e.Slot}
		if e.Held() || e.Service == "" {
			continue
		}
		if now, ok := held[ref]; ok && now != a {
			p.cfg.Log.Warn("sticky slot got a fresh address: its address was not free for it", "vlan", vlan,
				"service", ref.Service, "slot", ref.Slot, "sticky", a, "fresh", now)
			l := e.Lease
			l.Service, l.Slot, l.ReservedFor = "", 0, ""
			if _, err := p.cfg.Leases.UpdateLease(ctx, vlan, a, l, e.ModifyIndex); err != nil {
				return fmt.Errorf("vlan %q: sticky slot of %s: %w", vlan, a, err)
			}
		}
	}
	return nil
}

// Held is an address one of this node's endpoints holds: a task's (Since
// is when its container was made) or the host's shim.
type Held struct {
	Kind  string
	Since time.Time
}

// Lost sorts the addresses this node's endpoints hold (held) whose lease
// is not this node's: missing, those whose lease is absent or was released
// before the holder was made (what a restore of a Consul snapshot leaves:
// the state of an earlier moment), which the node leases again; and taken,
// those leased in force to another node, which it cannot mend. A task's
// lease released after its container was made is Docker's release of a
// stopping task, not a loss. Pure.
func Lost(leases map[netip.Addr]state.LeaseEntry, node string, held map[netip.Addr]Held) (missing, taken []netip.Addr) {
	for a, h := range held {
		e, ok := leases[a]
		switch {
		case !ok:
			missing = append(missing, a)
		case e.Held() && e.Node == node:
		case e.Held():
			taken = append(taken, a)
		case h.Kind == state.LeaseShim || e.Released.Before(h.Since):
			missing = append(missing, a)
		}
	}
	slices.SortFunc(missing, netip.Addr.Compare)
	slices.SortFunc(taken, netip.Addr.Compare)
	return missing, taken
}

// Repair leases again to this node the addresses on vlan that its
// endpoints hold and whose leases are lost (see Lost), so that no other
// node is handed an address in use here after Consul's state was rolled
// back; an address leased to another node meanwhile is reported, not
// touched. It returns how many leases it wrote.
func (s *Server) Repair(ctx context.Context, vlan string, held map[netip.Addr]Held) (int, error) {
	if len(held) == 0 {
		return 0, nil
	}
	p := s.p
	node, hostname, err := p.identity()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, ConsulTimeout)
	defer cancel()
	leases, err := p.cfg.Leases.Leases(ctx, vlan)
	if err != nil {
		return 0, fmt.Errorf("vlan %q: lease repair: %w", vlan, err)
	}
	missing, taken := Lost(leases, node, held)
	n := 0
	var errs []error
	for _, a := range missing {
		l := state.Lease{Node: node, Hostname: hostname, Kind: held[a].Kind, Created: p.cfg.Now().UTC()}
		if err := p.cfg.Leases.TakeLease(ctx, vlan, a, l, leases[a].ModifyIndex); err != nil {
			errs = append(errs, fmt.Errorf("vlan %q: lease repair of %s: %w", vlan, a, err))
			continue
		}
		p.cfg.Log.Warn("lease restored: an endpoint of this node holds the address, its lease was gone (Consul's state rolled back?)",
			"vlan", vlan, "address", a, "kind", held[a].Kind)
		n++
	}
	for _, a := range taken {
		e := leases[a]
		errs = append(errs, fmt.Errorf("vlan %q: %s is in use on this node and leased to node %s (%s): two tasks may hold it; stop one", vlan, a, e.Node, e.Hostname))
	}
	return n, errors.Join(errs...)
}
