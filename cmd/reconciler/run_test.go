package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"swarmvlan/lab"
)

// TestRunSettingsFromEnvironment runs the daemon with its settings in
// SWARMVLAN_* variables only, as a stack file gives them: it serves on the
// address and with the role and token they name. A flag on the command line
// wins over its variable, a bad value is refused naming the variable, and
// run -h lists every variable.
func TestRunSettingsFromEnvironment(t *testing.T) {
	agent := lab.StartConsul(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv("SWARMVLAN_ROLE", "manager")
	t.Setenv("SWARMVLAN_LISTEN", "127.0.0.1:1") // overridden by --listen below
	t.Setenv("SWARMVLAN_CONSUL_ADDR", agent.Addr)
	t.Setenv("SWARMVLAN_DOCKER_HOST", noDocker)
	t.Setenv("SWARMVLAN_NODE_NAME", "env-node")
	t.Setenv("SWARMVLAN_LOG_FORMAT", "json")
	t.Setenv(tokensEnv, testToken)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runMain(ctx, []string{"run", "--listen", addr}, strings.NewReader(""), &bytes.Buffer{}, &logs)
	}()
	waitFor(t, 30*time.Second, "the daemon to lead and serve on "+addr, func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if code, body := orbiterCall(t, "GET", "http://"+addr+"/v1/orbiter/health", testToken, ""); code != 200 {
		t.Errorf("health with the token from %s: %d %s", tokensEnv, code, body)
	}
	waitFor(t, 30*time.Second, "the leader lock to name env-node", func() bool {
		return strings.Contains(logs.String(), `"msg":"leading"`)
	})
	kv, _, err := agent.Client(t).KV().Get("swarmvlan/leader", nil)
	if err != nil || kv == nil || string(kv.Value) != "env-node" {
		t.Errorf("leader lock %v (%v), want the node name from SWARMVLAN_NODE_NAME", kv, err)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("run exited %d on cancel:\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}

	t.Setenv("SWARMVLAN_SESSION_TTL", "ten seconds")
	code, _, errOut := run(t, "", "", "run")
	if code != 1 || !strings.Contains(errOut, `$SWARMVLAN_SESSION_TTL (--session-ttl): "ten seconds"`) {
		t.Errorf("bad variable: exit %d, %q", code, errOut)
	}

	code, _, errOut = run(t, "", "", "run", "-h")
	for _, f := range []string{"role", "listen", "session-ttl", "token-file", "consul-addr", "node-down-grace"} {
		if want := fmt.Sprintf("[$%s]", flagEnv(f)); code != 0 || !strings.Contains(errOut, want) {
			t.Errorf("run -h does not name %s:\n%s", want, errOut)
		}
	}
}
