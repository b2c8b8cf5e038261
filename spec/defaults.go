package spec

// VLAN drivers.
const (
	DriverMacvlan = "macvlan"
	DriverIPvlan  = "ipvlan"
)

// Service modes.
const (
	ModeReplicated = "replicated"
	ModeGlobal     = "global"
)

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
	if s.Mode == "" {
		switch s.Driver {
		case DriverMacvlan:
			s.Mode = "bridge"
		case DriverIPvlan:
			s.Mode = "l2"
		}
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
