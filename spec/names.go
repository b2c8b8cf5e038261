package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// The names swarmvlan gives what it makes for a VLAN, in Docker and on the
// hosts. They are part of the contract (SPEC.md): a reconciler that restarts,
// or a newer one, finds what an earlier one made by these names.

// NetworkName is the name of a VLAN's swarm-scoped Docker network: the
// VLAN's own name.
func NetworkName(vlan string) string { return vlan }

// ConfigNetworkName is the name of a VLAN's per-node --config-only Docker
// network: "<vlan>-config".
func ConfigNetworkName(vlan string) string { return vlan + "-config" }

// SubInterfaceName is the name of a VLAN's interface on a host whose trunk
// is trunk: "<trunk>.<id>", or the trunk itself for an untagged VLAN (id 0).
func SubInterfaceName(trunk string, id int) string {
	if id == 0 {
		return trunk
	}
	return trunk + "." + strconv.Itoa(id)
}

// shimPrefix starts every shim interface's name.
const shimPrefix = "sv-"

// maxIfaceName is IFNAMSIZ less the terminating NUL.
const maxIfaceName = 15

// ShimName is the name of the host's shim interface for a VLAN: "sv-" and
// the VLAN name when that fits Linux's 15 bytes and uses only
// [A-Za-z0-9_.-]; otherwise "sv-", up to 5 of the name's usable bytes, "-"
// and the first hex digits of the SHA-256 of the name, filling the 15 bytes.
// The name is stable, so a restarted host agent finds the shim it made.
func ShimName(vlan string) string {
	if vlan != "" && len(shimPrefix)+len(vlan) <= maxIfaceName && ifaceSafe(vlan) {
		return shimPrefix + vlan
	}
	var keep strings.Builder
	for i := 0; i < len(vlan) && keep.Len() < 5; i++ {
		if ifaceSafeByte(vlan[i]) {
			keep.WriteByte(vlan[i])
		}
	}
	sum := sha256.Sum256([]byte(vlan))
	name := shimPrefix + keep.String() + "-"
	return name + hex.EncodeToString(sum[:])[:maxIfaceName-len(name)]
}

func ifaceSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if !ifaceSafeByte(s[i]) {
			return false
		}
	}
	return true
}

func ifaceSafeByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-'
}

// SubInterface is the name of the VLAN's interface on a host whose trunk is
// trunk (see SubInterfaceName).
func (v *VLAN) SubInterface(trunk string) string { return SubInterfaceName(trunk, v.Spec.ID) }

// ConfigNetworkName is the name of the VLAN's per-node --config-only Docker
// network (see the function ConfigNetworkName).
func (v *VLAN) ConfigNetworkName() string { return ConfigNetworkName(v.Metadata.Name) }

// NetworkName is the name of the VLAN's swarm-scoped Docker network.
func (v *VLAN) NetworkName() string { return NetworkName(v.Metadata.Name) }
