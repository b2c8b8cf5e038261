package state

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkWatchWakeup measures the time from the start of a KV put to the
// watch's callback, over 200 puts per iteration. Each put is made once the
// watch's next blocking query is on its way, as when a person or a GitOps
// job edits a key; back-to-back puts are instead bounded by the watch's
// MinInterval floor (50 ms).
func BenchmarkWatchWakeup(b *testing.B) {
	a := newAgent(b)
	s := storeFor(b, a.Addr)
	c := a.Client(b)
	prefix := s.SpecPrefix()
	put(b, c, prefix+"vlans/a", "start")
	ch := runWatch(b, s, prefix, WatchOptions{})
	last := next(b, ch, 5*time.Second, "the initial state", func(delivery) bool { return true })

	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := 0; j < 200; j++ {
			eventually(b, 5*time.Second, "the watch to block again", func() bool { return s.Requests() > last.requests })
			value := fmt.Sprintf("%d-%d", i, j)
			at := put(b, c, prefix+"vlans/a", value)
			last = next(b, ch, 5*time.Second, "the put", func(d delivery) bool { return d.values()[prefix+"vlans/a"] == value })
			lat = append(lat, last.at.Sub(at))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(p(0.50), "p50-ms")
	b.ReportMetric(p(0.90), "p90-ms")
	b.ReportMetric(p(0.99), "p99-ms")
	b.ReportMetric(float64(len(lat))/float64(b.N), "puts/op")
}

// BenchmarkApply1000 applies 1,000 changed documents per iteration.
func BenchmarkApply1000(b *testing.B) {
	a := newAgent(b)
	s := storeFor(b, a.Addr)
	ctx := testCtx(b)
	txns := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := s.Apply(ctx, thousandDocs(s, fmt.Sprint(i)), ApplyOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if n := len(res.Created) + len(res.Changed); n != 1000 {
			b.Fatalf("wrote %d documents, want 1000", n)
		}
		txns += res.Txns
	}
	b.ReportMetric(float64(txns)/float64(b.N), "txns/op")
}

// idleRequestRate runs what an idle `run --role all` keeps open against
// Consul (a watch on spec/, a leader campaign that wins, a node
// registration) and returns the requests per second the store made during
// window, once everything has settled.
func idleRequestRate(tb testing.TB, window time.Duration) float64 {
	a := newAgent(tb)
	s := storeFor(tb, a.Addr)
	ctx := testCtx(tb)
	put(tb, a.Client(tb), s.SpecKey("VLAN", "vlan40"), `{"kind":"VLAN"}`)
	ch := runWatch(tb, s, s.SpecPrefix(), WatchOptions{})
	next(tb, ch, 5*time.Second, "the initial state", func(delivery) bool { return true })
	l, err := s.Campaign(ctx, LeaderOptions{Value: []byte("idle")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(l.Resign)
	r, err := s.RegisterNode(ctx, "idle-node", []byte("{}"), 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	// Let the leader monitor and the node watch send their first queries:
	// settled once no request went out for half a second.
	deadline := time.Now().Add(10 * time.Second)
	for last := s.Requests(); ; {
		time.Sleep(500 * time.Millisecond)
		now := s.Requests()
		if now == last {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("still %d requests in the last half second after 10 s", now-last)
		}
		last = now
	}

	start, began := s.Requests(), time.Now()
	idle := time.NewTimer(window)
	defer idle.Stop()
	select {
	case <-idle.C:
	case d := <-ch:
		tb.Fatalf("spec watch delivered while idle (index %d)", d.index)
	case <-l.Context().Done():
		tb.Fatal("leadership lost while idle")
	}
	n := s.Requests() - start
	elapsed := time.Since(began)
	rate := float64(n) / elapsed.Seconds()
	tb.Logf("idle: %d requests in %v = %.3f req/s (session TTL %v renewed once per TTL, blocking queries wait %v)",
		n, elapsed.Round(time.Millisecond), rate, DefaultSessionTTL, DefaultWaitTime)
	return rate
}

func TestIdleRequestRate(t *testing.T) {
	if testing.Short() {
		t.Skip("measures over 30 s")
	}
	if rate := idleRequestRate(t, 30*time.Second); rate > 0.2 {
		t.Errorf("idle request rate %.3f req/s, budget 0.2", rate)
	}
}

func BenchmarkIdleRequests(b *testing.B) {
	var sum float64
	for i := 0; i < b.N; i++ {
		sum += idleRequestRate(b, 30*time.Second)
	}
	b.ReportMetric(sum/float64(b.N), "req/s")
}
