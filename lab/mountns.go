package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// DockerSocketPath is where a host's Engine answers inside the host's own
// mount namespace (ClusterOptions.MountNamespace), as on a real host: a
// container that bind-mounts it reaches the Engine of the host it runs on.
const DockerSocketPath = "/var/run/docker.sock"

// A host's mount namespace: a copy of the machine's mounts with a tmpfs of
// its own on /run (/var/run is a link to it), as every real host has. The
// host's dockerd (and so containerd, the shims and the containers) runs in
// it and listens on /var/run/docker.sock there besides its socket in the
// run directory. Without it every host would share the machine's /run, and
// a bind mount of /var/run/docker.sock would give each host's containers
// the machine's own Engine.
//
// The namespace is kept by a bind mount of its nsfs file under
// <host dir>/ns/, a directory bind-mounted onto itself and made private:
// the kernel refuses to bind a mount namespace's file under a shared mount,
// since it could then propagate into the namespace itself. The mounts lie
// under the run directory, so removeRun takes them away with the rest.
type mountNamespace struct {
	dir string // <host dir>/ns
}

func (m mountNamespace) file() string { return filepath.Join(m.dir, "mnt") }

// create makes the namespace and mounts its /run.
func (m mountNamespace) create(ctx context.Context) error {
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		return fmt.Errorf("mount namespace: %w", err)
	}
	if err := syscall.Mount(m.dir, m.dir, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("mount namespace: bind %s: %w", m.dir, err)
	}
	if err := syscall.Mount("", m.dir, "", syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("mount namespace: make %s private: %w", m.dir, err)
	}
	if err := os.WriteFile(m.file(), nil, 0o644); err != nil {
		return fmt.Errorf("mount namespace: %w", err)
	}
	// Private propagation: nothing mounted inside (the tmpfs, Docker's
	// netns files, the containers' mounts) shows outside, nor the reverse.
	if err := runCmd(ctx, "unshare", "--mount="+m.file(), "--propagation", "private",
		"mount", "-t", "tmpfs", "-o", "mode=755,size=64m", "svlab-run", "/run"); err != nil {
		return fmt.Errorf("mount namespace: %w", err)
	}
	return nil
}

// resetRun gives the namespace an empty /run, as a boot does (tmpfs).
func (m mountNamespace) resetRun(ctx context.Context) error {
	if err := runCmd(ctx, "nsenter", "--mount="+m.file(), "--",
		"sh", "-c", "umount -l /run && mount -t tmpfs -o mode=755,size=64m svlab-run /run"); err != nil {
		return fmt.Errorf("mount namespace: reset /run: %w", err)
	}
	return nil
}

// nsenterArgs puts the daemon into the mount namespace and has it listen on
// /var/run/docker.sock there too; args are the daemon's nsenter arguments
// (dockerDaemon.args). A daemon without a mount namespace keeps them as
// they are.
func (d *dockerDaemon) nsenterArgs(args []string) []string {
	if d.mountns == "" {
		return args
	}
	out := append([]string{"--mount=" + d.mountns}, args...)
	return append(out, "-H", "unix://"+DockerSocketPath)
}
