package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/hashicorp/consul/api"

	"swarmvlan/e2e/bed"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/overview"
	"swarmvlan/state"
)

// bigChunks is the number of nodes, each with a chunk and a task, in the
// large VLAN.
const bigChunks = 1000

// quietBaseline is the first render of the 3-chunk page under which the
// machine counts as quiet, and the 1,000-chunk page must render within a
// second all told.
const quietBaseline = 300

// bigTree is a listing of KV for a VLAN of 1,024 chunk-sized slots (a /14
// in /24s, the first excluded) of which 1,000 are held by live nodes, and
// a global service with one task in every chunk.
func bigTree(t *testing.T, s *state.Store, n int) (pairs api.KVPairs, chunks, addrs []string) {
	t.Helper()
	vlan := `apiVersion: swarmvlan/v1
kind: VLAN
metadata: {name: big}
spec: {trunk: eth1, id: 100, subnet: 10.0.0.0/14, gateway: 10.0.0.1, rangePlan: {chunkPrefix: 24, exclude: [10.0.0.0/24]}}
`
	svc := `apiVersion: swarmvlan/v1
kind: Service
metadata: {name: edge}
spec: {image: swarmvlan-testapp:dev, mode: global, networks: [big]}
`
	pairs = api.KVPairs{
		{Key: s.SpecKey("VLAN", "big"), Value: []byte(vlan), ModifyIndex: 1},
		{Key: s.SpecKey("Service", "edge"), Value: []byte(svc), ModifyIndex: 2},
		{Key: s.LeaderKey(), Value: []byte("m1"), Session: "s"},
	}
	det := cluster.ServiceDetails{Service: cluster.ServiceStatus{Name: "edge", Desired: n, Running: n}}
	c := netip.MustParsePrefix("10.0.1.0/24")
	now := time.Now()
	for i := range n {
		node, host := fmt.Sprintf("node%04d", i), fmt.Sprintf("host%04d", i)
		addr := c.Addr().Next().Next().Next().Next().Next().Next().Next().Next().Next().Next() // .10
		chunks, addrs = append(chunks, c.String()), append(addrs, addr.String())
		pairs = append(pairs,
			&api.KVPair{Key: s.AllocationKey("big", node), Value: mustJSON(t, state.Allocation{Chunk: c.String(), Node: node, Hostname: host})},
			&api.KVPair{Key: s.NodeKey(node), Session: "s" + node, Value: mustJSON(t, state.NodeReport{Hostname: host, Updated: now,
				VLANs: map[string]state.NodeVLANReport{"big": {Ready: true, Chunk: c.String()}}})})
		det.Service.Tasks = append(det.Service.Tasks, cluster.TaskStatus{ID: fmt.Sprintf("task%04d", i), Node: node, State: "running",
			Addresses: map[string]string{"big": addr.String()}})
		c = netip.PrefixFrom(lastNext(c), 24)
	}
	st := state.Status{Conditions: []state.Condition{{Type: "Ready", Status: "True"}}, Details: mustJSON(t, det)}
	pairs = append(pairs, &api.KVPair{Key: s.StatusKey("services", "edge"), Value: mustJSON(t, st)})
	return pairs, chunks, addrs
}

// lastNext is the address after the last of p.
func lastNext(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	n := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	n += 1 << (32 - p.Bits())
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serveTree serves the dashboard over a snapshot of pairs.
func serveTree(t *testing.T, s *state.Store, pairs api.KVPairs) string {
	t.Helper()
	src := overview.NewSource(s, "m1", nil)
	src.SetTree(s.Tree(pairs))
	mux := http.NewServeMux()
	overview.NewHandler(src, overview.Access{Open: true}).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	snap, _ := src.Snapshot()
	t.Logf("%s: snapshot of %d bytes", srv.URL, len(snap))
	return srv.URL
}

// loadTimes navigates tab ctx to url and returns the page's times (ms
// since the navigation started) once every section is in the DOM.
func loadTimes(t *testing.T, ctx context.Context, url string) map[string]float64 {
	t.Helper()
	do(t, ctx, time.Minute, "load "+url, chromedp.Navigate(url))
	waitRendered(t, ctx)
	waitFor(t, ctx, 30*time.Second, "wait for the whole snapshot", `swarmvlan.complete > 0`)
	p := eval[map[string]float64](t, ctx, `({script: swarmvlan.scriptStart, event: swarmvlan.firstEvent, first: swarmvlan.firstRender, complete: swarmvlan.complete})`)
	t.Logf("%s since navigation: script ran at %.0f ms, first event at %.0f ms, first frame with the map at %.0f ms, every section in the DOM at %.0f ms (ms per section: %v)",
		url, p["script"], p["event"], p["first"], p["complete"], eval[map[string]float64](t, ctx, `swarmvlan.sections`))
	return p
}

// TestThousandChunks renders a VLAN of 1,000 chunks, each with a task, at
// 1280 and at 390 px: every chunk and every task address is in the DOM,
// the page does not scroll sideways on the narrow screen, and the first
// render (from navigation to the first frame showing the map) takes under
// a second. The same page with 3 chunks, loaded just before, is the
// baseline the figures are compared with.
func TestThousandChunks(t *testing.T) {
	s, err := state.New(state.Config{Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	pairs, chunks, addrs := bigTree(t, s, bigChunks)
	big := serveTree(t, s, pairs)
	small, _, _ := bigTree(t, s, 3)
	baseline := serveTree(t, s, small)

	ctx := newBrowser(t)
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	for _, c := range []struct {
		name          string
		width, height int64
		mobile        bool
	}{{"1280", 1280, 900, false}, {"390", 390, 844, true}} {
		t.Run(c.name, func(t *testing.T) {
			do(t, ctx, time.Minute, "viewport "+c.name+" px", viewport(c.width, c.height, c.mobile))
			base := loadTimes(t, ctx, baseline+"/")
			p := loadTimes(t, ctx, big+"/")
			bed.Figure(t, "dashboard_first_render_3_chunks_"+c.name+"px", ms(base["first"]))
			bed.Figure(t, "dashboard_first_render_1000_chunks_"+c.name+"px", ms(p["first"]))
			bed.Figure(t, "dashboard_complete_render_1000_chunks_"+c.name+"px", ms(p["complete"]))
			t.Logf("FIGURE dashboard_first_render_1000_vs_3_chunks_%spx: %.2fx", c.name, p["first"]/base["first"])
			// On a loaded machine the page's own load takes the second
			// (the baseline shows it); what the chunks add must stay under
			// it, and on a machine where the baseline is quick, all of it.
			if added := p["first"] - base["first"]; added >= 1000 {
				t.Errorf("1,000 chunks add %.0f ms to the first render (%.0f ms against %.0f ms for 3), want under 1000 ms", added, p["first"], base["first"])
			}
			if base["first"] < quietBaseline && p["first"] >= 1000 {
				t.Errorf("first render took %.0f ms with %d chunks, want under 1000 ms", p["first"], bigChunks)
			}
			gotChunks := eval[[]string](t, ctx, `[...document.querySelectorAll('.chunk[data-chunk]')].map(e => e.dataset.chunk)`)
			gotAddrs := eval[[]string](t, ctx, `[...document.querySelectorAll('.chunk [data-task-addr]')].map(e => e.dataset.taskAddr)`)
			slices.Sort(gotChunks)
			slices.Sort(gotAddrs)
			want, wantAddrs := slices.Sorted(slices.Values(chunks)), slices.Sorted(slices.Values(addrs))
			if !slices.Equal(gotChunks, want) {
				t.Errorf("chunks in the DOM: %d, want %d (first %v)", len(gotChunks), len(want), gotChunks[:min(3, len(gotChunks))])
			}
			if !slices.Equal(gotAddrs, wantAddrs) {
				t.Errorf("task addresses in the chunks: %d, want %d", len(gotAddrs), len(wantAddrs))
			}
			slots := eval[int](t, ctx, `document.querySelectorAll('.map .slot').length`)
			rows := eval[int](t, ctx, `document.querySelectorAll('[data-service="edge"] tr[data-task]').length`)
			if slots != 1024 || rows != bigChunks {
				t.Errorf("%d slots drawn (want 1024), %d task rows (want %d)", slots, rows, bigChunks)
			}
			if c.mobile {
				noHorizontalScroll(t, ctx)
			}
			// The whole page is too tall for one capture: the top of it.
			viewShot(t, ctx, "thousand-chunks-"+c.name)
		})
	}
}
