package spec

// VLAN drivers.
const (
	DriverMacvlan = "macvlan"
	DriverIPvlan  = "ipvlan"
)

// Default VLAN modes, one per driver.
const (
	DefaultMacvlanMode = "bridge"
	DefaultIPvlanMode  = "l2"
)

// Service modes.
const (
	ModeReplicated = "replicated"
	ModeGlobal     = "global"
)

// Endpoint modes.
const (
	EndpointVIP   = "vip"
	EndpointDNSRR = "dnsrr"
)

// Mount types.
const (
	MountBind   = "bind"
	MountVolume = "volume"
	MountTmpfs  = "tmpfs"
)

// Defaults of the update and restart policies. They are the values the
// engine stores when a spec leaves the field empty, so a mapping that writes
// them keeps the stored spec equal to the wanted one.
const (
	DefaultUpdateParallelism   = 1
	DefaultUpdateFailureAction = "pause"
	DefaultUpdateOrder         = "stop-first"
	DefaultRestartCondition    = "any"
)

// VLANDriver returns driver, or macvlan when it is empty.
func VLANDriver(driver string) string {
	if driver == "" {
		return DriverMacvlan
	}
	return driver
}

// VLANMode returns mode, or the driver's default when it is empty: bridge
// for macvlan, l2 for ipvlan.
func VLANMode(driver, mode string) string {
	if mode != "" {
		return mode
	}
	if VLANDriver(driver) == DriverIPvlan {
		return DefaultIPvlanMode
	}
	return DefaultMacvlanMode
}

// ModeOrDefault is the service mode: replicated unless the spec says global.
func (s *ServiceSpec) ModeOrDefault() string {
	if s.Mode == "" {
		return ModeReplicated
	}
	return s.Mode
}

// IsGlobal reports whether the service runs one task per node.
func (s *ServiceSpec) IsGlobal() bool { return s.ModeOrDefault() == ModeGlobal }

// ParallelismOrDefault is how many tasks an update changes at once: the
// document's count, or 1. Docker reads 0 as "all at once", which a document
// has to say explicitly. A nil policy has the defaults.
func (u *UpdatePolicy) ParallelismOrDefault() uint64 {
	if u == nil || u.Parallelism == nil {
		return DefaultUpdateParallelism
	}
	return uint64(max(*u.Parallelism, 0))
}

// FailureActionOrDefault is the update's failure action: the document's, or
// pause. A nil policy has the defaults.
func (u *UpdatePolicy) FailureActionOrDefault() string {
	if u == nil || u.FailureAction == "" {
		return DefaultUpdateFailureAction
	}
	return u.FailureAction
}

// OrderOrDefault is the update's order: the document's, or stop-first. A
// nil policy has the defaults.
func (u *UpdatePolicy) OrderOrDefault() string {
	if u == nil || u.Order == "" {
		return DefaultUpdateOrder
	}
	return u.Order
}

// ConditionOrDefault is the restart condition: the document's, or any. A nil
// policy has the defaults.
func (r *RestartPolicy) ConditionOrDefault() string {
	if r == nil || r.Condition == "" {
		return DefaultRestartCondition
	}
	return r.Condition
}

// MaxAttemptsPtr is the restart policy's attempt limit for Docker's optional
// field: nil when unset (no limit), else the count.
func (r *RestartPolicy) MaxAttemptsPtr() *uint64 {
	if r == nil || r.MaxAttempts == nil {
		return nil
	}
	n := uint64(max(*r.MaxAttempts, 0))
	return &n
}

// DefaultQuarantine is how long a chunk released by a node that left the
// swarm stays out of use when rangePlan.quarantine is omitted.
const DefaultQuarantine Duration = "10m"

// SetDefaults fills in what the user may omit. It is idempotent, leaves
// every value the user set alone, and also fills apiVersion and kind when
// they are empty, so objects built in Go validate like decoded ones. Callers
// call SetDefaults and then Validate.
func SetDefaults(o Object) {
	switch o := o.(type) {
	case *VLAN:
		if o != nil {
			setVLANDefaults(o)
		}
	case *Service:
		if o != nil {
			setServiceDefaults(o)
		}
	case *Host:
		if o != nil {
			setHeader(&o.APIVersion, &o.Kind, KindHost)
		}
	}
}

func setHeader(apiVersion, kind *string, k string) {
	if *apiVersion == "" {
		*apiVersion = APIVersion
	}
	if *kind == "" {
		*kind = k
	}
}

func setVLANDefaults(v *VLAN) {
	setHeader(&v.APIVersion, &v.Kind, KindVLAN)
	s := &v.Spec
	if s.Driver == "" {
		s.Driver = DriverMacvlan
	}
	// An unknown driver keeps its empty mode: Validate reports the driver,
	// not a mode the user never wrote.
	if s.Mode == "" && (s.Driver == DriverMacvlan || s.Driver == DriverIPvlan) {
		s.Mode = VLANMode(s.Driver, "")
	}
	if s.Promiscuous == nil {
		s.Promiscuous = ptr(true)
	}
	if s.HostAccess == nil {
		s.HostAccess = ptr(true)
	}
	if s.RangePlan.Quarantine == "" {
		s.RangePlan.Quarantine = DefaultQuarantine
	}
}

func setServiceDefaults(svc *Service) {
	setHeader(&svc.APIVersion, &svc.Kind, KindService)
	s := &svc.Spec
	if s.Mode == "" {
		s.Mode = ModeReplicated
	}
	if s.Scaling != nil && s.Scaling.Step == 0 {
		s.Scaling.Step = 1
	}
	if s.Mode == ModeReplicated && s.Replicas == nil {
		// One replica, but never below the scaling floor: a user who gave
		// bounds and no count means "start within the bounds".
		n := 1
		if s.Scaling != nil && s.Scaling.Min > n {
			n = s.Scaling.Min
		}
		s.Replicas = &n
	}
	if s.Consul != nil && s.Consul.Service == "" {
		s.Consul.Service = svc.Metadata.Name
	}
}

// BoolOr returns *p, or d when p is nil.
func BoolOr(p *bool, d bool) bool {
	if p == nil {
		return d
	}
	return *p
}

func ptr[T any](v T) *T { return &v }
