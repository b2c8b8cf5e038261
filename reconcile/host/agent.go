//go:build linux

package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/ipam"
	"swarmvlan/spec"
	"swarmvlan/state"
	"swarmvlan/state/backoff"
)

// Kinds of the host agent's synthetic keys. They are not spec kinds, so the
// Controller writes no status for them; the agent records its own.
const (
	// kindNetwork names the one reconcile of every VLAN on this host;
	// the key's Name is the node ID.
	kindNetwork = "HostNetwork"
	// kindRegistrations names the sync of this node's tasks with the
	// local Consul agent.
	kindRegistrations = "Registrations"
)

// keyRegistrations is the one registrations key of a host.
var keyRegistrations = reconcile.Key{Kind: kindRegistrations, Name: "local"}

// Host agent timings; variables so tests can shorten them.
var (
	identityBackoffMin = 500 * time.Millisecond
	identityBackoffMax = 30 * time.Second
	// configPoll is the period of the network reconcile run for want of
	// an event: Engine 20.10 announces no removal of a config-only network
	// (checked by hand with `docker events`). A pass that finds nothing to
	// do costs one network list and one netlink dump, and no Consul request.
	configPoll = 5 * time.Second
)

// reasonWaitChunk is the reason a VLAN is not ready before the leader
// gave this node a chunk of it.
const reasonWaitChunk = "waiting for a chunk"

// Config is what the host role needs.
type Config struct {
	Store  *state.Store
	Docker engine.Docker
	// View holds the spec documents in force; the daemon's shared spec
	// watch keeps it in step and passes the changed keys to Enqueue.
	View *reconcile.View
	// Net converges the kernel; nil leaves the kernel alone (no root, or no
	// netlink), and links are then reported as "not managed".
	Net *Net
	Log *slog.Logger
	// NodeTTL is the TTL of the session holding state/nodes/<nodeID>
	// (default 10s, Consul's minimum).
	NodeTTL time.Duration
	// Resync is the period of the full pass that catches drift no event
	// announces (default 5m).
	Resync time.Duration
	// SyncRegistrations registers this node's running tasks of services
	// with the local Consul agent; nil leaves registration off.
	SyncRegistrations func(ctx context.Context, services []*spec.Service) error
	// IPAM serves swarmvlan's IPAM plugin for cluster-mode VLANs and
	// leases the host's shim addresses on them; nil: cluster-mode VLANs
	// are not set up on this host, and their status says why.
	IPAM IPAMServer
	// RunningTasks, when set, is called after each successful
	// SyncRegistrations for the node's running tasks, recorded in
	// status/tasks/<node ID> (written only when it changed).
	RunningTasks func() []RunningTask
}

// IPAMServer is the IPAM plugin as the host role drives it
// (reconcile/ipam.Server).
type IPAMServer interface {
	// Ensure serves the plugin's socket when on, and stops when not.
	Ensure(on bool) error
	// Serving reports whether the socket is served, or why not.
	Serving() (bool, error)
	// ShimAddress leases (or returns the lease of) this host's shim
	// address on a cluster-mode VLAN.
	ShimAddress(ctx context.Context, vlan string) (netip.Addr, error)
	// GC releases this node's task leases on vlan that none of its
	// endpoints (have) holds any more.
	GC(ctx context.Context, vlan string, have []netip.Addr) (int, error)
	// Annotate records the sticky slot each of this node's addresses on
	// vlan serves.
	Annotate(ctx context.Context, vlan string, slots map[netip.Addr]ipam.SlotRef) error
	// Repair leases again to this node the addresses on vlan its
	// endpoints hold (held) whose leases are lost.
	Repair(ctx context.Context, vlan string, held map[netip.Addr]ipam.Held) (int, error)
}

// leaseHolderStates filters the containers whose endpoints hold
// addresses: every state in which Docker keeps a container's endpoint.
var leaseHolderStates = []string{"status", "running", "status", "paused", "status", "restarting"}

// leaseGCPeriod is how often the network pass collects this node's
// leases that no endpoint holds.
var leaseGCPeriod = 30 * time.Second

// reportSame compares what the leader acts on, leaving Updated out.
func reportSame(a, b *state.NodeReport) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Hostname == b.Hostname && maps.Equal(a.VLANs, b.VLANs) && reflect.DeepEqual(a.ConfigNetworks, b.ConfigNetworks) &&
		reflect.DeepEqual(a.Shims, b.Shims)
}

// Status is the Details of status/nodes/<nodeID>: what the host role
// observed and did on this node, per VLAN.
type Status struct {
	// Summary is the line `reconciler status` shows.
	Summary  string                `json:"summary"`
	Hostname string                `json:"hostname"`
	VLANs    map[string]VLANStatus `json:"vlans"`
	// Removing names VLANs gone from the spec whose config network stays
	// (in use, or Docker could not be asked), and why; their links stay
	// with it, so containers on them keep their network.
	Removing map[string]string `json:"removing,omitempty"`
}

// VLANStatus is one VLAN's state on this node.
type VLANStatus struct {
	// Parent is the interface containers ride on: the trunk or <trunk>.<id>.
	Parent string `json:"parent"`
	// Link, Shim and Route are "ok" or what is wrong (see NetStatus);
	// Link is "not managed" when the kernel is left alone.
	Link  string `json:"link"`
	Shim  string `json:"shim,omitempty"`
	Route string `json:"route,omitempty"`
	// ConfigNetwork is "ready", or the config network's state and why.
	ConfigNetwork string `json:"configNetwork"`
	Chunk         string `json:"chunk,omitempty"`
	Ready         bool   `json:"ready"`
	Reason        string `json:"reason,omitempty"`
}

// Agent is the host role: it learns this node's identity from the local
// Engine, registers the node's liveness in Consul, and converges the node's
// kernel state and config-only networks for every VLAN from the spec and
// this node's chunks, through one reconcile of all VLANs at a time.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	nodeID   string
	hostname string
	ctrl     *reconcile.Controller
	// chunks are this node's allocations by VLAN, as last read; nil until
	// the allocations were read once.
	chunks map[string]string
	// reg holds state/nodes/<nodeID> once registered; report is the latest
	// report and written the one last put in the key.
	reg         *state.NodeRegistration
	report      *state.NodeReport
	written     *state.NodeReport
	reportReady chan struct{} // closed when the first report exists

	// lastWant and known are only used by the network reconcile, which the
	// Controller never runs twice at once.
	//
	// lastWant is the kernel state last wanted per VLAN, so the links of a
	// VLAN gone from the spec stay while its config network does.
	lastWant map[string]VLAN
	// known names the VLANs this agent has had in its view: only their
	// config networks are removed when they leave it, so another
	// installation's networks on a shared Engine are left alone.
	known map[string]bool
	// remade remembers, per VLAN, the last re-creation of its config
	// network, so a disagreement with the Engine backs off instead of
	// re-creating the network on every pass its own events trigger.
	remade map[string]*remade
	// shims are this host's shim addresses on cluster-mode VLANs, as
	// leased; kept through Consul outages.
	shims map[string]netip.Addr
	// taskRoutes are the addresses of this host's containers on each
	// cluster-mode VLAN, as last listed: kept while Docker is away.
	taskRoutes map[string][]netip.Prefix
	// cluster is set while a cluster-mode VLAN is in force: container
	// starts and stops then also wake the network pass (the shim routes
	// each task's address).
	cluster atomic.Bool
	// lastGC is when the leases were last collected.
	lastGC time.Time
	// annotated is the sticky slots last recorded per VLAN.
	annotated map[string]string
	// held is, per cluster-mode VLAN, what this node's endpoints held at
	// the last listing; leases is the lease watch's last answer (nil
	// before one). Both under mu.
	held   map[string]map[netip.Addr]ipam.Held
	leases map[string]map[netip.Addr]state.LeaseEntry
	// lastPass is how long the last network reconcile took, by part.
	lastPass passTimes
	// adoptedShims are the adopted shims as last read (nil before the
	// first read): kept through Consul outages.
	adoptedShims map[string]state.AdoptedShim
	// pools are the address pools of hand-made config networks the Engine
	// does not report (see handMadePools), by network ID.
	pools map[string][]network.IPAMConfig
	// probeNext is, per hand-made network whose probe failed, when it
	// may be made again.
	probeNext map[string]time.Time
}

// passTimes splits one network reconcile's duration.
type passTimes struct {
	Net, Docker, Total time.Duration
}

// NewAgent returns an agent; Run starts it.
func NewAgent(cfg Config) *Agent {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.NodeTTL <= 0 {
		cfg.NodeTTL = 10 * time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 5 * time.Minute
	}
	a := &Agent{
		cfg:         cfg,
		log:         cfg.Log,
		reportReady: make(chan struct{}),
		lastWant:    map[string]VLAN{},
		known:       map[string]bool{},
		remade:      map[string]*remade{},
		shims:       map[string]netip.Addr{},
		taskRoutes:  map[string][]netip.Prefix{},
		annotated:   map[string]string{},
		pools:       map[string][]network.IPAMConfig{},
		probeNext:   map[string]time.Time{},
	}
	return a
}

// Identity returns this node's swarm node ID and hostname, empty until Run
// has learnt them from the Engine.
func (a *Agent) Identity() (nodeID, hostname string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nodeID, a.hostname
}

func (a *Agent) setIdentity(nodeID, hostname string) {
	a.mu.Lock()
	a.nodeID, a.hostname = nodeID, hostname
	a.mu.Unlock()
}

func (a *Agent) networkKey() reconcile.Key {
	nodeID, _ := a.Identity()
	return reconcile.Key{Kind: kindNetwork, Name: nodeID}
}

// Enqueue takes the keys the daemon's spec watch saw change (every kind):
// VLAN and Host documents concern the network reconcile, Service documents
// the registrations. Before Run has started its controller, keys are
// dropped: its first pass reads everything anyway.
func (a *Agent) Enqueue(ks []reconcile.Key) {
	_, hostname := a.Identity()
	var net, reg bool
	for _, k := range ks {
		switch k.Kind {
		case spec.KindVLAN:
			net = true
		case spec.KindHost:
			// Other hosts' overrides do not concern this one.
			net = net || hostname == "" || k.Name == hostname
		case spec.KindService:
			reg = true
		}
	}
	a.enqueue(net, reg)
}

func (a *Agent) enqueue(net, reg bool) {
	a.mu.Lock()
	c := a.ctrl
	a.mu.Unlock()
	if c == nil {
		return
	}
	if net {
		c.Enqueue(a.networkKey())
	}
	if reg {
		c.Enqueue(keyRegistrations)
	}
}

// Run learns the node's identity, then reconciles until ctx is done. It
// never returns because Consul or Docker is away: it waits for them.
func (a *Agent) Run(ctx context.Context) error {
	nodeID, hostname, ok := a.waitIdentity(ctx)
	if !ok {
		return nil
	}
	a.setIdentity(nodeID, hostname)
	a.log.Info("host identity", "node", nodeID, "hostname", hostname)

	ctrl := &reconcile.Controller{
		Store:   a.cfg.Store,
		View:    a.cfg.View,
		Log:     a.log,
		Workers: 2,
		Resync:  a.cfg.Resync,
		Keys: func() []reconcile.Key {
			return []reconcile.Key{a.networkKey(), keyRegistrations}
		},
		// Its statuses are the dashboard's: after a restore they are
		// written again within minutes, at a cost every host pays.
		RollbackPace: time.Minute,
		StatusOf: func(k reconcile.Key) (string, string, bool) {
			if k == keyRegistrations {
				return state.SectionTasks, nodeID, nodeID != ""
			}
			return state.SectionNodes, k.Name, k.Kind == kindNetwork && k.Name != ""
		},
	}
	ctrl.Register(kindNetwork, reconcile.ReconcilerFunc(func(ctx context.Context, _ reconcile.Key, _ *reconcile.Doc) reconcile.Outcome {
		return a.reconcileNetwork(ctx)
	}))
	ctrl.Register(kindRegistrations, reconcile.ReconcilerFunc(func(ctx context.Context, _ reconcile.Key, _ *reconcile.Doc) reconcile.Outcome {
		return a.reconcileRegistrations(ctx)
	}))
	a.mu.Lock()
	a.ctrl = ctrl
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.ctrl = nil
		a.mu.Unlock()
	}()

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ctrl.Run(ctx) })
	g.Go(func() error { a.watchAllocations(ctx); return nil })
	if a.cfg.IPAM != nil {
		g.Go(func() error { a.watchLeases(ctx); return nil })
	}
	g.Go(func() error { a.register(ctx); return nil })
	g.Go(func() error {
		for ev := range engine.Events(ctx, a.cfg.Docker, "network", "container") {
			switch {
			case ev.Type == engine.EventResync:
				a.enqueue(true, true)
			case ev.Type == "network":
				a.enqueue(true, false)
			case ev.Type == "container" && !strings.HasPrefix(ev.Action, "exec_"):
				a.enqueue(a.cluster.Load() && (ev.Action == "start" || ev.Action == "die"), true)
			}
		}
		return nil
	})
	g.Go(func() error {
		t := time.NewTicker(configPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				a.enqueue(true, false)
			}
		}
	})
	if a.cfg.Net != nil {
		g.Go(func() error {
			for range a.cfg.Net.Watch(ctx) {
				a.enqueue(true, false)
			}
			return nil
		})
	}
	return g.Wait()
}

// waitIdentity asks the Engine for the swarm node ID and hostname until it
// answers with both; false when ctx ended first.
func (a *Agent) waitIdentity(ctx context.Context) (nodeID, hostname string, ok bool) {
	for attempt := 0; ; attempt++ {
		info, err := a.cfg.Docker.Info(ctx)
		switch {
		case err == nil && info.Swarm.NodeID != "" && info.Swarm.LocalNodeState == swarm.LocalNodeStateActive:
			return info.Swarm.NodeID, info.Name, true
		case ctx.Err() != nil:
			return "", "", false
		}
		wait := backoff.Delay(identityBackoffMin, identityBackoffMax, attempt)
		if err != nil {
			a.log.Warn("docker engine unreachable; waiting", "err", err, "retry_in", wait.Round(time.Millisecond))
		} else {
			a.log.Warn("engine is not an active swarm node; waiting", "state", info.Swarm.LocalNodeState, "retry_in", wait.Round(time.Millisecond))
		}
		if !backoff.Sleep(ctx, wait) {
			return "", "", false
		}
	}
}

// watchLeases keeps a.leases in step with the cluster-mode VLANs' leases
// and asks for a network pass, which mends them, when an address this
// node's endpoints hold has lost its lease: after a restore of a Consul
// snapshot rolled state/ back, within the watch's answer rather than the
// next periodic pass, so that no other node is handed it meanwhile.
func (a *Agent) watchLeases(ctx context.Context) {
	nodeID, _ := a.Identity()
	_ = a.cfg.Store.WatchPrefix(ctx, a.cfg.Store.LeasesRoot(), state.WatchOptions{}, func(pairs api.KVPairs, _ uint64) {
		leases, bad := a.cfg.Store.DecodeLeases(pairs)
		for _, b := range bad {
			a.log.Warn("lease unreadable", "err", b)
		}
		a.mu.Lock()
		a.leases = leases
		lost := false
		for vlan, held := range a.held {
			missing, taken := ipam.Lost(leases[vlan], nodeID, held)
			lost = lost || len(missing) > 0 || len(taken) > 0
		}
		a.mu.Unlock()
		if lost {
			a.enqueue(true, false)
		}
	})
}

// allocationRoot is <prefix>state/allocations/, the parent of every
// VLAN's AllocationPrefix.
func allocationRoot(s *state.Store) string {
	return strings.TrimSuffix(s.AllocationPrefix(""), "/")
}

// watchAllocations keeps a.chunks in step with this node's allocations and
// asks for a network reconcile when they change.
func (a *Agent) watchAllocations(ctx context.Context) {
	root := allocationRoot(a.cfg.Store)
	nodeID, _ := a.Identity()
	_ = a.cfg.Store.WatchPrefix(ctx, root, state.WatchOptions{}, func(pairs api.KVPairs, _ uint64) {
		a.mu.Lock()
		prev := a.chunks
		a.mu.Unlock()
		chunks, bad := chunksOf(root, nodeID, pairs, prev)
		for _, b := range bad {
			a.log.Warn("allocation unreadable; keeping the chunk in force", "err", b)
		}
		a.mu.Lock()
		changed := a.chunks == nil || !maps.Equal(a.chunks, chunks)
		a.chunks = chunks
		a.mu.Unlock()
		if changed {
			a.enqueue(true, false)
		}
	})
}

// chunksOf picks this node's chunks out of every allocation under root,
// by VLAN. A record that does not decode keeps the chunk prev had for its
// VLAN: a broken write must not take a chunk away from running containers.
func chunksOf(root, nodeID string, pairs api.KVPairs, prev map[string]string) (map[string]string, []error) {
	out := map[string]string{}
	var bad []error
	for _, p := range pairs {
		vlan, node, ok := strings.Cut(strings.TrimPrefix(p.Key, root), "/")
		if !ok || vlan == "" || node != nodeID {
			continue
		}
		var al state.Allocation
		if err := json.Unmarshal(p.Value, &al); err != nil || al.Chunk == "" {
			if err == nil {
				err = errors.New("no chunk")
			}
			bad = append(bad, fmt.Errorf("allocation %s: %w", p.Key, err))
			if c, ok := prev[vlan]; ok {
				out[vlan] = c
			}
			continue
		}
		out[vlan] = al.Chunk
	}
	return out, bad
}

// setChunks sets this node's chunks as if read from KV (tests).
func (a *Agent) setChunks(chunks map[string]string) {
	a.mu.Lock()
	a.chunks = maps.Clone(chunks)
	if a.chunks == nil {
		a.chunks = map[string]string{}
	}
	a.mu.Unlock()
}

// register holds state/nodes/<nodeID> from the first report on. Waiting for
// the first pass keeps a restarting agent from announcing its node with no
// ready VLAN before it has even looked, which would make the leader pull the
// node's readiness labels and Swarm move its tasks away.
func (a *Agent) register(ctx context.Context) {
	select {
	case <-a.reportReady:
	case <-ctx.Done():
		return
	}
	nodeID, _ := a.Identity()
	a.mu.Lock()
	r := *a.report
	a.mu.Unlock()
	value, err := reportValue(r)
	if err != nil {
		a.log.Error("encode node report", "err", err)
		return
	}
	reg, err := a.cfg.Store.RegisterNode(ctx, nodeID, value, a.cfg.NodeTTL)
	if err != nil {
		return // only when ctx is done: RegisterNode waits out Consul
	}
	a.mu.Lock()
	a.reg, a.written = reg, &r
	a.mu.Unlock()
	a.log.Info("node registered", "key", a.cfg.Store.NodeKey(nodeID))
	// A pass that ran meanwhile may have a newer report to write.
	a.enqueue(true, false)
	<-ctx.Done()
	a.mu.Lock()
	a.reg = nil
	a.mu.Unlock()
	if err := reg.Close(); err != nil {
		a.log.Warn("deregister node", "err", err)
	}
}

func reportValue(r state.NodeReport) ([]byte, error) {
	r.Updated = time.Now().UTC()
	return json.Marshal(r)
}

// publishReport keeps the node key's value in step with r, writing only
// when readiness changed.
func (a *Agent) publishReport(ctx context.Context, r state.NodeReport) error {
	a.mu.Lock()
	first := a.report == nil
	a.report = &r
	reg, written := a.reg, a.written
	a.mu.Unlock()
	if first {
		close(a.reportReady)
	}
	if reg == nil || reportSame(written, &r) {
		return nil
	}
	value, err := reportValue(r)
	if err != nil {
		return fmt.Errorf("node report: encode: %w", err)
	}
	if err := reg.Update(ctx, value); err != nil {
		// Update keeps the value for re-registrations even when the write
		// failed, so what the key will hold is unknown: write again next time.
		a.mu.Lock()
		if a.reg == reg {
			a.written = nil
		}
		a.mu.Unlock()
		return err
	}
	a.mu.Lock()
	if a.reg == reg {
		a.written = &r
	}
	a.mu.Unlock()
	return nil
}

// reconcileRegistrations passes the services in force to SyncRegistrations.
func (a *Agent) reconcileRegistrations(ctx context.Context) reconcile.Outcome {
	if a.cfg.SyncRegistrations == nil {
		return reconcile.Done()
	}
	docs := a.cfg.View.List(spec.KindService)
	svcs := make([]*spec.Service, 0, len(docs))
	for _, d := range docs {
		svcs = append(svcs, d.Object.(*spec.Service))
	}
	if err := a.cfg.SyncRegistrations(ctx, svcs); err != nil {
		nodeID, _ := a.Identity()
		return reconcile.Retry(fmt.Errorf("node %s: sync registrations: %w", nodeID, err))
	}
	if a.cfg.RunningTasks == nil {
		return reconcile.Done()
	}
	_, hostname := a.Identity()
	return reconcile.Done().With(NewTaskReport(hostname, a.cfg.RunningTasks()))
}

// vlanWant is what one VLAN needs on this host, from its document, the
// Host document and this node's chunk.
type vlanWant struct {
	Net     VLAN
	Driver  string
	Subnet  netip.Prefix
	Gateway netip.Addr
	// Chunk is the chunk as allocated, for status ("" without one).
	Chunk string
	// Cluster is set for a cluster-mode VLAN: no chunk, the addresses
	// come from swarmvlan's IPAM plugin.
	Cluster bool
	// ConfigName is the config network's Docker name (spec.docker).
	ConfigName string
	// Problem is why the VLAN cannot be set up here whatever the kernel
	// and Docker do (an allocation outside the subnet).
	Problem string
}

// desired computes what every VLAN needs on a host whose Host document
// is host (nil: none) and whose chunks by VLAN are chunks. Pure.
func desired(vlans []*spec.VLAN, host *spec.Host, chunks map[string]string) []vlanWant {
	out := make([]vlanWant, 0, len(vlans))
	for _, v := range vlans {
		w := vlanWant{
			Net: VLAN{
				Name:        v.Metadata.Name,
				Trunk:       host.TrunkFor(v),
				ID:          v.Spec.ID,
				MTU:         v.Spec.MTU,
				Promiscuous: spec.BoolOr(v.Spec.Promiscuous, true),
				HostAccess:  spec.BoolOr(v.Spec.HostAccess, true),
				Mode:        v.Spec.Mode,
				Driver:      spec.VLANDriver(v.Spec.Driver),
			},
			Driver:  v.Spec.Driver,
			Chunk:   chunks[v.Metadata.Name],
			Cluster: v.RangeMode() == spec.RangeModeCluster,
		}
		if w.Cluster {
			w.Chunk = ""
		}
		if n := v.ConfigNetworkDockerName(); n != spec.ConfigNetworkName(v.Metadata.Name) {
			w.ConfigName = n
		}
		subnet, err := netip.ParsePrefix(v.Spec.Subnet)
		if err != nil {
			w.Problem = fmt.Sprintf("subnet %q: %v", v.Spec.Subnet, err)
			out = append(out, w)
			continue
		}
		w.Subnet = subnet.Masked()
		if v.Spec.Gateway != "" {
			if gw, err := netip.ParseAddr(v.Spec.Gateway); err == nil {
				w.Gateway = gw
			}
		}
		if w.Chunk != "" {
			chunk, err := netip.ParsePrefix(w.Chunk)
			switch {
			case err != nil:
				w.Problem = fmt.Sprintf("allocated chunk %q: %v", w.Chunk, err)
			case chunk.Bits() < w.Subnet.Bits() || !w.Subnet.Contains(chunk.Addr()):
				w.Problem = fmt.Sprintf("allocated chunk %s is outside subnet %s", chunk, w.Subnet)
			default:
				w.Net.Chunk = chunk.Masked()
				if w.Net.HostAccess {
					w.Net.ShimAddr = spec.ShimAddress(w.Subnet, w.Net.Chunk)
				}
			}
		}
		out = append(out, w)
	}
	sharedParents(out)
	return out
}

// sharedParents gives every VLAN whose parent (its sub-interface, or its
// trunk when untagged) is already another's, by name order, the problem
// that says so. Engines 20.10 to 26 refuse the task of a second macvlan or
// ipvlan network on one parent while 27 and later accept it, so the rule
// is swarmvlan's own, the same on every Engine: a VLAN converges wherever
// it validates, or nowhere.
func sharedParents(wants []vlanWant) {
	order := make([]int, len(wants))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return wants[order[a]].Net.Name < wants[order[b]].Net.Name })
	first := map[string]string{}
	for _, i := range order {
		w := &wants[i]
		if w.Net.Trunk == "" {
			continue
		}
		parent := spec.SubInterfaceName(w.Net.Trunk, w.Net.ID)
		other, taken := first[parent]
		switch {
		case !taken:
			first[parent] = w.Net.Name
		case w.Problem == "":
			w.Problem = fmt.Sprintf("parent %s is already vlan %q's: each VLAN needs a parent of its own on a host (a tag or trunk of its own), as Engines before 27 refuse a second network on one parent", parent, other)
		}
	}
}

// observedVLAN is what one pass saw and did for one VLAN.
type observedVLAN struct {
	// Managed says the kernel is managed here; Net is then its status, or
	// nil when the kernel could not be read (NetErr says why).
	Managed bool
	Net     *NetStatus
	NetErr  error
	// Config is the config network's status; nil when not attempted.
	Config *state.NetworkStatus
}

// vlanStatusOf derives a VLAN's status and readiness: ready when its
// link is up, its shim and route are in place (with host access), it holds
// a chunk and its config network is as wanted. Problems the operator must
// fix come before waiting for a chunk. Pure.
func vlanStatusOf(w vlanWant, o observedVLAN) VLANStatus {
	st := VLANStatus{Parent: spec.SubInterfaceName(w.Net.Trunk, w.Net.ID), Chunk: w.Chunk}
	switch {
	case !o.Managed:
		st.Link = "not managed"
	case o.Net == nil:
		st.Link = "unknown: " + errText(o.NetErr)
	default:
		st.Link, st.Shim, st.Route = o.Net.Link, o.Net.Shim, o.Net.Route
	}
	linkOK := !o.Managed || (o.Net != nil && o.Net.Link == "ok")
	hasChunk := w.Net.Chunk.IsValid() || w.Cluster
	switch {
	case o.Config != nil:
		st.ConfigNetwork = o.Config.State
		if o.Config.State != state.NetworkReady && o.Config.Message != "" {
			st.ConfigNetwork += ": " + o.Config.Message
		}
	case w.Problem != "":
		st.ConfigNetwork = "not created: " + w.Problem
	case !hasChunk:
		st.ConfigNetwork = "not created: " + reasonWaitChunk
	case !linkOK:
		st.ConfigNetwork = "not created: waiting for parent " + st.Parent
	default:
		st.ConfigNetwork = "not created"
	}
	switch {
	case w.Problem != "":
		st.Reason = w.Problem
	case o.Managed && o.Net == nil:
		st.Reason = "host network: " + errText(o.NetErr)
	case o.Managed && o.Net.Link != "ok":
		st.Reason = o.Net.Reason
	case !hasChunk:
		st.Reason = reasonWaitChunk
	case o.Managed && !o.Net.Ready:
		st.Reason = o.Net.Reason
		if st.Reason == "" {
			st.Reason = "host network not ready"
		}
	case o.Config == nil || o.Config.State != state.NetworkReady:
		st.Reason = "config network " + w.configNetwork().name() + " " + st.ConfigNetwork
	}
	st.Ready = st.Reason == ""
	return st
}

func errText(err error) string {
	if err == nil {
		return "not observed"
	}
	return err.Error()
}

// netPass is the outcome of one network reconcile.
type netPass struct {
	Status Status
	Report state.NodeReport
	// DockerAway is set when the Engine could not be asked: the pass's
	// readiness is then a guess, not an observation.
	DockerAway bool
	Errs       []error
	Requeue    bool
	Times      passTimes
	// adopted are the adopted networks by ID, read when a VLAN names its
	// Docker networks (nil otherwise, or when they could not be read).
	adopted map[string]state.AdoptedNetwork
}

// converge runs one pass over every VLAN of this host: it removes the
// config networks of VLANs gone from the spec (when unused), converges the
// kernel, then creates or fixes the config network of every VLAN whose
// chunk and link are in place. ok is false, and nothing is done, until
// both the view and this node's allocations have been read: acting on
// state never read would tear down what runs.
func (a *Agent) converge(ctx context.Context) (p *netPass, ok bool) {
	start := time.Now()
	select {
	case <-a.cfg.View.Synced():
	default:
		return nil, false
	}
	a.mu.Lock()
	chunks, hostname := a.chunks, a.hostname
	a.mu.Unlock()
	if chunks == nil {
		return nil, false
	}
	vlans, inView, held := a.viewVLANs()
	host, _ := a.cfg.View.Host(hostname)
	want := desired(vlans, host, chunks)
	ipamErrs := a.clusterWants(ctx, want)

	p = &netPass{Status: Status{Hostname: hostname, VLANs: map[string]VLANStatus{}},
		Report: state.NodeReport{Hostname: hostname, VLANs: map[string]state.NodeVLANReport{}}}
	p.Errs = append(p.Errs, ipamErrs...)

	// Docker first: a VLAN gone from the spec keeps its links while its
	// config network stays, so removal decides what the kernel keeps.
	dockerStart := time.Now()
	nets, listErr := a.cfg.Docker.NetworkList(ctx, engine.Filter())
	if listErr != nil {
		listErr = fmt.Errorf("list networks: %w", listErr)
		p.Errs = append(p.Errs, listErr)
		p.DockerAway = true
	}
	var handMade []state.NodeConfigNetwork
	if listErr == nil {
		var err error
		if handMade, err = a.handMadePools(ctx, nets, handMadeConfigNetworks(nets)); err != nil {
			p.Errs = append(p.Errs, err)
		}
		p.Report.ConfigNetworks = handMade
	}
	a.readAdopted(ctx, p, vlans, len(handMade) > 0, want)
	keep := a.removeStale(ctx, p, nets, listErr, inView, held, chunks)
	dockerTime := time.Since(dockerStart)

	hvs := a.kernelWant(want, keep, nets, listErr)
	var netSt map[string]NetStatus
	var netErr error
	netStart := time.Now()
	if a.cfg.Net != nil {
		netSt, netErr = a.cfg.Net.Ensure(ctx, hvs)
		if netErr != nil {
			p.Errs = append(p.Errs, netErr)
		}
		parents := map[string]bool{}
		for _, c := range handMade {
			parents[c.Parent] = true
		}
		p.Report.Shims = a.cfg.Net.HandMadeShims(parents)
	}
	p.Times.Net = time.Since(netStart)

	dockerStart = time.Now()
	for _, w := range want {
		o := observedVLAN{Managed: a.cfg.Net != nil, NetErr: netErr}
		if s, ok := netSt[w.Net.Name]; ok {
			o.Net = &s
		}
		linkOK := !o.Managed || (o.Net != nil && o.Net.Link == "ok")
		if w.Problem == "" && (w.Net.Chunk.IsValid() || w.Cluster) && linkOK {
			o.Config = a.ensureConfig(ctx, nets, listErr, w, p)
		}
		st := vlanStatusOf(w, o)
		p.Status.VLANs[w.Net.Name] = st
		p.Report.VLANs[w.Net.Name] = state.NodeVLANReport{Ready: st.Ready, Reason: st.Reason, Chunk: w.Chunk}
	}
	p.Times.Docker = dockerTime + time.Since(dockerStart)

	for _, w := range want {
		a.lastWant[w.Net.Name] = w.Net
	}
	for vlan := range a.lastWant {
		if _, kept := keep[vlan]; !inView[vlan] && !kept {
			delete(a.lastWant, vlan)
		}
	}
	if len(keep) > 0 {
		p.Status.Removing = keep
	}
	p.Status.Summary = statusSummary(p.Status)
	p.Times.Total = time.Since(start)
	return p, true
}

// readAdopted reads the adoption records of the pass: only a VLAN with
// Docker names of its own can have adopted networks and shims, and only an
// Engine with hand-made config networks can hold an adopted one whose VLAN
// is gone, so the records are read for those alone. Each want whose
// hand-made shim on this node was taken over gets that shim's name and
// address; while the shim records were never read, such VLANs keep their
// shims as they are.
func (a *Agent) readAdopted(ctx context.Context, p *netPass, vlans []*spec.VLAN, handMade bool, want []vlanWant) {
	named := map[string]bool{}
	for _, v := range vlans {
		if v.Spec.Docker != nil {
			named[v.Metadata.Name] = true
		}
	}
	if a.cfg.Store == nil || (len(named) == 0 && !handMade) {
		return
	}
	adopted, err := a.cfg.Store.AdoptedNetworksList(ctx)
	if err != nil {
		p.Errs = append(p.Errs, err)
		adopted = nil
	}
	p.adopted = adopted
	if len(named) == 0 {
		return
	}
	if shims, err := a.cfg.Store.AdoptedShimsList(ctx); err != nil {
		p.Errs = append(p.Errs, err)
	} else {
		a.adoptedShims = shims
	}
	nodeID, _ := a.Identity()
	for i := range want {
		w := &want[i]
		if !named[w.Net.Name] || !w.Net.HostAccess || w.Cluster {
			continue
		}
		if a.adoptedShims == nil {
			w.Net.ShimHold = true
			continue
		}
		rec, ok := a.adoptedShims[state.AdoptedShimID(w.Net.Name, nodeID)]
		if !ok {
			continue
		}
		addr, err := netip.ParseAddr(rec.Addr)
		if err != nil || rec.Name == "" {
			w.Net.ShimHold = true
			w.Problem = fmt.Sprintf("adopted shim record %s: no name or no readable address (%q)", state.AdoptedShimID(w.Net.Name, nodeID), rec.Addr)
			continue
		}
		w.Net.Shim = rec.Name
		if w.Net.Chunk.IsValid() {
			w.Net.ShimAddr = addr
		}
	}
}

// clusterWants completes the wants of cluster-mode VLANs: the plugin is
// served while there is one, and each gets this host's shim address (a
// lease of the pool). A VLAN whose plugin is not served, or whose shim
// address cannot be leased yet, gets the problem that says so and is not
// ready. The errors make the pass retry.
func (a *Agent) clusterWants(ctx context.Context, want []vlanWant) []error {
	some := false
	for _, w := range want {
		some = some || w.Cluster
	}
	if a.cfg.IPAM == nil {
		for i := range want {
			if want[i].Cluster && want[i].Problem == "" {
				want[i].Problem = "rangePlan.mode cluster needs swarmvlan's IPAM plugin, which this host role does not serve"
			}
		}
		return nil
	}
	a.cluster.Store(some)
	var errs []error
	if err := a.cfg.IPAM.Ensure(some); err != nil {
		errs = append(errs, err)
	}
	if some {
		if err := a.listTaskRoutes(ctx, want); err != nil {
			errs = append(errs, err)
		}
	}
	serving, serveErr := a.cfg.IPAM.Serving()
	for i := range want {
		w := &want[i]
		if !w.Cluster || w.Problem != "" {
			continue
		}
		if !serving {
			w.Problem = "ipam plugin not served: " + errText(serveErr)
			continue
		}
		if !w.Net.HostAccess {
			continue
		}
		shim, ok := a.shims[w.Net.Name]
		if !ok {
			var err error
			if shim, err = a.cfg.IPAM.ShimAddress(ctx, w.Net.Name); err != nil {
				w.Problem = "shim address: " + err.Error()
				errs = append(errs, err)
				continue
			}
			a.shims[w.Net.Name] = shim
		}
		w.Net.Cluster, w.Net.ShimAddr = true, shim
		w.Net.TaskRoutes = a.taskRoutes[w.Net.Name]
	}
	return errs
}

// listTaskRoutes reads the addresses of this host's containers on every
// cluster-mode VLAN's swarm network (named after the VLAN) into
// a.taskRoutes. With Docker away the last list stays in force.
//
// Paused and restarting containers are listed with the running ones: they
// keep their endpoints, so their addresses are routed and, above all,
// their leases are not collected as orphans (a paused task's address
// handed to another task would be a duplicate once it is unpaused).
func (a *Agent) listTaskRoutes(ctx context.Context, want []vlanWant) error {
	ctrs, err := a.cfg.Docker.ContainerList(ctx, engine.Filter(leaseHolderStates...))
	if err != nil {
		return fmt.Errorf("list containers for the shim routes: %w", err)
	}
	gc := time.Since(a.lastGC) >= leaseGCPeriod
	var errs []error
	for _, w := range want {
		if !w.Cluster {
			continue
		}
		routes := taskRoutesOf(ctrs, w.Net.Name, w.Subnet)
		a.taskRoutes[w.Net.Name] = routes
		if w.Problem == "" {
			if err := a.repairLeases(ctx, w.Net.Name, heldOf(ctrs, w.Net.Name, w.Subnet)); err != nil {
				errs = append(errs, err)
			}
		}
		if w.Problem == "" {
			slots := stickySlots(ctrs, w.Net.Name, w.Subnet, a.stickyServices())
			if key := fmt.Sprint(slots); a.annotated[w.Net.Name] != key {
				if err := a.cfg.IPAM.Annotate(ctx, w.Net.Name, slots); err != nil {
					errs = append(errs, err)
				} else {
					a.annotated[w.Net.Name] = key
				}
			}
		}
		if !gc || w.Problem != "" {
			continue
		}
		have := make([]netip.Addr, 0, len(routes))
		for _, r := range routes {
			have = append(have, r.Addr())
		}
		if _, err := a.cfg.IPAM.GC(ctx, w.Net.Name, have); err != nil {
			errs = append(errs, err)
		}
	}
	if gc && len(errs) == 0 {
		a.lastGC = time.Now()
	}
	return errors.Join(errs...)
}

// repairLeases records what this node's endpoints hold on vlan (held,
// the shim's address added) for the lease watch, and mends lost leases:
// when the watch's last answer shows one lost, or has not come.
func (a *Agent) repairLeases(ctx context.Context, vlan string, held map[netip.Addr]ipam.Held) error {
	if shim, ok := a.shims[vlan]; ok {
		held[shim] = ipam.Held{Kind: state.LeaseShim}
	}
	nodeID, _ := a.Identity()
	a.mu.Lock()
	if a.held == nil {
		a.held = map[string]map[netip.Addr]ipam.Held{}
	}
	a.held[vlan] = held
	known, seen := a.leases[vlan], a.leases != nil
	a.mu.Unlock()
	if seen {
		if missing, taken := ipam.Lost(known, nodeID, held); len(missing) == 0 && len(taken) == 0 {
			return nil
		}
	}
	_, err := a.cfg.IPAM.Repair(ctx, vlan, held)
	return err
}

// heldOf is what the containers' endpoints on the network name hold in
// subnet: each task's address, since its container was made.
func heldOf(ctrs []container.Summary, name string, subnet netip.Prefix) map[netip.Addr]ipam.Held {
	out := map[netip.Addr]ipam.Held{}
	for _, c := range ctrs {
		if c.NetworkSettings == nil || c.NetworkSettings.Networks[name] == nil {
			continue
		}
		if ip, err := netip.ParseAddr(c.NetworkSettings.Networks[name].IPAddress); err == nil && subnet.Contains(ip) {
			out[ip] = ipam.Held{Kind: state.LeaseTask, Since: time.Unix(c.Created, 0).UTC()}
		}
	}
	return out
}

// stickyServices names, by their Swarm names, the services in force with
// addresses: sticky.
func (a *Agent) stickyServices() map[string]bool {
	out := map[string]bool{}
	for _, d := range a.cfg.View.List(spec.KindService) {
		if svc := d.Object.(*spec.Service); svc.Spec.Addresses == spec.AddressesSticky {
			out[svc.DockerServiceName()] = true
		}
	}
	return out
}

// stickySlots maps the address on network name of every task container of
// a sticky service to its slot, read from the labels Swarm gives task
// containers (com.docker.swarm.task.name is "<service>.<slot>.<task id>").
// Pure.
func stickySlots(ctrs []container.Summary, name string, subnet netip.Prefix, sticky map[string]bool) map[netip.Addr]ipam.SlotRef {
	out := map[netip.Addr]ipam.SlotRef{}
	for _, c := range ctrs {
		svc := c.Labels["com.docker.swarm.service.name"]
		if !sticky[svc] || c.NetworkSettings == nil || c.NetworkSettings.Networks[name] == nil {
			continue
		}
		rest, ok := strings.CutPrefix(c.Labels["com.docker.swarm.task.name"], svc+".")
		if !ok {
			continue
		}
		slotText, _, _ := strings.Cut(rest, ".")
		slot, err := strconv.Atoi(slotText)
		if err != nil || slot < 1 {
			continue
		}
		ip, err := netip.ParseAddr(c.NetworkSettings.Networks[name].IPAddress)
		if err != nil || !subnet.Contains(ip) {
			continue
		}
		out[ip] = ipam.SlotRef{Service: svc, Slot: slot}
	}
	return out
}

// taskRoutesOf collects the /32 of every container's address on network
// name inside subnet, sorted. Pure.
func taskRoutesOf(ctrs []container.Summary, name string, subnet netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for a := range heldOf(ctrs, name, subnet) {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

// viewVLANs reads the VLANs in force from the view, the names the pass
// must not treat as gone (inView), and those held as they are because
// their stored document is invalid with no valid version seen (a stricter
// validation after an upgrade, a bad put before this process started):
// their config network and links stay until the document is fixed or
// deleted.
func (a *Agent) viewVLANs() (vlans []*spec.VLAN, inView map[string]bool, held map[string]string) {
	docs := a.cfg.View.List(spec.KindVLAN)
	vlans = make([]*spec.VLAN, 0, len(docs))
	inView = make(map[string]bool, len(docs))
	for _, d := range docs {
		v := d.Object.(*spec.VLAN)
		vlans = append(vlans, v)
		inView[v.Metadata.Name] = true
		a.known[v.Metadata.Name] = true
	}
	held = map[string]string{}
	for _, k := range a.cfg.View.Keys() {
		if _, bad := a.cfg.View.Invalid(k); bad && k.Kind == spec.KindVLAN && !inView[k.Name] {
			inView[k.Name] = true
			held[k.Name] = "kept: the VLAN document is invalid; nothing is changed until it is fixed or deleted"
		}
	}
	return vlans, inView, held
}

// removeStale removes the config networks of this installation's VLANs
// gone from the view, when unused, and returns the VLANs whose config
// network stays (with why): their links stay with it. With Docker away
// nothing is removed and every VLAN gone from the view is kept.
func (a *Agent) removeStale(ctx context.Context, p *netPass, nets []network.Summary, listErr error, inView map[string]bool, held, chunks map[string]string) map[string]string {
	known := maps.Clone(a.known)
	for vlan := range chunks {
		// A chunk under this prefix shows the VLAN was this installation's.
		known[vlan] = true
	}
	keep := maps.Clone(held)
	if listErr != nil {
		for vlan := range a.lastWant {
			if !inView[vlan] {
				keep[vlan] = "kept: Docker cannot be asked whether its config network is in use"
			}
		}
		return keep
	}
	for _, c := range staleConfigNetworks(nets, inView, known, p.adopted) {
		vlan := c.VLAN
		st, err := removeConfigNetwork(ctx, a.cfg.Docker, c)
		if err != nil {
			p.Errs = append(p.Errs, err)
		}
		if st.State != state.NetworkAbsent {
			keep[vlan] = "config network " + st.Name + " " + st.State
			if st.Message != "" {
				keep[vlan] += ": " + st.Message
			}
		}
		p.Requeue = p.Requeue || st.Requeue
	}
	return keep
}

// kernelWant is the kernel state of the pass: every VLAN wanted, and every
// kept one as it was last wanted or, for a VLAN gone from the spec before
// this process saw it, as its config network records it (what its
// containers ride on).
func (a *Agent) kernelWant(want []vlanWant, keep map[string]string, nets []network.Summary, listErr error) []VLAN {
	hvs := make([]VLAN, 0, len(want)+len(keep))
	for _, w := range want {
		hvs = append(hvs, w.Net)
	}
	for vlan := range keep {
		hv, ok := a.lastWant[vlan]
		if !ok && listErr == nil {
			if n, found := configNetworkOf(nets, vlan); found {
				hv, ok = vlanFromConfig(vlan, n)
			}
		}
		if ok {
			a.lastWant[vlan] = hv
			hvs = append(hvs, hv)
		}
	}
	return hvs
}

// ensureConfig converges one VLAN's config network, with no further Docker
// call when the pass's network list shows it as wanted. A pass that
// re-creates the network reports it waiting, not ready: readiness comes
// from the next pass that reads it back as wanted. When the Engine reports
// the same difference again right after a re-creation, the two disagree
// about what the network holds: the network is left as it is, the status
// says so, and it is re-created again only after a back-off that doubles
// each time (remadeBackoff), so the Engine's events of the pass's own
// writes never make it spin.
func (a *Agent) ensureConfig(ctx context.Context, nets []network.Summary, listErr error, w vlanWant, p *netPass) *state.NetworkStatus {
	want := w.configNetwork()
	name := want.name()
	if listErr != nil {
		return &state.NetworkStatus{Name: name, State: state.NetworkError, Message: listErr.Error()}
	}
	if st, ok := a.adoptedConfig(nets, w, p); ok {
		return st
	}
	n, diff, found := configState(nets, want)
	if found && len(diff) == 0 {
		delete(a.remade, w.Net.Name)
		return &state.NetworkStatus{Name: n.Name, ID: n.ID, State: state.NetworkReady}
	}
	now := time.Now()
	r := a.remade[w.Net.Name]
	reason := strings.Join(diff, ", ")
	if r != nil && found && reason == r.reason && now.Before(r.next) {
		p.Requeue = true
		return &state.NetworkStatus{Name: n.Name, ID: n.ID, State: state.NetworkError,
			Message: fmt.Sprintf("the engine reports %s again after the network was re-created (%d times); not re-creating it before %s",
				reason, r.times, r.next.UTC().Format(time.RFC3339))}
	}
	st, err := EnsureConfigNetwork(ctx, a.cfg.Docker, want)
	if made, ok := strings.CutPrefix(st.Message, recreatedPrefix); ok && err == nil {
		if r == nil || r.reason != made {
			r = &remade{reason: made}
		}
		r.times++
		r.next = now.Add(backoff.Delay(remadeBackoff, remadeBackoffMax, r.times-1))
		a.remade[w.Net.Name] = r
		st.State, st.Requeue = state.NetworkWaiting, true
	}
	if err != nil {
		p.Errs = append(p.Errs, err)
	} else if st.Message != "" {
		a.log.Info("config network", "vlan", w.Net.Name, "state", st.State, "message", st.Message)
	}
	p.Requeue = p.Requeue || st.Requeue
	return &st
}

// remade is the last re-creation of a VLAN's config network: why, how
// many times in a row for that reason, and when it may happen again.
type remade struct {
	reason string
	times  int
	next   time.Time
}

// recreatedPrefix starts the status message of a re-created network
// (reconcile.Plan.MadeMessage).
const recreatedPrefix = "recreated: "

// The back-off between re-creations of a config network for the same
// reason.
const (
	remadeBackoff    = 10 * time.Second
	remadeBackoffMax = 10 * time.Minute
)

// statusSummary is the one line `reconciler status` shows for the node.
func statusSummary(st Status) string {
	ready := 0
	for _, v := range st.VLANs {
		if v.Ready {
			ready++
		}
	}
	s := fmt.Sprintf("%d of %d VLANs ready", ready, len(st.VLANs))
	if len(st.Removing) > 0 {
		s += fmt.Sprintf(", %d being removed", len(st.Removing))
	}
	return s
}

// readyCondition is the node status's Ready condition: true when every
// VLAN is ready, else the first unready VLAN's reason.
func readyCondition(st Status) state.Condition {
	names := make([]string, 0, len(st.VLANs))
	for n := range st.VLANs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if v := st.VLANs[n]; !v.Ready {
			return state.Condition{Type: "Ready", Status: "False", Reason: "VLANNotReady", Message: fmt.Sprintf("vlan %s: %s", n, v.Reason)}
		}
	}
	return state.Condition{Type: "Ready", Status: "True", Reason: "VLANsReady"}
}

// reconcileNetwork is the network reconcile: one pass, then its status in
// status/nodes/<nodeID> and its readiness in state/nodes/<nodeID>, each
// written only when changed.
func (a *Agent) reconcileNetwork(ctx context.Context) reconcile.Outcome {
	p, ok := a.converge(ctx)
	if !ok {
		// The allocation watch asks again after its first read.
		return reconcile.Done()
	}
	a.lastPass = p.Times
	a.log.Debug("host pass", "vlans", len(p.Status.VLANs), "net", p.Times.Net, "docker", p.Times.Docker, "total", p.Times.Total)
	errs := p.Errs
	// With the Engine away the report keeps its last observation: a flip to
	// "not ready" would make the leader take the node's readiness labels and
	// Swarm stop the tasks on it, because Docker was briefly unreachable.
	if !p.DockerAway {
		if err := a.publishReport(ctx, p.Report); err != nil {
			errs = append(errs, err)
		}
	}
	out := reconcile.Retry(errors.Join(errs...))
	if len(errs) == 0 && p.Requeue {
		// A config network in use: look again once containers may have
		// left (their network events often announce it sooner).
		out = reconcile.RequeueAfter(configPoll)
	}
	// The controller writes it to status/nodes/<nodeID> (see StatusOf).
	return out.With(p.Status, readyCondition(p.Status))
}

// adoptedConfig handles a VLAN's config network that was taken over from a
// hand-made setup (recorded by ID under state/adopted/networks): ok is
// true when nets holds one under the wanted name, and st is then its
// status. It is never re-created or removed.
func (a *Agent) adoptedConfig(nets []network.Summary, w vlanWant, p *netPass) (st *state.NetworkStatus, ok bool) {
	want := w.configNetwork()
	var n network.Summary
	for _, c := range nets {
		if c.Name == want.name() && c.ConfigOnly && !spec.Managed(c.Labels) {
			n, ok = c, true
		}
	}
	if !ok || p.adopted == nil {
		return nil, false
	}
	rec, adopted := p.adopted[n.ID]
	if !adopted || rec.VLAN != w.Net.Name || rec.Role != state.AdoptedConfigNetwork {
		return nil, false
	}
	if pools, ok := a.pools[n.ID]; ok && len(n.IPAM.Config) == 0 {
		// The Engine does not report it (see handMadePools).
		n.IPAM.Config = pools
	}
	if diff := adoptedConfigDiff(want, n); len(diff) > 0 {
		return &state.NetworkStatus{Name: n.Name, ID: n.ID, State: state.NetworkError,
			Message: "adopted network differs: " + strings.Join(diff, ", ") + "; it is never re-created: fix the document (spec.rangePlan.pinned) or re-make the network by hand"}, true
	}
	return &state.NetworkStatus{Name: n.Name, ID: n.ID, State: state.NetworkReady}, true
}
