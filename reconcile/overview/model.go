// Package overview is the dashboard every manager serves: one picture of
// the VLANs' range plans, the services and their tasks, the nodes and the
// recent activity, built from what KV holds (documents, statuses, node
// reports, allocations, scale intents, the leader lock) and the task
// registrations' checks. One Source per process holds the watches and one
// shared snapshot; every viewer (the page's event stream, the JSON
// endpoints) reads that snapshot, so viewers cost Consul nothing.
package overview

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/host"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// maxSlots caps the chunk-sized slots a VLAN's map is drawn with; a VLAN
// with more slots is shown by its allocated, pinned and quarantined chunks
// and its excluded ranges, with the free ones counted.
const maxSlots = 4096

// Overview is the dashboard's data, the JSON of GET /v1/overview and of
// every event of GET /v1/events.
type Overview struct {
	// Generated is when this snapshot was built.
	Generated time.Time `json:"generated"`
	// Manager is the manager that serves it; Leader the one that leads
	// (empty when none does).
	Manager string `json:"manager"`
	Leader  string `json:"leader"`
	// Synced is false until the first listing of KV was read.
	Synced   bool      `json:"synced"`
	VLANs    []VLAN    `json:"vlans"`
	Services []Service `json:"services"`
	Nodes    []Node    `json:"nodes"`
	Activity Activity  `json:"activity"`
}

// VLAN is one VLAN's range plan and state.
type VLAN struct {
	Name    string `json:"name"`
	ID      int    `json:"id"`
	Trunk   string `json:"trunk"`
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway,omitempty"`
	// ChunkPrefix is the chunks' prefix length.
	ChunkPrefix int `json:"chunkPrefix"`
	// Ready is the leader's Ready condition; Message says why not.
	Ready   bool   `json:"ready"`
	Message string `json:"message,omitempty"`
	// Network is the swarm network's state ("ready", "waiting", ...).
	Network        string `json:"network"`
	NetworkMessage string `json:"networkMessage,omitempty"`
	// Slots are the subnet's chunk-sized slots in address order (the map
	// drawn to scale); only Chunks when the subnet has too many slots.
	Slots []Slot `json:"slots"`
	// Drawn is false when Slots holds only the chunks in use and the
	// excluded ranges, not every slot.
	Drawn bool `json:"drawn"`
	// Allocated, Quarantined, Free and Excluded count slots.
	Allocated   int `json:"allocated"`
	Quarantined int `json:"quarantined"`
	Free        int `json:"free"`
	Excluded    int `json:"excluded"`
	// Errors are the VLAN's problems: plan errors, nodes left without a
	// chunk, the last reconcile error.
	Errors []string `json:"errors,omitempty"`
	// Mode is the range plan's mode: chunks or cluster. In mode cluster
	// there are no chunks (Slots is empty): Pool is the one pool's use
	// and Leases each node's addresses.
	Mode   string       `json:"mode"`
	Pool   *PoolUse     `json:"pool,omitempty"`
	Leases []NodeLeases `json:"leases,omitempty"`
}

// PoolUse is a cluster-mode VLAN's pool: its addresses, those leased,
// those in quarantine and those free to lease.
type PoolUse struct {
	Size        int `json:"size"`
	Leased      int `json:"leased"`
	Quarantined int `json:"quarantined"`
	Free        int `json:"free"`
}

// NodeLeases is one node's leases on a cluster-mode VLAN.
type NodeLeases struct {
	Node     string `json:"node"`
	Hostname string `json:"hostname,omitempty"`
	// Down is set when the node's host agent is gone (its leases stay
	// until the node is removed from the swarm).
	Down bool `json:"down,omitempty"`
	// Shim is the host's own leased address.
	Shim string `json:"shim,omitempty"`
	// Count is the number of task addresses; Tasks the tasks holding them
	// (an address no known task holds has only Address).
	Count int        `json:"count"`
	Tasks []SlotTask `json:"tasks"`
}

// Slot kinds.
const (
	SlotChunk       = "chunk"       // held by a node
	SlotQuarantined = "quarantined" // freed by a node that left; not yet reusable
	SlotFree        = "free"        // in the pool, not held
	SlotExcluded    = "excluded"    // outside the pool or excluded
)

// Slot is one chunk-sized range of a VLAN's subnet.
type Slot struct {
	CIDR string `json:"cidr"`
	Kind string `json:"kind"`
	// Node and Hostname hold the chunk (SlotChunk).
	Node     string `json:"node,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// PinnedTo names the host the plan pins this chunk to.
	PinnedTo string `json:"pinnedTo,omitempty"`
	// Until is when a quarantined chunk may be reused.
	Until string `json:"until,omitempty"`
	// Shim is the host's own address in the chunk.
	Shim string `json:"shim,omitempty"`
	// Down is set when the holder's host agent is not live.
	Down bool `json:"down,omitempty"`
	// Tasks are the tasks with an address in the chunk.
	Tasks []SlotTask `json:"tasks,omitempty"`
}

// SlotTask is one task's address in a chunk.
type SlotTask struct {
	Service string `json:"service"`
	Slot    int    `json:"slot,omitempty"`
	ID      string `json:"id"`
	Address string `json:"address"`
	State   string `json:"state"`
	// FreshFor is, in mode cluster, the sticky slot's own address this
	// task's address replaced because it was not free for it.
	FreshFor string `json:"freshFor,omitempty"`
}

// Service is one Service document with its observed state.
type Service struct {
	Name     string   `json:"name"`
	Image    string   `json:"image"`
	Mode     string   `json:"mode"`
	Networks []string `json:"networks"`
	// Desired and Running count tasks as Docker reports them; Passing the
	// tasks whose registration passes in Consul (-1 without a consul block).
	Desired int `json:"desired"`
	Running int `json:"running"`
	Passing int `json:"passing"`
	// Replicas is the count in force; SpecReplicas what the document says
	// (nil: unset), Min and Max the scaling bounds (0: none).
	Replicas     int  `json:"replicas"`
	SpecReplicas *int `json:"specReplicas,omitempty"`
	Min          int  `json:"min,omitempty"`
	Max          int  `json:"max,omitempty"`
	// Scale is the last scale decision, when the scale API made one.
	Scale   *Scale `json:"scale,omitempty"`
	Ready   bool   `json:"ready"`
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
	Tasks   []Task `json:"tasks"`
}

// Scale is a service's last scale decision.
type Scale struct {
	Replicas int    `json:"replicas"`
	Reason   string `json:"reason,omitempty"`
	// Source is who made it (a token's name, "alertmanager", a user).
	Source   string `json:"source,omitempty"`
	LastUp   string `json:"lastUp,omitempty"`
	LastDown string `json:"lastDown,omitempty"`
}

// Task is one task of a service.
type Task struct {
	ID       string `json:"id"`
	Slot     int    `json:"slot,omitempty"`
	Node     string `json:"node"`
	Hostname string `json:"hostname,omitempty"`
	State    string `json:"state"`
	Error    string `json:"error,omitempty"`
	// Addresses maps a VLAN to the task's address on it.
	Addresses map[string]string `json:"addresses,omitempty"`
	// Health is the worst state of its Consul checks, "" when it is not
	// registered.
	Health string `json:"health,omitempty"`
	// NodeDown is set when the task's host agent is not live.
	NodeDown bool `json:"nodeDown,omitempty"`
}

// Node is one swarm node as the host agents and the allocations know it.
type Node struct {
	ID       string `json:"id"`
	Hostname string `json:"hostname"`
	// Live says the node's host agent holds its liveness key.
	Live bool `json:"live"`
	// Reported is when the agent last wrote its report; Age its age in
	// seconds when the snapshot was built.
	Reported string  `json:"reported,omitempty"`
	Age      float64 `json:"age"`
	Summary  string  `json:"summary,omitempty"`
	Error    string  `json:"error,omitempty"`
	// VLANs is the node's state per VLAN.
	VLANs []NodeVLAN `json:"vlans"`
}

// NodeVLAN is one VLAN on one node.
type NodeVLAN struct {
	VLAN   string `json:"vlan"`
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
	Chunk  string `json:"chunk,omitempty"`
	// Trunk is the trunk from the documents; Parent the interface the
	// containers ride on.
	Trunk  string `json:"trunk,omitempty"`
	Parent string `json:"parent,omitempty"`
	// Link, Shim and Route are "ok" or what is wrong; ShimAddress the
	// shim's address.
	Link          string `json:"link,omitempty"`
	Shim          string `json:"shim,omitempty"`
	ShimAddress   string `json:"shimAddress,omitempty"`
	Route         string `json:"route,omitempty"`
	ConfigNetwork string `json:"configNetwork,omitempty"`
}

// Activity is who leads, what went wrong and what changed lately.
type Activity struct {
	Leader string `json:"leader"`
	// Errors are the objects whose last reconcile failed, by object.
	Errors []ObjectError `json:"errors"`
	// Changes are the latest status changes, newest first.
	Changes []Change `json:"changes"`
	// Sync is the git sync's state, when its status exists.
	Sync []Sync `json:"sync,omitempty"`
	// Problems are KV records that do not decode and invalid documents.
	Problems []string `json:"problems,omitempty"`
}

// ObjectError is an object's last reconcile error.
type ObjectError struct {
	Object string `json:"object"`
	Error  string `json:"error"`
}

// Change is one status change seen by this manager.
type Change struct {
	Time   time.Time `json:"time"`
	Object string    `json:"object"`
	What   string    `json:"what"`
}

// Sync is one git sync status record.
type Sync struct {
	Name     string `json:"name"`
	Commit   string `json:"commit,omitempty"`
	Repo     string `json:"repo,omitempty"`
	Branch   string `json:"branch,omitempty"`
	Ready    bool   `json:"ready"`
	Message  string `json:"message,omitempty"`
	Error    string `json:"error,omitempty"`
	Observed string `json:"summary,omitempty"`
}

// Input is what a snapshot is built from.
type Input struct {
	Tree state.Tree
	// Docs are the documents in force, Invalid the documents refused.
	VLANs    []*spec.VLAN
	Services []*spec.Service
	Hosts    []*spec.Host
	Invalid  []string
	// Checks are the task registrations' health by Consul service ID;
	// nil when not (yet) read.
	Checks map[string]string
	// Manager is this process's node name.
	Manager string
	Synced  bool
	Now     time.Time
}

// Build makes the snapshot of in. Pure.
func Build(in Input) *Overview {
	o := &Overview{Generated: in.Now.UTC(), Manager: in.Manager, Leader: in.Tree.Leader, Synced: in.Synced}
	hostnames := hostnamesOf(in.Tree)
	live := func(node string) bool { _, ok := in.Tree.Nodes[node]; return ok }

	o.Services = make([]Service, 0, len(in.Services))
	reported := hostTasksOf(in.Tree)
	var tasks []SlotTask
	taskVLAN := map[int]string{} // index in tasks -> VLAN
	for _, s := range in.Services {
		svc := buildService(s, in, hostnames, live, reported)
		for _, t := range svc.Tasks {
			for vlan, addr := range t.Addresses {
				taskVLAN[len(tasks)] = vlan
				tasks = append(tasks, SlotTask{Service: s.Metadata.Name, Slot: t.Slot, ID: t.ID, Address: addr, State: t.State})
			}
		}
		o.Services = append(o.Services, svc)
	}
	byVLAN := map[string][]SlotTask{}
	for i, t := range tasks {
		byVLAN[taskVLAN[i]] = append(byVLAN[taskVLAN[i]], t)
	}
	o.VLANs = make([]VLAN, 0, len(in.VLANs))
	for _, v := range in.VLANs {
		o.VLANs = append(o.VLANs, buildVLAN(v, in, byVLAN[v.Metadata.Name], live))
	}
	o.Nodes = buildNodes(in, hostnames)
	o.Activity = buildActivity(in)
	return o
}

// hostnamesOf maps node IDs to hostnames from the node reports and the
// allocations (which outlive a dead host's report).
func hostnamesOf(t state.Tree) map[string]string {
	out := map[string]string{}
	for _, allocs := range t.Allocations {
		for id, a := range allocs {
			if a.Hostname != "" {
				out[id] = a.Hostname
			}
		}
	}
	for id, r := range t.Nodes {
		if r.Hostname != "" {
			out[id] = r.Hostname
		}
	}
	for id, st := range t.Statuses[state.SectionNodes] {
		if out[id] != "" {
			continue
		}
		var hs host.Status
		if json.Unmarshal(st.Details, &hs) == nil && hs.Hostname != "" {
			out[id] = hs.Hostname
		}
	}
	return out
}

// hostTask is one task as its node's host role reports it.
type hostTask struct {
	node string
	task host.RunningTask
}

// hostTasksOf decodes the host roles' task reports (status/tasks/<node>),
// by task ID.
func hostTasksOf(t state.Tree) map[string]hostTask {
	out := map[string]hostTask{}
	for node, st := range t.Statuses[state.SectionTasks] {
		var r host.TaskReport
		if json.Unmarshal(st.Details, &r) != nil {
			continue
		}
		for _, tk := range r.Tasks {
			out[tk.ID] = hostTask{node: node, task: tk}
		}
	}
	return out
}

// onNetworks is addrs limited to the networks nets.
func onNetworks(addrs map[string]string, nets []string) map[string]string {
	var out map[string]string
	for _, n := range nets {
		if a := addrs[n]; a != "" {
			if out == nil {
				out = map[string]string{}
			}
			out[n] = a
		}
	}
	return out
}

func readyOf(st state.Status) (bool, string) {
	for _, c := range st.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True", c.Message
		}
	}
	return false, ""
}

// buildService is a service from its document, the leader's status (the
// tasks Swarm has), the host roles' reports (their addresses: the leader
// learns them only for its own node's tasks; and tasks started since the
// leader last wrote) and the checks.
func buildService(s *spec.Service, in Input, hostnames map[string]string, live func(string) bool, reported map[string]hostTask) Service {
	name := s.Metadata.Name
	out := Service{
		Name: name, Image: s.Spec.Image, Mode: s.Spec.Mode, Networks: s.Spec.Networks,
		SpecReplicas: s.Spec.Replicas, Passing: -1, Tasks: []Task{},
	}
	if out.Mode == "" {
		out.Mode = "replicated"
	}
	if sc := s.Spec.Scaling; sc != nil {
		out.Min, out.Max = sc.Min, sc.Max
	}
	var scaled *int
	if si, ok := in.Tree.Scale[name]; ok {
		scaled = &si.Replicas
		out.Scale = &Scale{Replicas: si.Replicas, Reason: si.Reason, Source: si.UpdatedBy,
			LastUp: timeText(si.LastUp), LastDown: timeText(si.LastDown)}
	}
	out.Replicas = cluster.EffectiveReplicas(s, scaled)
	st, ok := in.Tree.Statuses[spec.Plural(spec.KindService)][name]
	if !ok {
		out.Message = "no status yet"
		return out
	}
	out.Ready, out.Message = readyOf(st)
	out.Error = st.LastError
	var det cluster.ServiceDetails
	if len(st.Details) > 0 {
		if err := json.Unmarshal(st.Details, &det); err != nil {
			out.Error = joinText(out.Error, "status details: "+err.Error())
		}
	}
	out.Desired, out.Running = det.Service.Desired, det.Service.Running
	if s.Spec.Consul != nil {
		out.Passing = 0
	}
	seen := map[string]bool{}
	for _, t := range det.Service.Tasks {
		seen[t.ID] = true
		task := Task{ID: t.ID, Slot: t.Slot, Node: t.Node, Hostname: hostnames[t.Node], State: t.State,
			Error: t.Err, Addresses: onNetworks(t.Addresses, s.Spec.Networks), NodeDown: t.Node != "" && !live(t.Node)}
		if r, ok := reported[t.ID]; ok {
			for n, a := range onNetworks(r.task.Addresses, s.Spec.Networks) {
				if task.Addresses == nil {
					task.Addresses = map[string]string{}
				}
				if task.Addresses[n] == "" {
					task.Addresses[n] = a
				}
			}
		}
		out.Tasks = append(out.Tasks, task)
	}
	// Tasks a live host runs that the leader has not recorded yet.
	for id, r := range reported {
		if r.task.Service != name || seen[id] || !live(r.node) {
			continue
		}
		out.Tasks = append(out.Tasks, Task{ID: id, Slot: r.task.Slot, Node: r.node, Hostname: hostnames[r.node], State: "running",
			Addresses: onNetworks(r.task.Addresses, s.Spec.Networks)})
	}
	sort.Slice(out.Tasks, func(i, j int) bool {
		if out.Tasks[i].Slot != out.Tasks[j].Slot {
			return out.Tasks[i].Slot < out.Tasks[j].Slot
		}
		return out.Tasks[i].ID < out.Tasks[j].ID
	})
	for i := range out.Tasks {
		if s.Spec.Consul != nil && in.Checks != nil {
			out.Tasks[i].Health = in.Checks[host.RegistrationServiceID(name, out.Tasks[i].ID)]
			if out.Tasks[i].Health == state.CheckPassing {
				out.Passing++
			}
		}
	}
	return out
}

func buildVLAN(v *spec.VLAN, in Input, tasks []SlotTask, live func(string) bool) VLAN {
	name := v.Metadata.Name
	out := VLAN{Name: name, ID: v.Spec.ID, Trunk: v.Spec.Trunk, Subnet: v.Spec.Subnet, Gateway: v.Spec.Gateway,
		ChunkPrefix: v.Spec.RangePlan.ChunkPrefix, Slots: []Slot{}}
	if st, ok := in.Tree.Statuses[spec.Plural(spec.KindVLAN)][name]; ok {
		out.Ready, out.Message = readyOf(st)
		var det cluster.VLANDetails
		if len(st.Details) > 0 {
			if err := json.Unmarshal(st.Details, &det); err != nil {
				out.Errors = append(out.Errors, "status details: "+err.Error())
			}
		}
		out.Network, out.NetworkMessage = det.Network.State, det.Network.Message
		out.Errors = append(out.Errors, det.Problems...)
		if len(det.Unallocated) > 0 {
			out.Errors = append(out.Errors, "pool exhausted: no chunk for "+strings.Join(det.Unallocated, ", "))
		}
		if st.LastError != "" {
			out.Errors = append(out.Errors, st.LastError)
		}
	} else {
		out.Message = "no status yet"
	}
	out.Mode = v.RangeMode()
	if out.Mode == spec.RangeModeCluster {
		out.ChunkPrefix = 0
		buildLeases(&out, v, in, tasks, live)
		return out
	}
	plan, err := v.Plan()
	if err != nil {
		out.Errors = append(out.Errors, "range plan: "+err.Error())
		return out
	}
	pinned := map[netip.Prefix]string{}
	for h, p := range plan.Pinned {
		pinned[p.Masked()] = h
	}
	for _, h := range in.Hosts {
		if hv, ok := h.Spec.VLANs[name]; ok && hv.Chunk != "" {
			if p, err := netip.ParsePrefix(hv.Chunk); err == nil {
				pinned[p.Masked()] = h.Metadata.Name
			}
		}
	}
	inPool := map[netip.Prefix]bool{}
	for _, c := range plan.Chunks {
		inPool[c] = true
	}
	held := map[netip.Prefix]Slot{}
	for id, a := range in.Tree.Allocations[name] {
		p, err := netip.ParsePrefix(a.Chunk)
		if err != nil {
			out.Errors = append(out.Errors, fmt.Sprintf("allocation of %s: %v", id, err))
			continue
		}
		p = p.Masked()
		s := Slot{CIDR: p.String(), Node: id, Hostname: a.Hostname}
		if a.Left != nil {
			s.Kind = SlotQuarantined
			if q := v.Spec.RangePlan.Quarantine; q != "" {
				s.Until = a.Left.Add(q.Duration()).UTC().Format(time.RFC3339)
			} else {
				s.Until = a.Left.Add(spec.Duration(spec.DefaultQuarantine).Duration()).UTC().Format(time.RFC3339)
			}
		} else {
			s.Kind = SlotChunk
			s.Shim = spec.ShimAddress(plan.Subnet, p).String()
			s.Down = !live(id)
		}
		held[p] = s
	}
	// Tasks go to the chunk holding their address.
	for _, t := range tasks {
		a, err := netip.ParseAddr(t.Address)
		if err != nil {
			continue
		}
		c, err := a.Prefix(plan.ChunkBits)
		if err != nil {
			continue
		}
		if s, ok := held[c]; ok {
			s.Tasks = append(s.Tasks, t)
			held[c] = s
		}
	}
	for c, s := range held {
		sort.Slice(s.Tasks, func(i, j int) bool { return s.Tasks[i].Address < s.Tasks[j].Address })
		s.PinnedTo = pinned[c]
		held[c] = s
	}

	subnetBits := plan.Subnet.Bits()
	span := plan.ChunkBits - subnetBits
	if span >= 0 && span < bits.UintSize-1 && 1<<span <= maxSlots {
		out.Drawn = true
		c := netip.PrefixFrom(plan.Subnet.Masked().Addr(), plan.ChunkBits)
		for i := 0; i < 1<<span; i++ {
			s, ok := held[c]
			switch {
			case ok:
			case inPool[c]:
				s = Slot{CIDR: c.String(), Kind: SlotFree, PinnedTo: pinned[c]}
			default:
				s = Slot{CIDR: c.String(), Kind: SlotExcluded}
			}
			out.Slots = append(out.Slots, s)
			c = nextPrefix(c)
		}
	} else {
		for _, s := range held {
			out.Slots = append(out.Slots, s)
		}
		for c, h := range pinned {
			if _, ok := held[c]; !ok {
				out.Slots = append(out.Slots, Slot{CIDR: c.String(), Kind: SlotFree, PinnedTo: h})
			}
		}
		for _, e := range v.Spec.RangePlan.Exclude {
			out.Slots = append(out.Slots, Slot{CIDR: e, Kind: SlotExcluded})
		}
		slices.SortFunc(out.Slots, func(a, b Slot) int {
			return netip.MustParsePrefix(a.CIDR).Addr().Compare(netip.MustParsePrefix(b.CIDR).Addr())
		})
	}
	for _, s := range held {
		if s.Kind == SlotChunk {
			out.Allocated++
		} else {
			out.Quarantined++
		}
	}
	out.Free = max(len(plan.Chunks)-len(held), 0)
	if out.Drawn {
		out.Excluded = len(out.Slots) - len(plan.Chunks)
	} else {
		out.Excluded = len(v.Spec.RangePlan.Exclude)
	}
	return out
}

// nextPrefix is the prefix of the same length right after p.
func nextPrefix(p netip.Prefix) netip.Prefix {
	b := p.Addr().AsSlice()
	bit := p.Bits() - 1
	for i := bit; i >= 0; i-- {
		mask := byte(0x80 >> (i % 8))
		if b[i/8]&mask == 0 {
			b[i/8] |= mask
			break
		}
		b[i/8] &^= mask
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(a, p.Bits())
}

func buildNodes(in Input, hostnames map[string]string) []Node {
	ids := map[string]bool{}
	for id := range in.Tree.Nodes {
		ids[id] = true
	}
	for id := range in.Tree.Statuses[state.SectionNodes] {
		ids[id] = true
	}
	for _, allocs := range in.Tree.Allocations {
		for id, a := range allocs {
			if a.Left == nil {
				ids[id] = true
			}
		}
	}
	hostsByName := map[string]*spec.Host{}
	for _, h := range in.Hosts {
		hostsByName[h.Metadata.Name] = h
	}
	out := make([]Node, 0, len(ids))
	for id := range ids {
		n := Node{ID: id, Hostname: hostnames[id], VLANs: []NodeVLAN{}}
		r, live := in.Tree.Nodes[id]
		n.Live = live
		if live && !r.Updated.IsZero() {
			n.Reported = r.Updated.UTC().Format(time.RFC3339)
			n.Age = in.Now.Sub(r.Updated).Round(100 * time.Millisecond).Seconds()
		}
		var hs host.Status
		st, hasStatus := in.Tree.Statuses[state.SectionNodes][id]
		if hasStatus {
			n.Error = st.LastError
			_ = json.Unmarshal(st.Details, &hs)
			n.Summary = hs.Summary
		}
		h := hostsByName[n.Hostname]
		for _, v := range in.VLANs {
			name := v.Metadata.Name
			nv := NodeVLAN{VLAN: name, Trunk: v.Spec.Trunk}
			if h != nil {
				nv.Trunk = h.TrunkFor(v)
			}
			if rv, ok := r.VLANs[name]; ok {
				nv.Ready, nv.Reason, nv.Chunk = rv.Ready, rv.Reason, rv.Chunk
			} else if !live {
				nv.Reason = "host agent not live"
			} else {
				nv.Reason = "not reported"
			}
			if vs, ok := hs.VLANs[name]; ok {
				nv.Parent, nv.Link, nv.Shim, nv.Route, nv.ConfigNetwork = vs.Parent, vs.Link, vs.Shim, vs.Route, vs.ConfigNetwork
				if nv.Chunk == "" {
					nv.Chunk = vs.Chunk
				}
			}
			if a, ok := in.Tree.Allocations[name][id]; ok && a.Left == nil && nv.Chunk == "" {
				nv.Chunk = a.Chunk
			}
			if c, err := netip.ParsePrefix(nv.Chunk); err == nil {
				if s, err := netip.ParsePrefix(v.Spec.Subnet); err == nil {
					nv.ShimAddress = spec.ShimAddress(s, c.Masked()).String()
				}
			}
			n.VLANs = append(n.VLANs, nv)
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Hostname != out[j].Hostname {
			return out[i].Hostname < out[j].Hostname
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func buildActivity(in Input) Activity {
	a := Activity{Leader: in.Tree.Leader, Errors: []ObjectError{}, Changes: []Change{}}
	for _, section := range slices.Sorted(mapKeys(in.Tree.Statuses)) {
		for _, name := range slices.Sorted(mapKeys(in.Tree.Statuses[section])) {
			st := in.Tree.Statuses[section][name]
			if st.LastError != "" {
				a.Errors = append(a.Errors, ObjectError{Object: section + "/" + name, Error: st.LastError})
			}
		}
	}
	if len(in.Tree.Sync) > 0 {
		a.Sync = append(a.Sync, syncOf(in.Tree.Sync))
	}
	a.Problems = append(append(a.Problems, in.Tree.Problems...), in.Invalid...)
	return a
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func joinText(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// changes lists what differs between two snapshots, for the activity
// feed: readiness, errors, task counts, leaders and live nodes.
func changes(prev, cur *Overview) []Change {
	if prev == nil || !prev.Synced {
		return nil
	}
	var out []Change
	add := func(obj, what string) { out = append(out, Change{Time: cur.Generated, Object: obj, What: what}) }
	if prev.Leader != cur.Leader {
		add("leader", fmt.Sprintf("leader %q -> %q", prev.Leader, cur.Leader))
	}
	type state struct {
		ready bool
		msg   string
		err   string
		count string
	}
	objs := func(o *Overview) map[string]state {
		m := map[string]state{}
		for _, v := range o.VLANs {
			m["vlan "+v.Name] = state{ready: v.Ready, msg: v.Message, err: strings.Join(v.Errors, "; "),
				count: fmt.Sprintf("%d chunk(s)", v.Allocated)}
		}
		for _, s := range o.Services {
			m["service "+s.Name] = state{ready: s.Ready, msg: s.Message, err: s.Error,
				count: fmt.Sprintf("%d/%d running, %d replica(s)", s.Running, s.Desired, s.Replicas)}
		}
		for _, n := range o.Nodes {
			m["node "+n.Hostname] = state{ready: n.Live, err: n.Error}
		}
		return m
	}
	was, now := objs(prev), objs(cur)
	for _, k := range slices.Sorted(mapKeys(now)) {
		n, p := now[k], was[k]
		if _, existed := was[k]; !existed {
			add(k, "appeared")
			continue
		}
		if n.ready != p.ready {
			what := "ready"
			if strings.HasPrefix(k, "node ") {
				what = "host agent live"
				if !n.ready {
					what = "host agent gone"
				}
			} else if !n.ready {
				what = "not ready: " + n.msg
			}
			add(k, what)
		}
		if n.err != p.err && n.err != "" {
			add(k, "error: "+n.err)
		}
		if n.count != p.count && n.count != "" && p.count != "" {
			add(k, n.count)
		}
	}
	for _, k := range slices.Sorted(mapKeys(was)) {
		if _, still := now[k]; !still {
			add(k, "gone")
		}
	}
	return out
}

// syncOf reads the GitOps sync's record (status/sync): the commit in
// force, and whether the last attempt left it current.
func syncOf(raw []byte) Sync {
	var rec struct {
		Repo   string `json:"repo"`
		Branch string `json:"branch"`
		Commit *struct {
			Hash    string `json:"hash"`
			Author  string `json:"author"`
			Message string `json:"message"`
		} `json:"commit"`
		LastResult string `json:"lastResult"`
		LastCommit string `json:"lastCommit"`
		LastError  string `json:"lastError"`
	}
	s := Sync{Name: "git"}
	if err := json.Unmarshal(raw, &rec); err != nil {
		s.Error = "status/sync: " + err.Error()
		return s
	}
	s.Repo, s.Branch, s.Error, s.Observed = rec.Repo, rec.Branch, rec.LastError, rec.LastResult
	if rec.Commit != nil {
		s.Commit = rec.Commit.Hash
		s.Message = strings.TrimSpace(strings.SplitN(rec.Commit.Message, "\n", 2)[0])
		if rec.Commit.Author != "" {
			s.Message += " (" + rec.Commit.Author + ")"
		}
	}
	switch rec.LastResult {
	case "synced", "unchanged", "resumed":
		s.Ready = rec.Commit != nil
	}
	return s
}

// buildLeases fills a cluster-mode VLAN's pool use and per-node leases,
// summed as `reconciler plan` sums them.
func buildLeases(out *VLAN, v *spec.VLAN, in Input, tasks []SlotTask, live func(string) bool) {
	have := map[netip.Addr]state.LeaseEntry{}
	for a, l := range in.Tree.Leases[v.Metadata.Name] {
		have[a] = state.LeaseEntry{Lease: l}
	}
	var nodes []cluster.SwarmNode
	for id, r := range in.Tree.Nodes {
		nodes = append(nodes, cluster.SwarmNode{ID: id, Hostname: r.Hostname})
	}
	pv, err := cluster.PreviewLeases(v, nodes, have, in.Now)
	if err != nil {
		out.Errors = append(out.Errors, "pool: "+err.Error())
		return
	}
	byAddr := map[string]SlotTask{}
	for _, t := range tasks {
		byAddr[t.Address] = t
	}
	out.Pool = &PoolUse{Size: pv.PoolSize, Quarantined: pv.Quarantined, Free: pv.Free}
	out.Leases = []NodeLeases{}
	for _, n := range pv.Nodes {
		nl := NodeLeases{Node: n.Node, Hostname: n.Hostname, Down: !live(n.Node), Shim: n.Shim, Count: len(n.Tasks), Tasks: []SlotTask{}}
		for _, a := range n.Tasks {
			t, ok := byAddr[a]
			if !ok {
				t = SlotTask{Address: a}
			}
			t.FreshFor = have[netip.MustParseAddr(a)].FreshFor
			nl.Tasks = append(nl.Tasks, t)
		}
		out.Pool.Leased += len(n.Tasks)
		if n.Shim != "" {
			out.Pool.Leased++
		}
		out.Leases = append(out.Leases, nl)
	}
	out.Allocated, out.Quarantined, out.Free = out.Pool.Leased, out.Pool.Quarantined, out.Pool.Free
}
