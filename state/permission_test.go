package state

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
)

func TestPermissionInConsulMessages(t *testing.T) {
	for _, tc := range []struct{ msg, want string }{
		{`Permission denied: token with AccessorID 'a1b2' lacks permission 'key:write' on "swarmvlan/spec/vlans/v1"`, "key:write"},
		{`Permission denied: anonymous token lacks permission 'session:write' on "node1"`, "session:write"},
		{`ACL not found`, "a valid token (Consul does not know this one)"},
		{`Permission denied`, ""},
	} {
		if got := permissionIn(tc.msg); got != tc.want {
			t.Errorf("permissionIn(%q) = %q, want %q", tc.msg, got, tc.want)
		}
		if !deniedText(tc.msg) {
			t.Errorf("deniedText(%q) = false", tc.msg)
		}
	}
	if deniedText("failed to lock key \"x\" due to lock delay") || deniedText(`current modify index 7 does not match`) {
		t.Error("deniedText takes a lock-delay or CAS failure for a refusal")
	}
	e := &PermissionError{Op: OpKVWrite, Resource: "p/spec/vlans/a", Permission: "key:write", Consul: "Permission denied: …"}
	if got := e.Error(); !strings.Contains(got, "kv write p/spec/vlans/a") || !strings.Contains(got, "lacks key:write") {
		t.Errorf("message %q does not say what was refused", got)
	}
	wrapped := fmt.Errorf("apply: %w", e)
	if !IsPermissionDenied(wrapped) || !errors.Is(wrapped, ErrPermissionDenied) {
		t.Error("a wrapped PermissionError is not recognised")
	}
	if !IsPermissionDenied(fmt.Errorf("x: %w", api.StatusError{Code: 403, Body: "ACL not found"})) {
		t.Error("a raw 403 is not recognised")
	}
	if IsPermissionDenied(api.StatusError{Code: 500, Body: "rpc error"}) || IsPermissionDenied(ErrNotLeader) || IsPermissionDenied(nil) {
		t.Error("an error that is no refusal is taken for one")
	}
}

func TestTLSProblemNamesTheFileToLookAt(t *testing.T) {
	tc := api.TLSConfig{CAFile: "/etc/consul/ca.pem", CertFile: "/etc/consul/client.pem"}
	for _, c := range []struct {
		err  error
		cfg  api.TLSConfig
		want string
	}{
		{x509.UnknownAuthorityError{}, tc, "not signed by the CA in /etc/consul/ca.pem (CONSUL_CACERT)"},
		{x509.UnknownAuthorityError{}, api.TLSConfig{}, "name Consul's CA with CONSUL_CACERT"},
		{x509.HostnameError{Certificate: &x509.Certificate{DNSNames: []string{"server.dc1.consul"}}, Host: "10.0.0.1"}, tc, "CONSUL_TLS_SERVER_NAME"},
		{errors.New("remote error: tls: certificate required"), api.TLSConfig{}, "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY"},
		{errors.New("remote error: tls: bad certificate"), tc, "refused the client certificate /etc/consul/client.pem"},
	} {
		if got := tlsProblem(fmt.Errorf("dial: %w", c.err), c.cfg); !strings.Contains(got, c.want) {
			t.Errorf("tlsProblem(%v) = %q, want it to say %q", c.err, got, c.want)
		}
	}
	if got := tlsProblem(errors.New("connection refused"), tc); got != "" {
		t.Errorf("a refused connection explained as a TLS problem: %q", got)
	}
}

// refusals records what a store's OnRefused is told.
type refusals struct {
	mu   sync.Mutex
	errs []error
}

func (r *refusals) note(err error) { r.mu.Lock(); r.errs = append(r.errs, err); r.mu.Unlock() }

func (r *refusals) ops() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for _, err := range r.errs {
		var pe *PermissionError
		if errors.As(err, &pe) {
			out[pe.Op] = true
		}
	}
	return out
}

// aclStore returns a store with prefix p/ and the given token, recording
// its refusals.
func aclStore(t *testing.T, a *lab.ConsulAgent, token string) (*Store, *refusals) {
	t.Helper()
	r := &refusals{}
	s, err := New(Config{Address: a.Addr, Token: token, Prefix: "p/", OnRefused: r.note})
	if err != nil {
		t.Fatal(err)
	}
	return s, r
}

const aclVLAN = "apiVersion: swarmvlan/v1\nkind: VLAN\nmetadata: {name: v1}\nspec: {trunk: eth0, subnet: 10.1.0.0/16}\n"

// TestRefusedReadIsAnErrorNeverAnEmptyResult: against a Consul with ACLs
// and default deny, a token that may not read the documents gets errors
// naming the refusal from every read, never an empty result; a watch
// delivers nothing (an empty delivery would read as every document
// deleted); the refusals are counted and reported.
func TestRefusedReadIsAnErrorNeverAnEmptyResult(t *testing.T) {
	a := newAgent(t, lab.WithACL(lab.NewToken()))
	ctx := testCtx(t)
	admin, _ := aclStore(t, a, a.ManagementToken())
	if _, err := admin.Apply(ctx, []SpecDoc{{Key: admin.SpecKey("VLAN", "v1"), Value: []byte(aclVLAN)}}, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := admin.CASJSON(ctx, admin.AllocationKey("v1", "n1"), Allocation{Chunk: "10.1.1.0/24", Node: "n1"}, 0); err != nil || !ok {
		t.Fatal(ok, err)
	}
	// Readable: only the status tree. Under default deny, spec/ and state/
	// are hidden.
	tok := a.NewACLToken(t, "status-only", `key_prefix "p/status/" { policy = "write" }`)
	s, rec := aclStore(t, a, tok.Secret)

	if docs, err := s.SpecDocs(ctx); !IsPermissionDenied(err) || docs != nil {
		t.Errorf("SpecDocs: %d docs, err %v; want a permission error", len(docs), err)
	} else if !strings.Contains(err.Error(), "kv list p/spec/") {
		t.Errorf("SpecDocs error does not name the listing: %v", err)
	}
	if _, err := s.SpecKeys(ctx); !IsPermissionDenied(err) {
		t.Errorf("SpecKeys: %v", err)
	}
	if _, found, err := s.GetSpec(ctx, "VLAN", "v1"); !IsPermissionDenied(err) || found {
		t.Errorf("GetSpec: found %v, err %v", found, err)
	} else if !strings.Contains(err.Error(), "key:read") {
		t.Errorf("GetSpec error does not name key:read: %v", err)
	}
	if allocs, _, err := s.Allocations(ctx, "v1"); !IsPermissionDenied(err) || allocs != nil {
		t.Errorf("Allocations: %v, err %v", allocs, err)
	}
	if _, err := s.AllocationVLANs(ctx); !IsPermissionDenied(err) {
		t.Errorf("AllocationVLANs: %v", err)
	}

	wctx, stop := context.WithTimeout(ctx, 2*time.Second)
	defer stop()
	delivered := 0
	_ = s.WatchPrefix(wctx, s.SpecPrefix(), WatchOptions{MaxBackoff: 200 * time.Millisecond}, func(api.KVPairs, uint64) { delivered++ })
	if delivered != 0 {
		t.Errorf("watch delivered %d times from a listing it may not read", delivered)
	}
	if st := s.WatchStats(); st.Errors == 0 {
		t.Errorf("watch counted no errors: %+v", st)
	}
	got := s.PermissionDenials()
	if got[OpKVList] == 0 || got[OpKVRead] == 0 {
		t.Errorf("denials counted %v, want kv_list and kv_read", got)
	}
	if ops := rec.ops(); !ops[OpKVList] || !ops[OpKVRead] {
		t.Errorf("OnRefused told %v", ops)
	}
}

// TestRefusedWriteChangesNothingAndSaysWhichPermission: a read-only token's
// writes fail naming key:write and the key, and leave KV as it was; a
// refused check-and-set is an error, not a lost race.
func TestRefusedWriteChangesNothingAndSaysWhichPermission(t *testing.T) {
	a := newAgent(t, lab.WithACL(lab.NewToken()))
	ctx := testCtx(t)
	admin, _ := aclStore(t, a, a.ManagementToken())
	key := admin.SpecKey("VLAN", "v1")
	if _, err := admin.Apply(ctx, []SpecDoc{{Key: key, Value: []byte(aclVLAN)}}, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	tok := a.NewACLToken(t, "read-only", `key_prefix "p/" { policy = "list" }`)
	s, _ := aclStore(t, a, tok.Secret)
	kv := a.ClientWithToken(t, a.ManagementToken()).KV()
	before, _, err := kv.List("p/", nil)
	if err != nil {
		t.Fatal(err)
	}

	changed := []byte(strings.Replace(aclVLAN, "eth0", "eth1", 1))
	other := s.SpecKey("VLAN", "v2")
	_, err = s.Apply(ctx, []SpecDoc{{Key: key, Value: changed}, {Key: other, Value: []byte(strings.ReplaceAll(aclVLAN, "v1", "v2"))}}, ApplyOptions{Prune: true})
	if !IsPermissionDenied(err) || !strings.Contains(err.Error(), "key:write") || !strings.Contains(err.Error(), "p/spec/vlans/") {
		t.Errorf("Apply: %v; want a refusal naming key:write and the key", err)
	}
	var terr *TxnError
	if errors.As(err, &terr) {
		t.Errorf("a refusal reported as a conflict: %v", err)
	}
	if _, err := s.Apply(ctx, nil, ApplyOptions{Prune: true, AllowEmpty: true}); !IsPermissionDenied(err) {
		t.Errorf("pruning Apply: %v", err)
	}
	if deleted, err := s.DeleteSpec(ctx, "VLAN", "v1"); !IsPermissionDenied(err) || deleted {
		t.Errorf("DeleteSpec: deleted %v, err %v", deleted, err)
	}
	if ok, err := s.CASJSON(ctx, s.ScaleKey("web"), ScaleIntent{Replicas: 3}, 0); !IsPermissionDenied(err) || ok {
		t.Errorf("CASJSON: ok %v, err %v; a refusal must not look like a lost race", ok, err)
	}
	if _, err := s.NewStatusWriter().Write(ctx, "vlans", "v1", Status{ObservedIndex: 1}); !IsPermissionDenied(err) {
		t.Errorf("status write: %v", err)
	}
	if _, err := s.InstallationID(ctx); !IsPermissionDenied(err) {
		t.Errorf("InstallationID: %v", err)
	}

	after, _, err := kv.List("p/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("KV has %d keys after refused writes, had %d", len(after), len(before))
	}
	for i := range before {
		if after[i].Key != before[i].Key || !bytes.Equal(after[i].Value, before[i].Value) || after[i].ModifyIndex != before[i].ModifyIndex {
			t.Errorf("key %s changed by refused writes", before[i].Key)
		}
	}
}

// TestRefusedFenceIsNotLostLeadership: when the token may no longer read
// the leader key, fenced writes fail as refused (naming key:read), not
// with ErrNotLeader, and a fenced check-and-set does not report a lost
// race; the leadership itself is not given up for it.
func TestRefusedFenceIsNotLostLeadership(t *testing.T) {
	a := newAgent(t, lab.WithACL(lab.NewToken()))
	ctx := testCtx(t)
	rules := `
key "p/leader" { policy = "write" }
key_prefix "p/state/" { policy = "write" }
session_prefix "" { policy = "write" }
`
	tok := a.NewACLToken(t, "leader", rules)
	s, _ := aclStore(t, a, tok.Secret)
	lead, err := s.Campaign(ctx, LeaderOptions{Value: []byte("me")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lead.Resign)
	if ok, err := lead.CAS(ctx, s.AllocationKey("v1", "n1"), []byte(`{}`), 0); err != nil || !ok {
		t.Fatalf("CAS with every rule: %v %v", ok, err)
	}
	tok.SetRules(t, `
key_prefix "p/state/" { policy = "write" }
session_prefix "" { policy = "write" }
`)
	err = lead.Txn(ctx, api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVSet, Key: s.AllocationKey("v1", "n2"), Value: []byte(`{}`)}}})
	if errors.Is(err, ErrNotLeader) || !IsPermissionDenied(err) || !strings.Contains(err.Error(), "key:read") {
		t.Errorf("fenced txn with the leader key unreadable: %v; want a refusal naming key:read", err)
	}
	if ok, err := lead.CAS(ctx, s.AllocationKey("v1", "n3"), []byte(`{}`), 0); ok || !IsPermissionDenied(err) {
		t.Errorf("fenced CAS: ok %v, err %v", ok, err)
	}
	if lead.Context().Err() != nil {
		t.Error("leadership ended because a write was refused")
	}
}

// TestRefusedDeregisterLeavesTheRegistration: an agent deregistration the
// token may not make is an error and the registration stays.
func TestRefusedDeregisterLeavesTheRegistration(t *testing.T) {
	a := newAgent(t, lab.WithACL(lab.NewToken()))
	ctx := testCtx(t)
	admin := a.ClientWithToken(t, a.ManagementToken()).Agent()
	if err := admin.ServiceRegister(&api.AgentServiceRegistration{ID: "web-1", Name: "web", Meta: map[string]string{MetaTask: "t1"}}); err != nil {
		t.Fatal(err)
	}
	tok := a.NewACLToken(t, "service-read", `service "web" { policy = "read" }`)
	s, rec := aclStore(t, a, tok.Secret)
	agent := s.LocalAgent()
	svcs, err := agent.Services(ctx)
	if err != nil || svcs["web-1"] == nil {
		t.Fatalf("Services: %v %v", svcs, err)
	}
	if err := agent.Deregister(ctx, "web-1"); !IsPermissionDenied(err) || !strings.Contains(err.Error(), "service:write") {
		t.Errorf("Deregister: %v; want a refusal naming service:write", err)
	}
	if err := agent.Register(ctx, &api.AgentServiceRegistration{ID: "web-2", Name: "web"}); !IsPermissionDenied(err) {
		t.Errorf("Register: %v", err)
	}
	all, err := admin.Services()
	if err != nil || all["web-1"] == nil || all["web-2"] != nil {
		t.Errorf("agent services after refused calls: %v %v", all, err)
	}
	if ops := rec.ops(); !ops[OpAgentDeregister] || !ops[OpAgentRegister] {
		t.Errorf("OnRefused told %v", ops)
	}
}

// TestRefusedRenewIsNotAGoneSession: a renewal refused for want of
// session:write is retried like one that could not reach Consul, not taken
// for "the session is gone": the holder keeps its leadership and its key
// until the renewal deadline, and deletes nothing for the refusal.
func TestRefusedRenewIsNotAGoneSession(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a session renewal (10 s)")
	}
	a := newAgent(t, lab.WithACL(lab.NewToken()))
	ctx := testCtx(t)
	rules := "key_prefix \"p/\" { policy = \"write\" }\n"
	tok := a.NewACLToken(t, "leader", rules+"session_prefix \"\" { policy = \"write\" }\n")
	s, rec := aclStore(t, a, tok.Secret)
	lead, err := s.Campaign(ctx, LeaderOptions{Value: []byte("me")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lead.Resign)
	tok.SetRules(t, rules)
	eventually(t, 2*DefaultSessionTTL, "a refused renewal", func() bool { return s.PermissionDenials()[OpSessionRenew] > 0 })
	if lead.Context().Err() != nil {
		t.Fatal("leadership ended at the first refused renewal")
	}
	pair, _, err := a.ClientWithToken(t, a.ManagementToken()).KV().Get(s.LeaderKey(), nil)
	if err != nil || pair == nil || pair.Session != lead.Session() {
		t.Errorf("leader key after a refused renewal: %+v %v", pair, err)
	}
	if !rec.ops()[OpSessionRenew] {
		t.Errorf("OnRefused told %v", rec.ops())
	}
}
