package spec

import (
	"reflect"
	"testing"
)

// TestCapabilities pins what Docker is given for capAdd and capDrop: what
// the docker CLI stores for the same --cap-add and --cap-drop flags
// (checked on the Engine by reconcile/cluster's TestMappingAgreesWithDockerCLI).
func TestCapabilities(t *testing.T) {
	tests := []struct {
		add, drop         []string
		wantAdd, wantDrop []string
	}{
		{nil, nil, nil, nil},
		{[]string{"net_admin", "CAP_SYS_TIME", "Chown"}, nil, []string{"CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_TIME"}, nil},
		{[]string{"NET_ADMIN"}, []string{"CAP_NET_ADMIN", "mknod"}, []string{"CAP_NET_ADMIN"}, []string{"CAP_MKNOD"}},
		{[]string{"all", "NET_ADMIN"}, []string{"ALL"}, []string{"ALL"}, nil},
		{nil, []string{"ALL", "NET_RAW"}, nil, []string{"ALL"}},
		{[]string{"NET_RAW"}, []string{"ALL"}, []string{"CAP_NET_RAW"}, []string{"ALL"}},
	}
	for _, tt := range tests {
		s := ServiceSpec{CapAdd: tt.add, CapDrop: tt.drop}
		add, drop := s.Capabilities()
		if !reflect.DeepEqual(add, tt.wantAdd) || !reflect.DeepEqual(drop, tt.wantDrop) {
			t.Errorf("capAdd %q capDrop %q: Docker is given add %q drop %q, want %q %q", tt.add, tt.drop, add, drop, tt.wantAdd, tt.wantDrop)
		}
	}
}
