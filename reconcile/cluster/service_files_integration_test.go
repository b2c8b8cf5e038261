package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/lab"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
)

// filesCLIArgs are the docker CLI's flags for the document's secrets,
// configs, VLAN aliases and overlays, spelled as an operator would.
func filesCLIArgs(s *spec.ServiceSpec, vlan string) []string {
	var args []string
	ref := func(flag string, f spec.FileRef, target string) {
		a := "source=" + f.Name + ",target=" + target
		if f.UID != nil {
			a += fmt.Sprintf(",uid=%d", *f.UID)
		}
		if f.GID != nil {
			a += fmt.Sprintf(",gid=%d", *f.GID)
		}
		if f.Mode != nil {
			a += fmt.Sprintf(",mode=%#o", *f.Mode)
		}
		args = append(args, flag, a)
	}
	for _, f := range s.Secrets {
		ref("--secret", f, f.SecretTarget())
	}
	for _, f := range s.Configs {
		ref("--config", f, f.ConfigTarget())
	}
	net := func(name string, aliases []string) {
		a := "name=" + name
		for _, al := range aliases {
			a += ",alias=" + al
		}
		args = append(args, "--network", a)
	}
	net(vlan, s.Aliases)
	for _, o := range s.Overlays {
		net(o.Name, o.Aliases)
	}
	return args
}

// filesView is what Docker holds for the fields under test, one line per
// reference (name, ID, file, owner, mode; network ID and aliases), in the
// order Docker keeps them, and sorted (the docker CLI sorts configs).
type filesView struct {
	Secrets, Configs, Networks []string
}

func filesOf(s swarm.ServiceSpec) filesView {
	var v filesView
	if cs := s.TaskTemplate.ContainerSpec; cs != nil {
		for _, r := range cs.Secrets {
			v.Secrets = append(v.Secrets, fmt.Sprintf("%s (%s) at %s %s:%s %#o", r.SecretName, r.SecretID, r.File.Name, r.File.UID, r.File.GID, r.File.Mode))
		}
		for _, r := range cs.Configs {
			v.Configs = append(v.Configs, fmt.Sprintf("%s (%s) at %s %s:%s %#o", r.ConfigName, r.ConfigID, r.File.Name, r.File.UID, r.File.GID, r.File.Mode))
		}
	}
	for _, n := range s.TaskTemplate.Networks {
		v.Networks = append(v.Networks, fmt.Sprintf("%s aliases %q", n.Target, n.Aliases))
	}
	return v
}

func (v filesView) sorted() filesView {
	for _, l := range [][]string{v.Secrets, v.Configs, v.Networks} {
		sort.Strings(l)
	}
	return v
}

func filesCreate(t *testing.T, kind, name string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte("content of "+name+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	enginetest.CLI(t, kind, "create", name, f)
	t.Cleanup(func() {
		if out, err := exec.Command("docker", kind, "rm", name).CombinedOutput(); err != nil {
			t.Errorf("cleanup: docker %s rm %s: %v: %s", kind, name, err, out)
		}
	})
}

func filesNetwork(t *testing.T, name string) {
	t.Helper()
	enginetest.CLI(t, "network", "create", "--driver", "overlay", "--attachable", name)
	t.Cleanup(func() {
		// The services on it are removed first (cleanups run last in,
		// first out), but Swarm frees the attachment a moment later.
		enginetest.Poll(t, 30*time.Second, "network "+name+" removed", func() (bool, string) {
			out, err := exec.Command("docker", "network", "rm", name).CombinedOutput()
			return err == nil || strings.Contains(string(out), "not found"), string(out)
		})
	})
}

// TestServiceFilesAndNetworksOnEngine creates a service with secrets and
// configs (targets, owners, modes, and bare names), aliases on its VLAN
// network and overlay networks with aliases, through cluster.EnsureService
// and through the docker CLI given the same values, and expects Docker to
// hold the same for both; a second pass changes nothing; hand edits of each
// field are drift the next pass reverts; a config that does not exist is
// refused naming its field.
func TestServiceFilesAndNetworksOnEngine(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("needs the docker CLI to create services as an operator would")
	}
	d, _ := enginetest.Engine(t)
	sfx := enginetest.Suffix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)

	// A swarm network stands in for the VLAN's: what is compared is the
	// attachment, not the driver.
	vlan, back, metrics := "svfvlan"+sfx, "svfback"+sfx, "svf_metrics_"+sfx
	for _, n := range []string{vlan, back, metrics} {
		filesNetwork(t, n)
	}
	dbPass, tlsKey, nginx, appYAML := "svf_db_password"+sfx, "svf_tls_key"+sfx, "svf_nginx_conf"+sfx, "svf_app_yaml"+sfx
	filesCreate(t, "secret", dbPass)
	filesCreate(t, "secret", tlsKey)
	filesCreate(t, "config", nginx)
	filesCreate(t, "config", appYAML)

	ours := cliParse(t, fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: Service
metadata: {name: svfens%[1]s}
spec:
  image: %[2]s
  networks: [vlan40]
  aliases: [files-vlan, files.lab.example.com]
  overlays:
    - %[3]s
    - {name: %[4]s, aliases: [files-metrics, scrape_target]}
  secrets:
    - %[5]s
    - {name: %[6]s, target: server.key, uid: 1000, gid: 1000, mode: 0400}
    - {name: %[6]s, target: /etc/ssl/private/server.key, mode: 0440}
  configs:
    - %[7]s
    - {name: %[8]s, target: /etc/app/app.yaml, uid: 33, gid: 33, mode: 0440}
    - {name: %[8]s, target: etc/app/copy.yaml}
`, sfx, lab.ImageTestApp, back, metrics, dbPass, tlsKey, nginx, appYAML))
	cliRemoveLater(t, ours.Metadata.Name)
	in := cluster.ServiceInput{Service: ours, Replicas: 0, VLANs: []string{vlan}, Owner: "files-test-" + sfx}
	if st, err := cluster.EnsureService(ctx, d, in); err != nil {
		t.Fatalf("cluster.EnsureService: %+v, %v", st, err)
	}

	cliName := "svfcli" + sfx
	args := append([]string{"service", "create", "--detach", "--no-resolve-image", "--replicas", "0", "--name", cliName}, filesCLIArgs(&ours.Spec, vlan)...)
	args = append(args, lab.ImageTestApp)
	enginetest.CLI(t, args...)
	cliRemoveLater(t, cliName)

	byUs, byCLI := filesOf(cliInspect(t, ours.Metadata.Name).Spec), filesOf(cliInspect(t, cliName).Spec)
	if !reflect.DeepEqual(filesOf(cliInspect(t, ours.Metadata.Name).Spec).sorted(), byCLI.sorted()) {
		t.Errorf("after cluster.EnsureService Docker holds\n  %+v\nafter docker %s\n  %+v", byUs, strings.Join(args, " "), byCLI)
	}
	if len(byUs.Secrets) != 3 || len(byUs.Configs) != 3 || len(byUs.Networks) != 3 {
		t.Fatalf("docker service inspect shows %d secrets, %d configs, %d networks; want 3 each: %+v", len(byUs.Secrets), len(byUs.Configs), len(byUs.Networks), byUs)
	}
	t.Logf("docker service inspect %s:\n  secrets  %s\n  configs  %s\n  networks %s", ours.Metadata.Name,
		strings.Join(byUs.Secrets, "; "), strings.Join(byUs.Configs, "; "), strings.Join(byUs.Networks, "; "))
	for i, want := range []string{
		dbPass + " at " + dbPass + " 0:0 0444",
		tlsKey + " at server.key 1000:1000 0400",
		tlsKey + " at /etc/ssl/private/server.key 0:0 0440",
	} {
		if name, rest, _ := strings.Cut(byUs.Secrets[i], " ("); name+" at "+rest[strings.Index(rest, ") at ")+5:] != want {
			t.Errorf("secrets[%d]: Docker holds %s, want %s", i, byUs.Secrets[i], want)
		}
	}
	for i, want := range []string{
		nginx + " at /" + nginx + " 0:0 0444",
		appYAML + " at /etc/app/app.yaml 33:33 0440",
		appYAML + " at /etc/app/copy.yaml 0:0 0444",
	} {
		if name, rest, _ := strings.Cut(byUs.Configs[i], " ("); name+" at "+rest[strings.Index(rest, ") at ")+5:] != want {
			t.Errorf("configs[%d]: Docker holds %s, want %s", i, byUs.Configs[i], want)
		}
	}
	for i, want := range []string{`["files-vlan" "files.lab.example.com"]`, `[]`, `["files-metrics" "scrape_target"]`} {
		if !strings.HasSuffix(byUs.Networks[i], "aliases "+want) {
			t.Errorf("networks[%d]: Docker holds %s, want aliases %s", i, byUs.Networks[i], want)
		}
	}

	st, err := cluster.EnsureService(ctx, d, in)
	if err != nil || st.Message != "" {
		t.Fatalf("second cluster.EnsureService: %q, %v; want no change", st.Message, err)
	}

	// Hand edits of each field are drift, and the next pass puts the
	// document's values back.
	for _, edit := range [][]string{
		{"--secret-rm", tlsKey},
		{"--config-rm", appYAML, "--config-add", "source=" + appYAML + ",target=/etc/app/app.yaml,mode=0777"},
		{"--network-rm", back},
		{"--network-rm", metrics, "--network-add", "name=" + metrics + ",alias=hand-edited"},
	} {
		enginetest.CLI(t, append(append([]string{"service", "update", "--detach"}, edit...), ours.Metadata.Name)...)
		st, err := cluster.EnsureService(ctx, d, in)
		if err != nil {
			t.Fatalf("cluster.EnsureService after %q: %+v, %v", edit, st, err)
		}
		if !strings.HasPrefix(st.Message, "updated: drift in ") {
			t.Errorf("after %q: %q, want an update for drift", edit, st.Message)
		}
		if got := filesOf(cliInspect(t, ours.Metadata.Name).Spec); !reflect.DeepEqual(got, byUs) {
			t.Errorf("after %q was reverted Docker holds\n  %+v\nwant\n  %+v", edit, got, byUs)
		}
		t.Logf("hand edit %q reverted: %s", edit, st.Message)
	}

	// A config that does not exist is refused, naming its field.
	missing := *ours
	missing.Metadata.Name = "svfmiss" + sfx
	missing.Spec.Configs = append(append([]spec.FileRef(nil), ours.Spec.Configs...), spec.FileRef{Name: "svf_absent" + sfx})
	cliRemoveLater(t, missing.Metadata.Name)
	_, err = cluster.EnsureService(ctx, d, cluster.ServiceInput{Service: &missing, VLANs: []string{vlan}})
	var me *cluster.MissingError
	if !errors.As(err, &me) || me.Field != "spec.configs[3]" || !strings.Contains(err.Error(), `config "svf_absent`+sfx+`" does not exist`) {
		t.Errorf("service with a missing config: %v, want a MissingError at spec.configs[3]", err)
	}
}
