package spec

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Validate checks a document and returns an ErrorList with every problem
// found, or nil. It does not change the document and works on documents with
// or without defaults applied (omitted values are taken as their defaults).
func Validate(o Object) error {
	var errs ErrorList
	switch o := o.(type) {
	case *VLAN:
		if o == nil {
			errs.add("", "no document")
			break
		}
		validateHeader(&errs, o.APIVersion, o.Kind, KindVLAN)
		validateMeta(&errs, o.Metadata, dnsLabel)
		validateVLANSpec(&errs, &o.Spec)
		validateVLANDockerNames(&errs, o.Metadata.Name, o.Spec.Docker)
	case *Service:
		if o == nil {
			errs.add("", "no document")
			break
		}
		validateHeader(&errs, o.APIVersion, o.Kind, KindService)
		validateMeta(&errs, o.Metadata, dnsLabel)
		validateServiceSpec(&errs, &o.Spec, o.Metadata.Labels)
		validateServiceDockerName(&errs, o.Spec.DockerName)
	case *Host:
		if o == nil {
			errs.add("", "no document")
			break
		}
		validateHeader(&errs, o.APIVersion, o.Kind, KindHost)
		validateMeta(&errs, o.Metadata, hostname)
		validateHostSpec(&errs, &o.Spec)
	default:
		errs.add("kind", fmt.Sprintf("unknown kind of document %T", o))
	}
	return errs.truncated().err()
}

func validateHeader(errs *ErrorList, apiVersion, kind, want string) {
	if apiVersion != APIVersion {
		errs.add("apiVersion", "must be "+APIVersion)
	}
	if kind != want {
		errs.add("kind", "must be "+want)
	}
}

// Name rules.
var (
	dnsLabelRe      = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	hostnameLabelRe = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	labelKeyRe      = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
	secretNameRe    = regexp.MustCompile(`^[a-zA-Z0-9]+(?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?$`)
	volumeNameRe    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`) // Docker's RestrictedNamePattern
	consulMetaKeyRe = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)
)

// nameRule checks a name and returns the problem, or "".
type nameRule func(string) string

const dnsLabelMsg = "must be a DNS label: 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"

func dnsLabel(s string) string {
	if s == "" {
		return "required"
	}
	if !dnsLabelRe.MatchString(s) {
		return fmt.Sprintf("%q %s", s, dnsLabelMsg)
	}
	return ""
}

// hostname accepts what Swarm reports as a node's hostname: one or more
// dot-separated labels. Uppercase is allowed because hostnames are case
// insensitive and Swarm reports them as the machine has them.
func hostname(s string) string {
	const msg = "must be a hostname: labels of 1-63 letters, digits and '-' (not starting or ending with '-'), separated by '.'"
	if s == "" {
		return "required"
	}
	if len(s) > 253 {
		return fmt.Sprintf("%q %s", s, msg)
	}
	for _, l := range strings.Split(s, ".") {
		if !hostnameLabelRe.MatchString(l) {
			return fmt.Sprintf("%q %s", s, msg)
		}
	}
	return ""
}

// ifaceName applies the kernel's rule for interface names (dev_valid_name):
// 1-15 bytes, no '/', ':' or whitespace, not "." or "..".
func ifaceName(s string) string {
	const msg = "must be a Linux interface name: 1-15 bytes, no '/', ':' or whitespace, not '.' or '..'"
	if s == "" {
		return "required"
	}
	if len(s) > 15 || s == "." || s == ".." || strings.ContainsAny(s, "/:") || strings.IndexFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError
	}) >= 0 {
		return fmt.Sprintf("%q %s", s, msg)
	}
	return ""
}

// reservedLabelPrefix marks the Docker objects swarmvlan owns; a user label
// under it could make swarmvlan adopt or delete an object it did not create.
const reservedLabelPrefix = "io.swarmvlan."

func validateLabels(errs *ErrorList, p string, labels map[string]string, reserve bool) {
	for _, k := range sortedKeys(labels) {
		kp := KeyPath(p, k)
		switch {
		case len(k) > 253 || !labelKeyRe.MatchString(k):
			errs.add(kp, "key must be 1-253 letters, digits, '.', '_', '-' or '/', starting and ending with a letter or digit")
		case reserve && strings.HasPrefix(k, reservedLabelPrefix):
			errs.add(kp, "key prefix "+reservedLabelPrefix+" is reserved for swarmvlan's own labels")
		}
		if hasControl(labels[k]) {
			errs.add(kp, "value must not contain control characters")
		}
	}
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) && r != '\t' }) >= 0
}

func validateMeta(errs *ErrorList, m ObjectMeta, name nameRule) {
	if msg := name(m.Name); msg != "" {
		errs.add("metadata.name", msg)
	}
	validateLabels(errs, "metadata.labels", m.Labels, true)
	validateLabels(errs, "metadata.annotations", m.Annotations, false)
}

// MaxChunks bounds how many chunks a VLAN's plan may hold, so a /30 chunk of
// a /8 does not make the planner enumerate millions of prefixes.
const MaxChunks = 1 << 16

// Limits on chunk sizes: a chunk must leave room for at least one container
// address and the host's shim address.
const maxChunkPrefix = 30

var macvlanModes = []string{"bridge", "private", "vepa", "passthru"}
var ipvlanModes = []string{"l2", "l3"}

func validateVLANSpec(errs *ErrorList, s *VLANSpec) {
	if s.ID < 0 || s.ID > 4094 {
		errs.add("spec.id", "must be between 0 (untagged) and 4094")
	}
	if msg := ifaceName(s.Trunk); msg != "" {
		errs.add("spec.trunk", msg)
	} else if s.ID > 0 {
		if sub := s.Trunk + "." + strconv.Itoa(s.ID); len(sub) > 15 {
			errs.add("spec.trunk", fmt.Sprintf("sub-interface name %q would be %d bytes, more than Linux's 15; use a shorter trunk name", sub, len(sub)))
		}
	}
	switch s.Driver {
	case "", DriverMacvlan:
		if s.Mode != "" && !slices.Contains(macvlanModes, s.Mode) {
			errs.add("spec.mode", fmt.Sprintf("must be one of %s for driver macvlan, not %q", strings.Join(macvlanModes, ", "), s.Mode))
		}
	case DriverIPvlan:
		if s.Mode != "" && !slices.Contains(ipvlanModes, s.Mode) {
			errs.add("spec.mode", fmt.Sprintf("must be l2 or l3 for driver ipvlan, not %q", s.Mode))
		}
	default:
		errs.add("spec.driver", fmt.Sprintf("must be macvlan or ipvlan, not %q", s.Driver))
	}
	if s.MTU != 0 && (s.MTU < 68 || s.MTU > 65535) {
		errs.add("spec.mtu", "must be between 68 and 65535")
	}
	validateRange(errs, s)
}

// parseNetwork parses an IPv4 network prefix whose host bits are zero,
// adding a problem at p otherwise.
func parseNetwork(errs *ErrorList, p, s string) (netip.Prefix, bool) {
	if s == "" {
		errs.add(p, "required")
		return netip.Prefix{}, false
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil || !pfx.Addr().Is4() {
		errs.add(p, fmt.Sprintf("%q is not an IPv4 network such as 172.80.0.0/16", s))
		return netip.Prefix{}, false
	}
	if m := pfx.Masked(); m != pfx {
		errs.add(p, fmt.Sprintf("%s is not a network address (did you mean %s?)", s, m))
		return netip.Prefix{}, false
	}
	return pfx, true
}

// validateRange checks the subnet, gateway and range plan; Plan relies on
// it to refuse a plan it could not compute.
func validateRange(errs *ErrorList, s *VLANSpec) {
	subnet, subnetOK := parseNetwork(errs, "spec.subnet", s.Subnet)
	if subnetOK && subnet.Bits() > maxChunkPrefix {
		errs.add("spec.subnet", fmt.Sprintf("/%d is too small: a chunk needs at least a /%d", subnet.Bits(), maxChunkPrefix))
		subnetOK = false
	}
	if s.Gateway != "" {
		gw, err := netip.ParseAddr(s.Gateway)
		switch {
		case err != nil || !gw.Is4():
			errs.add("spec.gateway", fmt.Sprintf("%q is not an IPv4 address", s.Gateway))
		case !subnetOK:
		case !subnet.Contains(gw):
			errs.add("spec.gateway", fmt.Sprintf("%s is outside the subnet %s", gw, subnet))
		case gw == subnet.Addr():
			errs.add("spec.gateway", fmt.Sprintf("%s is the subnet's network address", gw))
		case gw == lastAddr(subnet):
			errs.add("spec.gateway", fmt.Sprintf("%s is the subnet's broadcast address", gw))
		}
	}

	rp := &s.RangePlan
	const cp = "spec.rangePlan.chunkPrefix"
	cluster := rp.Mode == RangeModeCluster
	switch rp.Mode {
	case "", RangeModeChunks, RangeModeCluster:
	default:
		errs.add("spec.rangePlan.mode", fmt.Sprintf("%q is not a mode: chunks or cluster", rp.Mode))
	}
	bits := rp.ChunkPrefix
	bitsOK := false
	switch {
	case cluster && bits == 0:
		// One pool for every host: no chunks to size.
	case subnetOK && (bits < subnet.Bits() || bits > maxChunkPrefix):
		if bits == 0 {
			errs.add(cp, fmt.Sprintf("required: between %d and %d (subnet is /%d)", subnet.Bits(), maxChunkPrefix, subnet.Bits()))
		} else {
			errs.add(cp, fmt.Sprintf("must be between %d and %d (subnet is /%d)", subnet.Bits(), maxChunkPrefix, subnet.Bits()))
		}
	case !subnetOK && (bits < 1 || bits > maxChunkPrefix):
		errs.add(cp, fmt.Sprintf("must be between the subnet's prefix length and %d", maxChunkPrefix))
	default:
		bitsOK = subnetOK
	}

	var pool []netip.Prefix
	for i, p := range rp.Pool {
		ip := IndexPath("spec.rangePlan.pool", i)
		pfx, ok := parseNetwork(errs, ip, p)
		if !ok || !subnetOK {
			continue
		}
		switch {
		case !inside(subnet, pfx):
			errs.add(ip, fmt.Sprintf("%s is outside the subnet %s", pfx, subnet))
		case bitsOK && pfx.Bits() > bits:
			errs.add(ip, fmt.Sprintf("%s is smaller than a /%d chunk", pfx, bits))
		default:
			if j := overlapping(pool, pfx); j >= 0 {
				errs.add(ip, fmt.Sprintf("%s overlaps pool entry %s", pfx, pool[j]))
				continue
			}
			pool = append(pool, pfx)
		}
	}
	if bitsOK && len(rp.Pool) == 0 {
		pool = []netip.Prefix{subnet}
	}
	if bitsOK && !cluster {
		n := 0
		for _, p := range pool {
			if n += 1 << min(bits-p.Bits(), 30); n > MaxChunks {
				errs.add(cp, fmt.Sprintf("/%d chunks of the pool are more than %d; use larger chunks or a smaller pool", bits, MaxChunks))
				break
			}
		}
	}

	var exclude []netip.Prefix
	for i, p := range rp.Exclude {
		ip := IndexPath("spec.rangePlan.exclude", i)
		pfx, ok := parseNetwork(errs, ip, p)
		if !ok || !subnetOK {
			continue
		}
		if !inside(subnet, pfx) {
			errs.add(ip, fmt.Sprintf("%s is outside the subnet %s", pfx, subnet))
			continue
		}
		exclude = append(exclude, pfx)
	}

	type pin struct {
		chunk netip.Prefix
		host  string
	}
	var pins []pin
	if cluster && len(rp.Pinned) > 0 {
		errs.add("spec.rangePlan.pinned", "pinned chunks need mode chunks; mode cluster hands out addresses one by one")
	}
	for _, host := range sortedKeys(rp.Pinned) {
		hp := KeyPath("spec.rangePlan.pinned", host)
		if msg := hostname(host); msg != "" {
			errs.add(hp, "key "+msg)
		}
		pfx, ok := parseNetwork(errs, hp, rp.Pinned[host])
		if !ok || !subnetOK {
			continue
		}
		switch {
		case bitsOK && pfx.Bits() != bits && (s.Docker == nil || pfx.Bits() > maxChunkPrefix):
			// A VLAN taken over from a hand-made setup keeps the ranges
			// as they were cut, whatever their size.
			errs.add(hp, fmt.Sprintf("%s must be exactly one /%d chunk", pfx, bits))
		case !inside(subnet, pfx):
			errs.add(hp, fmt.Sprintf("%s is outside the subnet %s", pfx, subnet))
		case len(rp.Pool) > 0 && !insideAny(pool, pfx):
			errs.add(hp, fmt.Sprintf("%s is outside the pool", pfx))
		case overlapping(exclude, pfx) >= 0:
			errs.add(hp, fmt.Sprintf("%s overlaps the excluded range %s", pfx, exclude[overlapping(exclude, pfx)]))
		default:
			for _, other := range pins {
				if other.chunk.Overlaps(pfx) {
					errs.add(hp, fmt.Sprintf("%s overlaps %s pinned to %s", pfx, other.chunk, other.host))
				}
			}
			pins = append(pins, pin{pfx, host})
		}
	}

	if msg := duration(rp.Quarantine, true); msg != "" {
		errs.add("spec.rangePlan.quarantine", msg)
	}
}

// inside reports whether p lies entirely within outer.
func inside(outer, p netip.Prefix) bool {
	return p.Bits() >= outer.Bits() && outer.Contains(p.Addr())
}

func insideAny(outers []netip.Prefix, p netip.Prefix) bool {
	for _, o := range outers {
		if inside(o, p) {
			return true
		}
	}
	return false
}

// overlapping returns the index of the first prefix in ps that overlaps p,
// or -1.
func overlapping(ps []netip.Prefix, p netip.Prefix) int {
	for i, q := range ps {
		if q.Overlaps(p) {
			return i
		}
	}
	return -1
}

// duration checks a Duration: it must parse and not be negative; zero is
// allowed only when zeroOK (an omitted value is always fine).
func duration(d Duration, zeroOK bool) string {
	if d == "" {
		return ""
	}
	t, err := time.ParseDuration(string(d))
	switch {
	case err != nil:
		return fmt.Sprintf("%q is not a duration such as 10s or 1m30s", string(d))
	case t < 0:
		return "must not be negative"
	case t == 0 && !zeroOK:
		return "must be more than 0"
	}
	return ""
}

func addDuration(errs *ErrorList, p string, d Duration, zeroOK bool) {
	if msg := duration(d, zeroOK); msg != "" {
		errs.add(p, msg)
	}
}

var (
	failureActions = []string{"continue", "pause", "rollback"}
	// A rollback that fails cannot be rolled back in turn.
	rollbackFailureActions = []string{"continue", "pause"}
	updateOrders           = []string{"start-first", "stop-first"}
	restartConds           = []string{"none", "on-failure", "any"}
	mountTypes             = []string{"bind", "volume", "tmpfs"}
	healthcheckFirst       = []string{"NONE", "CMD", "CMD-SHELL"}
)

// Docker's lower bounds on resources. The engine refuses a memory limit
// below 6 MiB when it creates the container; Swarm refuses any CPU value
// below 0.001 and any memory value below 4 MiB in a service spec; and a CPU
// limit below 0.01 becomes a CFS quota below the kernel's 1ms minimum (of
// Docker's 100ms period), so the task fails to start.
const (
	minMemoryLimit       = 6 << 20
	minMemoryReservation = 4 << 20
	minCPULimit          = 1e7 // nano-CPUs: 0.01
	minCPUReservation    = 1e6 // nano-CPUs: 0.001
)

// Swarm refuses a healthcheck interval, timeout or start period that is set
// but below 1ms.
const minHealthcheckDuration = time.Millisecond

// Consul's catalog reaper runs once a minute and ignores
// DeregisterCriticalServiceAfter values below that.
const minDeregisterAfter = time.Minute

func validateServiceSpec(errs *ErrorList, s *ServiceSpec, labels map[string]string) {
	switch {
	case s.Image == "":
		errs.add("spec.image", "required")
	case !ValidImageReference(s.Image):
		errs.add("spec.image", fmt.Sprintf("%q is not an image reference: [registry[:port]/]lowercase/path[:tag][@sha256:digest]", s.Image))
	}
	for _, k := range sortedKeys(s.Env) {
		kp := KeyPath("spec.env", k)
		switch {
		case k == "":
			errs.add(kp, "variable name must not be empty")
		case strings.ContainsAny(k, "=\x00"):
			errs.add(kp, "variable name must not contain '=' or NUL")
		}
		if strings.ContainsRune(s.Env[k], 0) {
			errs.add(kp, "value must not contain NUL")
		} else if msg := swarmTemplate(s.Env[k], labels); msg != "" {
			errs.add(kp, "value "+msg)
		}
	}
	validateLabels(errs, "spec.labels", s.Labels, true)

	if len(s.Networks) == 0 {
		errs.add("spec.networks", "required: at least one VLAN")
	}
	seen := map[string]bool{}
	for i, n := range s.Networks {
		ip := IndexPath("spec.networks", i)
		if n == "" {
			errs.add(ip, "must not be empty")
			continue
		}
		if msg := dnsLabel(n); msg != "" {
			errs.add(ip, msg)
			continue
		}
		if seen[n] {
			errs.add(ip, fmt.Sprintf("%s is listed twice", n))
		}
		seen[n] = true
	}

	global := false
	switch s.Mode {
	case "", ModeReplicated:
	case ModeGlobal:
		global = true
	default:
		errs.add("spec.mode", fmt.Sprintf("must be replicated or global, not %q", s.Mode))
	}
	if s.Replicas != nil {
		switch {
		case global:
			errs.add("spec.replicas", "not allowed with mode global")
		case *s.Replicas < 0:
			errs.add("spec.replicas", "must not be negative")
		}
	}
	if sc := s.Scaling; sc != nil {
		validateScaling(errs, sc, s.Replicas, global)
	}
	if p := s.Placement; p != nil {
		for i, c := range p.Constraints {
			if !validConstraint(c) {
				errs.add(IndexPath("spec.placement.constraints", i), fmt.Sprintf("%q must be <key>==<value> or <key>!=<value>: the key letters, digits, '.', '_' and '-', the value letters, digits, spaces and :-_.*()?+[]\\^$|/", c))
			}
		}
		switch {
		case p.MaxPerNode < 0:
			errs.add("spec.placement.maxPerNode", "must not be negative")
		case p.MaxPerNode > 0 && global:
			// A global service runs one task per node already; Docker
			// takes a per-node maximum only for replicated services.
			errs.add("spec.placement.maxPerNode", "not allowed with mode global")
		}
		for i, pref := range p.Preferences {
			if strings.TrimSpace(pref.Spread) == "" {
				errs.add(IndexPath("spec.placement.preferences", i)+".spread", "required")
			}
		}
	}
	if r := s.Resources; r != nil {
		validateResources(errs, r)
	}
	if u := s.Update; u != nil {
		validateUpdatePolicy(errs, "spec.update", u, failureActions)
	}
	if u := s.Rollback; u != nil {
		validateUpdatePolicy(errs, "spec.rollback", u, rollbackFailureActions)
	}
	if r := s.Restart; r != nil {
		if r.Condition != "" && !slices.Contains(restartConds, r.Condition) {
			errs.add("spec.restart.condition", fmt.Sprintf("must be one of %s, not %q", strings.Join(restartConds, ", "), r.Condition))
		}
		addDuration(errs, "spec.restart.delay", r.Delay, true)
		if r.MaxAttempts != nil && *r.MaxAttempts < 0 {
			errs.add("spec.restart.maxAttempts", "must not be negative")
		}
		addDuration(errs, "spec.restart.window", r.Window, true)
	}
	targets := map[string]bool{}
	for i, m := range s.Mounts {
		validateMount(errs, IndexPath("spec.mounts", i), m, targets, labels)
	}
	validateFiles(errs, s)
	validateAttachments(errs, s)
	if h := s.Healthcheck; h != nil {
		validateHealthcheck(errs, h)
	}
	if c := s.Consul; c != nil {
		validateConsul(errs, c)
	}
	validateContainer(errs, s, labels)
}

// validateUpdatePolicy checks an update or rollback policy at p; actions
// are the failure actions it may take.
func validateUpdatePolicy(errs *ErrorList, p string, u *UpdatePolicy, actions []string) {
	if u.Parallelism != nil && *u.Parallelism < 0 {
		errs.add(p+".parallelism", "must not be negative")
	}
	addDuration(errs, p+".delay", u.Delay, true)
	if u.FailureAction != "" && !slices.Contains(actions, u.FailureAction) {
		errs.add(p+".failureAction", fmt.Sprintf("must be one of %s, not %q", strings.Join(actions, ", "), u.FailureAction))
	}
	if u.Order != "" && !slices.Contains(updateOrders, u.Order) {
		errs.add(p+".order", fmt.Sprintf("must be start-first or stop-first, not %q", u.Order))
	}
	addDuration(errs, p+".monitor", u.Monitor, true)
}

func validateScaling(errs *ErrorList, sc *Scaling, replicas *int, global bool) {
	if global {
		errs.add("spec.scaling", "not allowed with mode global")
		return
	}
	if sc.Min < 0 {
		errs.add("spec.scaling.min", "must not be negative")
	}
	if sc.Max < 1 {
		errs.add("spec.scaling.max", "must be at least 1")
	} else if sc.Min > sc.Max {
		errs.add("spec.scaling.min", fmt.Sprintf("%d is more than scaling.max %d", sc.Min, sc.Max))
	}
	if sc.Step < 0 {
		errs.add("spec.scaling.step", "must be at least 1")
	}
	addDuration(errs, "spec.scaling.cooldown", sc.Cooldown, true)
	addDuration(errs, "spec.scaling.downCooldown", sc.DownCooldown, true)
	addDuration(errs, "spec.scaling.downStabilization", sc.DownStabilization, true)
	if replicas != nil && *replicas >= 0 && sc.Min >= 0 && sc.Min <= sc.Max &&
		(*replicas < sc.Min || *replicas > sc.Max) {
		errs.add("spec.replicas", fmt.Sprintf("%d is outside scaling.min..scaling.max (%d..%d)", *replicas, sc.Min, sc.Max))
	}
}

// Swarm's grammar of a placement constraint's key and value
// (swarmkit manager/constraint): a value holds no operator characters.
var (
	constraintKeyRe   = regexp.MustCompile(`^(?i)[a-z_][a-z0-9\-_.]+$`)
	constraintValueRe = regexp.MustCompile(`^(?i)[a-z0-9:\-_\s\.\*\(\)\?\+\[\]\\\^\$\|\/]+$`)
)

// validConstraint accepts what Swarm accepts: "<key>==<value>" or
// "<key>!=<value>", split at the first "==" when there is one (as Swarm
// splits it), key and value trimmed and each in Swarm's grammar.
func validConstraint(c string) bool {
	for _, op := range []string{"==", "!="} {
		k, v, ok := strings.Cut(c, op)
		if !ok {
			continue
		}
		return constraintKeyRe.MatchString(strings.TrimSpace(k)) && constraintValueRe.MatchString(strings.TrimSpace(v))
	}
	return false
}

func validateResources(errs *ErrorList, r *Resources) {
	type parsed struct {
		cpus, mem int64
	}
	check := func(p string, l *ResourceList) parsed {
		var out parsed
		if l == nil {
			return out
		}
		if l.CPUs != "" {
			n, err := CPUsNano(l.CPUs)
			if err != nil {
				errs.add(p+".cpus", err.Error())
			}
			out.cpus = n
		}
		if l.Memory != "" {
			n, err := QuantityBytes(l.Memory)
			if err != nil {
				errs.add(p+".memory", err.Error())
			}
			out.mem = n
		}
		return out
	}
	lim := check("spec.resources.limits", r.Limits)
	res := check("spec.resources.reservations", r.Reservations)
	if lim.mem > 0 && lim.mem < minMemoryLimit {
		errs.add("spec.resources.limits.memory", "must be at least 6Mi (Docker's minimum)")
	}
	if res.mem > 0 && res.mem < minMemoryReservation {
		errs.add("spec.resources.reservations.memory", "must be at least 4Mi (Swarm's minimum)")
	}
	if lim.cpus > 0 && lim.cpus < minCPULimit {
		errs.add("spec.resources.limits.cpus", "must be at least 0.01 (the kernel refuses a smaller CPU quota)")
	}
	if res.cpus > 0 && res.cpus < minCPUReservation {
		errs.add("spec.resources.reservations.cpus", "must be at least 0.001 (Swarm's minimum)")
	}
	if lim.cpus > 0 && res.cpus > lim.cpus {
		errs.add("spec.resources.reservations.cpus", fmt.Sprintf("%s is more than the limit %s", r.Reservations.CPUs, r.Limits.CPUs))
	}
	if lim.mem > 0 && res.mem > lim.mem {
		errs.add("spec.resources.reservations.memory", fmt.Sprintf("%s is more than the limit %s", r.Reservations.Memory, r.Limits.Memory))
	}
}

func validateMount(errs *ErrorList, p string, m Mount, targets map[string]bool, labels map[string]string) {
	for _, f := range []struct{ name, v string }{{"source", m.Source}, {"target", m.Target}} {
		if msg := swarmTemplate(f.v, labels); msg != "" {
			errs.add(p+"."+f.name, msg)
		}
	}
	switch {
	case m.Target == "":
		errs.add(p+".target", "required")
	case !path.IsAbs(m.Target):
		errs.add(p+".target", fmt.Sprintf("%q must be an absolute path", m.Target))
	case path.Clean(m.Target) == "/":
		errs.add(p+".target", fmt.Sprintf("%q is the container's root, which Docker refuses to mount over", m.Target))
	case targets[path.Clean(m.Target)]:
		errs.add(p+".target", fmt.Sprintf("%s is mounted twice", m.Target))
	default:
		targets[path.Clean(m.Target)] = true
	}
	switch m.Type {
	case "bind":
		switch {
		case m.Source == "":
			errs.add(p+".source", "required for a bind mount")
		case !path.IsAbs(m.Source):
			errs.add(p+".source", fmt.Sprintf("%q must be an absolute path for a bind mount", m.Source))
		}
	case "volume":
		// An empty source is an anonymous volume.
		if m.Source != "" && !volumeNameRe.MatchString(m.Source) {
			errs.add(p+".source", fmt.Sprintf("%q is not a volume name: at least two letters, digits, '_', '.' or '-', starting with a letter or digit", m.Source))
		}
	case "tmpfs":
		if m.Source != "" {
			errs.add(p+".source", "must be empty for a tmpfs mount")
		}
	case "":
		errs.add(p+".type", "required: bind, volume or tmpfs")
	default:
		errs.add(p+".type", fmt.Sprintf("must be bind, volume or tmpfs, not %q", m.Type))
	}
}

func validateHealthcheck(errs *ErrorList, h *Healthcheck) {
	const p = "spec.healthcheck"
	switch {
	case len(h.Test) == 0:
		errs.add(p+".test", `required: ["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"]`)
	case !slices.Contains(healthcheckFirst, h.Test[0]):
		errs.add(p+".test[0]", fmt.Sprintf("must be NONE, CMD or CMD-SHELL, not %q", h.Test[0]))
	case h.Test[0] == "NONE" && len(h.Test) != 1:
		errs.add(p+".test", "NONE takes no arguments")
	case h.Test[0] == "CMD" && len(h.Test) < 2:
		errs.add(p+".test", "CMD needs the command to run")
	case h.Test[0] == "CMD-SHELL" && len(h.Test) != 2:
		errs.add(p+".test", "CMD-SHELL takes exactly one shell command")
	}
	for _, f := range []struct {
		name   string
		d      Duration
		zeroOK bool
	}{{"interval", h.Interval, false}, {"timeout", h.Timeout, false}, {"startPeriod", h.StartPeriod, true}} {
		switch msg := duration(f.d, f.zeroOK); {
		case msg != "":
			errs.add(p+"."+f.name, msg)
		case f.d.Duration() > 0 && f.d.Duration() < minHealthcheckDuration:
			errs.add(p+"."+f.name, "must be at least 1ms (Swarm's minimum)")
		}
	}
	if h.Retries < 0 {
		errs.add(p+".retries", "must not be negative")
	}
}

func validateConsul(errs *ErrorList, c *ConsulService) {
	const p = "spec.consul"
	if c.Service != "" {
		if msg := dnsLabel(c.Service); msg != "" {
			errs.add(p+".service", msg)
		}
	}
	switch {
	case c.Port == 0:
		errs.add(p+".port", "required: the port every task serves on (1-65535)")
	case c.Port < 1 || c.Port > 65535:
		errs.add(p+".port", "must be between 1 and 65535")
	}
	for i, t := range c.Tags {
		if strings.TrimSpace(t) == "" {
			errs.add(IndexPath(p+".tags", i), "must not be empty")
		}
	}
	for _, k := range sortedKeys(c.Meta) {
		kp := KeyPath(p+".meta", k)
		switch {
		case !consulMetaKeyRe.MatchString(k):
			errs.add(kp, "key must be 1-128 letters, digits, '_' or '-'")
		case strings.HasPrefix(k, "consul-"):
			errs.add(kp, "key prefix consul- is reserved by Consul")
		}
		if len(c.Meta[k]) > 512 {
			errs.add(kp, "value must be at most 512 characters")
		}
	}
	if len(c.Meta) > 64 {
		errs.add(p+".meta", "at most 64 keys")
	}
	if ch := c.Check; ch != nil {
		cp := p + ".check"
		switch {
		case ch.HTTP != "" && ch.TCP:
			errs.add(cp, "set http or tcp, not both")
		case ch.HTTP == "" && !ch.TCP:
			errs.add(cp, "set http or tcp")
		case ch.HTTP != "" && !strings.HasPrefix(ch.HTTP, "/"):
			errs.add(cp+".http", fmt.Sprintf("%q must be a path starting with '/'", ch.HTTP))
		}
		addDuration(errs, cp+".interval", ch.Interval, false)
		addDuration(errs, cp+".timeout", ch.Timeout, false)
		if msg := duration(ch.DeregisterAfter, false); msg != "" {
			errs.add(cp+".deregisterAfter", msg)
		} else if ch.DeregisterAfter != "" && ch.DeregisterAfter.Duration() < minDeregisterAfter {
			errs.add(cp+".deregisterAfter", "must be at least 1m (Consul's reaper ignores less)")
		}
	}
}

func validateHostSpec(errs *ErrorList, s *HostSpec) {
	if s.Trunk != "" {
		if msg := ifaceName(s.Trunk); msg != "" {
			errs.add("spec.trunk", msg)
		}
	}
	for _, name := range sortedKeys(s.VLANs) {
		vp := KeyPath("spec.vlans", name)
		if msg := dnsLabel(name); msg != "" {
			errs.add(vp, "key "+msg)
		}
		hv := s.VLANs[name]
		if hv.Trunk != "" {
			if msg := ifaceName(hv.Trunk); msg != "" {
				errs.add(vp+".trunk", msg)
			}
		}
		if hv.Chunk != "" {
			if pfx, ok := parseNetwork(errs, vp+".chunk", hv.Chunk); ok && pfx.Bits() > maxChunkPrefix {
				errs.add(vp+".chunk", fmt.Sprintf("/%d is too small: a chunk needs at least a /%d", pfx.Bits(), maxChunkPrefix))
			}
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// DecodeAndValidate decodes every document in data, applies defaults and
// validates each; it is what `validate` and `apply` run on a file. The
// returned objects have defaults applied. The error is an ErrorList of every
// problem in every document, prefixed with the document's number when data
// holds more than one ("document 2: spec.id: ...").
func DecodeAndValidate(data []byte) ([]Document, error) {
	docs, err := DecodeAll(data)
	if err != nil {
		return nil, err
	}
	var errs ErrorList
	for _, d := range docs {
		SetDefaults(d.Object)
		for _, e := range AsErrorList(Validate(d.Object)) {
			if len(docs) > 1 {
				e = documentError(d.Index, e)
			}
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return nil, errs.truncated()
	}
	return docs, nil
}
