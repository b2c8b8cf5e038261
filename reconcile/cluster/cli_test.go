package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/lab"
	"swarmvlan/reconcile"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
)

// cliExtra are documents for the forms users write that no file above
// covers: memory in every suffix, fractional CPUs, durations with several
// units, every update failure action and order, every restart condition,
// global mode and a per-node maximum.
const cliExtra = `
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: mem-512m}
spec:
  image: app:1
  networks: [vlan40]
  resources:
    limits: {memory: 512m, cpus: "0.5"}
    reservations: {memory: 512Mi, cpus: "0.25"}
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: mem-512-upper}
spec:
  image: app:1
  networks: [vlan40]
  resources:
    limits: {memory: 512M, cpus: "1.25"}
    reservations: {memory: 512mb, cpus: "0.125"}
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: mem-gibi}
spec:
  image: app:1
  networks: [vlan40]
  resources:
    limits: {memory: 1.5Gi, cpus: "2"}
    reservations: {memory: 1.5G}
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: mem-other}
spec:
  image: app:1
  networks: [vlan40]
  resources:
    limits: {memory: 2g, cpus: "0.01"}
    reservations: {memory: 4096k}
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: update-pause}
spec:
  image: app:1
  networks: [vlan40]
  update: {parallelism: 3, delay: 1m30s, monitor: 500ms, failureAction: pause, order: stop-first}
  restart: {condition: none, delay: 1m30s, window: 500ms, maxAttempts: 2}
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: update-continue}
spec:
  image: app:1
  networks: [vlan40]
  update: {delay: 500ms, monitor: 1m30s, failureAction: continue, order: start-first}
  restart: {condition: on-failure, delay: 500ms, window: 1h2m3s}
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: update-rollback}
spec:
  image: app:1
  networks: [vlan40]
  update: {parallelism: 0, failureAction: rollback, order: start-first}
  restart: {condition: any, maxAttempts: 0}
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: global}
spec:
  image: app:1
  networks: [vlan40]
  mode: global
  healthcheck: {test: ["CMD-SHELL", "/app -health"], interval: 1m30s, timeout: 500ms, retries: 2, startPeriod: 1m30s}
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: per-node}
spec:
  image: app:1
  networks: [vlan40]
  replicas: 4
  placement: {maxPerNode: 2}
  healthcheck: {test: ["NONE"]}
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: health-cmd}
spec:
  image: app:1
  networks: [vlan40]
  healthcheck: {test: ["CMD", "/app", "-health"], interval: 250ms, timeout: 1.5s, startPeriod: 0s}
`

// cliFields are documents for the container, security, DNS, logging and
// endpoint fields, each created both with the docker CLI and through
// cluster.EnsureService (TestMappingAgreesWithDockerCLI/EnsureServiceFields).
const cliFields = `
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: fields-container}
spec:
  image: app:1
  networks: [vlan40]
  user: "1000:1000"
  workdir: /srv/app
  hostname: "web-{{.Task.Slot}}.{{.Node.Hostname}}"
  stopSignal: SIGINT
  stopGracePeriod: 1m30s
  init: true
  readOnly: true
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: fields-container-2}
spec:
  image: app:1
  networks: [vlan40]
  user: nobody
  hostname: plain-host
  stopSignal: "15"
  stopGracePeriod: 0s
  init: false
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: fields-security}
spec:
  image: app:1
  networks: [vlan40]
  capAdd: [net_admin, CAP_SYS_TIME, Chown]
  capDrop: [NET_ADMIN, mknod]
  sysctls: {net.ipv4.ip_forward: "1", net.ipv4.ip_local_port_range: "1024 65000", kernel.shmmax: "68719476736"}
  ulimits:
    nofile: {soft: 1024, hard: 2048}
    core: {soft: 0, hard: 0}
    nproc: {soft: 512, hard: 512}
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: fields-all-caps}
spec:
  image: app:1
  networks: [vlan40]
  capAdd: [ALL]
  capDrop: [all, NET_RAW]
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: fields-dns}
spec:
  image: app:1
  networks: [vlan40]
  dns:
    servers: [10.0.0.2, "2001:db8::53"]
    search: [lab.example.com, example.com]
    options: ["ndots:2", "timeout:1", rotate]
  extraHosts: ["db.local:10.0.0.5", "v6.local:fd00::5", "db.local:10.0.0.6"]
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: fields-dns-search}
spec:
  image: app:1
  networks: [vlan40]
  dns: {search: [corp]}
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: fields-rollout}
spec:
  image: app:1
  networks: [vlan40]
  logging: {driver: json-file, options: {max-size: 10m, max-file: "3"}}
  rollback: {parallelism: 3, delay: 1m30s, monitor: 500ms, failureAction: continue, order: start-first}
  endpointMode: dnsrr
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: fields-rollout-2}
spec:
  image: app:1
  networks: [vlan40]
  logging: {driver: none}
  rollback: {parallelism: 0, failureAction: pause}
  endpointMode: vip
---
apiVersion: swarmvlan/v1
kind: Service
metadata: {name: fields-rollout-3}
spec:
  image: app:1
  networks: [vlan40]
  rollback: {delay: 2s}
`

// cliDocuments are every valid Service document and the inline ones.
func cliDocuments(t *testing.T) []sourcedService {
	t.Helper()
	docs := append(validServices(t), servicesIn(t, "inline", []byte(cliExtra))...)
	return append(docs, servicesIn(t, "fields", []byte(cliFields))...)
}

// cliArgs is the `docker service create` command line for the document's
// resources, durations and modes, each written with the document's own
// text, so the CLI's parsers read exactly what spec's parsers read. Networks,
// secrets and mounts are left out: the comparison is about values, and the
// service runs no task (--replicas 0).
func cliArgs(name string, s *spec.Service) []string {
	ss := s.Spec
	args := []string{"service", "create", "--detach", "--no-resolve-image", "--name", name}
	add := func(flag, v string) {
		if v != "" {
			args = append(args, flag, v)
		}
	}
	if ss.IsGlobal() {
		args = append(args, "--mode", "global")
	} else {
		args = append(args, "--replicas", "0")
	}
	if r := ss.Resources; r != nil {
		if l := r.Limits; l != nil {
			add("--limit-cpu", l.CPUs)
			add("--limit-memory", cliMemory(l.Memory))
		}
		if l := r.Reservations; l != nil {
			add("--reserve-cpu", l.CPUs)
			add("--reserve-memory", cliMemory(l.Memory))
		}
	}
	if p := ss.Placement; p != nil && p.MaxPerNode > 0 {
		add("--replicas-max-per-node", strconv.Itoa(p.MaxPerNode))
	}
	if u := ss.Update; u != nil {
		if u.Parallelism != nil {
			add("--update-parallelism", strconv.Itoa(*u.Parallelism))
		}
		add("--update-delay", string(u.Delay))
		add("--update-monitor", string(u.Monitor))
		add("--update-failure-action", u.FailureAction)
		add("--update-order", u.Order)
	}
	if r := ss.Restart; r != nil {
		add("--restart-condition", r.Condition)
		add("--restart-delay", string(r.Delay))
		if r.MaxAttempts != nil {
			add("--restart-max-attempts", strconv.Itoa(*r.MaxAttempts))
		}
		add("--restart-window", string(r.Window))
	}
	if h := ss.Healthcheck; h != nil {
		switch {
		case len(h.Test) == 1 && h.Test[0] == "NONE":
			args = append(args, "--no-healthcheck")
		case len(h.Test) == 2 && h.Test[0] == "CMD-SHELL":
			// --health-cmd always makes a CMD-SHELL test; a CMD test
			// has no CLI spelling, so only its timings are compared.
			add("--health-cmd", h.Test[1])
		}
		if len(h.Test) != 1 || h.Test[0] != "NONE" {
			add("--health-interval", string(h.Interval))
			add("--health-timeout", string(h.Timeout))
			if h.Retries != 0 {
				add("--health-retries", strconv.Itoa(h.Retries))
			}
			add("--health-start-period", string(h.StartPeriod))
		}
	}
	add("--user", ss.User)
	add("--workdir", ss.Workdir)
	add("--hostname", ss.Hostname)
	add("--stop-signal", ss.StopSignal)
	add("--stop-grace-period", string(ss.StopGracePeriod))
	if ss.Init != nil {
		args = append(args, "--init="+strconv.FormatBool(*ss.Init))
	}
	if ss.ReadOnly {
		args = append(args, "--read-only")
	}
	for _, c := range ss.CapAdd {
		add("--cap-add", c)
	}
	for _, c := range ss.CapDrop {
		add("--cap-drop", c)
	}
	for _, k := range slices.Sorted(maps.Keys(ss.Sysctls)) {
		add("--sysctl", k+"="+ss.Sysctls[k])
	}
	for _, k := range slices.Sorted(maps.Keys(ss.Ulimits)) {
		add("--ulimit", fmt.Sprintf("%s=%d:%d", k, ss.Ulimits[k].Soft, ss.Ulimits[k].Hard))
	}
	if d := ss.DNS; d != nil {
		for _, v := range d.Servers {
			add("--dns", v)
		}
		for _, v := range d.Search {
			add("--dns-search", v)
		}
		for _, v := range d.Options {
			add("--dns-option", v)
		}
	}
	for _, h := range ss.ExtraHosts {
		add("--host", h)
	}
	if l := ss.Logging; l != nil {
		add("--log-driver", l.Driver)
		for _, k := range slices.Sorted(maps.Keys(l.Options)) {
			add("--log-opt", k+"="+l.Options[k])
		}
	}
	if u := ss.Rollback; u != nil {
		if u.Parallelism != nil {
			add("--rollback-parallelism", strconv.Itoa(*u.Parallelism))
		}
		add("--rollback-delay", string(u.Delay))
		add("--rollback-monitor", string(u.Monitor))
		add("--rollback-failure-action", u.FailureAction)
		add("--rollback-order", u.Order)
	}
	add("--endpoint-mode", ss.EndpointMode)
	return append(args, lab.ImageTestApp)
}

// cliMemory is a document's memory quantity in the docker CLI's spelling:
// the text itself, except that Ki, Mi, Gi and Ti, which the CLI's parser
// (go-units' RAMInBytes) refuses ("invalid suffix: 'mi'"), are written as
// the K, M, G and T that spec.QuantityBytes says they equal.
func cliMemory(m string) string {
	if n := len(m); n >= 2 && m[n-1] == 'i' && strings.ContainsRune("KMGT", rune(m[n-2])) {
		return m[:n-1]
	}
	return m
}

// cliCheck is one field a document sets, read out of a ServiceSpec.
type cliCheck struct {
	field string
	get   func(swarm.ServiceSpec) any
}

// cliUnset stands for a field a spec leaves out (a nil struct on the way).
const cliUnset = "<unset>"

// cliChecks lists the resource, duration and mode fields the document
// sets; the CLI fills in defaults of its own for the others, so those are
// not compared.
func cliChecks(s *spec.Service) []cliCheck {
	ss := s.Spec
	var out []cliCheck
	add := func(set bool, field string, get func(swarm.ServiceSpec) any) {
		if set {
			out = append(out, cliCheck{field, get})
		}
	}
	add(true, "Mode", func(x swarm.ServiceSpec) any { return x.Mode })

	limits := func(x swarm.ServiceSpec) *swarm.Limit {
		if x.TaskTemplate.Resources == nil || x.TaskTemplate.Resources.Limits == nil {
			return nil
		}
		return x.TaskTemplate.Resources.Limits
	}
	reservations := func(x swarm.ServiceSpec) *swarm.Resources {
		if x.TaskTemplate.Resources == nil || x.TaskTemplate.Resources.Reservations == nil {
			return nil
		}
		return x.TaskTemplate.Resources.Reservations
	}
	if r := ss.Resources; r != nil {
		if l := r.Limits; l != nil {
			add(l.CPUs != "", "Resources.Limits.NanoCPUs", func(x swarm.ServiceSpec) any {
				if l := limits(x); l != nil {
					return l.NanoCPUs
				}
				return cliUnset
			})
			add(l.Memory != "", "Resources.Limits.MemoryBytes", func(x swarm.ServiceSpec) any {
				if l := limits(x); l != nil {
					return l.MemoryBytes
				}
				return cliUnset
			})
		}
		if l := r.Reservations; l != nil {
			add(l.CPUs != "", "Resources.Reservations.NanoCPUs", func(x swarm.ServiceSpec) any {
				if r := reservations(x); r != nil {
					return r.NanoCPUs
				}
				return cliUnset
			})
			add(l.Memory != "", "Resources.Reservations.MemoryBytes", func(x swarm.ServiceSpec) any {
				if r := reservations(x); r != nil {
					return r.MemoryBytes
				}
				return cliUnset
			})
		}
	}

	if p := ss.Placement; p != nil {
		add(p.MaxPerNode > 0, "Placement.MaxReplicas", func(x swarm.ServiceSpec) any {
			if x.TaskTemplate.Placement == nil {
				return cliUnset
			}
			return x.TaskTemplate.Placement.MaxReplicas
		})
	}

	update := func(f func(*swarm.UpdateConfig) any) func(swarm.ServiceSpec) any {
		return func(x swarm.ServiceSpec) any {
			if x.UpdateConfig == nil {
				return cliUnset
			}
			return f(x.UpdateConfig)
		}
	}
	if u := ss.Update; u != nil {
		add(u.Parallelism != nil, "UpdateConfig.Parallelism", update(func(c *swarm.UpdateConfig) any { return c.Parallelism }))
		add(u.Delay != "", "UpdateConfig.Delay", update(func(c *swarm.UpdateConfig) any { return c.Delay }))
		add(u.Monitor != "", "UpdateConfig.Monitor", update(func(c *swarm.UpdateConfig) any { return c.Monitor }))
		add(u.FailureAction != "", "UpdateConfig.FailureAction", update(func(c *swarm.UpdateConfig) any { return c.FailureAction }))
		add(u.Order != "", "UpdateConfig.Order", update(func(c *swarm.UpdateConfig) any { return c.Order }))
	}

	rollback := func(f func(*swarm.UpdateConfig) any) func(swarm.ServiceSpec) any {
		return func(x swarm.ServiceSpec) any {
			if x.RollbackConfig == nil {
				return cliUnset
			}
			return f(x.RollbackConfig)
		}
	}
	if u := ss.Rollback; u != nil {
		add(u.Parallelism != nil, "RollbackConfig.Parallelism", rollback(func(c *swarm.UpdateConfig) any { return c.Parallelism }))
		add(u.Delay != "", "RollbackConfig.Delay", rollback(func(c *swarm.UpdateConfig) any { return c.Delay }))
		add(u.Monitor != "", "RollbackConfig.Monitor", rollback(func(c *swarm.UpdateConfig) any { return c.Monitor }))
		add(u.FailureAction != "", "RollbackConfig.FailureAction", rollback(func(c *swarm.UpdateConfig) any { return c.FailureAction }))
		add(u.Order != "", "RollbackConfig.Order", rollback(func(c *swarm.UpdateConfig) any { return c.Order }))
	}
	add(ss.Logging != nil, "LogDriver", func(x swarm.ServiceSpec) any {
		if x.TaskTemplate.LogDriver == nil {
			return cliUnset
		}
		return *x.TaskTemplate.LogDriver
	})
	add(ss.EndpointMode != "", "EndpointSpec.Mode", func(x swarm.ServiceSpec) any {
		if x.EndpointSpec == nil {
			return cliUnset
		}
		return x.EndpointSpec.Mode
	})

	restart := func(f func(*swarm.RestartPolicy) any) func(swarm.ServiceSpec) any {
		return func(x swarm.ServiceSpec) any {
			if x.TaskTemplate.RestartPolicy == nil {
				return cliUnset
			}
			return f(x.TaskTemplate.RestartPolicy)
		}
	}
	if r := ss.Restart; r != nil {
		add(r.Condition != "", "RestartPolicy.Condition", restart(func(p *swarm.RestartPolicy) any { return p.Condition }))
		add(r.Delay != "", "RestartPolicy.Delay", restart(func(p *swarm.RestartPolicy) any { return cliDeref(p.Delay) }))
		add(r.MaxAttempts != nil, "RestartPolicy.MaxAttempts", restart(func(p *swarm.RestartPolicy) any { return cliDeref(p.MaxAttempts) }))
		add(r.Window != "", "RestartPolicy.Window", restart(func(p *swarm.RestartPolicy) any { return cliDeref(p.Window) }))
	}

	health := func(f func(*container.HealthConfig) any) func(swarm.ServiceSpec) any {
		return func(x swarm.ServiceSpec) any {
			cs := x.TaskTemplate.ContainerSpec
			if cs == nil || cs.Healthcheck == nil {
				return cliUnset
			}
			return f(cs.Healthcheck)
		}
	}
	if h := ss.Healthcheck; h != nil {
		cmdShell := len(h.Test) == 2 && h.Test[0] == "CMD-SHELL"
		none := len(h.Test) == 1 && h.Test[0] == "NONE"
		add(cmdShell || none, "Healthcheck.Test", health(func(c *container.HealthConfig) any { return c.Test }))
		add(!none && h.Interval != "", "Healthcheck.Interval", health(func(c *container.HealthConfig) any { return c.Interval }))
		add(!none && h.Timeout != "", "Healthcheck.Timeout", health(func(c *container.HealthConfig) any { return c.Timeout }))
		add(!none && h.Retries != 0, "Healthcheck.Retries", health(func(c *container.HealthConfig) any { return c.Retries }))
		add(!none && h.StartPeriod != "", "Healthcheck.StartPeriod", health(func(c *container.HealthConfig) any { return c.StartPeriod }))
	}

	ctr := func(f func(*swarm.ContainerSpec) any) func(swarm.ServiceSpec) any {
		return func(x swarm.ServiceSpec) any {
			if x.TaskTemplate.ContainerSpec == nil {
				return cliUnset
			}
			return f(x.TaskTemplate.ContainerSpec)
		}
	}
	add(ss.User != "", "ContainerSpec.User", ctr(func(c *swarm.ContainerSpec) any { return c.User }))
	add(ss.Workdir != "", "ContainerSpec.Dir", ctr(func(c *swarm.ContainerSpec) any { return c.Dir }))
	add(ss.Hostname != "", "ContainerSpec.Hostname", ctr(func(c *swarm.ContainerSpec) any { return c.Hostname }))
	add(ss.StopSignal != "", "ContainerSpec.StopSignal", ctr(func(c *swarm.ContainerSpec) any { return c.StopSignal }))
	add(ss.StopGracePeriod != "", "ContainerSpec.StopGracePeriod", ctr(func(c *swarm.ContainerSpec) any { return cliDeref(c.StopGracePeriod) }))
	add(ss.Init != nil, "ContainerSpec.Init", ctr(func(c *swarm.ContainerSpec) any { return cliDeref(c.Init) }))
	add(ss.ReadOnly, "ContainerSpec.ReadOnly", ctr(func(c *swarm.ContainerSpec) any { return c.ReadOnly }))
	caps := len(ss.CapAdd)+len(ss.CapDrop) > 0
	add(caps, "ContainerSpec.CapabilityAdd", ctr(func(c *swarm.ContainerSpec) any { return c.CapabilityAdd }))
	add(caps, "ContainerSpec.CapabilityDrop", ctr(func(c *swarm.ContainerSpec) any { return c.CapabilityDrop }))
	add(len(ss.Sysctls) > 0, "ContainerSpec.Sysctls", ctr(func(c *swarm.ContainerSpec) any { return c.Sysctls }))
	add(ss.DNS != nil, "ContainerSpec.DNSConfig", ctr(func(c *swarm.ContainerSpec) any {
		// The docker CLI stores an empty DNSConfig when given no --dns
		// flag; nil and empty mean the same.
		if c.DNSConfig == nil {
			return swarm.DNSConfig{}
		}
		return *c.DNSConfig
	}))
	add(len(ss.ExtraHosts) > 0, "ContainerSpec.Hosts", ctr(func(c *swarm.ContainerSpec) any { return c.Hosts }))
	add(len(ss.Ulimits) > 0, "ContainerSpec.Ulimits", ctr(func(c *swarm.ContainerSpec) any {
		// The order is not part of the meaning: compared by name.
		m := map[string]container.Ulimit{}
		for _, u := range c.Ulimits {
			m[u.Name] = *u
		}
		return m
	}))
	return out
}

// cliDeref reads one of Docker's optional fields, cliUnset when nil.
func cliDeref[T any](p *T) any {
	if p == nil {
		return cliUnset
	}
	return *p
}

// cliShow prints a compared value the way a reader of the failure wants it.
func cliShow(v any) string {
	switch v := v.(type) {
	case time.Duration:
		return fmt.Sprintf("%d (%v)", int64(v), v)
	case swarm.ServiceMode:
		b, _ := json.Marshal(v)
		return string(b)
	}
	return fmt.Sprintf("%v", v)
}

// cliInspect is `docker service inspect` decoded into the API's types.
func cliInspect(t *testing.T, name string) swarm.Service {
	t.Helper()
	var out []swarm.Service
	if err := json.Unmarshal([]byte(enginetest.CLI(t, "service", "inspect", name)), &out); err != nil || len(out) != 1 {
		t.Fatalf("docker service inspect %s: %v (%d results)", name, err, len(out))
	}
	return out[0]
}

// cliRemoveLater removes the service when the test ends.
func cliRemoveLater(t *testing.T, name string) {
	t.Helper()
	t.Cleanup(func() {
		out, err := exec.Command("docker", "service", "rm", name).CombinedOutput()
		if err != nil && !strings.Contains(strings.ToLower(string(out)), "not found") {
			t.Errorf("cleanup: docker service rm %s: %v: %s", name, err, out)
		}
		// Checked, not assumed: a service left behind would outlive the run.
		enginetest.Poll(t, 10*time.Second, "service "+name+" gone", func() (bool, string) {
			out, err := exec.Command("docker", "service", "inspect", name).CombinedOutput()
			return err != nil, string(out)
		})
	})
}

// cliParse is reconcile.ParseDocuments for a test's own single Service.
func cliParse(t *testing.T, doc string) *spec.Service {
	t.Helper()
	docs, err := reconcile.ParseDocuments([]byte(doc))
	if err != nil {
		t.Fatalf("%s\n%v", doc, err)
	}
	if len(docs) != 1 {
		t.Fatalf("%d documents, want 1:\n%s", len(docs), doc)
	}
	s, ok := docs[0].Object.(*spec.Service)
	if !ok {
		t.Fatalf("a %s, want a Service:\n%s", docs[0].Object.GetKind(), doc)
	}
	return s
}

// TestMappingAgreesWithDockerCLI checks that a validated Service document
// means one thing all the way to Docker: for every document, each resource,
// duration and mode it sets maps (cluster.BuildServiceSpec) to the value the
// docker CLI stores when given the same text, as `docker service inspect`
// shows it. It then creates services through the product's own path
// (cluster.EnsureService) and checks what Docker holds for the quantities
// users most often write.
func TestMappingAgreesWithDockerCLI(t *testing.T) {
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("needs the docker CLI to create services as an operator would")
	}
	d, _ := enginetest.Engine(t)
	suffix := enginetest.Suffix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)

	docs := cliDocuments(t)
	if len(docs) < 10 {
		t.Fatalf("only %d Service documents under %v: the globs are wrong", len(docs), validSources)
	}
	t.Run("cli", func(t *testing.T) {
		for i, doc := range docs {
			s := doc.svc
			t.Run(strings.TrimPrefix(doc.source, "../../")+"/"+s.Metadata.Name, func(t *testing.T) {
				// No network: the values compared do not depend on one, and
				// the CLI service joins none either.
				built, err := cluster.BuildServiceSpec(cluster.ServiceInput{Service: s, Replicas: 0, VLANs: []string{}})
				if err != nil {
					t.Fatalf("cluster.BuildServiceSpec: %v", err)
				}
				name := fmt.Sprintf("svcli%02d%s", i, suffix)
				args := cliArgs(name, s)
				enginetest.CLI(t, args...)
				cliRemoveLater(t, name)
				got := cliInspect(t, name).Spec
				checks := cliChecks(s)
				for _, c := range checks {
					if b, g := c.get(built), c.get(got); !reflect.DeepEqual(b, g) {
						t.Errorf("%s (%s): %s: cluster.BuildServiceSpec %s, docker CLI %s\n  docker %s",
							s.Metadata.Name, doc.source, c.field, cliShow(b), cliShow(g), strings.Join(args, " "))
					}
				}
				t.Logf("%d fields compared: docker %s", len(checks), strings.Join(args, " "))
			})
		}
	})

	// The product's own path for the fields of cliFields: what Docker holds
	// after cluster.EnsureService equals what it holds after the docker CLI
	// is given the same text, and a second pass finds nothing to change
	// (Docker stores no value of its own for them that reads as drift).
	t.Run("EnsureServiceFields", func(t *testing.T) {
		owner := "cli-test-" + suffix
		for i, doc := range servicesIn(t, "fields", []byte(cliFields)) {
			s := doc.svc
			t.Run(s.Metadata.Name, func(t *testing.T) {
				cliName := fmt.Sprintf("svfcli%02d%s", i, suffix)
				args := cliArgs(cliName, s)
				enginetest.CLI(t, args...)
				cliRemoveLater(t, cliName)

				ours := *s
				ours.Metadata.Name = fmt.Sprintf("svfens%02d%s", i, suffix)
				cliRemoveLater(t, ours.Metadata.Name)
				in := cluster.ServiceInput{Service: &ours, Replicas: 0, VLANs: []string{}, Owner: owner}
				if st, err := cluster.EnsureService(ctx, d, in); err != nil {
					t.Fatalf("cluster.EnsureService: %+v, %v", st, err)
				}
				byCLI, byUs := cliInspect(t, cliName).Spec, cliInspect(t, ours.Metadata.Name).Spec
				checks := cliChecks(s)
				for _, c := range checks {
					if c.field == "Mode" {
						continue
					}
					if want, got := c.get(byCLI), c.get(byUs); !reflect.DeepEqual(want, got) {
						t.Errorf("%s: after cluster.EnsureService Docker holds %s, after the docker CLI %s\n  docker %s",
							c.field, cliShow(got), cliShow(want), strings.Join(args, " "))
					}
				}
				t.Logf("%d fields compared between docker %s and cluster.EnsureService", len(checks)-1, strings.Join(args, " "))
				st, err := cluster.EnsureService(ctx, d, in)
				if err != nil {
					t.Fatalf("cluster.EnsureService again: %+v, %v", st, err)
				}
				if st.Message != "" {
					t.Errorf("second cluster.EnsureService changed the service: %s", st.Message)
				}

				// A hand edit is drift, and the next pass puts the
				// document's values back.
				enginetest.CLI(t, "service", "update", "--detach", "--cap-add", "CAP_SYS_ADMIN", "--hostname", "hand-edited", ours.Metadata.Name)
				st, err = cluster.EnsureService(ctx, d, in)
				if err != nil {
					t.Fatalf("cluster.EnsureService after a hand edit: %+v, %v", st, err)
				}
				if !strings.HasPrefix(st.Message, "updated: drift in ") {
					t.Errorf("cluster.EnsureService after a hand edit: %q, want an update for drift", st.Message)
				}
				reverted := cliInspect(t, ours.Metadata.Name).Spec
				for _, c := range checks {
					if want, got := c.get(byCLI), c.get(reverted); c.field != "Mode" && !reflect.DeepEqual(want, got) {
						t.Errorf("%s after the hand edit was reverted: Docker holds %s, want %s", c.field, cliShow(got), cliShow(want))
					}
				}
				if cs := reverted.TaskTemplate.ContainerSpec; cs.Hostname == "hand-edited" || slices.Contains(cs.CapabilityAdd, "CAP_SYS_ADMIN") && !slices.Contains(byCLI.TaskTemplate.ContainerSpec.CapabilityAdd, "CAP_SYS_ADMIN") {
					t.Errorf("the hand edit is still there: hostname %q, capAdd %q", cs.Hostname, cs.CapabilityAdd)
				}
				t.Logf("hand edit reverted: %s", st.Message)
			})
		}
	})

	// The Must-show figures of issue 9, through the product's path.
	t.Run("EnsureService", func(t *testing.T) {
		owner := "cli-test-" + suffix
		for _, c := range []struct {
			name, limits string
			wantMem      int64
			wantNano     int64
		}{
			{"m512m", `{memory: 512m, cpus: "0.5"}`, 536870912, 500000000},
			{"m512cap", `{memory: 512M}`, 536870912, 0},
			{"g15i", `{memory: 1.5Gi}`, 1610612736, 0},
		} {
			t.Run(c.name, func(t *testing.T) {
				name := "svens" + c.name + suffix
				s := cliParse(t, fmt.Sprintf(`apiVersion: swarmvlan/v1
kind: Service
metadata: {name: %s}
spec:
  image: %s
  networks: [vlan40]
  resources:
    limits: %s
`, name, lab.ImageTestApp, c.limits))
				cliRemoveLater(t, name)
				if st, err := cluster.EnsureService(ctx, d, cluster.ServiceInput{Service: s, Replicas: 0, VLANs: []string{}, Owner: owner}); err != nil {
					t.Fatalf("cluster.EnsureService: %+v, %v", st, err)
				}
				got := cliInspect(t, name).Spec
				var mem, nano int64
				if r := got.TaskTemplate.Resources; r != nil && r.Limits != nil {
					mem, nano = r.Limits.MemoryBytes, r.Limits.NanoCPUs
				}
				t.Logf("limits %s: docker service inspect %s shows MemoryBytes %d, NanoCPUs %d", c.limits, name, mem, nano)
				if mem != c.wantMem {
					t.Errorf("limits %s: MemoryBytes %d, want %d", c.limits, mem, c.wantMem)
				}
				if nano != c.wantNano {
					t.Errorf("limits %s: NanoCPUs %d, want %d", c.limits, nano, c.wantNano)
				}
			})
		}
	})
}
