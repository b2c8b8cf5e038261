package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Version is what an engine says of itself and the API version the client
// negotiated with it.
type Version struct {
	// Engine is the daemon's version, such as "29.8.1" or "20.10.24+dfsg1".
	Engine string
	// API is the API version the client speaks to it after negotiation.
	API string
	// MaxAPI and MinAPI are the daemon's own bounds.
	MaxAPI, MinAPI string
	OS, Arch       string
}

// String is the form logs and `reconciler version` print.
func (v Version) String() string {
	return fmt.Sprintf("Engine %s (API %s negotiated; daemon serves %s to %s)", v.Engine, v.API, v.MinAPI, v.MaxAPI)
}

// TestedEngines are the Engine release lines the test suite runs against,
// oldest first; README.md lists the same.
var TestedEngines = []string{"20.10", "26.1", "28.5", "29.8"}

// Support says whether the product runs against an engine of this version:
// a non-nil error refuses it (with what to upgrade to); a non-empty warning
// is logged and the daemon goes on.
func Support(engineVersion string) (warning string, err error) {
	major, minor, patch, ok := parseVersion(engineVersion)
	if !ok {
		return fmt.Sprintf("Docker Engine version %q is not one this build can read; tested: %s", engineVersion, strings.Join(TestedEngines, ", ")), nil
	}
	if major == 28 && minor == 0 && patch == 0 {
		return "", fmt.Errorf("Docker Engine 28.0.0 cannot create swarm networks --config-from a config-only network (fixed in 28.0.1): upgrade the engine to 28.0.1 or later (tested: %s)", strings.Join(TestedEngines, ", "))
	}
	oMajor, oMinor, _, _ := parseVersion(TestedEngines[0])
	if major < oMajor || (major == oMajor && minor < oMinor) {
		return fmt.Sprintf("Docker Engine %s is older than the oldest tested (%s); tested: %s", engineVersion, TestedEngines[0], strings.Join(TestedEngines, ", ")), nil
	}
	nMajor, _, _, _ := parseVersion(TestedEngines[len(TestedEngines)-1])
	if major > nMajor {
		return fmt.Sprintf("Docker Engine %s is newer than the newest tested (%s)", engineVersion, TestedEngines[len(TestedEngines)-1]), nil
	}
	return "", nil
}

// parseVersion reads "29.8.1", "20.10.24+dfsg1" or "28.0.0-rc.1" as its
// three numbers.
func parseVersion(s string) (major, minor, patch int, ok bool) {
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexAny(s, "+-~ "); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return 0, 0, 0, false
	}
	nums := make([]int, 3)
	for i := 0; i < len(parts) && i < 3; i++ {
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return 0, 0, 0, false
		}
		nums[i] = n
	}
	return nums[0], nums[1], nums[2], true
}

// ServerVersion asks the engine for its version; the client negotiates
// the API version on its first request, so ClientVersion is then the one
// in use.
func (e *apiEngine) ServerVersion(ctx context.Context) (Version, error) {
	e.calls.Add("ServerVersion")
	sv, err := e.cli.ServerVersion(ctx)
	if err != nil {
		return Version{}, err
	}
	return Version{
		Engine: sv.Version, API: e.cli.ClientVersion(),
		MaxAPI: sv.APIVersion, MinAPI: sv.MinAPIVersion,
		OS: sv.Os, Arch: sv.Arch,
	}, nil
}
