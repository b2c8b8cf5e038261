// Package vmtest runs tests that need kernel features the machine's kernel
// may lack (802.1Q, bonding, ipvlan, …) on a kernel that has them.
//
// A test package declares one VM with the link kinds its tests need, and
// each such test, named TestVM…, wraps its body in VM.Run. When this
// machine's kernel has every kind, the TestVM tests run in a child process
// in a fresh network namespace; otherwise Debian's cloud kernel (unpacked by
// scripts/ensure-vm.sh) boots under qemu with an initramfs written here: the
// test binary as init, the kinds' modules loaded in dependency order. Either
// way one child runs all of a binary's TestVM tests at once (one boot), and
// each outer test relays its own output to t.Log and its verdict.
package vmtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Config says what a package's VM tests need.
type Config struct {
	// Kinds are the rtnetlink link kinds the tests make ("vlan", "bond",
	// "ipvlan", "macvlan", "veth", "dummy", …).
	Kinds []string
	// Timeout bounds one boot and the tests in it (default 4 minutes).
	Timeout time.Duration
	// MemoryMB is the VM's memory (default 512).
	MemoryMB int
}

// VM runs a package's TestVM tests on a kernel with Config's kinds.
type VM struct {
	cfg  Config
	once sync.Once
	b    *batch
}

// New returns the VM for a package's tests; declare it once, at package level.
func New(cfg Config) *VM {
	if cfg.Timeout == 0 {
		cfg.Timeout = 4 * time.Minute
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = 512
	}
	return &VM{cfg: cfg}
}

// Inner reports whether this process is the one running the tests' bodies
// (in the VM or in the fresh namespace).
func Inner() bool { return os.Getenv(envInner) != "" }

// InVM reports whether this process runs inside the VM.
func InVM() bool { return os.Getenv(envInner) == "vm" }

// namePrefix is what every test run through a VM is called: the child
// process runs the tests matching it.
const namePrefix = "TestVM"

// Run runs body as the test t: directly in the inner process, and
// otherwise by relaying the result of t's run in the batch (booting it
// first if no test has yet).
func (vm *VM) Run(t *testing.T, body func(t *testing.T)) {
	t.Helper()
	if Inner() {
		body(t)
		return
	}
	if testing.Short() {
		t.Skip("boots a VM or runs in a fresh network namespace: not a -short test")
	}
	if !strings.HasPrefix(t.Name(), namePrefix) || strings.Contains(t.Name(), "/") {
		t.Fatalf("vmtest: %s: a test run in the VM must be a top-level test named %s…", t.Name(), namePrefix)
	}
	vm.once.Do(func() { vm.b = vm.run(t) })
	b := vm.b
	if b.skip != "" {
		t.Skip(b.skip)
	}
	if b.err != nil {
		t.Fatalf("vmtest: %v", b.err)
	}
	r, ok := b.results[t.Name()]
	if !ok {
		t.Fatalf("vmtest: %s did not report in the %s (exit status %d); its output ends:\n%s",
			t.Name(), b.where, b.status, tail(b.output, 40))
	}
	for _, l := range r.lines {
		t.Log(l)
	}
	switch r.verdict {
	case "FAIL":
		t.Errorf("%s failed in the %s", t.Name(), b.where)
	case "SKIP":
		t.Skipf("%s skipped in the %s", t.Name(), b.where)
	}
}

// batch is one run of a binary's TestVM tests.
type batch struct {
	where   string // "VM" or "fresh network namespace"
	skip    string // why nothing ran (qemu or kernel missing)
	err     error
	status  int
	output  string
	results map[string]result
}

type result struct {
	verdict string // PASS, FAIL, SKIP
	lines   []string
}

// innerArgs are the child's test flags: the tests this run selects among
// the TestVM ones, verbose, so that each reports its lines and verdict.
func innerArgs(timeout time.Duration) []string {
	run := "^" + namePrefix
	if f := flag.Lookup("test.run"); f != nil && f.Value.String() != "" {
		run = f.Value.String()
	}
	return []string{"-test.run=" + run,
		// Tests not named TestVM… run outside as usual, not again inside.
		"-test.skip=^(?:[^T]|T[^e]|Te[^s]|Tes[^t]|Test[^V]|TestV[^M])",
		"-test.v", "-test.count=1", "-test.timeout=" + timeout.String()}
}

func (vm *VM) run(t *testing.T) *batch {
	t.Helper()
	missing, err := missingKinds(vm.cfg.Kinds)
	if err != nil {
		return &batch{err: fmt.Errorf("probe this kernel's link kinds: %w", err)}
	}
	start := time.Now()
	var b *batch
	if len(missing) == 0 {
		b = vm.runNetns(t)
	} else {
		t.Logf("vmtest: this kernel lacks %s: booting the VM kernel", strings.Join(missing, ", "))
		b = vm.runVM(t)
	}
	if b.skip == "" && b.err == nil {
		t.Logf("vmtest: %d tests ran in the %s in %.1fs", len(b.results), b.where, time.Since(start).Seconds())
	}
	return b
}

// runNetns runs the tests in a child in a fresh network namespace.
func (vm *VM) runNetns(t *testing.T) *batch {
	b := &batch{where: "fresh network namespace"}
	exe, err := os.Executable()
	if err != nil {
		b.err = err
		return b
	}
	ctx, cancel := context.WithTimeout(context.Background(), vm.cfg.Timeout)
	defer cancel()
	// Pdeathsig follows the thread that started the child: keep it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.CommandContext(ctx, exe, innerArgs(vm.cfg.Timeout-5*time.Second)...)
	cmd.Env = append(os.Environ(), envInner+"=netns")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		b.err = fmt.Errorf("run %s in a fresh network namespace: %w", exe, err)
		return b
	}
	b.status = cmd.ProcessState.ExitCode()
	b.output = string(out)
	b.results = parseResults(b.output)
	return b
}

// Kernel locates the unpacked VM kernel: $SWARMVLAN_VMKERNEL, or the
// "current" link scripts/ensure-vm.sh keeps in its cache.
func Kernel() (vmlinuz, modDir string, err error) {
	dir := os.Getenv("SWARMVLAN_VMKERNEL")
	if dir == "" {
		cache := os.Getenv("SWARMVLAN_VMCACHE")
		if cache == "" {
			cache = "/var/cache/swarmvlan/vmkernel"
		}
		dir = filepath.Join(cache, "current")
	}
	kernels, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(kernels) == 0 {
		return "", "", fmt.Errorf("no kernel in %s/boot", dir)
	}
	sort.Strings(kernels)
	vmlinuz = kernels[len(kernels)-1]
	version := strings.TrimPrefix(filepath.Base(vmlinuz), "vmlinuz-")
	return vmlinuz, filepath.Join(dir, "lib", "modules", version), nil
}

const installHint = "run scripts/ensure-vm.sh (make test does): it installs qemu-system-x86 with apt-get and unpacks the pinned linux-image-cloud-amd64 kernel"

// runVM boots the VM kernel with the test binary as init.
func (vm *VM) runVM(t *testing.T) *batch {
	b := &batch{where: "VM"}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		b.skip = "qemu-system-x86_64 not installed: " + installHint
		return b
	}
	vmlinuz, modDir, err := Kernel()
	if err != nil {
		b.skip = "VM kernel missing (" + err.Error() + "): " + installHint
		return b
	}
	exe, err := os.Executable()
	if err != nil {
		b.err = err
		return b
	}
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := writeInitramfs(initrd, exe, modDir, vm.cfg.Kinds, innerArgs(vm.cfg.Timeout-10*time.Second)); err != nil {
		b.err = fmt.Errorf("write initramfs: %w", err)
		return b
	}
	args := []string{"-m", fmt.Sprint(vm.cfg.MemoryMB), "-smp", "1", "-nodefaults", "-no-user-config",
		"-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", vmlinuz, "-initrd", initrd,
		"-append", "console=ttyS0 quiet loglevel=3 panic=-1"}
	// Emulated (TCG) unless asked otherwise: a /dev/kvm may be present but
	// unusable (a nested hypervisor), and qemu then hangs instead of failing.
	if accel := os.Getenv("SWARMVLAN_VMTEST_ACCEL"); accel != "" {
		args = append(args, "-accel", accel)
	}
	ctx, cancel := context.WithTimeout(context.Background(), vm.cfg.Timeout)
	defer cancel()
	runtime.LockOSThread() // Pdeathsig follows the thread that started qemu
	defer runtime.UnlockOSThread()
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	b.output = strings.ReplaceAll(string(out), "\r\n", "\n")
	if ctx.Err() != nil {
		b.err = fmt.Errorf("the VM did not power off within %v; its console ends:\n%s", vm.cfg.Timeout, tail(b.output, 40))
		return b
	}
	if err != nil {
		b.err = fmt.Errorf("qemu: %w; its console ends:\n%s", err, tail(b.output, 40))
		return b
	}
	b.status = -1
	if i := strings.LastIndex(b.output, exitMarker); i >= 0 {
		fmt.Sscan(b.output[i+len(exitMarker):], &b.status)
	}
	b.results = parseResults(b.output)
	return b
}

// writeInitramfs writes the newc cpio the VM boots: the test binary as
// /init with the libraries it loads, the modules, and /vmtest.json. It is
// not compressed: under emulation the kernel takes longer to inflate a
// gzip'd image (about 2.5 s for a test binary) than qemu takes to load the
// plain one.
func writeInitramfs(path, exe, modDir string, kinds, args []string) error {
	mods, err := resolveModules(modDir, kinds)
	if err != nil {
		return err
	}
	libs, err := sharedLibs(exe)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	c := &cpioWriter{w: bw}
	dirs := map[string]bool{}
	mkdirs := func(p string) {
		var parts []string
		for d := filepath.Dir(p); d != "/" && d != "."; d = filepath.Dir(d) {
			parts = append(parts, d)
		}
		for i := len(parts) - 1; i >= 0; i-- {
			if d := strings.TrimPrefix(parts[i], "/"); !dirs[d] {
				dirs[d] = true
				c.Dir(d)
			}
		}
	}
	for _, d := range []string{"/dev/x", "/proc/x", "/sys/x", "/run/x", "/tmp/x", "/var/run/x", "/modules/x"} {
		mkdirs(d)
	}
	c.CharDev("dev/console", 5, 1)
	addFile := func(image, host string, perm int) error {
		data, err := os.ReadFile(host)
		if err != nil {
			return err
		}
		mkdirs(image)
		c.File(strings.TrimPrefix(image, "/"), perm, data)
		return nil
	}
	if err := addFile("/init", exe, 0o755); err != nil {
		return err
	}
	for _, l := range libs {
		if err := addFile(l[0], l[1], 0o755); err != nil {
			return err
		}
	}
	cfg := initConfig{Args: args}
	for _, m := range mods {
		image := "/modules/" + m.Name + ".ko"
		if err := addFile(image, m.Path, 0o644); err != nil {
			return err
		}
		m.Path = image
		cfg.Modules = append(cfg.Modules, m)
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	c.File("vmtest.json", 0o644, js)
	if err := c.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}

var (
	runLine    = regexp.MustCompile(`^=== (?:RUN|CONT|NAME)\s+(\S+)`)
	resultLine = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+) \(`)
)

// parseResults splits `go test -v` output by top-level test: each test's
// lines (its subtests' included) and its verdict.
func parseResults(out string) map[string]result {
	res := map[string]result{}
	cur := ""
	for _, l := range strings.Split(out, "\n") {
		if m := runLine.FindStringSubmatch(l); m != nil {
			cur, _, _ = strings.Cut(m[1], "/")
		}
		if cur == "" {
			continue
		}
		r := res[cur]
		r.lines = append(r.lines, l)
		if m := resultLine.FindStringSubmatch(l); m != nil && m[2] == cur {
			r.verdict = m[1]
			res[cur] = r
			cur = ""
			continue
		}
		res[cur] = r
	}
	for n, r := range res {
		if r.verdict == "" {
			// Started but never finished: the run died inside it.
			r.verdict = "FAIL"
			r.lines = append(r.lines, "vmtest: no verdict: the run ended inside this test")
			res[n] = r
		}
	}
	return res
}

// tail is the last n lines of s, control characters other than tabs
// dropped (a console can carry anything).
func tail(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' && r != '\n' && r != '\t' {
			return -1
		}
		return r
	}, s)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
