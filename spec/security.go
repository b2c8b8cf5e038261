package spec

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// AllCapabilities stands for every capability in capAdd or capDrop.
const AllCapabilities = "ALL"

// linuxCapabilities are the capabilities Linux knows (capabilities(7)),
// without the CAP_ prefix.
var linuxCapabilities = strings.Fields(`AUDIT_CONTROL AUDIT_READ AUDIT_WRITE BLOCK_SUSPEND BPF
	CHECKPOINT_RESTORE CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID IPC_LOCK IPC_OWNER KILL
	LEASE LINUX_IMMUTABLE MAC_ADMIN MAC_OVERRIDE MKNOD NET_ADMIN NET_BIND_SERVICE NET_BROADCAST
	NET_RAW PERFMON SETFCAP SETGID SETPCAP SETUID SYSLOG SYS_ADMIN SYS_BOOT SYS_CHROOT SYS_MODULE
	SYS_NICE SYS_PACCT SYS_PTRACE SYS_RAWIO SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG WAKE_ALARM`)

// NormalizeCapability is a capability as Docker stores it: upper case with
// the CAP_ prefix ("net_admin" is "CAP_NET_ADMIN"), or ALL; the docker CLI
// normalises --cap-add and --cap-drop the same way.
func NormalizeCapability(c string) string {
	c = strings.ToUpper(c)
	if c == AllCapabilities || strings.HasPrefix(c, "CAP_") {
		return c
	}
	return "CAP_" + c
}

// Capabilities returns the capabilities Docker is given to add and to drop,
// as the docker CLI computes them from --cap-add and --cap-drop: each
// normalised, sorted and listed once; ALL in a list stands alone; and a
// capability both added and dropped is added. Both are nil when the document
// sets none.
func (s *ServiceSpec) Capabilities() (add, drop []string) {
	norm := func(list []string) map[string]bool {
		m := map[string]bool{}
		for _, c := range list {
			m[NormalizeCapability(c)] = true
		}
		if m[AllCapabilities] {
			return map[string]bool{AllCapabilities: true}
		}
		return m
	}
	adds, drops := norm(s.CapAdd), norm(s.CapDrop)
	for c := range adds {
		add = append(add, c)
	}
	for c := range drops {
		if !adds[c] {
			drop = append(drop, c)
		}
	}
	slices.Sort(add)
	slices.Sort(drop)
	return add, drop
}

func validateCapabilities(errs *ErrorList, p string, list []string) {
	seen := map[string]bool{}
	for i, c := range list {
		ip := IndexPath(p, i)
		n := NormalizeCapability(c)
		if n != AllCapabilities && !slices.Contains(linuxCapabilities, strings.TrimPrefix(n, "CAP_")) {
			errs.add(ip, fmt.Sprintf("%q is not a Linux capability such as NET_ADMIN or CAP_NET_ADMIN, or ALL", c))
			continue
		}
		if seen[n] {
			errs.add(ip, fmt.Sprintf("%s is listed twice", n))
		}
		seen[n] = true
	}
}

// Docker (through runc) sets only the sysctls that live in the container's
// own namespaces: the network namespace's net.*, the IPC namespace's
// kernel.msg*, kernel.sem, kernel.shm* and fs.mqueue.*. Any other one fails
// the task when its container is created.
var (
	namespacedSysctls = []string{"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
		"kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"}
	namespacedSysctlPrefixes = []string{"net.", "fs.mqueue."}
	sysctlKeyRe              = regexp.MustCompile(`^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$`)
)

func validateSysctls(errs *ErrorList, sysctls map[string]string) {
	for _, k := range sortedKeys(sysctls) {
		kp := KeyPath("spec.sysctls", k)
		switch {
		case !sysctlKeyRe.MatchString(k):
			errs.add(kp, "key must be a sysctl name such as net.ipv4.ip_forward")
		case !slices.Contains(namespacedSysctls, k) && !slices.ContainsFunc(namespacedSysctlPrefixes, func(p string) bool { return strings.HasPrefix(k, p) }):
			errs.add(kp, "not a namespaced sysctl: Docker sets only net.*, fs.mqueue.*, kernel.msgmax, kernel.msgmnb, kernel.msgmni, kernel.sem, kernel.shmall, kernel.shmmax, kernel.shmmni and kernel.shm_rmid_forced")
		}
		switch v := sysctls[k]; {
		case strings.TrimSpace(v) == "":
			errs.add(kp, "value must not be empty")
		case strings.IndexFunc(v, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) >= 0:
			errs.add(kp, "value must not contain control characters")
		}
	}
}

// ulimitNames are the limits Docker sets by name (go-units' ulimit names).
var ulimitNames = []string{"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
	"nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"}

func validateUlimits(errs *ErrorList, ulimits map[string]Ulimit) {
	for _, name := range sortedKeys(ulimits) {
		kp := KeyPath("spec.ulimits", name)
		u := ulimits[name]
		switch {
		case !slices.Contains(ulimitNames, name):
			errs.add(kp, fmt.Sprintf("key %q is not a ulimit: one of %s", name, strings.Join(ulimitNames, ", ")))
		case u.Soft < 0:
			errs.add(kp+".soft", "must not be negative")
		case u.Hard < 0:
			errs.add(kp+".hard", "must not be negative")
		case u.Soft > u.Hard:
			errs.add(kp+".soft", fmt.Sprintf("%d is more than the hard limit %d", u.Soft, u.Hard))
		}
	}
}

// UlimitNames returns the names of the document's ulimits in the order
// Docker is given them: sorted, as the docker CLI sorts --ulimit.
func (s *ServiceSpec) UlimitNames() []string {
	if len(s.Ulimits) == 0 {
		return nil
	}
	return sortedKeys(s.Ulimits)
}
