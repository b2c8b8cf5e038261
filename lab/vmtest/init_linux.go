package vmtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"golang.org/x/sys/unix"
)

// envInner marks the test process that runs the tests themselves, in the
// VM or in a fresh network namespace.
const envInner = "SWARMVLAN_VMTEST"

// initConfig is /vmtest.json in the initramfs: what the VM's init does.
type initConfig struct {
	Modules []module // Path is the path in the image
	Args    []string // the test binary's arguments
}

// exitMarker precedes the tests' exit status on the console.
const exitMarker = "vmtest: tests exited with status "

// The test binary is the VM's /init: before the tests start, this package's
// init turns a process that is PID 1 with /vmtest.json into the VM's init,
// which never returns. In the inner test process it brings loopback up.
func init() {
	if os.Getpid() == 1 {
		if b, err := os.ReadFile("/vmtest.json"); err == nil {
			vmInit(b)
		}
		return
	}
	if os.Getenv(envInner) != "" {
		if err := setUp("lo"); err != nil {
			fmt.Fprintf(os.Stderr, "vmtest: set lo up: %v\n", err)
		}
	}
}

// vmInit mounts the kernel's file systems, loads the modules, runs the
// tests as a child and powers the VM off.
func vmInit(config []byte) {
	status := 1
	defer func() {
		fmt.Printf("\n%s%d\n", exitMarker, status)
		unix.Sync()
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		for {
			time.Sleep(time.Hour)
		}
	}()
	var cfg initConfig
	if err := json.Unmarshal(config, &cfg); err != nil {
		fmt.Printf("vmtest: /vmtest.json: %v\n", err)
		return
	}
	for _, m := range []struct{ src, dir, typ string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/run", "tmpfs"}, {"tmpfs", "/tmp", "tmpfs"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			fmt.Printf("vmtest: mkdir %s: %v\n", m.dir, err)
			return
		}
		if err := unix.Mount(m.src, m.dir, m.typ, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			fmt.Printf("vmtest: mount %s: %v\n", m.dir, err)
			return
		}
	}
	for _, m := range cfg.Modules {
		if err := loadModule(m.Path, m.Params); err != nil {
			fmt.Printf("vmtest: load module %s: %v\n", m.Name, err)
			return
		}
	}
	if err := setUp("lo"); err != nil {
		fmt.Printf("vmtest: set lo up: %v\n", err)
		return
	}
	cmd := exec.Command("/init", cfg.Args...)
	cmd.Env = []string{envInner + "=vm", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp", "TMPDIR=/tmp"}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		status = 0
	case errors.As(err, &ee):
		status = ee.ExitCode()
	default:
		fmt.Printf("vmtest: run tests: %v\n", err)
	}
}

func loadModule(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), params, 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// setUp brings a link administratively up through the SIOCSIFFLAGS ioctl.
func setUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
