package reconcile

import (
	"context"
	"fmt"
	"sort"
	"strings"
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

// Labels every Docker object swarmvlan creates carries. Objects without
// DockerLabelManaged=true are never changed or removed.
const (
	DockerLabelManaged = "io.swarmvlan.managed"
	// DockerLabelOwner names the installation (its ID in Consul KV) that
	// made a service; the leader removes only services of its own
	// installation, so a reconciler pointed at another or an empty Consul
	// never sweeps away a swarm's services.
	DockerLabelOwner    = "io.swarmvlan.owner"
	DockerLabelKind     = "io.swarmvlan.kind"
	DockerLabelName     = "io.swarmvlan.name"
	DockerLabelSpecHash = "io.swarmvlan.spec-hash"
	// DockerLabelDriver records the driver a config-only network was made
	// for: Docker stores config-only networks with the "null" driver, so
	// the driver cannot be read back from the network itself.
	DockerLabelDriver = "io.swarmvlan.driver"
)

// Docker is the part of the Engine API the reconcilers use. It is an
// interface so planners' edge cases can be unit tested with a small stateful
// fake; NewDocker returns the real implementation.
type Docker interface {
	// Info describes the engine, including this node's swarm node ID.
	Info(ctx context.Context) (system.Info, error)

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

	// Events streams engine and cluster events from now until ctx is done
	// or the stream breaks; a broken stream reports one error on the
	// second channel and the first channel is then left open, not closed.
	Events(ctx context.Context, f filters.Args) (<-chan events.Message, <-chan error)

	// Calls reports how many times each method was called, for metrics and
	// for tests that assert an operation made no API call.
	Calls() map[string]uint64
	Close() error
}

// dockerMethods names every counted method, so Calls reports zeros too.
var dockerMethods = []string{
	"Info",
	"NetworkList", "NetworkInspect", "NetworkCreate", "NetworkRemove",
	"ServiceList", "ServiceInspect", "ServiceCreate", "ServiceUpdate", "ServiceRemove",
	"TaskList",
	"NodeList", "NodeInspect", "NodeUpdate",
	"ContainerList", "SecretList", "Events",
}

// dockerCounter counts calls per method; safe for concurrent use.
type dockerCounter struct {
	counts map[string]*atomic.Uint64
}

func newDockerCounter() dockerCounter {
	c := dockerCounter{counts: make(map[string]*atomic.Uint64, len(dockerMethods))}
	for _, m := range dockerMethods {
		c.counts[m] = new(atomic.Uint64)
	}
	return c
}

func (c dockerCounter) add(method string) {
	// The map is never written after construction, so reads need no lock.
	if n, ok := c.counts[method]; ok {
		n.Add(1)
	}
}

func (c dockerCounter) snapshot() map[string]uint64 {
	out := make(map[string]uint64, len(c.counts))
	for m, n := range c.counts {
		out[m] = n.Load()
	}
	return out
}

// dockerEngine is the Docker implementation over the Engine API client.
type dockerEngine struct {
	cli   *client.Client
	calls dockerCounter
}

// NewDocker connects to the engine at host ("" = DOCKER_HOST or the default
// socket), negotiating the API version because engines as old as API 1.41
// must be served.
func NewDocker(host string) (Docker, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker client for %q: %w", host, err)
	}
	return &dockerEngine{cli: cli, calls: newDockerCounter()}, nil
}

func (e *dockerEngine) Calls() map[string]uint64 { return e.calls.snapshot() }

func (e *dockerEngine) Close() error { return e.cli.Close() }

func (e *dockerEngine) Info(ctx context.Context) (system.Info, error) {
	e.calls.add("Info")
	return e.cli.Info(ctx)
}

func (e *dockerEngine) NetworkList(ctx context.Context, f filters.Args) ([]network.Summary, error) {
	e.calls.add("NetworkList")
	return e.cli.NetworkList(ctx, network.ListOptions{Filters: f})
}

func (e *dockerEngine) NetworkInspect(ctx context.Context, idOrName string) (network.Inspect, error) {
	e.calls.add("NetworkInspect")
	return e.cli.NetworkInspect(ctx, idOrName, network.InspectOptions{})
}

func (e *dockerEngine) NetworkCreate(ctx context.Context, name string, opts network.CreateOptions) (string, error) {
	e.calls.add("NetworkCreate")
	resp, err := e.cli.NetworkCreate(ctx, name, opts)
	return resp.ID, err
}

func (e *dockerEngine) NetworkRemove(ctx context.Context, id string) error {
	e.calls.add("NetworkRemove")
	return e.cli.NetworkRemove(ctx, id)
}

func (e *dockerEngine) ServiceList(ctx context.Context, f filters.Args) ([]swarm.Service, error) {
	e.calls.add("ServiceList")
	return e.cli.ServiceList(ctx, swarm.ServiceListOptions{Filters: f})
}

func (e *dockerEngine) ServiceInspect(ctx context.Context, idOrName string) (swarm.Service, error) {
	e.calls.add("ServiceInspect")
	s, _, err := e.cli.ServiceInspectWithRaw(ctx, idOrName, swarm.ServiceInspectOptions{})
	return s, err
}

func (e *dockerEngine) ServiceCreate(ctx context.Context, spec swarm.ServiceSpec) (string, error) {
	e.calls.add("ServiceCreate")
	resp, err := e.cli.ServiceCreate(ctx, spec, swarm.ServiceCreateOptions{QueryRegistry: false})
	return resp.ID, err
}

func (e *dockerEngine) ServiceUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.ServiceSpec) error {
	e.calls.add("ServiceUpdate")
	_, err := e.cli.ServiceUpdate(ctx, id, version, spec, swarm.ServiceUpdateOptions{QueryRegistry: false})
	return err
}

func (e *dockerEngine) ServiceRemove(ctx context.Context, id string) error {
	e.calls.add("ServiceRemove")
	return e.cli.ServiceRemove(ctx, id)
}

func (e *dockerEngine) TaskList(ctx context.Context, f filters.Args) ([]swarm.Task, error) {
	e.calls.add("TaskList")
	return e.cli.TaskList(ctx, swarm.TaskListOptions{Filters: f})
}

func (e *dockerEngine) NodeList(ctx context.Context, f filters.Args) ([]swarm.Node, error) {
	e.calls.add("NodeList")
	return e.cli.NodeList(ctx, swarm.NodeListOptions{Filters: f})
}

func (e *dockerEngine) NodeInspect(ctx context.Context, id string) (swarm.Node, error) {
	e.calls.add("NodeInspect")
	n, _, err := e.cli.NodeInspectWithRaw(ctx, id)
	return n, err
}

func (e *dockerEngine) NodeUpdate(ctx context.Context, id string, version swarm.Version, spec swarm.NodeSpec) error {
	e.calls.add("NodeUpdate")
	return e.cli.NodeUpdate(ctx, id, version, spec)
}

func (e *dockerEngine) ContainerList(ctx context.Context, f filters.Args) ([]container.Summary, error) {
	e.calls.add("ContainerList")
	return e.cli.ContainerList(ctx, container.ListOptions{Filters: f})
}

func (e *dockerEngine) SecretList(ctx context.Context, f filters.Args) ([]swarm.Secret, error) {
	e.calls.add("SecretList")
	return e.cli.SecretList(ctx, swarm.SecretListOptions{Filters: f})
}

func (e *dockerEngine) Events(ctx context.Context, f filters.Args) (<-chan events.Message, <-chan error) {
	e.calls.add("Events")
	return e.cli.Events(ctx, events.ListOptions{Filters: f})
}

// DockerConflictError reports a Docker object that has the name swarmvlan
// wants but was not made by swarmvlan; it is left alone.
type DockerConflictError struct {
	Kind string // "service", "network"
	Name string
}

// Error says which object is in the way, in the words the status shows.
func (e *DockerConflictError) Error() string {
	return fmt.Sprintf("%s %s exists and is not managed by swarmvlan", e.Kind, e.Name)
}

// dockerManaged reports whether labels mark an object as swarmvlan's.
func dockerManaged(labels map[string]string) bool {
	return labels[DockerLabelManaged] == "true"
}

// dockerOwnerLabels are the ownership labels for a document's objects.
func dockerOwnerLabels(kind, name string) map[string]string {
	return map[string]string{
		DockerLabelManaged: "true",
		DockerLabelKind:    kind,
		DockerLabelName:    name,
	}
}

// dockerNotFound reports whether err says the object does not exist.
func dockerNotFound(err error) bool {
	return err != nil && cerrdefs.IsNotFound(err)
}

// dockerOutOfSequence reports whether a swarm update lost a race with
// another writer. Swarm passes the object version through as an opaque gRPC
// error, so the Engine answers 500 with this text rather than a conflict
// status on the versions this project meets.
func dockerOutOfSequence(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "update out of sequence") || cerrdefs.IsConflict(err))
}

// dockerInUse reports whether Docker refused to remove a network because
// something still uses it. The engine uses several status codes and texts
// for this depending on whether the network is local or swarm scoped.
func dockerInUse(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "in use") || strings.Contains(msg, "active endpoints") ||
		cerrdefs.IsPermissionDenied(err) || cerrdefs.IsFailedPrecondition(err)
}

// dockerFilter builds filters from key=value pairs.
func dockerFilter(kv ...string) filters.Args {
	f := filters.NewArgs()
	for i := 0; i+1 < len(kv); i += 2 {
		f.Add(kv[i], kv[i+1])
	}
	return f
}

// dockerJoinSorted renders names for a status message in a stable order.
func dockerJoinSorted(names []string) string {
	s := append([]string(nil), names...)
	sort.Strings(s)
	return strings.Join(s, ", ")
}
