package adopt

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// recipe is the seed's manual recipe as the Engines report it: vlan40_net
// config-only on each node with its own range, swarm-vlan40_net made from
// it, a 3-replica service on it.
func recipe(ranges map[string]string) Input {
	var in Input
	for _, h := range slices.Sorted(func(yield func(string) bool) {
		for h := range ranges {
			if !yield(h) {
				return
			}
		}
	}) {
		in.Nodes = append(in.Nodes, Node{ID: "id-" + h, Hostname: h, Reported: true, ConfigNetworks: []state.NodeConfigNetwork{{
			ID: "cfg-" + h, Name: "vlan40_net", Parent: "eth1.40", Options: map[string]string{"parent": "eth1.40"},
			Subnet: "172.80.0.0/16", IPRange: ranges[h], Gateway: "172.80.0.1", Pools: 1,
		}}})
	}
	in.SwarmNetworks = []network.Inspect{{ID: "swarm-net", Name: "swarm-vlan40_net", Driver: "macvlan", Scope: "swarm",
		ConfigFrom: network.ConfigReference{Network: "vlan40_net"}}}
	replicas := uint64(3)
	in.Services = []swarm.Service{{ID: "svc-web", Spec: swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "stack_web", Labels: map[string]string{"com.docker.stack.namespace": "stack"}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: "web:1.4", Args: []string{"-listen", ":8080"},
				Env: []string{"B=2", "A=1"}, Labels: map[string]string{"tier": "front"}},
			Networks: []swarm.NetworkAttachmentConfig{{Target: "swarm-net"}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &replicas}},
	}}}
	return in
}

func TestInferRecipe(t *testing.T) {
	ranges := map[string]string{"node1": "172.80.1.0/24", "node2": "172.80.2.0/24", "node3": "172.80.3.0/24"}
	res := Infer(recipe(ranges))
	if r := res.Refused(); len(r) > 0 {
		t.Fatalf("refused: %v", r)
	}
	if len(res.VLANs) != 1 {
		t.Fatalf("VLANs = %d, want 1", len(res.VLANs))
	}
	v := res.VLANs[0]
	if v.Metadata.Name != "vlan40-net" || v.Spec.Trunk != "eth1" || v.Spec.ID != 40 || v.Spec.Subnet != "172.80.0.0/16" ||
		v.Spec.Gateway != "172.80.0.1" || v.Spec.Driver != "macvlan" || v.Spec.RangePlan.ChunkPrefix != 24 {
		t.Errorf("vlan = %+v", v.Spec)
	}
	if !reflect.DeepEqual(v.Spec.RangePlan.Pinned, ranges) {
		t.Errorf("pinned = %v, want %v", v.Spec.RangePlan.Pinned, ranges)
	}
	if d := v.Spec.Docker; d == nil || d.ConfigNetwork != "vlan40_net" || d.Network != "swarm-vlan40_net" {
		t.Errorf("docker names = %+v", d)
	}
	// The gateway lies outside every range: later chunks must not hold it.
	if !slices.Equal(v.Spec.RangePlan.Exclude, []string{"172.80.0.1/32"}) {
		t.Errorf("exclude = %v", v.Spec.RangePlan.Exclude)
	}
	if spec.BoolOr(v.Spec.HostAccess, true) {
		t.Error("hostAccess is on: a shim would take an address the adopted networks do not reserve")
	}
	if len(res.Networks) != 4 {
		t.Errorf("network records = %+v, want 3 config and 1 swarm", res.Networks)
	}
	for _, n := range res.Networks {
		if n.VLAN != "vlan40-net" || (n.Role == state.AdoptedConfigNetwork) != (n.Node != "") {
			t.Errorf("record %+v", n)
		}
	}

	if len(res.Services) != 1 {
		t.Fatalf("services = %d", len(res.Services))
	}
	s := res.Services[0]
	if s.Metadata.Name != "stack-web" || s.Spec.DockerName != "stack_web" || *s.Spec.Replicas != 3 ||
		!slices.Equal(s.Spec.Networks, []string{"vlan40-net"}) || s.Spec.Env["A"] != "1" || s.Spec.Labels["tier"] != "front" ||
		s.Metadata.Labels["com.docker.stack.namespace"] != "stack" {
		t.Errorf("service = %+v %+v", s.Metadata, s.Spec)
	}
	if u := res.Unexpressed["stack-web"]; len(u) > 0 {
		t.Errorf("unexpressed = %v, want none (the environment's order is not a field)", u)
	}
	if len(res.AdoptedServices) != 1 || res.AdoptedServices[0].ID != "svc-web" || res.AdoptedServices[0].SpecHash == "" {
		t.Fatalf("adopted services = %+v", res.AdoptedServices)
	}
	// The hash is that of the document as the leader holds it.
	d, err := roundTrip(s)
	if err != nil {
		t.Fatal(err)
	}
	if h := spec.AdoptionHash(d.(*spec.Service)); h != res.AdoptedServices[0].SpecHash {
		t.Errorf("hash %s, recorded %s", h, res.AdoptedServices[0].SpecHash)
	}
}

func TestInferRefusesOverlap(t *testing.T) {
	res := Infer(recipe(map[string]string{"node1": "172.80.1.0/24", "node2": "172.80.0.0/23", "node3": "172.80.3.0/24"}))
	r := res.Refused()
	if len(r) != 1 {
		t.Fatalf("refused = %v, want one problem", r)
	}
	for _, want := range []string{"node1", "node2", "172.80.1.0/24", "overlap in 172.80.1.0/24"} {
		if !strings.Contains(r[0].What, want) {
			t.Errorf("refusal %q does not name %s", r[0].What, want)
		}
	}
	if len(res.VLANs)+len(res.Services)+len(res.Networks) != 0 {
		t.Errorf("an overlapping plan gave documents or records: %+v", res)
	}
}

func TestInferInconsistencies(t *testing.T) {
	t.Run("gateway outside the subnet", func(t *testing.T) {
		in := recipe(map[string]string{"node1": "172.80.1.0/24", "node2": "172.80.2.0/24"})
		for i := range in.Nodes {
			in.Nodes[i].ConfigNetworks[0].Gateway = "10.0.0.1"
		}
		res := Infer(in)
		if len(res.VLANs) != 1 || res.VLANs[0].Spec.Gateway != "" {
			t.Fatalf("vlans = %+v", res.VLANs)
		}
		if !hasProblem(res, "gateway 10.0.0.1 is outside the subnet", false) {
			t.Errorf("problems = %v", res.Problems)
		}
	})
	t.Run("a node without the config network", func(t *testing.T) {
		in := recipe(map[string]string{"node1": "172.80.1.0/24", "node2": "172.80.2.0/24"})
		in.Nodes = append(in.Nodes, Node{ID: "id-node4", Hostname: "node4", Reported: true})
		res := Infer(in)
		if len(res.VLANs) != 1 || res.VLANs[0].Spec.RangePlan.Pinned["node4"] != "" {
			t.Fatalf("vlans = %+v", res.VLANs)
		}
		if !hasProblem(res, "node node4 has no config network vlan40_net", false) {
			t.Errorf("problems = %v", res.Problems)
		}
	})
	t.Run("a node without a report", func(t *testing.T) {
		in := recipe(map[string]string{"node1": "172.80.1.0/24"})
		in.Nodes = append(in.Nodes, Node{ID: "id-node2", Hostname: "node2"})
		if res := Infer(in); !hasProblem(res, "no report from the host role of node node2", true) {
			t.Errorf("problems = %v", res.Problems)
		}
	})
	t.Run("a node without a range", func(t *testing.T) {
		in := recipe(map[string]string{"node1": "172.80.1.0/24", "node2": ""})
		res := Infer(in)
		if !hasProblem(res, "node node2: config network vlan40_net has no --ip-range", false) ||
			!hasProblem(res, "overlap in 172.80.1.0/24", true) {
			t.Errorf("problems = %v", res.Problems)
		}
	})
	t.Run("ranges of different sizes", func(t *testing.T) {
		ranges := map[string]string{"node1": "172.80.1.0/24", "node2": "172.80.2.0/24", "node3": "172.80.4.0/22"}
		res := Infer(recipe(ranges))
		if len(res.VLANs) != 1 {
			t.Fatalf("problems %v", res.Problems)
		}
		if v := res.VLANs[0]; v.Spec.RangePlan.ChunkPrefix != 24 || !reflect.DeepEqual(v.Spec.RangePlan.Pinned, ranges) {
			t.Errorf("range plan = %+v", v.Spec.RangePlan)
		}
	})
}

func hasProblem(res Result, what string, refuse bool) bool {
	return slices.ContainsFunc(res.Problems, func(p Problem) bool { return strings.Contains(p.What, what) && p.Refuse == refuse })
}

func TestInferUnexpressed(t *testing.T) {
	in := recipe(map[string]string{"node1": "172.80.1.0/24"})
	svc := &in.Services[0].Spec
	svc.EndpointSpec = &swarm.EndpointSpec{Mode: swarm.ResolutionModeVIP, Ports: []swarm.PortConfig{{TargetPort: 80, PublishedPort: 8080}}}
	svc.TaskTemplate.ContainerSpec.Privileges = &swarm.Privileges{NoNewPrivileges: true}
	svc.TaskTemplate.Networks = append(svc.TaskTemplate.Networks, swarm.NetworkAttachmentConfig{Target: "overlay-id", Aliases: []string{"web"}})
	in.SwarmNetworks = append(in.SwarmNetworks, network.Inspect{ID: "overlay-id", Name: "backend", Driver: "overlay", Scope: "swarm"})
	svc.TaskTemplate.ContainerSpec.Secrets = []*swarm.SecretReference{{SecretName: "db", SecretID: "sid",
		File: &swarm.SecretReferenceFileTarget{Name: "db.pw", UID: "100", GID: "0", Mode: 0o400}}}
	res := Infer(in)
	u := res.Unexpressed["stack-web"]
	for _, want := range []string{"EndpointSpec.Ports", "TaskTemplate.ContainerSpec.Privileges"} {
		if !slices.ContainsFunc(u, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("unexpressed %v lacks %s", u, want)
		}
	}
	// The overlay and the secret's file are expressed: in the document,
	// and not listed.
	if slices.ContainsFunc(u, func(s string) bool {
		return strings.Contains(s, "Networks") || strings.Contains(s, "Secrets")
	}) {
		t.Errorf("unexpressed %v lists the overlay or the secret", u)
	}
	var doc *spec.Service
	for _, d := range res.Services {
		if d.Metadata.Name == "stack-web" {
			doc = d
		}
	}
	if doc == nil {
		t.Fatalf("no document for stack-web: %v", res.Problems)
	}
	if want := []spec.NetworkAttachment{{Name: "backend", Aliases: []string{"web"}}}; !reflect.DeepEqual(doc.Spec.Overlays, want) {
		t.Errorf("overlays = %+v, want %+v", doc.Spec.Overlays, want)
	}
	uid, mode := 100, 0o400
	if want := []spec.FileRef{{Name: "db", Target: "db.pw", UID: &uid, Mode: &mode}}; !reflect.DeepEqual(doc.Spec.Secrets, want) {
		t.Errorf("secrets = %+v, want %+v", doc.Spec.Secrets, want)
	}
}

func TestDNSName(t *testing.T) {
	taken := map[string]bool{}
	for _, c := range []struct{ in, want string }{
		{"vlan40_net", "vlan40-net"},
		{"swarm-vlan40_net", "swarm-vlan40-net"},
		{"Stack__Web.", "stack-web"},
		{"stack_web", "stack-web-2"},
		{"___", "adopted"},
	} {
		if got := DNSName(c.in, taken); got != c.want {
			t.Errorf("DNSName(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestInferNameFromSwarm(t *testing.T) {
	in := recipe(map[string]string{"node1": "172.80.1.0/24"})
	in.NameFrom = NameFromSwarm
	res := Infer(in)
	if len(res.VLANs) != 1 || res.VLANs[0].Metadata.Name != "swarm-vlan40-net" {
		t.Fatalf("vlans %+v, problems %v", res.VLANs, res.Problems)
	}
	if len(res.Services) != 1 || !slices.Equal(res.Services[0].Spec.Networks, []string{"swarm-vlan40-net"}) {
		t.Errorf("services %+v", res.Services)
	}
}

// What swarmvlan made itself is not adopted again: its config networks
// carry its labels, so the host role does not report them, and its
// services carry them too.
func TestInferSkipsSwarmvlansOwn(t *testing.T) {
	in := recipe(map[string]string{"node1": "172.80.1.0/24"})
	in.Nodes[0].ConfigNetworks = nil
	in.Services[0].Spec.Labels = spec.OwnerLabels(spec.KindService, "web")
	if res := Infer(in); len(res.VLANs)+len(res.Services)+len(res.Networks) != 0 {
		t.Errorf("adopted swarmvlan's own objects: %+v", res)
	}
}

// withShims gives each node of in the recipe's hand-made shim: a
// bridge-mode macvlan on the parent with a /32 outside every range and the
// node's range routed through it.
func withShims(in Input, ranges map[string]string) Input {
	for i := range in.Nodes {
		n := &in.Nodes[i]
		n.Shims = []state.NodeShim{
			{Name: "vlan40-shim", Parent: "eth1.40", Mode: "bridge", Addrs: []string{"172.80.0.1" + n.Hostname[len(n.Hostname)-1:] + "/32"}, Routes: []string{ranges[n.Hostname]}},
			// Not a shim of this VLAN: another parent, another mode.
			{Name: "other", Parent: "eth2", Mode: "bridge", Addrs: []string{"172.80.9.9/32"}},
			{Name: "priv", Parent: "eth1.40", Mode: "private", Addrs: []string{"172.80.9.8/32"}},
		}
	}
	return in
}

func TestInferShims(t *testing.T) {
	ranges := map[string]string{"node1": "172.80.1.0/24", "node2": "172.80.2.0/24", "node3": "172.80.3.0/24"}
	t.Run("every node has one", func(t *testing.T) {
		res := Infer(withShims(recipe(ranges), ranges))
		if r := res.Refused(); len(r) > 0 || len(res.VLANs) != 1 {
			t.Fatalf("refused: %v", r)
		}
		v := res.VLANs[0]
		if !spec.BoolOr(v.Spec.HostAccess, false) {
			t.Error("hostAccess is off although every node has a hand-made shim")
		}
		want := []state.AdoptedShim{
			{VLAN: "vlan40-net", Node: "id-node1", Hostname: "node1", Name: "vlan40-shim", Addr: "172.80.0.11"},
			{VLAN: "vlan40-net", Node: "id-node2", Hostname: "node2", Name: "vlan40-shim", Addr: "172.80.0.12"},
			{VLAN: "vlan40-net", Node: "id-node3", Hostname: "node3", Name: "vlan40-shim", Addr: "172.80.0.13"},
		}
		if !reflect.DeepEqual(res.Shims, want) {
			t.Errorf("shim records %+v, want %+v", res.Shims, want)
		}
		// The shims' addresses lie outside every range: no later chunk
		// may hand them out, nor the gateway's.
		if want := []string{"172.80.0.1/32", "172.80.0.11/32", "172.80.0.12/32", "172.80.0.13/32"}; !slices.Equal(v.Spec.RangePlan.Exclude, want) {
			t.Errorf("exclude = %v, want %v", v.Spec.RangePlan.Exclude, want)
		}
	})
	t.Run("one node lacks it", func(t *testing.T) {
		in := withShims(recipe(ranges), ranges)
		in.Nodes[2].Shims = nil
		res := Infer(in)
		if len(res.VLANs) != 1 || spec.BoolOr(res.VLANs[0].Spec.HostAccess, true) {
			t.Fatalf("vlans %+v: want one without host access", res.VLANs)
		}
		if len(res.Shims) != 2 {
			t.Errorf("shim records %+v, want node1's and node2's", res.Shims)
		}
		if !hasProblem(res, "node node3 has no hand-made shim", false) {
			t.Errorf("problems %v", res.Problems)
		}
	})
	t.Run("address inside the range", func(t *testing.T) {
		in := withShims(recipe(ranges), ranges)
		in.Nodes[0].Shims[0].Addrs = []string{"172.80.1.254/32"}
		res := Infer(in)
		if !hasProblem(res, "node node1: shim vlan40-shim's address 172.80.1.254 is inside the node's range 172.80.1.0/24", false) {
			t.Errorf("problems %v", res.Problems)
		}
		in.Nodes[0].ConfigNetworks[0].Aux = map[string]string{"shim": "172.80.1.254"}
		if res := Infer(in); hasProblem(res, "inside the node's range", false) {
			t.Errorf("an aux address keeps it out of Docker's allocation: %v", res.Problems)
		}
	})
	t.Run("two shims", func(t *testing.T) {
		in := withShims(recipe(ranges), ranges)
		in.Nodes[0].Shims = append(in.Nodes[0].Shims, state.NodeShim{Name: "shim2", Parent: "eth1.40", Mode: "bridge",
			Addrs: []string{"172.80.0.99/32"}, Routes: []string{"172.80.1.0/24"}})
		res := Infer(in)
		if !hasProblem(res, "node node1: 2 hand-made shims on eth1.40 (vlan40-shim, shim2)", false) || spec.BoolOr(res.VLANs[0].Spec.HostAccess, true) {
			t.Errorf("problems %v", res.Problems)
		}
	})
}

func TestInferModeChunks(t *testing.T) {
	res := Infer(recipe(map[string]string{"node1": "172.80.1.0/24"}))
	if len(res.VLANs) != 1 || res.VLANs[0].Spec.RangePlan.Mode != spec.RangeModeChunks {
		t.Fatalf("vlans %+v: want rangePlan.mode chunks written out", res.VLANs)
	}
}

func TestInferSkipsAndSaysSo(t *testing.T) {
	in := recipe(map[string]string{"node1": "172.80.1.0/24"})
	own := func(id, name string, f func(*network.Inspect)) network.Inspect {
		n := network.Inspect{ID: id, Name: name, Driver: "macvlan", Scope: "swarm", ConfigFrom: network.ConfigReference{Network: name + "-config"}}
		f(&n)
		return n
	}
	in.SwarmNetworks = append(in.SwarmNetworks,
		own("n50", "vlan50", func(n *network.Inspect) { n.Labels = spec.OwnerLabels(spec.KindVLAN, "vlan50") }),
		own("n60", "vlan60", func(n *network.Inspect) { n.IPAM.Driver = spec.IPAMDriver }),
		own("n70", "vlan70", func(*network.Inspect) {}))
	res := Infer(in)
	if len(res.VLANs) != 1 {
		t.Fatalf("vlans %d, want the hand-made one alone", len(res.VLANs))
	}
	for _, want := range []string{"swarm network vlan50 (n50): swarmvlan's own, of VLAN vlan50",
		"swarm network vlan60 (n60): its addresses come from swarmvlan's IPAM plugin",
		"swarm network vlan70 (n70): no node reports vlan70-config as a hand-made config-only network"} {
		if !slices.ContainsFunc(res.Skipped, func(s string) bool { return strings.HasPrefix(s, want) }) {
			t.Errorf("skipped %q, want %q", res.Skipped, want)
		}
	}
	// Adopted already, for a VLAN in KV: skipped as such.
	in.Adopted = map[string]state.AdoptedNetwork{"swarm-net": {ID: "swarm-net", VLAN: "vlan40-net", Role: state.AdoptedSwarmNetwork}}
	in.Existing = []*spec.VLAN{res.VLANs[0]}
	res = Infer(in)
	if len(res.VLANs) != 0 || !slices.ContainsFunc(res.Skipped, func(s string) bool { return strings.Contains(s, "adopted already, as VLAN vlan40-net") }) {
		t.Errorf("vlans %d, skipped %q", len(res.VLANs), res.Skipped)
	}
}

func TestInferRefusesCollisions(t *testing.T) {
	existing := func(name, subnet string, docker *spec.VLANDockerNames) *spec.VLAN {
		return &spec.VLAN{Metadata: spec.ObjectMeta{Name: name}, Spec: spec.VLANSpec{Subnet: subnet, Docker: docker}}
	}
	for _, c := range []struct {
		name  string
		other *spec.VLAN
		want  string
	}{
		{"subnet", existing("vlan40", "172.80.0.0/12", nil), "collides with VLAN vlan40 in KV: subnet 172.80.0.0/16 overlaps its 172.80.0.0/12"},
		{"config network", existing("v", "10.0.0.0/16", &spec.VLANDockerNames{ConfigNetwork: "vlan40_net"}), "collides with VLAN v in KV: both name config network vlan40_net"},
		{"swarm network", existing("v", "10.0.0.0/16", &spec.VLANDockerNames{Network: "swarm-vlan40_net"}), "collides with VLAN v in KV: both name swarm network swarm-vlan40_net"},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := recipe(map[string]string{"node1": "172.80.1.0/24"})
			in.Existing = []*spec.VLAN{c.other}
			res := Infer(in)
			r := res.Refused()
			if len(r) != 1 || r[0].Object != "VLAN vlan40-net" || r[0].What != c.want {
				t.Errorf("refused %v, want %q", r, c.want)
			}
		})
	}
	in := recipe(map[string]string{"node1": "172.80.1.0/24"})
	in.Existing = []*spec.VLAN{existing("far", "10.0.0.0/16", nil)}
	if r := Infer(in).Refused(); len(r) != 0 {
		t.Errorf("refused beside an unrelated VLAN: %v", r)
	}
}
