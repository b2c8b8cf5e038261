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
