package state

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestStatusWriterWritesOnlyChanges(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s := storeFor(t, a.Addr)
	key := s.StatusKey("vlans", "vlan40")
	modifyIndex := func() uint64 {
		t.Helper()
		p, _, err := c.KV().Get(key, nil)
		if err != nil || p == nil {
			t.Fatalf("get %s: %v, %v", key, p, err)
		}
		return p.ModifyIndex
	}
	ready := Status{ObservedIndex: 7, Conditions: []Condition{{Type: "Ready", Status: "True"}}}
	failing := Status{ObservedIndex: 8, Conditions: []Condition{{Type: "Ready", Status: "False", Reason: "NetworkCreateFailed"}}, LastError: "boom"}

	// Consul itself skips a put of identical bytes without moving the
	// ModifyIndex, so the requests the store made are what show that the
	// writer did not even try.
	w := s.NewStatusWriter()
	var indexes []uint64
	for i, tc := range []struct {
		name         string
		w            *StatusWriter
		st           Status
		wantChanged  bool
		wantRequests uint64
	}{
		{"first write: read KV, then put", w, ready, true, 2},
		{"same content: nothing sent", w, ready, false, 0},
		{"same content again: nothing sent", w, ready, false, 0},
		{"a new writer (a restart) reads KV and does not put", s.NewStatusWriter(), ready, false, 1},
		{"changed content: one put", w, failing, true, 1},
		{"unchanged after the change: nothing sent", w, failing, false, 0},
		{"back to the first content: one put", w, ready, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Requests()
			changed, err := tc.w.Write(ctx, "vlans", "vlan40", tc.st)
			if err != nil || changed != tc.wantChanged {
				t.Fatalf("Write = %v, %v; want %v", changed, err, tc.wantChanged)
			}
			if got := s.Requests() - before; got != tc.wantRequests {
				t.Fatalf("Write sent %d requests, want %d", got, tc.wantRequests)
			}
			indexes = append(indexes, modifyIndex())
			if i > 0 {
				moved := indexes[i] != indexes[i-1]
				if moved != tc.wantChanged {
					t.Fatalf("ModifyIndex %d -> %d: moved=%v, want %v", indexes[i-1], indexes[i], moved, tc.wantChanged)
				}
			}
		})
	}
	distinct := map[uint64]bool{}
	for _, i := range indexes {
		distinct[i] = true
	}
	if len(distinct) != 3 {
		t.Errorf("ModifyIndex took %d values over 7 writes (%v), want 3", len(distinct), indexes)
	}

	t.Run("indented JSON in KV compares equal", func(t *testing.T) {
		b, _ := json.MarshalIndent(ready, "", "  ")
		if _, err := c.KV().Put(&api.KVPair{Key: key, Value: b}, nil); err != nil {
			t.Fatal(err)
		}
		if changed, err := s.NewStatusWriter().Write(ctx, "vlans", "vlan40", ready); err != nil || changed {
			t.Fatalf("Write = %v, %v; want no write", changed, err)
		}
	})

	t.Run("read and list", func(t *testing.T) {
		var got Status
		found, err := s.ReadStatus(ctx, "vlans", "vlan40", &got)
		if err != nil || !found || got.ObservedIndex != 7 || len(got.Conditions) != 1 || got.Conditions[0].Status != "True" {
			t.Fatalf("ReadStatus = %+v, %v, %v", got, found, err)
		}
		if found, err := s.ReadStatus(ctx, "vlans", "nope", &got); found || err != nil {
			t.Fatalf("ReadStatus of a missing key = %v, %v", found, err)
		}
		if _, err := w.Write(ctx, SectionNodes, "n1", map[string]bool{"ready": true}); err != nil {
			t.Fatal(err)
		}
		all, err := s.ListStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 2 || all["vlans"]["vlan40"] == nil || string(all["nodes"]["n1"]) != `{"ready":true}` {
			t.Fatalf("ListStatus = %v", all)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := w.Delete(ctx, "vlans", "vlan40"); err != nil {
			t.Fatal(err)
		}
		if p, _, _ := c.KV().Get(key, nil); p != nil {
			t.Fatal("status still there")
		}
		// The writer forgot it: the same content is written again.
		if changed, err := w.Write(ctx, "vlans", "vlan40", ready); err != nil || !changed {
			t.Fatalf("Write after Delete = %v, %v; want a write", changed, err)
		}
	})
}

func TestFencedStatusWriter(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s1, s2 := storeFor(t, a.Addr), storeFor(t, a.Addr)
	l1 := mustLead(t, campaignAsync(ctx, s1, LeaderOptions{Value: []byte("m1")}), 10*time.Second, "m1")
	w1 := l1.NewStatusWriter()
	ready := Status{ObservedIndex: 7, Conditions: []Condition{{Type: "Ready", Status: "True"}}}
	failing := Status{ObservedIndex: 8, LastError: "boom"}
	get := func(section, name string) *api.KVPair {
		t.Helper()
		p, _, err := c.KV().Get(s1.StatusKey(section, name), nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("the leader writes and deletes", func(t *testing.T) {
		if changed, err := w1.Write(ctx, "vlans", "vlan40", ready); !changed || err != nil {
			t.Fatalf("Write = %v, %v; want written", changed, err)
		}
		if changed, err := w1.Write(ctx, "vlans", "vlan40", ready); changed || err != nil {
			t.Fatalf("Write of the same status = %v, %v; want nothing written", changed, err)
		}
		if changed, err := w1.Write(ctx, "services", "web", ready); !changed || err != nil {
			t.Fatalf("Write web = %v, %v; want written", changed, err)
		}
		if err := w1.Delete(ctx, "services", "web"); err != nil {
			t.Fatal(err)
		}
		if p := get("services", "web"); p != nil {
			t.Fatalf("status/services/web after Delete = %s; want gone", p.Value)
		}
		var st Status
		if found, err := s1.ReadStatus(ctx, "vlans", "vlan40", &st); !found || err != nil || st.ObservedIndex != 7 {
			t.Fatalf("ReadStatus = %+v, %v, %v", st, found, err)
		}
	})

	// Depose m1 behind its back, as a session expiry would, and let m2 take
	// over and record its own view.
	if _, err := c.Session().Destroy(l1.Session(), nil); err != nil {
		t.Fatalf("destroy session: %v", err)
	}
	eventually(t, 5*time.Second, "the deposed leader's context to be cancelled", func() bool { return l1.Context().Err() != nil })
	l2 := mustLead(t, campaignAsync(ctx, s2, LeaderOptions{Value: []byte("m2")}), 10*time.Second, "m2")
	w2 := l2.NewStatusWriter()
	if changed, err := w2.Write(ctx, "vlans", "vlan41", ready); !changed || err != nil {
		t.Fatalf("new leader Write = %v, %v; want written", changed, err)
	}
	before := get("vlans", "vlan40")

	for _, tc := range []struct {
		name  string
		write func() error
	}{
		{"write of a changed status", func() error { _, err := w1.Write(ctx, "vlans", "vlan40", failing); return err }},
		{"write of a new key", func() error { _, err := w1.Write(ctx, "services", "api", failing); return err }},
		{"write over the new leader's key", func() error { _, err := w1.Write(ctx, "vlans", "vlan41", failing); return err }},
		{"delete", func() error { return w1.Delete(ctx, "vlans", "vlan41") }},
		{"delete of its own key", func() error { return w1.Delete(ctx, "vlans", "vlan40") }},
		// Consul's fence, not the local check of the context, rejects these.
		{"write, not yet aware of the loss", func() error {
			_, err := lossNotYetSeen(l1).NewStatusWriter().Write(ctx, "vlans", "vlan40", failing)
			return err
		}},
		{"delete, not yet aware of the loss", func() error { return lossNotYetSeen(l1).NewStatusWriter().Delete(ctx, "vlans", "vlan41") }},
	} {
		t.Run("deposed "+tc.name+" is rejected", func(t *testing.T) {
			if err := tc.write(); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("err = %v, want ErrNotLeader", err)
			}
		})
	}
	if p := get("vlans", "vlan40"); p == nil || p.ModifyIndex != before.ModifyIndex {
		t.Fatalf("status/vlans/vlan40 = %+v; want untouched at index %d", p, before.ModifyIndex)
	}
	if p := get("services", "api"); p != nil {
		t.Fatalf("status/services/api = %s; want never written", p.Value)
	}
	var st Status
	if found, err := s2.ReadStatus(ctx, "vlans", "vlan41", &st); !found || err != nil || st.ObservedIndex != 7 || st.LastError != "" {
		t.Fatalf("the new leader's status = %+v, %v, %v; want its own", st, found, err)
	}
	if changed, err := w2.Write(ctx, "vlans", "vlan40", failing); !changed || err != nil {
		t.Fatalf("new leader Write over the old leader's key = %v, %v; want written", changed, err)
	}
}

// TestStatusWriterPrime: one list of a section stands in for the read
// of each key's first write.
func TestStatusWriterPrime(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	s := storeFor(t, a.Addr)
	ready := Status{ObservedIndex: 7, Conditions: []Condition{{Type: "Ready", Status: "True"}}}
	failing := Status{ObservedIndex: 8, LastError: "boom"}
	first := s.NewStatusWriter()
	for _, name := range []string{"a", "b", "c"} {
		if _, err := first.Write(ctx, "services", name, ready); err != nil {
			t.Fatal(err)
		}
	}

	w := s.NewStatusWriter()
	before := s.Requests()
	if err := w.Prime(ctx, "services"); err != nil {
		t.Fatal(err)
	}
	if got := s.Requests() - before; got != 1 {
		t.Fatalf("Prime sent %d requests, want 1", got)
	}
	for _, tc := range []struct {
		name, section, object string
		st                    Status
		wantChanged           bool
		wantRequests          uint64
	}{
		{"unchanged: nothing sent", "services", "a", ready, false, 0},
		{"changed: one put", "services", "b", failing, true, 1},
		{"absent from the list: one put, no read", "services", "new", ready, true, 1},
		{"another section: read, then put", "vlans", "v", ready, true, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Requests()
			changed, err := w.Write(ctx, tc.section, tc.object, tc.st)
			if err != nil || changed != tc.wantChanged {
				t.Fatalf("Write = %v, %v; want %v", changed, err, tc.wantChanged)
			}
			if got := s.Requests() - before; got != tc.wantRequests {
				t.Fatalf("Write sent %d requests, want %d", got, tc.wantRequests)
			}
		})
	}
	var got Status
	if found, err := s.ReadStatus(ctx, "services", "b", &got); err != nil || !found || got.LastError != "boom" {
		t.Fatalf("status b = %+v, %v, %v", got, found, err)
	}
	// Deleted through the writer: known absent, so the same content is
	// written again without a read.
	if err := w.Delete(ctx, "services", "a"); err != nil {
		t.Fatal(err)
	}
	before = s.Requests()
	if changed, err := w.Write(ctx, "services", "a", ready); err != nil || !changed || s.Requests()-before != 1 {
		t.Fatalf("Write after Delete = %v, %v, %d requests; want a write alone", changed, err, s.Requests()-before)
	}
}
