// Package compose turns compose files (the format docker stack deploy
// takes) into Service documents. Every key that maps onto a Service field
// is mapped; every key that cannot be is reported with its path and the
// reason, never dropped silently. The documents are validated by spec, as
// any document is.
package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/sirupsen/logrus"
	"go.yaml.in/yaml/v3"

	"swarmvlan/spec"
)

// VLANExtension is the key a compose network may carry to say which
// swarmvlan VLAN it is: `x-swarmvlan-vlan: vlan40`.
const VLANExtension = "x-swarmvlan-vlan"

// Options say what to load and how compose networks map onto VLANs.
type Options struct {
	// Files are the compose file and its overrides, merged in order.
	Files []string
	// Env is the environment interpolation reads (with the .env file
	// beside the first file, which the environment overrides).
	Env []string
	// VLANs maps a compose network (its key in the file, or its Docker
	// name) to the VLAN it is; a network listed here or carrying
	// VLANExtension joins the service's spec.networks, every other
	// network its spec.overlays.
	VLANs map[string]string
	// Name is the project name (default: the first file's directory).
	Name string
	// Profiles are the compose profiles whose services are converted too.
	Profiles []string
}

// Issue is a key of the compose file that the documents do not express.
type Issue struct {
	Path   string // "services.web.ports[0]"
	Reason string
}

func (i Issue) String() string { return i.Path + ": " + i.Reason }

// Result is what Convert made: one document per compose service that could
// be converted, in the order of the services' names, and the issues.
type Result struct {
	Services []*spec.Service
	Issues   []Issue
}

// Convert loads the compose files (interpolation, .env and overrides
// included, as docker compose and docker stack deploy read them) and
// converts each service. A service that cannot become a valid document (no
// image, no VLAN) is left out and reported; the error is only for files
// that do not load.
func Convert(ctx context.Context, o Options) (Result, error) {
	if len(o.Files) == 0 {
		return Result{}, fmt.Errorf("no compose file")
	}
	dir := filepath.Dir(o.Files[0])
	opts := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(dir),
		cli.WithEnv(o.Env),
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithResolvedPaths(true),
	}
	if o.Name != "" {
		opts = append(opts, cli.WithName(o.Name))
	}
	if len(o.Profiles) > 0 {
		opts = append(opts, cli.WithProfiles(o.Profiles))
	}
	po, err := cli.NewProjectOptions(o.Files, opts...)
	if err != nil {
		return Result{}, fmt.Errorf("compose: %w", err)
	}
	warnings := captureWarnings()
	p, err := po.LoadProject(ctx)
	warned := warnings()
	if err != nil {
		return Result{}, fmt.Errorf("compose: %w", err)
	}
	c := &converter{p: p, vlans: o.VLANs}
	abs, _ := filepath.Abs(dir)
	for _, w := range warned {
		// compose-go says so when interpolation used a blank for an
		// unset variable, which may well make the document wrong.
		c.report("(compose)", "%s", strings.ReplaceAll(w, abs+string(filepath.Separator), ""))
	}
	for _, name := range slices.Sorted(maps.Keys(p.DisabledServices)) {
		c.report("services."+name, "its profiles %v are not active (--profile); left out", p.DisabledServices[name].Profiles)
	}
	var res Result
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		if s := c.service(p.Services[name]); s != nil {
			res.Services = append(res.Services, s)
		}
	}
	c.topLevel()
	res.Issues = c.issues
	return res, nil
}

// captureWarnings collects what compose-go logs (through logrus) until the
// returned function is called, which restores the logger and returns the
// messages.
func captureWarnings() func() []string {
	l := logrus.StandardLogger()
	out, formatter := l.Out, l.Formatter
	var buf bytes.Buffer
	l.SetOutput(&buf)
	l.SetFormatter(messageOnly{})
	return func() []string {
		l.SetOutput(out)
		l.SetFormatter(formatter)
		return strings.FieldsFunc(buf.String(), func(r rune) bool { return r == '\n' })
	}
}

type messageOnly struct{}

func (messageOnly) Format(e *logrus.Entry) ([]byte, error) { return []byte(e.Message + "\n"), nil }

type converter struct {
	job    bool // the service being converted is a job
	p      *types.Project
	vlans  map[string]string
	issues []Issue
}

func (c *converter) report(path, format string, args ...any) {
	c.issues = append(c.issues, Issue{Path: path, Reason: fmt.Sprintf(format, args...)})
}

// dnsInvalid are the characters a compose service name may have that a
// document's name may not.
var dnsInvalid = regexp.MustCompile(`[^a-z0-9-]+`)

// service converts one compose service, or reports why it cannot and
// returns nil.
func (c *converter) service(sc types.ServiceConfig) *spec.Service {
	p := "services." + sc.Name
	name := strings.Trim(dnsInvalid.ReplaceAllString(strings.ToLower(sc.Name), "-"), "-")
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	if name != sc.Name {
		c.report(p, "named %s: a document's name is a DNS label", name)
	}
	c.job = false
	svc := &spec.Service{APIVersion: spec.APIVersion, Kind: spec.KindService, Metadata: spec.ObjectMeta{Name: name}}
	s := &svc.Spec
	rest := sc // what is left once every mapped key is cleared

	s.Image = sc.Image
	rest.Image = ""
	if sc.Image == "" {
		c.report(p+".image", "required: swarmvlan runs images, it does not build them")
	}
	s.Command, rest.Entrypoint = []string(sc.Entrypoint), nil
	s.Args, rest.Command = []string(sc.Command), nil
	c.environment(p, sc, s)
	rest.Environment, rest.EnvFiles = nil, nil
	if len(sc.Labels) > 0 {
		s.Labels = maps.Clone(map[string]string(sc.Labels))
	}
	rest.Labels, rest.CustomLabels, rest.LabelFiles = nil, nil, nil

	s.User, rest.User = sc.User, ""
	s.Workdir, rest.WorkingDir = sc.WorkingDir, ""
	s.Hostname, rest.Hostname = sc.Hostname, ""
	s.StopSignal, rest.StopSignal = sc.StopSignal, ""
	if sc.StopGracePeriod != nil {
		s.StopGracePeriod = duration(*sc.StopGracePeriod)
	}
	rest.StopGracePeriod = nil
	s.Init, rest.Init = sc.Init, nil
	s.ReadOnly, rest.ReadOnly = sc.ReadOnly, false
	s.CapAdd, rest.CapAdd = sc.CapAdd, nil
	s.CapDrop, rest.CapDrop = sc.CapDrop, nil
	if len(sc.Sysctls) > 0 {
		s.Sysctls = maps.Clone(map[string]string(sc.Sysctls))
	}
	rest.Sysctls = nil
	c.ulimits(p, sc, s)
	rest.Ulimits = nil
	if len(sc.DNS)+len(sc.DNSSearch)+len(sc.DNSOpts) > 0 {
		s.DNS = &spec.DNSConfig{Servers: sc.DNS, Search: sc.DNSSearch, Options: sc.DNSOpts}
	}
	rest.DNS, rest.DNSSearch, rest.DNSOpts = nil, nil, nil
	for _, h := range slices.Sorted(maps.Keys(sc.ExtraHosts)) {
		for _, ip := range sc.ExtraHosts[h] {
			s.ExtraHosts = append(s.ExtraHosts, h+":"+ip)
		}
	}
	rest.ExtraHosts = nil
	c.logging(p, sc, s)
	rest.Logging, rest.LogDriver, rest.LogOpt = nil, "", nil
	c.healthcheck(p, sc, s)
	rest.HealthCheck = nil
	c.deploy(p, sc, svc)
	rest.Deploy, rest.Scale = nil, nil
	c.resources(p, sc, s)
	rest.CPUS, rest.MemLimit, rest.MemReservation = 0, 0, 0
	s.Secrets = c.files(p+".secrets", sc.Secrets, "secret")
	s.Configs = c.files(p+".configs", configRefs(sc.Configs), "config")
	rest.Secrets, rest.Configs = nil, nil
	c.networks(p, sc, s)
	rest.Networks = nil
	c.volumes(p, sc, s)
	rest.Volumes, rest.Tmpfs = nil, nil
	for i, port := range sc.Ports {
		pp := fmt.Sprintf("%s.ports[%d]", p, i)
		if port.Mode == "host" {
			c.report(pp, "a port published on the host (mode host) has no field; the task is reached at its VLAN address, port %d", port.Target)
		} else {
			c.report(pp, "the routing mesh does not reach tasks on a VLAN; they are reached at their VLAN address, port %d (and spec.consul.port registers it)", port.Target)
		}
	}
	rest.Ports = nil
	if len(sc.Expose) > 0 {
		c.report(p+".expose", "has no effect: every port of a task is open on its VLAN address")
	}
	rest.Expose = nil
	if sc.Restart != "" {
		c.report(p+".restart", "docker stack deploy ignores it; deploy.restart_policy is the service's restart policy")
	}
	rest.Restart = ""
	if len(sc.Extensions) > 0 {
		for _, k := range slices.Sorted(maps.Keys(sc.Extensions)) {
			c.report(p+"."+k, "an extension swarmvlan does not read")
		}
	}
	rest.Extensions = nil
	rest.Name = ""
	c.leftovers(p, reflect.ValueOf(rest))

	if len(s.Networks) == 0 {
		c.report(p+".networks", "no network names a VLAN (map one with --vlan NETWORK=VLAN or "+VLANExtension+"); the service is left out")
		return nil
	}
	if s.Image == "" || c.job {
		return nil
	}
	return c.check(p, svc)
}

// check validates the document as printed and read back, and reports each
// problem under the service's path.
func (c *converter) check(p string, svc *spec.Service) *spec.Service {
	out, err := Marshal(svc)
	if err == nil {
		var docs []spec.Document
		if docs, err = spec.DecodeAll(out); err == nil {
			err = spec.Validate(docs[0].Object)
		}
	}
	if err != nil {
		for _, e := range spec.AsErrorList(err) {
			c.report(p, "the document is invalid and left out: %s", e)
		}
		return nil
	}
	return svc
}

func duration(d types.Duration) spec.Duration {
	return spec.Duration(time.Duration(d).String())
}

func durationPtr(d *types.Duration) spec.Duration {
	if d == nil {
		return ""
	}
	return duration(*d)
}

func (c *converter) environment(p string, sc types.ServiceConfig, s *spec.ServiceSpec) {
	for _, k := range slices.Sorted(maps.Keys(sc.Environment)) {
		v := sc.Environment[k]
		if v == nil {
			c.report(p+".environment."+k, "has no value here (neither the file, .env nor the environment sets it); left out")
			continue
		}
		if s.Env == nil {
			s.Env = map[string]string{}
		}
		s.Env[k] = *v
	}
}

func (c *converter) ulimits(p string, sc types.ServiceConfig, s *spec.ServiceSpec) {
	for _, k := range slices.Sorted(maps.Keys(sc.Ulimits)) {
		u := sc.Ulimits[k]
		soft, hard := u.Soft, u.Hard
		if u.Single != 0 {
			soft, hard = u.Single, u.Single
		}
		if s.Ulimits == nil {
			s.Ulimits = map[string]spec.Ulimit{}
		}
		s.Ulimits[k] = spec.Ulimit{Soft: int64(soft), Hard: int64(hard)}
	}
}

func (c *converter) logging(p string, sc types.ServiceConfig, s *spec.ServiceSpec) {
	driver, opts := sc.LogDriver, map[string]string(sc.LogOpt)
	if l := sc.Logging; l != nil {
		if l.Driver != "" {
			driver = l.Driver
		}
		if len(l.Options) > 0 {
			opts = map[string]string(l.Options)
		}
	}
	if driver == "" && len(opts) > 0 {
		c.report(p+".logging.options", "options without a driver: the daemon's default driver is not known here; left out")
		return
	}
	if driver != "" {
		s.Logging = &spec.Logging{Driver: driver}
		if len(opts) > 0 {
			s.Logging.Options = maps.Clone(opts)
		}
	}
}

func (c *converter) healthcheck(p string, sc types.ServiceConfig, s *spec.ServiceSpec) {
	h := sc.HealthCheck
	if h == nil {
		return
	}
	p += ".healthcheck"
	if h.Disable {
		s.Healthcheck = &spec.Healthcheck{Test: []string{"NONE"}}
		return
	}
	if len(h.Test) == 0 {
		c.report(p, "no test: the image's health check stays in force; left out")
		return
	}
	hc := &spec.Healthcheck{Test: []string(h.Test), Interval: durationPtr(h.Interval), Timeout: durationPtr(h.Timeout), StartPeriod: durationPtr(h.StartPeriod)}
	if h.Retries != nil {
		hc.Retries = int(*h.Retries)
	}
	if h.StartInterval != nil {
		c.report(p+".start_interval", "has no field (Engine 25 and later only)")
	}
	s.Healthcheck = hc
}

func (c *converter) deploy(p string, sc types.ServiceConfig, svc *spec.Service) {
	s := &svc.Spec
	if sc.Scale != nil {
		n := *sc.Scale
		s.Replicas = &n
	}
	d := sc.Deploy
	if d == nil {
		return
	}
	p += ".deploy"
	switch d.Mode {
	case "", "replicated":
	case "global":
		s.Mode = spec.ModeGlobal
	default:
		c.report(p+".mode", "%s has no field: a Service is replicated or global; the service is left out", d.Mode)
		c.job = true
	}
	if d.Replicas != nil && s.Mode != spec.ModeGlobal {
		n := *d.Replicas
		s.Replicas = &n
	}
	if len(d.Labels) > 0 {
		svc.Metadata.Labels = maps.Clone(map[string]string(d.Labels))
	}
	s.Update = c.updatePolicy(p+".update_config", d.UpdateConfig)
	s.Rollback = c.updatePolicy(p+".rollback_config", d.RollbackConfig)
	if r := d.RestartPolicy; r != nil {
		rp := &spec.RestartPolicy{Condition: r.Condition, Delay: durationPtr(r.Delay), Window: durationPtr(r.Window)}
		if r.MaxAttempts != nil {
			n := int(*r.MaxAttempts)
			rp.MaxAttempts = &n
		}
		s.Restart = rp
	}
	if pl := d.Placement; len(pl.Constraints)+len(pl.Preferences) > 0 || pl.MaxReplicas > 0 {
		s.Placement = &spec.Placement{Constraints: pl.Constraints, MaxPerNode: int(pl.MaxReplicas)}
		for _, pref := range pl.Preferences {
			s.Placement.Preferences = append(s.Placement.Preferences, spec.Preference{Spread: pref.Spread})
		}
	}
	s.EndpointMode = d.EndpointMode
	for _, r := range []struct {
		path string
		res  *types.Resource
	}{{"limits", d.Resources.Limits}, {"reservations", d.Resources.Reservations}} {
		if r.res == nil {
			continue
		}
		rp := p + ".resources." + r.path
		if r.res.Pids != 0 {
			c.report(rp+".pids", "has no field")
		}
		if len(r.res.Devices) > 0 {
			c.report(rp+".devices", "has no field")
		}
		if len(r.res.GenericResources) > 0 {
			c.report(rp+".generic_resources", "has no field")
		}
	}
}

func (c *converter) updatePolicy(p string, u *types.UpdateConfig) *spec.UpdatePolicy {
	if u == nil {
		return nil
	}
	out := &spec.UpdatePolicy{Delay: spec.Duration(""), FailureAction: u.FailureAction, Order: u.Order}
	if u.Delay != 0 {
		out.Delay = duration(u.Delay)
	}
	if u.Monitor != 0 {
		out.Monitor = duration(u.Monitor)
	}
	if u.Parallelism != nil {
		n := int(*u.Parallelism)
		out.Parallelism = &n
	}
	if u.MaxFailureRatio != 0 {
		c.report(p+".max_failure_ratio", "has no field: Swarm's default (0, any failure) applies")
	}
	return out
}

// resources maps deploy.resources, and the container-level cpus, mem_limit
// and mem_reservation where deploy.resources leaves a value out (docker
// stack deploy reads only deploy.resources).
func (c *converter) resources(p string, sc types.ServiceConfig, s *spec.ServiceSpec) {
	var lim, res *types.Resource
	if d := sc.Deploy; d != nil {
		lim, res = d.Resources.Limits, d.Resources.Reservations
	}
	list := func(r *types.Resource, cpus float32, mem types.UnitBytes) *spec.ResourceList {
		var l spec.ResourceList
		if r != nil {
			cpus, mem = float32(r.NanoCPUs), r.MemoryBytes
		}
		if cpus != 0 {
			l.CPUs = strconv.FormatFloat(float64(cpus), 'f', -1, 32)
		}
		if mem != 0 {
			l.Memory = quantity(int64(mem))
		}
		if l == (spec.ResourceList{}) {
			return nil
		}
		return &l
	}
	limits := list(lim, sc.CPUS, sc.MemLimit)
	reservations := list(res, 0, sc.MemReservation)
	if limits != nil || reservations != nil {
		s.Resources = &spec.Resources{Limits: limits, Reservations: reservations}
	}
}

// quantity writes bytes in the largest binary unit that divides them.
func quantity(b int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if b%u.size == 0 {
			return strconv.FormatInt(b/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(b, 10)
}

func configRefs(cs []types.ServiceConfigObjConfig) []types.ServiceSecretConfig {
	out := make([]types.ServiceSecretConfig, len(cs))
	for i, c := range cs {
		out[i] = types.ServiceSecretConfig(c)
	}
	return out
}

// files maps a service's secrets or configs onto references to the Swarm
// objects of the names docker stack deploy gives them.
func (c *converter) files(p string, refs []types.ServiceSecretConfig, kind string) []spec.FileRef {
	var out []spec.FileRef
	for i, r := range refs {
		ip := fmt.Sprintf("%s[%d]", p, i)
		obj, ok := c.fileObject(kind, r.Source)
		if !ok {
			c.report(ip, "%s %q is not defined at the top level; left out", kind, r.Source)
			continue
		}
		name := obj.Name
		if name == "" {
			name = r.Source
		}
		f := spec.FileRef{Name: name, Target: r.Target}
		if kind == "secret" && strings.HasPrefix(f.Target, "/run/secrets/") && !strings.Contains(strings.TrimPrefix(f.Target, "/run/secrets/"), "/") {
			f.Target = strings.TrimPrefix(f.Target, "/run/secrets/")
		}
		if f.Target == name || kind == "config" && f.Target == "/"+name {
			f.Target = ""
		}
		for _, id := range []struct {
			field, v string
			dst      **int
		}{{"uid", r.UID, &f.UID}, {"gid", r.GID, &f.GID}} {
			if id.v == "" {
				continue
			}
			n, err := strconv.Atoi(id.v)
			if err != nil {
				c.report(ip+"."+id.field, "%q is not a number; left out", id.v)
				continue
			}
			*id.dst = &n
		}
		if r.Mode != nil {
			m := int(*r.Mode)
			f.Mode = &m
		}
		out = append(out, f)
	}
	return out
}

func (c *converter) fileObject(kind, key string) (types.FileObjectConfig, bool) {
	if kind == "secret" {
		o, ok := c.p.Secrets[key]
		return types.FileObjectConfig(o), ok
	}
	o, ok := c.p.Configs[key]
	return types.FileObjectConfig(o), ok
}

// vlanOf says which VLAN a compose network is, or "".
func (c *converter) vlanOf(key string, n types.NetworkConfig) string {
	if v := c.vlans[key]; v != "" {
		return v
	}
	if v := c.vlans[n.Name]; v != "" && n.Name != "" {
		return v
	}
	if v, ok := n.Extensions[VLANExtension].(string); ok {
		return v
	}
	return ""
}

// implicitDefault is the network compose gives a service that names none.
func (c *converter) implicitDefault(key string, n types.NetworkConfig) bool {
	return key == "default" && !bool(n.External) && n.Driver == "" && len(n.Extensions) == 0 && c.vlans["default"] == ""
}

func (c *converter) networks(p string, sc types.ServiceConfig, s *spec.ServiceSpec) {
	var aliases []string
	aliasesFrom := ""
	for _, key := range slices.Sorted(maps.Keys(sc.Networks)) {
		n := c.p.Networks[key]
		att := sc.Networks[key]
		np := p + ".networks." + key
		if c.implicitDefault(key, n) {
			continue
		}
		if att != nil {
			for _, f := range []struct {
				set  bool
				name string
			}{
				{att.Ipv4Address != "", "ipv4_address"}, {att.Ipv6Address != "", "ipv6_address"},
				{len(att.LinkLocalIPs) > 0, "link_local_ips"}, {att.MacAddress != "", "mac_address"},
				{len(att.DriverOpts) > 0, "driver_opts"}, {att.Priority != 0, "priority"},
				{att.GatewayPriority != 0, "gw_priority"}, {att.InterfaceName != "", "interface_name"},
			} {
				if f.set {
					c.report(np+"."+f.name, "has no field: Swarm gives a task its address from the node's range")
				}
			}
		}
		var al []string
		if att != nil {
			al = att.Aliases
		}
		if vlan := c.vlanOf(key, n); vlan != "" {
			s.Networks = append(s.Networks, vlan)
			if len(s.Networks) > 1 && !slices.Equal(al, aliases) {
				c.report(np+".aliases", "differ from %s's: a Service's aliases are the same on every VLAN; %s's are kept", aliasesFrom, aliasesFrom)
				continue
			}
			aliases, aliasesFrom = al, key
			continue
		}
		name := n.Name
		if name == "" {
			name = key
		}
		if !bool(n.External) {
			c.report(np, "swarmvlan does not create networks: the overlay %q must exist (docker network create --driver overlay %s)", name, name)
		}
		s.Overlays = append(s.Overlays, spec.NetworkAttachment{Name: name, Aliases: al})
	}
	s.Aliases = aliases
}

func (c *converter) volumes(p string, sc types.ServiceConfig, s *spec.ServiceSpec) {
	for i, v := range sc.Volumes {
		vp := fmt.Sprintf("%s.volumes[%d]", p, i)
		m := spec.Mount{Type: v.Type, Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly}
		switch v.Type {
		case types.VolumeTypeBind:
			if b := v.Bind; b != nil {
				if b.Propagation != "" && b.Propagation != "rprivate" {
					c.report(vp+".bind.propagation", "has no field: rprivate applies")
				}
				if b.SELinux != "" {
					c.report(vp+".bind.selinux", "has no field")
				}
			}
		case types.VolumeTypeVolume:
			if v.Source == "" {
				c.report(vp, "an anonymous volume has no field; left out")
				continue
			}
			if top, ok := c.p.Volumes[v.Source]; ok {
				if top.Name != "" {
					m.Source = top.Name
				}
				if top.Driver != "" && top.Driver != "local" || len(top.DriverOpts) > 0 {
					c.report("volumes."+v.Source, "a volume driver and its options have no field: the volume must exist on every node, or Docker makes a local one")
				}
			}
			if vv := v.Volume; vv != nil && (vv.NoCopy || vv.Subpath != "" || len(vv.Labels) > 0) {
				c.report(vp+".volume", "nocopy, subpath and labels have no field")
			}
		case types.VolumeTypeTmpfs:
			m.Source = ""
			if t := v.Tmpfs; t != nil && (t.Size != 0 || t.Mode != 0) {
				c.report(vp+".tmpfs", "size and mode have no field: Docker's defaults apply")
			}
		default:
			c.report(vp, "a %s mount has no field; left out", v.Type)
			continue
		}
		if v.Consistency != "" {
			c.report(vp+".consistency", "has no effect on Linux")
		}
		s.Mounts = append(s.Mounts, m)
	}
	for _, t := range sc.Tmpfs {
		target, opts, _ := strings.Cut(t, ":")
		if opts != "" {
			c.report(p+".tmpfs", "options %q have no field: Docker's defaults apply", opts)
		}
		s.Mounts = append(s.Mounts, spec.Mount{Type: "tmpfs", Target: target})
	}
}

// leftovers reports every key of the service that nothing above mapped:
// whatever compose-go read and no field takes.
func (c *converter) leftovers(p string, v reflect.Value) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		fv := v.Field(i)
		if f.Anonymous {
			c.leftovers(p, fv)
			continue
		}
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "" || key == "-" || strings.HasPrefix(key, "#") || fv.IsZero() {
			continue
		}
		if fv.Kind() == reflect.Map || fv.Kind() == reflect.Slice {
			if fv.Len() == 0 {
				continue
			}
		}
		c.report(p+"."+key, "has no field in a Service document: %s", leftoverReason(key))
	}
}

// leftoverReason says why a compose key has no field, where there is more
// to say than that.
func leftoverReason(key string) string {
	switch key {
	case "build":
		return "swarmvlan runs images, it does not build them"
	case "depends_on", "links", "external_links":
		return "Swarm starts services independently; they find each other through Consul or DNS"
	case "container_name":
		return "Swarm names a service's containers"
	case "privileged", "devices", "security_opt", "pid", "ipc", "network_mode", "userns_mode", "cgroup_parent", "cgroup", "uts":
		return "Swarm services do not take it"
	case "profiles":
		return "docker stack deploy ignores profiles"
	}
	return "not supported"
}

// topLevel reports top-level keys that a document cannot carry.
func (c *converter) topLevel() {
	for _, kind := range []string{"secret", "config"} {
		objs := map[string]types.FileObjectConfig{}
		if kind == "secret" {
			for k, o := range c.p.Secrets {
				objs[k] = types.FileObjectConfig(o)
			}
		} else {
			for k, o := range c.p.Configs {
				objs[k] = types.FileObjectConfig(o)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(objs)) {
			o := objs[k]
			if bool(o.External) {
				continue
			}
			name := o.Name
			if name == "" {
				name = k
			}
			c.report(kind+"s."+k, "swarmvlan refers to existing %ss by name; create %q (docker %s create %s FILE) before the service", kind, name, kind, name)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.p.Networks)) {
		n := c.p.Networks[k]
		if c.vlanOf(k, n) != "" && (n.Driver != "" || n.Ipam.Driver != "" || len(n.Ipam.Config) > 0 || len(n.DriverOpts) > 0) {
			c.report("networks."+k, "a VLAN's network is swarmvlan's: its driver, options and addresses come from the VLAN document")
		}
	}
}

// Marshal writes documents as YAML, one after another separated by "---",
// fields in the order the types declare them and file modes in octal.
func Marshal(svcs ...*spec.Service) ([]byte, error) {
	var buf bytes.Buffer
	for i, s := range svcs {
		j, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("service %q: %w", s.Metadata.Name, err)
		}
		var n yaml.Node
		if err := yaml.Unmarshal(j, &n); err != nil {
			return nil, fmt.Errorf("service %q: %w", s.Metadata.Name, err)
		}
		blockStyle(&n, "")
		if i > 0 {
			buf.WriteString("---\n")
		}
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(&n); err != nil {
			return nil, fmt.Errorf("service %q: %w", s.Metadata.Name, err)
		}
		enc.Close()
	}
	return buf.Bytes(), nil
}

// blockStyle turns the JSON flow style into YAML's block style, writes
// short lists of scalars in flow style and a file mode in octal.
func blockStyle(n *yaml.Node, key string) {
	n.Style = 0
	if n.Kind == yaml.ScalarNode && key == "mode" && n.Tag == "!!int" {
		if m, err := strconv.Atoi(n.Value); err == nil {
			n.Value = fmt.Sprintf("0%o", m)
		}
	}
	scalars := n.Kind == yaml.SequenceNode
	for i, ch := range n.Content {
		k := ""
		if n.Kind == yaml.MappingNode && i%2 == 1 {
			k = n.Content[i-1].Value
		}
		blockStyle(ch, k)
		scalars = scalars && ch.Kind == yaml.ScalarNode
	}
	if scalars && len(n.Content) <= 4 {
		n.Style = yaml.FlowStyle
	}
}
