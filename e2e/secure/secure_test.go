package secure

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
	"swarmvlan/state"
)

// TestLeastPrivilegeOverTLS runs every command and every daemon role with
// only the token of its printed policy, against a Consul with ACLs (default
// deny) that serves its API only over HTTPS with verify_incoming, every
// client configured by the standard CONSUL_* variables:
//
//  1. the operator token validates, applies, diffs, gets, plans, deletes
//     and shows status; a token without the spec write rule makes apply
//     fail naming key:write, and KV is unchanged;
//  2. `run --role manager` and `run --role host` (in a namespace of its
//     own) converge a VLAN and a registered service: chunk, config and
//     swarm networks, the service's task, its catalog registration, the
//     node's readiness;
//  3. both policies lose the read of spec/services/ while the daemons run:
//     their listings of spec/ come back with the service left out, which
//     would read as deleted; the daemons refuse them, count them in
//     swarmvlan_consul_permission_denied_total and log the permission, and
//     the service, networks, registration, chunk and node key all stay;
//  4. with the rules back, `run --role all` with a token of both policies
//     takes over and follows a `scale` by the operator and one through its
//     scale API.
func TestLeastPrivilegeOverTLS(t *testing.T) {
	docker := needSwarm(t)
	ctx := context.Background()
	if _, err := lab.BuildTestImage(ctx, ""); err != nil {
		t.Fatal(err)
	}
	info, err := docker.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node := info.Swarm.NodeID

	tag := suffix(t)
	vlan, service, trunk := "sa"+tag, "saweb"+tag, "st"+tag
	prefix := "swarmvlan-" + tag + "/"
	// Registered first, so they run last: after every daemon is stopped.
	t.Cleanup(func() { removeDockerObjects(t, docker, service, vlan) })
	trunkHere(t, trunk)
	ns := newHostNamespace(t, tag, trunk)

	certs, err := lab.NewConsulCerts(t.TempDir(), ns.hostSide, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	agent := lab.StartConsul(t, lab.WithClientAddr(ns.hostSide), lab.WithACL(lab.NewToken()), lab.WithTLS(certs))
	admin := agent.ClientWithToken(t, agent.ManagementToken())
	kv := admin.KV()

	policy := func(role string) string {
		return mustCommand(t, nil, "acl-policy", "--role", role, "--prefix", prefix)
	}
	rules := map[string]string{}
	tokens := map[string]*lab.ACLToken{}
	for _, role := range []string{"manager", "host", "operator"} {
		rules[role] = policy(role)
		tokens[role] = agent.NewACLToken(t, "swarmvlan-"+role+"-"+tag, rules[role])
	}
	both, _, err := admin.ACL().TokenCreate(&api.ACLToken{Description: "swarmvlan all " + tag, Policies: []*api.ACLTokenPolicyLink{
		{ID: tokens["manager"].PolicyID}, {ID: tokens["host"].PolicyID},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Every client is configured by the standard variables. The operator
	// names Consul with an https:// address and no CONSUL_HTTP_SSL; the
	// daemons get CONSUL_HTTP_SSL and a bare address through --consul-addr,
	// which must keep the TLS settings.
	tlsEnv := func(token string) []string {
		return []string{"CONSUL_HTTP_TOKEN=" + token, "CONSUL_CACERT=" + certs.CAFile,
			"CONSUL_CLIENT_CERT=" + certs.CertFile, "CONSUL_CLIENT_KEY=" + certs.KeyFile, "SWARMVLAN_PREFIX=" + prefix}
	}
	operator := append(tlsEnv(tokens["operator"].Secret), "CONSUL_HTTP_ADDR=https://"+agent.Addr)
	daemonEnv := func(token string) []string { return append(tlsEnv(token), "CONSUL_HTTP_SSL=true") }

	// 1. The operator's commands.
	start := time.Now()
	dir := t.TempDir()
	writeFile(t, dir, "vlan.yaml", fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: VLAN
metadata:
  name: %s
spec:
  trunk: %s
  subnet: 172.77.0.0/16
  gateway: 172.77.0.1
  rangePlan:
    chunkPrefix: 24
    exclude: [172.77.0.0/24]
`, vlan, trunk))
	serviceDoc := func(replicas int) string {
		return fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: Service
metadata:
  name: %s
spec:
  image: %s
  args: ["-listen", ":8080"]
  networks: [%s]
  replicas: %d
  scaling: {min: 1, max: 3}
  consul:
    port: 8080
    check: {http: /health, interval: 5s, timeout: 1s, deregisterAfter: 30m}
`, service, lab.ImageTestApp, vlan, replicas)
	}
	writeFile(t, dir, "web.yaml", serviceDoc(1))
	mustCommand(t, operator, "validate", "-f", dir)
	if out := mustCommand(t, operator, "apply", "-f", dir); !strings.Contains(out, "2 created") {
		t.Errorf("apply: %s", out)
	}
	mustCommand(t, operator, "diff", "-f", dir)
	if out := mustCommand(t, operator, "get", "vlan"); !strings.Contains(out, vlan) {
		t.Errorf("get vlan: %s", out)
	}
	if out := mustCommand(t, operator, "get", "service", service); !strings.Contains(out, service) {
		t.Errorf("get service: %s", out)
	}
	mustCommand(t, operator, "plan", vlan)
	extra := writeFile(t, t.TempDir(), "extra.yaml", strings.ReplaceAll(serviceDoc(1), service, service+"x"))
	mustCommand(t, operator, "apply", "-f", extra)
	if out := mustCommand(t, operator, "delete", "service", service+"x"); !strings.Contains(out, "deleted") {
		t.Errorf("delete: %s", out)
	}

	// A token without the write rule on spec/: apply fails naming the
	// permission, and KV is as it was.
	reader := agent.NewACLToken(t, "swarmvlan-reader-"+tag, fmt.Sprintf("key_prefix %q {\n  policy = \"list\"\n}\n", prefix))
	before, _, err := kv.List(prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	changed := writeFile(t, t.TempDir(), "web.yaml", serviceDoc(2))
	code, _, errOut := command(t, append(tlsEnv(reader.Secret), "CONSUL_HTTP_ADDR=https://"+agent.Addr), "apply", "-f", changed)
	if code == 0 || !strings.Contains(errOut, "permission denied") || !strings.Contains(errOut, "key:write") || !strings.Contains(errOut, prefix+"spec/services/"+service) {
		t.Errorf("apply with a read-only token: exit %d, stderr %q; want a refusal naming key:write on the document", code, errOut)
	}
	after, _, err := kv.List(prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !samePairs(before, after) {
		t.Errorf("KV changed by a refused apply")
	}
	t.Logf("operator commands: %v", time.Since(start).Round(time.Millisecond))

	// 2. The manager and host roles, each with its own token.
	start = time.Now()
	consulAddr := "--consul-addr=" + agent.Addr
	manager := startRun(t, "manager", "", daemonEnv(tokens["manager"].Secret), "--role", "manager", consulAddr,
		"--listen", "127.0.0.1:0", "--resync", "2s")
	hostRole := startRun(t, "host", ns.name, daemonEnv(tokens["host"].Secret), "--role", "host", consulAddr,
		"--listen", ns.nsSide+":0", "--resync", "2s")
	managerMetrics, hostMetrics := manager.metricsURL(t), hostRole.metricsURL(t)
	nodeKey := prefix + "state/nodes/" + node
	allocKey := prefix + "state/allocations/" + vlan + "/" + node
	waitFor(t, 90*time.Second, "the service's task running and registered in the catalog", func() bool {
		_, running := replicas(docker, service)
		return running == 1 && len(registrations(t, admin, service)) == 1
	})
	converged := func() error {
		if !networkExists(docker, vlan) || !networkExists(docker, vlan+"-config") {
			return fmt.Errorf("swarm network %v, config network %v", networkExists(docker, vlan), networkExists(docker, vlan+"-config"))
		}
		if want, running := replicas(docker, service); want < 1 || running < 1 {
			return fmt.Errorf("service %s: %d replicas, %d running", service, want, running)
		}
		if n := len(registrations(t, admin, service)); n < 1 {
			return fmt.Errorf("%d catalog registrations", n)
		}
		pair, _, err := kv.Get(nodeKey, nil)
		if err != nil || pair == nil || pair.Session == "" {
			return fmt.Errorf("node key %s: %v %v", nodeKey, pair, err)
		}
		var r state.NodeReport
		if err := json.Unmarshal(pair.Value, &r); err != nil || !r.VLANs[vlan].Ready {
			return fmt.Errorf("node report: %s", pair.Value)
		}
		if pair, _, err := kv.Get(allocKey, nil); err != nil || pair == nil {
			return fmt.Errorf("allocation %s: %v %v", allocKey, pair, err)
		}
		return nil
	}
	waitFor(t, 30*time.Second, "manager and host converged", func() bool { return converged() == nil })
	if out := mustCommand(t, operator, "status"); !strings.Contains(out, vlan) || !strings.Contains(out, service) {
		t.Errorf("status:\n%s", out)
	}
	for _, p := range []*proc{manager, hostRole} {
		if strings.Contains(p.Logs(), "permission denied") {
			t.Errorf("%s was refused something with its printed policy:\n%s", p.name, grep(p.Logs(), "permission denied"))
		}
	}
	alloc, _, err := kv.Get(allocKey, nil)
	if err != nil || alloc == nil {
		t.Fatal(alloc, err)
	}
	t.Logf("manager and host converged: %v", time.Since(start).Round(time.Millisecond))

	// 3. Both tokens lose the read of spec/services/ while the daemons run.
	start = time.Now()
	logged := map[*proc]int{manager: len(manager.Logs()), hostRole: len(hostRole.Logs())}
	hide := fmt.Sprintf("\nkey_prefix %q {\n  policy = \"deny\"\n}\n", prefix+"spec/services/")
	tokens["manager"].SetRules(t, rules["manager"]+hide)
	tokens["host"].SetRules(t, rules["host"]+hide)
	// Writes under spec/ wake the daemons' watches: the query blocked
	// before the change answers with the rights it started with, the next
	// one with the service left out.
	wakes := 0
	wake := func() {
		wakes++
		if _, err := kv.Put(&api.KVPair{Key: prefix + "spec/wake", Value: []byte(strconv.Itoa(wakes))}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []struct {
		p   *proc
		url string
	}{{manager, managerMetrics}, {hostRole, hostMetrics}} {
		waitFor(t, 30*time.Second, m.p.name+" counting the refused listing", func() bool {
			if metric(m.url, "swarmvlan_consul_permission_denied_total", `op="kv_list"`) > 0 {
				return true
			}
			wake()
			time.Sleep(300 * time.Millisecond)
			return false
		})
		waitFor(t, 10*time.Second, m.p.name+" logging the refusal", func() bool {
			return strings.Contains(grep(m.p.Logs(), "consul permission denied"), `permission="key:read on every key under `+prefix+`spec/"`)
		})
	}
	// Several resyncs later, nothing is gone.
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		if err := converged(); err != nil {
			t.Fatalf("after the tokens lost a rule: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if pair, _, err := kv.Get(allocKey, nil); err != nil || pair == nil || pair.ModifyIndex != alloc.ModifyIndex {
		t.Errorf("allocation %s changed after the tokens lost a rule: %+v %v", allocKey, pair, err)
	}
	for p, since := range logged {
		if l := deregisteredRE.FindString(p.Logs()[since:]); l != "" {
			t.Errorf("%s deregistered tasks after losing a rule: %s", p.name, l)
		}
	}
	t.Logf("a lost rule, watched for 12s: %v", time.Since(start).Round(time.Millisecond))

	// 4. The rules back, one `run --role all` with a token of both policies
	// takes over and follows a scale.
	start = time.Now()
	tokens["manager"].SetRules(t, rules["manager"])
	tokens["host"].SetRules(t, rules["host"])
	manager.Stop(t)
	hostRole.Stop(t)
	apiToken := lab.NewToken()
	all := startRun(t, "all", ns.name, append(daemonEnv(both.SecretID), "SWARMVLAN_API_TOKENS="+apiToken),
		"--role", "all", consulAddr, "--resync", "2s", "--listen", ns.nsSide+":0")
	allMetrics := all.metricsURL(t)
	waitFor(t, 60*time.Second, "the all-roles daemon leading", func() bool { return strings.Contains(all.Logs(), "msg=leading") })
	if out := mustCommand(t, operator, "scale", service, "2"); !strings.Contains(out, "1 -> 2") {
		t.Errorf("scale: %s", out)
	}
	waitFor(t, 90*time.Second, "two tasks running and registered", func() bool {
		_, running := replicas(docker, service)
		return running == 2 && len(registrations(t, admin, service)) == 2
	})
	// The scale API the managers serve writes the intent with the
	// manager's rules.
	req, err := http.NewRequest(http.MethodPost, strings.TrimSuffix(allMetrics, "/metrics")+"/v1/services/"+service+"/scale", strings.NewReader(`{"direction":"up"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("scale API: %s %s", resp.Status, body)
	}
	waitFor(t, 90*time.Second, "three tasks running and registered", func() bool {
		_, running := replicas(docker, service)
		return running == 3 && len(registrations(t, admin, service)) == 3
	})
	if err := converged(); err != nil {
		t.Error(err)
	}
	if l := grep(all.Logs(), "permission denied"); l != "" {
		t.Errorf("the all-roles daemon was refused something:\n%s", l)
	}
	t.Logf("run --role all took over and scaled twice: %v", time.Since(start).Round(time.Millisecond))
	all.Stop(t)
}

var deregisteredRE = regexp.MustCompile(`.*deregistered=[1-9].*`)

// registrations are the catalog's entries of the service's tasks.
func registrations(t testing.TB, c *api.Client, service string) []*api.CatalogService {
	entries, _, err := c.Catalog().Service(service, "", nil)
	if err != nil {
		return nil
	}
	var out []*api.CatalogService
	for _, e := range entries {
		if e.ServiceMeta[state.MetaTask] != "" {
			out = append(out, e)
		}
	}
	return out
}

func samePairs(a, b api.KVPairs) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || a[i].ModifyIndex != b[i].ModifyIndex || !bytes.Equal(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

// grep returns the lines of s that contain text.
func grep(s, text string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, text) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
