package ipam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// fakeLeases is a lease store with Consul's check-and-set rule.
type fakeLeases struct {
	mu    sync.Mutex
	index uint64
	kv    map[netip.Addr]state.LeaseEntry
	down  bool
	reads int
}

func (f *fakeLeases) Leases(ctx context.Context, vlan string) (map[netip.Addr]state.LeaseEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.down {
		return nil, errors.New("dial tcp 127.0.0.1:8500: connection refused")
	}
	out := map[netip.Addr]state.LeaseEntry{}
	for k, v := range f.kv {
		out[k] = v
	}
	return out, nil
}

func (f *fakeLeases) TakeLease(ctx context.Context, vlan string, a netip.Addr, l state.Lease, idx uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("connection refused")
	}
	if f.kv[a].ModifyIndex != idx {
		return state.ErrLeaseTaken
	}
	f.index++
	l.Address = a.String()
	f.kv[a] = state.LeaseEntry{Lease: l, ModifyIndex: f.index}
	return nil
}

func (f *fakeLeases) ReleaseLease(ctx context.Context, vlan string, a netip.Addr, node string, now time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.kv[a]
	if !ok || !e.Held() {
		return nil
	}
	if e.Node != node {
		return errors.New("leased to node " + e.Node + ", not to this node " + node)
	}
	e.Released = &now
	f.index++
	e.ModifyIndex = f.index
	f.kv[a] = e
	return nil
}

func (f *fakeLeases) UpdateLease(ctx context.Context, vlan string, a netip.Addr, l state.Lease, idx uint64) (bool, error) {
	err := f.TakeLease(ctx, vlan, a, l, idx)
	if errors.Is(err, state.ErrLeaseTaken) {
		return false, nil
	}
	return err == nil, err
}

const clusterVLAN = "apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: v40}\nspec: {trunk: eth0, subnet: 10.5.0.0/29, rangePlan: {mode: cluster, quarantine: 1m}}"

type rig struct {
	t      *testing.T
	leases *fakeLeases
	now    time.Time
	node   string
	h      http.Handler
	plugin *Plugin
	// sticky answers Config.Sticky; nil: every service is sticky.
	sticky func(string) bool
}

func newRig(t *testing.T, doc string) *rig {
	o, err := spec.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	v := o.(*spec.VLAN)
	r := &rig{t: t, leases: &fakeLeases{kv: map[netip.Addr]state.LeaseEntry{}}, now: time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC), node: "n1"}
	p := New(Config{
		Leases: r.leases,
		VLAN: func(name string) (*spec.VLAN, bool) {
			return v, name == v.Metadata.Name
		},
		VLANs:    func() []*spec.VLAN { return []*spec.VLAN{v} },
		Sticky:   func(s string) bool { return r.sticky == nil || r.sticky(s) },
		Identity: func() (string, string) { return r.node, "host-" + r.node },
		Now:      func() time.Time { return r.now },
	})
	r.h, r.plugin = p.Handler(), p
	return r
}

// call posts body to method and decodes the answer into out; it returns
// the Err of a refused request.
func (r *rig) call(method string, body any, out any) string {
	r.t.Helper()
	b, _ := json.Marshal(body)
	rec := httptest.NewRecorder()
	r.h.ServeHTTP(rec, httptest.NewRequest("POST", "/"+method, bytes.NewReader(b)))
	if ct := rec.Header().Get("Content-Type"); ct != ContentType {
		r.t.Errorf("%s: content type %q", method, ct)
	}
	if rec.Code != http.StatusOK {
		var e errorResponse
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		if e.Err == "" {
			r.t.Fatalf("%s: status %d without Err: %s", method, rec.Code, rec.Body)
		}
		return e.Err
	}
	if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			r.t.Fatal(err)
		}
	}
	return ""
}

func (r *rig) request(addr string, opts map[string]string) (string, string) {
	var resp requestAddressResponse
	e := r.call("IpamDriver.RequestAddress", requestAddressRequest{PoolID: "v40/10.5.0.0/29", Address: addr, Options: opts}, &resp)
	return resp.Address, e
}

func TestHandshake(t *testing.T) {
	r := newRig(t, clusterVLAN)
	var act map[string][]string
	r.call("Plugin.Activate", nil, &act)
	if len(act["Implements"]) != 1 || act["Implements"][0] != "IpamDriver" {
		t.Errorf("activate = %v", act)
	}
	var caps capabilitiesResponse
	r.call("IpamDriver.GetCapabilities", struct{}{}, &caps)
	var spaces addressSpacesResponse
	r.call("IpamDriver.GetDefaultAddressSpaces", struct{}{}, &spaces)
	if spaces.LocalDefaultAddressSpace == "" || spaces.GlobalDefaultAddressSpace == "" {
		t.Errorf("address spaces = %+v", spaces)
	}
}

func TestRequestPool(t *testing.T) {
	r := newRig(t, clusterVLAN)
	tests := []struct {
		name   string
		req    requestPoolRequest
		wantID string
		err    string
	}{
		{"by option", requestPoolRequest{Pool: "10.5.0.0/29", Options: map[string]string{spec.IPAMOptVLAN: "v40"}}, "v40/10.5.0.0/29", ""},
		{"by subnet", requestPoolRequest{Pool: "10.5.0.0/29"}, "v40/10.5.0.0/29", ""},
		{"unknown subnet", requestPoolRequest{Pool: "10.6.0.0/24"}, "", "no cluster-mode VLAN has this subnet"},
		{"unknown vlan", requestPoolRequest{Pool: "10.5.0.0/29", Options: map[string]string{spec.IPAMOptVLAN: "nope"}}, "", `vlan "nope": no such VLAN`},
		{"wrong subnet", requestPoolRequest{Pool: "10.5.0.0/28", Options: map[string]string{spec.IPAMOptVLAN: "v40"}}, "", "the VLAN's subnet is 10.5.0.0/29"},
		{"ip-range", requestPoolRequest{Pool: "10.5.0.0/29", SubPool: "10.5.0.0/30"}, "", "ip-range"},
		{"v6", requestPoolRequest{V6: true}, "", "IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.t = t
			var resp requestPoolResponse
			e := r.call("IpamDriver.RequestPool", tt.req, &resp)
			if tt.err != "" {
				if !strings.Contains(e, tt.err) {
					t.Errorf("err %q, want %q", e, tt.err)
				}
				return
			}
			if e != "" || resp.PoolID != tt.wantID || resp.Pool != "10.5.0.0/29" {
				t.Errorf("resp %+v err %q", resp, e)
			}
		})
	}
	// Every node gets the same ID; releasing it frees nothing.
	r.t = t
	r.request("", nil)
	if e := r.call("IpamDriver.ReleasePool", releasePoolRequest{PoolID: "v40/10.5.0.0/29"}, nil); e != "" {
		t.Fatal(e)
	}
	if n := heldCount(r.leases); n != 1 {
		t.Errorf("after ReleasePool %d leases held, want 1", n)
	}
}

func heldCount(f *fakeLeases) int {
	n := 0
	for _, e := range f.kv {
		if e.Held() {
			n++
		}
	}
	return n
}

func TestAddresses(t *testing.T) {
	r := newRig(t, clusterVLAN)
	// The gateway, asked by every node, is never leased.
	for range 2 {
		if a, e := r.request("", map[string]string{"RequestAddressType": "com.docker.network.gateway"}); a != "10.5.0.1/29" || e != "" {
			t.Fatalf("gateway = %q %q", a, e)
		}
	}
	// A /29 less network, broadcast and gateway: five addresses, distinct,
	// then exhaustion.
	seen := map[string]bool{}
	for range 5 {
		a, e := r.request("", nil)
		if e != "" || seen[a] || a == "10.5.0.1/29" {
			t.Fatalf("request: %q %q (seen %v)", a, e, seen)
		}
		seen[a] = true
	}
	if _, e := r.request("", nil); !strings.Contains(e, "exhausted") {
		t.Fatalf("sixth request: %q", e)
	}
	// Another node may not release this node's address.
	r.node = "n2"
	if e := r.call("IpamDriver.ReleaseAddress", releaseAddressRequest{PoolID: "v40/10.5.0.0/29", Address: "10.5.0.2"}, nil); !strings.Contains(e, "not to this node n2") {
		t.Fatalf("foreign release: %q", e)
	}
	// The owner releases: quarantined, not handed out again until it ends.
	r.node = "n1"
	if e := r.call("IpamDriver.ReleaseAddress", releaseAddressRequest{PoolID: "v40/10.5.0.0/29", Address: "10.5.0.2"}, nil); e != "" {
		t.Fatal(e)
	}
	if _, e := r.request("", nil); !strings.Contains(e, "exhausted") {
		t.Fatalf("during quarantine: %q", e)
	}
	if _, e := r.request("10.5.0.2", nil); !strings.Contains(e, "quarantine") {
		t.Fatalf("exact during quarantine: %q", e)
	}
	r.now = r.now.Add(time.Minute)
	if a, e := r.request("", nil); a != "10.5.0.2/29" || e != "" {
		t.Fatalf("after quarantine: %q %q", a, e)
	}
	// An exact request for an address this node holds is answered with it
	// (a replay); one another node holds is refused.
	if a, e := r.request("10.5.0.2", nil); a != "10.5.0.2/29" || e != "" {
		t.Fatalf("replay: %q %q", a, e)
	}
	r.node = "n2"
	if _, e := r.request("10.5.0.2", nil); !strings.Contains(e, "leased to node n1") {
		t.Fatalf("exact foreign: %q", e)
	}
	if _, e := r.request("10.5.0.7", nil); !strings.Contains(e, "not in the VLAN's pool") {
		t.Fatalf("broadcast: %q", e)
	}
}

func TestConsulAway(t *testing.T) {
	r := newRig(t, clusterVLAN)
	r.leases.down = true
	_, e := r.request("", nil)
	if !strings.Contains(e, "consul unreachable, no address handed out") {
		t.Fatalf("consul away: %q", e)
	}
	if len(r.leases.kv) != 0 {
		t.Fatal("lease written with consul away")
	}
}

func TestUnknownIdentity(t *testing.T) {
	r := newRig(t, clusterVLAN)
	r.node = ""
	if _, e := r.request("", nil); !strings.Contains(e, "identity is not known") {
		t.Fatalf("no identity: %q", e)
	}
}

// TestConcurrentRequests: many requests at once on one store never hand
// out an address twice.
func TestConcurrentRequests(t *testing.T) {
	r := newRig(t, strings.Replace(clusterVLAN, "10.5.0.0/29", "10.5.0.0/26", 1))
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := json.Marshal(requestAddressRequest{PoolID: "v40/10.5.0.0/26"})
			rec := httptest.NewRecorder()
			r.h.ServeHTTP(rec, httptest.NewRequest("POST", "/IpamDriver.RequestAddress", bytes.NewReader(b)))
			var resp requestAddressResponse
			_ = json.Unmarshal(rec.Body.Bytes(), &resp)
			mu.Lock()
			got[resp.Address]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	// 61 usable addresses, 60 requests: all succeed, all distinct.
	if len(got) != 60 || got[""] > 0 {
		t.Fatalf("%d distinct addresses (%d failures), want 60", len(got), got[""])
	}
}

func TestOrphans(t *testing.T) {
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	old := now.Add(-time.Hour)
	leases := map[netip.Addr]state.LeaseEntry{
		a("10.0.0.2"): {Lease: state.Lease{Node: "n1", Kind: state.LeaseTask, Created: old}},                   // endpoint gone: orphan
		a("10.0.0.3"): {Lease: state.Lease{Node: "n1", Kind: state.LeaseTask, Created: old}},                   // endpoint there
		a("10.0.0.4"): {Lease: state.Lease{Node: "n1", Kind: state.LeaseTask, Created: now.Add(-time.Second)}}, // starting
		a("10.0.0.5"): {Lease: state.Lease{Node: "n2", Kind: state.LeaseTask, Created: old}},                   // another node's
		a("10.0.0.6"): {Lease: state.Lease{Node: "n1", Kind: state.LeaseShim, Created: old}},                   // the shim
		a("10.0.0.7"): {Lease: state.Lease{Node: "n1", Kind: state.LeaseTask, Created: old, Released: &old}},   // released already
	}
	got := Orphans(leases, "n1", []netip.Addr{a("10.0.0.3")}, now, time.Minute)
	if len(got) != 1 || got[0] != a("10.0.0.2") {
		t.Errorf("orphans = %v, want [10.0.0.2]", got)
	}
}

// TestStickyReservation: the one released sticky address reserved for
// this node is handed out, quarantine or not; with two reserved for it the
// plugin cannot tell which task asks and hands out a fresh one; no other
// node takes a reserved address.
func TestStickyReservation(t *testing.T) {
	r := newRig(t, clusterVLAN)
	released := r.now
	sticky := netip.MustParseAddr("10.5.0.4")
	r.leases.kv[sticky] = state.LeaseEntry{Lease: state.Lease{Node: "n2", Kind: state.LeaseTask, Service: "web", Slot: 3,
		Released: &released, ReservedFor: "n1"}, ModifyIndex: 100}
	r.leases.index = 100
	if a, e := r.request("", nil); a != "10.5.0.4/29" || e != "" {
		t.Fatalf("sticky request = %q %q", a, e)
	}
	if l := r.leases.kv[sticky]; l.Node != "n1" || l.Service != "web" || l.Slot != 3 || l.ReservedFor != "" || !l.Held() {
		t.Fatalf("sticky lease after taking: %+v", l)
	}

	// Two reserved for n1: ambiguous.
	r = newRig(t, clusterVLAN)
	for i, s := range []string{"10.5.0.4", "10.5.0.5"} {
		r.leases.kv[netip.MustParseAddr(s)] = state.LeaseEntry{Lease: state.Lease{Node: "n2", Kind: state.LeaseTask, Service: "web", Slot: i + 1,
			Released: &released, ReservedFor: "n1"}, ModifyIndex: uint64(100 + i)}
	}
	r.leases.index = 200
	a, e := r.request("", nil)
	if e != "" || a == "10.5.0.4/29" || a == "10.5.0.5/29" {
		t.Fatalf("ambiguous: %q %q, want a fresh address", a, e)
	}
	// Another node never gets a reserved one, even after quarantine.
	r.node = "n3"
	r.now = r.now.Add(time.Hour)
	for range 3 {
		if a, _ := r.request("", nil); a == "10.5.0.4/29" || a == "10.5.0.5/29" {
			t.Fatalf("n3 got reserved %s", a)
		}
	}
}

// TestStickyWait: a request arriving just after a sticky slot's address
// was released, before the leader reserved it, waits for the reservation
// (bounded) and gets the slot's address; with no reservation in time it
// gets a fresh one.
func TestStickyWait(t *testing.T) {
	defer func(w time.Duration) { StickyWait = w }(StickyWait)
	StickyWait = 300 * time.Millisecond
	sticky := netip.MustParseAddr("10.5.0.4")
	setup := func() *rig {
		r := newRig(t, clusterVLAN)
		released := r.now.Add(-time.Second)
		r.leases.kv[sticky] = state.LeaseEntry{Lease: state.Lease{Node: "n2", Kind: state.LeaseTask, Service: "web", Slot: 2,
			Released: &released}, ModifyIndex: 100}
		r.leases.index = 100
		return r
	}

	r := setup()
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(100 * time.Millisecond)
		r.leases.mu.Lock()
		defer r.leases.mu.Unlock()
		e := r.leases.kv[sticky]
		e.ReservedFor = "n1"
		r.leases.index++
		e.ModifyIndex = r.leases.index
		r.leases.kv[sticky] = e
	}()
	a, e := r.request("", nil)
	<-done
	if a != "10.5.0.4/29" || e != "" {
		t.Fatalf("request during the reservation = %q %q, want the slot's address", a, e)
	}

	r = setup()
	a, e = r.request("", nil)
	if e != "" || a == "" || a == "10.5.0.4/29" {
		t.Fatalf("request with no reservation = %q %q, want a fresh address", a, e)
	}
	if l := r.leases.kv[sticky]; l.Held() || l.ReservedFor != "" || l.Service != "web" {
		t.Fatalf("unreserved sticky lease after a fresh request: %+v", l.Lease)
	}

	// The service is no longer sticky (or gone): no wait, a fresh address
	// from the one read.
	r = setup()
	r.sticky = func(string) bool { return false }
	a, e = r.request("", nil)
	if e != "" || a == "" || a == "10.5.0.4/29" || r.leases.reads != 1 {
		t.Fatalf("request beside a non-sticky service's release = %q %q after %d reads, want a fresh address after 1", a, e, r.leases.reads)
	}
}

// TestAnnotateFresh: the host role's annotation records the slot on the
// lease of its task; a slot whose task got a fresh address drops its old
// one, and the new lease names the address it missed.
func TestAnnotateFresh(t *testing.T) {
	r := newRig(t, clusterVLAN)
	o, _ := spec.Decode([]byte(clusterVLAN))
	v := o.(*spec.VLAN)
	p := New(Config{Leases: r.leases, VLAN: func(string) (*spec.VLAN, bool) { return v, true },
		VLANs: func() []*spec.VLAN { return []*spec.VLAN{v} }, Identity: func() (string, string) { return "n1", "h1" },
		Now: func() time.Time { return r.now }})
	s := NewServer(p, t.TempDir()+"/p.sock")
	a := func(x string) netip.Addr { return netip.MustParseAddr(x) }
	released := r.now.Add(-time.Second)
	r.leases.kv[a("10.5.0.2")] = state.LeaseEntry{Lease: state.Lease{Node: "n1", Kind: state.LeaseTask}, ModifyIndex: 1}
	r.leases.kv[a("10.5.0.3")] = state.LeaseEntry{Lease: state.Lease{Node: "n1", Kind: state.LeaseTask}, ModifyIndex: 2}
	r.leases.kv[a("10.5.0.4")] = state.LeaseEntry{Lease: state.Lease{Node: "n2", Kind: state.LeaseTask, Service: "web", Slot: 2, Released: &released}, ModifyIndex: 3}
	r.leases.index = 3
	if err := s.Annotate(context.Background(), "v40", map[netip.Addr]SlotRef{a("10.5.0.2"): {"web", 1}, a("10.5.0.3"): {"web", 2}}); err != nil {
		t.Fatal(err)
	}
	if l := r.leases.kv[a("10.5.0.2")]; l.Service != "web" || l.Slot != 1 || l.FreshFor != "" {
		t.Errorf("slot 1's lease %+v", l.Lease)
	}
	if l := r.leases.kv[a("10.5.0.3")]; l.Service != "web" || l.Slot != 2 || l.FreshFor != "10.5.0.4" {
		t.Errorf("slot 2's fresh lease %+v, want freshFor 10.5.0.4", l.Lease)
	}
	if l := r.leases.kv[a("10.5.0.4")]; l.Service != "" || l.Slot != 0 || l.Held() {
		t.Errorf("slot 2's missed address still claims the slot: %+v", l.Lease)
	}
}

// TestLost: an address held here whose lease is absent, or was released
// before its container was made (a rolled-back state), is lost and leased
// again; one released after is Docker's release of a stopping task; one
// leased to another node is reported; the shim's lease is never released.
func TestLost(t *testing.T) {
	a := netip.MustParseAddr
	made := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	before, after := made.Add(-time.Minute), made.Add(time.Second)
	leases := map[netip.Addr]state.LeaseEntry{
		a("10.0.0.3"): {Lease: state.Lease{Node: "n1", Kind: state.LeaseTask}},                    // in force: fine
		a("10.0.0.4"): {Lease: state.Lease{Node: "n2", Kind: state.LeaseTask, Released: &before}}, // an older holder's
		a("10.0.0.5"): {Lease: state.Lease{Node: "n1", Kind: state.LeaseTask, Released: &after}},  // stopping
		a("10.0.0.6"): {Lease: state.Lease{Node: "n2", Kind: state.LeaseTask}},                    // another node's
		a("10.0.0.9"): {Lease: state.Lease{Node: "n1", Kind: state.LeaseShim, Released: &after}},  // the shim's, released
	}
	held := map[netip.Addr]Held{}
	for _, s := range []string{"10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"} {
		held[a(s)] = Held{Kind: state.LeaseTask, Since: made}
	}
	held[a("10.0.0.9")] = Held{Kind: state.LeaseShim}
	missing, taken := Lost(leases, "n1", held)
	if want := []netip.Addr{a("10.0.0.2"), a("10.0.0.4"), a("10.0.0.9")}; !slices.Equal(missing, want) {
		t.Errorf("missing %v, want %v", missing, want)
	}
	if want := []netip.Addr{a("10.0.0.6")}; !slices.Equal(taken, want) {
		t.Errorf("taken %v, want %v", taken, want)
	}
}

// TestRepair: the lost leases are written again to this node with the
// check-and-set of what they were; one taken by another node is an error
// that names it, and is left as it is.
func TestRepair(t *testing.T) {
	r := newRig(t, clusterVLAN)
	made := r.now.Add(-time.Hour)
	old := made.Add(-time.Minute)
	r.leases.kv[netip.MustParseAddr("10.5.0.4")] = state.LeaseEntry{Lease: state.Lease{Node: "n2", Kind: state.LeaseTask, Released: &old}, ModifyIndex: 7}
	r.leases.kv[netip.MustParseAddr("10.5.0.5")] = state.LeaseEntry{Lease: state.Lease{Node: "n2", Kind: state.LeaseTask}, ModifyIndex: 8}
	r.leases.index = 8
	s := NewServer(r.plugin, "")
	held := map[netip.Addr]Held{
		netip.MustParseAddr("10.5.0.3"): {Kind: state.LeaseTask, Since: made},
		netip.MustParseAddr("10.5.0.4"): {Kind: state.LeaseTask, Since: made},
		netip.MustParseAddr("10.5.0.5"): {Kind: state.LeaseTask, Since: made},
		netip.MustParseAddr("10.5.0.6"): {Kind: state.LeaseShim},
	}
	n, err := s.Repair(context.Background(), "v40", held)
	if n != 3 || err == nil || !strings.Contains(err.Error(), "10.5.0.5 is in use on this node and leased to node n2") {
		t.Fatalf("repaired %d, err %v", n, err)
	}
	for _, c := range []struct {
		addr, kind string
	}{{"10.5.0.3", state.LeaseTask}, {"10.5.0.4", state.LeaseTask}, {"10.5.0.6", state.LeaseShim}} {
		e := r.leases.kv[netip.MustParseAddr(c.addr)]
		if !e.Held() || e.Node != "n1" || e.Kind != c.kind || e.Hostname != "host-n1" {
			t.Errorf("%s after the repair: %+v", c.addr, e.Lease)
		}
	}
	if e := r.leases.kv[netip.MustParseAddr("10.5.0.5")]; e.Node != "n2" || e.ModifyIndex != 8 {
		t.Errorf("another node's lease changed: %+v", e)
	}
	// Nothing lost: nothing written.
	idx := r.leases.index
	if n, err := s.Repair(context.Background(), "v40", map[netip.Addr]Held{netip.MustParseAddr("10.5.0.3"): {Kind: state.LeaseTask, Since: made}}); n != 0 || err != nil || r.leases.index != idx {
		t.Errorf("repair with its lease in force: %d, %v, index %d -> %d", n, err, idx, r.leases.index)
	}
}
