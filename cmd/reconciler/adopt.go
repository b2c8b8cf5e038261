package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"swarmvlan/reconcile/adopt"
	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// cmdAdopt reads a swarm set up by hand (the manual recipe) and writes the
// documents that describe it, with the records by which the reconcilers
// take its networks and services over as they are. Every node's
// config-only networks come from its host role's report in
// state/nodes/<node> (the Engine of one manager shows only its own
// node's), so the host role must run on every node first; the swarm
// networks, services and nodes come from this manager's Engine.
func cmdAdopt(ctx context.Context, c *cli, args []string) error {
	fs := c.flags()
	dryRun := fs.Bool("dry-run", false, "print the documents and what would be adopted; write nothing")
	nameFrom := fs.String("vlan-name-from", adopt.NameFromConfig, "name each VLAN document after its config network (config) or its swarm network (swarm)")
	dockerHost := fs.String("docker-host", "", "Docker Engine address of a manager (default: DOCKER_HOST or the local socket)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || (*nameFrom != adopt.NameFromConfig && *nameFrom != adopt.NameFromSwarm) {
		return fmt.Errorf("usage: reconciler adopt [--dry-run] [--vlan-name-from config|swarm]")
	}
	store, err := c.store()
	if err != nil {
		return err
	}
	d, err := engine.New(*dockerHost)
	if err != nil {
		return err
	}
	defer d.Close()

	in := adopt.Input{NameFrom: *nameFrom}
	nodes, err := d.NodeList(ctx, engine.Filter())
	if err != nil {
		return fmt.Errorf("list swarm nodes: %w", err)
	}
	live, err := store.LiveNodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		node := adopt.Node{ID: n.ID, Hostname: n.Description.Hostname}
		if b, ok := live[n.ID]; ok {
			var r state.NodeReport
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("node %s: report: %w", n.Description.Hostname, err)
			}
			node.Reported, node.ConfigNetworks, node.Shims = true, r.ConfigNetworks, r.Shims
		}
		in.Nodes = append(in.Nodes, node)
	}
	nets, err := d.NetworkList(ctx, engine.Filter("scope", "swarm"))
	if err != nil {
		return fmt.Errorf("list swarm networks: %w", err)
	}
	in.SwarmNetworks = nets
	if in.Services, err = d.ServiceList(ctx, engine.Filter()); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	if in.Adopted, err = store.AdoptedNetworksList(ctx); err != nil {
		return err
	}
	stored, err := store.SpecDocsOfKind(ctx, spec.KindVLAN)
	if err != nil {
		return err
	}
	for _, sd := range stored {
		// One that does not decode collides with nothing adopt can tell.
		if o, err := spec.Decode(sd.Value); err == nil {
			if v, ok := o.(*spec.VLAN); ok {
				in.Existing = append(in.Existing, v)
			}
		}
	}

	res := adopt.Infer(in)
	for _, s := range res.Skipped {
		fmt.Fprintln(c.stderr, "adopt: skipped", s)
	}
	for _, p := range res.Problems {
		fmt.Fprintln(c.stderr, "adopt:", p.String())
	}
	if refused := res.Refused(); len(refused) > 0 {
		fmt.Fprintf(c.stderr, "adopt: refused for %d problem(s); nothing was written\n", len(refused))
		for _, p := range refused {
			fmt.Fprintln(c.stderr, "  refused:", p.String())
		}
		return exitError{code: 1}
	}
	if len(res.VLANs) == 0 {
		fmt.Fprintln(c.stdout, "# nothing to adopt: no swarm network is made --config-from a hand-made config-only macvlan or ipvlan network")
		return nil
	}

	var objs []spec.Object
	for _, v := range res.VLANs {
		objs = append(objs, v)
	}
	for _, h := range res.Hosts {
		objs = append(objs, h)
	}
	for _, s := range res.Services {
		objs = append(objs, s)
	}
	var out bytes.Buffer
	var docs []state.SpecDoc
	hashes := map[string]string{}
	for i, o := range objs {
		b, err := adoptYAML(o)
		if err != nil {
			return err
		}
		// The hash of the document as the leader will decode it.
		dd, err := spec.Decode(b)
		if err != nil {
			return fmt.Errorf("%s %s: the written document does not decode: %w", o.GetKind(), o.GetName(), err)
		}
		spec.SetDefaults(dd)
		if o.GetKind() == spec.KindService {
			hashes[o.GetName()] = spec.AdoptionHash(dd.(*spec.Service))
		}
		if i > 0 {
			out.WriteString("---\n")
		}
		if u := res.Unexpressed[o.GetName()]; o.GetKind() == spec.KindService && len(u) > 0 {
			fmt.Fprintf(&out, "# not expressed (kept on the service as it is until this document changes): %s\n", strings.Join(u, "; "))
		}
		out.Write(b)
		docs = append(docs, state.SpecDoc{Key: store.SpecKey(o.GetKind(), o.GetName()), Value: b})
	}
	for i := range res.AdoptedServices {
		res.AdoptedServices[i].SpecHash = hashes[res.AdoptedServices[i].Service]
	}
	out.WriteString(adoptSummary(res))
	if _, err := c.stdout.Write(out.Bytes()); err != nil {
		return err
	}

	// A document of the same name with other content is the user's: adopt
	// never overwrites it.
	check, err := store.Apply(ctx, docs, state.ApplyOptions{DryRun: true, Equal: sameDocument})
	if err != nil {
		return err
	}
	if len(check.Changed) > 0 {
		sort.Strings(check.Changed)
		return fmt.Errorf("documents already in KV with other content: %s; nothing was written (delete them or adopt under other names)", strings.Join(check.Changed, ", "))
	}
	if *dryRun {
		fmt.Fprintln(c.stdout, "# dry run: nothing was written")
		return nil
	}
	// Records first: the reconcilers find a document's networks and
	// service by them as soon as the document appears.
	if err := store.PutAdopted(ctx, res.Networks, res.AdoptedServices, res.Shims); err != nil {
		return err
	}
	applied, err := store.Apply(ctx, docs, state.ApplyOptions{Equal: sameDocument})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "# adopted: %d network(s), %d shim(s) and %d service(s) recorded; %d document(s) created, %d unchanged\n",
		len(res.Networks), len(res.Shims), len(res.AdoptedServices), len(applied.Created), len(applied.Unchanged))
	return nil
}

// adoptYAML renders a document as YAML in its fields' order.
func adoptYAML(o spec.Object) ([]byte, error) {
	j, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	var n yaml.Node
	if err := yaml.Unmarshal(j, &n); err != nil {
		return nil, err
	}
	// JSON's flow style reads badly as YAML: write block style.
	var block func(*yaml.Node)
	block = func(n *yaml.Node) {
		n.Style = 0
		for _, c := range n.Content {
			block(c)
		}
	}
	block(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// adoptSummary lists, as YAML comments, what would be taken over.
func adoptSummary(res adopt.Result) string {
	var b strings.Builder
	b.WriteString("# would adopt, as they are (no network re-created, no task restarted):\n")
	for _, n := range res.Networks {
		if n.Role == state.AdoptedConfigNetwork {
			fmt.Fprintf(&b, "#   config network %s (%s) on node %s, for VLAN %s\n", n.Name, n.ID, n.Hostname, n.VLAN)
		} else {
			fmt.Fprintf(&b, "#   swarm network %s (%s), for VLAN %s\n", n.Name, n.ID, n.VLAN)
		}
	}
	for _, s := range res.Shims {
		fmt.Fprintf(&b, "#   shim %s (%s) on node %s, for VLAN %s\n", s.Name, s.Addr, s.Hostname, s.VLAN)
	}
	for _, s := range res.AdoptedServices {
		fmt.Fprintf(&b, "#   service %s (%s), as Service %s\n", s.Name, s.ID, s.Service)
	}
	return b.String()
}
