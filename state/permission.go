package state

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/consul/api"
)

// ErrPermissionDenied is matched (errors.Is) by every error that says Consul
// refused a request for want of an ACL permission.
var ErrPermissionDenied = errors.New("consul permission denied")

// Operations a PermissionError names, the op label of
// swarmvlan_consul_permission_denied_total: a fixed set, whatever the keys.
const (
	OpKVRead          = "kv_read"
	OpKVList          = "kv_list"
	OpKVWrite         = "kv_write"
	OpTxn             = "txn"
	OpSessionCreate   = "session_create"
	OpSessionRenew    = "session_renew"
	OpSessionDestroy  = "session_destroy"
	OpAgentServices   = "agent_services"
	OpAgentRegister   = "agent_register"
	OpAgentDeregister = "agent_deregister"
	OpCatalogRead     = "catalog_read"
)

// PermissionOps lists every operation a PermissionError may name.
var PermissionOps = []string{
	OpKVRead, OpKVList, OpKVWrite, OpTxn,
	OpSessionCreate, OpSessionRenew, OpSessionDestroy,
	OpAgentServices, OpAgentRegister, OpAgentDeregister, OpCatalogRead,
}

// PermissionError is a request Consul refused for want of an ACL
// permission: a 403, a transaction op rejected with "Permission denied", or
// a listing under the prefix that Consul answered with some keys left out
// (it filters what a token may not read instead of refusing, and a listing
// with holes must never be taken for the whole: missing documents would
// read as deleted ones).
type PermissionError struct {
	// Op is what was asked, one of the Op constants.
	Op string
	// Resource is the key, prefix, service ID or session asked about.
	Resource string
	// Permission is what the token lacks, as Consul names it ("key:write"),
	// when Consul said.
	Permission string
	// Consul is Consul's own message.
	Consul string
}

// Error says what was refused and which permission it needs.
func (e *PermissionError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "consul permission denied: %s %s", strings.ReplaceAll(e.Op, "_", " "), e.Resource)
	if e.Permission != "" {
		fmt.Fprintf(&b, ": the token lacks %s", e.Permission)
	}
	if e.Consul != "" {
		fmt.Fprintf(&b, " (Consul: %s)", e.Consul)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrPermissionDenied) hold.
func (e *PermissionError) Is(target error) bool { return target == ErrPermissionDenied }

// IsPermissionDenied reports whether err says Consul refused a request for
// want of an ACL permission (or because the token itself is unknown).
func IsPermissionDenied(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrPermissionDenied) {
		return true
	}
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusForbidden {
		return true
	}
	var te *TxnError
	if errors.As(err, &te) {
		for _, op := range te.Ops {
			if deniedText(op.What) {
				return true
			}
		}
	}
	return false
}

// deniedText reports whether a Consul message is an ACL refusal:
// "Permission denied: ..." (acl.ErrPermissionDenied) or "ACL not found"
// (a token that does not exist, e.g. deleted while in use).
func deniedText(s string) bool {
	return strings.Contains(s, "Permission denied") || strings.Contains(s, "ACL not found")
}

// lacksRE picks the permission out of Consul's message: "Permission denied:
// token with AccessorID '…' lacks permission 'key:write' on \"…\"".
var lacksRE = regexp.MustCompile(`lacks permission '([^']+)'`)

func permissionIn(msg string) string {
	if m := lacksRE.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	if strings.Contains(msg, "ACL not found") {
		return "a valid token (Consul does not know this one)"
	}
	return ""
}

// permissionCounters count refusals by op.
type permissionCounters struct {
	mu sync.Mutex
	n  map[string]*atomic.Uint64
}

func (c *permissionCounters) add(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]*atomic.Uint64)
	}
	if c.n[op] == nil {
		c.n[op] = new(atomic.Uint64)
	}
	c.n[op].Add(1)
}

// PermissionDenials counts the requests Consul refused for want of an ACL
// permission since New, by op (every op of PermissionOps is present).
func (s *Store) PermissionDenials() map[string]uint64 {
	out := make(map[string]uint64, len(PermissionOps))
	for _, op := range PermissionOps {
		out[op] = 0
	}
	s.denials.mu.Lock()
	defer s.denials.mu.Unlock()
	for op, n := range s.denials.n {
		out[op] = n.Load()
	}
	return out
}

// note counts e and tells the configured hook.
func (s *Store) note(e *PermissionError) *PermissionError {
	s.denials.add(e.Op)
	if f := s.cfg.OnRefused; f != nil {
		f(e)
	}
	return e
}

// denied turns a 403 from a request of op on resource into a counted
// *PermissionError; any other err (nil included) is returned as it is.
func (s *Store) denied(op, resource string, err error) error {
	if s == nil || err == nil {
		return err
	}
	var body string
	var se api.StatusError
	switch {
	case errors.As(err, &se) && se.Code == http.StatusForbidden:
		body = se.Body
	case strings.Contains(err.Error(), "Unexpected response code: 403"):
		// Session().Renew reports a 403 without Consul's message.
		body = err.Error()
	default:
		return err
	}
	perm := permissionIn(body)
	if perm == "" && op == OpSessionRenew {
		perm = "session:write"
	}
	return s.note(&PermissionError{Op: op, Resource: resource, Permission: perm, Consul: body})
}

// listed refuses a listing of prefix that Consul answered with keys left
// out because the token may not read them.
func (s *Store) listed(prefix string, meta *api.QueryMeta, err error) error {
	if err != nil {
		return s.denied(OpKVList, prefix, err)
	}
	if meta != nil && meta.ResultsFilteredByACLs {
		return s.note(&PermissionError{
			Op: OpKVList, Resource: prefix, Permission: "key:read on every key under " + prefix,
			Consul: "results filtered by ACLs",
		})
	}
	return nil
}

// deniedTxn returns a counted *PermissionError when Consul rolled a
// transaction back because the token may not do one of its ops (the
// fence included), else nil.
func (s *Store) deniedTxn(resp *api.TxnResponse, ops api.TxnOps) error {
	if resp == nil {
		return nil
	}
	i := slices.IndexFunc(resp.Errors, func(e *api.TxnError) bool { return deniedText(e.What) })
	if i < 0 {
		return nil
	}
	te := resp.Errors[i]
	resource := fmt.Sprintf("op %d", te.OpIndex)
	if te.OpIndex < len(ops) {
		switch op := ops[te.OpIndex]; {
		case op.KV != nil:
			resource = string(op.KV.Verb) + " " + op.KV.Key
		case op.Service != nil:
			resource = string(op.Service.Verb) + " service " + op.Service.Service.Service
		}
	}
	return s.note(&PermissionError{Op: OpTxn, Resource: resource, Permission: permissionIn(te.What), Consul: te.What})
}
