package overview

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"swarmvlan/reconcile/cluster"
	"swarmvlan/state"
)

// BenchmarkSourceHeld measures what a watched dashboard holds at 10,000
// services (a document and a status each, as the leader writes them) and
// what it holds once idle: the live heap after a collection, beside the
// heap before the source was fed.
func BenchmarkSourceHeld(b *testing.B) {
	const n = 10000
	s := testStore(b)
	pairs := api.KVPairs{{Key: s.SpecKey("VLAN", "v1"), Value: []byte(testVLAN), ModifyIndex: 1}}
	for i := range n {
		name := fmt.Sprintf("svc%05d", i)
		det := cluster.ServiceDetails{Replicas: 0, Service: cluster.ServiceStatus{Name: name}}
		st := state.Status{Conditions: []state.Condition{{Type: "Ready", Status: "True", Message: "0/0"}}, Details: mustJSON(b, det)}
		pairs = append(pairs,
			&api.KVPair{Key: s.SpecKey("Service", name), Value: []byte(strings.Replace(testService, "name: web", "name: "+name, 1)), ModifyIndex: uint64(i + 2)},
			&api.KVPair{Key: s.StatusKey("services", name), Value: mustJSON(b, st)})
	}
	live := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for b.Loop() {
		before := live()
		src := NewSource(s, "m1", nil)
		src.SetTree(s.Tree(pairs))
		watched := live()
		src.reset()
		idle := live()
		runtime.KeepAlive(src)
		b.ReportMetric(float64(watched-before)/(1<<20), "MB-watched")
		b.ReportMetric(float64(int64(idle)-int64(before))/(1<<20), "MB-idle")
	}
	runtime.KeepAlive(pairs)
}
