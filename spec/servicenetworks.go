package spec

import (
	"encoding/json"
	"fmt"
	"regexp"
)

// NetworkAttachment is a swarm network a service's tasks join beside its
// VLANs (an overlay network made outside swarmvlan), by its Docker name,
// with the task's DNS aliases there. A document may write a bare name for
// {name: NAME}.
type NetworkAttachment struct {
	Name    string   `json:"name"`
	Aliases []string `json:"aliases,omitempty"`
}

// setName lets the decoder take a bare string for the whole attachment.
func (n *NetworkAttachment) setName(s string) { *n = NetworkAttachment{Name: s} }

// MarshalJSON writes an attachment without aliases as the bare name.
func (n NetworkAttachment) MarshalJSON() ([]byte, error) {
	if len(n.Aliases) == 0 {
		return json.Marshal(n.Name)
	}
	type plain NetworkAttachment
	return json.Marshal(plain(n))
}

// UnmarshalJSON reads a bare name or the object.
func (n *NetworkAttachment) UnmarshalJSON(b []byte) error {
	var name string
	if json.Unmarshal(b, &name) == nil {
		n.setName(name)
		return nil
	}
	type plain NetworkAttachment
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*n = NetworkAttachment(p)
	return nil
}

// Swarm's names of its networks (swarmkit's validateName: a DNS name
// component of letters and digits, with '-' and '_' inside) and DNS aliases: labels
// of letters, digits, '-' and '_', separated by dots, as Docker's embedded
// DNS answers them.
var (
	networkNameRe = regexp.MustCompile(`^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`)
	aliasRe       = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$`)
)

// maxNetworkName is swarmkit's limit on the name of a swarm network.
const maxNetworkName = 63

// validateAttachments checks the VLAN aliases and the overlay networks:
// Docker names, each network once (a VLAN is listed in spec.networks, not
// here), DNS aliases.
func validateAttachments(errs *ErrorList, s *ServiceSpec) {
	validateAliases(errs, "spec.aliases", s.Aliases)
	seen := map[string]string{}
	for i, n := range s.Networks {
		seen[n] = IndexPath("spec.networks", i)
	}
	for i, n := range s.Overlays {
		p := IndexPath("spec.overlays", i)
		switch {
		case n.Name == "":
			errs.add(p, "must not be empty")
			continue
		case len(n.Name) > maxNetworkName || !networkNameRe.MatchString(n.Name):
			errs.add(p, fmt.Sprintf("%q is not a swarm network name: 1-%d letters, digits, '-' and '_', starting and ending with a letter or digit", n.Name, maxNetworkName))
			continue
		}
		if other, ok := seen[n.Name]; ok {
			errs.add(p, fmt.Sprintf("%s is already %s", n.Name, other))
		}
		seen[n.Name] = p
		validateAliases(errs, p+".aliases", n.Aliases)
	}
}

func validateAliases(errs *ErrorList, p string, aliases []string) {
	seen := map[string]bool{}
	for i, a := range aliases {
		ip := IndexPath(p, i)
		switch {
		case a == "":
			errs.add(ip, "must not be empty")
		case len(a) > 253 || !aliasRe.MatchString(a):
			errs.add(ip, fmt.Sprintf("%q is not a DNS name: labels of 1-63 letters, digits, '-' and '_' (not starting or ending with '-'), separated by '.'", a))
		case seen[a]:
			errs.add(ip, fmt.Sprintf("%s is listed twice", a))
		}
		seen[a] = true
	}
}
