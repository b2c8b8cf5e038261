// Package engine is the adapter to the Docker Engine API: the only code
// that imports the Docker client. Everything else talks to Docker through
// the Docker interface, so planners can be tested with enginetest.Fake.
package engine

import (
	"context"
	"fmt"
	"strings"
	"swarmvlan/state"
	"sync/atomic"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/api/types/system"
	"github.com/docker/docker/client"
)

// Docker is the part of the Engine API the reconcilers use. It is an
// interface so planners' edge cases can be unit tested with a small stateful
// fake; New returns the real implementation.
type Docker interface {
	// Info describes the engine, including this node's swarm node ID.
	Info(ctx context.Context) (system.Info, error)
	// ServerVersion is the engine's version and the API version in use.
	ServerVersion(ctx context.Context) (Version, error)

	// NetworkList lists local networks and, on a manager, swarm networks.
	NetworkList(ctx context.Context, f filters.Args) ([]network.Summary, error)
	NetworkInspect(ctx context.Context, idOrName string) (network.Inspect, error)
	NetworkCreate(ctx context.Context, name string, opts network.CreateOptions) (string, error)
	NetworkRemove(ctx context.Context, id string) error

	ServiceList(ctx context.Context, f filters.Args) ([]swarm.Service, error)
	// ServiceInspect resolves IDs, names and ID prefixes alike.
	ServiceInspect(ctx context.Context, idOrName string) (swarm.Service, error)
	// ServiceCreate never asks a registry for the image's digest: images
	// may exist only on the nodes.
	ServiceCreate(ctx context.Context, spec swarm.ServiceSpec) (string, error)
	// ServiceUpdate replaces the spec; version must be the one read, or
	// Swarm answers "update out of sequence".
	ServiceUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.ServiceSpec) error
	ServiceRemove(ctx context.Context, id string) error

	TaskList(ctx context.Context, f filters.Args) ([]swarm.Task, error)

	NodeList(ctx context.Context, f filters.Args) ([]swarm.Node, error)
	NodeInspect(ctx context.Context, id string) (swarm.Node, error)
	NodeUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.NodeSpec) error

	// ContainerList lists this engine's running containers.
	ContainerList(ctx context.Context, f filters.Args) ([]container.Summary, error)

	SecretList(ctx context.Context, f filters.Args) ([]swarm.Secret, error)
	ConfigList(ctx context.Context, f filters.Args) ([]swarm.Config, error)

	// Events streams engine and cluster events from now until ctx is done
	// or the stream breaks; a broken stream reports one error on the
	// second channel and the first channel is then left open, not closed.
	Events(ctx context.Context, f filters.Args) (<-chan events.Message, <-chan error)

	// Calls reports how many times each method was called, for metrics and
	// for tests that assert an operation made no API call.
	Calls() map[string]uint64
	Close() error
}

// methods names every counted method, so Calls reports zeros too.
var methods = []string{
	"Info", "ServerVersion",
	"NetworkList", "NetworkInspect", "NetworkCreate", "NetworkRemove",
	"ServiceList", "ServiceInspect", "ServiceCreate", "ServiceUpdate", "ServiceRemove",
	"TaskList",
	"NodeList", "NodeInspect", "NodeUpdate",
	"ContainerList", "SecretList", "ConfigList", "Events",
}

// CallCounter counts calls per method; safe for concurrent use.
type CallCounter struct {
	counts map[string]*atomic.Uint64
}

func NewCallCounter() CallCounter {
	c := CallCounter{counts: make(map[string]*atomic.Uint64, len(methods))}
	for _, m := range methods {
		c.counts[m] = new(atomic.Uint64)
	}
	return c
}

func (c CallCounter) Add(method string) {
	// The map is never written after construction, so reads need no lock.
	if n, ok := c.counts[method]; ok {
		n.Add(1)
	}
}

func (c CallCounter) Snapshot() map[string]uint64 {
	out := make(map[string]uint64, len(c.counts))
	for m, n := range c.counts {
		out[m] = n.Load()
	}
	return out
}

// apiEngine is the Docker implementation over the Engine API client.
type apiEngine struct {
	cli   *client.Client
	calls CallCounter
}

// New connects to the engine at host ("" = DOCKER_HOST or the default
// socket), negotiating the API version because engines as old as API 1.41
// must be served.
func New(host string) (Docker, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w", host, err)
	}
	return &apiEngine{cli: cli, calls: NewCallCounter()}, nil
}

func (e *apiEngine) Calls() map[string]uint64 { return e.calls.Snapshot() }

func (e *apiEngine) Close() error { return e.cli.Close() }

func (e *apiEngine) Info(ctx context.Context) (system.Info, error) {
	e.calls.Add("Info")
	return e.cli.Info(ctx)
}

func (e *apiEngine) NetworkList(ctx context.Context, f filters.Args) ([]network.Summary, error) {
	e.calls.Add("NetworkList")
	return e.cli.NetworkList(ctx, network.ListOptions{Filters: f})
}

func (e *apiEngine) NetworkInspect(ctx context.Context, idOrName string) (network.Inspect, error) {
	e.calls.Add("NetworkInspect")
	return e.cli.NetworkInspect(ctx, idOrName, network.InspectOptions{})
}

func (e *apiEngine) NetworkCreate(ctx context.Context, name string, opts network.CreateOptions) (string, error) {
	e.calls.Add("NetworkCreate")
	resp, err := e.cli.NetworkCreate(ctx, name, opts)
	return resp.ID, err
}

func (e *apiEngine) NetworkRemove(ctx context.Context, id string) error {
	e.calls.Add("NetworkRemove")
	return e.cli.NetworkRemove(ctx, id)
}

func (e *apiEngine) ServiceList(ctx context.Context, f filters.Args) ([]swarm.Service, error) {
	e.calls.Add("ServiceList")
	return e.cli.ServiceList(ctx, swarm.ServiceListOptions{Filters: f})
}

func (e *apiEngine) ServiceInspect(ctx context.Context, idOrName string) (swarm.Service, error) {
	e.calls.Add("ServiceInspect")
	s, _, err := e.cli.ServiceInspectWithRaw(ctx, idOrName, swarm.ServiceInspectOptions{})
	return s, err
}

func (e *apiEngine) ServiceCreate(ctx context.Context, spec swarm.ServiceSpec) (string, error) {
	e.calls.Add("ServiceCreate")
	resp, err := e.cli.ServiceCreate(ctx, spec, swarm.ServiceCreateOptions{QueryRegistry: false})
	return resp.ID, err
}

func (e *apiEngine) ServiceUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.ServiceSpec) error {
	e.calls.Add("ServiceUpdate")
	_, err := e.cli.ServiceUpdate(ctx, id, version, spec, swarm.ServiceUpdateOptions{QueryRegistry: false})
	return err
}

func (e *apiEngine) ServiceRemove(ctx context.Context, id string) error {
	e.calls.Add("ServiceRemove")
	return e.cli.ServiceRemove(ctx, id)
}

func (e *apiEngine) TaskList(ctx context.Context, f filters.Args) ([]swarm.Task, error) {
	e.calls.Add("TaskList")
	return e.cli.TaskList(ctx, swarm.TaskListOptions{Filters: f})
}

func (e *apiEngine) NodeList(ctx context.Context, f filters.Args) ([]swarm.Node, error) {
	e.calls.Add("NodeList")
	return e.cli.NodeList(ctx, swarm.NodeListOptions{Filters: f})
}

func (e *apiEngine) NodeInspect(ctx context.Context, id string) (swarm.Node, error) {
	e.calls.Add("NodeInspect")
	n, _, err := e.cli.NodeInspectWithRaw(ctx, id)
	return n, err
}

func (e *apiEngine) NodeUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.NodeSpec) error {
	e.calls.Add("NodeUpdate")
	return e.cli.NodeUpdate(ctx, id, version, spec)
}

func (e *apiEngine) ContainerList(ctx context.Context, f filters.Args) ([]container.Summary, error) {
	e.calls.Add("ContainerList")
	return e.cli.ContainerList(ctx, container.ListOptions{Filters: f})
}

func (e *apiEngine) SecretList(ctx context.Context, f filters.Args) ([]swarm.Secret, error) {
	e.calls.Add("SecretList")
	return e.cli.SecretList(ctx, swarm.SecretListOptions{Filters: f})
}

func (e *apiEngine) ConfigList(ctx context.Context, f filters.Args) ([]swarm.Config, error) {
	e.calls.Add("ConfigList")
	return e.cli.ConfigList(ctx, swarm.ConfigListOptions{Filters: f})
}

func (e *apiEngine) Events(ctx context.Context, f filters.Args) (<-chan events.Message, <-chan error) {
	e.calls.Add("Events")
	return e.cli.Events(ctx, events.ListOptions{Filters: f})
}

// ConflictError reports a Docker object that has the name swarmvlan
// wants but was not made by swarmvlan; it is left alone.
type ConflictError struct {
	Kind string // "service", "network"
	Name string
}

// Error says which object is in the way, in the words the status shows.
func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s %s exists and is not managed by swarmvlan", e.Kind, e.Name)
}

// IsNotFound reports whether err says the object does not exist.
func IsNotFound(err error) bool {
	return err != nil && cerrdefs.IsNotFound(err)
}

// IsOutOfSequence reports whether a swarm update lost a race with
// another writer. Swarm passes the object version through as an opaque gRPC
// error, so the Engine answers 500 with this text rather than a conflict
// status on the versions this project meets.
func IsOutOfSequence(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "update out of sequence") || cerrdefs.IsConflict(err))
}

// IsInUse reports whether Docker refused to remove a network because
// something still uses it. The engine uses several status codes and texts
// for this depending on whether the network is local or swarm scoped.
func IsInUse(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "in use") || strings.Contains(msg, "active endpoints") ||
		cerrdefs.IsPermissionDenied(err) || cerrdefs.IsFailedPrecondition(err)
}

// Filter builds filters from key=value pairs.
func Filter(kv ...string) filters.Args {
	f := filters.NewArgs()
	for i := 0; i+1 < len(kv); i += 2 {
		f.Add(kv[i], kv[i+1])
	}
	return f
}

// FindNetwork returns the network named exactly name, or nil. Docker's name
// filter matches substrings, so the list is filtered again here; when a
// local and a swarm network share the name, one that owned rejects wins so
// that the caller reports the conflict rather than touching it.
func FindNetwork(ctx context.Context, d Docker, name string, owned func(*network.Inspect) bool) (*network.Inspect, error) {
	list, err := d.NetworkList(ctx, Filter("name", name))
	if err != nil {
		return nil, err
	}
	var found *network.Inspect
	for i := range list {
		n := &list[i]
		if n.Name != name {
			continue
		}
		if found == nil || !owned(n) {
			found = n
		}
	}
	return found, nil
}

// IsInvalidArgument reports whether Docker refused a request as invalid (an
// HTTP 400): the same request will be refused again.
func IsInvalidArgument(err error) bool {
	return err != nil && cerrdefs.IsInvalidArgument(err)
}

// RemoveNetwork removes network id of a VLAN and returns st, the network's
// status, as it then is. Docker's own in-use refusal (endpoints left, a
// swarm network still built from the config network, tasks not yet gone) is
// a state to wait out, not an error: the status says in-use and asks for a
// requeue. A network already gone counts as removed.
func RemoveNetwork(ctx context.Context, d Docker, st state.NetworkStatus, id, vlan string) (state.NetworkStatus, error) {
	if err := d.NetworkRemove(ctx, id); err != nil {
		switch {
		case IsNotFound(err):
		case IsInUse(err):
			st.State, st.Message, st.Requeue = state.NetworkInUse, err.Error(), true
			return st, nil
		default:
			return st.Failed(err), fmt.Errorf("vlan %q: remove network %s: %w", vlan, st.Name, err)
		}
	}
	st.State, st.ID = state.NetworkAbsent, ""
	return st, nil
}
