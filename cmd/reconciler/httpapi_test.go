package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"swarmvlan/lab"
	"swarmvlan/reconcile/engine"
)

var servingRe = regexp.MustCompile(`msg="serving HTTP" addr=(\S+)`)

// noDocker is a Docker address where no engine listens: daemons in tests
// that are about the API, not Docker, must not create anything in the
// machine's engine. Their leader's reconciles fail and retry, harmlessly.
const noDocker = "unix:///nonexistent/docker.sock"

// startRunHTTP starts `reconciler run --role manager --listen 127.0.0.1:0`
// and returns the process and the address it serves on. Unless extra says
// otherwise, the daemon has no Docker Engine (noDocker).
func startRunHTTP(t testing.TB, consulAddr, name string, extra ...string) (*proc, string) {
	t.Helper()
	args := []string{"--listen", "127.0.0.1:0"}
	if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--docker-host") }) {
		args = append(args, "--docker-host", noDocker)
	}
	p := startRun(t, consulAddr, name, append(args, extra...)...)
	var addr string
	waitFor(t, 20*time.Second, name+" to serve HTTP", func() bool {
		if m := servingRe.FindStringSubmatch(p.Logs()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return p, addr
}

func get(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape reads /metrics into metric families.
func scrape(t testing.TB, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// sample finds the metric of a family whose labels include labels (name,
// value pairs); nil if there is none.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		return m
	}
	return nil
}

// TestDaemonPprof: --pprof serves Go's profiles on --listen.
func TestDaemonPprof(t *testing.T) {
	agent := lab.StartConsul(t)
	_, addr := startRunHTTP(t, agent.Addr, "m1", "--pprof")
	base := "http://" + addr
	if code, body := get(t, http.DefaultClient, base+"/debug/pprof/heap?debug=1"); code != 200 || !strings.Contains(body, "heap profile") {
		t.Errorf("/debug/pprof/heap: %d %.200q", code, body)
	}
	if code, body := get(t, http.DefaultClient, base+"/debug/pprof/profile?seconds=1"); code != 200 || len(body) == 0 {
		t.Errorf("/debug/pprof/profile: %d, %d bytes", code, len(body))
	}
}

func TestDaemonHealthReadinessAndMetrics(t *testing.T) {
	agent := lab.StartConsul(t)
	dir := t.TempDir()
	writeFile(t, dir, "vlan.yaml", vlanDoc)
	writeFile(t, dir, "svc.yaml", scaledServiceDoc("web", 3, 1, 10))
	if code, out, errOut := run(t, agent.Addr, "", "apply", "-f", dir); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	p, addr := startRunHTTP(t, agent.Addr, "m1", tokenFile(t, testToken))
	base := "http://" + addr

	if code, body := get(t, http.DefaultClient, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, http.DefaultClient, base+"/debug/pprof/heap?debug=1"); code == 200 && strings.Contains(body, "heap profile") {
		t.Error("/debug/pprof/ served without --pprof")
	}
	waitFor(t, 30*time.Second, "/readyz to report a ready leader", func() bool {
		code, body := get(t, http.DefaultClient, base+"/readyz")
		return code == 200 && body == "ok (leader: true)\n"
	})
	if a := post(t, base+"/v1/services/web/scale", testToken, `{"direction":"up"}`); a.code != 200 || a.reply.Replicas != 4 {
		t.Fatalf("scale up: %s", a)
	}
	// The leader reconciles every document at start; wait until both kinds
	// have been observed.
	var fams map[string]*dto.MetricFamily
	waitFor(t, 20*time.Second, "reconcile durations of both kinds", func() bool {
		fams = scrape(t, base+"/metrics")
		v := sample(fams, "swarmvlan_reconcile_duration_seconds", "kind", "VLAN")
		s := sample(fams, "swarmvlan_reconcile_duration_seconds", "kind", "Service")
		return v != nil && s != nil && v.GetHistogram().GetSampleCount() > 0 && s.GetHistogram().GetSampleCount() > 0
	})
	checks := []struct {
		name   string
		labels []string
		ok     func(*dto.Metric) bool
		want   string
	}{
		{"swarmvlan_leader", nil, func(m *dto.Metric) bool { return m.GetGauge().GetValue() == 1 }, "1"},
		{"swarmvlan_reconcile_errors_total", []string{"kind", "Host"}, func(m *dto.Metric) bool { return m.GetCounter().GetValue() == 0 }, "0 (no Host documents)"},
		// The daemon has no Docker Engine, so the VLAN cannot converge.
		{"swarmvlan_reconcile_errors_total", []string{"kind", "VLAN"}, func(m *dto.Metric) bool { return m.GetCounter().GetValue() >= 1 }, ">= 1 (no engine)"},
		{"swarmvlan_docker_requests_total", []string{"method", "ServiceCreate"}, func(m *dto.Metric) bool { return m.GetCounter().GetValue() == 0 }, "0"},
		{"swarmvlan_queue_depth", []string{"controller", "leader"}, func(m *dto.Metric) bool { return m.GetGauge().GetValue() >= 0 }, "present"},
		{"swarmvlan_watch_wakeups_total", []string{"prefix", "swarmvlan/spec/"}, func(m *dto.Metric) bool { return m.GetCounter().GetValue() >= 1 }, ">= 1"},
		{"swarmvlan_consul_requests_total", nil, func(m *dto.Metric) bool { return m.GetCounter().GetValue() >= 5 }, ">= 5"},
		{"swarmvlan_scale_requests_total", []string{"source", "api", "result", "scaled"}, func(m *dto.Metric) bool { return m.GetCounter().GetValue() == 1 }, "1"},
		{"go_goroutines", nil, func(m *dto.Metric) bool { return m.GetGauge().GetValue() > 0 }, "> 0"},
	}
	var dockerCalls float64
	for _, m := range fams["swarmvlan_docker_requests_total"].GetMetric() {
		dockerCalls += m.GetCounter().GetValue()
	}
	if dockerCalls == 0 {
		t.Error("swarmvlan_docker_requests_total counts no call, though the leader tried the engine")
	}
	for _, c := range checks {
		m := sample(fams, c.name, c.labels...)
		if m == nil || !c.ok(m) {
			t.Errorf("%s%v: %v, want %s", c.name, c.labels, m, c.want)
		}
	}
	// Unauthenticated requests are refused and counted, not logged as
	// decisions.
	if a := post(t, base+"/v1/services/web/scale", "", `{"direction":"up"}`); a.code != 401 {
		t.Errorf("no token: %s", a)
	}
	fams = scrape(t, base+"/metrics")
	if m := sample(fams, "swarmvlan_scale_requests_total", "source", "api", "result", "unauthorized"); m.GetCounter().GetValue() != 1 {
		t.Errorf("unauthorized requests: %v, want 1", m)
	}
	_ = p
}

// TestDaemonNotReadyWithoutConsul: with Consul unreachable the daemon is
// alive but not ready, and refuses to decide on an empty view.
func TestDaemonNotReadyWithoutConsul(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, addr := startRunHTTP(t, dead, "lonely", tokenFile(t, testToken))
	base := "http://" + addr
	if code, body := get(t, http.DefaultClient, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, http.DefaultClient, base+"/readyz"); code != 503 || body != "spec view not yet read from Consul\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if a := post(t, base+"/v1/services/web/scale", testToken, `{"direction":"up"}`); a.code != 503 || a.reply.Error != "spec view not yet read from Consul; retry shortly" {
		t.Errorf("scale without a view: %s", a)
	}
}

// TestScaleCooldownSurvivesDaemonRestart: the cooldown is in KV, so a
// restarted (even killed) daemon still honours it.
func TestScaleCooldownSurvivesDaemonRestart(t *testing.T) {
	agent := lab.StartConsul(t)
	dir := t.TempDir()
	writeFile(t, dir, "vlan.yaml", vlanDoc)
	writeFile(t, dir, "svc.yaml", scaledServiceDoc("web", 3, 1, 10, "cooldown: 10m"))
	if code, out, errOut := run(t, agent.Addr, "", "apply", "-f", dir); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	tokens := tokenFile(t, testToken)
	first, addr := startRunHTTP(t, agent.Addr, "first", tokens)
	waitFor(t, 20*time.Second, "readiness", func() bool { code, _ := get(t, http.DefaultClient, "http://"+addr+"/readyz"); return code == 200 })
	if a := post(t, "http://"+addr+"/v1/services/web/scale", testToken, `{"direction":"up"}`); a.code != 200 || a.reply.Replicas != 4 {
		t.Fatalf("first up: %s", a)
	}
	first.cmd.Process.Signal(syscall.SIGKILL)
	first.cmd.Wait()

	_, addr = startRunHTTP(t, agent.Addr, "second", tokens)
	waitFor(t, 20*time.Second, "readiness", func() bool { code, _ := get(t, http.DefaultClient, "http://"+addr+"/readyz"); return code == 200 })
	a := post(t, "http://"+addr+"/v1/services/web/scale", testToken, `{"direction":"up"}`)
	ra, _ := strconv.Atoi(a.header.Get("Retry-After"))
	if a.code != 429 || ra <= 540 || ra > 600 || !strings.HasPrefix(a.reply.Error, "service web: scale-up cooldown (10m0s)") {
		t.Fatalf("up after the restart: %s (Retry-After %q), want 429 with about 600s to wait", a, a.header.Get("Retry-After"))
	}
	// The down cooldown is separate and never started.
	if a := post(t, "http://"+addr+"/v1/services/web/scale", testToken, `{"direction":"down"}`); a.code != 200 || a.reply.Replicas != 3 {
		t.Fatalf("down after the restart: %s", a)
	}
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool trusting the certificate.
func selfSigned(t testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "swarmvlan test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestDaemonServesTLS(t *testing.T) {
	agent := lab.StartConsul(t)
	dir := t.TempDir()
	writeFile(t, dir, "svc.yaml", scaledServiceDoc("web", 3, 1, 10))
	if code, out, errOut := run(t, agent.Addr, "", "apply", "-f", dir); code != 0 {
		t.Fatalf("apply: %s%s", out, errOut)
	}
	cert, key, pool := selfSigned(t)
	_, addr := startRunHTTP(t, agent.Addr, "tls", tokenFile(t, testToken), "--tls-cert", cert, "--tls-key", key)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(c.CloseIdleConnections)
	waitFor(t, 20*time.Second, "readiness over TLS", func() bool {
		code, _ := get(t, c, "https://"+addr+"/readyz")
		return code == 200
	})
	req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/v1/services/web/scale", strings.NewReader(`{"replicas":7}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scale over TLS: %s", resp.Status)
	}
	// Plain HTTP on the TLS port gets no answer worth having.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("the TLS listener answered plain HTTP")
		}
	}
}

func TestRunRefusesBadAPIFlags(t *testing.T) {
	cert, _, _ := selfSigned(t)
	tests := []struct {
		args []string
		err  string
	}{
		{[]string{"--tls-cert", cert}, "--tls-cert and --tls-key: give both or neither"},
		{[]string{"--tls-cert", cert, "--tls-key", cert}, "--tls-cert, --tls-key: tls: "},
		{[]string{"--token-file", "/nonexistent/tokens"}, "--token-file: open /nonexistent/tokens: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out, errb strings.Builder
			// Consul is never contacted: the flags are checked first.
			code := runMain(ctx, append([]string{"run", "--role", "manager", "--consul-addr", "127.0.0.1:1"}, tt.args...), strings.NewReader(""), &out, &errb)
			if code != 1 || !strings.Contains(errb.String(), "reconciler run: "+tt.err) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, errb.String(), tt.err)
			}
		})
	}
}

// TestDockerRequestMetrics: once a Docker client is set, its calls are
// exported per method.
func TestDockerRequestMetrics(t *testing.T) {
	if _, err := os.Stat("/var/run/docker.sock"); err != nil && os.Getenv("DOCKER_HOST") == "" {
		t.Skip("no Docker Engine: /var/run/docker.sock is absent and DOCKER_HOST is unset")
	}
	d, err := engine.New("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := d.Info(ctx); err != nil {
		t.Skipf("no Docker Engine reachable: %v", err)
	}
	l := newAPILab(t, nil)
	if sample(scrape(t, l.srv.URL+"/metrics"), "swarmvlan_docker_requests_total") != nil {
		t.Fatal("docker requests exported before a client was set")
	}
	l.d.http.metrics.setDocker(d)
	if _, err := d.Info(ctx); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, l.srv.URL+"/metrics")
	if m := sample(fams, "swarmvlan_docker_requests_total", "method", "Info"); m.GetCounter().GetValue() != 2 {
		t.Errorf("Info calls: %v, want 2", m)
	}
	if m := sample(fams, "swarmvlan_docker_requests_total", "method", "ServiceUpdate"); m == nil || m.GetCounter().GetValue() != 0 {
		t.Errorf("ServiceUpdate calls: %v, want a 0 sample", m)
	}
}
