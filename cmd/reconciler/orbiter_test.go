package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"swarmvlan/reconcile"
	"swarmvlan/spec"
)

// orbiterCall sends a request as Orbiter's README writes it with curl,
// plus the bearer token: `curl -d BODY URL` is a POST with a form content
// type, `curl -X POST URL` a POST without a body, `curl -X GET URL` a GET.
func orbiterCall(t testing.TB, method, url, token, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", "curl/7.88.1")
	req.Header.Set("Accept", "*/*")
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestOrbiterDocumentedCalls makes each call of Orbiter's README against
// the daemon, with the README's own autoscaler and service names, and
// checks the answer's shape (Orbiter's) and what the call did to the count
// in force.
func TestOrbiterDocumentedCalls(t *testing.T) {
	l := newAPILab(t, nil, tokenFile(t, testToken))
	l.putService(t, "docker", scaledServiceDoc("docker", 3, 1, 5))
	l.putService(t, "php", scaledServiceDoc("php", 2, 2, 8, "step: 2"))
	l.putService(t, "plain", serviceDoc("plain", 2))
	base := l.srv.URL

	// curl -v -d '{"direction": true}' http://localhost:8000/v1/orbiter/handle/infra_scale/docker
	code, body := orbiterCall(t, "POST", base+"/v1/orbiter/handle/infra_scale/docker", testToken, `{"direction": true}`)
	if code != 200 || l.replicas(t, "docker", 3) != 4 {
		t.Fatalf(`direction true: %d %s; count in force %d, want 200 and 4`, code, body, l.replicas(t, "docker", 3))
	}
	// The same call with false scales down; Orbiter's service_id is accepted.
	code, body = orbiterCall(t, "POST", base+"/v1/orbiter/handle/infra_scale/docker", testToken, `{"service_id": "docker", "direction": false}`)
	if code != 200 || l.replicas(t, "docker", 3) != 3 {
		t.Fatalf(`direction false: %d %s; count in force %d, want 200 and 3`, code, body, l.replicas(t, "docker", 3))
	}
	// curl -v -X POST http://localhost:8000/v1/orbiter/handle/infra_scale/docker/up
	code, body = orbiterCall(t, "POST", base+"/v1/orbiter/handle/infra_scale/docker/up", testToken, "")
	if code != 200 || l.replicas(t, "docker", 3) != 4 {
		t.Fatalf(`/up: %d %s; count in force %d, want 200 and 4`, code, body, l.replicas(t, "docker", 3))
	}
	si, _ := l.intent(t, "docker")
	if si.UpdatedBy != "orbiter" || si.Reason != "up from 3 to 4 (orbiter autoscaler infra_scale)" {
		t.Errorf("intent %+v does not record the Orbiter request", si)
	}

	// curl -v -X GET http://localhost:8000/v1/orbiter/autoscaler
	code, body = orbiterCall(t, "GET", base+"/v1/orbiter/autoscaler", testToken, "")
	var list struct {
		Data []orbiterAutoscalerEntry `json:"data"`
	}
	if err := json.Unmarshal(body, &list); code != 200 || err != nil {
		t.Fatalf("autoscaler list: %d %s (%v)", code, body, err)
	}
	want := []orbiterAutoscalerEntry{
		{Name: "autoswarm/docker", Service: "docker", Replicas: 4, Min: 1, Max: 5, Step: 1},
		{Name: "autoswarm/php", Service: "php", Replicas: 2, Min: 2, Max: 8, Step: 2},
	}
	if len(list.Data) != len(want) || list.Data[0] != want[0] || list.Data[1] != want[1] {
		t.Errorf("autoscaler list %+v, want %+v (the service without bounds left out)", list.Data, want)
	}
	// Orbiter's own shape: {"data": [{"name": ...}]}.
	var raw map[string][]map[string]any
	if err := json.Unmarshal(body, &raw); err != nil || raw["data"][0]["name"] != "autoswarm/docker" {
		t.Errorf("autoscaler list is not Orbiter's {\"data\": [{\"name\": ...}]}: %s", body)
	}
	// A listed name works as the path of a scale call.
	if code, body = orbiterCall(t, "POST", base+"/v1/orbiter/handle/autoswarm/php", testToken, `{"direction": true}`); code != 200 || l.replicas(t, "php", 2) != 4 {
		t.Errorf("scale by a listed name: %d %s; php at %d, want 4", code, body, l.replicas(t, "php", 2))
	}

	// curl -v -X GET http://localhost:8000/v1/orbiter/health
	code, body = orbiterCall(t, "GET", base+"/v1/orbiter/health", testToken, "")
	var health struct {
		Status *bool             `json:"status"`
		Info   map[string]string `json:"info"`
	}
	if err := json.Unmarshal(body, &health); code != 200 || err != nil || health.Status == nil || !*health.Status || health.Info == nil || len(health.Info) != 0 {
		t.Errorf("health: %d %s, want 200 {\"status\": true, \"info\": {}}", code, body)
	}

	// Each call without the token is refused and changes nothing.
	before := l.replicas(t, "docker", 3)
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/orbiter/handle/infra_scale/docker", `{"direction": true}`},
		{"POST", "/v1/orbiter/handle/infra_scale/docker/up", ""},
		{"GET", "/v1/orbiter/autoscaler", ""},
		{"GET", "/v1/orbiter/health", ""},
		{"GET", "/v1/services/docker", ""},
	} {
		if code, body := orbiterCall(t, c.method, base+c.path, "", c.body); code != 401 {
			t.Errorf("%s %s without a token: %d %s, want 401", c.method, c.path, code, body)
		}
	}
	if n := l.replicas(t, "docker", 3); n != before {
		t.Errorf("a refused call moved the count from %d to %d", before, n)
	}

	// Bodies Orbiter would have taken for a scale-down are refused, naming
	// the field.
	for _, c := range []struct{ body, err string }{
		{`{}`, "direction: required (true scales up, false down)"},
		{`{"direction": "up"}`, "direction: must be true or false, got string"},
		{``, "body: empty, want a JSON object"},
	} {
		code, body := orbiterCall(t, "POST", base+"/v1/orbiter/handle/infra_scale/docker", testToken, c.body)
		var e errorReply
		_ = json.Unmarshal(body, &e)
		if code != 400 || e.Error != c.err {
			t.Errorf("body %q: %d %s, want 400 %q", c.body, code, body, c.err)
		}
	}
	if code, body := orbiterCall(t, "POST", base+"/v1/orbiter/handle/infra_scale/nosuch", testToken, `{"direction": true}`); code != 404 {
		t.Errorf("unknown service: %d %s, want 404", code, body)
	}
}

// TestOrbiterHealthBeforeSync: until the daemon has read the documents it
// cannot decide a request, and says so as Orbiter's health does.
func TestOrbiterHealthBeforeSync(t *testing.T) {
	a := &scaleAPI{view: reconcile.NewView("swarmvlan/spec/"), tokens: tokenDigests([]string{testToken})}
	srv := httptest.NewServer(a.handler())
	defer srv.Close()
	code, body := orbiterCall(t, "GET", srv.URL+"/v1/orbiter/health", testToken, "")
	var health struct {
		Status bool              `json:"status"`
		Info   map[string]string `json:"info"`
	}
	if err := json.Unmarshal(body, &health); code != 500 || err != nil || health.Status || health.Info["consul"] == "" {
		t.Errorf("health before sync: %d %s, want 500 with status false and the reason under info.consul", code, body)
	}
}

// TestServiceReadRoute: GET /v1/services/<name> reports the count in
// force, the bounds, the cooldowns left and the last decision with its
// source, as a script reads them before it scales.
func TestServiceReadRoute(t *testing.T) {
	l := newAPILab(t, nil, tokenFile(t, testToken))
	l.putService(t, "web", scaledServiceDoc("web", 3, 2, 6, "cooldown: 1h", "downStabilization: 10m"))
	l.putService(t, "plain", serviceDoc("plain", 2))
	get := func(name string) (int, serviceScaleReply, []byte) {
		t.Helper()
		code, body := orbiterCall(t, "GET", l.srv.URL+"/v1/services/"+name, testToken, "")
		var r serviceScaleReply
		if code == 200 {
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatalf("GET %s: %v\n%s", name, err, body)
			}
		}
		return code, r, body
	}

	code, r, body := get("web")
	if code != 200 || r.Replicas != 3 || r.Mode != spec.ModeReplicated || r.SpecReplicas == nil || *r.SpecReplicas != 3 ||
		r.Scaling == nil || r.Scaling.Min != 2 || r.Scaling.Max != 6 || r.LastDecision != nil ||
		r.CooldownLeftSeconds == nil || *r.CooldownLeftSeconds != (cooldownsLeft{}) {
		t.Fatalf("before any scaling: %d %s", code, body)
	}

	if a := post(t, l.srv.URL+"/v1/orbiter/handle/ops/web/up", testToken, ""); a.code != 200 {
		t.Fatalf("scale up: %s", a)
	}
	code, r, body = get("web")
	ld := r.LastDecision
	if code != 200 || r.Replicas != 4 || ld == nil || ld.Source != "orbiter" || ld.Replicas != 4 ||
		ld.Reason != "up from 3 to 4 (orbiter autoscaler ops)" || ld.LastUp == nil || ld.LastDown != nil {
		t.Fatalf("after a scale-up: %d %s", code, body)
	}
	// An hour's cooldown up; the ten-minute stabilization holds a
	// scale-down back.
	c := r.CooldownLeftSeconds
	if c == nil || c.Up < 3590 || c.Up > 3600 || c.Down < 590 || c.Down > 600 {
		t.Errorf("cooldowns left %+v, want about 3600 up and 600 down", c)
	}

	code, r, body = get("plain")
	if code != 200 || r.Replicas != 2 || r.Scaling != nil || r.CooldownLeftSeconds != nil {
		t.Errorf("a service without bounds: %d %s", code, body)
	}
	if code, _, body := get("nosuch"); code != 404 || !strings.Contains(string(body), `service \"nosuch\" not found`) {
		t.Errorf("unknown service: %d %s", code, body)
	}
}
