package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
)

// Docker's own name rules for what a VLAN or Service document may name by
// its Docker name (spec.docker, spec.dockerName): names that are not DNS
// labels, as hand-made setups have them ("vlan40_net", "swarm-vlan40_net",
// "stack_web").
var (
	// dockerNetworkNameRe is the Engine's rule for network names
	// (RestrictedNamePattern), capped at a length Docker handles.
	dockerNetworkNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	// dockerServiceNameRe is Swarm's rule for service names: letters,
	// digits, '-' and '_', starting and ending with a letter or digit.
	dockerServiceNameRe = regexp.MustCompile(`^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`)
)

// maxDockerName bounds a Docker name: Swarm refuses service names longer
// than 63 bytes, and network names are held to the same length.
const maxDockerName = 63

// ConfigNetworkDockerName is the Docker name of the VLAN's per-node
// --config-only network: spec.docker.configNetwork, else "<name>-config".
func (v *VLAN) ConfigNetworkDockerName() string {
	if d := v.Spec.Docker; d != nil && d.ConfigNetwork != "" {
		return d.ConfigNetwork
	}
	return ConfigNetworkName(v.Metadata.Name)
}

// NetworkDockerName is the Docker name of the VLAN's swarm-scoped network:
// spec.docker.network, else the VLAN's name.
func (v *VLAN) NetworkDockerName() string {
	if d := v.Spec.Docker; d != nil && d.Network != "" {
		return d.Network
	}
	return NetworkName(v.Metadata.Name)
}

// DockerServiceName is the Swarm service's name: spec.dockerName, else
// metadata.name.
func (s *Service) DockerServiceName() string {
	if s.Spec.DockerName != "" {
		return s.Spec.DockerName
	}
	return s.Metadata.Name
}

func dockerNetworkName(s string) string {
	if len(s) > maxDockerName || !dockerNetworkNameRe.MatchString(s) {
		return fmt.Sprintf("%q is not a Docker network name: 1-%d letters, digits, '_', '.' and '-', starting with a letter or digit", s, maxDockerName)
	}
	return ""
}

func validateVLANDockerNames(errs *ErrorList, name string, d *VLANDockerNames) {
	if d == nil {
		return
	}
	if d.ConfigNetwork != "" {
		if msg := dockerNetworkName(d.ConfigNetwork); msg != "" {
			errs.add("spec.docker.configNetwork", msg)
		}
	}
	if d.Network != "" {
		if msg := dockerNetworkName(d.Network); msg != "" {
			errs.add("spec.docker.network", msg)
		}
	}
	cfg, sw := d.ConfigNetwork, d.Network
	if cfg == "" {
		cfg = ConfigNetworkName(name)
	}
	if sw == "" {
		sw = NetworkName(name)
	}
	if cfg == sw {
		errs.add("spec.docker.network", fmt.Sprintf("%q is also the config network's name; the swarm network needs a name of its own", sw))
	}
}

func validateServiceDockerName(errs *ErrorList, s string) {
	if s == "" {
		return
	}
	if len(s) > maxDockerName || !dockerServiceNameRe.MatchString(s) {
		errs.add("spec.dockerName", fmt.Sprintf("%q is not a Swarm service name: 1-%d letters, digits, '-' and '_', starting and ending with a letter or digit", s, maxDockerName))
	}
}

// AdoptionHash is the SHA-256 of the parts of a Service document that
// shape its Swarm service's spec: the document's JSON encoding (map keys
// sorted by encoding/json, so equal documents hash equal) without
// spec.replicas, spec.scaling and spec.consul, which change no task. The
// leader compares it with the hash recorded when a service was adopted, to
// tell a document unchanged in what it asks of Swarm from one the user has
// since changed.
func AdoptionHash(s *Service) string {
	c := *s
	c.Spec.Replicas, c.Spec.Scaling, c.Spec.Consul = nil, nil, nil
	b, err := json.Marshal(&c)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
