package host

import (
	"context"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/hashicorp/consul/api"

	"swarmvlan/reconcile/engine"
	"swarmvlan/reconcile/engine/enginetest"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// discoveryTestReg is a wanted registration of task on service web.
func discoveryTestReg(task, addr string, tags ...string) *api.AgentServiceRegistration {
	svc := discoveryTestService("web", "vlan40", &spec.ConsulService{Port: 8080, Tags: tags,
		Check: &spec.ConsulCheck{HTTP: "/health"}})
	return registrationFor(svc, "vlan40", "node1", "host1", task, "1", netip.MustParseAddr(addr))
}

// discoveryTestHave is what the agent reports for a registration.
func discoveryTestHave(r *api.AgentServiceRegistration) *api.AgentService {
	return &api.AgentService{
		ID: r.ID, Service: r.Name, Address: r.Address, Port: r.Port,
		Tags: slices.Clone(r.Tags), Meta: maps.Clone(r.Meta),
	}
}

func discoveryTestService(name, vlan string, c *spec.ConsulService) *spec.Service {
	s := &spec.Service{
		Metadata: spec.ObjectMeta{Name: name},
		Spec:     spec.ServiceSpec{Image: "app:1", Networks: []string{vlan}, Consul: c},
	}
	spec.SetDefaults(s)
	return s
}

func TestPlanRegistrations(t *testing.T) {
	a := discoveryTestReg("taska", "172.80.1.2", "v1")
	b := discoveryTestReg("taskb", "172.80.1.3", "v1")
	aRetagged := discoveryTestReg("taska", "172.80.1.2", "v2")
	aMoved := discoveryTestReg("taska", "172.80.1.9", "v1")
	aOtherCheck := discoveryTestReg("taska", "172.80.1.2", "v1")
	aOtherCheck.Check.Interval = "1s"
	aOtherCheck.Meta[state.MetaCheck] = registrationCheckPrint(aOtherCheck.Check)
	foreign := &api.AgentService{ID: "redis-1", Service: "redis", Address: "10.0.0.5", Port: 6379}
	// A foreign registration that happens to hold a wanted ID.
	squatter := &api.AgentService{ID: a.ID, Service: "web", Address: "10.0.0.6", Port: 8080}

	tests := []struct {
		name         string
		want         []*api.AgentServiceRegistration
		have         []*api.AgentService
		wantRegister []string // IDs
		wantDereg    []string
	}{
		{
			name:         "new task is registered",
			want:         []*api.AgentServiceRegistration{a, b},
			have:         []*api.AgentService{discoveryTestHave(a)},
			wantRegister: []string{b.ID},
		},
		{
			name: "unchanged registrations are not sent again",
			want: []*api.AgentServiceRegistration{a, b},
			have: []*api.AgentService{discoveryTestHave(a), discoveryTestHave(b)},
		},
		{
			name:         "changed tags re-register",
			want:         []*api.AgentServiceRegistration{aRetagged},
			have:         []*api.AgentService{discoveryTestHave(a)},
			wantRegister: []string{a.ID},
		},
		{
			name:         "changed address re-registers",
			want:         []*api.AgentServiceRegistration{aMoved},
			have:         []*api.AgentService{discoveryTestHave(a)},
			wantRegister: []string{a.ID},
		},
		{
			name:         "changed check re-registers",
			want:         []*api.AgentServiceRegistration{aOtherCheck},
			have:         []*api.AgentService{discoveryTestHave(a)},
			wantRegister: []string{a.ID},
		},
		{
			name:      "stopped task is deregistered",
			want:      []*api.AgentServiceRegistration{a},
			have:      []*api.AgentService{discoveryTestHave(a), discoveryTestHave(b)},
			wantDereg: []string{b.ID},
		},
		{
			name:      "nothing wanted removes only our own",
			have:      []*api.AgentService{discoveryTestHave(a), foreign},
			wantDereg: []string{a.ID},
		},
		{
			name: "foreign registrations are never touched",
			want: []*api.AgentServiceRegistration{a},
			have: []*api.AgentService{squatter, foreign},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := map[string]*api.AgentServiceRegistration{}
			for _, r := range tt.want {
				want[r.ID] = r
			}
			have := map[string]*api.AgentService{}
			for _, s := range tt.have {
				have[s.ID] = s
			}
			reg, dereg := planRegistrations(want, have)
			var regIDs []string
			for _, r := range reg {
				regIDs = append(regIDs, r.ID)
				if r != want[r.ID] {
					t.Errorf("register %s: not the wanted registration", r.ID)
				}
			}
			if !slices.Equal(regIDs, tt.wantRegister) {
				t.Errorf("register %v, want %v", regIDs, tt.wantRegister)
			}
			if !slices.Equal(dereg, tt.wantDereg) {
				t.Errorf("deregister %v, want %v", dereg, tt.wantDereg)
			}
			// Applying the plan converges: a second plan is empty.
			after := maps.Clone(have)
			for _, id := range dereg {
				delete(after, id)
			}
			for _, r := range reg {
				after[r.ID] = discoveryTestHave(r)
			}
			if reg, dereg := planRegistrations(want, after); len(reg) != 0 || len(dereg) != 0 {
				t.Errorf("second plan not empty: register %d, deregister %v", len(reg), dereg)
			}
		})
	}
}

// discoveryTestContainer is a swarm task container as the engine lists it.
func discoveryTestContainer(service, slot, task, state string, addrs map[string]string) container.Summary {
	c := container.Summary{
		ID:    "ctr-" + task,
		State: state,
		Labels: map[string]string{
			spec.LabelManaged:            "true",
			registrationLabelServiceName: service,
			registrationLabelTaskID:      task,
			registrationLabelTaskName:    service + "." + slot + "." + task,
		},
		NetworkSettings: &container.NetworkSettingsSummary{Networks: map[string]*network.EndpointSettings{}},
	}
	for n, a := range addrs {
		// What the engine reports for a swarm task on macvlan: the
		// address in IPAddress, IPAMConfig empty.
		c.NetworkSettings.Networks[n] = &network.EndpointSettings{IPAMConfig: &network.EndpointIPAMConfig{}, IPAddress: a, IPPrefixLen: 16}
	}
	return c
}

// TestRegistrationWant reads targets' task containers through the Docker
// interface (a fake engine) and checks what would be registered for each.
func TestRegistrationWant(t *testing.T) {
	web := discoveryTestService("web", "vlan40", &spec.ConsulService{
		Service: "web-api", Port: 8080, Tags: []string{"v1"}, Meta: map[string]string{"owner": "payments", state.MetaNode: "spoofed"},
		Check: &spec.ConsulCheck{HTTP: "/health", Interval: "1s", Timeout: "1s", DeregisterAfter: "5m"},
	})
	// Two networks: the first is the one registered.
	web.Spec.Networks = []string{"vlan40", "vlan50"}
	db := discoveryTestService("db", "vlan50", &spec.ConsulService{Port: 5432})
	global := discoveryTestService("agent", "vlan40", &spec.ConsulService{Port: 9000, Check: &spec.ConsulCheck{TCP: true}})
	global.Spec.Mode = "global"
	plain := discoveryTestService("plain", "vlan40", nil)
	targets := RegistrationTargets([]*spec.Service{web, db, global, plain})
	if _, ok := targets["plain"]; ok || len(targets) != 3 {
		t.Fatalf("targets %v: want web, db and agent only", slices.Sorted(maps.Keys(targets)))
	}

	unmanaged := discoveryTestContainer("web", "4", "t-unmanaged", "running", map[string]string{"vlan40": "172.80.1.9"})
	delete(unmanaged.Labels, spec.LabelManaged)
	fake := enginetest.NewFake()
	fake.Containers = []container.Summary{
		discoveryTestContainer("web", "1", "t-web1", "running", map[string]string{"vlan40": "172.80.1.2", "vlan50": "172.90.1.2"}),
		discoveryTestContainer("web", "2", "t-web2", "running", map[string]string{"vlan50": "172.90.1.3"}),
		discoveryTestContainer("web", "3", "t-web3", "exited", map[string]string{"vlan40": "172.80.1.4"}),
		discoveryTestContainer("db", "1", "t-db1", "running", map[string]string{"vlan50": "172.90.1.7"}),
		discoveryTestContainer("agent", "node1", "t-agent", "running", map[string]string{"vlan40": "172.80.1.5"}),
		discoveryTestContainer("plain", "1", "t-plain", "running", map[string]string{"vlan40": "172.80.1.6"}),
		discoveryTestContainer("other", "1", "t-other", "running", map[string]string{"vlan40": "172.80.1.8"}),
		unmanaged,
	}
	ctrs, err := fake.ContainerList(context.Background(), engine.Filter("label", spec.LabelManaged+"=true", "label", registrationLabelTaskID))
	if err != nil {
		t.Fatal(err)
	}
	want, problems := registrationWant("node1", "host1", targets, ctrs)

	if !slices.Equal(problems, []string{"service web task t-web2: no address on network vlan40"}) {
		t.Errorf("problems %q", problems)
	}
	ids := slices.Sorted(maps.Keys(want))
	wantIDs := []string{"swarmvlan-agent-t-agent", "swarmvlan-db-t-db1", "swarmvlan-web-t-web1"}
	if !slices.Equal(ids, wantIDs) {
		t.Fatalf("registrations %v, want %v", ids, wantIDs)
	}

	tests := []struct {
		id, name, addr string
		port           int
		tags           []string
		meta           map[string]string
		check          api.AgentServiceCheck
	}{
		{
			id: "swarmvlan-web-t-web1", name: "web-api", addr: "172.80.1.2", port: 8080, tags: []string{"v1"},
			meta: map[string]string{"owner": "payments", state.MetaTask: "t-web1", state.MetaService: "web",
				state.MetaSlot: "1", state.MetaNode: "node1", state.MetaVLAN: "vlan40", state.MetaHost: "host1"},
			check: api.AgentServiceCheck{HTTP: "http://172.80.1.2:8080/health", Interval: "1s", Timeout: "1s", DeregisterCriticalServiceAfter: "5m"},
		},
		{
			// No check in the document: a TCP check with the defaults.
			id: "swarmvlan-db-t-db1", name: "db", addr: "172.90.1.7", port: 5432,
			meta: map[string]string{state.MetaTask: "t-db1", state.MetaService: "db",
				state.MetaSlot: "1", state.MetaNode: "node1", state.MetaVLAN: "vlan50", state.MetaHost: "host1"},
			check: api.AgentServiceCheck{TCP: "172.90.1.7:5432", Interval: "10s", Timeout: "2s", DeregisterCriticalServiceAfter: "1m"},
		},
		{
			// A global task's name carries the node ID, not a slot.
			id: "swarmvlan-agent-t-agent", name: "agent", addr: "172.80.1.5", port: 9000,
			meta: map[string]string{state.MetaTask: "t-agent", state.MetaService: "agent",
				state.MetaNode: "node1", state.MetaVLAN: "vlan40", state.MetaHost: "host1"},
			check: api.AgentServiceCheck{TCP: "172.80.1.5:9000", Interval: "10s", Timeout: "2s", DeregisterCriticalServiceAfter: "1m"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			r := want[tt.id]
			if r.ID != tt.id || r.Name != tt.name || r.Address != tt.addr || r.Port != tt.port || !slices.Equal(r.Tags, tt.tags) {
				t.Errorf("registration %+v", r)
			}
			if r.Check == nil || !reflect.DeepEqual(*r.Check, tt.check) {
				t.Errorf("check %+v, want %+v", r.Check, tt.check)
			}
			gotMeta := maps.Clone(r.Meta)
			if gotMeta[state.MetaCheck] != registrationCheckPrint(&tt.check) {
				t.Errorf("check fingerprint %q does not match the check", gotMeta[state.MetaCheck])
			}
			delete(gotMeta, state.MetaCheck)
			if !maps.Equal(gotMeta, tt.meta) {
				t.Errorf("meta %v, want %v", gotMeta, tt.meta)
			}
		})
	}
}

func TestRegistrationSlot(t *testing.T) {
	tests := []struct{ taskName, service, task, want string }{
		{"web.3.abc", "web", "abc", "3"},
		{"web.12.abc", "web", "abc", "12"},
		{"web.node7.abc", "web", "abc", ""}, // global: node ID
		{"web.3.abc", "api", "abc", ""},
		{"web.3.abc", "web", "xyz", ""},
		{"", "web", "abc", ""},
		{"my.web.2.abc", "my.web", "abc", "2"},
	}
	for _, tt := range tests {
		t.Run(tt.taskName+"/"+tt.service, func(t *testing.T) {
			if got := registrationSlot(tt.taskName, tt.service, tt.task); got != tt.want {
				t.Errorf("registrationSlot(%q, %q, %q) = %q, want %q", tt.taskName, tt.service, tt.task, got, tt.want)
			}
		})
	}
}

func TestRegistrationHave(t *testing.T) {
	mine := discoveryTestHave(discoveryTestReg("t1", "172.80.1.2"))
	theirs := discoveryTestHave(discoveryTestReg("t2", "172.80.2.2"))
	theirs.Meta[state.MetaNode] = "node2"
	foreign := &api.AgentService{ID: "redis", Service: "redis"}
	have := registrationHave(map[string]*api.AgentService{mine.ID: mine, theirs.ID: theirs, foreign.ID: foreign}, "node1")
	if got := slices.Sorted(maps.Keys(have)); !slices.Equal(got, []string{"redis", mine.ID}) {
		t.Errorf("have %v: want this node's registrations and the foreign one", got)
	}
}

// TestRegistrarSyncRefusesNoView checks that a nil target map (no view of
// the documents) changes nothing and does not even read Docker.
func TestRegistrarSyncRefusesNoView(t *testing.T) {
	fake := enginetest.NewFake()
	r := &Registrar{Docker: fake, Agent: &state.Agent{}, NodeID: "node1"}
	if _, err := r.Sync(context.Background(), nil); err == nil {
		t.Fatal("Sync with a nil target map succeeded")
	}
	for m, n := range fake.Calls() {
		if n != 0 {
			t.Errorf("%d %s calls without a view", n, m)
		}
	}
}
