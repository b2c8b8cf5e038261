package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"swarmvlan/lab"
)

const planVLANDoc = `apiVersion: swarmvlan/v1
kind: VLAN
metadata:
  name: vlan40
spec:
  id: 40
  trunk: bond0
  subnet: 172.80.0.0/21
  gateway: 172.80.0.1
  rangePlan:
    chunkPrefix: 24
    exclude: [172.80.0.0/24]
    pinned:
      manager1: 172.80.1.0/24
`

// kvIndex is the KV store's index: any write under any key raises it.
func kvIndex(t *testing.T, kv *api.KV) uint64 {
	t.Helper()
	_, meta, err := kv.Keys("", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	return meta.LastIndex
}

// hasSpacedLine is hasLine for table rows: runs of spaces count as one.
func hasSpacedLine(out, mark, text string) bool {
	squeeze := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	for _, l := range strings.Split(out, "\n") {
		l = squeeze(l)
		if strings.HasPrefix(l, mark) && strings.Contains(l, squeeze(text)) {
			return true
		}
	}
	return false
}

func TestPlanPreviewsWithoutWriting(t *testing.T) {
	agent := lab.StartConsul(t)
	kv := agent.Client(t).KV()
	dir := t.TempDir()
	writeFile(t, dir, "vlan.yaml", planVLANDoc)
	if code, out, errOut := run(t, agent.Addr, "", "apply", "-f", dir); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	left := time.Now().Add(-2 * time.Minute).UTC()
	for node, a := range map[string]string{
		"n1": `{"chunk":"172.80.1.0/24","node":"n1","hostname":"manager1","created":"2026-01-01T00:00:00Z"}`,
		"n2": `{"chunk":"172.80.2.0/24","node":"n2","hostname":"worker1","created":"2026-01-01T00:00:00Z"}`,
		"n3": fmt.Sprintf(`{"chunk":"172.80.3.0/24","node":"n3","hostname":"worker2","created":"2026-01-01T00:00:00Z","left":%q}`, left.Format(time.RFC3339Nano)),
	} {
		if _, err := kv.Put(&api.KVPair{Key: "swarmvlan/state/allocations/vlan40/" + node, Value: []byte(a)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	index := kvIndex(t, kv)
	t.Cleanup(func() {
		if got := kvIndex(t, kv); got != index {
			t.Errorf("KV index went from %d to %d: plan wrote something", index, got)
		}
	})
	noDockerFlag := []string{"--docker-host", noDocker}

	t.Run("as it stands", func(t *testing.T) {
		code, out, errOut := run(t, agent.Addr, "", append([]string{"plan"}, noDockerFlag...)...)
		if code != 0 {
			t.Fatalf("plan: exit %d\n%s%s", code, out, errOut)
		}
		t.Logf("\n%s", out)
		for _, want := range [][2]string{
			{"documents:", "in force in KV"},
			{"nodes:", "Docker not asked"},
			{"VLAN vlan40:", "subnet 172.80.0.0/21, gateway 172.80.0.1, /24 chunks, quarantine 10m"},
			{"exclude:", "172.80.0.0/24"},
			{"manager1", "n1  172.80.1.0/24  172.80.1.0/24  kept  172.80.1.255"},
			{"worker1", "n2  172.80.2.0/24  172.80.2.0/24  kept  172.80.2.255"},
			{"worker2", "n3  172.80.3.0/24  172.80.3.0/24  quarantined  -  " + left.Add(10*time.Minute).Format(time.RFC3339)},
			{"172.80.0.0/24", "excluded"},
			{"172.80.1.0/24", "allocated  manager1 (n1)  172.80.1.255  -  pinned to manager1"},
			{"172.80.3.0/24", "quarantined  worker2 (n3)"},
			{"172.80.4.0/24 .. 172.80.7.0/24", "free (4)"},
			{"4 free chunk(s)", ""},
			{"nothing was written", ""},
		} {
			if !hasSpacedLine(out, want[0], want[1]) {
				t.Errorf("no line %q ... %q in\n%s", want[0], want[1], out)
			}
		}
		if strings.Contains(out, "problem:") {
			t.Errorf("problems reported for a consistent plan:\n%s", out)
		}
	})

	t.Run("a pending change that would move chunks in use is refused", func(t *testing.T) {
		pending := t.TempDir()
		doc := strings.Replace(planVLANDoc, "exclude: [172.80.0.0/24]", "exclude: [172.80.0.0/24, 172.80.2.0/24]", 1)
		doc = strings.Replace(doc, "manager1: 172.80.1.0/24", "manager1: 172.80.5.0/24", 1)
		writeFile(t, pending, "vlan.yaml", doc)
		code, out, errOut := run(t, agent.Addr, "", append([]string{"plan", "vlan40", "-f", pending}, noDockerFlag...)...)
		if code != 0 {
			t.Fatalf("plan -f: exit %d\n%s%s", code, out, errOut)
		}
		t.Logf("\n%s", out)
		for _, want := range [][2]string{
			{"documents:", pending + " over those in KV"},
			{"change:", "rangePlan.exclude: [172.80.0.0/24] -> [172.80.0.0/24 172.80.2.0/24]"},
			{"change:", "rangePlan.pinned: map[manager1:172.80.1.0/24] -> map[manager1:172.80.5.0/24]"},
			{"manager1", "172.80.1.0/24  172.80.1.0/24  refused"},
			{"worker1", "172.80.2.0/24  172.80.2.0/24  refused"},
			{"172.80.2.0/24", "outside the plan"},
			{"172.80.5.0/24", "pinned  -  -  -  pinned to manager1"},
			{"problem:", "node worker1 (n2) holds 172.80.2.0/24, which the new plan no longer contains"},
			{"problem:", "node manager1 (n1) holds 172.80.1.0/24 but is pinned to 172.80.5.0/24"},
		} {
			if !hasSpacedLine(out, want[0], want[1]) {
				t.Errorf("no line %q ... %q in\n%s", want[0], want[1], out)
			}
		}
	})

	t.Run("json, a new VLAN from PATH and an exhausted pool", func(t *testing.T) {
		pending := t.TempDir()
		writeFile(t, pending, "vlan50.yaml", `apiVersion: swarmvlan/v1
kind: VLAN
metadata: {name: vlan50}
spec:
  trunk: bond0
  subnet: 10.50.0.0/24
  rangePlan: {chunkPrefix: 25, exclude: [10.50.0.0/25]}
`)
		code, out, errOut := run(t, agent.Addr, "", append([]string{"plan", "-f", pending, "-o", "json"}, noDockerFlag...)...)
		if code != 0 {
			t.Fatalf("plan -o json: exit %d\n%s%s", code, out, errOut)
		}
		var r planReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("output is not a plan report: %v\n%s", err, out)
		}
		if r.Nodes != "allocations" || r.DockerError == "" || len(r.VLANs) != 2 {
			t.Fatalf("report: %+v", r)
		}
		v50 := r.VLANs[1]
		if v50.VLAN != "vlan50" || v50.InKV || v50.FreeChunks != 0 {
			t.Errorf("vlan50: %+v", v50)
		}
		changes := map[string]string{}
		for _, n := range v50.Nodes {
			changes[n.Hostname] = string(n.Change) + " " + n.Next + " " + n.Shim
		}
		want := map[string]string{"manager1": "new 10.50.0.128/25 10.50.0.254", "worker1": "unallocated  "}
		if fmt.Sprint(changes) != fmt.Sprint(want) {
			t.Errorf("vlan50 nodes %v, want %v", changes, want)
		}
		if fmt.Sprint(v50.Unallocated) != "[worker1]" {
			t.Errorf("vlan50 unallocated %v", v50.Unallocated)
		}
	})

	t.Run("unknown VLAN", func(t *testing.T) {
		code, out, errOut := run(t, agent.Addr, "", append([]string{"plan", "vlan99"}, noDockerFlag...)...)
		if code != 1 || !strings.Contains(errOut, `vlan "vlan99" not found in KV under swarmvlan/spec/ (known: vlan40)`) || out != "" {
			t.Errorf("unknown vlan: exit %d\nstdout %q\nstderr %q", code, out, errOut)
		}
	})

	t.Run("invalid PATH documents are refused", func(t *testing.T) {
		pending := t.TempDir()
		writeFile(t, pending, "vlan.yaml", strings.Replace(planVLANDoc, "chunkPrefix: 24", "chunkPrefix: 8", 1))
		code, _, errOut := run(t, agent.Addr, "", append([]string{"plan", "-f", pending}, noDockerFlag...)...)
		if code != 1 || !strings.Contains(errOut, "spec.rangePlan.chunkPrefix") || !strings.Contains(errOut, "nothing to preview") {
			t.Errorf("invalid -f: exit %d\n%s", code, errOut)
		}
	})
}
