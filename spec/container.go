package spec

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// userRe is a user as Docker takes it: a name or UID, optionally followed by
// ":group" or ":GID", without spaces or control characters.
var userRe = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$`)

// maxHostname is Linux's limit on a hostname (HOST_NAME_MAX): sethostname
// refuses a longer one, so the task would fail to start.
const maxHostname = 64

// linuxSignals are the signal names Docker's ParseSignal knows on Linux,
// without the SIG prefix.
var linuxSignals = func() map[string]bool {
	m := map[string]bool{}
	for _, s := range strings.Fields(`ABRT ALRM BUS CHLD CLD CONT FPE HUP ILL INT IO IOT KILL PIPE POLL PROF PWR
		QUIT SEGV STKFLT STOP SYS TERM TRAP TSTP TTIN TTOU URG USR1 USR2 VTALRM WINCH XCPU XFSZ RTMIN RTMAX`) {
		m[s] = true
	}
	for i := 1; i <= 15; i++ {
		m["RTMIN+"+strconv.Itoa(i)] = true
	}
	for i := 1; i <= 14; i++ {
		m["RTMAX-"+strconv.Itoa(i)] = true
	}
	return m
}()

// maxSignal is the highest Linux signal number (SIGRTMAX).
const maxSignal = 64

// validSignal accepts what Docker's ParseSignal accepts on Linux: a signal
// number, or a name with or without the SIG prefix, in any case.
func validSignal(s string) bool {
	if n, err := strconv.Atoi(s); err == nil {
		return n >= 1 && n <= maxSignal
	}
	return linuxSignals[strings.TrimPrefix(strings.ToUpper(s), "SIG")]
}

// validateContainer checks the fields that shape the task's container
// (user, working directory, hostname, stop signal and grace period).
func validateContainer(errs *ErrorList, s *ServiceSpec, labels map[string]string) {
	if s.User != "" && !userRe.MatchString(s.User) {
		errs.add("spec.user", fmt.Sprintf("%q must be a user name or UID, optionally with :group or :GID", s.User))
	}
	if s.Workdir != "" {
		switch {
		case !path.IsAbs(s.Workdir):
			errs.add("spec.workdir", fmt.Sprintf("%q must be an absolute path", s.Workdir))
		case strings.IndexFunc(s.Workdir, unicode.IsControl) >= 0:
			errs.add("spec.workdir", "must not contain control characters")
		}
	}
	if h := s.Hostname; h != "" {
		switch {
		case strings.Contains(h, "{{"):
			// Expanded per task: what the template yields is only known
			// there, so only whether Swarm can expand it is checked.
			if msg := swarmTemplate(h, labels); msg != "" {
				errs.add("spec.hostname", msg)
			}
		case len(h) > maxHostname:
			errs.add("spec.hostname", fmt.Sprintf("%q is %d bytes, more than Linux's %d", h, len(h), maxHostname))
		default:
			if msg := hostname(h); msg != "" {
				errs.add("spec.hostname", msg)
			}
		}
	}
	if s.StopSignal != "" && !validSignal(s.StopSignal) {
		errs.add("spec.stopSignal", fmt.Sprintf("%q is not a signal: a name such as SIGTERM or TERM, or a number 1-%d", s.StopSignal, maxSignal))
	}
	addDuration(errs, "spec.stopGracePeriod", s.StopGracePeriod, true)
	validateCapabilities(errs, "spec.capAdd", s.CapAdd)
	validateCapabilities(errs, "spec.capDrop", s.CapDrop)
	validateSysctls(errs, s.Sysctls)
	validateUlimits(errs, s.Ulimits)
	if s.DNS != nil {
		validateDNS(errs, s.DNS)
	}
	validateExtraHosts(errs, s.ExtraHosts)
	if l := s.Logging; l != nil {
		validateLogging(errs, l)
	}
	validateEndpoint(errs, s)
}

// Log driver names: Docker's own (json-file, local, syslog, ...) or a
// plugin's ("repo/name:tag"); option keys as the drivers spell them.
var (
	logDriverRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._/:-]*$`)
	logOptionRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
)

func validateLogging(errs *ErrorList, l *Logging) {
	const p = "spec.logging"
	switch {
	case l.Driver == "":
		errs.add(p+".driver", "required: a log driver such as json-file, local or syslog")
	case !logDriverRe.MatchString(l.Driver):
		errs.add(p+".driver", fmt.Sprintf("%q is not a log driver name: lowercase letters, digits and . _ / : -", l.Driver))
	}
	for _, k := range sortedKeys(l.Options) {
		kp := KeyPath(p+".options", k)
		if !logOptionRe.MatchString(k) {
			errs.add(kp, "key must be letters, digits, '.', '_' or '-', starting with a letter or digit")
		}
		if hasControl(l.Options[k]) {
			errs.add(kp, "value must not contain control characters")
		}
	}
}

// validateEndpoint checks the endpoint mode.
func validateEndpoint(errs *ErrorList, s *ServiceSpec) {
	switch s.EndpointMode {
	case "", EndpointVIP, EndpointDNSRR:
	default:
		errs.add("spec.endpointMode", fmt.Sprintf("must be vip or dnsrr, not %q", s.EndpointMode))
	}
	switch s.Addresses {
	case "", AddressesAny:
	case AddressesSticky:
		if s.Mode == ModeGlobal {
			errs.add("spec.addresses", "sticky needs mode replicated: a global service's tasks have no slot")
		}
	default:
		errs.add("spec.addresses", fmt.Sprintf("must be any or sticky, not %q", s.Addresses))
	}
}

// Service address policies (spec.addresses).
const (
	AddressesAny    = "any"
	AddressesSticky = "sticky"
)
