package cluster

import (
	"reflect"
	"swarmvlan/spec"
	"testing"

	"github.com/docker/docker/api/types/swarm"
)

func TestSvcReadinessVLANs(t *testing.T) {
	s := swarm.ServiceSpec{TaskTemplate: swarm.TaskSpec{Placement: &swarm.Placement{Constraints: []string{
		"node.labels.rack==a", spec.NodeReadyConstraint("vlan40"), "node.labels.io.swarmvlan.vlan.vlan80 == ready", "node.role!=manager",
	}}}}
	if got := svcReadinessVLANs(s); !reflect.DeepEqual(got, []string{"vlan40", "vlan80"}) {
		t.Fatalf("svcReadinessVLANs = %v, want [vlan40 vlan80]", got)
	}
	if got := svcReadinessVLANs(swarm.ServiceSpec{}); got != nil {
		t.Fatalf("no placement: %v", got)
	}
}
