package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/docker/docker/api/types/container"
	"github.com/hashicorp/consul/api"

	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// Check defaults applied when the document leaves them out.
const (
	registrationDefaultInterval        = "10s"
	registrationDefaultTimeout         = "2s"
	registrationDefaultDeregisterAfter = "1m"
)

// Labels the swarm executor puts on every task container.
const (
	registrationLabelServiceName = "com.docker.swarm.service.name"
	registrationLabelServiceID   = "com.docker.swarm.service.id"
	registrationLabelTaskID      = "com.docker.swarm.task.id"
	registrationLabelTaskName    = "com.docker.swarm.task.name"
)

// Registrar keeps the local Consul agent's catalog of this node's tasks in
// step with Docker: every running task container of a service that asks for
// registration is registered with its VLAN address and a health check, and
// registrations of tasks that are gone are removed. It replaces Registrator,
// which skips containers without published ports and registers the wrong
// address on macvlan (registrator #648, #654).
//
// Each host runs its own Registrar against its own agent, so a host that
// dies takes only its own registrations with it: they go critical and Consul
// removes them after the check's deregisterAfter (registrator #505).
type Registrar struct {
	// Agent is the LOCAL agent: each host registers its own tasks.
	Agent *state.Agent
	// Docker is this host's engine.
	Docker engine.Docker
	// NodeID is this host's swarm node ID; empty asks Docker once.
	NodeID string
	// Hostname is recorded in state.MetaHost when set.
	Hostname string

	// mu serialises Sync: two passes planned from the same observation
	// would both register the same new task.
	mu sync.Mutex
	// node is NodeID, or what Docker said when NodeID was empty.
	node string
	// running is what the last Sync listed (see Running).
	running []RunningTask
}

// RegistrationTarget is a managed Service that wants registration (has a
// consul block).
type RegistrationTarget struct {
	// Service is the document, defaulted.
	Service *spec.Service
	// VLAN is the network whose address is registered: spec.networks[0]
	// unless set otherwise; empty means spec.networks[0].
	VLAN string
	// Network is the Docker name of VLAN's swarm network when it is not
	// the VLAN's name (spec.docker.network).
	Network string
	// ServiceIDs are the IDs of the Swarm service when it was adopted
	// (state/adopted/services): its task containers carry none of
	// swarmvlan's labels and are found by service ID.
	ServiceIDs []string
}

// network is the Docker name of the network whose address t registers.
func (t RegistrationTarget) network() string {
	if t.Network != "" {
		return t.Network
	}
	return registrationVLAN(t)
}

// RegistrationStatus is what one Sync did and what is registered after it.
type RegistrationStatus struct {
	// Registered are the Consul service IDs registered or re-registered.
	Registered []string `json:"registered,omitempty"`
	// Deregistered are the Consul service IDs removed.
	Deregistered []string `json:"deregistered,omitempty"`
	// Tasks maps each Consul service ID registered after the pass to the
	// task's address.
	Tasks map[string]string `json:"tasks,omitempty"`
	// Problems name running tasks that cannot be registered, and why (no
	// address on the VLAN, for example).
	Problems []string `json:"problems,omitempty"`
}

// RegistrationTargets picks from services (defaulted documents) those that
// want registration, keyed by name, each registering its address on its
// first network. The map is never nil: an empty map is the explicit "no
// service wants registration" that Sync acts on.
func RegistrationTargets(services []*spec.Service) map[string]RegistrationTarget {
	return RegistrationTargetsFor(services, nil, nil)
}

// RegistrationTargetsFor is RegistrationTargets with the Docker names of
// the VLANs' networks (vlan looks a VLAN document up; nil: none) and the
// adopted services by service ID, whose tasks are found by that ID.
func RegistrationTargetsFor(services []*spec.Service, vlan func(string) (*spec.VLAN, bool), adopted map[string]state.AdoptedService) map[string]RegistrationTarget {
	out := make(map[string]RegistrationTarget, len(services))
	for _, s := range services {
		if s == nil || s.Spec.Consul == nil || len(s.Spec.Networks) == 0 {
			continue
		}
		t := RegistrationTarget{Service: s, VLAN: s.Spec.Networks[0]}
		if vlan != nil {
			if v, ok := vlan(t.VLAN); ok && v.NetworkDockerName() != t.VLAN {
				t.Network = v.NetworkDockerName()
			}
		}
		for _, id := range slices.Sorted(maps.Keys(adopted)) {
			if adopted[id].Service == s.Metadata.Name {
				t.ServiceIDs = append(t.ServiceIDs, id)
			}
		}
		out[s.Metadata.Name] = t
	}
	return out
}

// RegistrationServiceID is the Consul service ID of one task's
// registration: unique per task, so replicas never overwrite each other.
func RegistrationServiceID(service, taskID string) string {
	return "swarmvlan-" + service + "-" + taskID
}

// Sync registers every running task container of the targets on this node
// and deregisters this registrar's own registrations (known by their Meta)
// that are no longer wanted: task gone or stopped, service removed, consul
// block removed. Registrations that are already as wanted are not touched,
// so a pass over a converged host makes only the two reads. The first Sync
// after a start removes the registrations of tasks that ended meanwhile by
// the same rule.
//
// targets is keyed by service name. A nil map is refused: it means there is
// no view of the documents, and taking that as "nothing is wanted" would
// deregister every task (fail static). If Docker or the agent cannot be
// read, nothing is changed. Failures of single registrations are joined
// into the error and do not stop the others.
func (r *Registrar) Sync(ctx context.Context, targets map[string]RegistrationTarget) (RegistrationStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var st RegistrationStatus
	if targets == nil {
		return st, errors.New("registration: no view of the services; refusing to deregister")
	}
	if r.Agent == nil || r.Docker == nil {
		return st, errors.New("registration: registrar needs a Consul agent and a Docker engine")
	}
	node, err := r.nodeID(ctx)
	if err != nil {
		return st, err
	}
	ctrs, err := r.Docker.ContainerList(ctx, engine.Filter(
		"label", spec.LabelManaged+"=true",
		"label", registrationLabelTaskID,
		"status", "running",
	))
	if err != nil {
		return st, fmt.Errorf("registration: list task containers: %w", err)
	}
	for _, name := range slices.Sorted(maps.Keys(targets)) {
		for _, id := range targets[name].ServiceIDs {
			more, err := r.Docker.ContainerList(ctx, engine.Filter(
				"label", registrationLabelServiceID+"="+id,
				"label", registrationLabelTaskID,
				"status", "running",
			))
			if err != nil {
				return st, fmt.Errorf("registration: list task containers of adopted service %s: %w", id, err)
			}
			ctrs = append(ctrs, more...)
		}
	}
	r.running = runningTasks(ctrs)
	want, problems := registrationWant(node, r.Hostname, targets, ctrs)
	st.Problems = problems

	all, err := r.Agent.Services(ctx)
	if err != nil {
		return st, fmt.Errorf("registration: list agent services: %w", err)
	}
	have := registrationHave(all, node)
	for id, h := range have {
		if _, ok := want[id]; ok && !registrationOwned(h) {
			st.Problems = append(st.Problems, fmt.Sprintf("service ID %s is held by a registration swarmvlan did not make", id))
		}
	}

	register, deregister := planRegistrations(want, have)
	var errs []error
	failed := map[string]bool{}
	for _, reg := range register {
		if err := r.Agent.Register(ctx, reg); err != nil {
			failed[reg.ID] = true
			errs = append(errs, fmt.Errorf("registration %q: register task %s at %s: %w",
				reg.ID, reg.Meta[state.MetaTask], reg.Address, err))
			continue
		}
		st.Registered = append(st.Registered, reg.ID)
	}
	for _, id := range deregister {
		if err := r.Agent.Deregister(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("registration %q: deregister: %w", id, err))
			continue
		}
		st.Deregistered = append(st.Deregistered, id)
	}
	st.Tasks = make(map[string]string, len(want))
	for id, reg := range want {
		if h, ok := have[id]; ok && !registrationOwned(h) {
			continue
		}
		if failed[id] {
			// A failed re-registration leaves the previous one in place.
			if h, ok := have[id]; ok {
				st.Tasks[id] = h.Address
			}
			continue
		}
		st.Tasks[id] = reg.Address
	}
	sort.Strings(st.Problems)
	return st, errors.Join(errs...)
}

// nodeID returns this host's swarm node ID, asking Docker once when the
// Registrar was not told.
func (r *Registrar) nodeID(ctx context.Context) (string, error) {
	if r.NodeID != "" {
		return r.NodeID, nil
	}
	if r.node != "" {
		return r.node, nil
	}
	info, err := r.Docker.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("registration: node ID from docker info: %w", err)
	}
	if info.Swarm.NodeID == "" {
		return "", errors.New("registration: this engine is not a swarm node")
	}
	r.node = info.Swarm.NodeID
	return r.node, nil
}

// registrationOwned reports whether a registration is swarmvlan's.
func registrationOwned(s *api.AgentService) bool {
	return s != nil && s.Meta[state.MetaTask] != ""
}

// registrationHave is what the planner may look at: every registration
// that is not swarmvlan's (so it is never overwritten), and swarmvlan's own
// for this node. Registrations another node's registrar made on the same
// agent are left out, so two registrars sharing an agent never remove each
// other's entries.
func registrationHave(all map[string]*api.AgentService, node string) map[string]*api.AgentService {
	have := make(map[string]*api.AgentService, len(all))
	for id, s := range all {
		if s == nil {
			continue
		}
		if registrationOwned(s) && s.Meta[state.MetaNode] != node {
			continue
		}
		have[id] = s
	}
	return have
}

// planRegistrations returns the registrations to (re-)register and the
// service IDs to deregister. A wanted registration is sent again only when
// the agent's copy differs in name, address, port, tags or meta (the meta
// carries the check's fingerprint, so a changed check counts). Only
// registrations carrying state.MetaTask are deregistered, and a
// wanted ID held by a foreign registration is not overwritten. Both results
// are in ID order.
func planRegistrations(want map[string]*api.AgentServiceRegistration, have map[string]*api.AgentService) (register []*api.AgentServiceRegistration, deregister []string) {
	for _, id := range slices.Sorted(maps.Keys(want)) {
		w := want[id]
		h, ok := have[id]
		switch {
		case !ok:
			register = append(register, w)
		case !registrationOwned(h):
			// Never touch what swarmvlan did not make.
		case !registrationSame(w, h):
			register = append(register, w)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(have)) {
		if _, ok := want[id]; !ok && registrationOwned(have[id]) {
			deregister = append(deregister, id)
		}
	}
	return register, deregister
}

// registrationSame reports whether the agent already holds w as wanted.
func registrationSame(w *api.AgentServiceRegistration, h *api.AgentService) bool {
	return w.Name == h.Service &&
		w.Address == h.Address &&
		w.Port == h.Port &&
		slices.Equal(w.Tags, h.Tags) &&
		maps.Equal(w.Meta, h.Meta)
}

// registrationWant builds the wanted registration of every running task
// container in ctrs whose service is a target, keyed by service ID, and
// names the running tasks that cannot be registered.
func registrationWant(node, hostname string, targets map[string]RegistrationTarget, ctrs []container.Summary) (map[string]*api.AgentServiceRegistration, []string) {
	want := map[string]*api.AgentServiceRegistration{}
	var problems []string
	byDockerName := map[string]string{}
	byID := map[string]string{}
	for name, t := range targets {
		if t.Service != nil {
			byDockerName[t.Service.DockerServiceName()] = name
		}
		for _, id := range t.ServiceIDs {
			byID[id] = name
		}
	}
	for _, c := range ctrs {
		dockerName := c.Labels[registrationLabelServiceName]
		name, ok := byID[c.Labels[registrationLabelServiceID]]
		if !ok {
			name = byDockerName[dockerName]
		}
		taskID := c.Labels[registrationLabelTaskID]
		t, ok := targets[name]
		// The engine filters on state already; checking again keeps a
		// container caught between list and stop from counting.
		if !ok || taskID == "" || c.State != "running" || t.Service == nil || t.Service.Spec.Consul == nil {
			continue
		}
		vlan := registrationVLAN(t)
		if vlan == "" {
			problems = append(problems, fmt.Sprintf("service %s: no network to register an address on", name))
			continue
		}
		addr, ok := registrationAddress(c, t.network())
		if !ok {
			problems = append(problems, fmt.Sprintf("service %s task %s: no address on network %s", name, taskID, t.network()))
			continue
		}
		slot := registrationSlot(c.Labels[registrationLabelTaskName], dockerName, taskID)
		reg := registrationFor(t.Service, vlan, node, hostname, taskID, slot, addr)
		want[reg.ID] = reg
	}
	return want, problems
}

// registrationVLAN is the network whose address a target registers.
func registrationVLAN(t RegistrationTarget) string {
	if t.VLAN != "" {
		return t.VLAN
	}
	if t.Service != nil && len(t.Service.Spec.Networks) > 0 {
		return t.Service.Spec.Networks[0]
	}
	return ""
}

// registrationAddress is the container's address on the swarm network named
// vlan. For a swarm task on a macvlan network the engine reports the
// address in IPAddress and leaves IPAMConfig empty: the manager allocates
// nothing on node-local networks, so the node's own IPAM picks it from the
// node's chunk.
func registrationAddress(c container.Summary, vlan string) (netip.Addr, bool) {
	if c.NetworkSettings == nil {
		return netip.Addr{}, false
	}
	ep := c.NetworkSettings.Networks[vlan]
	if ep == nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(ep.IPAddress)
	if err != nil || !a.IsValid() || a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a, true
}

// registrationSlot is the replica slot in a task name,
// "<service>.<slot>.<task ID>". A global service's task names carry the
// node ID there instead, so only a number counts as a slot.
func registrationSlot(taskName, service, taskID string) string {
	s, ok := strings.CutPrefix(taskName, service+".")
	if !ok {
		return ""
	}
	if s, ok = strings.CutSuffix(s, "."+taskID); !ok {
		return ""
	}
	if _, err := strconv.Atoi(s); err != nil {
		return ""
	}
	return s
}

// registrationFor is the registration of one task at addr. The check is the
// document's, or a TCP check on the port when it names none: without a check
// a crashed host's entries would stay passing forever, and deregisterAfter
// only acts on a check that goes critical.
func registrationFor(svc *spec.Service, vlan, node, hostname, taskID, slot string, addr netip.Addr) *api.AgentServiceRegistration {
	c := svc.Spec.Consul
	name := c.Service
	if name == "" {
		name = svc.Metadata.Name
	}
	meta := make(map[string]string, len(c.Meta)+7)
	maps.Copy(meta, c.Meta)
	meta[state.MetaTask] = taskID
	meta[state.MetaService] = svc.Metadata.Name
	meta[state.MetaNode] = node
	meta[state.MetaVLAN] = vlan
	if slot != "" {
		meta[state.MetaSlot] = slot
	}
	if hostname != "" {
		meta[state.MetaHost] = hostname
	}
	check := registrationCheck(c, addr)
	meta[state.MetaCheck] = registrationCheckPrint(check)
	return &api.AgentServiceRegistration{
		ID:      RegistrationServiceID(svc.Metadata.Name, taskID),
		Name:    name,
		Address: addr.String(),
		Port:    c.Port,
		Tags:    slices.Clone(c.Tags),
		Meta:    meta,
		Check:   check,
	}
}

// registrationCheck is the health check against the task's address.
func registrationCheck(c *spec.ConsulService, addr netip.Addr) *api.AgentServiceCheck {
	ch := c.Check
	if ch == nil {
		ch = &spec.ConsulCheck{TCP: true}
	}
	hostPort := net.JoinHostPort(addr.String(), strconv.Itoa(c.Port))
	out := &api.AgentServiceCheck{
		Interval:                       registrationOr(ch.Interval, registrationDefaultInterval),
		Timeout:                        registrationOr(ch.Timeout, registrationDefaultTimeout),
		DeregisterCriticalServiceAfter: registrationOr(ch.DeregisterAfter, registrationDefaultDeregisterAfter),
	}
	if ch.HTTP != "" {
		out.HTTP = "http://" + hostPort + ch.HTTP
	} else {
		out.TCP = hostPort
	}
	return out
}

func registrationOr(d spec.Duration, def string) string {
	if d == "" {
		return def
	}
	return string(d)
}

// registrationCheckPrint is a short fingerprint of a check definition; meta
// values are limited to 512 characters and an HTTP path may be longer.
func registrationCheckPrint(c *api.AgentServiceCheck) string {
	b, err := json.Marshal(c)
	if err != nil {
		// A struct of strings always marshals; a constant still makes the
		// registration comparable.
		return "unprintable"
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
