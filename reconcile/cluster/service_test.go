package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
)

// serviceWebJSON is the Service example of SPEC.md, as JSON.
const serviceWebJSON = `{
  "apiVersion": "swarmvlan/v1",
  "kind": "Service",
  "metadata": {"name": "web", "labels": {"team": "payments"}},
  "spec": {
    "image": "registry.example.com/web:1.4",
    "command": ["/app"],
    "args": ["--listen", ":8080"],
    "env": {"LOG_LEVEL": "info"},
    "labels": {"tier": "front"},
    "networks": ["vlan40"],
    "mode": "replicated",
    "replicas": 3,
    "scaling": {"min": 2, "max": 10, "step": 1, "cooldown": "60s"},
    "placement": {
      "constraints": ["node.labels.rack==a"],
      "maxPerNode": 1,
      "preferences": [{"spread": "node.labels.rack"}]
    },
    "resources": {
      "limits": {"cpus": "0.5", "memory": "256Mi"},
      "reservations": {"cpus": "0.1", "memory": "64Mi"}
    },
    "update": {"parallelism": 1, "delay": "10s", "failureAction": "rollback", "order": "start-first"},
    "restart": {"condition": "on-failure", "delay": "5s", "maxAttempts": 3, "window": "60s"},
    "mounts": [{"type": "bind", "source": "/shared_storage/web", "target": "/data", "readOnly": true}],
    "secrets": ["db_password"],
    "healthcheck": {"test": ["CMD", "/app", "-health"], "interval": "10s", "timeout": "2s", "retries": 3},
    "consul": {
      "service": "web", "port": 8080, "tags": ["v1"], "meta": {"owner": "payments"},
      "check": {"http": "/health", "interval": "10s", "timeout": "2s", "deregisterAfter": "1m"}
    }
  }
}`

// serviceWeb decodes the SPEC.md example strictly, so the test breaks if
// the example stops matching the document types.
func serviceWeb(t testing.TB) *spec.Service {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(serviceWebJSON))
	dec.DisallowUnknownFields()
	var s spec.Service
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("decode web example: %v", err)
	}
	return &s
}

func servicePtr[T any](v T) *T { return &v }

// TestServiceBuildSpecWeb maps every field of the SPEC.md web example and
// checks the Docker spec field by field.
func TestServiceBuildSpecWeb(t *testing.T) {
	web := serviceWeb(t)
	got, err := BuildServiceSpec(ServiceInput{Service: web, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	cs := got.TaskTemplate.ContainerSpec
	if cs == nil {
		t.Fatal("no container spec")
	}
	hash := got.Labels[spec.LabelSpecHash]
	wantHash, err := svcSpecHash(got)
	if err != nil {
		t.Fatal(err)
	}

	fields := []struct {
		name      string
		got, want any
	}{
		{"Name", got.Name, "web"},
		{"Labels (metadata.labels + ownership + hash)", got.Labels, map[string]string{
			"team": "payments", spec.LabelManaged: "true", spec.LabelKind: "Service", spec.LabelName: "web", spec.LabelSpecHash: wantHash,
		}},
		{"Image", cs.Image, "registry.example.com/web:1.4"},
		{"Command", cs.Command, []string{"/app"}},
		{"Args", cs.Args, []string{"--listen", ":8080"}},
		{"Env", cs.Env, []string{"LOG_LEVEL=info"}},
		{"container Labels", cs.Labels, map[string]string{
			"tier": "front", spec.LabelManaged: "true", spec.LabelKind: "Service", spec.LabelName: "web",
		}},
		{"Networks", got.TaskTemplate.Networks, []swarm.NetworkAttachmentConfig{{Target: "vlan40"}}},
		{"Mode", got.Mode, swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: servicePtr(uint64(3))}}},
		{"Placement", got.TaskTemplate.Placement, &swarm.Placement{
			Constraints: []string{"node.labels.rack==a", "node.labels.io.swarmvlan.vlan.vlan40==ready"},
			MaxReplicas: 1,
			Preferences: []swarm.PlacementPreference{{Spread: &swarm.SpreadOver{SpreadDescriptor: "node.labels.rack"}}},
		}},
		{"Resources", got.TaskTemplate.Resources, &swarm.ResourceRequirements{
			Limits:       &swarm.Limit{NanoCPUs: 500_000_000, MemoryBytes: 256 << 20},
			Reservations: &swarm.Resources{NanoCPUs: 100_000_000, MemoryBytes: 64 << 20},
		}},
		{"UpdateConfig", got.UpdateConfig, &swarm.UpdateConfig{
			Parallelism: 1, Delay: 10 * time.Second, FailureAction: "rollback", Order: "start-first",
		}},
		{"RestartPolicy", got.TaskTemplate.RestartPolicy, &swarm.RestartPolicy{
			Condition: swarm.RestartPolicyConditionOnFailure, Delay: servicePtr(5 * time.Second),
			MaxAttempts: servicePtr(uint64(3)), Window: servicePtr(60 * time.Second),
		}},
		{"Mounts", cs.Mounts, []mount.Mount{{Type: mount.TypeBind, Source: "/shared_storage/web", Target: "/data", ReadOnly: true}}},
		{"Secrets", cs.Secrets, []*swarm.SecretReference{{
			SecretName: "db_password",
			File:       &swarm.SecretReferenceFileTarget{Name: "db_password", UID: "0", GID: "0", Mode: 0o444},
		}}},
		{"Healthcheck", cs.Healthcheck, &container.HealthConfig{
			Test: []string{"CMD", "/app", "-health"}, Interval: 10 * time.Second, Timeout: 2 * time.Second, Retries: 3,
		}},
		{"no RollbackConfig", got.RollbackConfig, (*swarm.UpdateConfig)(nil)},
		{"no EndpointSpec", got.EndpointSpec, (*swarm.EndpointSpec)(nil)},
		{"no deprecated Networks", got.Networks, []swarm.NetworkAttachmentConfig(nil)}, //nolint:staticcheck
	}
	for _, f := range fields {
		t.Run(f.name, func(t *testing.T) {
			if !reflect.DeepEqual(f.got, f.want) {
				gj, _ := json.Marshal(f.got)
				wj, _ := json.Marshal(f.want)
				t.Errorf("got  %s\nwant %s", gj, wj)
			}
		})
	}
	if len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
		t.Errorf("spec hash %q is not a hex sha256", hash)
	}
}

// TestServiceBuildSpecHash checks what the spec hash depends on.
func TestServiceBuildSpecHash(t *testing.T) {
	base := func(t *testing.T, replicas int, edit func(*spec.Service)) string {
		t.Helper()
		s := serviceWeb(t)
		if edit != nil {
			edit(s)
		}
		out, err := BuildServiceSpec(ServiceInput{Service: s, Replicas: replicas})
		if err != nil {
			t.Fatal(err)
		}
		return out.Labels[spec.LabelSpecHash]
	}
	ref := base(t, 3, nil)
	tests := []struct {
		name     string
		replicas int
		edit     func(*spec.Service)
		same     bool
	}{
		{"rebuilt", 3, nil, true},
		{"replicas only", 7, nil, true},
		{"env map with more keys in another order", 3, func(s *spec.Service) {
			s.Spec.Env = map[string]string{"B": "2", "A": "1", "LOG_LEVEL": "info"}
		}, false},
		{"env value", 3, func(s *spec.Service) { s.Spec.Env["LOG_LEVEL"] = "debug" }, false},
		{"image", 3, func(s *spec.Service) { s.Spec.Image = "registry.example.com/web:1.5" }, false},
		{"consul registration is not Docker's business", 3, func(s *spec.Service) { s.Spec.Consul.Port = 9090 }, true},
		{"scaling bounds are not Docker's business", 3, func(s *spec.Service) { s.Spec.Scaling.Max = 20 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := base(t, tt.replicas, tt.edit)
			if (got == ref) != tt.same {
				t.Errorf("hash same = %v, want %v", got == ref, tt.same)
			}
		})
	}
	t.Run("env order is stable", func(t *testing.T) {
		s := serviceWeb(t)
		s.Spec.Env = map[string]string{"Z": "1", "A": "2", "M": "3"}
		out, err := BuildServiceSpec(ServiceInput{Service: s, Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"A=2", "M=3", "Z=1"}; !reflect.DeepEqual(out.TaskTemplate.ContainerSpec.Env, want) {
			t.Errorf("env %v, want %v", out.TaskTemplate.ContainerSpec.Env, want)
		}
	})
}

// TestServiceBuildSpecVariants covers mappings the web example does not.
func TestServiceBuildSpecVariants(t *testing.T) {
	tests := []struct {
		name  string
		in    func(*spec.Service) ServiceInput
		check func(t *testing.T, s swarm.ServiceSpec)
	}{
		{"global mode", func(s *spec.Service) ServiceInput {
			s.Spec.Mode = "global"
			s.Spec.Placement.MaxPerNode = 0
			return ServiceInput{Service: s}
		}, func(t *testing.T, s swarm.ServiceSpec) {
			if s.Mode.Global == nil || s.Mode.Replicated != nil {
				t.Errorf("mode %+v, want global", s.Mode)
			}
		}},
		{"VLANs override spec.networks", func(s *spec.Service) ServiceInput {
			return ServiceInput{Service: s, Replicas: 1, VLANs: []string{"vlan41", "vlan42"}}
		}, func(t *testing.T, s swarm.ServiceSpec) {
			want := []swarm.NetworkAttachmentConfig{{Target: "vlan41"}, {Target: "vlan42"}}
			if !reflect.DeepEqual(s.TaskTemplate.Networks, want) {
				t.Errorf("networks %v, want %v", s.TaskTemplate.Networks, want)
			}
			wantC := []string{"node.labels.rack==a", spec.NodeReadyConstraint("vlan41"), spec.NodeReadyConstraint("vlan42")}
			if !reflect.DeepEqual(s.TaskTemplate.Placement.Constraints, wantC) {
				t.Errorf("constraints %v, want %v", s.TaskTemplate.Placement.Constraints, wantC)
			}
		}},
		{"readiness constraint written by the user is not doubled", func(s *spec.Service) ServiceInput {
			s.Spec.Placement.Constraints = []string{spec.NodeReadyConstraint("vlan40")}
			return ServiceInput{Service: s, Replicas: 1}
		}, func(t *testing.T, s swarm.ServiceSpec) {
			if want := []string{spec.NodeReadyConstraint("vlan40")}; !reflect.DeepEqual(s.TaskTemplate.Placement.Constraints, want) {
				t.Errorf("constraints %v, want %v", s.TaskTemplate.Placement.Constraints, want)
			}
		}},
		{"minimal document", func(s *spec.Service) ServiceInput {
			return ServiceInput{Service: &spec.Service{Metadata: spec.ObjectMeta{Name: "tiny"}, Spec: spec.ServiceSpec{Image: "img:1"}}, Replicas: 2}
		}, func(t *testing.T, s swarm.ServiceSpec) {
			if s.TaskTemplate.Placement != nil || s.UpdateConfig != nil || s.TaskTemplate.RestartPolicy != nil || s.TaskTemplate.Resources != nil {
				t.Errorf("unset sections were filled: %+v", s)
			}
			if r := svcReplicas(s); r != 2 {
				t.Errorf("replicas %d, want 2", r)
			}
		}},
		{"update without parallelism is one at a time, not all at once", func(s *spec.Service) ServiceInput {
			s.Spec.Update.Parallelism = nil
			s.Spec.Update.Monitor = "30s"
			return ServiceInput{Service: s, Replicas: 1}
		}, func(t *testing.T, s swarm.ServiceSpec) {
			if s.UpdateConfig.Parallelism != 1 || s.UpdateConfig.Monitor != 30*time.Second {
				t.Errorf("update %+v, want parallelism 1, monitor 30s", s.UpdateConfig)
			}
		}},
		{"empty enums get the values the engine would store", func(s *spec.Service) ServiceInput {
			s.Spec.Update.FailureAction, s.Spec.Update.Order, s.Spec.Restart.Condition = "", "", ""
			return ServiceInput{Service: s, Replicas: 1}
		}, func(t *testing.T, s swarm.ServiceSpec) {
			if s.UpdateConfig.FailureAction != "pause" || s.UpdateConfig.Order != "stop-first" || s.TaskTemplate.RestartPolicy.Condition != "any" {
				t.Errorf("update %+v, restart %+v", s.UpdateConfig, s.TaskTemplate.RestartPolicy)
			}
		}},
		{"volume and tmpfs mounts, start period", func(s *spec.Service) ServiceInput {
			s.Spec.Mounts = []spec.Mount{{Type: "volume", Source: "data", Target: "/v"}, {Type: "tmpfs", Target: "/t"}}
			s.Spec.Healthcheck.StartPeriod = "3s"
			return ServiceInput{Service: s, Replicas: 1}
		}, func(t *testing.T, s swarm.ServiceSpec) {
			want := []mount.Mount{{Type: mount.TypeVolume, Source: "data", Target: "/v"}, {Type: mount.TypeTmpfs, Target: "/t"}}
			if !reflect.DeepEqual(s.TaskTemplate.ContainerSpec.Mounts, want) {
				t.Errorf("mounts %+v, want %+v", s.TaskTemplate.ContainerSpec.Mounts, want)
			}
			if s.TaskTemplate.ContainerSpec.Healthcheck.StartPeriod != 3*time.Second {
				t.Errorf("start period %v", s.TaskTemplate.ContainerSpec.Healthcheck.StartPeriod)
			}
		}},
		{"ownership labels cannot be overridden by the document", func(s *spec.Service) ServiceInput {
			s.Metadata.Labels[spec.LabelManaged] = "false"
			s.Spec.Labels[spec.LabelName] = "other"
			return ServiceInput{Service: s, Replicas: 1}
		}, func(t *testing.T, s swarm.ServiceSpec) {
			if s.Labels[spec.LabelManaged] != "true" || s.TaskTemplate.ContainerSpec.Labels[spec.LabelName] != "web" {
				t.Errorf("ownership labels overridden: %v / %v", s.Labels, s.TaskTemplate.ContainerSpec.Labels)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := BuildServiceSpec(tt.in(serviceWeb(t)))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, out)
		})
	}
}

// TestServiceInvalidRefusedByValidation checks that what the mapping cannot
// express is refused by validation, naming the field, so the mapping never
// meets it: a document that validates maps, and one that does not is never
// applied.
func TestServiceInvalidRefusedByValidation(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*spec.Service)
		wantErr string
	}{
		{"bad duration", func(s *spec.Service) { s.Spec.Update.Delay = "soon" }, "spec.update.delay"},
		{"bad restart window", func(s *spec.Service) { s.Spec.Restart.Window = "1 minute" }, "spec.restart.window"},
		{"bad healthcheck interval", func(s *spec.Service) { s.Spec.Healthcheck.Interval = "x" }, "spec.healthcheck.interval"},
		{"bad cpus", func(s *spec.Service) { s.Spec.Resources.Limits.CPUs = "half" }, "spec.resources.limits.cpus"},
		{"too precise cpus", func(s *spec.Service) { s.Spec.Resources.Reservations.CPUs = "0.0000000001" }, "spec.resources.reservations.cpus"},
		{"bad memory", func(s *spec.Service) { s.Spec.Resources.Limits.Memory = "lots" }, "spec.resources.limits.memory"},
		{"bad mode", func(s *spec.Service) { s.Spec.Mode = "job" }, "spec.mode"},
		{"global with maxPerNode", func(s *spec.Service) { s.Spec.Mode = "global" }, "spec.placement.maxPerNode"},
		{"bad mount type", func(s *spec.Service) { s.Spec.Mounts[0].Type = "nfs" }, "spec.mounts[0].type"},
		{"no image", func(s *spec.Service) { s.Spec.Image = "" }, "spec.image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := serviceWeb(t)
			s.APIVersion, s.Kind = spec.APIVersion, spec.KindService
			if err := spec.Validate(s); err != nil {
				t.Fatalf("the example itself is invalid: %v", err)
			}
			tt.edit(s)
			err := spec.Validate(s)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("validation error %v, want one naming %s", err, tt.wantErr)
			}
		})
	}
}

// TestServiceEffectiveReplicas checks the clamp.
func TestServiceEffectiveReplicas(t *testing.T) {
	mk := func(mode string, replicas *int, sc *spec.Scaling) *spec.Service {
		return &spec.Service{Spec: spec.ServiceSpec{Mode: mode, Replicas: replicas, Scaling: sc}}
	}
	bounds := &spec.Scaling{Min: 2, Max: 10}
	tests := []struct {
		name   string
		s      *spec.Service
		scaled *int
		want   int
	}{
		{"spec replicas", mk("", servicePtr(3), nil), nil, 3},
		{"unset replicas is Docker's 1", mk("", nil, nil), nil, 1},
		{"scaled wins", mk("replicated", servicePtr(3), bounds), servicePtr(7), 7},
		{"scaled below min", mk("replicated", servicePtr(3), bounds), servicePtr(1), 2},
		{"scaled above max", mk("replicated", servicePtr(3), bounds), servicePtr(50), 10},
		{"spec replicas above max", mk("", servicePtr(12), bounds), nil, 10},
		{"spec replicas below min", mk("", servicePtr(0), bounds), nil, 2},
		{"scaled to zero without bounds", mk("", servicePtr(3), nil), servicePtr(0), 0},
		{"max 0 is no upper bound", mk("", servicePtr(30), &spec.Scaling{Min: 1}), nil, 30},
		{"negative never", mk("", servicePtr(-4), nil), nil, 0},
		{"global", mk("global", servicePtr(3), bounds), servicePtr(5), 0},
		{"nil document", nil, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EffectiveReplicas(tt.s, tt.scaled); got != tt.want {
				t.Errorf("EffectiveReplicas = %d, want %d", got, tt.want)
			}
		})
	}
}

// serviceStored imitates what the engine stores for a created spec: the
// defaults it fills in and a network ID in place of the name.
func serviceStored(want swarm.ServiceSpec) *swarm.Service {
	s := enginetest.Clone(want)
	s.TaskTemplate.Runtime = swarm.RuntimeContainer
	s.TaskTemplate.ContainerSpec.Isolation = container.IsolationDefault
	// Stored defaults stand only where the spec has none: what a spec
	// sets is stored as sent (TestMappingAgreesWithDockerCLI's
	// EnsureServiceFields checks that on the Engine).
	if s.TaskTemplate.ContainerSpec.DNSConfig == nil {
		s.TaskTemplate.ContainerSpec.DNSConfig = &swarm.DNSConfig{}
	}
	if s.RollbackConfig == nil {
		s.RollbackConfig = &swarm.UpdateConfig{Parallelism: 1, FailureAction: "pause", Monitor: 5 * time.Second, Order: "stop-first"}
	}
	if s.EndpointSpec == nil {
		s.EndpointSpec = &swarm.EndpointSpec{Mode: swarm.ResolutionModeVIP}
	}
	svc := &swarm.Service{ID: "svc1", Spec: s}
	svc.Version.Index = 10
	return svc
}

// TestServicePlan checks planService's decisions.
func TestServicePlan(t *testing.T) {
	build := func(t *testing.T, replicas int, edit func(*spec.Service)) swarm.ServiceSpec {
		t.Helper()
		s := serviceWeb(t)
		if edit != nil {
			edit(s)
		}
		out, err := BuildServiceSpec(ServiceInput{Service: s, Replicas: replicas})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name       string
		want       func(t *testing.T) swarm.ServiceSpec
		have       func(t *testing.T) *swarm.Service
		wantKind   serviceActionKind
		wantReason string
	}{
		{"absent: create",
			func(t *testing.T) swarm.ServiceSpec { return build(t, 3, nil) },
			func(t *testing.T) *swarm.Service { return nil },
			serviceCreate, "absent"},
		{"equal hash and spec: none",
			func(t *testing.T) swarm.ServiceSpec { return build(t, 3, nil) },
			func(t *testing.T) *swarm.Service { return serviceStored(build(t, 3, nil)) },
			serviceNone, ""},
		{"changed spec: update",
			func(t *testing.T) swarm.ServiceSpec {
				return build(t, 3, func(s *spec.Service) { s.Spec.Env["LOG_LEVEL"] = "debug" })
			},
			func(t *testing.T) *swarm.Service { return serviceStored(build(t, 3, nil)) },
			serviceUpdate, "spec changed"},
		{"replicas only: update",
			func(t *testing.T) swarm.ServiceSpec { return build(t, 5, nil) },
			func(t *testing.T) *swarm.Service { return serviceStored(build(t, 3, nil)) },
			serviceUpdate, "replicas 3 -> 5"},
		{"spec and replicas: one update naming both",
			func(t *testing.T) swarm.ServiceSpec {
				return build(t, 5, func(s *spec.Service) { s.Spec.Image = "registry.example.com/web:2" })
			},
			func(t *testing.T) *swarm.Service { return serviceStored(build(t, 3, nil)) },
			serviceUpdate, "spec changed; replicas 3 -> 5"},
		{"hand edit under the same hash: update",
			func(t *testing.T) swarm.ServiceSpec { return build(t, 3, nil) },
			func(t *testing.T) *swarm.Service {
				s := serviceStored(build(t, 3, nil))
				s.Spec.TaskTemplate.ContainerSpec.Env = append(s.Spec.TaskTemplate.ContainerSpec.Env, "HAND=1")
				return s
			},
			serviceUpdate, "drift in TaskTemplate.ContainerSpec.Env"},
		{"hand-added mount: update",
			func(t *testing.T) swarm.ServiceSpec { return build(t, 3, nil) },
			func(t *testing.T) *swarm.Service {
				s := serviceStored(build(t, 3, nil))
				s.Spec.TaskTemplate.ContainerSpec.Mounts = append(s.Spec.TaskTemplate.ContainerSpec.Mounts, mount.Mount{Type: mount.TypeTmpfs, Target: "/x"})
				return s
			},
			serviceUpdate, "drift in TaskTemplate.ContainerSpec.Mounts"},
		{"hand-added capability: update",
			func(t *testing.T) swarm.ServiceSpec {
				return build(t, 3, func(s *spec.Service) { s.Spec.CapAdd = []string{"NET_ADMIN"} })
			},
			func(t *testing.T) *swarm.Service {
				s := serviceStored(build(t, 3, func(s *spec.Service) { s.Spec.CapAdd = []string{"NET_ADMIN"} }))
				s.Spec.TaskTemplate.ContainerSpec.CapabilityAdd = append(s.Spec.TaskTemplate.ContainerSpec.CapabilityAdd, "CAP_SYS_ADMIN")
				return s
			},
			serviceUpdate, "drift in TaskTemplate.ContainerSpec.CapabilityAdd"},
		{"hand edits of the user, stop grace period, hosts and ulimits: update",
			func(t *testing.T) swarm.ServiceSpec {
				return build(t, 3, func(s *spec.Service) {
					s.Spec.User, s.Spec.StopGracePeriod = "app", "30s"
					s.Spec.ExtraHosts = []string{"db:10.0.0.5"}
					s.Spec.Ulimits = map[string]spec.Ulimit{"nofile": {Soft: 1, Hard: 2}}
				})
			},
			func(t *testing.T) *swarm.Service {
				s := serviceStored(build(t, 3, func(s *spec.Service) {
					s.Spec.User, s.Spec.StopGracePeriod = "app", "30s"
					s.Spec.ExtraHosts = []string{"db:10.0.0.5"}
					s.Spec.Ulimits = map[string]spec.Ulimit{"nofile": {Soft: 1, Hard: 2}}
				}))
				cs := s.Spec.TaskTemplate.ContainerSpec
				cs.User, cs.StopGracePeriod = "root", servicePtr(time.Minute)
				cs.Hosts = []string{"10.0.0.6 db"}
				cs.Ulimits = []*container.Ulimit{{Name: "nofile", Soft: 1, Hard: 4}}
				return s
			},
			serviceUpdate, "drift in TaskTemplate.ContainerSpec.Hosts, TaskTemplate.ContainerSpec.StopGracePeriod, TaskTemplate.ContainerSpec.Ulimits, TaskTemplate.ContainerSpec.User"},
		{"hand-changed endpoint mode, rollback and log driver: update",
			func(t *testing.T) swarm.ServiceSpec {
				return build(t, 3, func(s *spec.Service) {
					s.Spec.EndpointMode = spec.EndpointDNSRR
					s.Spec.Rollback = &spec.UpdatePolicy{Delay: "5s"}
					s.Spec.Logging = &spec.Logging{Driver: "json-file"}
				})
			},
			func(t *testing.T) *swarm.Service {
				s := serviceStored(build(t, 3, func(s *spec.Service) {
					s.Spec.EndpointMode = spec.EndpointDNSRR
					s.Spec.Rollback = &spec.UpdatePolicy{Delay: "5s"}
					s.Spec.Logging = &spec.Logging{Driver: "json-file"}
				}))
				s.Spec.EndpointSpec = &swarm.EndpointSpec{Mode: swarm.ResolutionModeVIP}
				s.Spec.RollbackConfig.Delay = time.Second
				s.Spec.TaskTemplate.LogDriver = &swarm.Driver{Name: "local"}
				return s
			},
			serviceUpdate, "drift in EndpointSpec.Mode, RollbackConfig.Delay, TaskTemplate.LogDriver.Name"},
		{"engine's endpoint and rollback defaults when the document sets none are not drift",
			func(t *testing.T) swarm.ServiceSpec { return build(t, 3, nil) },
			func(t *testing.T) *swarm.Service {
				s := serviceStored(build(t, 3, nil))
				s.Spec.EndpointSpec = &swarm.EndpointSpec{Mode: swarm.ResolutionModeVIP}
				s.Spec.RollbackConfig = &swarm.UpdateConfig{Parallelism: 1, FailureAction: "pause", Monitor: 5 * time.Second, Order: "stop-first"}
				return s
			},
			serviceNone, ""},
		{"forced update counter is not drift",
			func(t *testing.T) swarm.ServiceSpec { return build(t, 3, nil) },
			func(t *testing.T) *swarm.Service {
				s := serviceStored(build(t, 3, nil))
				s.Spec.TaskTemplate.ForceUpdate = 4
				return s
			},
			serviceNone, ""},
		{"image tagged latest by the client is not drift",
			func(t *testing.T) swarm.ServiceSpec {
				return build(t, 3, func(s *spec.Service) { s.Spec.Image = "registry.example.com/web" })
			},
			func(t *testing.T) *swarm.Service {
				want := build(t, 3, func(s *spec.Service) { s.Spec.Image = "registry.example.com/web" })
				s := serviceStored(want)
				s.Spec.TaskTemplate.ContainerSpec.Image = "registry.example.com/web:latest"
				return s
			},
			serviceNone, ""},
		{"engine defaults for unset sections are not drift",
			func(t *testing.T) swarm.ServiceSpec {
				return build(t, 3, func(s *spec.Service) { s.Spec.Update, s.Spec.Restart, s.Spec.Resources = nil, nil, nil })
			},
			func(t *testing.T) *swarm.Service {
				s := serviceStored(build(t, 3, func(s *spec.Service) { s.Spec.Update, s.Spec.Restart, s.Spec.Resources = nil, nil, nil }))
				s.Spec.UpdateConfig = &swarm.UpdateConfig{Parallelism: 1, FailureAction: "pause", Monitor: 5 * time.Second, Order: "stop-first"}
				s.Spec.TaskTemplate.RestartPolicy = &swarm.RestartPolicy{Condition: "any", Delay: servicePtr(5 * time.Second), MaxAttempts: servicePtr(uint64(0))}
				s.Spec.TaskTemplate.Resources = &swarm.ResourceRequirements{Limits: &swarm.Limit{}, Reservations: &swarm.Resources{}}
				return s
			},
			serviceNone, ""},
		{"same name, not ours: conflict",
			func(t *testing.T) swarm.ServiceSpec { return build(t, 3, nil) },
			func(t *testing.T) *swarm.Service {
				return &swarm.Service{ID: "x", Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "web"}}}
			},
			serviceConflict, "service web exists and is not managed by swarmvlan"},
		{"same name, labelled managed=false: conflict",
			func(t *testing.T) swarm.ServiceSpec { return build(t, 3, nil) },
			func(t *testing.T) *swarm.Service {
				s := serviceStored(build(t, 3, nil))
				s.Spec.Labels[spec.LabelManaged] = "false"
				return s
			},
			serviceConflict, "service web exists and is not managed by swarmvlan"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := planService(tt.want(t), tt.have(t))
			if got.Kind != tt.wantKind || got.Reason != tt.wantReason {
				t.Errorf("planService = %v %q, want %v %q", got.Kind, got.Reason, tt.wantKind, tt.wantReason)
			}
		})
	}
}

// serviceFakeWorld is a fake engine with the web example's network and
// secret in place.
func serviceFakeWorld(t *testing.T) *enginetest.Fake {
	t.Helper()
	f := enginetest.NewFake()
	f.Networks["netvlan40"] = networkInspectFixture{Name: "vlan40", ID: "netvlan40", Scope: "swarm"}.inspect()
	f.Secrets = []swarm.Secret{{ID: "sec1", Spec: swarm.SecretSpec{Annotations: swarm.Annotations{Name: "db_password"}}}}
	return f
}

// networkInspectFixture builds a stored network for fakes.
type networkInspectFixture struct{ Name, ID, Scope string }

func (n networkInspectFixture) inspect() *network.Inspect {
	return &network.Inspect{Name: n.Name, ID: n.ID, Scope: n.Scope, Driver: "macvlan", Labels: spec.OwnerLabels(spec.KindVLAN, n.Name)}
}

// TestServiceEnsureFake drives EnsureService against the stateful fake
// through the edge cases that are hard to provoke on a real engine.
func TestServiceEnsureFake(t *testing.T) {
	ctx := context.Background()
	web := serviceWeb(t)

	t.Run("create, then nothing, then one update per change", func(t *testing.T) {
		f := serviceFakeWorld(t)
		st, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 3})
		if err != nil {
			t.Fatal(err)
		}
		if st.Message != "created" || st.ID == "" || st.Desired != 3 {
			t.Fatalf("status %+v", st)
		}
		stored := f.Services[st.ID].Spec
		if got := stored.TaskTemplate.Networks; len(got) != 1 || got[0].Target != "netvlan40" {
			t.Errorf("networks stored as %v, want the network's ID", got)
		}
		if got := stored.TaskTemplate.ContainerSpec.Secrets; len(got) != 1 || got[0].SecretID != "sec1" {
			t.Errorf("secrets stored as %+v, want the secret's ID", got)
		}
		if _, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 3}); err != nil {
			t.Fatal(err)
		}
		if n := f.Calls()["ServiceUpdate"]; n != 0 {
			t.Errorf("unchanged service got %d updates", n)
		}
		st, err = EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 4})
		if err != nil {
			t.Fatal(err)
		}
		if n := f.Calls()["ServiceUpdate"]; n != 1 || st.Message != "updated: replicas 3 -> 4" {
			t.Errorf("after a scale: %d updates, message %q", n, st.Message)
		}
		if r := svcReplicas(f.Services[st.ID].Spec); r != 4 {
			t.Errorf("stored replicas %d, want 4", r)
		}
	})

	t.Run("sparse sections converge despite engine-filled values", func(t *testing.T) {
		f := serviceFakeWorld(t)
		sparse := ServiceInput{Service: &spec.Service{Metadata: spec.ObjectMeta{Name: "sparse"}, Spec: spec.ServiceSpec{
			Image: "img", Update: &spec.UpdatePolicy{}, Restart: &spec.RestartPolicy{},
		}}}
		for range 3 {
			if _, err := EnsureService(ctx, f, sparse); err != nil {
				t.Fatal(err)
			}
		}
		if c := f.Calls(); c["ServiceCreate"] != 1 || c["ServiceUpdate"] != 0 {
			t.Errorf("%d creates, %d updates; want 1, 0", c["ServiceCreate"], c["ServiceUpdate"])
		}
	})

	t.Run("version conflicts are retried", func(t *testing.T) {
		f := serviceFakeWorld(t)
		if _, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 3}); err != nil {
			t.Fatal(err)
		}
		oos := errors.New("rpc error: code = Unknown desc = update out of sequence")
		f.FailNext("ServiceUpdate", oos, oos)
		if _, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 2}); err != nil {
			t.Fatalf("two conflicts then success: %v", err)
		}
		if n := f.Calls()["ServiceUpdate"]; n != 3 {
			t.Errorf("%d update calls, want 3", n)
		}
		f.FailNext("ServiceUpdate", oos, oos, oos, oos, oos, oos, oos)
		_, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 5})
		if err == nil || !strings.Contains(err.Error(), "update out of sequence") {
			t.Errorf("endless conflicts: error %v", err)
		}
		if n := f.Calls()["ServiceUpdate"]; n != 3+svcMaxConflictRetries+1 {
			t.Errorf("%d update calls, want a bounded %d", n, 3+svcMaxConflictRetries+1)
		}
	})

	t.Run("unmanaged service is left alone", func(t *testing.T) {
		f := serviceFakeWorld(t)
		id, _ := f.ServiceCreate(ctx, swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "web"}})
		st, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 3})
		var cerr *engine.ConflictError
		if !errors.As(err, &cerr) || st.Message != "service web exists and is not managed by swarmvlan" {
			t.Errorf("err %v, status %+v", err, st)
		}
		if f.Calls()["ServiceUpdate"] != 0 || f.Services[id].Version.Index != 1 {
			t.Error("unmanaged service was changed")
		}
		if err := RemoveService(ctx, f, "web"); !errors.As(err, &cerr) {
			t.Errorf("RemoveService of an unmanaged service: %v", err)
		}
		if f.Services[id] == nil {
			t.Error("unmanaged service was removed")
		}
	})

	t.Run("docker refusing the spec is terminal and names the field", func(t *testing.T) {
		f := serviceFakeWorld(t)
		f.FailNext("ServiceCreate", cerrdefs.ErrInvalidArgument.WithMessage("Error response from daemon: invalid mount config for type \"bind\": bind source path does not exist: /shared_storage/web"))
		_, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 3})
		var refusedErr *RefusedError
		if !errors.As(err, &refusedErr) || refusedErr.Field != "spec.mounts" || !strings.Contains(err.Error(), "bind source path does not exist") {
			t.Fatalf("error %v, want a RefusedError naming spec.mounts with Docker's words", err)
		}
		if !serviceErrTerminal(err) {
			t.Error("a refused spec is retried with backoff; want it terminal")
		}
		f.FailNext("ServiceCreate", errors.New("connection refused"))
		if _, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 3}); err == nil || serviceErrTerminal(err) {
			t.Errorf("a failed connection: %v, terminal %v; want a retry", err, serviceErrTerminal(err))
		}
	})

	t.Run("missing secret is named and terminal", func(t *testing.T) {
		f := serviceFakeWorld(t)
		f.Secrets = nil
		_, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 3})
		var missing *MissingError
		if !errors.As(err, &missing) || missing.Field != "spec.secrets[0]" || !strings.Contains(err.Error(), `secret "db_password" does not exist`) {
			t.Errorf("error %v, want a MissingError naming spec.secrets[0] and the secret", err)
		}
		if !serviceErrTerminal(err) {
			t.Error("a missing secret is retried with backoff; want it terminal")
		}
		if f.Calls()["ServiceCreate"] != 0 {
			t.Error("service created without its secret")
		}
	})

	t.Run("missing network is named", func(t *testing.T) {
		f := serviceFakeWorld(t)
		delete(f.Networks, "netvlan40")
		_, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 3})
		if err == nil || !strings.Contains(err.Error(), `network "vlan40" not found`) {
			t.Errorf("error %v, want it to name the network", err)
		}
	})

	t.Run("a name that resolves to another service's ID is not that service", func(t *testing.T) {
		f := serviceFakeWorld(t)
		// The engine resolves names, IDs and ID prefixes alike; here "web"
		// is the ID of a service named "other".
		other := &swarm.Service{ID: "web", Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "other", Labels: spec.OwnerLabels(spec.KindService, "other")}}}
		other.Version.Index = 7
		f.Services["web"] = other
		st, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
		if st.ID == "web" || st.Message != "created" {
			t.Errorf("status %+v, want a new service", st)
		}
		if other.Version.Index != 7 || other.Spec.Name != "other" || f.Calls()["ServiceUpdate"] != 0 {
			t.Error("the other service was changed")
		}
	})

	t.Run("remove", func(t *testing.T) {
		f := serviceFakeWorld(t)
		st, err := EnsureService(ctx, f, ServiceInput{Service: web, Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := RemoveService(ctx, f, "web"); err != nil {
			t.Fatal(err)
		}
		if f.Services[st.ID] != nil {
			t.Error("service still there")
		}
		if err := RemoveService(ctx, f, "web"); err != nil {
			t.Errorf("removing an absent service: %v", err)
		}
	})
}

// TestServiceObserveFake checks task statuses and where addresses come
// from.
func TestServiceObserveFake(t *testing.T) {
	ctx := context.Background()
	f := serviceFakeWorld(t)
	st, err := EnsureService(ctx, f, ServiceInput{Service: serviceWeb(t), Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	att := func(addr ...string) []swarm.NetworkAttachment {
		a := swarm.NetworkAttachment{Addresses: addr}
		a.Network.ID = "netvlan40"
		a.Network.Spec.Name = "vlan40"
		return []swarm.NetworkAttachment{a}
	}
	f.Tasks = []swarm.Task{
		{ID: "t1", ServiceID: st.ID, Slot: 1, NodeID: "node1", DesiredState: swarm.TaskStateRunning, Status: swarm.TaskStatus{State: swarm.TaskStateRunning}, NetworksAttachments: att()},
		{ID: "t2", ServiceID: st.ID, Slot: 2, NodeID: "node2", DesiredState: swarm.TaskStateRunning, Status: swarm.TaskStatus{State: swarm.TaskStateStarting}, NetworksAttachments: att("172.80.2.7/16")},
		{ID: "t0", ServiceID: st.ID, Slot: 1, NodeID: "node1", DesiredState: swarm.TaskStateShutdown, Status: swarm.TaskStatus{State: swarm.TaskStateFailed}},
		{ID: "u1", ServiceID: "other", Slot: 1, DesiredState: swarm.TaskStateRunning, Status: swarm.TaskStatus{State: swarm.TaskStateRunning}},
	}
	f.Containers = []container.Summary{{
		ID:     "c1",
		Labels: map[string]string{"com.docker.swarm.service.id": st.ID, "com.docker.swarm.task.id": "t1"},
		NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{
			"vlan40": {NetworkID: "netvlan40", IPAddress: "172.80.1.3"},
		}},
	}}
	got, err := ObserveService(ctx, f, "web")
	if err != nil {
		t.Fatal(err)
	}
	want := ServiceStatus{Name: "web", ID: st.ID, Desired: 2, Running: 1, Tasks: []TaskStatus{
		{ID: "t1", Slot: 1, Node: "node1", State: "running", Addresses: map[string]string{"vlan40": "172.80.1.3"}},
		{ID: "t2", Slot: 2, Node: "node2", State: "starting", Addresses: map[string]string{"vlan40": "172.80.2.7"}},
	}}
	if !reflect.DeepEqual(got, want) {
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		t.Errorf("got  %s\nwant %s", gj, wj)
	}
	absent, err := ObserveService(ctx, f, "nope")
	if err != nil || absent.Message != "absent" {
		t.Errorf("absent service: %+v, %v", absent, err)
	}
}

// TestServiceResyncFake checks a resync pass creates, updates and leaves
// alone the right services with a fixed number of list calls.
func TestServiceResyncFake(t *testing.T) {
	ctx := context.Background()
	f := serviceFakeWorld(t)
	mk := func(name string, replicas int) ServiceInput {
		return ServiceInput{Service: &spec.Service{Metadata: spec.ObjectMeta{Name: name}, Spec: spec.ServiceSpec{Image: "img:1", Networks: []string{"vlan40"}}}, Replicas: replicas}
	}
	for _, in := range []ServiceInput{mk("a", 1), mk("b", 1), mk("gone", 1)} {
		if _, err := EnsureService(ctx, f, in); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.ServiceCreate(ctx, swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "theirs"}}); err != nil {
		t.Fatal(err)
	}
	before := f.Calls()
	res, err := ServiceResync(ctx, f, []ServiceInput{mk("a", 1), mk("b", 3), mk("c", 1), mk("theirs", 1)})
	var cerr *engine.ConflictError
	if !errors.As(err, &cerr) || cerr.Name != "theirs" {
		t.Errorf("error %v, want the conflict on theirs only", err)
	}
	after := f.Calls()
	delta := func(m string) uint64 { return after[m] - before[m] }
	if res.Created != 1 || res.Updated != 1 || res.Unchanged != 1 {
		t.Errorf("created %d updated %d unchanged %d, want 1 1 1", res.Created, res.Updated, res.Unchanged)
	}
	if !reflect.DeepEqual(res.Orphans, []string{"gone"}) {
		t.Errorf("orphans %v, want [gone]", res.Orphans)
	}
	for m, want := range map[string]uint64{"ServiceList": 1, "NetworkList": 1, "TaskList": 1, "ServiceUpdate": 1, "ServiceCreate": 1, "ServiceRemove": 0} {
		if delta(m) != want {
			t.Errorf("%s called %d times, want %d", m, delta(m), want)
		}
	}
	if res.Statuses["theirs"].Message != "service theirs exists and is not managed by swarmvlan" {
		t.Errorf("status of theirs: %+v", res.Statuses["theirs"])
	}
	if st := res.Statuses["b"]; st.Desired != 3 || st.Message != "updated: replicas 1 -> 3" {
		t.Errorf("status of b: %+v", st)
	}
}

// TestServiceResyncMemo: a pass with the memo skips the comparison of a
// service found matching at the same Swarm version, and still repairs a
// hand edit (a new version) and follows a new count.
func TestServiceResyncMemo(t *testing.T) {
	ctx := context.Background()
	f := serviceFakeWorld(t)
	mk := func(name string, replicas int) ServiceInput {
		return ServiceInput{Service: &spec.Service{Metadata: spec.ObjectMeta{Name: name}, Spec: spec.ServiceSpec{Image: "img:1", Networks: []string{"vlan40"}}}, Replicas: replicas}
	}
	ins := []ServiceInput{mk("a", 1), mk("b", 1)}
	var memo ServicePlanMemo
	pass := func(ins []ServiceInput, created, updated, unchanged int) {
		t.Helper()
		res, err := ServiceResyncMemo(ctx, f, ins, &memo)
		if err != nil {
			t.Fatal(err)
		}
		if res.Created != created || res.Updated != updated || res.Unchanged != unchanged {
			t.Fatalf("created %d updated %d unchanged %d, want %d %d %d", res.Created, res.Updated, res.Unchanged, created, updated, unchanged)
		}
	}
	pass(ins, 2, 0, 0)
	pass(ins, 0, 0, 2)
	if len(memo.matched) != 2 {
		t.Fatalf("memo holds %d services, want 2", len(memo.matched))
	}
	pass(ins, 0, 0, 2)

	// A hand edit of a's image (a new version): compared again, repaired.
	handEdit := func(name string) {
		t.Helper()
		s := f.ServiceLookup(name)
		edited := s.Spec
		edited.TaskTemplate.ContainerSpec = enginetest.Clone(s.Spec.TaskTemplate.ContainerSpec)
		edited.TaskTemplate.ContainerSpec.Image = "img:hand"
		if err := f.ServiceUpdate(ctx, s.ID, s.Version, edited); err != nil {
			t.Fatal(err)
		}
		pass(ins, 0, 1, 1)
		if got := f.ServiceLookup(name).Spec.TaskTemplate.ContainerSpec.Image; got != "img:1" {
			t.Fatalf("%s's image after the pass: %q, want the document's", name, got)
		}
	}
	handEdit("a")
	// A new count for b: wanted differently, updated.
	pass([]ServiceInput{mk("a", 1), mk("b", 2)}, 0, 1, 1)
	pass([]ServiceInput{mk("a", 1), mk("b", 2)}, 0, 0, 2)

	// The same documents pass after pass (as the view hands them out):
	// the second pass does not even build their specs. That it does not
	// is shown by a change made inside a document, which the view never
	// does (it decodes a changed document anew): unseen until the
	// document is another.
	ins = []ServiceInput{mk("a", 1), mk("b", 2)}
	pass(ins, 0, 0, 2)
	ins[0].Service.Spec.Image = "img:inplace"
	pass(ins, 0, 0, 2)
	ins[0].Service.Spec.Image = "img:1"
	// a's network recreated under its name with another ID: the same
	// input, but a name that resolves differently: compared, updated.
	delete(f.Networks, "netvlan40")
	f.Networks["netvlan40b"] = networkInspectFixture{Name: "vlan40", ID: "netvlan40b", Scope: "swarm"}.inspect()
	pass(ins, 0, 2, 0)
	for _, n := range []string{"a", "b"} {
		if nets := f.ServiceLookup(n).Spec.TaskTemplate.Networks; len(nets) != 1 || nets[0].Target != "netvlan40b" {
			t.Fatalf("%s's networks after the network was recreated: %+v", n, nets)
		}
	}
	pass(ins, 0, 0, 2)
	// The same document with a new count: another input.
	ins[1].Replicas = 3
	pass(ins, 0, 1, 1)
	if r := f.ServiceLookup("b").Spec.Mode.Replicated.Replicas; *r != 3 {
		t.Fatalf("b's replicas %d, want 3", *r)
	}
	// A hand edit under the same input: a new version, repaired.
	handEdit("b")
}

func TestPlanServiceRefusesAnotherInstallationsService(t *testing.T) {
	want := swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "web", Labels: map[string]string{
		spec.LabelManaged: "true", spec.LabelOwner: "ours", spec.LabelSpecHash: "h"}}}
	for _, tc := range []struct {
		owner string
		kind  serviceActionKind
	}{
		{"theirs", serviceConflict},
		{"ours", serviceNone},
		{"", serviceUpdate}, // made before owners were recorded: adopted
	} {
		have := &swarm.Service{Spec: swarm.ServiceSpec{Annotations: swarm.Annotations{Name: "web", Labels: map[string]string{
			spec.LabelManaged: "true", spec.LabelSpecHash: "h"}}}}
		if tc.owner != "" {
			have.Spec.Labels[spec.LabelOwner] = tc.owner
		}
		if got := planService(want, have); got.Kind != tc.kind {
			t.Errorf("have owner %q: plan %v (%s), want %v", tc.owner, got.Kind, got.Reason, tc.kind)
		}
	}
}

// TestTaskProblems checks that a service's status names what Swarm says of
// its tasks that do not run, such as a rejection for a missing network.
func TestTaskProblems(t *testing.T) {
	tasks := []TaskStatus{
		{ID: "t1", Slot: 1, Node: "n1", State: "running"},
		{ID: "t2", Slot: 2, Node: "n2", State: "rejected", Err: `configuration network "v29-config" does not exist`},
		{ID: "t3", Slot: 3, Node: "n3", State: "pending", Err: "no suitable node (scheduling constraints not satisfied on 3 nodes)"},
		{ID: "t4", Slot: 4, Node: "n3", State: "pending"},
	}
	want := `task 2 on node n2 rejected: configuration network "v29-config" does not exist; ` +
		"task 3 on node n3 pending: no suitable node (scheduling constraints not satisfied on 3 nodes)"
	if got := taskProblems(tasks); got != want {
		t.Errorf("taskProblems = %q\nwant %q", got, want)
	}
	if got := taskProblems(tasks[:1]); got != "" {
		t.Errorf("taskProblems of running tasks = %q", got)
	}
	many := []TaskStatus{}
	for i := range 5 {
		many = append(many, TaskStatus{Slot: i + 1, Node: "n1", State: "rejected", Err: "x"})
	}
	if got := taskProblems(many); !strings.HasSuffix(got, "; …") || strings.Count(got, "task ") != 3 {
		t.Errorf("taskProblems of 5 = %q, want 3 and an ellipsis", got)
	}
}
