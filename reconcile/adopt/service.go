package adopt

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/swarm"

	"swarmvlan/reconcile/cluster"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// inferService builds the Service document of one service attached to an
// adopted VLAN network, and lists what it cannot express.
func inferService(res *Result, s *swarm.Service, vlanOf, netName map[string]string, used map[string]bool) {
	if spec.Managed(s.Spec.Labels) {
		return
	}
	atts := append(slices.Clone(s.Spec.TaskTemplate.Networks), s.Spec.Networks...) //nolint:staticcheck // old clients set Spec.Networks
	var vlans []string
	var aliases [][]string
	var other []spec.NetworkAttachment
	for _, a := range atts {
		if v, ok := vlanOf[a.Target]; ok {
			vlans = append(vlans, v)
			aliases = append(aliases, a.Aliases)
			continue
		}
		n := netName[a.Target]
		if n == "" {
			n = a.Target
		}
		other = append(other, spec.NetworkAttachment{Name: n, Aliases: slices.Clone(a.Aliases)})
	}
	if len(vlans) == 0 {
		return
	}
	name := DNSName(s.Spec.Name, used)
	doc := &spec.Service{APIVersion: spec.APIVersion, Kind: spec.KindService,
		Metadata: spec.ObjectMeta{Name: name},
		Spec:     serviceSpec(s.Spec)}
	doc.Spec.Networks = vlans
	// One list of aliases serves every VLAN attachment; attachments with
	// different aliases show as a difference below.
	if len(aliases) > 0 && len(aliases[0]) > 0 {
		doc.Spec.Aliases = slices.Clone(aliases[0])
	}
	doc.Spec.Overlays = other
	doc.Spec.DockerName = s.Spec.Name
	var unexpressed []string
	for k, v := range s.Spec.Labels {
		if strings.HasPrefix(k, "io.swarmvlan.") {
			continue
		}
		if doc.Metadata.Labels == nil {
			doc.Metadata.Labels = map[string]string{}
		}
		doc.Metadata.Labels[k] = v
	}
	if err := spec.Validate(doc); err != nil {
		res.Problems = append(res.Problems, Problem{Object: "service " + s.Spec.Name,
			What: "the inferred document is invalid: " + strings.ReplaceAll(err.Error(), "\n", "; "),
			Fix:  "change the service by hand (docker service update) or write its document by hand", Refuse: true})
		return
	}
	unexpressed = append(unexpressed, serviceUnexpressed(doc, s, vlanOf, netName)...)
	sort.Strings(unexpressed)
	final, err := roundTrip(doc)
	if err != nil {
		res.Problems = append(res.Problems, Problem{Object: "service " + s.Spec.Name, What: "the inferred document does not decode: " + err.Error(), Refuse: true})
		return
	}
	res.Services = append(res.Services, doc)
	if len(unexpressed) > 0 {
		res.Unexpressed[name] = unexpressed
	}
	res.AdoptedServices = append(res.AdoptedServices, state.AdoptedService{ID: s.ID, Name: s.Spec.Name, Service: name, SpecHash: spec.AdoptionHash(final.(*spec.Service))})
}

// serviceUnexpressed maps the document back onto a swarm spec the way the
// leader does and names every field where it differs from the service as
// it is, leaving out what swarmvlan adds (its labels, the readiness
// constraints) and the environment's order.
func serviceUnexpressed(doc *spec.Service, s *swarm.Service, vlanOf, netName map[string]string) []string {
	d, err := roundTrip(doc)
	if err != nil {
		return []string{"document: " + err.Error()}
	}
	svc := d.(*spec.Service)
	names := map[string]string{}
	ids := map[string]string{}
	for id, n := range netName {
		ids[n] = id
		if v, ok := vlanOf[id]; ok {
			names[v] = n
		}
	}
	in := cluster.ServiceInput{Service: svc, NetworkNames: names}
	if r := s.Spec.Mode.Replicated; r != nil && r.Replicas != nil {
		in.Replicas = int(*r.Replicas)
	}
	built, err := cluster.BuildServiceSpec(in)
	if err != nil {
		return []string{"document: " + err.Error()}
	}
	strip := func(m map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			if !strings.HasPrefix(k, "io.swarmvlan.") {
				out[k] = v
			}
		}
		return out
	}
	built.Labels = strip(built.Labels)
	if p := built.TaskTemplate.Placement; p != nil {
		c := *p
		c.Constraints = slices.DeleteFunc(slices.Clone(c.Constraints), func(x string) bool { return strings.Contains(x, spec.NodeLabelPrefix) })
		built.TaskTemplate.Placement = &c
		if len(c.Constraints) == 0 && c.MaxReplicas == 0 && len(c.Preferences) == 0 && len(c.Platforms) == 0 {
			built.TaskTemplate.Placement = nil
		}
	}
	for i, n := range built.TaskTemplate.Networks {
		if id, ok := ids[n.Target]; ok {
			built.TaskTemplate.Networks[i].Target = id
		}
	}
	have := s.Spec
	if cs := built.TaskTemplate.ContainerSpec; cs != nil {
		c := *cs
		c.Labels = strip(c.Labels)
		secretIDs := map[string]string{}
		if hc := have.TaskTemplate.ContainerSpec; hc != nil {
			for _, r := range hc.Secrets {
				secretIDs[r.SecretName] = r.SecretID
			}
		}
		for i, r := range c.Secrets {
			cp := *r
			cp.SecretID = secretIDs[r.SecretName]
			c.Secrets[i] = &cp
		}
		configIDs := map[string]string{}
		if hc := have.TaskTemplate.ContainerSpec; hc != nil {
			for _, r := range hc.Configs {
				configIDs[r.ConfigName] = r.ConfigID
			}
		}
		for i, r := range c.Configs {
			cp := *r
			cp.ConfigID = configIDs[r.ConfigName]
			c.Configs[i] = &cp
		}
		built.TaskTemplate.ContainerSpec = &c
	}
	if hc := have.TaskTemplate.ContainerSpec; hc != nil {
		c := *hc
		c.Env = slices.Clone(c.Env)
		sort.Strings(c.Env)
		have.TaskTemplate.ContainerSpec = &c
	}
	// Spec.Networks (deprecated) is read into spec.networks.
	have.Networks = nil //nolint:staticcheck
	if len(have.TaskTemplate.Networks) == 0 {
		have.TaskTemplate.Networks = s.Spec.Networks //nolint:staticcheck
	}
	return cluster.ServiceDrift(built, have)
}

// serviceSpec maps what a Swarm service spec holds onto a document's
// spec, as far as the document can say it.
func serviceSpec(s swarm.ServiceSpec) spec.ServiceSpec {
	var out spec.ServiceSpec
	if s.Mode.Global != nil {
		out.Mode = spec.ModeGlobal
	} else if r := s.Mode.Replicated; r != nil && r.Replicas != nil {
		out.Replicas = new(int(*r.Replicas))
	}
	if cs := s.TaskTemplate.ContainerSpec; cs != nil {
		out.Image = cs.Image
		out.Command = slices.Clone(cs.Command)
		out.Args = slices.Clone(cs.Args)
		for _, e := range cs.Env {
			k, v, _ := strings.Cut(e, "=")
			if out.Env == nil {
				out.Env = map[string]string{}
			}
			out.Env[k] = v
		}
		for k, v := range cs.Labels {
			if out.Labels == nil {
				out.Labels = map[string]string{}
			}
			out.Labels[k] = v
		}
		out.User, out.Workdir, out.Hostname, out.StopSignal, out.ReadOnly = cs.User, cs.Dir, cs.Hostname, cs.StopSignal, cs.ReadOnly
		if cs.StopGracePeriod != nil {
			out.StopGracePeriod = dur(*cs.StopGracePeriod)
		}
		if cs.Init != nil {
			out.Init = new(*cs.Init)
		}
		out.CapAdd, out.CapDrop = slices.Clone(cs.CapabilityAdd), slices.Clone(cs.CapabilityDrop)
		if len(cs.Sysctls) > 0 {
			out.Sysctls = map[string]string{}
			for k, v := range cs.Sysctls {
				out.Sysctls[k] = v
			}
		}
		for _, u := range cs.Ulimits {
			if u == nil {
				continue
			}
			if out.Ulimits == nil {
				out.Ulimits = map[string]spec.Ulimit{}
			}
			out.Ulimits[u.Name] = spec.Ulimit{Soft: u.Soft, Hard: u.Hard}
		}
		if d := cs.DNSConfig; d != nil && len(d.Nameservers)+len(d.Search)+len(d.Options) > 0 {
			out.DNS = &spec.DNSConfig{Servers: slices.Clone(d.Nameservers), Search: slices.Clone(d.Search), Options: slices.Clone(d.Options)}
		}
		for _, h := range cs.Hosts {
			// Swarm stores "IP host [alias...]"; the document says "host:ip".
			f := strings.Fields(h)
			for _, n := range f[min(1, len(f)):] {
				out.ExtraHosts = append(out.ExtraHosts, n+":"+f[0])
			}
		}
		if hc := cs.Healthcheck; hc != nil && len(hc.Test) > 0 {
			out.Healthcheck = &spec.Healthcheck{Test: slices.Clone(hc.Test), Retries: hc.Retries,
				Interval: dur(hc.Interval), Timeout: dur(hc.Timeout), StartPeriod: dur(hc.StartPeriod)}
		}
		for _, m := range cs.Mounts {
			out.Mounts = append(out.Mounts, spec.Mount{Type: string(m.Type), Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
		}
		for _, r := range cs.Secrets {
			if r != nil {
				out.Secrets = append(out.Secrets, fileRef(r.SecretName, r.File, r.SecretName))
			}
		}
		for _, r := range cs.Configs {
			if r != nil && r.File != nil {
				out.Configs = append(out.Configs, fileRef(r.ConfigName, (*swarm.SecretReferenceFileTarget)(r.File), "/"+r.ConfigName))
			}
		}
	}
	if p := s.TaskTemplate.Placement; p != nil {
		var pl spec.Placement
		for _, c := range p.Constraints {
			if !strings.Contains(c, spec.NodeLabelPrefix) {
				pl.Constraints = append(pl.Constraints, c)
			}
		}
		pl.MaxPerNode = int(p.MaxReplicas)
		for _, pref := range p.Preferences {
			if pref.Spread != nil {
				pl.Preferences = append(pl.Preferences, spec.Preference{Spread: pref.Spread.SpreadDescriptor})
			}
		}
		if len(pl.Constraints)+pl.MaxPerNode+len(pl.Preferences) > 0 {
			out.Placement = &pl
		}
	}
	if r := s.TaskTemplate.Resources; r != nil && (r.Limits != nil || r.Reservations != nil) {
		out.Resources = &spec.Resources{}
		if l := r.Limits; l != nil && (l.NanoCPUs != 0 || l.MemoryBytes != 0) {
			out.Resources.Limits = resourceList(l.NanoCPUs, l.MemoryBytes)
		}
		if l := r.Reservations; l != nil && (l.NanoCPUs != 0 || l.MemoryBytes != 0) {
			out.Resources.Reservations = resourceList(l.NanoCPUs, l.MemoryBytes)
		}
		if out.Resources.Limits == nil && out.Resources.Reservations == nil {
			out.Resources = nil
		}
	}
	out.Update = updatePolicy(s.UpdateConfig)
	out.Rollback = updatePolicy(s.RollbackConfig)
	if r := s.TaskTemplate.RestartPolicy; r != nil {
		rp := &spec.RestartPolicy{Condition: string(r.Condition)}
		if r.Delay != nil {
			rp.Delay = dur(*r.Delay)
		}
		if r.Window != nil {
			rp.Window = dur(*r.Window)
		}
		if r.MaxAttempts != nil {
			rp.MaxAttempts = new(int(*r.MaxAttempts))
		}
		out.Restart = rp
	}
	if l := s.TaskTemplate.LogDriver; l != nil && l.Name != "" {
		out.Logging = &spec.Logging{Driver: l.Name}
		if len(l.Options) > 0 {
			out.Logging.Options = map[string]string{}
			for k, v := range l.Options {
				out.Logging.Options[k] = v
			}
		}
	}
	if e := s.EndpointSpec; e != nil && e.Mode != "" {
		out.EndpointMode = string(e.Mode)
	}
	return out
}

func updatePolicy(u *swarm.UpdateConfig) *spec.UpdatePolicy {
	if u == nil {
		return nil
	}
	return &spec.UpdatePolicy{Parallelism: new(int(u.Parallelism)), Delay: dur(u.Delay), FailureAction: u.FailureAction,
		Order: u.Order, Monitor: dur(u.Monitor)}
}

func resourceList(nanoCPUs, memory int64) *spec.ResourceList {
	var l spec.ResourceList
	if nanoCPUs != 0 {
		l.CPUs = strconv.FormatFloat(float64(nanoCPUs)/1e9, 'f', -1, 64)
	}
	if memory != 0 {
		l.Memory = strconv.FormatInt(memory, 10)
	}
	return &l
}

// dur renders a duration as the document writes it; zero is unset.
func dur(d time.Duration) spec.Duration {
	if d == 0 {
		return ""
	}
	return spec.Duration(d.String())
}

// fileRef is a secret's or config's reference in a document: the fields
// that differ from the defaults (target defTarget, uid and gid 0, mode
// 0444) are set.
func fileRef(name string, f *swarm.SecretReferenceFileTarget, defTarget string) spec.FileRef {
	ref := spec.FileRef{Name: name}
	if f == nil {
		return ref
	}
	if f.Name != "" && f.Name != defTarget {
		ref.Target = f.Name
	}
	if id, err := strconv.Atoi(f.UID); err == nil && id != 0 {
		ref.UID = &id
	}
	if id, err := strconv.Atoi(f.GID); err == nil && id != 0 {
		ref.GID = &id
	}
	if m := int(f.Mode.Perm()); m != spec.DefaultFileMode {
		ref.Mode = &m
	}
	return ref
}
