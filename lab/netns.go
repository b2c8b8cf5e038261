package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Everything a cluster run creates is named after its run id, three decimal
// digits that are also the third octet of its management subnet
// 10.99.<id>.0/24. The names below are this package's alone, so leftovers of
// a crashed run can be found and removed without touching anything else:
//
//	run directory   /tmp/swarmvlan-lab/<id>/ (owner file, one directory per host)
//	bridges         svb<id> (management, 10.99.<id>.1/24), svt<id> (VLAN trunk)
//	namespaces      sv<id>h<N>, also the cgroup parent of the host's containers
//	root-side veths sv<id>h<N>m (to eth0), sv<id>h<N>t (to trunk0)
//	iptables        FORWARD -i svb<id> -o svb<id> -j ACCEPT, the same for svt<id>
const (
	labRunRoot = "/tmp/swarmvlan-lab"
	netnsDir   = "/var/run/netns"
	cgroupRoot = "/sys/fs/cgroup"
	ownerFile  = "owner"
)

var (
	// reHostName matches a host's namespace and cgroup parent.
	reHostName = regexp.MustCompile(`^sv(\d{3})h(\d+)$`)
	// reLinkName matches the bridges and root-side veths of a run.
	reLinkName = regexp.MustCompile(`^sv(?:[bt](\d{3})|(\d{3})h\d+[mt])$`)
	reRunID    = regexp.MustCompile(`^\d{3}$`)
	// reForwardRule matches the FORWARD rules a run inserts.
	reForwardRule = regexp.MustCompile(`^-A FORWARD -i (sv[bt](\d{3})) -o (sv[bt]\d{3}) -j ACCEPT$`)
)

func bridgeName(id string) string      { return "svb" + id }
func trunkBridgeName(id string) string { return "svt" + id }
func hostNsName(id string, n int) string {
	return fmt.Sprintf("sv%sh%d", id, n)
}

// runCmd runs a command and returns its error with the command line and its
// output, which is where ip and iptables say what went wrong.
func runCmd(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ip runs the ip command; iproute2 is the one tool every lab machine has,
// and it keeps the test bed free of a netlink dependency of its own.
func ip(ctx context.Context, args ...string) error {
	return runCmd(ctx, "ip", args...)
}

// claimRun picks a run id that no live or leftover run uses and whose
// subnet no interface of the machine is on, and claims it by creating the
// run directory with an owner file. The directory appears complete or not
// at all (rename), so a concurrent CleanupStale never sees it ownerless.
func claimRun() (id string, octet int, dir string, err error) {
	if err := os.MkdirAll(labRunRoot, 0o755); err != nil {
		return "", 0, "", fmt.Errorf("lab run: create %s: %w", labRunRoot, err)
	}
	used, err := usedSubnetOctets()
	if err != nil {
		return "", 0, "", err
	}
	// 10.99.0.0/24 is the address plan of the hand-made recipe; leave it to
	// people following it.
	for _, o := range rand.Perm(254) {
		octet := o + 1
		id := fmt.Sprintf("%03d", octet)
		if used[octet] || runLeftoverExists(id) {
			continue
		}
		tmp, err := os.MkdirTemp(labRunRoot, "new-")
		if err != nil {
			return "", 0, "", fmt.Errorf("lab run: %w", err)
		}
		if err := writeOwner(tmp); err != nil {
			os.RemoveAll(tmp)
			return "", 0, "", err
		}
		dir := filepath.Join(labRunRoot, id)
		// rename(2) refuses a non-empty target: another run got there first.
		if err := os.Rename(tmp, dir); err != nil {
			os.RemoveAll(tmp)
			continue
		}
		return id, octet, dir, nil
	}
	return "", 0, "", errors.New("lab run: no free run id (10.99.1-254.0/24 all in use)")
}

// usedSubnetOctets returns the third octets X of every 10.99.X.0/24 that an
// address or a route of the root namespace already touches.
func usedSubnetOctets() (map[int]bool, error) {
	used := map[int]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("lab run: list addresses: %w", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if v4 := ipn.IP.To4(); v4 != nil && v4[0] == 10 && v4[1] == 99 {
				used[int(v4[2])] = true
			}
		}
	}
	out, err := exec.Command("ip", "-4", "-o", "route", "show", "table", "all").Output()
	if err != nil {
		return nil, fmt.Errorf("lab run: list routes: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "10.99.7.0/24 dev ..." or "<type> 10.99.7.1 dev ..." (local,
		// broadcast, unreachable, ...).
		f := strings.Fields(sc.Text())
		for i := 0; i < len(f) && i < 2; i++ {
			dst := f[i]
			if !strings.Contains(dst, "/") {
				dst += "/32"
			}
			_, n, err := net.ParseCIDR(dst)
			if err != nil {
				continue
			}
			// Only routes inside 10.99.0.0/16 claim a /24 of it; a
			// broader route (a default, a 10/8 elsewhere) loses to the
			// run's more specific on-link route.
			if ones, _ := n.Mask.Size(); ones >= 16 && n.IP[0] == 10 && n.IP[1] == 99 {
				if ones < 24 {
					for o := 1; o < 255; o++ {
						if n.Contains(net.IPv4(10, 99, byte(o), 0)) {
							used[o] = true
						}
					}
				} else {
					used[int(n.IP[2])] = true
				}
			}
			break
		}
	}
	return used, nil
}

// runLeftoverExists reports whether anything named after id exists.
func runLeftoverExists(id string) bool {
	if _, err := os.Lstat(filepath.Join(labRunRoot, id)); err == nil {
		return true
	}
	for _, r := range scanLeftovers() {
		if r == id {
			return true
		}
	}
	return false
}

// writeOwner records this process as the owner of a run directory, with
// its start time so a recycled pid is not mistaken for the owner.
func writeOwner(dir string) error {
	pid := os.Getpid()
	st, err := processStartTime(pid)
	if err != nil {
		return fmt.Errorf("lab run: own start time: %w", err)
	}
	data := fmt.Sprintf("%d %d\n", pid, st)
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(data), 0o644); err != nil {
		return fmt.Errorf("lab run: write owner: %w", err)
	}
	return nil
}

// detachedOwner is the owner file's content for a detached cluster: no
// process owns it, and only TeardownCluster removes it.
const detachedOwner = "detached\n"

// writeDetachedOwner marks a run as detached.
func writeDetachedOwner(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(detachedOwner), 0o644); err != nil {
		return fmt.Errorf("lab run: write owner: %w", err)
	}
	return nil
}

// isDetached reports whether the run in dir is a detached cluster.
func isDetached(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	return err == nil && string(b) == detachedOwner
}

// procAttr is how the lab starts a daemon or process: in its own process
// group, so a signal reaches whatever it starts, and killed with the test
// binary that started it (Pdeathsig) so none outlives a test that dies
// without its cleanups. A detached cluster's processes get a session of
// their own instead, so neither the end of the starting process nor a
// Ctrl-C in its terminal reaches them.
func procAttr(detached bool) *syscall.SysProcAttr {
	if detached {
		return &syscall.SysProcAttr{Setsid: true}
	}
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// startLogged starts cmd with its output appended to logf and procAttr's
// process attributes. The returned channel is closed once cmd has exited,
// after onExit (if set) has been told what Wait returned and logf is closed.
func startLogged(cmd *exec.Cmd, logf *os.File, detached bool, onExit func(error)) (chan struct{}, error) {
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = procAttr(detached)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		if onExit != nil {
			onExit(err)
		}
		logf.Close()
		close(exited)
	}()
	return exited, nil
}

// ownerAlive reports whether the process that claimed dir still runs; a
// detached cluster counts as alive until it is torn down.
func ownerAlive(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		return false
	}
	if string(b) == detachedOwner {
		return true
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(string(b), "%d %d", &pid, &start); err != nil {
		return false
	}
	st, err := processStartTime(pid)
	return err == nil && st == start
}

// processStartTime returns field 22 of /proc/<pid>/stat (start time in
// clock ticks since boot).
func processStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses; the
	// fields after the last ')' are plain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// processState returns field 3 of /proc/<pid>/stat ("Z" for a zombie).
func processState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// CleanupStale removes what earlier runs left behind when their process
// died without tearing down (a crash, a test binary killed on timeout):
// processes, mounts, namespaces, links, FORWARD rules, cgroups and run
// directories named after a run whose owner process is gone. Runs of live
// processes, detached clusters (see StartClusterDetached) and anything not
// named by this package's scheme are left alone. StartCluster calls it
// first.
func CleanupStale() error {
	ids := map[string]bool{}
	if entries, err := os.ReadDir(labRunRoot); err == nil {
		for _, e := range entries {
			name := e.Name()
			switch {
			case reRunID.MatchString(name):
				ids[name] = true
			case strings.HasPrefix(name, "new-"):
				// A claim that never completed; nothing is named after it.
				p := filepath.Join(labRunRoot, name)
				if !ownerAlive(p) {
					os.RemoveAll(p)
				}
			}
		}
	}
	for _, id := range scanLeftovers() {
		ids[id] = true
	}
	var errs []error
	for id := range ids {
		dir := filepath.Join(labRunRoot, id)
		if ownerAlive(dir) {
			continue
		}
		if err := removeRun(id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// scanLeftovers lists the run ids named by a namespace, link, cgroup or
// FORWARD rule that exists now.
func scanLeftovers() []string {
	ids := map[string]bool{}
	for _, ns := range listNetns() {
		if m := reHostName.FindStringSubmatch(ns); m != nil {
			ids[m[1]] = true
		}
	}
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			if m := reLinkName.FindStringSubmatch(i.Name); m != nil {
				ids[m[1]+m[2]] = true
			}
		}
	}
	for _, d := range cgroupHostDirs("") {
		if m := reHostName.FindStringSubmatch(filepath.Base(d)); m != nil {
			ids[m[1]] = true
		}
	}
	for _, r := range forwardRules() {
		ids[r.id] = true
	}
	out := make([]string, 0, len(ids))
	for id := range ids {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func listNetns() []string {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// cgroupHostDirs lists the host cgroup parents (sv<id>h<N>) in every
// cgroup v1 hierarchy and in a v2 unified tree, for run id or, with "",
// for every run.
func cgroupHostDirs(id string) []string {
	var dirs []string
	match := func(name string) bool {
		m := reHostName.FindStringSubmatch(name)
		return m != nil && (id == "" || m[1] == id)
	}
	roots := []string{cgroupRoot}
	if entries, err := os.ReadDir(cgroupRoot); err == nil {
		for _, e := range entries {
			if e.IsDir() {
				roots = append(roots, filepath.Join(cgroupRoot, e.Name()))
			}
		}
	}
	for _, r := range roots {
		entries, err := os.ReadDir(r)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.IsDir() && match(e.Name()) {
				dirs = append(dirs, filepath.Join(r, e.Name()))
			}
		}
	}
	return dirs
}

type forwardRule struct {
	id     string
	in     string
	spec   []string
	exists bool
}

// forwardRules lists the FORWARD rules this package inserts.
func forwardRules() []forwardRule {
	out, err := exec.Command("iptables", "-w", "-S", "FORWARD").Output()
	if err != nil {
		return nil
	}
	var rules []forwardRule
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := reForwardRule.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil || m[1] != m[3] {
			continue
		}
		rules = append(rules, forwardRule{id: m[2], in: m[1], spec: forwardSpec(m[1])})
	}
	return rules
}

func forwardSpec(bridge string) []string {
	return []string{"FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"}
}

// ensureForward inserts the rule that lets frames cross bridge: once the
// machine's dockerd runs, FORWARD drops by default, and with br_netfilter
// bridged frames pass through it.
func ensureForward(ctx context.Context, bridge string) error {
	spec := forwardSpec(bridge)
	if runCmd(ctx, "iptables", append([]string{"-w", "-C"}, spec...)...) == nil {
		return nil
	}
	return runCmd(ctx, "iptables", append([]string{"-w", "-I"}, spec...)...)
}

// deleteForward removes every copy of the rule for bridge.
func deleteForward(ctx context.Context, bridge string) error {
	spec := forwardSpec(bridge)
	for i := 0; i < 10; i++ {
		if runCmd(ctx, "iptables", append([]string{"-w", "-C"}, spec...)...) != nil {
			return nil
		}
		if err := runCmd(ctx, "iptables", append([]string{"-w", "-D"}, spec...)...); err != nil {
			return err
		}
	}
	return fmt.Errorf("iptables: FORWARD rule for %s keeps coming back", bridge)
}

// removeRun removes everything named after run id, whether or not this
// process created it: processes first (so nothing holds the mounts or
// namespaces), then mounts, namespaces, links, FORWARD rules, cgroups and
// finally the run directory, whose owner file marks the run as live.
func removeRun(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := filepath.Join(labRunRoot, id)
	var errs []error
	if err := killRunProcesses(ctx, id, dir); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(dir); err != nil {
		errs = append(errs, err)
	}
	for _, ns := range listNetns() {
		if m := reHostName.FindStringSubmatch(ns); m != nil && m[1] == id {
			if err := ip(ctx, "netns", "delete", ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Deleting a namespace destroys its veths asynchronously; delete the
	// root-side ends explicitly so they are gone when this returns.
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			m := reLinkName.FindStringSubmatch(i.Name)
			if m == nil || m[1]+m[2] != id {
				continue
			}
			if err := ip(ctx, "link", "delete", i.Name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				errs = append(errs, err)
			}
		}
	}
	for _, b := range []string{bridgeName(id), trunkBridgeName(id)} {
		if err := deleteForward(ctx, b); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeCgroups(ctx, id); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("lab run %s: remove %s: %w", id, dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab run %s: clean up: %w", id, err)
	}
	return nil
}

// runProcesses lists the processes that belong to run id: those whose
// command line names the run directory (dockerd, containerd, shims, consul),
// those inside one of its network namespaces (anything started with
// Host.Exec) and those in one of its hosts' cgroups (the containers).
func runProcesses(id, dir string) []int {
	nsInodes := map[uint64]bool{}
	for _, ns := range listNetns() {
		if m := reHostName.FindStringSubmatch(ns); m != nil && m[1] == id {
			var st syscall.Stat_t
			if syscall.Stat(filepath.Join(netnsDir, ns), &st) == nil {
				nsInodes[st.Ino] = true
			}
		}
	}
	return matchProcesses(func(pid int) bool {
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
			if bytes.Contains(cmd, []byte(dir+"/")) {
				return true
			}
		}
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil {
			var ino uint64
			if _, err := fmt.Sscanf(link, "net:[%d]", &ino); err == nil && nsInodes[ino] {
				return true
			}
		}
		return inHostCgroup(pid, id, 0)
	})
}

// matchProcesses returns the pids, other than this process and zombies
// (which only wait to be reaped), for which match is true.
func matchProcesses(match func(pid int) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == 1 {
			continue
		}
		if match(pid) && processState(pid) != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// inHostCgroup reports whether pid sits in a cgroup under host n of run id
// (any host when n is 0).
func inHostCgroup(pid int, id string, n int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controllers:/path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		first := strings.SplitN(strings.TrimPrefix(parts[2], "/"), "/", 2)[0]
		m := reHostName.FindStringSubmatch(first)
		if m != nil && m[1] == id && (n == 0 || m[2] == strconv.Itoa(n)) {
			return true
		}
	}
	return false
}

// killRunProcesses SIGKILLs the run's processes until none is left;
// killing a shim or dockerd can leave children that only show up after.
func killRunProcesses(ctx context.Context, id, dir string) error {
	return killUntilGone(ctx, "lab run "+id, func() []int { return runProcesses(id, dir) })
}

// killUntilGone SIGKILLs the processes list returns until it returns none.
func killUntilGone(ctx context.Context, what string, list func() []int) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		pids := list()
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: processes %v still alive: %w", what, pids, ctx.Err())
		case <-tick.C:
		}
	}
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountUnder detaches every mount at or below dir: the namespace files
// dockerd binds under its exec root, the data root it may bind onto itself,
// the hosts' UTS namespace files. Stacked mounts need several rounds.
func unmountUnder(dir string) error {
	var last []string
	for round := 0; round < 10; round++ {
		mps := mountsUnder(dir)
		if len(mps) == 0 {
			return nil
		}
		for _, mp := range mps {
			_ = syscall.Unmount(mp, syscall.MNT_DETACH)
		}
		last = mps
	}
	return fmt.Errorf("unmount under %s: still mounted: %v", dir, last)
}

// removeCgroups removes the host cgroup parents of run id in every
// hierarchy, children first. A cgroup is busy for a moment after its last
// process died, so each removal is retried until ctx is done.
func removeCgroups(ctx context.Context, id string) error {
	var errs []error
	for _, top := range cgroupHostDirs(id) {
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := rmdirRetry(ctx, d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func rmdirRetry(ctx context.Context, dir string) error {
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
