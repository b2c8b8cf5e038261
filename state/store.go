// Package state is swarmvlan's Consul layer: the KV key layout, blocking
// watches, leader election with fenced writes, status records, check-and-set
// state (allocations, scale intents), node liveness and the atomic, chunked
// apply of spec documents.
package state

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
)

// DefaultPrefix is the KV prefix every key lives under unless configured.
const DefaultPrefix = "swarmvlan/"

// Config says where the store lives in Consul. Empty fields keep what
// api.DefaultConfig found in the environment (CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN, CONSUL_CACERT, CONSUL_HTTP_SSL, ...).
type Config struct {
	// Prefix is the KV prefix, default "swarmvlan/"; a missing trailing "/"
	// is added and "/" means the root of the KV store.
	Prefix string
	// Address overrides CONSUL_HTTP_ADDR when non-empty.
	Address string
	// Token overrides CONSUL_HTTP_TOKEN when non-empty.
	Token string
	// Datacenter overrides the agent's datacenter when non-empty.
	Datacenter string
	// SessionTTL is the TTL of the process's Consul session, which holds
	// the node registration, and the leader lock too when the lock is not
	// bound to a health check (LeaderOptions.Check); default
	// DefaultSessionTTL.
	SessionTTL time.Duration
	// LockDelay is that session's lock delay; default DefaultLockDelay.
	LockDelay time.Duration
	// OnRefused, if set, is told of every refusal that retrying will not
	// cure: a *PermissionError (the token lacks an ACL permission) or a
	// *TLSError (Consul's certificate is not trusted, or it refused ours).
	// It runs on the goroutine of the refused request and must not block.
	OnRefused func(error)
}

// Store is swarmvlan's view of Consul. It is safe for concurrent use.
type Store struct {
	client    *api.Client
	prefix    string
	cfg       Config
	requests  atomic.Uint64
	watches   WatchCounters
	sessionMu sync.Mutex
	sessions  map[sessionParams]*session
	// campaigning is set from Campaign until its leadership ends.
	campaigning atomic.Bool
	denials     permissionCounters
	hasToken    bool
}

// New returns a store; it does not contact Consul.
func New(cfg Config) (*Store, error) {
	ac := api.DefaultConfig()
	if cfg.Address != "" {
		ac.Address = cfg.Address
	}
	if cfg.Token != "" {
		ac.Token = cfg.Token
	}
	if cfg.Datacenter != "" {
		ac.Datacenter = cfg.Datacenter
	}
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", ac.Address, err)
	}
	s := &Store{
		client:   client,
		hasToken: ac.Token != "" || ac.TokenFile != "",
		prefix:   normalizePrefix(cfg.Prefix),
		cfg:      cfg,
		sessions: make(map[sessionParams]*session),
	}
	// api.NewClient fills in ac.HttpClient (TLS from the environment, or a
	// unix socket dialer) and the client keeps that same *http.Client, so
	// wrapping its transport here counts every request the client makes.
	ac.HttpClient.Transport = &countingTransport{next: transportOf(ac.HttpClient), n: &s.requests, tls: s.tlsRefusal(ac)}
	return s, nil
}

func transportOf(c *http.Client) http.RoundTripper {
	if c.Transport != nil {
		return c.Transport
	}
	return http.DefaultTransport
}

func normalizePrefix(p string) string {
	if p == "" {
		p = DefaultPrefix
	}
	// Consul keys have no leading slash; a prefix of "/" means the root.
	p = strings.TrimLeft(p, "/")
	if p != "" && !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

// HasToken reports whether requests carry an ACL token (Config.Token,
// CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE). Without one the agent's
// default token applies, or the anonymous token, for which Consul does not
// even say that it left keys out of a listing.
func (s *Store) HasToken() bool { return s.hasToken }

// Prefix returns the normalised KV prefix, ending in "/".
func (s *Store) Prefix() string { return s.prefix }

// Requests counts the HTTP requests made to Consul since New.
func (s *Store) Requests() uint64 { return s.requests.Load() }

// WatchStats sums the counters of every watch this store has run.
func (s *Store) WatchStats() WatchStats { return s.watches.Stats() }

type countingTransport struct {
	next http.RoundTripper
	n    *atomic.Uint64
	// tls explains a failed TLS handshake (nil: not a TLS failure).
	tls func(error) *TLSError
}

// RoundTrip counts the request and passes it on.
func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.n.Add(1)
	resp, err := t.next.RoundTrip(r)
	if err != nil && t.tls != nil {
		if te := t.tls(err); te != nil {
			return nil, te
		}
	}
	return resp, err
}
