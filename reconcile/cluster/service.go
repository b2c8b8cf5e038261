package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/reconcile/engine"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// ServiceInput is everything EnsureService needs for one service.
type ServiceInput struct {
	// Service is the document, already defaulted and validated.
	Service *spec.Service
	// Replicas is the effective count (already clamped, see
	// EffectiveReplicas); unused in global mode.
	Replicas int
	// VLANs are the swarm network names the service joins; nil means the
	// document's spec.networks.
	VLANs []string
	// Owner is the installation the service belongs to (the
	// io.swarmvlan.owner label); empty leaves the label off.
	Owner string
	// NetworkIDs, if it holds every swarm network the service joins (name
	// -> ID), resolves them without listing the Engine's networks.
	NetworkIDs map[string]string
	// NetworkNames maps a VLAN to its swarm network's Docker name when
	// that is not the VLAN's name (spec.docker.network).
	NetworkNames map[string]string
	// Adopted are the services taken over from a hand-made setup, by
	// service ID (see adopted.go).
	Adopted map[string]state.AdoptedService
}

// TaskStatus is one current task of a service.
type TaskStatus struct {
	ID    string `json:"id"`
	Slot  int    `json:"slot,omitempty"`
	Node  string `json:"node"` // swarm node ID
	State string `json:"state"`
	// Err is what Swarm says went wrong with the task, such as the
	// rejection of a task whose network is missing on its node.
	Err string `json:"error,omitempty"`
	// Addresses maps a VLAN to the task's address on it.
	Addresses map[string]string `json:"addresses,omitempty"`
}

// ServiceStatus is the observed state of one service.
type ServiceStatus struct {
	Name    string       `json:"name"`
	ID      string       `json:"id,omitempty"`
	Desired int          `json:"desired"`
	Running int          `json:"running"`
	Tasks   []TaskStatus `json:"tasks,omitempty"`
	Message string       `json:"message,omitempty"`
}

// EffectiveReplicas is the replica count in force: the scaled count when the
// scale API has recorded one (scaled non-nil), else spec.replicas (Docker's
// default of 1 when unset), kept within scaling.min..scaling.max. Global
// services have no count: 0.
func EffectiveReplicas(s *spec.Service, scaled *int) int {
	if s == nil || s.Spec.Mode == "global" {
		return 0
	}
	n := 1
	if s.Spec.Replicas != nil {
		n = *s.Spec.Replicas
	}
	if scaled != nil {
		n = *scaled
	}
	if sc := s.Spec.Scaling; sc != nil {
		if n < sc.Min {
			n = sc.Min
		}
		// max 0 means no upper bound was given.
		if sc.Max > 0 && n > sc.Max {
			n = sc.Max
		}
	}
	return max(n, 0)
}

// svcNetworks returns the VLAN networks a service joins.
func svcNetworks(in ServiceInput) []string {
	if in.VLANs != nil {
		return in.VLANs
	}
	return in.Service.Spec.Networks
}

// BuildServiceSpec maps a Service document onto the swarm service spec
// swarmvlan applies. Networks are attached by name and secrets referenced by
// name only: EnsureService resolves both to IDs through the Docker API. The
// spec-hash label is the SHA-256 of the spec with the replica count left
// out, so a scale change alone never looks like a spec change.
func BuildServiceSpec(in ServiceInput) (swarm.ServiceSpec, error) {
	if in.Service == nil {
		return swarm.ServiceSpec{}, errors.New("service: no document")
	}
	name := in.Service.Metadata.Name
	dockerName := in.Service.DockerServiceName()
	ss := in.Service.Spec
	fail := func(err error) (swarm.ServiceSpec, error) {
		return swarm.ServiceSpec{}, fmt.Errorf("service %q: %w", name, err)
	}
	if name == "" {
		return fail(errors.New("metadata.name: empty"))
	}
	if ss.Image == "" {
		return fail(errors.New("spec.image: empty"))
	}

	cs := svcContainerSpec(name, ss)

	out := swarm.ServiceSpec{
		Annotations:  swarm.Annotations{Name: dockerName, Labels: map[string]string{}},
		TaskTemplate: swarm.TaskSpec{ContainerSpec: cs},
	}
	for k, v := range in.Service.Metadata.Labels {
		out.Annotations.Labels[k] = v
	}
	for k, v := range spec.OwnerLabels(spec.KindService, name) {
		out.Annotations.Labels[k] = v
	}
	if in.Owner != "" {
		out.Annotations.Labels[spec.LabelOwner] = in.Owner
	}

	if ss.IsGlobal() {
		out.Mode.Global = &swarm.GlobalService{}
	} else {
		r := uint64(max(in.Replicas, 0))
		out.Mode.Replicated = &swarm.ReplicatedService{Replicas: &r}
	}

	nets := svcNetworks(in)
	for _, n := range nets {
		target := n
		if dn := in.NetworkNames[n]; dn != "" {
			target = dn
		}
		out.TaskTemplate.Networks = append(out.TaskTemplate.Networks, swarm.NetworkAttachmentConfig{Target: target, Aliases: svcCopyList(ss.Aliases)})
	}
	for _, o := range ss.Overlays {
		out.TaskTemplate.Networks = append(out.TaskTemplate.Networks, swarm.NetworkAttachmentConfig{Target: o.Name, Aliases: svcCopyList(o.Aliases)})
	}

	out.TaskTemplate.Placement = svcPlacement(ss.Placement, nets)
	out.TaskTemplate.Resources = svcResources(ss.Resources)
	out.UpdateConfig = svcUpdateConfig(ss.Update)
	out.RollbackConfig = svcUpdateConfig(ss.Rollback)
	out.TaskTemplate.RestartPolicy = svcRestartPolicy(ss.Restart)
	out.TaskTemplate.LogDriver = svcLogDriver(ss.Logging)
	if ss.EndpointMode != "" {
		out.EndpointSpec = &swarm.EndpointSpec{Mode: swarm.ResolutionMode(ss.EndpointMode)}
	}

	h, err := svcSpecHash(out)
	if err != nil {
		return fail(err)
	}
	out.Annotations.Labels[spec.LabelSpecHash] = h
	return out, nil
}

// svcContainerSpec maps the container part of a document. Labels of the
// document never override the ownership labels.
func svcContainerSpec(name string, ss spec.ServiceSpec) *swarm.ContainerSpec {
	cs := &swarm.ContainerSpec{
		Image:           ss.Image,
		Command:         append([]string(nil), ss.Command...),
		Args:            append([]string(nil), ss.Args...),
		Labels:          spec.OwnerLabels(spec.KindService, name),
		User:            ss.User,
		Dir:             ss.Workdir,
		Hostname:        ss.Hostname,
		StopSignal:      ss.StopSignal,
		StopGracePeriod: ss.StopGracePeriod.Ptr(),
		ReadOnly:        ss.ReadOnly,
	}
	if ss.Init != nil {
		v := *ss.Init
		cs.Init = &v
	}
	cs.CapabilityAdd, cs.CapabilityDrop = ss.Capabilities()
	if len(ss.Sysctls) > 0 {
		cs.Sysctls = svcCopyMap(ss.Sysctls)
	}
	if d := ss.DNS; d != nil && len(d.Servers)+len(d.Search)+len(d.Options) > 0 {
		cs.DNSConfig = &swarm.DNSConfig{
			Nameservers: append([]string(nil), d.Servers...),
			Search:      append([]string(nil), d.Search...),
			Options:     append([]string(nil), d.Options...),
		}
	}
	cs.Hosts = ss.Hosts()
	for _, n := range ss.UlimitNames() {
		u := ss.Ulimits[n]
		cs.Ulimits = append(cs.Ulimits, &container.Ulimit{Name: n, Soft: u.Soft, Hard: u.Hard})
	}
	for k, v := range ss.Labels {
		if _, own := cs.Labels[k]; !own {
			cs.Labels[k] = v
		}
	}
	for k, v := range ss.Env {
		cs.Env = append(cs.Env, k+"="+v)
	}
	// Map order is random; a stable order keeps the hash and Docker's task
	// spec from changing when nothing did.
	sort.Strings(cs.Env)
	if hc := ss.Healthcheck; hc != nil {
		cs.Healthcheck = &container.HealthConfig{
			Test:        append([]string(nil), hc.Test...),
			Retries:     hc.Retries,
			Interval:    hc.Interval.Duration(),
			Timeout:     hc.Timeout.Duration(),
			StartPeriod: hc.StartPeriod.Duration(),
		}
	}
	for _, m := range ss.Mounts {
		cs.Mounts = append(cs.Mounts, mount.Mount{Type: mount.Type(m.Type), Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	for _, s := range ss.Secrets {
		// A secret named alone gets what the docker CLI gives it:
		// /run/secrets/<name>, root-owned, world-readable.
		uid, gid := s.Owner()
		cs.Secrets = append(cs.Secrets, &swarm.SecretReference{
			SecretName: s.Name,
			File:       &swarm.SecretReferenceFileTarget{Name: s.SecretTarget(), UID: uid, GID: gid, Mode: os.FileMode(s.FileMode())},
		})
	}
	for _, c := range ss.Configs {
		uid, gid := c.Owner()
		cs.Configs = append(cs.Configs, &swarm.ConfigReference{
			ConfigName: c.Name,
			File:       &swarm.ConfigReferenceFileTarget{Name: c.ConfigTarget(), UID: uid, GID: gid, Mode: os.FileMode(c.FileMode())},
		})
	}
	return cs
}

// svcPlacement maps placement and adds the readiness constraint of every
// VLAN the service joins; nil when there is nothing to place by.
func svcPlacement(p *spec.Placement, nets []string) *swarm.Placement {
	var pl swarm.Placement
	if p != nil {
		pl.Constraints = append(pl.Constraints, p.Constraints...)
		if p.MaxPerNode > 0 {
			pl.MaxReplicas = uint64(p.MaxPerNode)
		}
		for _, pref := range p.Preferences {
			pl.Preferences = append(pl.Preferences, swarm.PlacementPreference{Spread: &swarm.SpreadOver{SpreadDescriptor: pref.Spread}})
		}
	}
	for _, n := range nets {
		if c := spec.NodeReadyConstraint(n); !svcContains(pl.Constraints, c) {
			pl.Constraints = append(pl.Constraints, c)
		}
	}
	if reflect.ValueOf(pl).IsZero() {
		return nil
	}
	return &pl
}

// svcResources maps limits and reservations with spec's meaning of CPUs
// and memory (what Docker's CLI gives the same text).
func svcResources(r *spec.Resources) *swarm.ResourceRequirements {
	if r == nil {
		return nil
	}
	req := &swarm.ResourceRequirements{}
	if l := r.Limits; l != nil {
		cpu, mem := l.Values()
		req.Limits = &swarm.Limit{NanoCPUs: cpu, MemoryBytes: mem}
	}
	if l := r.Reservations; l != nil {
		cpu, mem := l.Values()
		req.Reservations = &swarm.Resources{NanoCPUs: cpu, MemoryBytes: mem}
	}
	return req
}

// svcLogDriver maps the log driver; nil when the document sets none, so the
// daemon's default applies.
func svcLogDriver(l *spec.Logging) *swarm.Driver {
	if l == nil {
		return nil
	}
	d := &swarm.Driver{Name: l.Driver}
	if len(l.Options) > 0 {
		d.Options = svcCopyMap(l.Options)
	}
	return d
}

// svcUpdateConfig maps the rolling update policy, or the rollback policy
// (same shape, same defaults). The engine stores its own
// value for an empty failure action or order, and Docker reads parallelism
// 0 as "all at once" while the CLI and Swarm default to one at a time: the
// defaults are written out, or every resync would see drift.
func svcUpdateConfig(u *spec.UpdatePolicy) *swarm.UpdateConfig {
	if u == nil {
		return nil
	}
	return &swarm.UpdateConfig{
		Parallelism:   u.ParallelismOrDefault(),
		FailureAction: u.FailureActionOrDefault(),
		Order:         u.OrderOrDefault(),
		Delay:         u.Delay.Duration(),
		Monitor:       u.Monitor.Duration(),
	}
}

// svcRestartPolicy maps the restart policy, its condition defaulted as the
// engine would store it.
func svcRestartPolicy(r *spec.RestartPolicy) *swarm.RestartPolicy {
	if r == nil {
		return nil
	}
	return &swarm.RestartPolicy{
		Condition:   swarm.RestartPolicyCondition(r.ConditionOrDefault()),
		Delay:       r.Delay.Ptr(),
		Window:      r.Window.Ptr(),
		MaxAttempts: r.MaxAttemptsPtr(),
	}
}

func svcContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// svcSpecHash is the SHA-256 of the spec's JSON with the replica count and
// the hash label itself left out. encoding/json writes map keys sorted, so
// equal specs always hash equal.
func svcSpecHash(s swarm.ServiceSpec) (string, error) {
	c := svcWithoutReplicas(s)
	c.Annotations.Labels = svcCopyMap(s.Annotations.Labels)
	delete(c.Annotations.Labels, spec.LabelSpecHash)
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("hash spec: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// svcWithoutReplicas returns a shallow copy whose Mode carries no count.
func svcWithoutReplicas(s swarm.ServiceSpec) swarm.ServiceSpec {
	if s.Mode.Replicated != nil {
		s.Mode.Replicated = &swarm.ReplicatedService{}
	}
	return s
}

// svcCopyList copies a list, nil when empty (as Docker stores none).
func svcCopyList(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	return append([]string(nil), l...)
}

func svcCopyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// svcReplicas is the replica count of a spec, or -1 when it has none.
func svcReplicas(s swarm.ServiceSpec) int64 {
	if s.Mode.Replicated == nil || s.Mode.Replicated.Replicas == nil {
		return -1
	}
	return int64(*s.Mode.Replicated.Replicas)
}

// serviceActionKind is what a service plan does.
type serviceActionKind int

const (
	serviceNone     serviceActionKind = iota
	serviceCreate                     // absent: create it
	serviceUpdate                     // ours and different: update it in place
	serviceConflict                   // same name, not ours: leave it, report
)

func (k serviceActionKind) String() string {
	return [...]string{"none", "create", "update", "conflict"}[k]
}

// serviceAction is planService's decision with the reason for it.
type serviceAction struct {
	Kind   serviceActionKind
	Reason string
}

// planService decides how to bring have (nil when absent) to want. want must
// already have its networks and secrets resolved to IDs (svcResolve), since
// that is how Docker stores them. A service whose spec hash and stored spec
// match gets no update at all: even an identical update makes Swarm
// re-evaluate its tasks (moby #28039).
func planService(want swarm.ServiceSpec, have *swarm.Service) serviceAction {
	if have == nil {
		return serviceAction{Kind: serviceCreate, Reason: "absent"}
	}
	if !spec.Managed(have.Spec.Labels) {
		return serviceAction{Kind: serviceConflict, Reason: (&engine.ConflictError{Kind: "service", Name: want.Name}).Error()}
	}
	if ho, wo := have.Spec.Labels[spec.LabelOwner], want.Labels[spec.LabelOwner]; ho != "" && wo != "" && ho != wo {
		return serviceAction{Kind: serviceConflict, Reason: fmt.Sprintf("service %s belongs to another swarmvlan installation (%s)", want.Name, ho)}
	}
	var why []string
	if have.Spec.Labels[spec.LabelSpecHash] != want.Labels[spec.LabelSpecHash] {
		why = append(why, "spec changed")
	} else if drift := svcDrift(want, have.Spec); len(drift) > 0 {
		why = append(why, "drift in "+strings.Join(drift, ", "))
	}
	if w, h := svcReplicas(want), svcReplicas(have.Spec); w != h {
		why = append(why, fmt.Sprintf("replicas %s -> %s", svcCount(h), svcCount(w)))
	}
	if len(why) == 0 {
		return serviceAction{Kind: serviceNone}
	}
	return serviceAction{Kind: serviceUpdate, Reason: strings.Join(why, "; ")}
}

func svcCount(n int64) string {
	if n < 0 {
		return "global"
	}
	return strconv.FormatInt(n, 10)
}

// svcDrift lists the top-level fields where the stored spec differs from
// the wanted one, after removing what Docker fills in by itself so that
// only hand edits (docker service update) show up.
func svcDrift(want, have swarm.ServiceSpec) []string {
	w := svcComparable(want, want)
	h := svcComparable(have, want)
	var diff []string
	svcDiffPaths("", w, h, &diff)
	sort.Strings(diff)
	return diff
}

// svcComparable renders a spec as generic JSON with the parts that are not
// compared removed: the replica count (compared on its own), ForceUpdate
// (a counter only a user bumps; reverting it would restart every task), and
// defaults Docker stores when the wanted spec left a field out.
func svcComparable(s, want swarm.ServiceSpec) any {
	s = svcWithoutReplicas(s)
	s.TaskTemplate.ForceUpdate = 0
	if s.TaskTemplate.Runtime == swarm.RuntimeContainer && want.TaskTemplate.Runtime == "" {
		s.TaskTemplate.Runtime = ""
	}
	if cs := s.TaskTemplate.ContainerSpec; cs != nil {
		c := *cs
		if c.Isolation == container.IsolationDefault && (want.TaskTemplate.ContainerSpec == nil || want.TaskTemplate.ContainerSpec.Isolation == "") {
			c.Isolation = ""
		}
		c.Image = svcImageTagged(c.Image)
		s.TaskTemplate.ContainerSpec = &c
	}
	if p := s.TaskTemplate.Placement; p != nil && (want.TaskTemplate.Placement == nil || want.TaskTemplate.Placement.Platforms == nil) {
		c := *p
		c.Platforms = nil
		s.TaskTemplate.Placement = &c
	}
	// Docker stores its defaults for these when the spec leaves them out.
	if want.UpdateConfig == nil {
		s.UpdateConfig = nil
	}
	if want.RollbackConfig == nil {
		s.RollbackConfig = nil
	}
	if want.EndpointSpec == nil {
		s.EndpointSpec = nil
	}
	if want.TaskTemplate.RestartPolicy == nil {
		s.TaskTemplate.RestartPolicy = nil
	}
	if want.TaskTemplate.Resources == nil {
		s.TaskTemplate.Resources = nil
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil
	}
	return svcPrune(v)
}

// svcImageTagged adds the ":latest" tag the Docker client adds to an image
// named without tag or digest, so the two spellings compare equal.
func svcImageTagged(image string) string {
	if image == "" || strings.Contains(image, "@") {
		return image
	}
	last := image[strings.LastIndex(image, "/")+1:]
	if strings.Contains(last, ":") {
		return image
	}
	return image + ":latest"
}

// svcPrune drops zero values (false, 0, "", null, empty objects and lists)
// from decoded JSON: Docker writes some of them back where the request had
// none, and they mean the same.
func svcPrune(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			p := svcPrune(e)
			if p == nil {
				delete(x, k)
			} else {
				x[k] = p
			}
		}
		if len(x) == 0 {
			return nil
		}
		return x
	case []any:
		if len(x) == 0 {
			return nil
		}
		for i, e := range x {
			x[i] = svcPrune(e)
		}
		return x
	case bool:
		if !x {
			return nil
		}
	case float64:
		if x == 0 {
			return nil
		}
	case string:
		if x == "" {
			return nil
		}
	}
	return v
}

// svcDiffPaths appends the paths under which w and h differ, stopping at
// the third level so a message names a field, not every nested value.
func svcDiffPaths(path string, w, h any, out *[]string) {
	if reflect.DeepEqual(w, h) {
		return
	}
	wm, wok := w.(map[string]any)
	hm, hok := h.(map[string]any)
	if !wok || !hok || strings.Count(path, ".") >= 3 {
		*out = append(*out, strings.TrimPrefix(path, "."))
		return
	}
	keys := map[string]bool{}
	for k := range wm {
		keys[k] = true
	}
	for k := range hm {
		keys[k] = true
	}
	for k := range keys {
		svcDiffPaths(path+"."+k, wm[k], hm[k], out)
	}
}

// svcRefs maps the names a service refers to onto Docker IDs.
type svcRefs struct {
	networks map[string]string // swarm network name -> ID
	secrets  map[string]string // secret name -> ID
	configs  map[string]string // config name -> ID
}

// svcLoadRefs lists networks, secrets and configs once, and only when some
// spec refers to one, so a pass over many services costs at most three
// calls. Networks are not listed when known (name -> ID) holds every one.
func svcLoadRefs(ctx context.Context, d engine.Docker, known map[string]string, specs ...swarm.ServiceSpec) (svcRefs, error) {
	return svcLoadRefsFor(ctx, d, known, svcNeed{}, specs...)
}

// svcNeed says which kinds of names must be resolved beyond those of the
// specs handed over.
type svcNeed struct{ nets, secrets, configs bool }

// svcLoadRefsFor is svcLoadRefs for the specs and also whatever need
// names.
func svcLoadRefsFor(ctx context.Context, d engine.Docker, known map[string]string, need svcNeed, specs ...swarm.ServiceSpec) (svcRefs, error) {
	refs := svcRefs{networks: map[string]string{}, secrets: map[string]string{}, configs: map[string]string{}}
	needNets, needSecrets, needConfigs := need.nets, need.secrets, need.configs
	for _, s := range specs {
		for _, n := range s.TaskTemplate.Networks {
			if id, ok := known[n.Target]; ok {
				refs.networks[n.Target] = id
			} else {
				needNets = true
			}
		}
		if cs := s.TaskTemplate.ContainerSpec; cs != nil {
			needSecrets = needSecrets || len(cs.Secrets) > 0
			needConfigs = needConfigs || len(cs.Configs) > 0
		}
	}
	if needNets {
		nets, err := d.NetworkList(ctx, engine.Filter("scope", "swarm"))
		if err != nil {
			return refs, fmt.Errorf("list swarm networks: %w", err)
		}
		for _, n := range nets {
			// A local network of the same name cannot carry a service.
			if n.Scope == "swarm" {
				refs.networks[n.Name] = n.ID
			}
		}
	}
	if needSecrets {
		secrets, err := d.SecretList(ctx, engine.Filter())
		if err != nil {
			return refs, fmt.Errorf("list secrets: %w", err)
		}
		for _, s := range secrets {
			refs.secrets[s.Spec.Name] = s.ID
		}
	}
	if needConfigs {
		configs, err := d.ConfigList(ctx, engine.Filter())
		if err != nil {
			return refs, fmt.Errorf("list configs: %w", err)
		}
		for _, c := range configs {
			refs.configs[c.Spec.Name] = c.ID
		}
	}
	return refs, nil
}

// svcResolve returns want with the names of networks, secrets and configs
// replaced by IDs, without touching want itself.
func svcResolve(want swarm.ServiceSpec, refs svcRefs) (swarm.ServiceSpec, error) {
	out := want
	if len(want.TaskTemplate.Networks) > 0 {
		out.TaskTemplate.Networks = make([]swarm.NetworkAttachmentConfig, len(want.TaskTemplate.Networks))
		for i, n := range want.TaskTemplate.Networks {
			id, ok := refs.networks[n.Target]
			if !ok {
				return want, fmt.Errorf("network %q not found", n.Target)
			}
			n.Target = id
			out.TaskTemplate.Networks[i] = n
		}
	}
	if cs := want.TaskTemplate.ContainerSpec; cs != nil && len(cs.Secrets) > 0 {
		c := *cs
		c.Secrets = make([]*swarm.SecretReference, len(cs.Secrets))
		for i, s := range cs.Secrets {
			id, ok := refs.secrets[s.SecretName]
			if !ok {
				return want, &MissingError{Kind: "secret", Name: s.SecretName, Field: fmt.Sprintf("spec.secrets[%d]", i)}
			}
			r := *s
			r.SecretID = id
			c.Secrets[i] = &r
		}
		out.TaskTemplate.ContainerSpec = &c
	}
	if cs := out.TaskTemplate.ContainerSpec; cs != nil && len(cs.Configs) > 0 {
		c := *cs
		c.Configs = make([]*swarm.ConfigReference, len(cs.Configs))
		for i, r := range cs.Configs {
			id, ok := refs.configs[r.ConfigName]
			if !ok {
				return want, &MissingError{Kind: "config", Name: r.ConfigName, Field: fmt.Sprintf("spec.configs[%d]", i)}
			}
			cr := *r
			cr.ConfigID = id
			c.Configs[i] = &cr
		}
		out.TaskTemplate.ContainerSpec = &c
	}
	return out, nil
}

// svcInspect returns the service named exactly name, or nil. Docker also
// matches ID prefixes, so a name that happens to prefix another service's
// ID must not be mistaken for it.
func svcInspect(ctx context.Context, d engine.Docker, name string) (*swarm.Service, error) {
	s, err := d.ServiceInspect(ctx, name)
	switch {
	case engine.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	case s.Spec.Name != name:
		return nil, nil
	}
	return &s, nil
}

// svcMaxConflictRetries bounds the retries after a version conflict; each
// retry re-reads the service, so only a writer racing on every attempt
// exhausts it.
const svcMaxConflictRetries = 5

// EnsureService creates or updates the service so it matches in, and does
// nothing (not even an update call) when it already does. A same-named
// service not made by swarmvlan is left alone: the status says so and the
// error is a *ConflictError. Updates pass the service's version and a
// version conflict is retried a bounded number of times. The status
// includes the current tasks (ObserveService).
func EnsureService(ctx context.Context, d engine.Docker, in ServiceInput) (ServiceStatus, error) {
	want, err := BuildServiceSpec(in)
	if err != nil {
		return ServiceStatus{Name: svcName(in), Message: err.Error()}, err
	}
	name := want.Name
	st := ServiceStatus{Name: name, Desired: svcDesired(want)}
	refs, err := svcLoadRefs(ctx, d, in.NetworkIDs, want)
	if err != nil {
		st.Message = err.Error()
		return st, fmt.Errorf("service %q: %w", name, err)
	}
	resolved, err := svcResolve(want, refs)
	if err != nil {
		st.Message = err.Error()
		return st, fmt.Errorf("service %q: %w", name, err)
	}
	for attempt := 0; ; attempt++ {
		have, err := svcInspect(ctx, d, name)
		if err != nil {
			st.Message = err.Error()
			return st, fmt.Errorf("service %q: inspect: %w", name, err)
		}
		var id, msg string
		if svcAdopted(in, have) {
			id, msg, err = svcApplyAdopted(ctx, d, resolved, have)
		} else {
			id, msg, err = svcApply(ctx, d, resolved, have, planService(resolved, have))
		}
		if err != nil && engine.IsOutOfSequence(err) && attempt < svcMaxConflictRetries {
			continue
		}
		st.ID, st.Message = id, msg
		if err != nil {
			if st.Message == "" {
				st.Message = err.Error()
			}
			return st, fmt.Errorf("service %q: %w", name, err)
		}
		break
	}
	obs, err := svcObserveID(ctx, d, st.ID)
	if err != nil {
		return st, fmt.Errorf("service %q: observe: %w", name, err)
	}
	obs.Name, obs.Message, obs.Desired = name, st.Message, st.Desired
	if want.Mode.Global != nil {
		obs.Desired = len(obs.Tasks)
	}
	return obs, nil
}

func svcName(in ServiceInput) string {
	if in.Service == nil {
		return ""
	}
	return in.Service.Metadata.Name
}

// svcDesired is the desired task count of a replicated spec (0 for global,
// whose count depends on the nodes).
func svcDesired(s swarm.ServiceSpec) int {
	return int(max(svcReplicas(s), 0))
}

// svcApply executes one plan step and returns the service ID and a status
// message.
func svcApply(ctx context.Context, d engine.Docker, want swarm.ServiceSpec, have *swarm.Service, act serviceAction) (string, string, error) {
	switch act.Kind {
	case serviceCreate:
		id, err := d.ServiceCreate(ctx, want)
		if err != nil {
			return "", "", fmt.Errorf("create: %w", refused(err))
		}
		return id, "created", nil
	case serviceUpdate:
		upd := want
		// Keep the user's force-update counter: lowering it would count as a
		// task change and restart every task.
		upd.TaskTemplate.ForceUpdate = have.Spec.TaskTemplate.ForceUpdate
		if err := d.ServiceUpdate(ctx, have.ID, have.Version, upd); err != nil {
			return have.ID, "", fmt.Errorf("update (%s): %w", act.Reason, refused(err))
		}
		return have.ID, "updated: " + act.Reason, nil
	case serviceConflict:
		return have.ID, act.Reason, &engine.ConflictError{Kind: "service", Name: want.Name}
	}
	return have.ID, "", nil
}

// RemoveService removes the service named name if swarmvlan made it. An
// absent service is not an error; one not made by swarmvlan is left alone
// and reported as a *ConflictError.
func RemoveService(ctx context.Context, d engine.Docker, name string) error {
	have, err := svcInspect(ctx, d, name)
	if err != nil {
		return fmt.Errorf("service %q: inspect: %w", name, err)
	}
	if have == nil {
		// One with a Docker name of its own (spec.dockerName, an adopted
		// service's) is found by its owner labels.
		if have, err = svcByOwner(ctx, d, name); err != nil || have == nil {
			return err
		}
	}
	if !spec.Managed(have.Spec.Labels) {
		return fmt.Errorf("service %q: %w", name, &engine.ConflictError{Kind: "service", Name: name})
	}
	if err := d.ServiceRemove(ctx, have.ID); err != nil && !engine.IsNotFound(err) {
		return fmt.Errorf("service %q: remove: %w", name, err)
	}
	return nil
}

// svcByOwner finds swarmvlan's service of the Service document name by
// its owner labels; nil when there is none.
func svcByOwner(ctx context.Context, d engine.Docker, name string) (*swarm.Service, error) {
	list, err := d.ServiceList(ctx, engine.Filter("label", spec.LabelName+"="+name))
	if err != nil {
		return nil, fmt.Errorf("service %q: list by owner: %w", name, err)
	}
	for i := range list {
		if l := list[i].Spec.Labels; spec.Managed(l) && l[spec.LabelKind] == spec.KindService && l[spec.LabelName] == name {
			return &list[i], nil
		}
	}
	return nil, nil
}

// ListManagedServices returns swarmvlan's services by name, in one
// ServiceList call filtered on the ownership label.
func ListManagedServices(ctx context.Context, d engine.Docker) (map[string]swarm.Service, error) {
	list, err := d.ServiceList(ctx, engine.Filter("label", spec.LabelManaged+"=true"))
	if err != nil {
		return nil, fmt.Errorf("list managed services: %w", err)
	}
	out := make(map[string]swarm.Service, len(list))
	for _, s := range list {
		// The label filter runs in the daemon; checking again keeps a
		// fake or an odd daemon from handing over what is not ours.
		if spec.Managed(s.Spec.Labels) {
			// Nothing here reads the spec before the last update; letting
			// it go with the list halves what a pass over many services
			// keeps of it.
			s.PreviousSpec = nil
			out[s.Spec.Name] = s
		}
	}
	return out, nil
}

// ObserveService reports the service's desired and running task counts and
// each current task's state and address on each VLAN. Swarm does not
// record addresses on node-local networks such as macvlan in the task, so
// addresses come from the containers this engine runs; tasks on other
// nodes are reported without addresses (their host reconciler observes
// them). An absent service is a status, not an error.
func ObserveService(ctx context.Context, d engine.Docker, name string) (ServiceStatus, error) {
	have, err := svcInspect(ctx, d, name)
	if err != nil {
		return ServiceStatus{Name: name, Message: err.Error()}, fmt.Errorf("service %q: inspect: %w", name, err)
	}
	if have == nil {
		return ServiceStatus{Name: name, Message: "absent"}, nil
	}
	st, err := svcObserveID(ctx, d, have.ID)
	st.Name = name
	st.Desired = svcDesired(have.Spec)
	if err != nil {
		return st, fmt.Errorf("service %q: %w", name, err)
	}
	if have.Spec.Mode.Global != nil {
		st.Desired = len(st.Tasks)
	}
	return st, nil
}

// svcObserveID observes the tasks of the service with the given ID.
func svcObserveID(ctx context.Context, d engine.Docker, id string) (ServiceStatus, error) {
	st := ServiceStatus{ID: id}
	tasks, err := d.TaskList(ctx, engine.Filter("service", id))
	if err != nil {
		return st, fmt.Errorf("list tasks: %w", err)
	}
	ctrs, err := d.ContainerList(ctx, engine.Filter("label", "com.docker.swarm.service.id="+id))
	if err != nil {
		return st, fmt.Errorf("list containers: %w", err)
	}
	byTask := svcContainerAddrs(ctrs)
	svc := svcTaskStatuses(tasks, byTask)
	st.Tasks = svc[id]
	for _, t := range st.Tasks {
		if t.State == string(swarm.TaskStateRunning) {
			st.Running++
		}
	}
	return st, nil
}

// svcContainerAddrs maps task ID -> network name -> IPv4 address for the
// swarm task containers in ctrs.
func svcContainerAddrs(ctrs []container.Summary) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, c := range ctrs {
		task := c.Labels["com.docker.swarm.task.id"]
		if task == "" || c.NetworkSettings == nil {
			continue
		}
		for name, ep := range c.NetworkSettings.Networks {
			if ep == nil || ep.IPAddress == "" {
				continue
			}
			if out[task] == nil {
				out[task] = map[string]string{}
			}
			out[task][name] = ep.IPAddress
		}
	}
	return out
}

// svcTaskStatuses groups the current tasks (desired state running) by
// service ID, each with its addresses on the networks its service attaches
// to: from the task's attachments where Swarm recorded them, else from the
// container.
func svcTaskStatuses(tasks []swarm.Task, ctrAddrs map[string]map[string]string) map[string][]TaskStatus {
	out := map[string][]TaskStatus{}
	for _, t := range tasks {
		if t.DesiredState != swarm.TaskStateRunning {
			continue
		}
		ts := TaskStatus{ID: t.ID, Slot: t.Slot, Node: t.NodeID, State: string(t.Status.State), Err: t.Status.Err}
		for _, a := range t.NetworksAttachments {
			name := a.Network.Spec.Name
			addr := ""
			if len(a.Addresses) > 0 {
				addr, _, _ = strings.Cut(a.Addresses[0], "/")
			} else if m := ctrAddrs[t.ID]; m != nil {
				addr = m[name]
			}
			if name == "" || addr == "" {
				continue
			}
			if ts.Addresses == nil {
				ts.Addresses = map[string]string{}
			}
			ts.Addresses[name] = addr
		}
		out[t.ServiceID] = append(out[t.ServiceID], ts)
	}
	for _, list := range out {
		sort.Slice(list, func(i, j int) bool {
			if list[i].Slot != list[j].Slot {
				return list[i].Slot < list[j].Slot
			}
			return list[i].ID < list[j].ID
		})
	}
	return out
}

// taskProblems renders what Swarm says of the tasks that are not running,
// at most three of them, for a service's status message; "" when none
// says anything.
func taskProblems(tasks []TaskStatus) string {
	var out []string
	for _, t := range tasks {
		if t.Err == "" || t.State == string(swarm.TaskStateRunning) {
			continue
		}
		if len(out) == 3 {
			out = append(out, "…")
			break
		}
		out = append(out, fmt.Sprintf("task %d on node %s %s: %s", t.Slot, t.Node, t.State, t.Err))
	}
	return strings.Join(out, "; ")
}

// ServiceResyncResult is the outcome of one ServiceResync pass.
type ServiceResyncResult struct {
	// Statuses holds every input service's status by Docker name.
	Statuses map[string]ServiceStatus
	// Created, Updated and Unchanged count the services by what the pass
	// did to them.
	Created, Updated, Unchanged int
	// Orphans are swarmvlan services with no input. They are reported, not
	// removed: removal is the caller's decision, taken only from a view of
	// the documents it trusts (an unreadable view is never "delete all").
	Orphans []string
}

// ServiceResync converges every service in ins in one pass, for the
// periodic resync: one ServiceList, at most one NetworkList and one
// SecretList, one TaskList and one ContainerList for the statuses, and
// create or update calls only where a plan says so. Each service's failure
// is reported in its status and joined into the error; it never stops the
// others.
func ServiceResync(ctx context.Context, d engine.Docker, ins []ServiceInput) (ServiceResyncResult, error) {
	return ServiceResyncMemo(ctx, d, ins, nil)
}

// ServicePlanMemo remembers, between passes, the services a pass found
// matching what was wanted, with their Swarm version: a later pass that
// finds one at the same version and wants the same of it skips the
// comparison (planService's drift check), whose answer cannot have
// changed. Any change of a service in Swarm moves its version. Safe for
// one pass at a time.
type ServicePlanMemo struct {
	matched map[string]planMemo // Docker name ->
}

type planMemo struct {
	id      string
	version uint64
	want    string
	// in is what the wanted spec was built from and refs what its names
	// resolved to: a later pass over the same input, whose names resolve
	// alike and whose service is at the same version, skips building the
	// spec as well (BuildServiceSpec is a function of its input alone).
	in      memoInput
	refs    []memoRef
	desired int
	global  bool
}

// memoInput is the part of a ServiceInput a wanted spec is built from.
// The document is compared by identity: the view decodes a document anew
// whenever it changes and never alters one it handed out, and the memo
// holding the pointer keeps its address from being reused.
type memoInput struct {
	svc      *spec.Service
	replicas int
	owner    string
	nets     string // the networks it joins, each with its Docker name
}

// memoRef is one name of a wanted spec with the ID it resolved to.
type memoRef struct {
	kind     byte // 'n'etwork, 's'ecret, 'c'onfig
	name, id string
}

// memoInputOf is in's memo input; ok is false for an input the memo does
// not serve (none, or one taken over from a hand-made service, which is
// always compared in full).
func memoInputOf(in ServiceInput) (memoInput, bool) {
	if in.Service == nil || in.Service.Spec.DockerName != "" || in.Adopted != nil {
		return memoInput{}, false
	}
	var b strings.Builder
	for _, n := range svcNetworks(in) {
		b.WriteString(n)
		b.WriteByte('=')
		b.WriteString(in.NetworkNames[n])
		b.WriteByte(',')
	}
	return memoInput{svc: in.Service, replicas: in.Replicas, owner: in.Owner, nets: b.String()}, true
}

// memoRefsOf pairs the names of want with the IDs resolved holds.
func memoRefsOf(want, resolved swarm.ServiceSpec) []memoRef {
	var out []memoRef
	for i, n := range want.TaskTemplate.Networks {
		out = append(out, memoRef{'n', n.Target, resolved.TaskTemplate.Networks[i].Target})
	}
	if cs, rs := want.TaskTemplate.ContainerSpec, resolved.TaskTemplate.ContainerSpec; cs != nil && rs != nil {
		for i, r := range cs.Secrets {
			out = append(out, memoRef{'s', r.SecretName, rs.Secrets[i].SecretID})
		}
		for i, r := range cs.Configs {
			out = append(out, memoRef{'c', r.ConfigName, rs.Configs[i].ConfigID})
		}
	}
	return out
}

// need is what the entry's names need resolved.
func (m planMemo) need() svcNeed {
	var n svcNeed
	for _, r := range m.refs {
		switch r.kind {
		case 'n':
			n.nets = true
		case 's':
			n.secrets = true
		case 'c':
			n.configs = true
		}
	}
	return n
}

// resolvesAlike reports whether every name of the entry still resolves
// to the same ID.
func (m planMemo) resolvesAlike(refs svcRefs) bool {
	for _, r := range m.refs {
		var by map[string]string
		switch r.kind {
		case 'n':
			by = refs.networks
		case 's':
			by = refs.secrets
		default:
			by = refs.configs
		}
		if id, ok := by[r.name]; !ok || id != r.id {
			return false
		}
	}
	return true
}

// svcWantKey identifies a resolved wanted spec for the memo: its spec
// hash (the whole spec but the count, by names), the count, and the IDs
// its names resolved to.
func svcWantKey(want swarm.ServiceSpec) string {
	var b strings.Builder
	b.WriteString(want.Labels[spec.LabelSpecHash])
	fmt.Fprintf(&b, "|%d|", svcReplicas(want))
	for _, n := range want.TaskTemplate.Networks {
		b.WriteString(n.Target)
		b.WriteByte(',')
	}
	if cs := want.TaskTemplate.ContainerSpec; cs != nil {
		for _, r := range cs.Secrets {
			b.WriteString(r.SecretID)
			b.WriteByte(',')
		}
		for _, r := range cs.Configs {
			b.WriteString(r.ConfigID)
			b.WriteByte(',')
		}
	}
	return b.String()
}

// ServiceResyncMemo is ServiceResync with a memo of the services found
// unchanged (nil: none).
func ServiceResyncMemo(ctx context.Context, d engine.Docker, ins []ServiceInput, memo *ServicePlanMemo) (ServiceResyncResult, error) {
	res := ServiceResyncResult{Statuses: make(map[string]ServiceStatus, len(ins))}
	matched := map[string]planMemo{}
	defer func() {
		if memo != nil {
			memo.matched = matched
		}
	}()
	plan := func(in ServiceInput, want, resolved swarm.ServiceSpec, have *swarm.Service) serviceAction {
		name := resolved.Name
		if memo != nil && have != nil {
			key := svcWantKey(resolved)
			remember := func(m planMemo) {
				m.in, m.refs = memoInput{}, nil
				if mi, ok := memoInputOf(in); ok {
					m.in, m.refs = mi, memoRefsOf(want, resolved)
				}
				matched[name] = m
			}
			if m, ok := memo.matched[name]; ok && m.id == have.ID && m.version == have.Version.Index && m.want == key {
				remember(m)
				return serviceAction{Kind: serviceNone}
			}
			act := planService(resolved, have)
			if act.Kind == serviceNone {
				remember(planMemo{id: have.ID, version: have.Version.Index, want: key, desired: svcDesired(resolved), global: resolved.Mode.Global != nil})
			}
			return act
		}
		return planService(resolved, have)
	}
	managed, err := ListManagedServices(ctx, d)
	if err != nil {
		return res, err
	}
	var errs []error
	var wants []swarm.ServiceSpec
	inOf := map[string]ServiceInput{}
	// Services found matching by the last pass, with the same input now
	// and at the same version in Swarm: unless a name now resolves to
	// another ID, they are unchanged without their specs being built.
	type memoHit struct {
		in ServiceInput
		m  planMemo
	}
	var hits []memoHit
	var need svcNeed
	build := func(in ServiceInput) {
		w, err := BuildServiceSpec(in)
		if err != nil {
			// Keyed by Docker name, as every other status of the pass.
			name := svcName(in)
			if in.Service != nil {
				name = in.Service.DockerServiceName()
			}
			res.Statuses[name] = ServiceStatus{Name: name, Message: err.Error()}
			errs = append(errs, err)
			return
		}
		wants = append(wants, w)
		inOf[w.Name] = in
	}
	for _, in := range ins {
		if memo != nil {
			if mi, ok := memoInputOf(in); ok {
				name := in.Service.DockerServiceName()
				m, ok := memo.matched[name]
				if have, found := managed[name]; ok && found && m.in == mi && m.id == have.ID && m.version == have.Version.Index {
					hits = append(hits, memoHit{in: in, m: m})
					n := m.need()
					need = svcNeed{need.nets || n.nets, need.secrets || n.secrets, need.configs || n.configs}
					continue
				}
			}
		}
		build(in)
	}
	refs, err := svcLoadRefsFor(ctx, d, nil, need, wants...)
	if err != nil {
		return res, err
	}
	seen := map[string]bool{}
	global := map[string]bool{}
	for _, h := range hits {
		if !h.m.resolvesAlike(refs) {
			build(h.in) // compared in full below
			continue
		}
		name := h.in.Service.DockerServiceName()
		matched[name] = h.m
		seen[name] = true
		global[name] = h.m.global
		res.Statuses[name] = ServiceStatus{Name: name, ID: h.m.id, Desired: h.m.desired}
		res.Unchanged++
	}
	for _, want := range wants {
		name := want.Name
		seen[name] = true
		global[name] = want.Mode.Global != nil
		st := ServiceStatus{Name: name, Desired: svcDesired(want)}
		err := func() error {
			resolved, err := svcResolve(want, refs)
			if err != nil {
				return err
			}
			var have *swarm.Service
			if s, ok := managed[name]; ok {
				have = &s
			} else if have, err = svcInspect(ctx, d, name); err != nil {
				// Not in the managed list: absent, or someone else's.
				return fmt.Errorf("inspect: %w", err)
			}
			for attempt := 0; ; attempt++ {
				var act serviceAction
				var id, msg string
				adopted := svcAdopted(inOf[name], have)
				if adopted {
					act = planService(resolved, have)
				} else {
					act = plan(inOf[name], want, resolved, have)
				}
				if adopted {
					id, msg, err = svcApplyAdopted(ctx, d, resolved, have)
					act.Kind = serviceNone
					switch {
					case errors.Is(err, errAdoptedWaiting):
						// Its own reconcile (queued for the message)
						// waits and reports.
						err = nil
					case err == nil && msg != "":
						act.Kind = serviceUpdate
					}
				} else {
					id, msg, err = svcApply(ctx, d, resolved, have, act)
				}
				if err != nil && engine.IsOutOfSequence(err) && attempt < svcMaxConflictRetries {
					if have, err = svcInspect(ctx, d, name); err != nil {
						return fmt.Errorf("inspect: %w", err)
					}
					continue
				}
				st.ID, st.Message = id, msg
				if err == nil {
					switch act.Kind {
					case serviceCreate:
						res.Created++
					case serviceUpdate:
						res.Updated++
					default:
						res.Unchanged++
					}
				}
				return err
			}
		}()
		if err != nil {
			if st.Message == "" {
				st.Message = err.Error()
			}
			errs = append(errs, fmt.Errorf("service %q: %w", name, err))
		}
		res.Statuses[name] = st
	}
	for name := range managed {
		if !seen[name] {
			res.Orphans = append(res.Orphans, name)
		}
	}
	sort.Strings(res.Orphans)

	if err := svcObserveAll(ctx, d, res.Statuses); err != nil {
		errs = append(errs, err)
	}
	for name, st := range res.Statuses {
		if global[name] {
			// A global service wants one task per eligible node.
			st.Desired = len(st.Tasks)
			res.Statuses[name] = st
		}
	}
	return res, errors.Join(errs...)
}

// svcObserveAll fills the task counts of every status from one TaskList of
// the current tasks and one ContainerList of this engine's task containers.
func svcObserveAll(ctx context.Context, d engine.Docker, sts map[string]ServiceStatus) error {
	if len(sts) == 0 {
		return nil
	}
	tasks, err := d.TaskList(ctx, engine.Filter("desired-state", "running"))
	if err != nil {
		return fmt.Errorf("list tasks: %w", err)
	}
	var byTask map[string]map[string]string
	if len(tasks) > 0 {
		ctrs, err := d.ContainerList(ctx, engine.Filter("label", "com.docker.swarm.task.id"))
		if err != nil {
			return fmt.Errorf("list containers: %w", err)
		}
		byTask = svcContainerAddrs(ctrs)
	}
	bySvc := svcTaskStatuses(tasks, byTask)
	for name, st := range sts {
		if st.ID == "" {
			continue
		}
		st.Tasks = bySvc[st.ID]
		st.Running = 0
		for _, t := range st.Tasks {
			if t.State == string(swarm.TaskStateRunning) {
				st.Running++
			}
		}
		sts[name] = st
	}
	return nil
}
