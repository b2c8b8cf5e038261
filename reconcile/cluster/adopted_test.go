package cluster

import (
	"encoding/json"
	"testing"

	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// An adopted service gets the leader's service labels, the readiness
// constraints and the replica count, and keeps every other part of its
// task template byte for byte.
func TestSvcAdoptedSpec(t *testing.T) {
	three, five := uint64(3), uint64(5)
	have := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: "stack_web", Labels: map[string]string{"com.docker.stack.namespace": "stack"}},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: "web:1", Env: []string{"B=2", "A=1"}, Labels: map[string]string{"tier": "front"}},
			Placement:     &swarm.Placement{Constraints: []string{"node.role==worker"}},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: "net-id"}},
		},
		Mode: swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &three}},
	}
	doc := &spec.Service{APIVersion: spec.APIVersion, Kind: spec.KindService, Metadata: spec.ObjectMeta{Name: "stack-web"},
		Spec: spec.ServiceSpec{Image: "web:1", DockerName: "stack_web", Networks: []string{"vlan40-net"}, Env: map[string]string{"A": "1", "B": "2"}}}
	want, err := BuildServiceSpec(ServiceInput{Service: doc, Replicas: int(five), Owner: "o1", NetworkNames: map[string]string{"vlan40-net": "swarm-vlan40_net"}})
	if err != nil {
		t.Fatal(err)
	}
	if want.Name != "stack_web" || want.TaskTemplate.Networks[0].Target != "swarm-vlan40_net" {
		t.Fatalf("built %s on %+v", want.Name, want.TaskTemplate.Networks)
	}
	got := svcAdoptedSpec(want, have)
	if !spec.Managed(got.Labels) || got.Labels[spec.LabelOwner] != "o1" || got.Labels["com.docker.stack.namespace"] != "stack" {
		t.Errorf("labels %v", got.Labels)
	}
	if c := got.TaskTemplate.Placement.Constraints; len(c) != 2 || c[0] != "node.role==worker" || c[1] != spec.NodeReadyConstraint("vlan40-net") {
		t.Errorf("constraints %v", c)
	}
	if *got.Mode.Replicated.Replicas != 5 {
		t.Errorf("replicas %d", *got.Mode.Replicated.Replicas)
	}
	a, b := have.TaskTemplate, got.TaskTemplate
	a.Placement, b.Placement = nil, nil
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("task template changed:\n%s\n%s", ja, jb)
	}
	if *have.Mode.Replicated.Replicas != 3 || len(have.TaskTemplate.Placement.Constraints) != 1 || spec.Managed(have.Labels) {
		t.Error("svcAdoptedSpec changed the spec it was given")
	}

	rec := state.AdoptedService{ID: "svc1", Service: "stack-web", SpecHash: spec.AdoptionHash(doc)}
	in := ServiceInput{Service: doc, Adopted: map[string]state.AdoptedService{"svc1": rec}}
	if !svcAdopted(in, &swarm.Service{ID: "svc1"}) {
		t.Error("the adopted service with its document unchanged is not taken as adopted")
	}
	changed := *doc
	changed.Spec.Image = "web:2"
	if svcAdopted(ServiceInput{Service: &changed, Adopted: in.Adopted}, &swarm.Service{ID: "svc1"}) {
		t.Error("a changed document still keeps the hand-made task template")
	}
	if svcAdopted(in, &swarm.Service{ID: "other"}) {
		t.Error("a service without a record is taken as adopted")
	}
}
