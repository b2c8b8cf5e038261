package engine

import (
	"strings"
	"testing"
)

func TestSupport(t *testing.T) {
	for _, tc := range []struct {
		version string
		refused bool
		warns   string
	}{
		{version: "20.10.24+dfsg1"},
		{version: "26.1.5+dfsg1"},
		{version: "28.5.2+dfsg3"},
		{version: "29.8.1"},
		{version: "28.0.1"},
		{version: "28.0.0", refused: true},
		{version: "19.03.15", warns: "older than the oldest tested (20.10)"},
		{version: "20.9.0", warns: "older than the oldest tested"},
		{version: "31.0.0", warns: "newer than the newest tested (29.8)"},
		{version: "dev", warns: "not one this build can read"},
	} {
		warning, err := Support(tc.version)
		if tc.refused {
			if err == nil || !strings.Contains(err.Error(), "28.0.1") {
				t.Errorf("Support(%q) error = %v, want a refusal naming 28.0.1", tc.version, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Support(%q) refused: %v", tc.version, err)
		}
		if tc.warns == "" && warning != "" || tc.warns != "" && !strings.Contains(warning, tc.warns) {
			t.Errorf("Support(%q) warning = %q, want %q", tc.version, warning, tc.warns)
		}
	}
}
