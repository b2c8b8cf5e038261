// Package enginetest holds what tests of the Docker-facing code share: a
// small stateful fake of the Engine API for planners' edge cases, and
// helpers that connect to the real local Engine in swarm mode.
package enginetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"

	"swarmvlan/reconcile/engine"
)

// Fake is a small stateful stand-in for the Engine API, for unit
// tests of planners' edge cases: it keeps networks, services, nodes, tasks,
// containers and secrets, checks versions like Swarm does, and can be told
// to fail the next calls of a method.
type Fake struct {
	Mu         sync.Mutex
	calls      engine.CallCounter
	nextID     int
	NodeID     string
	Networks   map[string]*network.Inspect // by ID
	Services   map[string]*swarm.Service   // by ID
	Nodes      map[string]*swarm.Node      // by ID
	Tasks      []swarm.Task
	Containers []container.Summary
	Secrets    []swarm.Secret
	Configs    []swarm.Config
	// fail holds errors to return from the next calls of a method.
	fail map[string][]error
	// OnNetworkCreate may alter what "Docker" makes, to imitate engine
	// quirks.
	OnNetworkCreate func(*network.Inspect)
	// Version is what ServerVersion reports.
	Version engine.Version
	// EventsFunc, when set, serves Events calls.
	EventsFunc func(ctx context.Context) (<-chan events.Message, <-chan error)
}

// NewFake returns an empty fake whose own node is "node1".
func NewFake() *Fake {
	return &Fake{
		calls:    engine.NewCallCounter(),
		NodeID:   "node1",
		Networks: map[string]*network.Inspect{},
		Services: map[string]*swarm.Service{},
		Nodes:    map[string]*swarm.Node{},
		fail:     map[string][]error{},
	}
}

// call counts a call and pops an injected failure.
func (f *Fake) call(method string) error {
	f.calls.Add(method)
	if errs := f.fail[method]; len(errs) > 0 {
		f.fail[method] = errs[1:]
		return errs[0]
	}
	return nil
}

func (f *Fake) id(prefix string) string {
	f.nextID++
	return fmt.Sprintf("%s%04d", prefix, f.nextID)
}

// Clone deep-copies through JSON, as the real API does: nothing the
// caller holds aliases the fake's state.
func Clone[T any](v T) T {
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

func fakeNotFound(what string) error {
	return fmt.Errorf("%s: %w", what, cerrdefs.ErrNotFound)
}

// fakeLabels reports whether labels match every label=k[=v] filter.
func fakeLabels(f filters.Args, labels map[string]string) bool {
	for _, l := range f.Get("label") {
		k, v, hasV := strings.Cut(l, "=")
		got, ok := labels[k]
		if !ok || (hasV && got != v) {
			return false
		}
	}
	return true
}

// fakeStatus applies the "status" filter as Docker does (any of the
// values); a container whose State is empty counts as running.
func fakeStatus(f filters.Args, state string) bool {
	want := f.Get("status")
	if len(want) == 0 {
		return true
	}
	if state == "" {
		state = "running"
	}
	return slices.Contains(want, state)
}

func (f *Fake) Calls() map[string]uint64 { return f.calls.Snapshot() }
func (f *Fake) Close() error             { return nil }

func (f *Fake) Info(ctx context.Context) (system.Info, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("Info"); err != nil {
		return system.Info{}, err
	}
	var info system.Info
	info.Swarm.NodeID = f.NodeID
	info.Swarm.LocalNodeState = swarm.LocalNodeStateActive
	return info, nil
}

// ServerVersion reports Version, or Engine 29.8.1 with API 1.51 when it
// is empty.
func (f *Fake) ServerVersion(ctx context.Context) (engine.Version, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("ServerVersion"); err != nil {
		return engine.Version{}, err
	}
	if f.Version.Engine == "" {
		return engine.Version{Engine: "29.8.1", API: "1.51", MaxAPI: "1.51", MinAPI: "1.24", OS: "linux", Arch: "amd64"}, nil
	}
	return f.Version, nil
}

func (f *Fake) NetworkList(ctx context.Context, flt filters.Args) ([]network.Summary, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("NetworkList"); err != nil {
		return nil, err
	}
	var out []network.Summary
	for _, n := range f.Networks {
		if names := flt.Get("name"); len(names) > 0 && !strings.Contains(n.Name, names[0]) {
			continue
		}
		if scopes := flt.Get("scope"); len(scopes) > 0 && n.Scope != scopes[0] {
			continue
		}
		out = append(out, Clone(*n))
	}
	return out, nil
}

func (f *Fake) NetworkLookup(idOrName string) *network.Inspect {
	if n, ok := f.Networks[idOrName]; ok {
		return n
	}
	for _, n := range f.Networks {
		if n.Name == idOrName {
			return n
		}
	}
	return nil
}

func (f *Fake) NetworkInspect(ctx context.Context, idOrName string) (network.Inspect, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("NetworkInspect"); err != nil {
		return network.Inspect{}, err
	}
	n := f.NetworkLookup(idOrName)
	if n == nil {
		return network.Inspect{}, fakeNotFound("network " + idOrName)
	}
	return Clone(*n), nil
}

func (f *Fake) NetworkCreate(ctx context.Context, name string, o network.CreateOptions) (string, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("NetworkCreate"); err != nil {
		return "", err
	}
	if o.ConfigOnly && (o.Scope != "" || o.Internal || o.Attachable || o.Ingress) {
		return "", fmt.Errorf("configuration network can only contain network specific fields: %w", cerrdefs.ErrInvalidArgument)
	}
	if o.ConfigFrom != nil && (len(o.Labels) > 0 || len(o.Options) > 0) {
		return "", fmt.Errorf("user specified configurations are not supported if the network depends on a configuration network: %w", cerrdefs.ErrPermissionDenied)
	}
	if f.NetworkLookup(name) != nil {
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
	if f.OnNetworkCreate != nil {
		f.OnNetworkCreate(n)
	}
	c := Clone(*n)
	f.Networks[n.ID] = &c
	return n.ID, nil
}

func (f *Fake) NetworkRemove(ctx context.Context, id string) error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("NetworkRemove"); err != nil {
		return err
	}
	n := f.NetworkLookup(id)
	if n == nil {
		return fakeNotFound("network " + id)
	}
	delete(f.Networks, n.ID)
	return nil
}

func (f *Fake) ServiceList(ctx context.Context, flt filters.Args) ([]swarm.Service, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("ServiceList"); err != nil {
		return nil, err
	}
	var out []swarm.Service
	for _, s := range f.Services {
		if fakeLabels(flt, s.Spec.Labels) {
			out = append(out, Clone(*s))
		}
	}
	return out, nil
}

func (f *Fake) ServiceLookup(idOrName string) *swarm.Service {
	if s, ok := f.Services[idOrName]; ok {
		return s
	}
	for _, s := range f.Services {
		if s.Spec.Name == idOrName {
			return s
		}
	}
	return nil
}

func (f *Fake) ServiceInspect(ctx context.Context, idOrName string) (swarm.Service, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("ServiceInspect"); err != nil {
		return swarm.Service{}, err
	}
	s := f.ServiceLookup(idOrName)
	if s == nil {
		return swarm.Service{}, fakeNotFound("service " + idOrName)
	}
	return Clone(*s), nil
}

func (f *Fake) ServiceCreate(ctx context.Context, spec swarm.ServiceSpec) (string, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("ServiceCreate"); err != nil {
		return "", err
	}
	for _, s := range f.Services {
		if s.Spec.Name != spec.Name {
			continue
		}
		return "", fmt.Errorf("service %s: name conflicts with an existing object: %w", spec.Name, cerrdefs.ErrConflict)
	}
	s := &swarm.Service{ID: f.id("svc"), Spec: fakeStored(spec)}
	s.Version.Index = 1
	f.Services[s.ID] = s
	return s.ID, nil
}

func (f *Fake) ServiceUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.ServiceSpec) error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("ServiceUpdate"); err != nil {
		return err
	}
	s := f.ServiceLookup(id)
	if s == nil {
		return fakeNotFound("service " + id)
	}
	if version.Index != s.Version.Index {
		return errors.New("rpc error: code = Unknown desc = update out of sequence")
	}
	s.Spec = fakeStored(spec)
	s.Version.Index++
	return nil
}

// fakeStored is what Engine 20.10 stores for a service spec: the
// values it fills in where the request left a field empty.
func fakeStored(in swarm.ServiceSpec) swarm.ServiceSpec {
	s := Clone(in)
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

func (f *Fake) ServiceRemove(ctx context.Context, id string) error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("ServiceRemove"); err != nil {
		return err
	}
	s := f.ServiceLookup(id)
	if s == nil {
		return fakeNotFound("service " + id)
	}
	delete(f.Services, s.ID)
	return nil
}

func (f *Fake) TaskList(ctx context.Context, flt filters.Args) ([]swarm.Task, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("TaskList"); err != nil {
		return nil, err
	}
	var out []swarm.Task
	for _, t := range f.Tasks {
		if s := flt.Get("service"); len(s) > 0 && t.ServiceID != s[0] {
			continue
		}
		if s := flt.Get("desired-state"); len(s) > 0 && string(t.DesiredState) != s[0] {
			continue
		}
		out = append(out, Clone(t))
	}
	return out, nil
}

func (f *Fake) NodeList(ctx context.Context, flt filters.Args) ([]swarm.Node, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("NodeList"); err != nil {
		return nil, err
	}
	var out []swarm.Node
	for _, n := range f.Nodes {
		out = append(out, Clone(*n))
	}
	return out, nil
}

func (f *Fake) NodeInspect(ctx context.Context, id string) (swarm.Node, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("NodeInspect"); err != nil {
		return swarm.Node{}, err
	}
	n, ok := f.Nodes[id]
	if !ok {
		return swarm.Node{}, fakeNotFound("node " + id)
	}
	return Clone(*n), nil
}

func (f *Fake) NodeUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.NodeSpec) error {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("NodeUpdate"); err != nil {
		return err
	}
	n, ok := f.Nodes[id]
	if !ok {
		return fakeNotFound("node " + id)
	}
	if version.Index != n.Version.Index {
		return errors.New("rpc error: code = Unknown desc = update out of sequence")
	}
	n.Spec = Clone(spec)
	n.Version.Index++
	return nil
}

func (f *Fake) ContainerList(ctx context.Context, flt filters.Args) ([]container.Summary, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("ContainerList"); err != nil {
		return nil, err
	}
	var out []container.Summary
	for _, c := range f.Containers {
		if fakeLabels(flt, c.Labels) && fakeStatus(flt, c.State) {
			out = append(out, Clone(c))
		}
	}
	return out, nil
}

func (f *Fake) SecretList(ctx context.Context, flt filters.Args) ([]swarm.Secret, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("SecretList"); err != nil {
		return nil, err
	}
	return Clone(f.Secrets), nil
}

func (f *Fake) ConfigList(ctx context.Context, flt filters.Args) ([]swarm.Config, error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if err := f.call("ConfigList"); err != nil {
		return nil, err
	}
	return Clone(f.Configs), nil
}

func (f *Fake) Events(ctx context.Context, flt filters.Args) (<-chan events.Message, <-chan error) {
	f.Mu.Lock()
	f.calls.Add("Events")
	serve := f.EventsFunc
	f.Mu.Unlock()
	if serve == nil {
		errc := make(chan error, 1)
		errc <- errors.New("no events in this fake")
		return make(chan events.Message), errc
	}
	return serve(ctx)
}

// AddNode adds a swarm node with labels.
func (f *Fake) AddNode(id string, labels map[string]string) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	n := &swarm.Node{ID: id}
	n.Version.Index = 1
	n.Spec.Labels = labels
	n.Description.Hostname = "host-" + id
	f.Nodes[id] = n
}

// FailNext makes the next len(errs) calls of method fail with errs.
func (f *Fake) FailNext(method string, errs ...error) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.fail[method] = append(f.fail[method], errs...)
}
