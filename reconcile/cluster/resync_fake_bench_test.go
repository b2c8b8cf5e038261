package cluster

import (
	"context"
	"fmt"
	"testing"

	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
)

// BenchmarkServiceResyncFake10k times the batch pass's own work over
// 10,000 unchanged services against the in-memory fake (which copies
// every answer through JSON, as the API's decoding does), without and
// with the memo of services found matching: a CPU profile of it
// (-cpuprofile) shows where the pass spends beyond the Engine.
func BenchmarkServiceResyncFake10k(b *testing.B) {
	const n = 10000
	ctx := context.Background()
	f := enginetest.NewFake()
	f.Networks["netvlan40"] = networkInspectFixture{Name: "vlan40", ID: "netvlan40", Scope: "swarm"}.inspect()
	ins := make([]ServiceInput, n)
	zero := 0
	for i := range ins {
		ins[i] = ServiceInput{Service: &spec.Service{Metadata: spec.ObjectMeta{Name: fmt.Sprintf("svc%05d", i)}, Spec: spec.ServiceSpec{
			Image: "img:1", Args: []string{"-listen", ":8080"}, Env: map[string]string{"LOG_LEVEL": "x"},
			Networks: []string{"vlan40"}, Replicas: &zero,
			Update: &spec.UpdatePolicy{Order: "start-first"},
		}}, Replicas: 0, Owner: "inst"}
	}
	if _, err := ServiceResync(ctx, f, ins); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		memo *ServicePlanMemo
	}{{"no-memo", nil}, {"memo", &ServicePlanMemo{}}} {
		b.Run(tc.name, func(b *testing.B) {
			if tc.memo != nil {
				ServiceResyncMemo(ctx, f, ins, tc.memo)
			}
			for b.Loop() {
				res, err := ServiceResyncMemo(ctx, f, ins, tc.memo)
				if err != nil || res.Unchanged != n {
					b.Fatalf("unchanged %d, err %v", res.Unchanged, err)
				}
			}
		})
	}
}
