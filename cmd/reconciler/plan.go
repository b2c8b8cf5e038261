package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// planReport is what `reconciler plan -o json` prints.
type planReport struct {
	// Documents is "kv", or the -f paths laid over the documents in KV.
	Documents string `json:"documents"`
	// Nodes says where the swarm's nodes came from: "docker", or
	// "allocations" when Docker could not be asked (DockerError says why).
	Nodes       string     `json:"nodes"`
	DockerError string     `json:"dockerError,omitempty"`
	Warnings    []string   `json:"warnings,omitempty"`
	VLANs       []planVLAN `json:"vlans"`
}

// planVLAN is one VLAN's preview and, with -f, how its documents differ
// from those in force.
type planVLAN struct {
	cluster.RangePreview
	// InKV is false for a VLAN only the -f documents hold.
	InKV    bool     `json:"inKV"`
	Changes []string `json:"changes,omitempty"`
}

func cmdPlan(ctx context.Context, c *cli, args []string) error {
	fs := c.flags()
	files := sourceFlags(fs)
	output := fs.String("o", "table", "output format: table or json")
	dockerHost := fs.String("docker-host", "", "Docker Engine address (default: DOCKER_HOST or the local socket)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 || (*output != "table" && *output != "json") {
		return fmt.Errorf("usage: reconciler plan [VLAN] [-f PATH]... [-o table|json]")
	}
	var srcs []source
	if len(*files) > 0 {
		if srcs, err = loadSources(c, files, nil, "nothing to preview"); err != nil {
			return err
		}
	}
	store, err := c.store()
	if err != nil {
		return err
	}
	view, err := readSpecInForce(ctx, store)
	if err != nil {
		return err
	}
	report := planReport{Documents: "kv", Nodes: "docker"}
	if len(srcs) > 0 {
		report.Documents = strings.Join(*files, ",")
	}
	for _, k := range view.Keys() {
		if e, bad := view.Invalid(k); bad {
			report.Warnings = append(report.Warnings, fmt.Sprintf("%s %s in KV is invalid and not read here (the leader keeps its last valid version): %s",
				k.Kind, k.Name, strings.ReplaceAll(e.Err.Error(), "\n", "; ")))
		}
	}
	inForce, hostsInForce := planDocuments(view, nil)
	want, hosts := planDocuments(view, srcs)

	names := planSortedKeys(want)
	if len(pos) == 1 {
		if _, ok := want[pos[0]]; !ok {
			where := "in KV under " + store.SpecPrefix()
			if len(srcs) > 0 {
				where += " or in " + report.Documents
			}
			if _, bad := view.Invalid(reconcile.Key{Kind: spec.KindVLAN, Name: pos[0]}); bad {
				return fmt.Errorf("vlan %q: the document in KV is invalid and no valid one is given (see reconciler status)", pos[0])
			}
			known := "none"
			if len(names) > 0 {
				known = strings.Join(names, ", ")
			}
			return fmt.Errorf("vlan %q not found %s (known: %s)", pos[0], where, known)
		}
		names = pos
	}

	// Allocations of every VLAN, so that without Docker the nodes holding a
	// chunk of any VLAN count as the swarm.
	allocs := map[string]map[string]state.Allocation{}
	for _, name := range planSortedKeys(want) {
		have, _, err := store.Allocations(ctx, name)
		if err != nil {
			return err
		}
		allocs[name] = have
	}
	nodes, derr := swarmNodes(ctx, *dockerHost)
	if derr != nil {
		report.Nodes, report.DockerError = "allocations", derr.Error()
		nodes = nodesFromAllocations(allocs)
	}

	now := time.Now()
	for _, name := range names {
		var p cluster.RangePreview
		if v := want[name]; v.RangeMode() == spec.RangeModeCluster {
			have, err := store.Leases(ctx, name)
			if err != nil {
				return err
			}
			cp, err := cluster.PreviewLeases(v, nodes, have, now)
			if err != nil {
				return err
			}
			p = cluster.RangePreview{VLAN: name, Subnet: v.Spec.Subnet, Gateway: v.Spec.Gateway, Pool: v.Spec.RangePlan.Pool,
				Exclude: v.Spec.RangePlan.Exclude, Quarantine: string(v.Spec.RangePlan.Quarantine), Mode: spec.RangeModeCluster, Cluster: &cp}
		} else if p, err = cluster.PreviewRangePlan(v, hosts, nodes, allocs[name], now); err != nil {
			return err
		}
		pv := planVLAN{RangePreview: p}
		old, ok := inForce[name]
		pv.InKV = ok
		if ok && len(srcs) > 0 {
			pv.Changes = rangeChanges(old, want[name], hostsInForce, hosts)
		}
		report.VLANs = append(report.VLANs, pv)
	}

	if *output == "json" {
		b, err := json.MarshalIndent(report, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, string(b))
		return nil
	}
	return printPlan(c.stdout, report, len(nodes))
}

// readSpecInForce reads the spec tree once and decodes it as the leader's
// view does, so a document that is invalid in KV is known as such.
func readSpecInForce(ctx context.Context, store *state.Store) (*reconcile.View, error) {
	pairs, err := store.SpecPairs(ctx)
	if err != nil {
		return nil, err
	}
	view := reconcile.NewView(store.SpecPrefix())
	view.Sync(pairs)
	return view, nil
}

// planDocuments returns the VLANs by name and the Host documents in force,
// with srcs laid over them as `apply -f` (without --prune) would.
func planDocuments(view *reconcile.View, srcs []source) (map[string]*spec.VLAN, []*spec.Host) {
	vlans := map[string]*spec.VLAN{}
	for _, d := range view.List(spec.KindVLAN) {
		vlans[d.Key.Name] = d.Object.(*spec.VLAN)
	}
	hosts := map[string]*spec.Host{}
	for _, d := range view.List(spec.KindHost) {
		hosts[d.Key.Name] = d.Object.(*spec.Host)
	}
	for _, s := range srcs {
		switch o := s.Doc.Object.(type) {
		case *spec.VLAN:
			vlans[o.Metadata.Name] = o
		case *spec.Host:
			hosts[o.Metadata.Name] = o
		}
	}
	out := make([]*spec.Host, 0, len(hosts))
	for _, name := range planSortedKeys(hosts) {
		out = append(out, hosts[name])
	}
	return vlans, out
}

// swarmNodes lists the swarm's nodes as the leader does.
func swarmNodes(ctx context.Context, host string) ([]cluster.SwarmNode, error) {
	d, err := engine.New(host)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := d.NodeList(ctx, engine.Filter())
	if err != nil {
		return nil, fmt.Errorf("list swarm nodes: %w", err)
	}
	nodes := make([]cluster.SwarmNode, 0, len(list))
	for _, n := range list {
		nodes = append(nodes, cluster.SwarmNode{ID: n.ID, Hostname: n.Description.Hostname})
	}
	return nodes, nil
}

// nodesFromAllocations stands in for the swarm when Docker cannot be asked:
// every node holding a chunk that is not in quarantine is taken to be in
// the swarm, and a node in quarantine to be still gone.
func nodesFromAllocations(allocs map[string]map[string]state.Allocation) []cluster.SwarmNode {
	seen := map[string]cluster.SwarmNode{}
	for _, have := range allocs {
		for id, a := range have {
			if a.Left == nil {
				seen[id] = cluster.SwarmNode{ID: id, Hostname: a.Hostname}
			}
		}
	}
	out := make([]cluster.SwarmNode, 0, len(seen))
	for _, id := range planSortedKeys(seen) {
		out = append(out, seen[id])
	}
	return out
}

// rangeChanges lists what the new documents change in a VLAN's range plan.
func rangeChanges(old, cur *spec.VLAN, oldHosts, curHosts []*spec.Host) []string {
	var out []string
	field := func(name string, a, b any) {
		as, bs := fmt.Sprint(a), fmt.Sprint(b)
		if as != bs {
			out = append(out, fmt.Sprintf("%s: %s -> %s", name, as, bs))
		}
	}
	o, n := old.Spec, cur.Spec
	field("subnet", o.Subnet, n.Subnet)
	field("gateway", o.Gateway, n.Gateway)
	field("rangePlan.mode", old.RangeMode(), cur.RangeMode())
	field("rangePlan.chunkPrefix", o.RangePlan.ChunkPrefix, n.RangePlan.ChunkPrefix)
	field("rangePlan.pool", o.RangePlan.Pool, n.RangePlan.Pool)
	field("rangePlan.exclude", o.RangePlan.Exclude, n.RangePlan.Exclude)
	field("rangePlan.pinned", o.RangePlan.Pinned, n.RangePlan.Pinned) // fmt prints maps sorted
	field("rangePlan.quarantine", o.RangePlan.Quarantine, n.RangePlan.Quarantine)
	field("hostAccess", spec.BoolOr(o.HostAccess, true), spec.BoolOr(n.HostAccess, true))
	field("Host pins", hostPins(oldHosts, old.Metadata.Name), hostPins(curHosts, cur.Metadata.Name))
	return out
}

func hostPins(hosts []*spec.Host, vlan string) map[string]string {
	out := map[string]string{}
	for _, h := range hosts {
		if hv, ok := h.Spec.VLANs[vlan]; ok && hv.Chunk != "" {
			out[h.Metadata.Name] = hv.Chunk
		}
	}
	return out
}

func printPlan(w io.Writer, r planReport, nodes int) error {
	if r.Documents == "kv" {
		fmt.Fprintln(w, "documents: in force in KV")
	} else {
		fmt.Fprintf(w, "documents: %s over those in KV\n", r.Documents)
	}
	if r.DockerError != "" {
		fmt.Fprintf(w, "nodes: Docker not asked (%s); taking the %d node(s) holding a chunk outside quarantine as the swarm\n", r.DockerError, nodes)
	} else {
		fmt.Fprintf(w, "nodes: %d from Docker\n", nodes)
	}
	for _, warn := range r.Warnings {
		fmt.Fprintln(w, "warning: "+warn)
	}
	for _, v := range r.VLANs {
		fmt.Fprintln(w)
		if err := printPlanVLAN(w, v); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "\nnothing was written")
	return nil
}

func printPlanVLAN(w io.Writer, v planVLAN) error {
	gw := v.Gateway
	if gw == "" {
		gw = "none"
	}
	if v.Cluster != nil {
		return printClusterVLAN(w, v, gw)
	}
	fmt.Fprintf(w, "VLAN %s: subnet %s, gateway %s, /%d chunks, quarantine %s", v.VLAN, v.Subnet, gw, v.ChunkPrefix, v.Quarantine)
	if !v.InKV {
		fmt.Fprint(w, " (new: not in KV yet)")
	}
	fmt.Fprintf(w, "\n  pool: %s\n", strings.Join(v.Pool, ", "))
	if len(v.Exclude) > 0 {
		fmt.Fprintf(w, "  exclude: %s\n", strings.Join(v.Exclude, ", "))
	}
	for _, ch := range v.Changes {
		fmt.Fprintf(w, "  change: %s\n", ch)
	}

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  HOSTNAME\tNODE\tNOW\tWOULD BE\tCHANGE\tSHIM\tUNTIL\tREASON")
	for _, n := range v.Nodes {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", planDash(n.Hostname), n.Node, planDash(n.Now), planDash(n.Next), n.Change, planDash(n.Shim), planWhen(n.Until), n.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Nodes) == 0 {
		fmt.Fprintln(w, "  (no nodes)")
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  CHUNK\tWOULD BE\tHOLDER\tSHIM\tUNTIL\tNOTE")
	for _, ch := range v.Chunks {
		chunk, state := ch.First, string(ch.State)
		if ch.Count > 1 {
			chunk += " .. " + ch.Last
			state += fmt.Sprintf(" (%d)", ch.Count)
		}
		holder := "-"
		if ch.Node != "" {
			holder = fmt.Sprintf("%s (%s)", ch.Hostname, ch.Node)
		}
		var notes []string
		if ch.PinnedTo != "" {
			notes = append(notes, "pinned to "+ch.PinnedTo)
		}
		if ch.OutsidePlan {
			notes = append(notes, "outside the plan; kept while its node is in the swarm")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", chunk, state, holder, planDash(ch.Shim), planWhen(ch.Until), strings.Join(notes, "; "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "  %d free chunk(s)\n", v.FreeChunks)
	for _, p := range v.Problems {
		fmt.Fprintf(w, "  problem: %s\n", p)
	}
	if len(v.Unallocated) > 0 {
		fmt.Fprintf(w, "  pool exhausted: no chunk for %s\n", strings.Join(v.Unallocated, ", "))
	}
	return nil
}

func planDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func planWhen(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func planSortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// printClusterVLAN prints a cluster-mode VLAN: its pool and the leases per
// node.
func printClusterVLAN(w io.Writer, v planVLAN, gw string) error {
	c := v.Cluster
	pool := "the subnet"
	if len(v.Pool) > 0 {
		pool = strings.Join(v.Pool, ", ")
	}
	fmt.Fprintf(w, "VLAN %s: subnet %s, gateway %s, mode cluster (one pool, leased address by address), quarantine %s", v.VLAN, v.Subnet, gw, v.Quarantine)
	if !v.InKV {
		fmt.Fprint(w, " (new: not in KV yet)")
	}
	fmt.Fprintf(w, "\n  pool: %s: %d address(es), %d free, %d in quarantine\n", pool, c.PoolSize, c.Free, c.Quarantined)
	if len(v.Exclude) > 0 {
		fmt.Fprintf(w, "  exclude: %s\n", strings.Join(v.Exclude, ", "))
	}
	for _, ch := range v.Changes {
		fmt.Fprintf(w, "  change: %s\n", ch)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  HOSTNAME\tNODE\tSHIM\tLEASES\tADDRESSES\tNOTE")
	for _, n := range c.Nodes {
		note := ""
		if !n.InSwarm {
			note = "not in the swarm: leases go into quarantine"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\n", planDash(n.Hostname), n.Node, planDash(n.Shim), len(n.Tasks), planDash(strings.Join(n.Tasks, " ")), note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(c.Nodes) == 0 {
		fmt.Fprintln(w, "  (no nodes)")
	}
	return nil
}
