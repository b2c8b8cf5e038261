package lab

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FlakyProxy is an HTTP reverse proxy in front of a Consul agent that fails
// on demand, for fault-injection tests: point a client at Addr instead of the
// agent.
type FlakyProxy struct {
	// URL is the proxy's base URL (http://host:port).
	URL string
	// Addr is the proxy's host:port.
	Addr string

	srv      *httptest.Server
	requests atomic.Uint64
	failed   atomic.Uint64

	mu         sync.Mutex
	failNext   int
	blockUntil time.Time
	down       bool
}

// NewFlakyProxy starts a proxy to target (host:port or a URL) that is closed
// when the test ends.
func NewFlakyProxy(t testing.TB, target string) *FlakyProxy {
	t.Helper()
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("flaky proxy: target %q: %v", target, err)
	}
	p := &FlakyProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	// Blocking queries stream nothing until they answer; flushing at once
	// keeps the proxy from adding latency to watch wake-ups.
	rp.FlushInterval = -1
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		switch p.decide() {
		case "down":
			p.failed.Add(1)
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			http.Error(w, "flaky proxy: down", http.StatusServiceUnavailable)
		case "blocked":
			p.failed.Add(1)
			http.Error(w, "flaky proxy: blocked", http.StatusServiceUnavailable)
		case "fail":
			p.failed.Add(1)
			http.Error(w, "flaky proxy: injected failure", http.StatusInternalServerError)
		default:
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(p.srv.Close)
	p.URL = p.srv.URL
	p.Addr = strings.TrimPrefix(p.srv.URL, "http://")
	return p
}

func (p *FlakyProxy) decide() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.down:
		return "down"
	case time.Now().Before(p.blockUntil):
		return "blocked"
	case p.failNext > 0:
		p.failNext--
		return "fail"
	}
	return ""
}

// FailNext makes the next n requests answer 500.
func (p *FlakyProxy) FailNext(n int) {
	p.mu.Lock()
	p.failNext = n
	p.mu.Unlock()
}

// Block makes every request in the next d answer 503, as an agent without a
// cluster leader does.
func (p *FlakyProxy) Block(d time.Duration) {
	p.mu.Lock()
	p.blockUntil = time.Now().Add(d)
	p.mu.Unlock()
}

// SetDown with true cuts every open connection, including blocking queries
// in flight, and closes new ones without an answer until it is called with
// false.
func (p *FlakyProxy) SetDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.srv.CloseClientConnections()
	}
}

// Requests counts every request the proxy received.
func (p *FlakyProxy) Requests() uint64 { return p.requests.Load() }

// Failed counts the requests the proxy failed on purpose.
func (p *FlakyProxy) Failed() uint64 { return p.failed.Load() }
