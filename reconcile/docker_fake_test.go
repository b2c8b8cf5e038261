package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"
)

// dockerFake is a small stateful stand-in for the Engine API, for unit
// tests of planners' edge cases: it keeps networks, services, nodes, tasks,
// containers and secrets, checks versions like Swarm does, and can be told
// to fail the next calls of a method.
type dockerFake struct {
	mu         sync.Mutex
	calls      dockerCounter
	nextID     int
	nodeID     string
	networks   map[string]*network.Inspect // by ID
	services   map[string]*swarm.Service   // by ID
	nodes      map[string]*swarm.Node      // by ID
	tasks      []swarm.Task
	containers []container.Summary
	secrets    []swarm.Secret
	// fail holds errors to return from the next calls of a method.
	fail map[string][]error
	// onNetworkCreate may alter what "Docker" makes, to imitate engine
	// quirks.
	onNetworkCreate func(*network.Inspect)
	// events, when set, serves Events calls.
	events func(ctx context.Context) (<-chan events.Message, <-chan error)
}

func newDockerFake() *dockerFake {
	return &dockerFake{
		calls:    newDockerCounter(),
		nodeID:   "node1",
		networks: map[string]*network.Inspect{},
		services: map[string]*swarm.Service{},
		nodes:    map[string]*swarm.Node{},
		fail:     map[string][]error{},
	}
}

// call counts a call and pops an injected failure.
func (f *dockerFake) call(method string) error {
	f.calls.add(method)
	if errs := f.fail[method]; len(errs) > 0 {
		f.fail[method] = errs[1:]
		return errs[0]
	}
	return nil
}

func (f *dockerFake) id(prefix string) string {
	f.nextID++
	return fmt.Sprintf("%s%04d", prefix, f.nextID)
}

// dockerClone deep-copies through JSON, as the real API does: nothing the
// caller holds aliases the fake's state.
func dockerClone[T any](v T) T {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

func dockerFakeNotFound(what string) error {
	return fmt.Errorf("%s: %w", what, cerrdefs.ErrNotFound)
}

// dockerFakeLabels reports whether labels match every label=k[=v] filter.
func dockerFakeLabels(f filters.Args, labels map[string]string) bool {
	for _, l := range f.Get("label") {
		k, v, hasV := strings.Cut(l, "=")
		got, ok := labels[k]
		if !ok || (hasV && got != v) {
			return false
		}
	}
	return true
}

func (f *dockerFake) Calls() map[string]uint64 { return f.calls.snapshot() }
func (f *dockerFake) Close() error             { return nil }

func (f *dockerFake) Info(ctx context.Context) (system.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("Info"); err != nil {
		return system.Info{}, err
	}
	var info system.Info
	info.Swarm.NodeID = f.nodeID
	info.Swarm.LocalNodeState = swarm.LocalNodeStateActive
	return info, nil
}

func (f *dockerFake) NetworkList(ctx context.Context, flt filters.Args) ([]network.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("NetworkList"); err != nil {
		return nil, err
	}
	var out []network.Summary
	for _, n := range f.networks {
		if names := flt.Get("name"); len(names) > 0 && !strings.Contains(n.Name, names[0]) {
			continue
		}
		if scopes := flt.Get("scope"); len(scopes) > 0 && n.Scope != scopes[0] {
			continue
		}
		out = append(out, dockerClone(*n))
	}
	return out, nil
}

func (f *dockerFake) networkLookup(idOrName string) *network.Inspect {
	if n, ok := f.networks[idOrName]; ok {
		return n
	}
	for _, n := range f.networks {
		if n.Name == idOrName {
			return n
		}
	}
	return nil
}

func (f *dockerFake) NetworkInspect(ctx context.Context, idOrName string) (network.Inspect, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("NetworkInspect"); err != nil {
		return network.Inspect{}, err
	}
	n := f.networkLookup(idOrName)
	if n == nil {
		return network.Inspect{}, dockerFakeNotFound("network " + idOrName)
	}
	return dockerClone(*n), nil
}

func (f *dockerFake) NetworkCreate(ctx context.Context, name string, o network.CreateOptions) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("NetworkCreate"); err != nil {
		return "", err
	}
	if o.ConfigOnly && (o.Scope != "" || o.Internal || o.Attachable || o.Ingress) {
		return "", fmt.Errorf("configuration network can only contain network specific fields: %w", cerrdefs.ErrInvalidArgument)
	}
	if o.ConfigFrom != nil && (len(o.Labels) > 0 || len(o.Options) > 0) {
		return "", fmt.Errorf("user specified configurations are not supported if the network depends on a configuration network: %w", cerrdefs.ErrPermissionDenied)
	}
	if f.networkLookup(name) != nil {
		return "", fmt.Errorf("network with name %s already exists: %w", name, cerrdefs.ErrConflict)
	}
	n := &network.Inspect{
		ID: f.id("net"), Name: name, Scope: o.Scope, Driver: o.Driver,
		ConfigOnly: o.ConfigOnly, Options: o.Options, Labels: o.Labels,
	}
	if n.Scope == "" {
		n.Scope = "local"
	}
	if o.ConfigOnly {
		n.Driver = "null"
	}
	if o.ConfigFrom != nil {
		n.ConfigFrom = *o.ConfigFrom
	}
	if o.IPAM != nil {
		n.IPAM = *o.IPAM
	}
	if f.onNetworkCreate != nil {
		f.onNetworkCreate(n)
	}
	c := dockerClone(*n)
	f.networks[n.ID] = &c
	return n.ID, nil
}

func (f *dockerFake) NetworkRemove(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("NetworkRemove"); err != nil {
		return err
	}
	n := f.networkLookup(id)
	if n == nil {
		return dockerFakeNotFound("network " + id)
	}
	delete(f.networks, n.ID)
	return nil
}

func (f *dockerFake) ServiceList(ctx context.Context, flt filters.Args) ([]swarm.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ServiceList"); err != nil {
		return nil, err
	}
	var out []swarm.Service
	for _, s := range f.services {
		if dockerFakeLabels(flt, s.Spec.Labels) {
			out = append(out, dockerClone(*s))
		}
	}
	return out, nil
}

func (f *dockerFake) serviceLookup(idOrName string) *swarm.Service {
	if s, ok := f.services[idOrName]; ok {
		return s
	}
	for _, s := range f.services {
		if s.Spec.Name == idOrName {
			return s
		}
	}
	return nil
}

func (f *dockerFake) ServiceInspect(ctx context.Context, idOrName string) (swarm.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ServiceInspect"); err != nil {
		return swarm.Service{}, err
	}
	s := f.serviceLookup(idOrName)
	if s == nil {
		return swarm.Service{}, dockerFakeNotFound("service " + idOrName)
	}
	return dockerClone(*s), nil
}

func (f *dockerFake) ServiceCreate(ctx context.Context, spec swarm.ServiceSpec) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ServiceCreate"); err != nil {
		return "", err
	}
	for _, s := range f.services {
		if s.Spec.Name != spec.Name {
			continue
		}
		return "", fmt.Errorf("service %s: name conflicts with an existing object: %w", spec.Name, cerrdefs.ErrConflict)
	}
	s := &swarm.Service{ID: f.id("svc"), Spec: dockerFakeStored(spec)}
	s.Version.Index = 1
	f.services[s.ID] = s
	return s.ID, nil
}

func (f *dockerFake) ServiceUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.ServiceSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ServiceUpdate"); err != nil {
		return err
	}
	s := f.serviceLookup(id)
	if s == nil {
		return dockerFakeNotFound("service " + id)
	}
	if version.Index != s.Version.Index {
		return errors.New("rpc error: code = Unknown desc = update out of sequence")
	}
	s.Spec = dockerFakeStored(spec)
	s.Version.Index++
	return nil
}

// dockerFakeStored is what Engine 20.10 stores for a service spec: the
// values it fills in where the request left a field empty.
func dockerFakeStored(in swarm.ServiceSpec) swarm.ServiceSpec {
	s := dockerClone(in)
	s.TaskTemplate.Runtime = swarm.RuntimeContainer
	if cs := s.TaskTemplate.ContainerSpec; cs != nil && cs.Isolation == "" {
		cs.Isolation = container.IsolationDefault
	}
	if u := s.UpdateConfig; u != nil {
		if u.FailureAction == "" {
			u.FailureAction = swarm.UpdateFailureActionPause
		}
		if u.Order == "" {
			u.Order = swarm.UpdateOrderStopFirst
		}
	}
	if r := s.TaskTemplate.RestartPolicy; r != nil && r.Condition == "" {
		r.Condition = swarm.RestartPolicyConditionAny
	}
	return s
}

func (f *dockerFake) ServiceRemove(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ServiceRemove"); err != nil {
		return err
	}
	s := f.serviceLookup(id)
	if s == nil {
		return dockerFakeNotFound("service " + id)
	}
	delete(f.services, s.ID)
	return nil
}

func (f *dockerFake) TaskList(ctx context.Context, flt filters.Args) ([]swarm.Task, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("TaskList"); err != nil {
		return nil, err
	}
	var out []swarm.Task
	for _, t := range f.tasks {
		if s := flt.Get("service"); len(s) > 0 && t.ServiceID != s[0] {
			continue
		}
		if s := flt.Get("desired-state"); len(s) > 0 && string(t.DesiredState) != s[0] {
			continue
		}
		out = append(out, dockerClone(t))
	}
	return out, nil
}

func (f *dockerFake) NodeList(ctx context.Context, flt filters.Args) ([]swarm.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("NodeList"); err != nil {
		return nil, err
	}
	var out []swarm.Node
	for _, n := range f.nodes {
		out = append(out, dockerClone(*n))
	}
	return out, nil
}

func (f *dockerFake) NodeInspect(ctx context.Context, id string) (swarm.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("NodeInspect"); err != nil {
		return swarm.Node{}, err
	}
	n, ok := f.nodes[id]
	if !ok {
		return swarm.Node{}, dockerFakeNotFound("node " + id)
	}
	return dockerClone(*n), nil
}

func (f *dockerFake) NodeUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.NodeSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("NodeUpdate"); err != nil {
		return err
	}
	n, ok := f.nodes[id]
	if !ok {
		return dockerFakeNotFound("node " + id)
	}
	if version.Index != n.Version.Index {
		return errors.New("rpc error: code = Unknown desc = update out of sequence")
	}
	n.Spec = dockerClone(spec)
	n.Version.Index++
	return nil
}

func (f *dockerFake) ContainerList(ctx context.Context, flt filters.Args) ([]container.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("ContainerList"); err != nil {
		return nil, err
	}
	var out []container.Summary
	for _, c := range f.containers {
		if dockerFakeLabels(flt, c.Labels) {
			out = append(out, dockerClone(c))
		}
	}
	return out, nil
}

func (f *dockerFake) SecretList(ctx context.Context, flt filters.Args) ([]swarm.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.call("SecretList"); err != nil {
		return nil, err
	}
	return dockerClone(f.secrets), nil
}

func (f *dockerFake) Events(ctx context.Context, flt filters.Args) (<-chan events.Message, <-chan error) {
	f.mu.Lock()
	f.calls.add("Events")
	serve := f.events
	f.mu.Unlock()
	if serve == nil {
		errc := make(chan error, 1)
		errc <- errors.New("no events in this fake")
		return make(chan events.Message), errc
	}
	return serve(ctx)
}

// addNode adds a swarm node with labels.
func (f *dockerFake) addNode(id string, labels map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := &swarm.Node{ID: id}
	n.Version.Index = 1
	n.Spec.Labels = labels
	n.Description.Hostname = "host-" + id
	f.nodes[id] = n
}

// failNext makes the next len(errs) calls of method fail with errs.
func (f *dockerFake) failNext(method string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[method] = append(f.fail[method], errs...)
}
