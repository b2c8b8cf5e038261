package cluster_test

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
	"swarmvlan/spec/compose"
)

// convertedFields reads, for each field of a Service document, what a
// ServiceSpec holds for it; networks are named through names (Docker holds
// IDs) and secrets and configs are shown without their IDs.
func convertedFields(names map[string]string) map[string]func(swarm.ServiceSpec) any {
	cs := func(s swarm.ServiceSpec) *swarm.ContainerSpec {
		if s.TaskTemplate.ContainerSpec == nil {
			return &swarm.ContainerSpec{}
		}
		return s.TaskTemplate.ContainerSpec
	}
	nets := func(s swarm.ServiceSpec) any {
		var out []string
		for _, n := range s.TaskTemplate.Networks {
			name := n.Target
			if v, ok := names[name]; ok {
				name = v
			}
			out = append(out, name+" "+strings.Join(n.Aliases, ","))
		}
		return out
	}
	return map[string]func(swarm.ServiceSpec) any{
		"image":   func(s swarm.ServiceSpec) any { return cs(s).Image },
		"command": func(s swarm.ServiceSpec) any { return cs(s).Command },
		"args":    func(s swarm.ServiceSpec) any { return cs(s).Args },
		"env":     func(s swarm.ServiceSpec) any { return cs(s).Env },
		"labels":  func(s swarm.ServiceSpec) any { return cs(s).Labels },
		// The VLANs, the aliases on them and the overlays are one list
		// of attachments in Docker.
		"networks":        nets,
		"aliases":         nets,
		"overlays":        nets,
		"mode":            func(s swarm.ServiceSpec) any { return s.Mode.Global != nil },
		"replicas":        func(s swarm.ServiceSpec) any { return *s.Mode.Replicated.Replicas },
		"placement":       func(s swarm.ServiceSpec) any { return s.TaskTemplate.Placement },
		"resources":       func(s swarm.ServiceSpec) any { return s.TaskTemplate.Resources },
		"update":          func(s swarm.ServiceSpec) any { return s.UpdateConfig },
		"rollback":        func(s swarm.ServiceSpec) any { return s.RollbackConfig },
		"restart":         func(s swarm.ServiceSpec) any { return s.TaskTemplate.RestartPolicy },
		"mounts":          func(s swarm.ServiceSpec) any { return cs(s).Mounts },
		"healthcheck":     func(s swarm.ServiceSpec) any { return cs(s).Healthcheck },
		"user":            func(s swarm.ServiceSpec) any { return cs(s).User },
		"workdir":         func(s swarm.ServiceSpec) any { return cs(s).Dir },
		"hostname":        func(s swarm.ServiceSpec) any { return cs(s).Hostname },
		"stopSignal":      func(s swarm.ServiceSpec) any { return cs(s).StopSignal },
		"stopGracePeriod": func(s swarm.ServiceSpec) any { return *cs(s).StopGracePeriod },
		"init":            func(s swarm.ServiceSpec) any { return *cs(s).Init },
		"readOnly":        func(s swarm.ServiceSpec) any { return cs(s).ReadOnly },
		"capAdd":          func(s swarm.ServiceSpec) any { return cs(s).CapabilityAdd },
		"capDrop":         func(s swarm.ServiceSpec) any { return cs(s).CapabilityDrop },
		"sysctls":         func(s swarm.ServiceSpec) any { return cs(s).Sysctls },
		"ulimits":         func(s swarm.ServiceSpec) any { return cs(s).Ulimits },
		"dns":             func(s swarm.ServiceSpec) any { return cs(s).DNSConfig },
		"extraHosts":      func(s swarm.ServiceSpec) any { return cs(s).Hosts },
		"logging":         func(s swarm.ServiceSpec) any { return s.TaskTemplate.LogDriver },
		"endpointMode":    func(s swarm.ServiceSpec) any { return s.EndpointSpec.Mode },
		"secrets": func(s swarm.ServiceSpec) any {
			var out []string
			for _, r := range cs(s).Secrets {
				b, _ := json.Marshal(r.File)
				out = append(out, r.SecretName+" "+string(b))
			}
			return out
		},
		"configs": func(s swarm.ServiceSpec) any {
			var out []string
			for _, r := range cs(s).Configs {
				b, _ := json.Marshal(r.File)
				out = append(out, r.ConfigName+" "+string(b))
			}
			return out
		},
	}
}

// TestConvertedComposeServiceOnEngine converts a compose file that uses
// every key the converter maps, creates the service through
// cluster.EnsureService on the local Engine, and reads each field the
// document sets back from the service's inspect (through the client):
// Docker holds what the mapping gave it, and a second pass finds no drift.
func TestConvertedComposeServiceOnEngine(t *testing.T) {
	d, cli := enginetest.Engine(t)
	sfx := enginetest.Suffix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)

	res, err := compose.Convert(ctx, compose.Options{Files: []string{"testdata/compose/full.yml"}, Env: []string{"SFX=" + sfx}, Name: "cv"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Issues) > 0 || len(res.Services) != 1 {
		t.Fatalf("%d services, issues %v; want one service and no issue", len(res.Services), res.Issues)
	}
	svc := res.Services[0]
	svc.Metadata.Name = "cvapp" + sfx
	out, _ := compose.Marshal(svc)
	t.Logf("converted:\n%s", out)

	// The Swarm objects the compose file names as external. A swarm
	// network stands in for the VLAN's: what is compared is the attachment.
	vlanNet, backNet := "cvvlan"+sfx, "cvback"+sfx
	filesNetwork(t, vlanNet)
	filesNetwork(t, backNet)
	filesCreate(t, "secret", "cv_secret"+sfx)
	filesCreate(t, "config", "cv_conf"+sfx)
	cliRemoveLater(t, svc.Metadata.Name)
	t.Cleanup(func() {
		// Swarm frees the volume's name only once the service is gone;
		// the volume is made by the tasks, so it exists only if one ran.
		_ = cli.VolumeRemove(context.Background(), "cvdata"+sfx, true)
	})

	in := cluster.ServiceInput{Service: svc, Replicas: cluster.EffectiveReplicas(svc, nil), VLANs: []string{vlanNet}, Owner: "convert-test-" + sfx}
	if st, err := cluster.EnsureService(ctx, d, in); err != nil {
		t.Fatalf("cluster.EnsureService: %+v, %v", st, err)
	}
	built, err := cluster.BuildServiceSpec(in)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	list, err := cli.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range list {
		names[n.ID] = n.Name
	}
	// Through the client, as the leader reads it: the docker CLI's
	// inspect asks the daemon to insert its defaults (insertDefaults),
	// such as a rollback monitor of 5s the document left out.
	have, err := d.ServiceInspect(ctx, svc.Metadata.Name)
	if err != nil {
		t.Fatal(err)
	}
	inspected := have.Spec

	fields := convertedFields(names)
	v := reflect.ValueOf(svc.Spec)
	typ := v.Type()
	compared := 0
	for i := 0; i < typ.NumField(); i++ {
		if v.Field(i).IsZero() {
			continue
		}
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		get, ok := fields[name]
		if !ok {
			t.Errorf("spec.%s is set but the test does not read it from docker service inspect", name)
			continue
		}
		want, got := get(built), get(inspected)
		if reflect.ValueOf(got).IsZero() && name != "mode" {
			t.Errorf("spec.%s: docker service inspect shows nothing", name)
		}
		if !reflect.DeepEqual(want, got) {
			b, _ := json.Marshal(want)
			g, _ := json.Marshal(got)
			t.Errorf("spec.%s: docker service inspect shows %s, the mapping gave %s", name, g, b)
			continue
		}
		g, _ := json.Marshal(got)
		t.Logf("spec.%s: %s", name, g)
		compared++
	}
	if want := len(fields) - 2; compared < want {
		t.Errorf("%d fields compared, want at least %d", compared, want)
	}
	if got := inspected.Labels["team"]; got != "convert" {
		t.Errorf("deploy.labels: service label team=%q, want convert", got)
	}

	st, err := cluster.EnsureService(ctx, d, in)
	if err != nil || st.Message != "" {
		t.Errorf("second cluster.EnsureService: %q, %v; want no change", st.Message, err)
	}
	if _, err := spec.DecodeAndValidate(out); err != nil {
		t.Errorf("the printed document does not validate: %v", err)
	}
}
