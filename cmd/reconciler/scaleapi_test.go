package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/spec"
	"swarmvlan/state"
)

const (
	testToken      = "s3cret-token-one"
	testTokenOther = "s3cret-token-two"
)

// scaledServiceDoc is a Service document with scaling bounds; extra is
// added under spec.scaling (cooldowns).
func scaledServiceDoc(name string, replicas, min, max int, extra ...string) string {
	doc := fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: Service
metadata:
  name: %s
spec:
  image: swarmvlan-testapp:dev
  networks: [vlan40]
  replicas: %d
  scaling:
    min: %d
    max: %d
`, name, replicas, min, max)
	for _, e := range extra {
		doc += "    " + e + "\n"
	}
	return doc
}

// syncBuffer is a log sink shown when a test fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// apiLab is a manager daemon's HTTP handler against a real Consul agent,
// with its spec view kept in step by a real watch, served by httptest.
type apiLab struct {
	agent *lab.ConsulAgent
	kv    *api.KV
	store *state.Store
	d     *daemon
	srv   *httptest.Server
}

// newAPILab starts an agent (or uses agent, if not nil) and a daemon's HTTP
// API with the given run flags (--token-file, --alert-service-label, ...).
func newAPILab(t *testing.T, agent *lab.ConsulAgent, runFlags ...string) *apiLab {
	t.Helper()
	if agent == nil {
		agent = lab.StartConsul(t)
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	f := registerAPIFlags(fs)
	if err := fs.Parse(runFlags); err != nil {
		t.Fatal(err)
	}
	store, err := state.New(state.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d := &daemon{role: "manager", log: log, store: store, view: reconcile.NewView(store.SpecPrefix())}
	d.leader = &reconcile.Controller{Store: store, View: d.view, Log: log}
	if err := d.initHTTP(f); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		reconcile.WatchSpec(ctx, store, d.view, d.http.metrics.watchOptions(store.SpecPrefix()), func([]reconcile.Key) {}, log)
	}()
	srv := httptest.NewServer(d.httpHandler())
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		if t.Failed() {
			t.Logf("daemon logs:\n%s", logs.String())
		}
	})
	select {
	case <-d.view.Synced():
		d.ready.Store(true) // as run does
	case <-time.After(10 * time.Second):
		t.Fatal("spec view not synced after 10s")
	}
	return &apiLab{agent: agent, kv: agent.Client(t).KV(), store: store, d: d, srv: srv}
}

// tokenFile writes a token file holding tokens (with a comment and a blank
// line, which must be skipped) and returns the --token-file flag.
func tokenFile(t testing.TB, tokens ...string) string {
	t.Helper()
	body := "# scale API tokens\n\n" + strings.Join(tokens, "\n") + "\n"
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return "--token-file=" + p
}

// putService writes a document straight into KV and waits until the
// daemon's view holds that version.
func (l *apiLab) putService(t testing.TB, name, doc string) {
	t.Helper()
	key := l.store.SpecKey(spec.KindService, name)
	if _, err := l.kv.Put(&api.KVPair{Key: key, Value: []byte(doc)}, nil); err != nil {
		t.Fatal(err)
	}
	p, _, err := l.kv.Get(key, nil)
	if err != nil || p == nil {
		t.Fatalf("read back %s: %v", key, err)
	}
	waitFor(t, 10*time.Second, "the view to hold "+name, func() bool {
		d, ok := l.d.view.Get(reconcile.Key{Kind: spec.KindService, Name: name})
		return ok && d.ModifyIndex == p.ModifyIndex
	})
}

// intent reads a service's scale intent from KV.
func (l *apiLab) intent(t testing.TB, name string) (state.ScaleIntent, bool) {
	t.Helper()
	si, _, found, err := l.store.ScaleIntent(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return si, found
}

// replicas is the count in force: the intent's, else spec.replicas.
func (l *apiLab) replicas(t testing.TB, name string, specReplicas int) int {
	t.Helper()
	if si, found := l.intent(t, name); found {
		return si.Replicas
	}
	return specReplicas
}

// reply is the union of the API's answers.
type reply struct {
	Service           string `json:"service"`
	Replicas          int    `json:"replicas"`
	Previous          int    `json:"previous"`
	Min               int    `json:"min"`
	Max               int    `json:"max"`
	Error             string `json:"error"`
	Limit             string `json:"limit"`
	Bound             *int   `json:"bound"`
	RetryAfterSeconds int    `json:"retryAfterSeconds"`
}

type answer struct {
	code   int
	header http.Header
	body   []byte
	reply  reply
}

func post(t testing.TB, url, token, body string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	a := answer{code: resp.StatusCode, header: resp.Header}
	a.body, _ = io.ReadAll(resp.Body)
	_ = json.Unmarshal(a.body, &a.reply)
	return a
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.code, bytes.TrimSpace(a.body)) }

func TestScaleAPIUpDownAndBounds(t *testing.T) {
	l := newAPILab(t, nil, tokenFile(t, testToken))
	l.putService(t, "web", scaledServiceDoc("web", 3, 2, 4))
	url := l.srv.URL + "/v1/services/web/scale"

	steps := []struct {
		name     string
		body     string
		code     int
		replicas int    // in the answer and, for 200 and 409, in force afterwards
		previous int    // in a 200 answer
		err      string // in a refusal
		limit    string
		bound    int
	}{
		{name: "up from spec.replicas", body: `{"direction":"up"}`, code: 200, replicas: 4, previous: 3},
		{name: "up at the maximum", body: `{"direction":"up"}`, code: 409, replicas: 4, err: "service web is at maximum 4", limit: "max", bound: 4},
		{name: "down", body: `{"direction":"down"}`, code: 200, replicas: 3, previous: 4},
		{name: "down to the minimum", body: `{"direction":"down"}`, code: 200, replicas: 2, previous: 3},
		{name: "down at the minimum", body: `{"direction":"down"}`, code: 409, replicas: 2, err: "service web is at minimum 2", limit: "min", bound: 2},
		{name: "an explicit count", body: `{"replicas":4,"reason":"load test"}`, code: 200, replicas: 4, previous: 2},
		{name: "the same count again changes nothing", body: `{"replicas":4}`, code: 200, replicas: 4, previous: 4},
		{name: "an explicit count above the maximum", body: `{"replicas":5}`, code: 409, replicas: 4, err: "service web: 5 replicas is above the maximum 4", limit: "max", bound: 4},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			a := post(t, url, testToken, s.body)
			if a.code != s.code {
				t.Fatalf("answer %s, want %d", a, s.code)
			}
			r := a.reply
			if r.Service != "web" || r.Replicas != s.replicas || r.Min != 2 || r.Max != 4 {
				t.Errorf("answer %s: want service web, replicas %d, min 2, max 4", a, s.replicas)
			}
			if s.code == 200 && (r.Previous != s.previous || r.Error != "") {
				t.Errorf("answer %s: want previous %d", a, s.previous)
			}
			if s.code == 409 && (r.Error != s.err || r.Limit != s.limit || r.Bound == nil || *r.Bound != s.bound) {
				t.Errorf("answer %s: want error %q at %s bound %d", a, s.err, s.limit, s.bound)
			}
			si, found := l.intent(t, "web")
			if !found || si.Replicas != s.replicas {
				t.Errorf("intent in KV %+v (found %v), want replicas %d", si, found, s.replicas)
			}
		})
	}
	si, _ := l.intent(t, "web")
	if si.UpdatedBy != "api" || si.Reason != "set from 2 to 4 (load test)" || si.LastUp.IsZero() || si.LastDown.IsZero() {
		t.Errorf("intent does not record who, why and when: %+v", si)
	}
	// The spec was never touched: a GitOps sync does not undo scaling.
	p, _, _ := l.kv.Get(l.store.SpecKey(spec.KindService, "web"), nil)
	if string(p.Value) != scaledServiceDoc("web", 3, 2, 4) {
		t.Errorf("the spec document changed:\n%s", p.Value)
	}
}

func TestScaleAPIRejectsBadRequests(t *testing.T) {
	l := newAPILab(t, nil, tokenFile(t, testToken))
	l.putService(t, "web", scaledServiceDoc("web", 3, 2, 4))
	l.putService(t, "plain", serviceDoc("plain", 2))
	tests := []struct {
		name, path, body string
		code             int
		err              string
	}{
		{"unknown service", "/v1/services/nosuch/scale", `{"direction":"up"}`, 404, `service "nosuch" not found`},
		{"service without bounds", "/v1/services/plain/scale", `{"direction":"up"}`, 409, "service plain has no scaling bounds"},
		{"unknown direction", "/v1/services/web/scale", `{"direction":"sideways"}`, 400, `direction: must be "up" or "down", not "sideways"`},
		{"replicas not a number", "/v1/services/web/scale", `{"replicas":"three"}`, 400, "replicas: must be an integer, got string"},
		{"replicas not whole", "/v1/services/web/scale", `{"replicas":2.5}`, 400, "replicas: must be an integer, got number 2.5"},
		{"negative replicas", "/v1/services/web/scale", `{"replicas":-1}`, 400, "replicas: must not be negative, got -1"},
		{"both", "/v1/services/web/scale", `{"direction":"up","replicas":3}`, 400, "direction, replicas: give one of them, not both"},
		{"neither", "/v1/services/web/scale", `{}`, 400, `direction: required ("up" or "down"), or give replicas`},
		{"unknown field", "/v1/services/web/scale", `{"direktion":"up"}`, 400, "direktion: unknown field"},
		{"empty body", "/v1/services/web/scale", ``, 400, "body: empty, want a JSON object"},
		{"not an object", "/v1/services/web/scale", `["up"]`, 400, "body: must be a JSON object, got array"},
		{"two objects", "/v1/services/web/scale", `{"direction":"up"}{"direction":"up"}`, 400, "body: unexpected data after the JSON object"},
		{"too large", "/v1/services/web/scale", `{"reason":"` + strings.Repeat("x", maxScaleBody) + `"}`, 413, fmt.Sprintf("body: larger than %d bytes", maxScaleBody)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := post(t, l.srv.URL+tt.path, testToken, tt.body)
			if a.code != tt.code || a.reply.Error != tt.err {
				t.Errorf("answer %.300s\nwant %d %q", a, tt.code, tt.err)
			}
		})
	}
	if _, found := l.intent(t, "web"); found {
		t.Error("a refused request wrote a scale intent")
	}
	resp, err := http.Get(l.srv.URL + "/v1/services/web/scale")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET on the scale route: %s, want 405", resp.Status)
	}
	if n := testutil.ToFloat64(l.d.http.metrics.scaleRequests.WithLabelValues("api", scaleResultInvalid)); n != 11 {
		t.Errorf("invalid requests counted %v, want 11 (the 400s and the 413)", n)
	}
}

func TestScaleAPIAuthentication(t *testing.T) {
	agent := lab.StartConsul(t)
	t.Setenv(tokensEnv, " env-token , ")
	withTokens := newAPILab(t, agent, tokenFile(t, testToken, testTokenOther))
	withTokens.putService(t, "web", scaledServiceDoc("web", 3, 1, 100))
	t.Setenv(tokensEnv, "")
	without := newAPILab(t, agent)

	routes := []struct{ path, body string }{
		{"/v1/services/web/scale", `{"direction":"up"}`},
		{"/v1/orbiter/handle/scaler/web/up", ``},
		{"/v1/alertmanager", `{"alerts":[{"status":"firing","labels":{"swarmvlan_service":"web","swarmvlan_direction":"up"}}]}`},
	}
	tests := []struct {
		name   string
		lab    *apiLab
		header string // Authorization
		code   int
		err    string
		auth   string // WWW-Authenticate
	}{
		{"no token configured", without, "Bearer " + testToken, 401, "no API token configured: scaling is disabled", `Bearer realm="swarmvlan"`},
		{"no Authorization header", withTokens, "", 401, "missing bearer token (Authorization: Bearer TOKEN)", `Bearer realm="swarmvlan"`},
		{"another scheme", withTokens, "Basic " + testToken, 401, "missing bearer token (Authorization: Bearer TOKEN)", `Bearer realm="swarmvlan"`},
		{"wrong token", withTokens, "Bearer " + testToken + "x", 401, "invalid bearer token", `Bearer realm="swarmvlan", error="invalid_token"`},
		{"a prefix of a token", withTokens, "Bearer s3cret", 401, "invalid bearer token", `Bearer realm="swarmvlan", error="invalid_token"`},
		{"first token of the file", withTokens, "Bearer " + testToken, 200, "", ""},
		{"second token of the file", withTokens, "bearer " + testTokenOther, 200, "", ""},
		{"token from the environment", withTokens, "Bearer env-token", 200, "", ""},
	}
	want := 3 // spec.replicas
	for _, tt := range tests {
		for _, rt := range routes {
			t.Run(tt.name+" "+rt.path, func(t *testing.T) {
				req, _ := http.NewRequest(http.MethodPost, tt.lab.srv.URL+rt.path, strings.NewReader(rt.body))
				if tt.header != "" {
					req.Header.Set("Authorization", tt.header)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var r reply
				json.NewDecoder(resp.Body).Decode(&r)
				if resp.StatusCode != tt.code || r.Error != tt.err || resp.Header.Get("WWW-Authenticate") != tt.auth {
					t.Errorf("%s %q (WWW-Authenticate %q), want %d %q (%q)", resp.Status, r.Error, resp.Header.Get("WWW-Authenticate"), tt.code, tt.err, tt.auth)
				}
				if tt.code == 200 {
					want++
				}
				if n := withTokens.replicas(t, "web", 3); n != want {
					t.Errorf("count in force %d, want %d", n, want)
				}
			})
		}
	}
	// Health and metrics need no token.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(withTokens.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s without a token: %s", p, resp.Status)
		}
	}
}

// cooldownStep is one request of a cooldown test and its expected answer.
type cooldownStep struct {
	dir  string
	code int
	// retry is the Retry-After of a 429, in seconds: the answer must lie
	// within (retry-60, retry].
	retry int
	err   string // how the refusal starts
}

func TestScaleAPICooldowns(t *testing.T) {
	tests := []struct {
		name    string
		service string
		scaling []string
		steps   []cooldownStep
	}{
		{
			name:    "separate up and down cooldowns",
			service: "cool",
			scaling: []string{"cooldown: 1h", "downCooldown: 2h"},
			steps: []cooldownStep{
				{"up", 200, 0, ""},
				{"up", 429, 3600, "service cool: scale-up cooldown (1h0m0s)"},
				{"down", 200, 0, ""}, // the up cooldown does not hold a scale-down
				{"down", 429, 7200, "service cool: scale-down cooldown (2h0m0s)"},
				{"up", 429, 3600, "service cool: scale-up cooldown (1h0m0s)"},
			},
		},
		{
			name:    "scale-down stabilization after a scale-up",
			service: "stable",
			scaling: []string{"downStabilization: 30m"},
			steps: []cooldownStep{
				{"down", 200, 0, ""}, // no scale-up yet: nothing to stabilize
				{"up", 200, 0, ""},
				{"up", 200, 0, ""}, // no cooldown
				{"down", 429, 1800, "service stable: scale-down stabilization (30m0s)"},
			},
		},
	}
	l := newAPILab(t, nil, tokenFile(t, testToken))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l.putService(t, tt.service, scaledServiceDoc(tt.service, 5, 1, 10, tt.scaling...))
			for i, s := range tt.steps {
				a := post(t, l.srv.URL+"/v1/services/"+tt.service+"/scale", testToken, `{"direction":"`+s.dir+`"}`)
				if a.code != s.code {
					t.Fatalf("step %d (%s): %s, want %d", i, s.dir, a, s.code)
				}
				if s.code != 429 {
					continue
				}
				ra, err := strconv.Atoi(a.header.Get("Retry-After"))
				if err != nil || ra > s.retry || ra <= s.retry-60 || a.reply.RetryAfterSeconds != ra {
					t.Errorf("step %d (%s): Retry-After %q, retryAfterSeconds %d; want about %d", i, s.dir, a.header.Get("Retry-After"), a.reply.RetryAfterSeconds, s.retry)
				}
				if !strings.HasPrefix(a.reply.Error, s.err) {
					t.Errorf("step %d (%s): error %q, want it to start with %q", i, s.dir, a.reply.Error, s.err)
				}
			}
		})
	}
}

// TestScaleAPIConcurrent fires 50 requests at once through the API and
// checks that none is lost: the count in KV is exactly what the accepted
// requests add up to, and every refusal is accounted for.
func TestScaleAPIConcurrent(t *testing.T) {
	tests := []struct {
		name          string
		start         int
		min, max      int
		ups, downs    int
		wantFinal     int // -1: not fixed by the arithmetic alone
		wantRefusedUp int // -1: not fixed
	}{
		// Wide bounds: nothing is refused, the sum decides.
		{name: "within bounds", start: 100, min: 0, max: 1000, ups: 30, downs: 20, wantFinal: 110, wantRefusedUp: 0},
		// Everyone pushes up from 5 to a maximum of 10: exactly five win.
		{name: "all up into the maximum", start: 5, min: 0, max: 10, ups: 50, wantFinal: 10, wantRefusedUp: 45},
		// Both bounds in reach: the order decides the end count, the
		// books must balance whatever it is.
		{name: "up and down against both bounds", start: 5, min: 3, max: 8, ups: 35, downs: 15, wantFinal: -1, wantRefusedUp: -1},
	}
	l := newAPILab(t, nil, tokenFile(t, testToken))
	var totalRefused, totalScaled int
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("conc%d", i)
			l.putService(t, name, scaledServiceDoc(name, tt.start, tt.min, tt.max))
			dirs := make([]string, 0, tt.ups+tt.downs)
			for range tt.ups {
				dirs = append(dirs, "up")
			}
			for range tt.downs {
				dirs = append(dirs, "down")
			}
			rand.Shuffle(len(dirs), func(i, j int) { dirs[i], dirs[j] = dirs[j], dirs[i] })

			answers := make([]answer, len(dirs))
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, dir := range dirs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					answers[i] = post(t, l.srv.URL+"/v1/services/"+name+"/scale", testToken, `{"direction":"`+dir+`"}`)
				}()
			}
			close(start)
			wg.Wait()

			var okUp, okDown, refusedUp, refusedDown int
			for i, a := range answers {
				switch {
				case a.code == 200 && dirs[i] == "up" && a.reply.Replicas == a.reply.Previous+1:
					okUp++
				case a.code == 200 && dirs[i] == "down" && a.reply.Replicas == a.reply.Previous-1:
					okDown++
				case a.code == 409 && dirs[i] == "up" && a.reply.Limit == "max" && *a.reply.Bound == tt.max:
					refusedUp++
				case a.code == 409 && dirs[i] == "down" && a.reply.Limit == "min" && *a.reply.Bound == tt.min:
					refusedDown++
				default:
					t.Errorf("request %d (%s): unexpected answer %s", i, dirs[i], a)
				}
			}
			si, found := l.intent(t, name)
			if !found {
				t.Fatal("no intent in KV")
			}
			if si.Replicas != tt.start+okUp-okDown {
				t.Errorf("count in KV %d, but %d + %d accepted ups - %d accepted downs = %d: an update was lost",
					si.Replicas, tt.start, okUp, okDown, tt.start+okUp-okDown)
			}
			if si.Replicas < tt.min || si.Replicas > tt.max {
				t.Errorf("count in KV %d is outside %d..%d", si.Replicas, tt.min, tt.max)
			}
			if tt.wantFinal >= 0 && si.Replicas != tt.wantFinal {
				t.Errorf("count in KV %d, want %d", si.Replicas, tt.wantFinal)
			}
			if tt.wantRefusedUp >= 0 && refusedUp != tt.wantRefusedUp {
				t.Errorf("%d ups refused, want %d", refusedUp, tt.wantRefusedUp)
			}
			if okUp+okDown+refusedUp+refusedDown != len(dirs) {
				t.Errorf("%d answers accounted for, want %d", okUp+okDown+refusedUp+refusedDown, len(dirs))
			}
			t.Logf("%d up, %d down accepted; %d up, %d down refused; final %d", okUp, okDown, refusedUp, refusedDown, si.Replicas)
			totalRefused += refusedUp + refusedDown
			totalScaled += okUp + okDown
		})
	}
	// The metrics count the same refusals the clients saw.
	m := l.d.http.metrics
	refused := testutil.ToFloat64(m.scaleRequests.WithLabelValues("api", scaleResultRefused))
	scaled := testutil.ToFloat64(m.scaleRequests.WithLabelValues("api", scaleResultScaled))
	if int(refused) != totalRefused || int(scaled) != totalScaled {
		t.Errorf("metrics count %v scaled and %v refused; the clients saw %d and %d", scaled, refused, totalScaled, totalRefused)
	}
}

func TestScaleAPIOrbiterRoute(t *testing.T) {
	l := newAPILab(t, nil, tokenFile(t, testToken))
	l.putService(t, "web", scaledServiceDoc("web", 3, 1, 10))
	tests := []struct {
		name, path string
		code       int
		replicas   int // in force afterwards
		err        string
	}{
		{"up", "/v1/orbiter/handle/myscaler/web/up", 200, 4, ""},
		{"up again", "/v1/orbiter/handle/myscaler/web/up", 200, 5, ""},
		{"down", "/v1/orbiter/handle/other/web/down", 200, 4, ""},
		{"unknown direction", "/v1/orbiter/handle/myscaler/web/sideways", 400, 4, `direction: must be "up" or "down", not "sideways"`},
		{"unknown service", "/v1/orbiter/handle/myscaler/nosuch/up", 404, 4, `service "nosuch" not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := post(t, l.srv.URL+tt.path, testToken, "")
			if a.code != tt.code || a.reply.Error != tt.err {
				t.Fatalf("answer %s, want %d %q", a, tt.code, tt.err)
			}
			if tt.code == 200 && a.reply.Replicas != tt.replicas {
				t.Errorf("answer %s, want replicas %d", a, tt.replicas)
			}
			if n := l.replicas(t, "web", 3); n != tt.replicas {
				t.Errorf("count in force %d, want %d", n, tt.replicas)
			}
		})
	}
	si, _ := l.intent(t, "web")
	if si.UpdatedBy != "orbiter" || si.Reason != "down from 5 to 4 (orbiter autoscaler other)" {
		t.Errorf("intent %+v does not record the Orbiter request", si)
	}
}

// alertmanagerBody is an Alertmanager (v0.27) webhook payload around alerts.
func alertmanagerBody(alerts ...string) string {
	return `{"receiver":"swarmvlan","status":"firing","alerts":[` + strings.Join(alerts, ",") + `],
	"groupLabels":{"alertname":"Load"},"commonLabels":{},"commonAnnotations":{},
	"externalURL":"http://alertmanager:9093","version":"4","groupKey":"{}:{alertname=\"Load\"}","truncatedAlerts":0}`
}

// alert is one alert of a payload; labels are name, value pairs.
func alert(status, fingerprint string, labels ...string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		m[labels[i]] = labels[i+1]
	}
	lb, _ := json.Marshal(m)
	ends := "0001-01-01T00:00:00Z"
	if status == "resolved" {
		ends = "2025-03-01T12:05:00Z"
	}
	return fmt.Sprintf(`{"status":%q,"labels":%s,"annotations":{"summary":"load"},"startsAt":"2025-03-01T12:00:00Z","endsAt":%q,"generatorURL":"http://prometheus:9090/graph","fingerprint":%q}`,
		status, lb, ends, fingerprint)
}

func intp(n int) *int { return &n }

func TestScaleAPIAlertmanager(t *testing.T) {
	agent := lab.StartConsul(t)
	l := newAPILab(t, agent, tokenFile(t, testToken))
	l.putService(t, "web", scaledServiceDoc("web", 3, 1, 10))
	l.putService(t, "api", scaledServiceDoc("api", 4, 1, 10))

	t.Run("two firing and one resolved", func(t *testing.T) {
		body := alertmanagerBody(
			alert("firing", "f1", "alertname", "HighLoad", "swarmvlan_service", "web", "swarmvlan_direction", "up"),
			alert("firing", "f2", "alertname", "Idle", "swarmvlan_service", "api", "swarmvlan_direction", "down"),
			alert("resolved", "f3", "alertname", "HighLoad", "swarmvlan_service", "web", "swarmvlan_direction", "up"),
		)
		a := post(t, l.srv.URL+"/v1/alertmanager", testToken, body)
		var got struct {
			Receiver string        `json:"receiver"`
			Results  []alertResult `json:"results"`
		}
		if err := json.Unmarshal(a.body, &got); a.code != 200 || err != nil {
			t.Fatalf("answer %s (%v)", a, err)
		}
		want := []alertResult{
			{Alert: "HighLoad", Fingerprint: "f1", Status: "firing", Service: "web", Direction: "up", Result: "scaled", Code: 200, Replicas: intp(4), Previous: intp(3)},
			{Alert: "Idle", Fingerprint: "f2", Status: "firing", Service: "api", Direction: "down", Result: "scaled", Code: 200, Replicas: intp(3), Previous: intp(4)},
			{Alert: "HighLoad", Fingerprint: "f3", Status: "resolved", Service: "web", Direction: "up", Result: "ignored", Message: `alerts[2].status is "resolved": only firing alerts scale`},
		}
		if got.Receiver != "swarmvlan" || !equalJSON(got.Results, want) {
			t.Errorf("results\n got %s\nwant %s", mustJSON(got.Results), mustJSON(want))
		}
		web, _ := l.intent(t, "web")
		apiSvc, _ := l.intent(t, "api")
		if web.Replicas != 4 || web.UpdatedBy != "alertmanager" || web.Reason != "up from 3 to 4 (alert HighLoad)" || apiSvc.Replicas != 3 {
			t.Errorf("intents web %+v, api %+v", web, apiSvc)
		}
	})

	t.Run("configured labels and alerts that cannot scale", func(t *testing.T) {
		l2 := newAPILab(t, agent, tokenFile(t, testToken), "--alert-service-label=service", "--alert-direction-label=scale")
		body := alertmanagerBody(
			alert("firing", "g1", "alertname", "NoTarget", "swarmvlan_service", "web", "scale", "up"),
			alert("firing", "g2", "alertname", "Odd", "service", "web", "scale", "sideways"),
			alert("firing", "g3", "alertname", "Gone", "service", "nosuch", "scale", "up"),
			alert("firing", "g4", "alertname", "Flat", "service", "web", "scale", "down"),
			alert("firing", "g5", "alertname", "Aimless", "service", "web"),
		)
		a := post(t, l2.srv.URL+"/v1/alertmanager", testToken, body)
		var got struct{ Results []alertResult }
		if err := json.Unmarshal(a.body, &got); a.code != 200 || err != nil {
			t.Fatalf("answer %s (%v)", a, err)
		}
		want := []alertResult{
			{Alert: "NoTarget", Fingerprint: "g1", Status: "firing", Direction: "up", Result: "ignored", Message: "alerts[0].labels.service: missing, so no service to scale"},
			{Alert: "Odd", Fingerprint: "g2", Status: "firing", Service: "web", Direction: "sideways", Result: "invalid", Code: 400, Message: `alerts[1].labels.scale: must be "up" or "down", not "sideways"`},
			{Alert: "Gone", Fingerprint: "g3", Status: "firing", Service: "nosuch", Direction: "up", Result: "not_found", Code: 404, Message: `service "nosuch" not found`},
			{Alert: "Flat", Fingerprint: "g4", Status: "firing", Service: "web", Direction: "down", Result: "scaled", Code: 200, Replicas: intp(3), Previous: intp(4)},
			{Alert: "Aimless", Fingerprint: "g5", Status: "firing", Service: "web", Result: "invalid", Code: 400, Message: `alerts[4].labels.scale: missing (want "up" or "down")`},
		}
		if !equalJSON(got.Results, want) {
			t.Errorf("results\n got %s\nwant %s", mustJSON(got.Results), mustJSON(want))
		}
	})

	t.Run("bodies that are no webhook payload", func(t *testing.T) {
		for _, tt := range []struct{ body, err string }{
			{`{"receiver":"x"}`, "alerts: required (an Alertmanager webhook payload)"},
			{`{"alerts":{}}`, "alerts: must be an array, got object"},
			{`alerts`, "body: invalid JSON at byte 1: invalid character 'a' looking for beginning of value"},
		} {
			a := post(t, l.srv.URL+"/v1/alertmanager", testToken, tt.body)
			if a.code != 400 || a.reply.Error != tt.err {
				t.Errorf("body %s: answer %s, want 400 %q", tt.body, a, tt.err)
			}
		}
	})
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func equalJSON(a, b any) bool { return mustJSON(a) == mustJSON(b) }

func TestScaleCommand(t *testing.T) {
	agent := lab.StartConsul(t)
	kv := agent.Client(t).KV()
	if _, err := kv.Put(&api.KVPair{Key: "swarmvlan/spec/services/web", Value: []byte(scaledServiceDoc("web", 3, 2, 5, "cooldown: 1h"))}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(&api.KVPair{Key: "swarmvlan/spec/services/broken", Value: []byte("kind: Service\n")}, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args           []string
		code           int
		stdout, stderr string
		replicas       int // in force afterwards
	}{
		{[]string{"web", "up", "--reason", "release day"}, 0, "web: 3 -> 4 replicas (min 2, max 5)\n", "", 4},
		{[]string{"web", "up"}, 1, "", "reconciler scale: refused: service web: scale-up cooldown (1h0m0s)", 4},
		{[]string{"web", "down"}, 0, "web: 4 -> 3 replicas (min 2, max 5)\n", "", 3},
		{[]string{"web", "3"}, 0, "web: unchanged at 3 replicas (min 2, max 5)\n", "", 3},
		{[]string{"web", "9"}, 1, "", "reconciler scale: refused: service web: 9 replicas is above the maximum 5\n", 3},
		{[]string{"web", "sideways"}, 1, "", `reconciler scale: "sideways": want up, down or a replica count` + "\n", 3},
		{[]string{"web"}, 1, "", "reconciler scale: usage: reconciler scale SERVICE up|down|N\n", 3},
		{[]string{"nosuch", "up"}, 1, "", `reconciler scale: service "nosuch": not found` + "\n", 3},
		{[]string{"broken", "up"}, 1, "", `reconciler scale: service "broken": the document in KV is invalid:`, 3},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := run(t, agent.Addr, "", append([]string{"scale"}, tt.args...)...)
			if code != tt.code || out != tt.stdout || !strings.HasPrefix(errOut, tt.stderr) || (tt.stderr == "" && errOut != "") {
				t.Errorf("exit %d\nstdout %q\nstderr %q\nwant exit %d, stdout %q, stderr starting %q", code, out, errOut, tt.code, tt.stdout, tt.stderr)
			}
			var si state.ScaleIntent
			p, _, _ := kv.Get("swarmvlan/state/scale/web", nil)
			if p != nil {
				json.Unmarshal(p.Value, &si)
			}
			if si.Replicas != tt.replicas {
				t.Errorf("intent in KV %+v, want replicas %d", si, tt.replicas)
			}
		})
	}
	p, _, _ := kv.Get("swarmvlan/state/scale/web", nil)
	if !strings.Contains(string(p.Value), `"updatedBy":"cli"`) {
		t.Errorf("intent does not name the CLI: %s", p.Value)
	}
}
