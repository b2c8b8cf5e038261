// Package spec holds the documents users write (VLAN, Service, Host), their
// strict decoding from JSON and YAML, defaults, validation with field paths,
// and the range arithmetic that splits a VLAN's subnet into per-host chunks.
package spec

// APIVersion is the only apiVersion the documents carry.
const APIVersion = "swarmvlan/v1"

// Kinds of documents.
const (
	KindVLAN    = "VLAN"
	KindService = "Service"
	KindHost    = "Host"
)

// Kinds lists every document kind in the order they are applied.
var Kinds = []string{KindVLAN, KindHost, KindService}

// Plural returns the key segment for a kind ("vlans", "services", "hosts"),
// or "" for an unknown kind.
func Plural(kind string) string {
	switch kind {
	case KindVLAN:
		return "vlans"
	case KindService:
		return "services"
	case KindHost:
		return "hosts"
	}
	return ""
}

// KindForPlural is the inverse of Plural; it also accepts the kind itself and
// its singular lowercase form ("vlan", "VLAN", "vlans").
func KindForPlural(s string) string {
	for _, k := range Kinds {
		if s == k || s == Plural(k) || s == lower(k) {
			return k
		}
	}
	return ""
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// ObjectMeta is the metadata every document carries.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Object is any decoded document.
type Object interface {
	GetKind() string
	GetName() string
}

// Duration is a Go duration string ("10s", "1m"); Validate checks that it
// parses, so a bad value is reported with its field path.
type Duration string

// VLAN is a network that containers ride on.
type VLAN struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       VLANSpec   `json:"spec"`
}

// GetKind implements Object.
func (v *VLAN) GetKind() string { return KindVLAN }

// GetName implements Object.
func (v *VLAN) GetName() string { return v.Metadata.Name }

// VLANSpec is the desired state of a VLAN.
type VLANSpec struct {
	// ID is the 802.1Q tag, 1-4094; 0 uses the trunk untagged.
	ID          int       `json:"id,omitempty"`
	Trunk       string    `json:"trunk"`
	Driver      string    `json:"driver,omitempty"`
	Mode        string    `json:"mode,omitempty"`
	Subnet      string    `json:"subnet"`
	Gateway     string    `json:"gateway,omitempty"`
	MTU         int       `json:"mtu,omitempty"`
	Promiscuous *bool     `json:"promiscuous,omitempty"`
	HostAccess  *bool     `json:"hostAccess,omitempty"`
	RangePlan   RangePlan `json:"rangePlan"`

	// Docker names the VLAN's Docker networks when they are not
	// swarmvlan's own names: networks made by hand and taken over by
	// `reconciler adopt` keep the names they were made with (Docker cannot
	// rename a network). See VLANDockerNames.
	Docker *VLANDockerNames `json:"docker,omitempty"`
}

// VLANDockerNames are the Docker names of a VLAN's networks; an empty name
// is swarmvlan's own (ConfigNetworkName, NetworkName).
type VLANDockerNames struct {
	// ConfigNetwork is the name of the per-node --config-only network.
	ConfigNetwork string `json:"configNetwork,omitempty"`
	// Network is the name of the swarm-scoped network.
	Network string `json:"network,omitempty"`
}

// RangePlan says how the subnet's addresses are handed out: split into
// per-host chunks (mode chunks, the default), or leased one by one from a
// single pool shared by every host (mode cluster).
type RangePlan struct {
	// Mode is RangeModeChunks ("" too) or RangeModeCluster.
	Mode        string            `json:"mode,omitempty"`
	ChunkPrefix int               `json:"chunkPrefix,omitempty"`
	Pool        []string          `json:"pool,omitempty"`
	Exclude     []string          `json:"exclude,omitempty"`
	Pinned      map[string]string `json:"pinned,omitempty"`
	// Quarantine is how long a chunk freed by a node that left the swarm is
	// kept out of use before it is handed out again (default 10m).
	Quarantine Duration `json:"quarantine,omitempty"`
}

// Service is what runs on the VLANs.
type Service struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Metadata   ObjectMeta  `json:"metadata"`
	Spec       ServiceSpec `json:"spec"`
}

// GetKind implements Object.
func (s *Service) GetKind() string { return KindService }

// GetName implements Object.
func (s *Service) GetName() string { return s.Metadata.Name }

// ServiceSpec is the desired state of a Swarm service.
type ServiceSpec struct {
	Image       string            `json:"image"`
	Command     []string          `json:"command,omitempty"`
	Args        []string          `json:"args,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Networks    []string          `json:"networks,omitempty"`
	Mode        string            `json:"mode,omitempty"`
	Replicas    *int              `json:"replicas,omitempty"`
	Scaling     *Scaling          `json:"scaling,omitempty"`
	Placement   *Placement        `json:"placement,omitempty"`
	Resources   *Resources        `json:"resources,omitempty"`
	Update      *UpdatePolicy     `json:"update,omitempty"`
	Restart     *RestartPolicy    `json:"restart,omitempty"`
	Mounts      []Mount           `json:"mounts,omitempty"`
	Secrets     []FileRef         `json:"secrets,omitempty"`
	Healthcheck *Healthcheck      `json:"healthcheck,omitempty"`
	Consul      *ConsulService    `json:"consul,omitempty"`

	// User is the user the container's process runs as: a name or UID,
	// optionally with a group (":group" or ":GID").
	User string `json:"user,omitempty"`
	// Workdir is the container's working directory, an absolute path.
	Workdir string `json:"workdir,omitempty"`
	// Hostname is the container's hostname; Swarm expands it as a
	// template for each task ("web-{{.Task.Slot}}").
	Hostname string `json:"hostname,omitempty"`
	// StopSignal is the signal that stops the container ("SIGTERM",
	// "TERM" or "15"); empty is the image's or Docker's default.
	StopSignal string `json:"stopSignal,omitempty"`
	// StopGracePeriod is how long Docker waits after the stop signal
	// before it kills the container; empty is Docker's default (10s).
	StopGracePeriod Duration `json:"stopGracePeriod,omitempty"`
	// Init runs an init process as PID 1 that reaps zombies and forwards
	// signals; unset is the daemon's default.
	Init *bool `json:"init,omitempty"`
	// ReadOnly mounts the container's root filesystem read-only.
	ReadOnly bool `json:"readOnly,omitempty"`
	// CapAdd and CapDrop are Linux capabilities added to and dropped from
	// Docker's default set ("NET_ADMIN" or "CAP_NET_ADMIN", or "ALL"); see
	// Capabilities for what Docker is given.
	CapAdd  []string `json:"capAdd,omitempty"`
	CapDrop []string `json:"capDrop,omitempty"`
	// Sysctls are namespaced kernel parameters set in the task's
	// container ("net.ipv4.ip_forward": "1").
	Sysctls map[string]string `json:"sysctls,omitempty"`
	// Ulimits are resource limits of the container's processes, by name
	// ("nofile": {soft: 1024, hard: 2048}).
	Ulimits map[string]Ulimit `json:"ulimits,omitempty"`
	// DNS is the container's resolver configuration; unset fields are
	// the daemon's.
	DNS *DNSConfig `json:"dns,omitempty"`
	// ExtraHosts are "host:ip" entries added to the container's
	// /etc/hosts, as docker's --host takes them; see Hosts.
	ExtraHosts []string `json:"extraHosts,omitempty"`
	// Logging is the log driver of the task's container; unset is the
	// daemon's default.
	Logging *Logging `json:"logging,omitempty"`
	// Rollback is how Swarm rolls an update back, with the update
	// policy's fields and defaults; its failure action is continue or
	// pause.
	Rollback *UpdatePolicy `json:"rollback,omitempty"`
	// EndpointMode is how other services reach this one: vip (a virtual
	// IP, Swarm's default) or dnsrr (DNS round robin over the tasks).
	EndpointMode string `json:"endpointMode,omitempty"`

	// Configs are existing Swarm configs given to the task as files.
	Configs []FileRef `json:"configs,omitempty"`
	// Aliases are the task's DNS aliases on each of its VLANs.
	Aliases []string `json:"aliases,omitempty"`
	// Overlays are swarm networks the task joins beside its VLANs.
	Overlays []NetworkAttachment `json:"overlays,omitempty"`
	// Addresses is how a replicated service's tasks get their addresses
	// on VLANs in rangePlan.mode cluster: any (the default) or sticky (the
	// task of slot N gets its slot's address again when it is replaced,
	// when that is unambiguous; see the README's "Cluster IPAM mode").
	Addresses string `json:"addresses,omitempty"`
	// DockerName is the Swarm service's name when it is not
	// metadata.name: a service made by hand (or by docker stack deploy,
	// "stack_web") and taken over by `reconciler adopt` keeps its name,
	// since Swarm cannot rename a service.
	DockerName string `json:"dockerName,omitempty"`
}

// Logging is a Docker log driver and its options.
type Logging struct {
	Driver  string            `json:"driver"`
	Options map[string]string `json:"options,omitempty"`
}

// DNSConfig is what the container's /etc/resolv.conf holds: name server
// addresses, search domains and resolver options ("ndots:2").
type DNSConfig struct {
	Servers []string `json:"servers,omitempty"`
	Search  []string `json:"search,omitempty"`
	Options []string `json:"options,omitempty"`
}

// Ulimit is a soft and a hard limit, as setrlimit takes them.
type Ulimit struct {
	Soft int64 `json:"soft"`
	Hard int64 `json:"hard"`
}

// Scaling bounds what the scale API may do.
type Scaling struct {
	Min  int `json:"min"`
	Max  int `json:"max"`
	Step int `json:"step,omitempty"`
	// Cooldown is the least time between two scale changes in the same
	// direction.
	Cooldown Duration `json:"cooldown,omitempty"`
	// DownCooldown overrides Cooldown for scaling down.
	DownCooldown Duration `json:"downCooldown,omitempty"`
	// DownStabilization is how long after the last scale-up a scale-down is
	// refused, so a short dip does not undo a needed scale-up.
	DownStabilization Duration `json:"downStabilization,omitempty"`
}

// Placement constrains where tasks run.
type Placement struct {
	Constraints []string     `json:"constraints,omitempty"`
	MaxPerNode  int          `json:"maxPerNode,omitempty"`
	Preferences []Preference `json:"preferences,omitempty"`
}

// Preference is a Swarm placement preference.
type Preference struct {
	Spread string `json:"spread"`
}

// Resources are a task's limits and reservations.
type Resources struct {
	Limits       *ResourceList `json:"limits,omitempty"`
	Reservations *ResourceList `json:"reservations,omitempty"`
}

// ResourceList is CPUs as a decimal string ("0.5") and memory as a quantity
// ("256Mi", "1G", "512M", "512m", or bytes). Memory suffixes are powers of
// 1024 as Docker reads them, so "1G" is 1073741824 bytes and "512M" is the
// same as "512Mi"; see QuantityBytes and CPUsNano, and Values for what
// Docker is given.
type ResourceList struct {
	CPUs   string `json:"cpus,omitempty"`
	Memory string `json:"memory,omitempty"`
}

// UpdatePolicy is Swarm's rolling update configuration.
type UpdatePolicy struct {
	Parallelism   *int     `json:"parallelism,omitempty"`
	Delay         Duration `json:"delay,omitempty"`
	FailureAction string   `json:"failureAction,omitempty"`
	Order         string   `json:"order,omitempty"`
	Monitor       Duration `json:"monitor,omitempty"`
}

// RestartPolicy is Swarm's restart policy.
type RestartPolicy struct {
	Condition   string   `json:"condition,omitempty"`
	Delay       Duration `json:"delay,omitempty"`
	MaxAttempts *int     `json:"maxAttempts,omitempty"`
	Window      Duration `json:"window,omitempty"`
}

// Mount is a bind, volume or tmpfs mount.
type Mount struct {
	Type     string `json:"type"`
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Healthcheck is the container health check.
type Healthcheck struct {
	Test        []string `json:"test"`
	Interval    Duration `json:"interval,omitempty"`
	Timeout     Duration `json:"timeout,omitempty"`
	Retries     int      `json:"retries,omitempty"`
	StartPeriod Duration `json:"startPeriod,omitempty"`
}

// ConsulService says how every running task is registered in Consul.
type ConsulService struct {
	Service string            `json:"service,omitempty"`
	Port    int               `json:"port"`
	Tags    []string          `json:"tags,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	Check   *ConsulCheck      `json:"check,omitempty"`
}

// ConsulCheck is an HTTP or TCP check against the task's VLAN address.
type ConsulCheck struct {
	HTTP            string   `json:"http,omitempty"`
	TCP             bool     `json:"tcp,omitempty"`
	Interval        Duration `json:"interval,omitempty"`
	Timeout         Duration `json:"timeout,omitempty"`
	DeregisterAfter Duration `json:"deregisterAfter,omitempty"`
}

// Host holds optional per-host overrides.
type Host struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       HostSpec   `json:"spec"`
}

// GetKind implements Object.
func (h *Host) GetKind() string { return KindHost }

// GetName implements Object.
func (h *Host) GetName() string { return h.Metadata.Name }

// HostSpec overrides the trunk, for every VLAN or per VLAN.
type HostSpec struct {
	Trunk string              `json:"trunk,omitempty"`
	VLANs map[string]HostVLAN `json:"vlans,omitempty"`
}

// HostVLAN is a per-VLAN override on one host.
type HostVLAN struct {
	Trunk string `json:"trunk,omitempty"`
	// Chunk pins this host's chunk of the VLAN, like rangePlan.pinned.
	Chunk string `json:"chunk,omitempty"`
}
