package lab

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestStartConsulDevAndKV(t *testing.T) {
	a := StartConsul(t)
	c := a.Client(t)
	if _, err := c.KV().Put(&api.KVPair{Key: "lab/x", Value: []byte("1")}, nil); err != nil {
		t.Fatalf("put: %v", err)
	}
	p, _, err := c.KV().Get("lab/x", nil)
	if err != nil || p == nil || string(p.Value) != "1" {
		t.Fatalf("get = %v, %v; want value 1", p, err)
	}
	// Sessions need the agent's node registered: readiness waited for it.
	id, _, err := c.Session().Create(&api.SessionEntry{TTL: "10s"}, nil)
	if err != nil || id == "" {
		t.Fatalf("session create = %q, %v", id, err)
	}
}

func TestTwoAgentsDoNotCollide(t *testing.T) {
	a := StartConsul(t)
	b := StartConsul(t)
	if a.Addr == b.Addr || a.Ports.Server == b.Ports.Server || a.Ports.SerfLAN == b.Ports.SerfLAN {
		t.Fatalf("agents share ports: %+v and %+v", a.Ports, b.Ports)
	}
	for _, ag := range []*ConsulAgent{a, b} {
		leader, err := ag.Client(t).Status().Leader()
		if err != nil || leader == "" {
			t.Fatalf("agent %s: leader = %q, %v", ag.Addr, leader, err)
		}
	}
}

func TestPersistentAgentKeepsKVAcrossRestart(t *testing.T) {
	a := StartConsul(t, WithPersistentData())
	c := a.Client(t)
	if _, err := c.KV().Put(&api.KVPair{Key: "lab/keep", Value: []byte("yes")}, nil); err != nil {
		t.Fatalf("put: %v", err)
	}
	port := a.Ports.HTTP
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if a.Ports.HTTP != port {
		t.Fatalf("restart moved the HTTP port from %d to %d", port, a.Ports.HTTP)
	}
	p, _, err := c.KV().Get("lab/keep", nil)
	if err != nil || p == nil || string(p.Value) != "yes" {
		t.Fatalf("after restart get = %v, %v; want value yes", p, err)
	}
}

func TestKillStopsTheAgent(t *testing.T) {
	a := StartConsul(t)
	a.Kill()
	if a.Running() {
		t.Fatal("agent still running after Kill")
	}
	hc := &http.Client{Timeout: time.Second}
	if _, err := hc.Get("http://" + a.Addr + "/v1/status/leader"); err == nil {
		t.Fatal("agent still answers after Kill")
	}
}

func TestFlakyProxy(t *testing.T) {
	a := StartConsul(t)
	p := NewFlakyProxy(t, a.Addr)
	c, err := api.NewClient(&api.Config{Address: p.Addr})
	if err != nil {
		t.Fatal(err)
	}
	leader := func() error { _, err := c.Status().Leader(); return err }

	if err := leader(); err != nil {
		t.Fatalf("through proxy: %v", err)
	}
	p.FailNext(2)
	for i := 0; i < 2; i++ {
		if err := leader(); err == nil || !strings.Contains(err.Error(), "500") {
			t.Fatalf("request %d after FailNext(2): err = %v, want a 500", i, err)
		}
	}
	if err := leader(); err != nil {
		t.Fatalf("third request after FailNext(2): %v", err)
	}

	p.Block(300 * time.Millisecond)
	if err := leader(); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("while blocked: err = %v, want a 503", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for leader() != nil {
		if time.Now().After(deadline) {
			t.Fatal("proxy still blocked after the block window")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A blocking query in flight is cut when the proxy goes down.
	deadline = time.Now().Add(5 * time.Second)
	_, meta, err := c.KV().Get("x", nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	before := p.Requests()
	go func() {
		_, _, err := c.KV().Get("x", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: time.Minute})
		errc <- err
	}()
	for p.Requests() == before {
		if time.Now().After(deadline) {
			t.Fatal("blocking query never reached the proxy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.SetDown(true)
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("blocking query survived SetDown(true)")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocking query not cut by SetDown(true)")
	}
	if err := leader(); err == nil {
		t.Fatal("request succeeded while down")
	}
	p.SetDown(false)
	if err := leader(); err != nil {
		t.Fatalf("after SetDown(false): %v", err)
	}
	if p.Failed() < 5 || p.Requests() <= p.Failed() {
		t.Fatalf("requests %d, failed %d: counters do not add up", p.Requests(), p.Failed())
	}
}

func TestConsulBinaryFromEnv(t *testing.T) {
	// ConsulBinary caches; exercise the lookup itself.
	t.Setenv(ConsulEnv, "/nonexistent/consul")
	if _, err := findConsulBinary(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("findConsulBinary with a missing $%s: err = %v, want a not-exist error", ConsulEnv, err)
	}
}
