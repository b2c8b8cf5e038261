package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"time"

	"swarmvlan/lab"
)

// isolationRules cut h off the other hosts on its management interface,
// Swarm and Consul alike; the test process (the bridge's gateway) still
// reaches its Engine and agent.
func isolationRules(h *lab.Host, gw string) [][]string {
	c := "swarmvlan-chaos"
	return [][]string{
		{"INPUT", "-i", lab.ManagementInterface, "!", "-s", gw, "-m", "comment", "--comment", c, "-j", "DROP"},
		{"OUTPUT", "-o", lab.ManagementInterface, "!", "-d", gw, "-m", "comment", "--comment", c, "-j", "DROP"},
	}
}

func isolate(h *lab.Host, gw string) error {
	for _, r := range isolationRules(h, gw) {
		if out, err := iptables(h, append([]string{"-I"}, r...)...); err != nil {
			return fmt.Errorf("%s: iptables -I %v: %v: %s", h.Name, r, err, out)
		}
	}
	return nil
}

// unisolate removes isolate's rules; a second call is quiet.
func unisolate(h *lab.Host, gw string) error {
	var errs []error
	for _, r := range isolationRules(h, gw) {
		for {
			if _, err := iptables(h, append([]string{"-C"}, r...)...); err != nil {
				break
			}
			if out, err := iptables(h, append([]string{"-D"}, r...)...); err != nil {
				errs = append(errs, fmt.Errorf("%s: iptables -D %v: %v: %s", h.Name, r, err, out))
				break
			}
		}
	}
	return errors.Join(errs...)
}

func iptables(h *lab.Host, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + h.Netns, "--", "iptables", "-w"}, args...)...).CombinedOutput()
}

func readAll(r io.ReadCloser) ([]byte, error) {
	defer r.Close()
	return io.ReadAll(r)
}
