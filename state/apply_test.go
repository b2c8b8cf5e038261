package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/hashicorp/consul/api"
)

func doc(s *Store, kind, name, body string) SpecDoc {
	return SpecDoc{Key: s.SpecKey(kind, name), Value: []byte(body)}
}

// kvSnapshot returns key → value for everything under prefix.
func kvSnapshot(t *testing.T, c *api.Client, prefix string) map[string]string {
	t.Helper()
	pairs, _, err := c.KV().List(prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, p := range pairs {
		m[p.Key] = string(p.Value)
	}
	return m
}

func sameKeys(got, want []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want)))
}

func TestApply(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s := storeFor(t, a.Addr)
	vlan := doc(s, "VLAN", "vlan40", `{"id":40}`)
	web := doc(s, "Service", "web", `{"replicas":3}`)
	host := doc(s, "Host", "worker1", `{"trunk":"eth1"}`)
	web4 := doc(s, "Service", "web", `{"replicas":4}`)
	// Not a layout key: prune must leave it alone.
	stray := s.SpecPrefix() + "notes/readme"
	if _, err := c.KV().Put(&api.KVPair{Key: stray, Value: []byte("keep")}, nil); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		docs    []SpecDoc
		opts    ApplyOptions
		want    ApplyResult
		wantErr error
		wantKV  map[string]string
	}{
		{
			name:   "create",
			docs:   []SpecDoc{web, vlan, host},
			want:   ApplyResult{Created: []string{vlan.Key, host.Key, web.Key}, Txns: 1},
			wantKV: map[string]string{vlan.Key: `{"id":40}`, web.Key: `{"replicas":3}`, host.Key: `{"trunk":"eth1"}`, stray: "keep"},
		},
		{
			name: "unchanged documents are not rewritten",
			docs: []SpecDoc{vlan, web, host},
			want: ApplyResult{Unchanged: []string{vlan.Key, host.Key, web.Key}, Txns: 0},
		},
		{
			name:   "dry run computes without writing",
			docs:   []SpecDoc{vlan, web4},
			opts:   ApplyOptions{DryRun: true, Prune: true},
			want:   ApplyResult{Changed: []string{web4.Key}, Unchanged: []string{vlan.Key}, Pruned: []string{host.Key}, Txns: 1},
			wantKV: map[string]string{vlan.Key: `{"id":40}`, web.Key: `{"replicas":3}`, host.Key: `{"trunk":"eth1"}`, stray: "keep"},
		},
		{
			name:   "changed",
			docs:   []SpecDoc{vlan, web4, host},
			want:   ApplyResult{Changed: []string{web4.Key}, Unchanged: []string{vlan.Key, host.Key}, Txns: 1},
			wantKV: map[string]string{vlan.Key: `{"id":40}`, web.Key: `{"replicas":4}`, host.Key: `{"trunk":"eth1"}`, stray: "keep"},
		},
		{
			name: "without prune, missing documents stay",
			docs: []SpecDoc{vlan},
			want: ApplyResult{Unchanged: []string{vlan.Key}},
		},
		{
			name: "semantic equality",
			docs: []SpecDoc{{Key: vlan.Key, Value: []byte("{ \"id\": 40 }")}},
			opts: ApplyOptions{Equal: jsonEqual},
			want: ApplyResult{Unchanged: []string{vlan.Key}},
		},
		{
			name:   "prune deletes only layout keys the documents do not hold",
			docs:   []SpecDoc{vlan, web4},
			opts:   ApplyOptions{Prune: true},
			want:   ApplyResult{Unchanged: []string{vlan.Key, web4.Key}, Pruned: []string{host.Key}, Txns: 1},
			wantKV: map[string]string{vlan.Key: `{"id":40}`, web.Key: `{"replicas":4}`, stray: "keep"},
		},
		{
			name:    "prune with no documents is refused",
			docs:    nil,
			opts:    ApplyOptions{Prune: true},
			wantErr: ErrEmptySpec,
			wantKV:  map[string]string{vlan.Key: `{"id":40}`, web.Key: `{"replicas":4}`, stray: "keep"},
		},
		{
			name:   "prune with no documents, allowed",
			docs:   nil,
			opts:   ApplyOptions{Prune: true, AllowEmpty: true},
			want:   ApplyResult{Pruned: []string{web.Key, vlan.Key}, Txns: 1},
			wantKV: map[string]string{stray: "keep"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := kvSnapshot(t, c, s.SpecPrefix())
			got, err := s.Apply(ctx, tc.docs, tc.opts)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("Apply: %v", err)
			} else {
				if !sameKeys(got.Created, tc.want.Created) || !sameKeys(got.Changed, tc.want.Changed) ||
					!sameKeys(got.Unchanged, tc.want.Unchanged) || !sameKeys(got.Pruned, tc.want.Pruned) || got.Txns != tc.want.Txns {
					t.Fatalf("result\n got %+v\nwant %+v", got, tc.want)
				}
			}
			wantKV := tc.wantKV
			if wantKV == nil {
				wantKV = before
			}
			if after := kvSnapshot(t, c, s.SpecPrefix()); fmt.Sprint(after) != fmt.Sprint(wantKV) {
				t.Fatalf("KV after apply\n got %v\nwant %v", after, wantKV)
			}
		})
	}

	t.Run("order: VLANs first, services pruned first", func(t *testing.T) {
		got, err := s.Apply(ctx, []SpecDoc{web, host, vlan}, ApplyOptions{DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{vlan.Key, host.Key, web.Key}; !slices.Equal(got.Created, want) {
			t.Fatalf("created order %v, want %v", got.Created, want)
		}
		if _, err := s.Apply(ctx, []SpecDoc{web, host, vlan}, ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err = s.Apply(ctx, nil, ApplyOptions{DryRun: true, Prune: true, AllowEmpty: true})
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{web.Key, host.Key, vlan.Key}; !slices.Equal(got.Pruned, want) {
			t.Fatalf("pruned order %v, want %v", got.Pruned, want)
		}
	})

	t.Run("bad keys are all reported", func(t *testing.T) {
		_, err := s.Apply(ctx, []SpecDoc{
			{Key: "elsewhere/x", Value: []byte("{}")},
			{Key: s.SpecPrefix() + "widgets/w", Value: []byte("{}")},
			vlan, vlan,
		}, ApplyOptions{})
		if err == nil {
			t.Fatal("Apply accepted bad keys")
		}
		for _, want := range []string{"elsewhere/x", "widgets/w", "given twice"} {
			if !bytes.Contains([]byte(err.Error()), []byte(want)) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return fmt.Sprint(x) == fmt.Sprint(y)
}

func TestApplyFailsLoudlyOnConcurrentEdit(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s := storeFor(t, a.Addr)
	vlan := doc(s, "VLAN", "vlan40", `{"id":40}`)
	web := doc(s, "Service", "web", `{"replicas":3}`)
	if _, err := s.Apply(ctx, []SpecDoc{vlan, web}, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}

	// Equal runs between the read and the write: an edit made there is a
	// concurrent edit, deterministically.
	edited := false
	equal := func(stored, d []byte) bool {
		if !edited {
			edited = true
			if _, err := c.KV().Put(&api.KVPair{Key: web.Key, Value: []byte(`{"replicas":9}`)}, nil); err != nil {
				t.Error(err)
			}
		}
		return bytes.Equal(stored, d)
	}
	_, err := s.Apply(ctx, []SpecDoc{
		{Key: vlan.Key, Value: []byte(`{"id":41}`)},
		{Key: web.Key, Value: []byte(`{"replicas":5}`)},
	}, ApplyOptions{Equal: equal})
	var terr *TxnError
	if !errors.As(err, &terr) {
		t.Fatalf("err = %v, want a *TxnError", err)
	}
	if keys := terr.Keys(); !slices.Equal(keys, []string{web.Key}) {
		t.Fatalf("conflicting keys %v, want [%s]", keys, web.Key)
	}
	// The transaction rolled back as a whole: vlan40 was not written either,
	// and the concurrent edit survived.
	kv := kvSnapshot(t, c, s.SpecPrefix())
	if kv[vlan.Key] != `{"id":40}` || kv[web.Key] != `{"replicas":9}` {
		t.Fatalf("KV after the failed apply: %v", kv)
	}

	t.Run("a key created meanwhile is not overwritten", func(t *testing.T) {
		host := doc(s, "Host", "worker1", `{"trunk":"eth1"}`)
		created := false
		equal := func(stored, d []byte) bool {
			if !created {
				created = true
				if _, err := c.KV().Put(&api.KVPair{Key: host.Key, Value: []byte(`{"trunk":"eth9"}`)}, nil); err != nil {
					t.Error(err)
				}
			}
			return bytes.Equal(stored, d)
		}
		_, err := s.Apply(ctx, []SpecDoc{vlan, host}, ApplyOptions{Equal: equal})
		if !errors.As(err, &terr) || !slices.Equal(terr.Keys(), []string{host.Key}) {
			t.Fatalf("err = %v, want a conflict on %s", err, host.Key)
		}
		if kv := kvSnapshot(t, c, s.SpecPrefix()); kv[host.Key] != `{"trunk":"eth9"}` {
			t.Fatalf("concurrently created key overwritten: %v", kv[host.Key])
		}
	})
}

func TestApplyThousandDocsInSixteenTxns(t *testing.T) {
	a := newAgent(t)
	ctx := testCtx(t)
	c := a.Client(t)
	s := storeFor(t, a.Addr)
	docs := thousandDocs(s, "v1")
	res, err := s.Apply(ctx, docs, ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Created) != 1000 || res.Txns != 16 {
		t.Fatalf("created %d in %d txns, want 1000 in 16", len(res.Created), res.Txns)
	}
	if kv := kvSnapshot(t, c, s.SpecPrefix()); len(kv) != 1000 {
		t.Fatalf("%d keys in KV, want 1000", len(kv))
	}
	// Half changed, the rest pruned and replaced: still at most 16 per 1000 ops.
	next := thousandDocs(s, "v2")[:500]
	res, err = s.Apply(ctx, next, ApplyOptions{Prune: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 500 || len(res.Pruned) != 500 || res.Txns != 16 {
		t.Fatalf("changed %d, pruned %d in %d txns; want 500, 500 in 16", len(res.Changed), len(res.Pruned), res.Txns)
	}
}

func thousandDocs(s *Store, version string) []SpecDoc {
	docs := make([]SpecDoc, 0, 1000)
	for i := 0; i < 1000; i++ {
		kind := []string{"VLAN", "Service", "Host"}[i%3]
		docs = append(docs, doc(s, kind, fmt.Sprintf("obj%04d", i), fmt.Sprintf(`{"n":%d,"v":%q}`, i, version)))
	}
	return docs
}
