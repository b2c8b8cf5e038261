package state

import (
	"slices"
	"testing"
)

func TestSpecDocumentOps(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s := storeFor(t, a.Addr)
	web := doc(s, "Service", "web", `{"replicas":3}`)
	api1 := doc(s, "Service", "api", `{"replicas":1}`)
	vlan := doc(s, "VLAN", "vlan40", `{"id":40}`)
	host := doc(s, "Host", "worker1", `{"trunk":"eth1"}`)
	for _, d := range []SpecDoc{web, api1, vlan, host} {
		put(t, c, d.Key, string(d.Value))
	}
	// Not of the layout: a stray key, a nested one, another tree.
	put(t, c, s.SpecPrefix()+"notes/readme", "keep")
	put(t, c, s.SpecKindPrefix("Service")+"web/extra", "nested")
	put(t, c, s.StatusKey("services", "web"), "{}")

	keysOf := func(docs []SpecDoc) []string {
		var keys []string
		for _, d := range docs {
			keys = append(keys, d.Key)
		}
		return keys
	}
	// VLANs, then hosts, then services (Apply's order), each by name.
	wantAll := []string{vlan.Key, host.Key, api1.Key, web.Key}

	t.Run("SpecDocs lists the layout's documents in apply order", func(t *testing.T) {
		docs, err := s.SpecDocs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := keysOf(docs); !slices.Equal(got, wantAll) {
			t.Fatalf("keys = %q, want %q", got, wantAll)
		}
		if string(docs[3].Value) != string(web.Value) {
			t.Fatalf("%s = %q, want %q", docs[3].Key, docs[3].Value, web.Value)
		}
	})
	t.Run("SpecPairs reads the whole tree with its indexes", func(t *testing.T) {
		pairs, err := s.SpecPairs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]uint64{}
		for _, p := range pairs {
			got[p.Key] = p.ModifyIndex
		}
		for _, k := range append(wantAll, s.SpecPrefix()+"notes/readme") {
			if got[k] == 0 {
				t.Errorf("%s missing or without its index: %v", k, got)
			}
		}
		if _, ok := got[s.StatusKey("services", "web")]; ok {
			t.Error("a status key read as spec")
		}
	})
	t.Run("SpecDocsOfKind lists one kind by name", func(t *testing.T) {
		for _, kind := range []string{"Service", "services", "service"} {
			docs, err := s.SpecDocsOfKind(ctx, kind)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := keysOf(docs), []string{api1.Key, web.Key}; !slices.Equal(got, want) {
				t.Fatalf("%s: keys = %q, want %q", kind, got, want)
			}
		}
		docs, err := s.SpecDocsOfKind(ctx, "Widget")
		if err != nil || len(docs) != 0 {
			t.Fatalf("unknown kind: %v, %v; want nothing", docs, err)
		}
	})
	t.Run("SpecKeys", func(t *testing.T) {
		keys, err := s.SpecKeys(ctx)
		if err != nil || !slices.Equal(keys, wantAll) {
			t.Fatalf("SpecKeys = %q, %v; want %q", keys, err, wantAll)
		}
	})
	t.Run("GetSpec", func(t *testing.T) {
		value, found, err := s.GetSpec(ctx, "VLAN", "vlan40")
		if err != nil || !found || string(value) != string(vlan.Value) {
			t.Fatalf("GetSpec(vlan40) = %q, %v, %v; want %q", value, found, err, vlan.Value)
		}
		value, found, err = s.GetSpec(ctx, "VLAN", "vlan41")
		if err != nil || found || value != nil {
			t.Fatalf("GetSpec(vlan41) = %q, %v, %v; want not found", value, found, err)
		}
	})
	t.Run("DeleteSpec", func(t *testing.T) {
		found, err := s.DeleteSpec(ctx, "Service", "web")
		if err != nil || !found {
			t.Fatalf("DeleteSpec(web) = %v, %v; want deleted", found, err)
		}
		if p, _, err := c.KV().Get(web.Key, nil); err != nil || p != nil {
			t.Fatalf("%s after delete = %v, %v; want gone", web.Key, p, err)
		}
		found, err = s.DeleteSpec(ctx, "Service", "web")
		if err != nil || found {
			t.Fatalf("DeleteSpec(web) again = %v, %v; want not found", found, err)
		}
		// The nested key below the deleted one is not the document's.
		if p, _, err := c.KV().Get(web.Key+"/extra", nil); err != nil || p == nil {
			t.Fatalf("%s/extra after delete = %v, %v; want kept", web.Key, p, err)
		}
		keys, err := s.SpecKeys(ctx)
		if want := []string{vlan.Key, host.Key, api1.Key}; err != nil || !slices.Equal(keys, want) {
			t.Fatalf("SpecKeys after delete = %q, %v; want %q", keys, err, want)
		}
	})
	t.Run("no Consul is an error, not an empty tree", func(t *testing.T) {
		down := storeFor(t, "127.0.0.1:1")
		if _, _, err := down.GetSpec(ctx, "VLAN", "vlan40"); err == nil {
			t.Fatal("GetSpec against no Consul: nil error")
		}
		if _, err := down.DeleteSpec(ctx, "VLAN", "vlan40"); err == nil {
			t.Fatal("DeleteSpec against no Consul: nil error")
		}
		if _, err := down.SpecDocs(ctx); err == nil {
			t.Fatal("SpecDocs against no Consul: nil error")
		}
	})
}
