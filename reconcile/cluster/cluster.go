package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/swarm"
	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
	"swarmvlan/state/backoff"
)

// Synthetic key kinds of the leader's passes over many objects.
const (
	kindNodeLabels    = "NodeLabels"
	kindServiceResync = "ServiceResync"
)

// Config configures the leader's reconcilers.
type Config struct {
	Store  *state.Store
	Docker engine.Docker
	View   *reconcile.View
	Log    *slog.Logger
	// Workers and Resync are passed to the controller.
	Workers int
	Resync  time.Duration
	// Sweep is the period of the pass that finds managed Docker objects
	// whose document is gone (deleted while no leader ran).
	Sweep time.Duration
	// NodeDownGrace is how long a node must be down in Swarm before the
	// leader removes its tasks' entries from Consul's catalog (default 1m).
	NodeDownGrace time.Duration
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Cluster runs the leader-only reconcilers: the range plan, the swarm
// networks, the services with their replica counts, and the readiness
// labels. It runs only while its process holds the leader lock; every
// Consul write it makes is fenced by that lock.
type Cluster struct {
	cfg  Config
	ctrl *reconcile.Controller
	lead atomic.Pointer[state.Leadership]
	// owner is this installation's ID (see state.Store.InstallationID).
	owner atomic.Pointer[string]

	mu      sync.Mutex
	reports map[string]state.NodeReport // node ID -> last report from its host role
	scales  map[string]uint64           // state/scale key -> ModifyIndex seen
	// intents are the scale intents the scale watch last delivered, by
	// service (nil value: unreadable), and intentsOf the term whose watch
	// delivered them: a service's reconcile takes its intent from there
	// instead of asking Consul, once this term's watch has answered.
	intents   map[string]*state.ScaleIntent
	intentsOf *state.Leadership
	// netIDs are the swarm networks' IDs, by VLAN, as the VLAN reconcile
	// last found them ready: a service's reconcile resolves its networks
	// from here instead of listing them.
	netIDs map[string]string
	// passedOf is the term in which the batch pass over the services last
	// succeeded.
	passedOf *state.Leadership
	// planMemo is the batch pass's memory of the services it found
	// matching (the controller runs one pass at a time).
	planMemo ServicePlanMemo
	down     nodeDownTracker
	// surplus holds, by Docker name, when a service was first seen
	// running more tasks than wanted (see watchSurplus).
	surplus map[string]time.Time
	// gcLast is what the catalog clean-up's last read found.
	gcLast gcRead
}

// New returns the leader's reconcilers.
func New(cfg Config) *Cluster {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = time.Minute
	}
	if cfg.NodeDownGrace <= 0 {
		cfg.NodeDownGrace = time.Minute
	}
	c := &Cluster{cfg: cfg, reports: map[string]state.NodeReport{}, scales: map[string]uint64{}, netIDs: map[string]string{}, surplus: map[string]time.Time{}}
	c.ctrl = &reconcile.Controller{Store: cfg.Store, View: cfg.View, Log: cfg.Log, Workers: cfg.Workers, Resync: cfg.Resync,
		Periodic: []reconcile.Key{{Kind: kindNodeLabels, Name: "all"}, {Kind: kindDiscoveryGC, Name: "all"}, {Kind: kindServiceResync, Name: "all"}, {Kind: kindSticky, Name: "all"}},
		Batched:  []string{spec.KindService}, PrimeStatus: []string{spec.Plural(spec.KindService), spec.Plural(spec.KindVLAN)}}
	c.ctrl.Register(spec.KindVLAN, reconcile.ReconcilerFunc(c.reconcileVLAN))
	c.ctrl.Register(spec.KindService, reconcile.ReconcilerFunc(c.reconcileService))
	c.ctrl.Register(kindNodeLabels, reconcile.ReconcilerFunc(c.reconcileNodeLabels))
	c.ctrl.Register(kindDiscoveryGC, reconcile.ReconcilerFunc(c.reconcileDiscoveryGC))
	c.ctrl.Register(kindServiceResync, reconcile.ReconcilerFunc(c.reconcileServiceResync))
	c.ctrl.Register(kindSticky, reconcile.ReconcilerFunc(c.reconcileSticky))
	return c
}

// Controller is the controller the cluster runs on (for metrics hooks).
func (c *Cluster) Controller() *reconcile.Controller { return c.ctrl }

// Enqueue takes spec changes from the shared spec watch. A VLAN or Host
// change also concerns the services on it and the range plan.
func (c *Cluster) Enqueue(ks []reconcile.Key) {
	for _, k := range ks {
		c.ctrl.Enqueue(k)
		switch k.Kind {
		case spec.KindHost:
			c.ctrl.EnqueueKind(spec.KindVLAN)
		case spec.KindVLAN:
			for _, d := range c.cfg.View.List(spec.KindService) {
				if svcUsesVLAN(d.Object.(*spec.Service), k.Name) {
					c.ctrl.Enqueue(d.Key)
				}
			}
			c.ctrl.Enqueue(reconcile.Key{Kind: kindNodeLabels, Name: "all"})
		}
	}
}

func svcUsesVLAN(s *spec.Service, vlan string) bool {
	for _, n := range s.Spec.Networks {
		if n == vlan {
			return true
		}
	}
	return false
}

// Run runs the cluster reconcilers for one leadership term; it returns when
// the leadership context ends.
func (c *Cluster) Run(lead *state.Leadership) error {
	ctx := lead.Context()
	for attempt := 0; c.owner.Load() == nil; attempt++ {
		id, err := c.cfg.Store.InstallationID(ctx)
		if err == nil {
			c.owner.Store(&id)
			break
		}
		c.cfg.Log.Warn("read installation id", "err", err)
		if !backoff.Sleep(ctx, backoff.Delay(time.Second, 30*time.Second, attempt)) {
			return nil
		}
	}
	c.lead.Store(lead)
	defer c.lead.Store(nil)
	// Status written for this term only, fenced by it.
	c.ctrl.StatusWriter = lead.NewStatusWriter
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.ctrl.Run(ctx) })
	g.Go(func() error { c.watchDocker(ctx); return nil })
	g.Go(func() error {
		return ignoreCanceled(c.cfg.Store.WatchPrefix(ctx, c.cfg.Store.NodePrefix(), state.WatchOptions{}, c.onNodeReports))
	})
	g.Go(func() error {
		return ignoreCanceled(c.cfg.Store.WatchPrefix(ctx, c.cfg.Store.ScalePrefix(), state.WatchOptions{}, func(pairs api.KVPairs, idx uint64) {
			c.onScaleIntents(lead, pairs, idx)
		}))
	})
	g.Go(func() error { c.sweepLoop(ctx); return nil })
	return g.Wait()
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// watchDocker maps Docker events to keys, so hand edits and removals are
// repaired at once; a reconnect of the event stream means events may have
// been missed, so everything is looked at again.
func (c *Cluster) watchDocker(ctx context.Context) {
	for ev := range engine.Events(ctx, c.cfg.Docker, "service", "network", "node", "secret", "config") {
		switch {
		case ev.Type == engine.EventResync:
			c.ctrl.EnqueueKind(spec.KindVLAN)
			c.ctrl.EnqueueKind(spec.KindService)
			c.ctrl.Enqueue(reconcile.Key{Kind: kindNodeLabels, Name: "all"})
		case ev.Type == "service":
			if name := ev.Name; name != "" {
				if _, known := c.cfg.View.Get(reconcile.Key{Kind: spec.KindService, Name: name}); known || ev.Action == "remove" {
					c.ctrl.Enqueue(reconcile.Key{Kind: spec.KindService, Name: name})
				}
			}
		case ev.Type == "network":
			name := strings.TrimSuffix(ev.Name, "-config")
			if _, known := c.cfg.View.VLAN(name); known {
				c.ctrl.Enqueue(reconcile.Key{Kind: spec.KindVLAN, Name: name})
			}
		case ev.Type == "secret" || ev.Type == "config":
			// A service refused for a missing secret or config waits for it.
			for _, d := range c.cfg.View.List(spec.KindService) {
				ss := &d.Object.(*spec.Service).Spec
				names := ss.SecretNames()
				if ev.Type == "config" {
					names = ss.ConfigNames()
				}
				if slices.Contains(names, ev.Name) {
					c.ctrl.Enqueue(d.Key)
				}
			}
		case ev.Type == "node":
			c.ctrl.EnqueueKind(spec.KindVLAN)
			c.ctrl.Enqueue(reconcile.Key{Kind: kindNodeLabels, Name: "all"})
			c.ctrl.Enqueue(reconcile.Key{Kind: kindDiscoveryGC, Name: "all"})
		}
	}
}

func (c *Cluster) onNodeReports(pairs api.KVPairs, _ uint64) {
	reports, bad := c.cfg.Store.NodeReports(pairs)
	for node, err := range bad {
		c.cfg.Log.Warn("unreadable node report", "node", node, "err", err)
	}
	c.mu.Lock()
	c.reports = reports
	c.mu.Unlock()
	c.ctrl.Enqueue(reconcile.Key{Kind: kindNodeLabels, Name: "all"})
	// A node that became ready may be the one the leader needs to create
	// the swarm network from; a new node needs a chunk.
	c.ctrl.EnqueueKind(spec.KindVLAN)
}

func (c *Cluster) onScaleIntents(lead *state.Leadership, pairs api.KVPairs, _ uint64) {
	c.mu.Lock()
	seen := map[string]uint64{}
	intents := make(map[string]*state.ScaleIntent, len(pairs))
	var changed []string
	for _, p := range pairs {
		seen[p.Key] = p.ModifyIndex
		name, ok := c.cfg.Store.ParseScaleKey(p.Key)
		if !ok {
			continue
		}
		var si state.ScaleIntent
		if json.Unmarshal(p.Value, &si) == nil {
			intents[name] = &si
		} else {
			intents[name] = nil
		}
		if c.scales[p.Key] != p.ModifyIndex {
			changed = append(changed, name)
		}
	}
	c.intents, c.intentsOf = intents, lead
	for k := range c.scales {
		if _, still := seen[k]; still {
			continue
		}
		if name, ok := c.cfg.Store.ParseScaleKey(k); ok {
			changed = append(changed, name)
		}
	}
	c.scales = seen
	c.mu.Unlock()
	for _, name := range changed {
		c.ctrl.Enqueue(reconcile.Key{Kind: spec.KindService, Name: name})
	}
}

// sweepLoop finds managed services and VLAN allocations whose document is
// gone (deleted while no leader ran) and queues them for removal. It runs
// only on a view that was read, never on one held back from an empty read.
func (c *Cluster) sweepLoop(ctx context.Context) {
	select {
	case <-c.cfg.View.Synced():
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(c.cfg.Sweep)
	defer t.Stop()
	for {
		if c.cfg.View.Held() == 0 {
			if err := c.sweep(ctx); err != nil && ctx.Err() == nil {
				c.cfg.Log.Warn("sweep", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Cluster) sweep(ctx context.Context) error {
	svcs, err := ListManagedServices(ctx, c.cfg.Docker)
	if err != nil {
		return err
	}
	for name, s := range svcs {
		if doc := s.Spec.Labels[spec.LabelName]; doc != "" && doc != name {
			// A service under a Docker name of its own (spec.dockerName)
			// belongs to the document its labels name.
			name = doc
		}
		k := reconcile.Key{Kind: spec.KindService, Name: name}
		_, valid := c.cfg.View.Get(k)
		_, invalid := c.cfg.View.Invalid(k)
		if !valid && !invalid && s.Spec.Labels[spec.LabelOwner] == c.ownerID() {
			c.ctrl.Enqueue(k)
		}
	}
	vlans, err := c.cfg.Store.AllocationVLANs(ctx)
	if err != nil {
		return fmt.Errorf("list allocations: %w", err)
	}
	for _, vlan := range vlans {
		key := reconcile.Key{Kind: spec.KindVLAN, Name: vlan}
		_, valid := c.cfg.View.Get(key)
		_, invalid := c.cfg.View.Invalid(key)
		if vlan != "" && !valid && !invalid {
			c.ctrl.Enqueue(key)
		}
	}
	return nil
}

// VLANDetails is the leader's part of status/vlans/<name>.
type VLANDetails struct {
	Summary string `json:"summary"`
	// Mode is the range plan's mode when it is cluster ("" for chunks).
	Mode string `json:"mode,omitempty"`
	// Leases counts, in mode cluster, the addresses each node holds
	// (hostname -> count, shim included); LeasesQuarantined those released
	// and not yet free.
	Leases            map[string]int      `json:"leases,omitempty"`
	LeasesQuarantined int                 `json:"leasesQuarantined,omitempty"`
	Allocations       map[string]string   `json:"allocations,omitempty"` // hostname -> chunk
	Quarantined       map[string]string   `json:"quarantined,omitempty"` // chunk -> until (RFC 3339)
	Unallocated       []string            `json:"unallocated,omitempty"`
	Network           state.NetworkStatus `json:"network"`
	Problems          []string            `json:"problems,omitempty"`
}

func (c *Cluster) ownerID() string {
	if p := c.owner.Load(); p != nil {
		return *p
	}
	return ""
}

func (c *Cluster) leadership() (*state.Leadership, error) {
	l := c.lead.Load()
	if l == nil {
		return nil, state.ErrNotLeader
	}
	return l, nil
}

func (c *Cluster) reconcileVLAN(ctx context.Context, k reconcile.Key, doc *reconcile.Doc) reconcile.Outcome {
	lead, err := c.leadership()
	if err != nil {
		return reconcile.Retry(err)
	}
	if doc == nil {
		return c.removeVLAN(ctx, lead, k.Name)
	}
	vlan := doc.Object.(*spec.VLAN)
	if vlan.RangeMode() == spec.RangeModeCluster {
		return c.reconcileClusterVLAN(ctx, lead, k, vlan)
	}
	if out, refused := c.refuseChunksOverLeases(ctx, k.Name); refused {
		return out
	}
	plan, err := vlan.Plan()
	if err != nil {
		return reconcile.Terminal(fmt.Errorf("vlan %q: plan: %w", k.Name, err))
	}
	swarmNodes, err := c.cfg.Docker.NodeList(ctx, engine.Filter())
	if err != nil {
		return reconcile.Retry(fmt.Errorf("vlan %q: list nodes: %w", k.Name, err))
	}
	nodes := make([]SwarmNode, 0, len(swarmNodes))
	hostnames := map[string]string{}
	for _, n := range swarmNodes {
		nodes = append(nodes, SwarmNode{ID: n.ID, Hostname: n.Description.Hostname})
		hostnames[n.ID] = n.Description.Hostname
	}
	var hosts []*spec.Host
	for _, d := range c.cfg.View.List(spec.KindHost) {
		hosts = append(hosts, d.Object.(*spec.Host))
	}
	pinned, problems := pinnedChunks(plan, k.Name, hosts)
	have, indexes, err := c.cfg.Store.Allocations(ctx, k.Name)
	if err != nil {
		return reconcile.Retry(fmt.Errorf("vlan %q: read allocations: %w", k.Name, err))
	}
	now := c.cfg.Now()
	quarantine := vlan.Spec.RangePlan.Quarantine.Duration()
	if vlan.Spec.RangePlan.Quarantine == "" {
		quarantine = spec.Duration(spec.DefaultQuarantine).Duration()
	}
	res := planAllocations(plan, pinned, nodes, have, now, quarantine)
	for _, id := range sortedKeys(res.Put) {
		a := res.Put[id]
		b, err := json.Marshal(a)
		if err != nil {
			return reconcile.Retry(err)
		}
		ok, err := lead.CAS(ctx, c.cfg.Store.AllocationKey(k.Name, id), b, indexes[id])
		if err != nil {
			return reconcile.Retry(fmt.Errorf("vlan %q: allocate %s to %s: %w", k.Name, a.Chunk, id, err))
		}
		if !ok {
			return reconcile.Retry(fmt.Errorf("vlan %q: allocation of %s changed meanwhile; planning again", k.Name, id))
		}
		have[id] = a
	}
	for _, id := range res.Delete {
		if _, err := lead.Delete(ctx, c.cfg.Store.AllocationKey(k.Name, id), indexes[id]); err != nil {
			return reconcile.Retry(fmt.Errorf("vlan %q: release chunk of departed node %s: %w", k.Name, id, err))
		}
		delete(have, id)
	}

	det := VLANDetails{Allocations: map[string]string{}, Unallocated: res.Unallocated, Problems: append(problems, res.Problems...)}
	for id, a := range have {
		if a.Left != nil {
			if det.Quarantined == nil {
				det.Quarantined = map[string]string{}
			}
			det.Quarantined[a.Chunk] = a.Left.Add(quarantine).UTC().Format(time.RFC3339)
			continue
		}
		name := hostnames[id]
		if name == "" {
			name = a.Hostname
		}
		det.Allocations[name] = a.Chunk
	}
	sw := SwarmNetwork{VLAN: k.Name, Driver: vlan.Spec.Driver, Name: vlan.NetworkDockerName(), ConfigName: vlan.ConfigNetworkDockerName()}
	if vlan.Spec.Docker != nil {
		// Only a VLAN with Docker names of its own can have adopted
		// networks: the records are read for those alone.
		if sw.Adopted, err = c.cfg.Store.AdoptedNetworksList(ctx); err != nil {
			return reconcile.Retry(fmt.Errorf("vlan %q: %w", k.Name, err))
		}
	}
	netSt, netErr := EnsureSwarmNetwork(ctx, c.cfg.Docker, sw)
	det.Network = netSt
	c.mu.Lock()
	if netSt.State == state.NetworkReady && netSt.ID != "" {
		c.netIDs[k.Name] = netSt.ID
	} else {
		delete(c.netIDs, k.Name)
	}
	c.mu.Unlock()

	ready := netSt.State == state.NetworkReady && len(det.Unallocated) == 0 && len(det.Problems) == 0
	var why []string
	if netSt.State != state.NetworkReady {
		why = append(why, fmt.Sprintf("swarm network %s: %s", netSt.State, netSt.Message))
	}
	if len(det.Unallocated) > 0 {
		why = append(why, fmt.Sprintf("pool exhausted: no chunk for %s", strings.Join(det.Unallocated, ", ")))
	}
	why = append(why, det.Problems...)
	det.Summary = fmt.Sprintf("%d chunk(s) allocated, network %s", len(det.Allocations), netSt.State)
	out := vlanOutcome(netErr, netSt, res.NextRelease, now, reconcile.Done())
	return out.With(&det, readyCondition(ready, strings.Join(why, "; ")))
}

// refuseChunksOverLeases refuses mode chunks on a VLAN whose addresses
// were leased in mode cluster while tasks still use it: chunks handed out
// now would overlap the running tasks' addresses. Once no service uses the
// VLAN the leases are forgotten and chunks are planned.
func (c *Cluster) refuseChunksOverLeases(ctx context.Context, vlan string) (reconcile.Outcome, bool) {
	have, err := c.cfg.Store.Leases(ctx, vlan)
	if err != nil {
		return reconcile.Retry(fmt.Errorf("vlan %q: read leases: %w", vlan, err)), true
	}
	if len(have) == 0 {
		return reconcile.Done(), false
	}
	users, err := c.vlanUsers(ctx, vlan)
	if err != nil {
		return reconcile.Retry(fmt.Errorf("vlan %q: users: %w", vlan, err)), true
	}
	if len(users) > 0 {
		msg := fmt.Sprintf("rangePlan.mode chunks refused while addresses leased in mode cluster are in use by %s: remove those services (or set mode cluster again) first", strings.Join(users, ", "))
		return reconcile.Poll(10*time.Second).With(&VLANDetails{Summary: msg, Problems: []string{msg}}, readyCondition(false, msg)), true
	}
	lead, err := c.leadership()
	if err != nil {
		return reconcile.Retry(err), true
	}
	for a, e := range have {
		if _, err := lead.Delete(ctx, c.cfg.Store.LeaseKey(vlan, a), e.ModifyIndex); err != nil {
			return reconcile.Retry(fmt.Errorf("vlan %q: forget lease %s for mode chunks: %w", vlan, a, err)), true
		}
	}
	return reconcile.Done(), false
}

// removeVLAN removes the swarm network once no service uses it, then the
// allocations. While a service still uses the network it stays, and the
// status says what blocks removal.
func (c *Cluster) removeVLAN(ctx context.Context, lead *state.Leadership, name string) reconcile.Outcome {
	c.mu.Lock()
	delete(c.netIDs, name)
	c.mu.Unlock()
	st, err := RemoveSwarmNetwork(ctx, c.cfg.Docker, name)
	if err == nil && st.State == state.NetworkAbsent {
		st, err = c.removeAdopted(ctx, name)
	}
	if err != nil {
		return reconcile.Retry(err).With(&VLANDetails{Network: st})
	}
	if st.State == state.NetworkInUse || st.Requeue {
		det := &VLANDetails{Network: st, Summary: "document deleted; network kept: " + st.Message}
		return reconcile.Poll(10*time.Second).With(det,
			readyCondition(false, "document deleted; removal blocked: "+st.Message+" (remove or move those services first)"))
	}
	_, indexes, err := c.cfg.Store.Allocations(ctx, name)
	if err != nil {
		return reconcile.Retry(fmt.Errorf("vlan %q: read allocations: %w", name, err))
	}
	for id, idx := range indexes {
		if _, err := lead.Delete(ctx, c.cfg.Store.AllocationKey(name, id), idx); err != nil {
			return reconcile.Retry(fmt.Errorf("vlan %q: release allocation of %s: %w", name, id, err))
		}
	}
	c.ctrl.Enqueue(reconcile.Key{Kind: kindNodeLabels, Name: "all"})
	return reconcile.Gone()
}

// ServiceDetails is the leader's part of status/services/<name>.
type ServiceDetails struct {
	Summary  string        `json:"summary"`
	Replicas int           `json:"replicas"`
	Scaled   *int          `json:"scaled,omitempty"`
	Service  ServiceStatus `json:"service"`
}

func (c *Cluster) reconcileService(ctx context.Context, k reconcile.Key, doc *reconcile.Doc) reconcile.Outcome {
	if _, err := c.leadership(); err != nil {
		return reconcile.Retry(err)
	}
	if doc == nil {
		have, err := svcOfDeleted(ctx, c.cfg.Docker, k.Name)
		switch {
		case engine.IsNotFound(err):
			return reconcile.Gone()
		case err != nil:
			return reconcile.Retry(fmt.Errorf("service %q: inspect: %w", k.Name, err))
		case have.Spec.Labels[spec.LabelOwner] != c.ownerID():
			// Made by another installation (or by hand): not ours to remove.
			return reconcile.Gone()
		}
		if err := RemoveService(ctx, c.cfg.Docker, k.Name); err != nil {
			return reconcile.Retry(err)
		}
		return reconcile.Gone()
	}
	svc := doc.Object.(*spec.Service)
	var missing []string
	for _, n := range svc.Spec.Networks {
		if _, ok := c.cfg.View.VLAN(n); !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		// Queued again when the VLAN document appears (see Enqueue).
		err := fmt.Errorf("service %q: spec.networks: no VLAN document named %s", k.Name, strings.Join(missing, ", "))
		return reconcile.Terminal(err).With(nil, readyCondition(false, err.Error()))
	}
	intent, found, err := c.scaleIntent(ctx, k.Name)
	if err != nil {
		return reconcile.Retry(fmt.Errorf("service %q: read scale intent: %w", k.Name, err))
	}
	var scaled *int
	if found {
		scaled = &intent.Replicas
	}
	replicas := EffectiveReplicas(svc, scaled)
	names := c.networkNames(svc)
	// The swarm networks' IDs by Docker name, which the service's
	// attachments name.
	c.mu.Lock()
	netIDs := make(map[string]string, len(c.netIDs))
	for vlan, id := range c.netIDs {
		if dn := names[vlan]; dn != "" {
			vlan = dn
		}
		netIDs[vlan] = id
	}
	c.mu.Unlock()
	in := ServiceInput{Service: svc, Replicas: replicas, Owner: c.ownerID(), NetworkNames: names, NetworkIDs: netIDs}
	if svc.Spec.DockerName != "" {
		// Only a service with a Docker name of its own can be adopted:
		// the records are read for those alone.
		if in.Adopted, err = c.cfg.Store.AdoptedServicesList(ctx); err != nil {
			return reconcile.Retry(fmt.Errorf("service %q: %w", k.Name, err))
		}
	}
	st, err := EnsureService(ctx, c.cfg.Docker, in)
	if err == nil {
		if _, serr := c.watchSurplus(ctx, st.Name, st, svc.Spec.IsGlobal()); serr != nil {
			c.cfg.Log.Warn("surplus tasks", "err", serr)
		}
	}
	if err != nil && !errors.Is(err, errAdoptedWaiting) {
		// A network re-created since (a new ID) fails the update; the
		// retry lists them.
		c.mu.Lock()
		for _, n := range svc.Spec.Networks {
			delete(c.netIDs, n)
		}
		c.mu.Unlock()
	}
	return serviceOutcome(replicas, scaled, st, err)
}

// serviceOutcome is a service's outcome and status from what EnsureService
// (or the batch pass, for a service it found converged) observed.
func serviceOutcome(replicas int, scaled *int, st ServiceStatus, err error) reconcile.Outcome {
	det := &ServiceDetails{Replicas: replicas, Scaled: scaled, Service: st}
	det.Summary = fmt.Sprintf("%d/%d tasks running", st.Running, st.Desired)
	if errors.Is(err, errAdoptedWaiting) {
		return reconcile.Poll(2*time.Second).With(det, readyCondition(false, st.Message))
	}
	if err != nil {
		out := reconcile.Retry(err)
		if serviceErrTerminal(err) {
			out = reconcile.Terminal(err)
		}
		return out.With(det, readyCondition(false, err.Error()))
	}
	ready := st.Running == st.Desired
	out := reconcile.Done()
	msg := st.Message
	if !ready {
		// Look again until the tasks run, so the status follows them.
		out = reconcile.Poll(2 * time.Second)
		if msg == "" {
			msg = taskProblems(st.Tasks)
		}
	}
	return out.With(det, readyCondition(ready, msg))
}

// scaleIntent is the service's scale intent as this term's scale watch
// last delivered it (the watch queues the service again when it changes),
// read from Consul before that watch has answered or when the delivered
// value was unreadable (the read then reports why).
func (c *Cluster) scaleIntent(ctx context.Context, name string) (state.ScaleIntent, bool, error) {
	lead, _ := c.leadership()
	c.mu.Lock()
	si, found := c.intents[name]
	fresh := lead != nil && c.intentsOf == lead && (si != nil || !found)
	c.mu.Unlock()
	if fresh {
		if !found {
			return state.ScaleIntent{}, false, nil
		}
		return *si, true, nil
	}
	intent, _, found, err := c.cfg.Store.ScaleIntent(ctx, name)
	return intent, found, err
}

// networkNames maps the VLANs a service joins to their swarm networks'
// Docker names, where those differ from the VLAN's name.
func (c *Cluster) networkNames(svc *spec.Service) map[string]string {
	var out map[string]string
	for _, n := range svc.Spec.Networks {
		if v, ok := c.cfg.View.VLAN(n); ok && v.NetworkDockerName() != n {
			if out == nil {
				out = map[string]string{}
			}
			out[n] = v.NetworkDockerName()
		}
	}
	return out
}

// reconcileServiceResync converges every service in one pass (one Docker
// list, no update for a service that already matches), at the start of a
// term and on every resync. A service it found converged and running
// everywhere gets its status from the pass (written only when it
// changed); one that needed a change, failed, or is not yet running
// everywhere goes to its own reconcile, which records its status. When
// the pass fails as a whole before one has succeeded in this term, every
// service goes to its own reconcile, so each status says why.
func (c *Cluster) reconcileServiceResync(ctx context.Context, _ reconcile.Key, _ *reconcile.Doc) reconcile.Outcome {
	lead, err := c.leadership()
	if err != nil {
		return reconcile.Retry(err)
	}
	intents, err := c.scaleIntentsAll(ctx, lead)
	if err != nil {
		return reconcile.Retry(err)
	}
	// The documents the pass converges, by Docker name.
	type passDoc struct {
		key      reconcile.Key
		index    uint64
		replicas int
		scaled   *int
	}
	docs := map[string]passDoc{}
	var ins []ServiceInput
	var adopted map[string]state.AdoptedService
	for _, d := range c.cfg.View.List(spec.KindService) {
		svc := d.Object.(*spec.Service)
		ready := true
		for _, n := range svc.Spec.Networks {
			if _, ok := c.cfg.View.VLAN(n); !ok {
				ready = false
			}
		}
		if !ready {
			c.ctrl.Enqueue(d.Key) // its own reconcile reports the missing VLAN
			continue
		}
		var scaled *int
		if si, ok := intents[d.Key.Name]; ok {
			n := si.Replicas
			scaled = &n
		}
		in := ServiceInput{Service: svc, Replicas: EffectiveReplicas(svc, scaled), Owner: c.ownerID(), NetworkNames: c.networkNames(svc)}
		if svc.Spec.DockerName != "" {
			if adopted == nil {
				if adopted, err = c.cfg.Store.AdoptedServicesList(ctx); err != nil {
					return reconcile.Retry(err)
				}
			}
			in.Adopted = adopted
		}
		docs[svc.DockerServiceName()] = passDoc{key: d.Key, index: d.ModifyIndex, replicas: in.Replicas, scaled: scaled}
		ins = append(ins, in)
	}
	res, err := ServiceResyncMemo(ctx, c.cfg.Docker, ins, &c.planMemo)
	c.mu.Lock()
	first := c.passedOf != lead
	if err == nil {
		c.passedOf = lead
	}
	c.mu.Unlock()
	var errs []error
	for name, d := range docs {
		st, observed := res.Statuses[name]
		if !observed {
			if first {
				c.ctrl.Enqueue(d.key)
			}
			continue
		}
		if st.Message != "" || st.Running != st.Desired {
			c.ctrl.Enqueue(d.key)
			continue
		}
		if _, err := c.ctrl.Settle(ctx, d.key, d.index, serviceOutcome(d.replicas, d.scaled, st, nil)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		c.cfg.Log.Warn("service resync: write statuses", "failed", len(errs), "err", errs[0])
	}
	// Orphans (managed services without a document) are left to the sweep,
	// which removes only this installation's.
	return reconcile.Retry(err)
}

// scaleIntentsAll is every service's scale intent: as this term's scale
// watch last delivered them, or read from Consul before it has answered
// or while one it delivered was unreadable.
func (c *Cluster) scaleIntentsAll(ctx context.Context, lead *state.Leadership) (map[string]state.ScaleIntent, error) {
	c.mu.Lock()
	fresh := c.intentsOf == lead
	out := make(map[string]state.ScaleIntent, len(c.intents))
	for name, si := range c.intents {
		if si == nil {
			fresh = false
			break
		}
		out[name] = *si
	}
	c.mu.Unlock()
	if fresh {
		return out, nil
	}
	return c.cfg.Store.ScaleIntents(ctx)
}

// reconcileNodeLabels sets the readiness label of every managed VLAN on the
// nodes whose host role reports it ready, and removes it where the host role
// reports it not ready. Swarm's constraint enforcer stops a task whose node
// stops matching its constraints, so a label is never removed for want of
// information: a node with no live report keeps its labels (a host role
// restarting), and a VLAN whose document is gone keeps its labels for as long
// as a managed service's constraints still name it (drain first).
func (c *Cluster) reconcileNodeLabels(ctx context.Context, _ reconcile.Key, _ *reconcile.Doc) reconcile.Outcome {
	if _, err := c.leadership(); err != nil {
		return reconcile.Retry(err)
	}
	inView := map[string]bool{}
	var vlans []string
	for _, d := range c.cfg.View.List(spec.KindVLAN) {
		vlans = append(vlans, d.Key.Name)
		inView[d.Key.Name] = true
	}
	nodes, err := c.cfg.Docker.NodeList(ctx, engine.Filter())
	if err != nil {
		return reconcile.Retry(fmt.Errorf("node labels: list nodes: %w", err))
	}
	// Only a node's label of a VLAN without a document can be one to keep
	// for a service still bound to it: the managed services are listed
	// (all of them, at scale the pass's costliest call) only when a node
	// carries such a label.
	gone := map[string]bool{}
	for _, n := range nodes {
		for k := range n.Spec.Labels {
			if v, ok := strings.CutPrefix(k, spec.NodeLabelPrefix); ok && v != "" && !inView[v] {
				gone[v] = true
			}
		}
	}
	draining := map[string]bool{}
	if len(gone) > 0 {
		svcs, err := ListManagedServices(ctx, c.cfg.Docker)
		if err != nil {
			return reconcile.Retry(fmt.Errorf("node labels: list services: %w", err))
		}
		for _, s := range svcs {
			for _, v := range svcReadinessVLANs(s.Spec) {
				if gone[v] && !draining[v] {
					draining[v] = true
					vlans = append(vlans, v)
				}
			}
		}
	}
	c.mu.Lock()
	reports := c.reports
	c.mu.Unlock()
	ready := map[string]map[string]bool{}
	for _, n := range nodes {
		r, live := reports[n.ID]
		m := map[string]bool{}
		for _, v := range vlans {
			if live && !draining[v] {
				m[v] = r.VLANs[v].Ready
			} else {
				m[v] = n.Spec.Labels[spec.NodeLabelPrefix+v] == spec.NodeLabelReady
			}
		}
		ready[n.ID] = m
	}
	if err := EnsureNodeLabels(ctx, c.cfg.Docker, ready, vlans); err != nil {
		return reconcile.Retry(err)
	}
	return reconcile.Done()
}

// svcReadinessVLANs returns the VLANs whose readiness label a service's
// placement constraints require.
func svcReadinessVLANs(s swarm.ServiceSpec) []string {
	if s.TaskTemplate.Placement == nil {
		return nil
	}
	var out []string
	for _, c := range s.TaskTemplate.Placement.Constraints {
		c = strings.ReplaceAll(c, " ", "")
		rest, ok := strings.CutPrefix(c, "node.labels."+spec.NodeLabelPrefix)
		if !ok {
			continue
		}
		if vlan, ok := strings.CutSuffix(rest, "=="+spec.NodeLabelReady); ok && vlan != "" {
			out = append(out, vlan)
		}
	}
	return out
}

func readyCondition(ready bool, msg string) state.Condition {
	if ready {
		return state.Condition{Type: "Ready", Status: "True"}
	}
	return state.Condition{Type: "Ready", Status: "False", Reason: "NotReady", Message: msg}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// vlanOutcome is what a VLAN's reconcile asks for next, in either range
// mode: the swarm network's error, a wait for a config network (host
// reports and Docker network events wake it sooner; the poll is a
// fallback), the end of the next quarantine, or idle.
func vlanOutcome(netErr error, netSt state.NetworkStatus, nextRelease, now time.Time, idle reconcile.Outcome) reconcile.Outcome {
	var conflict *engine.ConflictError
	switch {
	case errors.As(netErr, &conflict):
		return reconcile.Terminal(netErr)
	case netErr != nil:
		return reconcile.Retry(netErr)
	case netSt.Requeue:
		return reconcile.Poll(5 * time.Second)
	case !nextRelease.IsZero():
		return reconcile.RequeueAfter(nextRelease.Sub(now) + time.Second)
	default:
		return idle
	}
}
